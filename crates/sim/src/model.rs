//! The planted model in coordinates: directions, data laws, labels.
//!
//! Isotropic and spiked Gaussians are invariant under rotations that fix the planted directions, so
//! w2sg places them on the first coordinates without loss of generality:
//! `θ* = e₀`, `θ_w = ρ e₀ + sqrt(1−ρ²) e₁`, spike `v = η e₀ + sqrt(1−η²) e₂` (so b = e₁ ⊥ u = e₂).
//! Every law the simulator samples (data, random init, spectral noise) is rotation invariant around
//! them, so this changes no distribution, and it makes `θ*·x`, `θ_w·x`, `v·x` cost O(1) instead of O(d).
//! A weak model trained by SGD is an arbitrary dense direction; [`Direction::Dense`] covers it.

use crate::config::{FinetuneData, SimConfig};
use crate::kernels;
use crate::link::Link;
use crate::rng::SimRng;

/// A unit direction in R^d: a few nonzero coordinates, or a dense vector.
#[derive(Clone, Debug, PartialEq)]
pub enum Direction {
    Sparse(Vec<(usize, f64)>),
    Dense(Vec<f64>),
}

impl Direction {
    #[inline]
    pub fn dot(&self, x: &[f64]) -> f64 {
        match self {
            Direction::Sparse(entries) => entries.iter().map(|&(i, a)| a * x[i]).sum(),
            Direction::Dense(v) => kernels::dot(v, x),
        }
    }

    pub fn dot_direction(&self, other: &Direction) -> f64 {
        match (self, other) {
            (Direction::Sparse(a), _) => a.iter().map(|&(i, ai)| ai * other.coord(i)).sum(),
            (_, Direction::Sparse(_)) => other.dot_direction(self),
            (Direction::Dense(a), Direction::Dense(b)) => kernels::dot(a, b),
        }
    }

    pub fn coord(&self, i: usize) -> f64 {
        match self {
            Direction::Sparse(entries) => entries.iter().filter(|e| e.0 == i).map(|e| e.1).sum(),
            Direction::Dense(v) => v[i],
        }
    }

    pub fn to_dense(&self, d: usize) -> Vec<f64> {
        match self {
            Direction::Sparse(entries) => {
                let mut v = vec![0.0; d];
                for &(i, a) in entries {
                    v[i] += a;
                }
                v
            }
            Direction::Dense(v) => v.clone(),
        }
    }
}

/// `θ* = e₀`.
pub fn target_direction() -> Direction {
    Direction::Sparse(vec![(0, 1.0)])
}

/// `θ_w = ρ θ* + sqrt(1−ρ²) e₁`.
pub fn weak_direction(rho: f64) -> Direction {
    Direction::Sparse(vec![(0, rho), (1, (1.0 - rho * rho).max(0.0).sqrt())])
}

/// Spike `v = η θ* + sqrt(1−η²) e₂`.
pub fn spike_direction(eta: f64) -> Direction {
    Direction::Sparse(vec![(0, eta), (2, (1.0 - eta * eta).max(0.0).sqrt())])
}

/// Law of the covariates: `N(0, I)` or `N(0, I + β v vᵀ)`.
#[derive(Clone, Debug)]
pub struct DataLaw {
    pub d: usize,
    /// `(β, v)` for spiked data; `v` must be sparse (it always is: see the module docs).
    pub spike: Option<(f64, Direction)>,
}

impl DataLaw {
    pub fn isotropic(d: usize) -> Self {
        Self { d, spike: None }
    }

    pub fn spiked(d: usize, beta: f64, v: Direction) -> Self {
        Self {
            d,
            spike: Some((beta, v)),
        }
    }

    /// `aᵀ Σ b` for this law's covariance Σ, from the directions' overlaps.
    pub fn covariance(&self, a_dot_b: f64, a_dot_v: f64, b_dot_v: f64) -> f64 {
        match &self.spike {
            Some((beta, _)) => a_dot_b + beta * a_dot_v * b_dot_v,
            None => a_dot_b,
        }
    }

    pub fn beta(&self) -> f64 {
        self.spike.as_ref().map_or(0.0, |s| s.0)
    }

    /// Draws one sample into `x` (length d) without forming Σ: `x = g + (sqrt(1+β) − 1)(v·g) v`.
    #[inline]
    pub fn sample(&self, rng: &mut SimRng, x: &mut [f64]) {
        rng.fill_normal(x);
        if let Some((beta, Direction::Sparse(v))) = &self.spike {
            let proj: f64 = v.iter().map(|&(i, a)| a * x[i]).sum();
            let c = ((1.0 + beta).sqrt() - 1.0) * proj;
            for &(i, a) in v {
                x[i] += c * a;
            }
        }
    }
}

/// A label source `y = link(direction · x) + sqrt(noise) ε`.
#[derive(Clone, Debug)]
pub struct Labeler {
    pub link: Link,
    pub direction: Direction,
    /// Variance Δ of the additive Gaussian label noise.
    pub noise: f64,
}

impl Labeler {
    /// The noiseless part of the label, from `direction · x`.
    #[inline]
    pub fn mean(&self, projection: f64) -> f64 {
        self.link.eval(projection)
    }

    /// A noisy label; draws a normal only when there is noise, so noiseless runs use fewer draws.
    #[inline]
    pub fn label(&self, projection: f64, rng: &mut SimRng) -> f64 {
        let y = self.link.eval(projection);
        if self.noise > 0.0 {
            y + self.noise.sqrt() * rng.normal()
        } else {
            y
        }
    }
}

/// The law of fine-tuning (and test) covariates.
pub fn finetune_law(config: &SimConfig) -> DataLaw {
    match config.finetune_data {
        FinetuneData::Isotropic => DataLaw::isotropic(config.d),
        FinetuneData::Spiked => {
            DataLaw::spiked(config.d, config.spike.0, spike_direction(config.spike.1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiked_samples_have_the_right_covariance() {
        let d = 5;
        let beta = 3.0;
        let v = spike_direction(0.6);
        let law = DataLaw::spiked(d, beta, v.clone());
        let mut rng = SimRng::from_seed(7);
        let n = 200_000;
        let mut x = vec![0.0; d];
        let mut cov = [[0.0; 3]; 3];
        for _ in 0..n {
            law.sample(&mut rng, &mut x);
            for a in 0..3 {
                for b in 0..3 {
                    cov[a][b] += x[a] * x[b] / n as f64;
                }
            }
        }
        let vd = v.to_dense(d);
        for a in 0..3 {
            for b in 0..3 {
                let want = f64::from(a == b) + beta * vd[a] * vd[b];
                // standard error of a sample covariance entry is about sqrt((Σaa Σbb + Σab²)/n) ≤ 0.01
                assert!(
                    (cov[a][b] - want).abs() < 0.05,
                    "cov[{a}][{b}] = {} want {want}",
                    cov[a][b]
                );
            }
        }
    }

    #[test]
    fn directions_are_unit_and_overlap_as_planted() {
        let (t, w, v) = (
            target_direction(),
            weak_direction(0.3),
            spike_direction(0.8),
        );
        assert!((w.dot_direction(&w) - 1.0).abs() < 1e-15);
        assert!((t.dot_direction(&w) - 0.3).abs() < 1e-15);
        assert!((v.dot_direction(&t) - 0.8).abs() < 1e-15);
        assert!((v.dot_direction(&w) - 0.24).abs() < 1e-15);
        let dense = Direction::Dense(w.to_dense(4));
        assert!((dense.dot_direction(&v) - 0.24).abs() < 1e-15);
    }
}

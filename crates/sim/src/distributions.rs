//! Exact samplers the reduced engine needs beyond single normals: buffered normals, Gamma, χ² and χ.
//!
//! - [`NormalStream`] hands out standard normals from a block refilled by [`SimRng::fill_normal`] (the
//!   simulator's optimized bulk path), so an O(1)-per-step engine pays the bulk price per normal instead
//!   of a call per normal. The block is refilled on demand, so the numbers a run consumes depend only on
//!   its stream and on how many it has consumed: a longer run still extends a shorter one draw for draw.
//! - [`Gamma`] is Marsaglia & Tsang's (2000) rejection sampler: exact (given exact normal and uniform
//!   inputs), about one normal and one uniform per draw for every shape, with the `U^{1/a}` boost for
//!   shapes below 1. χ²(k) = 2·Gamma(k/2) and χ = sqrt(χ²). Large degrees of freedom (k ≈ 10⁶) cost
//!   the same as small ones, and nothing is approximated (no normal approximation of χ²(k)).
//! - Edge cases: χ²(0) is exactly 0 (a residual space of dimension 0); shapes must be finite and ≥ 0,
//!   which callers guarantee (they come from dimensions, never from user floats).

use crate::rng::SimRng;

/// A source of standard normal and uniform [0, 1) draws.
pub trait Draws {
    fn normal(&mut self) -> f64;
    fn uniform(&mut self) -> f64;
}

impl Draws for SimRng {
    #[inline]
    fn normal(&mut self) -> f64 {
        SimRng::normal(self)
    }
    #[inline]
    fn uniform(&mut self) -> f64 {
        SimRng::uniform(self)
    }
}

/// Normals drawn in blocks through [`SimRng::fill_normal`]; uniforms straight from the generator.
#[derive(Clone, Debug)]
pub struct NormalStream {
    rng: SimRng,
    block: Vec<f64>,
    next: usize,
}

/// Normals per refill: large enough to amortize the call, small enough to stay in L1.
const BLOCK: usize = 512;

impl NormalStream {
    pub fn new(rng: SimRng) -> Self {
        Self {
            rng,
            block: vec![0.0; BLOCK],
            next: BLOCK,
        }
    }

    #[cold]
    fn refill(&mut self) {
        self.rng.fill_normal(&mut self.block);
        self.next = 0;
    }
}

impl Draws for NormalStream {
    #[inline]
    fn normal(&mut self) -> f64 {
        if self.next == BLOCK {
            self.refill();
        }
        let z = self.block[self.next];
        self.next += 1;
        z
    }

    #[inline]
    fn uniform(&mut self) -> f64 {
        self.rng.uniform()
    }
}

/// Gamma(shape, scale 1), with the constants of Marsaglia–Tsang precomputed for repeated draws.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gamma {
    /// `a − 1/3` for the (possibly boosted) shape a ≥ 1; 0 marks the point mass at 0 (shape 0).
    d: f64,
    /// `1 / sqrt(9 d)`.
    c: f64,
    /// `1 / shape` when shape < 1 (draw Gamma(shape + 1) and multiply by `U^{1/shape}`).
    boost: Option<f64>,
}

impl Gamma {
    /// Shape `shape ≥ 0` (0 gives the point mass at 0).
    pub fn new(shape: f64) -> Self {
        debug_assert!(shape.is_finite() && shape >= 0.0, "gamma shape {shape}");
        if shape <= 0.0 {
            return Self {
                d: 0.0,
                c: 0.0,
                boost: None,
            };
        }
        let (a, boost) = if shape < 1.0 {
            (shape + 1.0, Some(1.0 / shape))
        } else {
            (shape, None)
        };
        let d = a - 1.0 / 3.0;
        Self {
            d,
            c: 1.0 / (9.0 * d).sqrt(),
            boost,
        }
    }

    #[inline]
    pub fn sample(&self, draws: &mut impl Draws) -> f64 {
        if self.d == 0.0 {
            return 0.0;
        }
        let g = loop {
            let x = draws.normal();
            let v = 1.0 + self.c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = draws.uniform();
            let x2 = x * x;
            // The squeeze accepts ~98% (more for large shapes) without a logarithm.
            if u < 1.0 - 0.0331 * x2 * x2 {
                break self.d * v;
            }
            if u > 0.0 && u.ln() < 0.5 * x2 + self.d * (1.0 - v + v.ln()) {
                break self.d * v;
            }
        };
        match self.boost {
            // 1 − U lies in (0, 1], so the power is never 0^(1/a) from a zero uniform.
            Some(inv_shape) => g * (1.0 - draws.uniform()).powf(inv_shape),
            None => g,
        }
    }
}

/// χ²(dof) = 2·Gamma(dof/2), for repeated draws with the same degrees of freedom.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChiSquare {
    gamma: Gamma,
}

impl ChiSquare {
    /// `dof ≥ 0` degrees of freedom (0: the point mass at 0).
    pub fn new(dof: f64) -> Self {
        Self {
            gamma: Gamma::new(0.5 * dof),
        }
    }

    #[inline]
    pub fn sample(&self, draws: &mut impl Draws) -> f64 {
        2.0 * self.gamma.sample(draws)
    }
}

/// One χ²(dof) draw (constants computed on the spot: for varying degrees of freedom).
#[inline]
pub fn chi_square(dof: f64, draws: &mut impl Draws) -> f64 {
    ChiSquare::new(dof).sample(draws)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::erf;
    use crate::stats::ks_one_sample;

    fn draws(dof: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut s = NormalStream::new(SimRng::from_seed(seed));
        let chi = ChiSquare::new(dof);
        (0..n).map(|_| chi.sample(&mut s)).collect()
    }

    #[test]
    fn chi_square_matches_its_cdf_for_small_dof() {
        // Closed-form CDFs: χ²(1) = erf(sqrt(x/2)); χ²(2) = 1 − e^{−x/2};
        // χ²(3) = erf(sqrt(x/2)) − sqrt(2x/π) e^{−x/2}. Shape 1/2 exercises the boost, 1 and 3/2 the
        // plain sampler. 20 000 draws: KS at level 1e-3 (fixed seeds, so the outcome is deterministic).
        type Cdf = fn(f64) -> f64;
        let cases: [(f64, Cdf); 3] = [
            (1.0, |x| erf((x / 2.0).sqrt())),
            (2.0, |x| 1.0 - (-x / 2.0).exp()),
            (3.0, |x| {
                erf((x / 2.0).sqrt()) - (2.0 * x / std::f64::consts::PI).sqrt() * (-x / 2.0).exp()
            }),
        ];
        for (dof, cdf) in cases {
            let sample = draws(dof, 20_000, dof as u64);
            let (stat, p) = ks_one_sample(&sample, cdf);
            assert!(p > 1e-3, "χ²({dof}): KS D = {stat:.4}, p = {p:.2e}");
        }
    }

    #[test]
    fn chi_square_moments_for_large_dof() {
        // Mean k, variance 2k, third central moment 8k. From the cumulants κ_r = 2^{r−1}(r−1)! k the
        // large-n standard errors are sqrt(2k/n), sqrt((8k² + 48k)/n) and
        // sqrt((48k³ + 1440k² + 3840k)/n); the tolerances are 5 standard errors.
        let n = 200_000;
        for dof in [7.0, 1000.0, 999_995.0] {
            let x = draws(dof, n, 42);
            let mean = x.iter().sum::<f64>() / n as f64;
            let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let m3 = x.iter().map(|v| (v - mean).powi(3)).sum::<f64>() / n as f64;
            let nf = n as f64;
            assert!(
                (mean - dof).abs() < 5.0 * (2.0 * dof / nf).sqrt(),
                "dof {dof}: mean {mean}"
            );
            assert!(
                (var - 2.0 * dof).abs() < 5.0 * ((8.0 * dof * dof + 48.0 * dof) / nf).sqrt(),
                "dof {dof}: variance {var}"
            );
            let se3 = ((48.0 * dof.powi(3) + 1440.0 * dof * dof + 3840.0 * dof) / nf).sqrt();
            assert!(
                (m3 - 8.0 * dof).abs() < 5.0 * se3,
                "dof {dof}: third central moment {m3} vs {}",
                8.0 * dof
            );
        }
    }

    #[test]
    fn zero_degrees_of_freedom_is_a_point_mass() {
        let mut s = NormalStream::new(SimRng::from_seed(1));
        assert_eq!(chi_square(0.0, &mut s), 0.0);
        // ... and consumes nothing: the next normal is the stream's first.
        let first = NormalStream::new(SimRng::from_seed(1)).normal();
        assert_eq!(s.normal(), first);
    }

    #[test]
    fn normal_stream_replays_fill_normal() {
        let mut s = NormalStream::new(SimRng::from_seed(9));
        let got: Vec<f64> = (0..1500).map(|_| s.normal()).collect();
        let mut rng = SimRng::from_seed(9);
        let mut want = vec![0.0; 3 * BLOCK];
        for chunk in want.chunks_mut(BLOCK) {
            rng.fill_normal(chunk);
        }
        assert_eq!(got[..], want[..1500]);
    }
}

//! Pre-training as spectral initialization: the top eigenvector of a sample covariance, found by Lanczos.
//!
//! The `n × d` sample matrix X is stored (as f32: half the memory traffic, and rounding at 1e−7 is far
//! below the statistical error of a spectral estimate), but `XᵀX` never is: the operator
//! `q ↦ (1/n) Xᵀ diag(t) X q` is applied in one pass over the rows (`t_i = 1`, or `T(y_i)` for the
//! label-weighted variant). Lanczos with full re-orthogonalization converges in a few dozen products when
//! the top eigenvalue is separated (above the BBP threshold); below it the top of the spectrum is a
//! near-degenerate bulk edge, the iteration may stop at its cap, and any vector there is as good as
//! another (its overlap with the spike is O(d^−1/2) either way). The cap and residual are reported.

use crate::kernels;
use crate::rng::SimRng;
use crate::tridiagonal::tridiagonal_eigen;

/// Result of a Lanczos run.
#[derive(Clone, Debug)]
pub struct TopEigen {
    pub value: f64,
    pub vector: Vec<f64>,
    pub iterations: usize,
    /// ‖A v − λ v‖ of the returned Ritz pair.
    pub residual: f64,
    pub converged: bool,
}

/// Largest (algebraic) eigenpair of the symmetric operator `apply(q, out)` on R^d.
pub fn lanczos_top(
    d: usize,
    mut apply: impl FnMut(&[f64], &mut [f64]),
    rng: &mut SimRng,
    max_iter: usize,
    rel_tol: f64,
) -> TopEigen {
    let max_iter = max_iter.clamp(1, d);
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(max_iter);
    let mut alpha = Vec::with_capacity(max_iter);
    let mut beta: Vec<f64> = Vec::with_capacity(max_iter);
    basis.push(rng.unit_vector(d));
    let mut w = vec![0.0; d];
    let (value, s, residual) = loop {
        let j = basis.len() - 1;
        apply(&basis[j], &mut w);
        let a = kernels::dot(&basis[j], &w);
        alpha.push(a);
        // Full re-orthogonalization, twice ("twice is enough"): keeps the basis orthonormal to rounding,
        // so no spurious copies of converged Ritz values appear.
        for _ in 0..2 {
            for q in &basis {
                let c = kernels::dot(q, &w);
                w.iter_mut().zip(q).for_each(|(wi, qi)| *wi -= c * qi);
            }
        }
        let b = kernels::norm_squared(&w).sqrt();
        let k = alpha.len();
        let check = k == max_iter || k % 4 == 0 || b <= 1e-14 * a.abs().max(1e-300);
        if check {
            let eig = tridiagonal_eigen(&alpha, &beta).expect("finite Lanczos coefficients");
            let top = eig.n - 1;
            let s = eig.vector(top).to_vec();
            let residual = b * s[k - 1].abs();
            let value = eig.values[top];
            if residual <= rel_tol * value.abs().max(1e-300)
                || k == max_iter
                || b <= 1e-14 * a.abs().max(1e-300)
            {
                break (value, s, residual);
            }
        }
        beta.push(b);
        let next: Vec<f64> = w.iter().map(|x| x / b).collect();
        basis.push(next);
    };
    let mut vector = vec![0.0; d];
    for (q, &c) in basis.iter().zip(&s) {
        vector.iter_mut().zip(q).for_each(|(v, qi)| *v += c * qi);
    }
    let norm = kernels::norm_squared(&vector).sqrt();
    vector.iter_mut().for_each(|v| *v /= norm);
    let iterations = alpha.len();
    TopEigen {
        value,
        vector,
        iterations,
        residual,
        converged: residual <= rel_tol * value.abs().max(1e-300),
    }
}

/// An `n × d` sample matrix, row-major, with optional row weights.
pub struct SampleMatrix {
    pub n: usize,
    pub d: usize,
    rows: Vec<f32>,
    weights: Option<Vec<f64>>,
}

impl SampleMatrix {
    /// Fill row by row from `sample(i, row)`.
    pub fn from_rows(n: usize, d: usize, mut sample: impl FnMut(usize, &mut [f64])) -> Self {
        let mut rows = vec![0.0f32; n * d];
        let mut row = vec![0.0; d];
        for i in 0..n {
            sample(i, &mut row);
            for (dst, &src) in rows[i * d..(i + 1) * d].iter_mut().zip(&row) {
                *dst = src as f32;
            }
        }
        Self {
            n,
            d,
            rows,
            weights: None,
        }
    }

    pub fn with_weights(mut self, weights: Vec<f64>) -> Self {
        assert_eq!(weights.len(), self.n);
        self.weights = Some(weights);
        self
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.d..(i + 1) * self.d]
    }

    /// `out = (1/n) Σ_i t_i x_i (x_i · q)`: one pass over X, each row used twice while in cache.
    pub fn apply_covariance(&self, q: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        for i in 0..self.n {
            let row = self.row(i);
            let mut acc = [0.0f64; 8];
            let chunks = self.d / 8;
            for c in 0..chunks {
                for l in 0..8 {
                    acc[l] += row[c * 8 + l] as f64 * q[c * 8 + l];
                }
            }
            let mut t: f64 = acc.iter().sum();
            for k in chunks * 8..self.d {
                t += row[k] as f64 * q[k];
            }
            if let Some(w) = &self.weights {
                t *= w[i];
            }
            for (o, &x) in out.iter_mut().zip(row) {
                *o += t * x as f64;
            }
        }
        let inv = 1.0 / self.n as f64;
        out.iter_mut().for_each(|o| *o *= inv);
    }

    /// The top eigenpair of the (weighted) sample covariance.
    pub fn top_eigen(&self, rng: &mut SimRng) -> TopEigen {
        lanczos_top(
            self.d,
            |q, out| self.apply_covariance(q, out),
            rng,
            300,
            1e-10,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanczos_finds_the_top_of_a_diagonal_operator() {
        let d = 200;
        let diag: Vec<f64> = (0..d)
            .map(|i| 1.0 + i as f64 / d as f64)
            .chain([])
            .collect();
        let mut diag = diag;
        diag[17] = 5.0; // isolated top eigenvalue
        let mut rng = SimRng::from_seed(3);
        let top = lanczos_top(
            d,
            |q, out| {
                out.iter_mut()
                    .zip(q)
                    .zip(&diag)
                    .for_each(|((o, x), a)| *o = a * x)
            },
            &mut rng,
            100,
            1e-12,
        );
        assert!(top.converged);
        assert!((top.value - 5.0).abs() < 1e-10);
        assert!((top.vector[17].abs() - 1.0).abs() < 1e-10);
    }

    #[test]
    fn covariance_operator_matches_dense_product() {
        let (n, d) = (13, 9);
        let mut rng = SimRng::from_seed(5);
        let x = SampleMatrix::from_rows(n, d, |_, row| rng.fill_normal(row));
        let weights: Vec<f64> = (0..n).map(|i| (i as f64 * 0.3).cos()).collect();
        let x = x.with_weights(weights.clone());
        let q: Vec<f64> = (0..d).map(|i| i as f64 - 4.0).collect();
        let mut out = vec![0.0; d];
        x.apply_covariance(&q, &mut out);
        for a in 0..d {
            let mut want = 0.0;
            for (i, weight) in weights.iter().enumerate() {
                let row = x.row(i);
                let t: f64 = row.iter().zip(&q).map(|(r, qq)| *r as f64 * qq).sum();
                want += weight * t * row[a] as f64 / n as f64;
            }
            assert!((out[a] - want).abs() < 1e-10);
        }
    }
}

//! Eigen-decomposition of a real symmetric tridiagonal matrix by the implicit QL method with Wilkinson-type
//! shifts (the EISPACK `tql2` / Numerical Recipes `tqli` scheme).
//!
//! It serves three places, all small (n ≤ a few hundred): Gauss quadrature nodes and weights by
//! Golub–Welsch, the Ritz pairs of the Lanczos iteration behind spectral initialization, and (later) the
//! Dumitriu–Edelman tridiagonal model of a spiked sample covariance. Dense `n × n` eigenvectors are
//! accumulated, so cost is O(n³) in the worst case; that is fine at these sizes.

/// Eigenvalues in ascending order and the matching orthonormal eigenvectors.
#[derive(Clone, Debug)]
pub struct TridiagonalEigen {
    pub values: Vec<f64>,
    /// Column-major `n × n`: eigenvector `j` is `vectors[j*n .. (j+1)*n]`.
    pub vectors: Vec<f64>,
    pub n: usize,
}

impl TridiagonalEigen {
    pub fn vector(&self, j: usize) -> &[f64] {
        &self.vectors[j * self.n..(j + 1) * self.n]
    }
}

/// Why the QL iteration can fail: only non-finite input in practice.
#[derive(Debug, thiserror::Error)]
pub enum TridiagonalError {
    #[error("tridiagonal eigen-solver: no convergence after 60 QL sweeps at index {0} (non-finite input?)")]
    NoConvergence(usize),
    #[error("tridiagonal eigen-solver: off-diagonal has length {off} but must be diagonal length {diag} - 1")]
    Shape { diag: usize, off: usize },
}

/// Eigen-decomposition of the symmetric tridiagonal matrix with `diag` on the diagonal and `off` on the
/// first sub- and super-diagonal.
pub fn tridiagonal_eigen(diag: &[f64], off: &[f64]) -> Result<TridiagonalEigen, TridiagonalError> {
    let n = diag.len();
    if n == 0 {
        return Ok(TridiagonalEigen {
            values: vec![],
            vectors: vec![],
            n: 0,
        });
    }
    if off.len() + 1 != n {
        return Err(TridiagonalError::Shape {
            diag: n,
            off: off.len(),
        });
    }
    let mut d = diag.to_vec();
    let mut e = vec![0.0; n];
    e[..n - 1].copy_from_slice(off);
    let mut z = vec![0.0; n * n];
    for i in 0..n {
        z[i * n + i] = 1.0;
    }
    for l in 0..n {
        let mut iterations = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iterations += 1;
            if iterations > 60 {
                return Err(TridiagonalError::NoConvergence(l));
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut underflow = false;
            let mut i = m;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    // Deflation by underflow: split the matrix here and restart the sweep.
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                // Rotate eigenvector columns i and i+1 (contiguous in column-major storage).
                let (left, right) = z.split_at_mut((i + 1) * n);
                let zi = &mut left[i * n..];
                let zi1 = &mut right[..n];
                for k in 0..n {
                    let f = zi1[k];
                    zi1[k] = s * zi[k] + c * f;
                    zi[k] = c * zi[k] - s * f;
                }
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| d[a].total_cmp(&d[b]));
    let values = order.iter().map(|&j| d[j]).collect();
    let mut vectors = vec![0.0; n * n];
    for (dst, &src) in order.iter().enumerate() {
        vectors[dst * n..(dst + 1) * n].copy_from_slice(&z[src * n..(src + 1) * n]);
    }
    Ok(TridiagonalEigen { values, vectors, n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matvec(diag: &[f64], off: &[f64], x: &[f64]) -> Vec<f64> {
        let n = diag.len();
        (0..n)
            .map(|i| {
                let mut y = diag[i] * x[i];
                if i > 0 {
                    y += off[i - 1] * x[i - 1];
                }
                if i + 1 < n {
                    y += off[i] * x[i + 1];
                }
                y
            })
            .collect()
    }

    #[test]
    fn eigenpairs_satisfy_definition_and_are_orthonormal() {
        let n = 50;
        let diag: Vec<f64> = (0..n).map(|i| ((i * 7919) % 13) as f64 - 6.0).collect();
        let off: Vec<f64> = (0..n - 1)
            .map(|i| 0.5 + ((i * 104729) % 5) as f64)
            .collect();
        let eig = tridiagonal_eigen(&diag, &off).unwrap();
        for j in 0..n {
            let v = eig.vector(j);
            let av = matvec(&diag, &off, v);
            for k in 0..n {
                assert!(
                    (av[k] - eig.values[j] * v[k]).abs() < 1e-11,
                    "residual at ({j},{k})"
                );
            }
            for i in 0..n {
                let dot: f64 = v.iter().zip(eig.vector(i)).map(|(a, b)| a * b).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12);
            }
        }
        assert!(eig.values.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn known_spectrum_of_the_discrete_laplacian() {
        // tridiag(-1, 2, -1) of size n has eigenvalues 2 - 2 cos(k pi / (n+1)).
        let n = 40;
        let eig = tridiagonal_eigen(&vec![2.0; n], &vec![-1.0; n - 1]).unwrap();
        for (k, &v) in eig.values.iter().enumerate() {
            let want = 2.0 - 2.0 * ((k + 1) as f64 * std::f64::consts::PI / (n + 1) as f64).cos();
            assert!((v - want).abs() < 1e-12, "{v} vs {want}");
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        assert!(tridiagonal_eigen(&[1.0, 2.0], &[1.0, 2.0]).is_err());
    }
}

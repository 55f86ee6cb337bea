//! Levenberg–Marquardt least squares for the logistic curve of [`crate::transition`]:
//! f(x) = L + (U − L) σ((x − m)/w) with w = e^s > 0, either all four parameters (L, U, m, s) free or
//! the asymptotes fixed and (m, s) free.
//!
//! Why in-house: four parameters and a few hundred points; a dependency would be larger than this file.
//! Marquardt's scaling (damping by diag(JᵀJ)) keeps the step sensible when L and U are badly determined.
//! Several deterministic starts (midpoints spread over the data's x range) guard against the local
//! minima a flat sigmoid produces; the best residual wins.

use crate::probe::sigmoid;

/// Parameters held fixed: `Some((L, U))` for the two-parameter model.
pub(crate) type Fixed = Option<(f64, f64)>;

/// Value and gradient of the model at `x` for parameters `p` ([L, U, m, s] or [m, s]).
pub(crate) fn model(p: &[f64], fixed: Fixed, x: f64, grad: &mut [f64]) -> f64 {
    let (l, u, m, s) = match fixed {
        None => (p[0], p[1], p[2], p[3]),
        Some((l, u)) => (l, u, p[0], p[1]),
    };
    let w = s.exp();
    let z = (x - m) / w;
    let sg = sigmoid(z);
    let slope = (u - l) * sg * (1.0 - sg);
    let dm = -slope / w;
    let ds = -slope * z;
    match fixed {
        None => {
            grad[0] = 1.0 - sg;
            grad[1] = sg;
            grad[2] = dm;
            grad[3] = ds;
        }
        Some(_) => {
            grad[0] = dm;
            grad[1] = ds;
        }
    }
    l + (u - l) * sg
}

pub(crate) struct LmResult {
    pub p: Vec<f64>,
    pub rss: f64,
    /// JᵀJ at the solution (for the covariance σ²(JᵀJ)⁻¹).
    pub jtj: Vec<Vec<f64>>,
    pub converged: bool,
}

fn rss_of(p: &[f64], fixed: Fixed, x: &[f64], y: &[f64]) -> f64 {
    let mut g = vec![0.0; p.len()];
    x.iter()
        .zip(y)
        .map(|(&xi, &yi)| {
            let r = yi - model(p, fixed, xi, &mut g);
            r * r
        })
        .sum()
}

/// Solves A v = b by Gaussian elimination with partial pivoting; `None` when singular.
pub(crate) fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-300 || !a[piv][col].is_finite() {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col].clone();
            for (x, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut v = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|c| a[row][c] * v[c]).sum();
        v[row] = (b[row] - s) / a[row][row];
    }
    v.iter().all(|x| x.is_finite()).then_some(v)
}

/// The inverse of a small symmetric matrix, column by column; `None` when singular.
pub(crate) fn invert(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut cols = Vec::with_capacity(n);
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        cols.push(solve(a.to_vec(), e)?);
    }
    Some(
        (0..n)
            .map(|i| (0..n).map(|j| cols[j][i]).collect())
            .collect(),
    )
}

/// One Levenberg–Marquardt run from `p0`.
pub(crate) fn fit_from(
    x: &[f64],
    y: &[f64],
    fixed: Fixed,
    p0: Vec<f64>,
    max_iter: usize,
) -> LmResult {
    let d = p0.len();
    let mut p = p0;
    let mut rss = rss_of(&p, fixed, x, y);
    let mut lambda = 1e-3;
    let mut g = vec![0.0; d];
    let mut converged = false;
    let normal = |p: &[f64], g: &mut [f64]| {
        let mut jtj = vec![vec![0.0; d]; d];
        let mut jtr = vec![0.0; d];
        for (&xi, &yi) in x.iter().zip(y) {
            let r = yi - model(p, fixed, xi, g);
            for a in 0..d {
                jtr[a] += g[a] * r;
                for b in 0..d {
                    jtj[a][b] += g[a] * g[b];
                }
            }
        }
        (jtj, jtr)
    };
    for _ in 0..max_iter {
        let (jtj, jtr) = normal(&p, &mut g);
        let mut improved = false;
        while lambda < 1e16 {
            let mut a = jtj.clone();
            for i in 0..d {
                a[i][i] += lambda * jtj[i][i].max(1e-12);
            }
            let Some(delta) = solve(a, jtr.clone()) else {
                lambda *= 10.0;
                continue;
            };
            let cand: Vec<f64> = p.iter().zip(&delta).map(|(a, b)| a + b).collect();
            let cand_rss = rss_of(&cand, fixed, x, y);
            if cand_rss.is_finite() && cand_rss <= rss {
                let small_step = delta
                    .iter()
                    .zip(&p)
                    .all(|(dl, pv)| dl.abs() <= 1e-10 * (1.0 + pv.abs()));
                let small_gain = rss - cand_rss <= 1e-14 * rss.max(1e-300);
                p = cand;
                rss = cand_rss;
                lambda = (lambda / 10.0).max(1e-12);
                improved = true;
                if small_step || small_gain {
                    converged = true;
                }
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            // No step decreases the residual at any damping: a (local) minimum.
            converged = true;
        }
        if converged {
            break;
        }
    }
    let (jtj, _) = normal(&p, &mut g);
    LmResult {
        p,
        rss,
        jtj,
        converged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_algebra_by_hand() {
        let a = vec![vec![2.0, 1.0], vec![1.0, 3.0]];
        let v = solve(a.clone(), vec![3.0, 5.0]).unwrap();
        assert!((v[0] - 0.8).abs() < 1e-15 && (v[1] - 1.4).abs() < 1e-15);
        let inv = invert(&a).unwrap();
        // (1/5) [[3, −1], [−1, 2]].
        assert!((inv[0][0] - 0.6).abs() < 1e-15 && (inv[0][1] + 0.2).abs() < 1e-15);
        assert!(solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
    }

    #[test]
    fn recovers_noise_free_curve() {
        let x: Vec<f64> = (0..40).map(|i| i as f64 * 0.25).collect();
        let truth = [-0.5, 0.8, 4.0, (0.7f64).ln()];
        let mut g = [0.0; 4];
        let y: Vec<f64> = x
            .iter()
            .map(|&xi| model(&truth, None, xi, &mut g))
            .collect();
        let r = fit_from(&x, &y, None, vec![-0.2, 0.5, 5.0, 0.0], 500);
        for (a, b) in r.p.iter().zip(truth) {
            assert!((a - b).abs() < 1e-7, "{:?}", r.p);
        }
        // Derivatives against central differences.
        let p = [0.1, 0.9, 1.0, 0.3];
        let mut g = [0.0; 4];
        model(&p, None, 1.7, &mut g);
        for j in 0..4 {
            let (mut a, mut b) = (p, p);
            a[j] += 1e-6;
            b[j] -= 1e-6;
            let mut t = [0.0; 4];
            let num = (model(&a, None, 1.7, &mut t) - model(&b, None, 1.7, &mut t)) / 2e-6;
            assert!((num - g[j]).abs() < 1e-8, "d{j}: {num} vs {}", g[j]);
        }
    }
}

//! Spectral initialization without the data matrix: the spiked Dumitriu–Edelman bidiagonal model and an
//! O(m) top eigenpair of a symmetric tridiagonal matrix.
//!
//! ## The model (exact in distribution)
//! Rows of X (n × d) are `N(0, I + β v vᵀ)`. Rotate coordinates so that v = e₁ (the law of the spectrum,
//! and of the top eigenvector's overlap with v, does not change); then column 1 of X is
//! `sqrt(1+β) z₁` and the other columns are independent `N(0, I_n)`. Householder bidiagonalization,
//! alternating a left reflection that zeroes a column below the diagonal and a right reflection that
//! zeroes a row right of the superdiagonal, **acting only on columns ≥ 2 from the right**:
//! - the left reflection of column 1 gives `a₁ = sqrt(1+β) χ_n`; it depends on column 1 alone, so the
//!   other columns stay i.i.d. Gaussian; row 1 of columns 2..d is then i.i.d. `N(0,1)`, and the right
//!   reflection of those entries gives `b₁ = χ_{d−1}` and leaves rows 2..n i.i.d. Gaussian;
//! - the remaining (n−1) × (d−1) block is a plain Gaussian matrix, whose Dumitriu–Edelman bidiagonal is
//!   `a_i = χ_{n−i+1}`, `b_i = χ_{d−i}` (Dumitriu & Edelman 2002).
//!
//! So `X = H_L B H_Rᵀ` with B upper bidiagonal (diagonal `a_1..a_m`, superdiagonal `b_1..b_m`, m =
//! min(n, d), `b_m = 0` when n ≥ d) and `H_R e₁ = e₁ = v`: the right singular vectors of X are `H_R`
//! times those of B, and their first coordinate is their overlap with v. With `T = B Bᵀ / n` (m × m
//! tridiagonal: diagonal `(a_i² + b_i²)/n`, off-diagonal `a_{i+1} b_i / n`) and its top eigenpair (λ, y),
//! the top eigenvalue of `XᵀX/n` is λ and the top right singular vector u of B has
//! `u₁ = (Bᵀ y)₁ / sqrt(nλ) = a₁ y₁ / sqrt(nλ)` (column 1 of B holds only a₁). 2m χ draws and an O(m)
//! eigen-solve replace an n × d matrix and Lanczos on it.
//!
//! ## The eigen-solve
//! λ by Sturm-sequence bisection (four shifts per pass, so each pass shrinks the bracket fivefold and
//! the four division chains run in parallel) from the bracket [max diagonal, Gershgorin bound] down to a
//! few ulps; then inverse iteration with that shift, using an LU factorization of `T − λI` with partial
//! pivoting (LAPACK's `dgttrf`/`dgttrs`), and a Rayleigh quotient for the final λ. Memory and time are
//! O(m): at d = n = 10⁶ the whole spectral step takes a fraction of a second.
//!
//! Edge cases: m = 1 is a 1 × 1 matrix. If the top two eigenvalues agree to ~10⁻¹³ relative (possible
//! only at the bulk edge below the BBP threshold, where the overlap is O(m^−1/2) anyway), inverse
//! iteration returns a vector in their joint eigenspace; Lanczos on the full matrix has the same
//! ambiguity, and the reported residual says how well the pair was resolved.

use crate::distributions::{chi_square, Draws};

/// The reduced spectral initialization's result.
#[derive(Clone, Debug, PartialEq)]
pub struct SpikedTop {
    /// Top eigenvalue of the sample covariance `XᵀX/n`.
    pub eigenvalue: f64,
    /// `|<w, v>|` for the top eigenvector w and the spike v.
    pub spike_overlap: f64,
    /// `‖T y − λ y‖` of the tridiagonal eigenpair.
    pub residual: f64,
}

/// The m × m tridiagonal `T = B Bᵀ / n` of the spiked model, m = min(n, d): `(diagonal, off-diagonal,
/// a₁²/n)`.
pub fn spiked_tridiagonal(
    n: usize,
    d: usize,
    beta: f64,
    draws: &mut impl Draws,
) -> (Vec<f64>, Vec<f64>, f64) {
    let m = n.min(d);
    let inv_n = 1.0 / n as f64;
    let mut diag = Vec::with_capacity(m);
    let mut off = Vec::with_capacity(m.saturating_sub(1));
    // a_i² = χ²(n − i + 1) (times 1 + β for i = 1), b_i² = χ²(d − i) (0 once i ≥ d), 1-based.
    let mut a2 = (1.0 + beta) * chi_square(n as f64, draws);
    let a1_squared = a2 * inv_n;
    for i in 1..=m {
        let b2 = if i < d {
            chi_square((d - i) as f64, draws)
        } else {
            0.0
        };
        diag.push((a2 + b2) * inv_n);
        if i < m {
            let next_a2 = chi_square((n - i) as f64, draws);
            off.push((next_a2 * b2).sqrt() * inv_n);
            a2 = next_a2;
        }
    }
    (diag, off, a1_squared)
}

/// Top eigenvalue of `XᵀX/n` and the top eigenvector's overlap with the spike, for n rows of
/// `N(0, I_d + β v vᵀ)`, from the bidiagonal model (see the module docs).
pub fn spiked_top_eigen(n: usize, d: usize, beta: f64, draws: &mut impl Draws) -> SpikedTop {
    let (diag, off, a1_squared) = spiked_tridiagonal(n, d, beta, draws);
    let top = top_eigenpair(&diag, &off);
    let overlap = if top.value > 0.0 {
        (a1_squared / top.value).sqrt() * top.first_component.abs()
    } else {
        0.0
    };
    SpikedTop {
        eigenvalue: top.value,
        spike_overlap: overlap.min(1.0),
        residual: top.residual,
    }
}

/// The largest eigenvalue of a symmetric tridiagonal matrix and its unit eigenvector's first entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TopPair {
    pub value: f64,
    /// First entry of the unit eigenvector (sign arbitrary).
    pub first_component: f64,
    pub residual: f64,
}

/// Shifts evaluated per Sturm pass.
const SHIFTS: usize = 4;

/// For each shift x, the number of eigenvalues below x (Sturm count of the LDLᵀ pivots of T − xI).
fn counts_below(
    diag: &[f64],
    off_squared: &[f64],
    x: [f64; SHIFTS],
    pivmin: f64,
) -> [usize; SHIFTS] {
    let mut q = [0.0; SHIFTS];
    let mut count = [0usize; SHIFTS];
    for k in 0..SHIFTS {
        q[k] = diag[0] - x[k];
        count[k] = usize::from(q[k] < 0.0);
    }
    for (&di, &e2) in diag[1..].iter().zip(off_squared) {
        for k in 0..SHIFTS {
            // A pivot within pivmin of 0 is replaced by −pivmin (LAPACK dstebz): keeps the count exact
            // for the perturbed matrix without dividing by zero.
            let prev = if q[k].abs() < pivmin { -pivmin } else { q[k] };
            q[k] = (di - x[k]) - e2 / prev;
            count[k] += usize::from(q[k] < 0.0);
        }
    }
    count
}

/// Largest eigenpair of the symmetric tridiagonal matrix (`diag`, `off`), O(m) memory and time.
pub fn top_eigenpair(diag: &[f64], off: &[f64]) -> TopPair {
    let m = diag.len();
    assert_eq!(off.len() + 1, m.max(1), "off-diagonal length");
    if m == 1 {
        return TopPair {
            value: diag[0],
            first_component: 1.0,
            residual: 0.0,
        };
    }
    let off_squared: Vec<f64> = off.iter().map(|e| e * e).collect();
    let max_e2 = off_squared.iter().copied().fold(0.0, f64::max);
    let pivmin = f64::MIN_POSITIVE * max_e2.max(1.0);
    // λ_max ≥ every diagonal entry (Rayleigh quotient of a unit vector) and ≤ the Gershgorin bound.
    let mut lo = diag.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut hi = (0..m)
        .map(|i| {
            let left = if i > 0 { off[i - 1].abs() } else { 0.0 };
            let right = if i + 1 < m { off[i].abs() } else { 0.0 };
            diag[i] + left + right
        })
        .fold(f64::NEG_INFINITY, f64::max);
    let scale = lo.abs().max(hi.abs()).max(f64::MIN_POSITIVE);
    hi += 4.0 * f64::EPSILON * scale * (m as f64).sqrt() + pivmin;
    lo -= 4.0 * f64::EPSILON * scale;
    for _ in 0..200 {
        if hi - lo <= 4.0 * f64::EPSILON * lo.abs().max(hi.abs()) + 2.0 * pivmin {
            break;
        }
        let width = (hi - lo) / (SHIFTS + 1) as f64;
        let shifts: [f64; SHIFTS] = std::array::from_fn(|k| lo + width * (k + 1) as f64);
        let counts = counts_below(diag, &off_squared, shifts, pivmin);
        // count < m: some eigenvalue is ≥ the shift, so λ_max ≥ shift; count = m: λ_max < shift.
        let (mut new_lo, mut new_hi) = (lo, hi);
        for k in 0..SHIFTS {
            if counts[k] < m {
                new_lo = shifts[k];
            } else {
                new_hi = shifts[k];
                break;
            }
        }
        if new_lo == lo && new_hi == hi {
            break; // the bracket cannot shrink further in floating point
        }
        (lo, hi) = (new_lo, new_hi);
    }
    let shift = 0.5 * (lo + hi);
    let y = inverse_iteration(diag, off, shift);
    // Rayleigh quotient and residual of the computed vector.
    let mut ty = vec![0.0; m];
    tridiagonal_apply(diag, off, &y, &mut ty);
    let value: f64 = y.iter().zip(&ty).map(|(a, b)| a * b).sum();
    let residual = ty
        .iter()
        .zip(&y)
        .map(|(t, v)| (t - value * v).powi(2))
        .sum::<f64>()
        .sqrt();
    TopPair {
        value,
        first_component: y[0],
        residual,
    }
}

fn tridiagonal_apply(diag: &[f64], off: &[f64], x: &[f64], out: &mut [f64]) {
    let m = diag.len();
    for i in 0..m {
        let mut v = diag[i] * x[i];
        if i > 0 {
            v += off[i - 1] * x[i - 1];
        }
        if i + 1 < m {
            v += off[i] * x[i + 1];
        }
        out[i] = v;
    }
}

/// A deterministic, well-spread start vector for inverse iteration (entries in [−½, ½)). It is not
/// drawn from the run's streams: any fixed vector with a non-negligible component along the eigenvector
/// works, and a hash gives that with overwhelming probability without consuming random numbers.
fn start_vector(m: usize) -> Vec<f64> {
    (0..m as u64)
        .map(|i| {
            let mut z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64) - 0.5
        })
        .collect()
}

/// Unit eigenvector for the eigenvalue nearest `shift`, by inverse iteration with a pivoted LU of
/// `T − shift·I`.
fn inverse_iteration(diag: &[f64], off: &[f64], shift: f64) -> Vec<f64> {
    let m = diag.len();
    let norm = diag
        .iter()
        .map(|d| d.abs())
        .chain(off.iter().map(|e| 2.0 * e.abs()))
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let lu = TridiagonalLu::new(diag, off, shift, f64::EPSILON * norm);
    let mut y = start_vector(m);
    let mut previous = vec![0.0; m];
    for _ in 0..8 {
        lu.solve(&mut y);
        let n = y.iter().map(|v| v * v).sum::<f64>().sqrt();
        if !(n.is_finite() && n > 0.0) {
            // Only on overflow of an absurdly ill-conditioned solve: restart from a fresh vector, scaled
            // down so the amplification cannot overflow again.
            y = start_vector(m);
            y.iter_mut().for_each(|v| *v *= 1e-200);
            continue;
        }
        y.iter_mut().for_each(|v| *v /= n);
        // Converged once the direction stops moving (sign aside).
        let dot: f64 = y.iter().zip(&previous).map(|(a, b)| a * b).sum();
        previous.copy_from_slice(&y);
        if dot.abs() > 1.0 - 1e-14 {
            break;
        }
    }
    y
}

/// `T − σI = P L U` for tridiagonal T, with partial pivoting (LAPACK `dgttrf`); U has two superdiagonals.
struct TridiagonalLu {
    /// Multipliers of L.
    lower: Vec<f64>,
    /// Diagonal, first and second superdiagonal of U.
    d: Vec<f64>,
    du: Vec<f64>,
    du2: Vec<f64>,
    /// Whether rows i and i+1 were swapped at step i.
    swapped: Vec<bool>,
}

impl TridiagonalLu {
    /// Zero pivots (T − σI exactly singular in floating point) are replaced by `tiny`, as inverse
    /// iteration wants: the solve then amplifies the eigenvector instead of failing.
    fn new(diag: &[f64], off: &[f64], shift: f64, tiny: f64) -> Self {
        let m = diag.len();
        let mut d: Vec<f64> = diag.iter().map(|x| x - shift).collect();
        let mut lower = off.to_vec();
        let mut du = off.to_vec();
        let mut du2 = vec![0.0; m.saturating_sub(2)];
        let mut swapped = vec![false; m.saturating_sub(1)];
        for i in 0..m.saturating_sub(1) {
            if d[i].abs() >= lower[i].abs() {
                if d[i] == 0.0 {
                    d[i] = tiny;
                }
                let fact = lower[i] / d[i];
                lower[i] = fact;
                d[i + 1] -= fact * du[i];
            } else {
                let fact = d[i] / lower[i];
                d[i] = lower[i];
                lower[i] = fact;
                let temp = du[i];
                du[i] = d[i + 1];
                d[i + 1] = temp - fact * d[i + 1];
                if i + 2 < m {
                    du2[i] = du[i + 1];
                    du[i + 1] *= -fact;
                }
                swapped[i] = true;
            }
        }
        if d[m - 1] == 0.0 {
            d[m - 1] = tiny;
        }
        Self {
            lower,
            d,
            du,
            du2,
            swapped,
        }
    }

    /// Overwrites b with the solution of `(T − σI) x = b`.
    fn solve(&self, b: &mut [f64]) {
        let m = b.len();
        for i in 0..m - 1 {
            if self.swapped[i] {
                b.swap(i, i + 1);
            }
            b[i + 1] -= self.lower[i] * b[i];
        }
        b[m - 1] /= self.d[m - 1];
        if m > 1 {
            b[m - 2] = (b[m - 2] - self.du[m - 2] * b[m - 1]) / self.d[m - 2];
        }
        for i in (0..m.saturating_sub(2)).rev() {
            b[i] = (b[i] - self.du[i] * b[i + 1] - self.du2[i] * b[i + 2]) / self.d[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributions::NormalStream;
    use crate::rng::SimRng;
    use crate::tridiagonal::tridiagonal_eigen;

    #[test]
    fn top_pair_matches_the_dense_solver() {
        // Random tridiagonals of several sizes, including a near-diagonal one (tiny couplings) and one
        // with a zero coupling (a split matrix).
        let mut rng = SimRng::from_seed(5);
        for (m, coupling) in [
            (2, 1.0),
            (3, 1.0),
            (17, 1.0),
            (120, 0.3),
            (60, 1e-9),
            (40, 0.0),
        ] {
            let diag: Vec<f64> = (0..m).map(|_| rng.normal()).collect();
            let off: Vec<f64> = (0..m - 1).map(|_| coupling * rng.normal()).collect();
            let dense = tridiagonal_eigen(&diag, &off).unwrap();
            let top = top_eigenpair(&diag, &off);
            let want = dense.values[m - 1];
            assert!(
                (top.value - want).abs() < 1e-12 * want.abs().max(1.0),
                "m {m}: {} vs {want}",
                top.value
            );
            let first = dense.vector(m - 1)[0];
            assert!(
                (top.first_component.abs() - first.abs()).abs() < 1e-9,
                "m {m}: first component {} vs {first}",
                top.first_component
            );
            assert!(top.residual < 1e-12, "m {m}: residual {}", top.residual);
        }
    }

    #[test]
    fn bidiagonal_model_has_the_sample_covariance_spectrum() {
        // The sum of eigenvalues of XᵀX/n is tr(XᵀX)/n = Σ_ij X_ij²/n, with mean d + β; its variance is
        // 2 Σ_i Σ_jj² / n = 2 (d − 1 + (1+β)²)/n. So trace(T) checks the χ degrees of freedom exactly.
        let (n, d, beta) = (30, 12, 2.0);
        let mut draws = NormalStream::new(SimRng::from_seed(8));
        let reps = 4000;
        let mut traces = Vec::with_capacity(reps);
        for _ in 0..reps {
            let (diag, _, _) = spiked_tridiagonal(n, d, beta, &mut draws);
            traces.push(diag.iter().sum::<f64>());
        }
        let mean = traces.iter().sum::<f64>() / reps as f64;
        let var = traces.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (reps - 1) as f64;
        let want_var = 2.0 * (d as f64 - 1.0 + (1.0 + beta) * (1.0 + beta)) / n as f64;
        let se = (want_var / reps as f64).sqrt();
        assert!(
            (mean - (d as f64 + beta)).abs() < 5.0 * se,
            "mean trace {mean} vs {}",
            d as f64 + beta
        );
        assert!(
            (var / want_var - 1.0).abs() < 5.0 * (2.0 / reps as f64).sqrt(),
            "trace variance {var} vs {want_var}"
        );
    }

    #[test]
    fn bidiagonal_model_matches_lanczos_on_the_sample_matrix() {
        // Same law: the top eigenvalue and |<w, v>| from the bidiagonal model against Lanczos on explicit
        // spiked samples (v = e₀), 2000 draws each, two-sample KS at level 1e-3 per statistic. Tall
        // (n = 2d, above the BBP threshold), wide (n = d/2), and a subcritical spike.
        use crate::model::{target_direction, DataLaw};
        use crate::spectral::SampleMatrix;
        use crate::stats::ks_two_sample;
        let reps = 2000;
        for (n, d, beta) in [(80, 40, 1.5), (20, 40, 2.0), (80, 40, 0.3)] {
            let law = DataLaw::spiked(d, beta, target_direction());
            let mut rng = SimRng::from_seed(100 + n as u64);
            let mut dense = (Vec::new(), Vec::new());
            for _ in 0..reps {
                let x = SampleMatrix::from_rows(n, d, |_, row| law.sample(&mut rng, row));
                let top = x.top_eigen(&mut rng);
                dense.0.push(top.value);
                dense.1.push(top.vector[0].abs());
            }
            let mut draws = NormalStream::new(SimRng::from_seed(200 + n as u64));
            let mut model = (Vec::new(), Vec::new());
            for _ in 0..reps {
                let top = spiked_top_eigen(n, d, beta, &mut draws);
                model.0.push(top.eigenvalue);
                model.1.push(top.spike_overlap);
            }
            for (name, a, b) in [
                ("eigenvalue", &dense.0, &model.0),
                ("overlap", &dense.1, &model.1),
            ] {
                let (stat, p) = ks_two_sample(a, b);
                assert!(
                    p > 1e-3,
                    "n {n}, d {d}, β {beta}: {name} D = {stat:.3}, p = {p:.1e}"
                );
            }
        }
    }

    #[test]
    fn wide_and_tall_shapes_are_both_handled() {
        let mut draws = NormalStream::new(SimRng::from_seed(3));
        for (n, d) in [(1, 10), (10, 1), (5, 5), (7, 40), (40, 7)] {
            let (diag, off, _) = spiked_tridiagonal(n, d, 1.0, &mut draws);
            assert_eq!(diag.len(), n.min(d));
            assert_eq!(off.len(), n.min(d) - 1);
            let top = spiked_top_eigen(n, d, 1.0, &mut draws);
            assert!(top.eigenvalue > 0.0 && (0.0..=1.0).contains(&top.spike_overlap));
        }
        // One sample: XᵀX/n = x xᵀ, whose top eigenvector is x/|x|; its overlap with v is
        // sqrt((1+β) χ²₁ / ((1+β) χ²₁ + χ²_{d−1})) — in particular the eigenvalue is |x|².
        let mut a = NormalStream::new(SimRng::from_seed(4));
        let (diag, _, a1) = spiked_tridiagonal(1, 10, 3.0, &mut a);
        let top = spiked_top_eigen(1, 10, 3.0, &mut NormalStream::new(SimRng::from_seed(4)));
        assert!((top.eigenvalue - diag[0]).abs() < 1e-14);
        assert!((top.spike_overlap - (a1 / diag[0]).sqrt()).abs() < 1e-14);
    }
}

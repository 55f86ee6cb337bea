//! The d → ∞ theory set beside every simulation (docs/theory.md, section 4).
//!
//! - BBP: overlap of the top sample-covariance eigenvector with the spike, and the top eigenvalue.
//! - The overlap ODE of online spherical SGD, in a general form: student link σ, labels `g(t·x) + √Δ ε`
//!   from any unit direction t, isotropic or spiked (`I + β v vᵀ`) data. For any fixed direction e,
//!   `d(e·w)/dτ = −lr E[G x·e] + lr E[G z] (e·w) − (lr²/2) E[G²] (e·w)`, with `G = (σ(z) − y) σ'(z)`.
//!   The last term is the normalization correction (from `‖x‖² ≈ d`); dropping it is the classic bug.
//!   `x·e` enters only through its regression on `p = (z, t·x)`: `E[G x·e] = Cov(x·e, p) C⁻¹ E[G p]`,
//!   so the state closes on the three overlaps `(m, r, s) = (w·θ*, w·t, w·v)`, and each right-hand side
//!   is three bivariate Gaussian expectations done by quadrature (exact for polynomial links).
//!   With isotropic data and g = σ this is the conventions' `dm/dτ = lr (ρ − m r) h'(r) − (lr²/2) m V(r)`
//!   (checked in the tests).
//! - The geodesic (lr → 0) peak, and the escape scale from the information exponent.

use crate::link::Link;
use crate::quadrature::{bivariate_expectation, Bivariate, Shape2};

/// BBP limit of `|<v̂, θ*>|` for `γ = d/n`, spike strength β and spike alignment η (η = 1: v = θ*).
pub fn bbp_overlap(beta: f64, gamma: f64, eta: f64) -> f64 {
    if beta * beta <= gamma {
        return 0.0;
    }
    let sq = (1.0 - gamma / (beta * beta)) / (1.0 + gamma / beta);
    eta.abs() * sq.sqrt()
}

/// BBP limit of the top eigenvalue of the sample covariance.
pub fn bbp_top_eigenvalue(beta: f64, gamma: f64) -> f64 {
    if beta * beta <= gamma {
        (1.0 + gamma.sqrt()).powi(2)
    } else {
        (1.0 + beta) * (1.0 + gamma / beta)
    }
}

/// Geodesic (lr → 0) peak overlap: w moves on the great circle from w0 towards θ_w.
pub fn geodesic_peak(rho: f64, m0: f64, r0: f64) -> f64 {
    if (1.0 - r0 * r0) <= 1e-15 {
        return rho;
    }
    (rho * rho + (m0 - rho * r0).powi(2) / (1.0 - r0 * r0)).sqrt()
}

/// Order of the number of samples online SGD needs to escape `m ≈ d^−1/2` from a random start, for
/// information exponent k (Ben Arous, Gheissari, Jagannath 2021): d, d log d, d^(k−1). No constant.
pub fn escape_samples_scale(information_exponent: usize, d: usize) -> f64 {
    let d = d as f64;
    match information_exponent {
        0 | 1 => d,
        2 => d * d.ln(),
        k => d.powi(k as i32 - 1),
    }
}

/// Exact risk `½ E[(g(p·x) − σ(θ*·x))²] + Δ/2` of a predictor `g(p·x)` with unit p, under
/// `N(0, I + β v vᵀ)`, where `m = p·θ*`, `s = p·v`, `eta = θ*·v`.
pub fn predictor_risk(
    predictor: &Link,
    target: &Link,
    noise: f64,
    m: f64,
    s: f64,
    eta: f64,
    beta: f64,
) -> f64 {
    let law = Bivariate {
        var_u: 1.0 + beta * s * s,
        var_v: 1.0 + beta * eta * eta,
        cov: m + beta * s * eta,
    };
    let shape = Shape2 {
        u: predictor.shape_of_power(2, 0),
        v: target.shape_of_power(2, 0),
    };
    let [e] = bivariate_expectation(law, &shape, |a, q| {
        [(predictor.eval(a) - target.eval(q)).powi(2)]
    });
    0.5 * e + 0.5 * noise
}

/// Fixed geometry of the planted directions and the fine-tuning data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    /// `t·θ*` for the label direction t (ρ for weak labels, 1 for ground truth).
    pub label_target_overlap: f64,
    /// `t·v`.
    pub label_spike_overlap: f64,
    /// `θ*·v`.
    pub eta: f64,
    /// Spike strength of the fine-tuning data (0: isotropic).
    pub beta: f64,
}

/// The overlap ODE of one student.
#[derive(Clone, Debug)]
pub struct OverlapOde {
    pub student: Link,
    pub label_link: Link,
    pub label_noise: f64,
    pub geometry: Geometry,
    pub lr: f64,
}

/// `(m, r, s) = (w·θ*, w·t, w·v)`.
pub type Overlaps = [f64; 3];

impl OverlapOde {
    /// `(E[G z], E[G q], E[G²])` at the given overlaps, with `q = t·x`.
    pub fn moments(&self, state: &Overlaps) -> [f64; 3] {
        let [_, r, s] = *state;
        let g = &self.geometry;
        let kt = g.label_spike_overlap;
        let law = Bivariate {
            var_u: 1.0 + g.beta * s * s,
            var_v: 1.0 + g.beta * kt * kt,
            cov: r + g.beta * s * kt,
        };
        let shape = Shape2 {
            u: self.student.shape_of_power(4, 1),
            v: self.label_link.shape_of_power(2, 1),
        };
        let noise = self.label_noise;
        bivariate_expectation(law, &shape, |z, q| {
            let (f, df) = self.student.eval_and_deriv(z);
            let gf = (f - self.label_link.eval(q)) * df;
            [gf * z, gf * q, gf * gf + noise * df * df]
        })
    }

    /// Right-hand side of the ODE.
    pub fn rhs(&self, state: &Overlaps) -> Overlaps {
        let [m, r, s] = *state;
        let g = &self.geometry;
        let (rho_t, kt, eta, beta) = (g.label_target_overlap, g.label_spike_overlap, g.eta, g.beta);
        let [egz, egq, eg2] = self.moments(state);
        // C = Cov(p), p = (z, q).
        let c11 = 1.0 + beta * s * s;
        let c12 = r + beta * s * kt;
        let c22 = 1.0 + beta * kt * kt;
        let det = c11 * c22 - c12 * c12;
        // Solve C a = E[G p]; then E[G x·e] = Cov(x·e, p)·a.
        let (a1, a2) = if det > 1e-12 * c11 * c22 {
            ((c22 * egz - c12 * egq) / det, (c11 * egq - c12 * egz) / det)
        } else {
            // w ∥ t: p is one-dimensional; regress on z alone.
            (egz / c11, 0.0)
        };
        // Overlaps of each fixed direction e ∈ {θ*, t, v} with (t, v), and with w (the state).
        let dirs = [(m, rho_t, eta), (r, 1.0, kt), (s, kt, 1.0)]; // (e·w, e·t, e·v)
        let mut out = [0.0; 3];
        for (k, &(ew, et, ev)) in dirs.iter().enumerate() {
            let cov_ez = ew + beta * ev * s;
            let cov_eq = et + beta * ev * kt;
            let egx = cov_ez * a1 + cov_eq * a2;
            out[k] = -self.lr * egx + self.lr * egz * ew - 0.5 * self.lr * self.lr * eg2 * ew;
        }
        out
    }

    /// Integrates from `start` and returns the state at each time in `taus` (sorted, ≥ 0), by adaptive
    /// Dormand–Prince 5(4) with relative tolerance 1e−9.
    pub fn solve(&self, start: Overlaps, taus: &[f64]) -> Vec<Overlaps> {
        let mut out = Vec::with_capacity(taus.len());
        let mut y = start;
        let mut t = 0.0;
        let mut h = 1e-3 / self.lr.max(1e-12);
        for &target in taus {
            while t < target {
                let step = h.min(target - t);
                let (y5, err) = dopri_step(self, &y, step);
                let scale = y.iter().chain(&y5).fold(1e-6f64, |a, v| a.max(v.abs()));
                let tol = 1e-9 * scale;
                if err <= tol || step < 1e-12 {
                    t += step;
                    y = y5;
                    let grow = if err == 0.0 {
                        5.0
                    } else {
                        (0.9 * (tol / err).powf(0.2)).clamp(0.2, 5.0)
                    };
                    if step == h {
                        h *= grow;
                    }
                } else {
                    h = step * (0.9 * (tol / err).powf(0.2)).clamp(0.1, 0.9);
                }
            }
            out.push(y);
        }
        out
    }
}

fn add(y: &Overlaps, terms: &[(f64, &Overlaps)], h: f64) -> Overlaps {
    let mut out = *y;
    for (c, k) in terms {
        for i in 0..3 {
            out[i] += h * c * k[i];
        }
    }
    out
}

/// One Dormand–Prince step: the 5th-order solution and the max-norm of the embedded error estimate.
fn dopri_step(ode: &OverlapOde, y: &Overlaps, h: f64) -> (Overlaps, f64) {
    let k1 = ode.rhs(y);
    let k2 = ode.rhs(&add(y, &[(1.0 / 5.0, &k1)], h));
    let k3 = ode.rhs(&add(y, &[(3.0 / 40.0, &k1), (9.0 / 40.0, &k2)], h));
    let k4 = ode.rhs(&add(
        y,
        &[(44.0 / 45.0, &k1), (-56.0 / 15.0, &k2), (32.0 / 9.0, &k3)],
        h,
    ));
    let k5 = ode.rhs(&add(
        y,
        &[
            (19372.0 / 6561.0, &k1),
            (-25360.0 / 2187.0, &k2),
            (64448.0 / 6561.0, &k3),
            (-212.0 / 729.0, &k4),
        ],
        h,
    ));
    let k6 = ode.rhs(&add(
        y,
        &[
            (9017.0 / 3168.0, &k1),
            (-355.0 / 33.0, &k2),
            (46732.0 / 5247.0, &k3),
            (49.0 / 176.0, &k4),
            (-5103.0 / 18656.0, &k5),
        ],
        h,
    ));
    let y5 = add(
        y,
        &[
            (35.0 / 384.0, &k1),
            (500.0 / 1113.0, &k3),
            (125.0 / 192.0, &k4),
            (-2187.0 / 6784.0, &k5),
            (11.0 / 84.0, &k6),
        ],
        h,
    );
    let k7 = ode.rhs(&y5);
    let e = [
        71.0 / 57600.0,
        0.0,
        -71.0 / 16695.0,
        71.0 / 1920.0,
        -17253.0 / 339200.0,
        22.0 / 525.0,
        -1.0 / 40.0,
    ];
    let ks = [k1, k2, k3, k4, k5, k6, k7];
    let mut err = 0.0f64;
    for i in 0..3 {
        let v: f64 = ks.iter().zip(&e).map(|(k, c)| c * k[i]).sum();
        err = err.max((h * v).abs());
    }
    (y5, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isotropic(rho: f64) -> Geometry {
        Geometry {
            label_target_overlap: rho,
            label_spike_overlap: rho,
            eta: 1.0,
            beta: 0.0,
        }
    }

    #[test]
    fn noise_moment_matches_conventions_checks() {
        // V(0) = 48 for He2 and 3456 for He3; V(1) = k·k!·Δ for He_k.
        for (k, v0) in [(2u32, 48.0), (3, 3456.0)] {
            let ode = OverlapOde {
                student: Link::Hermite(k),
                label_link: Link::Hermite(k),
                label_noise: 0.0,
                geometry: isotropic(1.0),
                lr: 1.0,
            };
            let [_, _, v] = ode.moments(&[0.0, 0.0, 0.0]);
            assert!((v - v0).abs() < 1e-9 * v0, "He{k}: V(0) = {v}");
            let noisy = OverlapOde {
                label_noise: 0.3,
                ..ode
            };
            let [_, _, v1] = noisy.moments(&[1.0, 1.0, 1.0]);
            let fact: f64 = (1..=k).map(f64::from).product();
            assert!(
                (v1 - k as f64 * fact * 0.3).abs() < 1e-9,
                "He{k}: V(1) = {v1}"
            );
        }
    }

    #[test]
    fn general_rhs_reduces_to_the_conventions_formula() {
        // Isotropic, matched link: dm/dτ = lr (ρ − m r) h'(r) − (lr²/2) m V(r), dr/dτ = lr (1 − r²) h'(r) − ...
        for link in [Link::Hermite(2), Link::Hermite(3), Link::Tanh, Link::Relu] {
            let a = link.hermite_coefficients(40);
            let rho = 0.7;
            let lr = 0.3;
            let ode = OverlapOde {
                student: link.clone(),
                label_link: link.clone(),
                label_noise: 0.1,
                geometry: isotropic(rho),
                lr,
            };
            let (m, r): (f64, f64) = (0.45, 0.52);
            let s = m; // v = θ*
            let hp: f64 = (1..a.len())
                .map(|k| k as f64 * a[k] * a[k] * r.powi(k as i32 - 1))
                .sum();
            let [_, _, v] = ode.moments(&[m, r, s]);
            let got = ode.rhs(&[m, r, s]);
            let dm = lr * (rho - m * r) * hp - 0.5 * lr * lr * m * v;
            let dr = lr * (1.0 - r * r) * hp - 0.5 * lr * lr * r * v;
            // 40 Hermite terms: relu's series tail limits agreement to ~1e-4.
            let tol = if link == Link::Relu { 2e-4 } else { 1e-8 };
            assert!((got[0] - dm).abs() < tol, "{link}: dm {} vs {dm}", got[0]);
            assert!((got[1] - dr).abs() < tol, "{link}: dr {} vs {dr}", got[1]);
        }
    }

    #[test]
    fn geodesic_limit_peaks_then_saturates_at_rho() {
        // Small lr: the ODE follows the geodesic; m peaks near the geodesic formula and ends near ρ.
        let rho = 0.6;
        let lr = 1e-3;
        let ode = OverlapOde {
            student: Link::Hermite(2),
            label_link: Link::Hermite(2),
            label_noise: 0.0,
            geometry: isotropic(rho),
            lr,
        };
        let m0 = 0.8;
        let r0 = rho * m0;
        let taus: Vec<f64> = (1..=400).map(|i| i as f64 * 25.0).collect();
        let path = ode.solve([m0, r0, m0], &taus);
        let peak = path.iter().map(|p| p[0]).fold(f64::MIN, f64::max);
        let want = geodesic_peak(rho, m0, r0);
        assert!((peak - want).abs() < 0.01, "peak {peak} vs geodesic {want}");
        let last = path.last().unwrap();
        assert!(
            (last[0] - rho).abs() < 0.01,
            "final m {} vs rho {rho}",
            last[0]
        );
        assert!((last[1] - 1.0).abs() < 0.01);
    }

    #[test]
    fn bbp_formulas() {
        assert_eq!(bbp_overlap(0.5, 1.0, 1.0), 0.0);
        let (beta, gamma) = (2.0, 1.0);
        let want = ((1.0 - 0.25) / 1.5f64).sqrt();
        assert!((bbp_overlap(beta, gamma, 1.0) - want).abs() < 1e-15);
        assert!((bbp_overlap(beta, gamma, 0.5) - 0.5 * want).abs() < 1e-15);
        assert!((bbp_top_eigenvalue(beta, gamma) - 4.5).abs() < 1e-15);
        assert!((bbp_top_eigenvalue(0.5, 1.0) - 4.0).abs() < 1e-15);
    }

    #[test]
    fn exact_risk_matches_hermite_series() {
        // Isotropic, matched: R(m) = Σ_{k≥1} a_k² (1 − m^k) + Δ/2.
        for link in [Link::Hermite(3), Link::Tanh] {
            let a = link.hermite_coefficients(60);
            let m: f64 = 0.6;
            let series: f64 = (1..a.len())
                .map(|k| a[k] * a[k] * (1.0 - m.powi(k as i32)))
                .sum();
            let got = predictor_risk(&link, &link, 0.2, m, m, 1.0, 0.0);
            assert!(
                (got - series - 0.1).abs() < 1e-8,
                "{link}: {got} vs {}",
                series + 0.1
            );
        }
        // sign: the series converges too slowly to check against; ½E[(sign u − sign v)²] = 2 arccos(m)/π.
        let got = predictor_risk(&Link::Sign, &Link::Sign, 0.0, 0.6, 0.6, 1.0, 0.0);
        assert!(
            (got - 2.0 * 0.6f64.acos() / std::f64::consts::PI).abs() < 1e-10,
            "{got}"
        );
        // He3 closed form 6(1 − m³).
        let r = predictor_risk(
            &Link::Hermite(3),
            &Link::Hermite(3),
            0.0,
            0.5,
            0.5,
            1.0,
            0.0,
        );
        assert!((r - 6.0 * (1.0 - 0.125)).abs() < 1e-10);
    }
}

//! Linear probes: L2-regularized logistic regression on standardized features, trained on hard or soft
//! labels by full-batch L-BFGS. The checkpoint sweep's default training mode.
//!
//! Objective (θ = (w, b), x̃ the standardized features, t ∈ [0, 1] the targets):
//!
//!   J(w, b) = (1/n) Σ_i [softplus(z_i) − t_i z_i] + (λ/2)‖w‖²,   z_i = w·x̃_i + b,
//!
//! i.e. the mean cross-entropy against soft labels (xent of Burns et al.) plus an L2 penalty on the
//! weights, not on the bias. It is scikit-learn's `LogisticRegression` objective with C = 1/(λ n) (hard
//! labels), so the two agree to the solvers' tolerance. Soft labels are used as given (no hardening).
//!
//! Style: configuration in the manner of linfa: [`ProbeParams`] is an unchecked builder, `check()`
//! validates it once into a [`ProbeConfig`], whose `fit` returns a [`Probe`] with `predict_proba`.
//! Deterministic: sequential f64 arithmetic in a fixed order; the same inputs give the same bits.
//!
//! Edge cases: λ = 0 on separable data has no finite optimum; the fit stops at `max_iter` and
//! [`FitReport::converged`] says so (not an error). A single-class training set is fine (the bias goes
//! to the class, bounded by λ on the weights).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::features::{check_same_rows, Features, Targets};
use crate::kernels;
use crate::lbfgs::{self, LbfgsOptions, Objective, Stop};
use crate::standardize::Standardizer;

/// Unchecked probe settings (builder; serde-friendly for plan files).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeParams {
    /// λ, the L2 penalty on standardized weights (per-example normalized objective).
    pub l2: f64,
    /// Iteration limit of L-BFGS.
    pub max_iter: usize,
    /// Convergence: largest |∂J/∂θ_j| at or below this.
    pub gtol: f64,
    /// L-BFGS memory (number of correction pairs).
    pub history: usize,
}

impl Default for ProbeParams {
    fn default() -> Self {
        ProbeParams {
            l2: 1e-3,
            max_iter: 1000,
            gtol: 1e-6,
            history: 10,
        }
    }
}

impl ProbeParams {
    pub fn l2(mut self, l2: f64) -> Self {
        self.l2 = l2;
        self
    }
    pub fn max_iter(mut self, max_iter: usize) -> Self {
        self.max_iter = max_iter;
        self
    }
    pub fn gtol(mut self, gtol: f64) -> Self {
        self.gtol = gtol;
        self
    }
    pub fn history(mut self, history: usize) -> Self {
        self.history = history;
        self
    }

    /// Validates the settings.
    pub fn check(&self) -> Result<ProbeConfig> {
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(Error::config("probe.l2", format!("{} is not ≥ 0", self.l2)));
        }
        if self.max_iter == 0 {
            return Err(Error::config("probe.max_iter", "must be at least 1"));
        }
        if !(self.gtol.is_finite() && self.gtol > 0.0) {
            return Err(Error::config(
                "probe.gtol",
                format!("{} is not > 0", self.gtol),
            ));
        }
        if !(1..=100).contains(&self.history) {
            return Err(Error::config(
                "probe.history",
                format!("{} is not in 1..=100", self.history),
            ));
        }
        Ok(ProbeConfig(self.clone()))
    }

    /// `check()` then `fit`.
    pub fn fit(&self, x: &Features<'_>, t: &Targets<'_>) -> Result<Probe> {
        self.check()?.fit(x, t)
    }
}

/// Validated probe settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeConfig(ProbeParams);

impl ProbeConfig {
    /// The validated settings.
    pub fn params(&self) -> &ProbeParams {
        &self.0
    }

    /// Fits a probe.
    pub fn fit(&self, x: &Features<'_>, t: &Targets<'_>) -> Result<Probe> {
        self.fit_with_report(x, t).map(|(p, _)| p)
    }

    /// Fits a probe and reports how the optimizer ended.
    pub fn fit_with_report(&self, x: &Features<'_>, t: &Targets<'_>) -> Result<(Probe, FitReport)> {
        check_same_rows(x, t)?;
        let standardizer = Standardizer::fit(x);
        let k = x.cols();
        let mut obj = ProbeObjective::new(*x, t.values(), &standardizer, self.0.l2);
        // Start at w = 0 with the bias at the targets' log-odds (clamped): the optimum of the
        // intercept-only model, so the first steps go to the features.
        let mean_t = t.values().iter().sum::<f64>() / t.len() as f64;
        let m = mean_t.clamp(1e-6, 1.0 - 1e-6);
        let mut theta0 = vec![0.0; k + 1];
        theta0[k] = (m / (1.0 - m)).ln();
        let opts = LbfgsOptions {
            history: self.0.history,
            max_iter: self.0.max_iter,
            gtol: self.0.gtol,
        };
        let r = lbfgs::minimize(&mut obj, theta0, &opts);
        if !r.f.is_finite() || r.theta.iter().any(|v| !v.is_finite()) {
            return Err(Error::Diverged(format!(
                "L-BFGS ended at a non-finite point (objective {})",
                r.f
            )));
        }
        let probe = Probe {
            standardizer,
            weights: r.theta[..k].to_vec(),
            bias: r.theta[k],
        };
        let report = FitReport {
            iterations: r.iterations,
            evaluations: r.evaluations,
            objective: r.f,
            grad_max: r.grad_max,
            converged: r.stop == Stop::Converged,
            stop: match r.stop {
                Stop::Converged => "converged",
                Stop::MaxIter => "max_iter",
                Stop::LineSearch => "line_search",
            }
            .to_string(),
        };
        Ok((probe, report))
    }
}

/// How a fit ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// Optimizer iterations (L-BFGS) or mini-batch steps.
    pub iterations: usize,
    /// Full passes over the training features (objective evaluations) or batches.
    pub evaluations: usize,
    /// Final value of J (xent + penalty) on the training set.
    pub objective: f64,
    /// Largest gradient component at the end.
    pub grad_max: f64,
    /// Whether the gradient criterion was met.
    pub converged: bool,
    /// `converged`, `max_iter`, `line_search` (no further decrease at floating-point precision) or
    /// `epochs` (mini-batch training ran its fixed length).
    pub stop: String,
}

/// A fitted probe: standardization plus weights on standardized features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Statistics of the training features.
    pub standardizer: Standardizer,
    /// w, acting on standardized features.
    pub weights: Vec<f64>,
    /// b.
    pub bias: f64,
}

impl Probe {
    /// Number of features the probe expects.
    pub fn n_features(&self) -> usize {
        self.weights.len()
    }

    /// The logits z = w·x̃ + b.
    pub fn decision_function(&self, x: &Features<'_>) -> Result<Vec<f64>> {
        if x.cols() != self.n_features() {
            return Err(Error::input(
                "features",
                format!(
                    "probe was fitted on {} features, got {}",
                    self.n_features(),
                    x.cols()
                ),
            ));
        }
        let (v, c) = self.standardizer.fold(&self.weights, self.bias);
        Ok((0..x.rows())
            .map(|i| kernels::dot(x.row(i), &v) + c)
            .collect())
    }

    /// P(y = 1 | x).
    pub fn predict_proba(&self, x: &Features<'_>) -> Result<Vec<f64>> {
        Ok(self
            .decision_function(x)?
            .into_iter()
            .map(sigmoid)
            .collect())
    }

    /// Hard predictions: class 1 when P(y = 1) > 1/2 (a tie goes to class 0, as an argmax over
    /// [class 0, class 1] does).
    pub fn predict(&self, x: &Features<'_>) -> Result<Vec<bool>> {
        Ok(self
            .decision_function(x)?
            .into_iter()
            .map(|z| z > 0.0)
            .collect())
    }
}

/// σ(z), without overflow.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Cross-entropy of logit z against target t: softplus(z) − t z, stable for any z.
pub fn xent_logit(z: f64, t: f64) -> f64 {
    z.max(0.0) - t * z + (-z.abs()).exp().ln_1p()
}

/// Cross-entropy softplus(z) − t z and σ(z) − t from one exponential (the objective's per-row cost
/// at small k is dominated by these transcendental functions).
#[inline]
pub(crate) fn xent_and_residual(z: f64, t: f64) -> (f64, f64) {
    let e = (-z.abs()).exp();
    let loss = z.max(0.0) - t * z + e.ln_1p();
    let p = if z >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    (loss, p - t)
}

/// The full-batch objective J and its gradient, fused in one pass over the features.
pub(crate) struct ProbeObjective<'a> {
    x: Features<'a>,
    t: &'a [f64],
    std: &'a Standardizer,
    l2: f64,
    raw: Vec<f64>,
}

impl<'a> ProbeObjective<'a> {
    pub(crate) fn new(x: Features<'a>, t: &'a [f64], std: &'a Standardizer, l2: f64) -> Self {
        ProbeObjective {
            x,
            t,
            std,
            l2,
            raw: vec![0.0; x.cols()],
        }
    }
}

impl Objective for ProbeObjective<'_> {
    fn eval(&mut self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let k = self.x.cols();
        let n = self.x.rows() as f64;
        let (w, b) = (&theta[..k], theta[k]);
        let (v, c) = self.std.fold(w, b);
        self.raw.iter_mut().for_each(|r| *r = 0.0);
        let mut loss = 0.0;
        let mut r_sum = 0.0;
        let n_rows = self.x.rows();
        // Four rows at a time (the kernels share loads across them), then the remaining rows.
        let mut i = 0;
        while i + 4 <= n_rows {
            let rows = [
                self.x.row(i),
                self.x.row(i + 1),
                self.x.row(i + 2),
                self.x.row(i + 3),
            ];
            let z = kernels::dot4(rows, &v);
            let mut r = [0.0; 4];
            for q in 0..4 {
                let (l, rq) = xent_and_residual(z[q] + c, self.t[i + q]);
                loss += l;
                r[q] = rq;
                r_sum += rq;
            }
            kernels::axpy4(r, rows, &mut self.raw);
            i += 4;
        }
        for i in i..n_rows {
            let row = self.x.row(i);
            let (l, r) = xent_and_residual(kernels::dot(row, &v) + c, self.t[i]);
            loss += l;
            r_sum += r;
            kernels::axpy(r, row, &mut self.raw);
        }
        self.std.unfold_gradient(&self.raw, r_sum, &mut grad[..k]);
        let mut penalty = 0.0;
        for (g, wj) in grad[..k].iter_mut().zip(w) {
            *g = *g / n + self.l2 * wj;
            penalty += wj * wj;
        }
        grad[k] = r_sum / n;
        loss / n + 0.5 * self.l2 * penalty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated_once() {
        assert!(ProbeParams::default().check().is_ok());
        let e = ProbeParams::default()
            .l2(-1.0)
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("probe.l2"), "{e}");
        assert!(ProbeParams::default().gtol(0.0).check().is_err());
        assert!(ProbeParams::default().max_iter(0).check().is_err());
        assert!(ProbeParams::default().history(0).check().is_err());
    }

    #[test]
    fn stable_scalar_functions() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) - 1.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-16);
        assert!(sigmoid(-800.0) >= 0.0 && sigmoid(800.0) == 1.0);
        // softplus(z) − t z at z = 0 is ln 2 for any t.
        assert!((xent_logit(0.0, 0.3) - 2f64.ln()).abs() < 1e-15);
        assert!((xent_logit(1000.0, 1.0)).abs() < 1e-12);
        assert!((xent_logit(-1000.0, 1.0) - 1000.0).abs() < 1e-9);
        for (z, t) in [(0.3, 0.2), (-4.0, 1.0), (25.0, 0.0), (-0.0, 0.5)] {
            let (l, r) = xent_and_residual(z, t);
            assert!((l - xent_logit(z, t)).abs() < 1e-15 && (r - (sigmoid(z) - t)).abs() < 1e-16);
        }
    }

    /// One feature, two examples: x = ±1 with targets 1 and 0 (after standardization x̃ = ±1).
    /// By symmetry b = 0 and the optimum solves σ(w) − 1 + λ w = 0 (mean over the two examples of
    /// (σ(±w) − t)(±1) = σ(w) − 1), here with λ = 0.1, solved by bisection below.
    #[test]
    fn hand_computed_one_feature_optimum() {
        let data = [1.0f32, -1.0];
        let x = Features::new(&data, 2, 1).unwrap();
        let t = [1.0, 0.0];
        let t = Targets::new(&t).unwrap();
        let (p, rep) = ProbeParams::default()
            .l2(0.1)
            .gtol(1e-12)
            .check()
            .unwrap()
            .fit_with_report(&x, &t)
            .unwrap();
        assert!(rep.converged, "{rep:?}");
        let (mut lo, mut hi) = (0.0f64, 100.0f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if sigmoid(mid) - 1.0 + 0.1 * mid < 0.0 {
                lo = mid
            } else {
                hi = mid
            }
        }
        assert!(
            (p.weights[0] - lo).abs() < 1e-10,
            "{} vs {lo}",
            p.weights[0]
        );
        assert!(p.bias.abs() < 1e-12);
        let proba = p.predict_proba(&x).unwrap();
        assert!((proba[0] - sigmoid(lo)).abs() < 1e-10);
        assert_eq!(p.predict(&x).unwrap(), vec![true, false]);
        let wrong = [1.0f32, 2.0];
        let e = p
            .predict_proba(&Features::new(&wrong, 1, 2).unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("fitted on 1 features, got 2"));
    }
}

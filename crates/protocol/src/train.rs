//! Mini-batch training of the probe with any of the Burns et al. losses ([`crate::loss`]): Adam on
//! (w, b) over standardized features, shuffled mini-batches, constant or cosine learning rate.
//!
//! Why a second trainer: logconf and product change their target with the student's current
//! predictions and the training progress (the ramp, the running quantile), which only makes sense
//! along a training trajectory; the reference trains them with Adam on mini-batches. The model is the
//! same [`Probe`] as [`crate::probe`] (same standardization fitted on the training set, same L2 penalty
//! λ‖w‖²/2 added to the mean batch loss, bias unpenalized), so with the xent loss the stationary point is
//! the L-BFGS probe's optimum, and a long run with a decaying learning rate reaches it (tested).
//!
//! Determinism: the batch order comes from [`crate::rng::Stream`] seeded by `seed`; all arithmetic is
//! sequential. One step: logits of the batch, effective targets t̂ from the loss, gradient
//! mean((σ(z) − t̂) x̃) + λ w, Adam update (β₁ = 0.9, β₂ = 0.999, ε = 1e-8, PyTorch's defaults, L2
//! coupled into the gradient as PyTorch's `weight_decay` does). The last batch of an epoch may be
//! smaller. Steps are counted from 0; step_frac = step / total_steps.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::features::{check_same_rows, Features, Targets};
use crate::kernels;
use crate::lbfgs::Objective;
use crate::loss::{Loss, LossState};
use crate::probe::{sigmoid, FitReport, Probe, ProbeObjective};
use crate::rng::Stream;
use crate::standardize::Standardizer;

/// Learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// lr at every step.
    Constant,
    /// lr · (1 + cos(π step/total))/2, PyTorch's CosineAnnealingLR to 0 (the reference's default).
    Cosine,
}

/// Unchecked mini-batch training settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainParams {
    /// The loss.
    pub loss: Loss,
    /// λ, as in [`crate::probe::ProbeParams::l2`].
    pub l2: f64,
    /// Passes over the training set.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Seed of the batch order.
    pub seed: u64,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            loss: Loss::Xent,
            l2: 1e-3,
            epochs: 10,
            batch_size: 32,
            lr: 1e-2,
            schedule: Schedule::Cosine,
            seed: 0,
        }
    }
}

impl TrainParams {
    pub fn loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }
    pub fn l2(mut self, l2: f64) -> Self {
        self.l2 = l2;
        self
    }
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validates the settings.
    pub fn check(&self) -> Result<TrainConfig> {
        self.loss.validate()?;
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(Error::config("train.l2", format!("{} is not ≥ 0", self.l2)));
        }
        if self.epochs == 0 {
            return Err(Error::config("train.epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::config("train.batch_size", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config("train.lr", format!("{} is not > 0", self.lr)));
        }
        Ok(TrainConfig(self.clone()))
    }

    /// `check()` then `fit`.
    pub fn fit(&self, x: &Features<'_>, t: &Targets<'_>) -> Result<Probe> {
        self.check()?.fit(x, t)
    }
}

/// Validated mini-batch training settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig(TrainParams);

/// What a mini-batch run did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// The final probe's full-batch diagnostics: `objective` is J (xent against the given labels
    /// plus the penalty), `grad_max` its gradient, `stop` = "epochs".
    pub fit: FitReport,
    /// The logconf hardening threshold (a logit) at each step; empty for other losses.
    pub thresholds: Vec<f64>,
    /// The logconf weight at each step; empty for other losses.
    pub coefs: Vec<f64>,
}

impl TrainConfig {
    /// The validated settings.
    pub fn params(&self) -> &TrainParams {
        &self.0
    }

    /// Trains a probe.
    pub fn fit(&self, x: &Features<'_>, t: &Targets<'_>) -> Result<Probe> {
        self.fit_with_report(x, t).map(|(p, _)| p)
    }

    /// Trains a probe and reports the run.
    pub fn fit_with_report(
        &self,
        x: &Features<'_>,
        t: &Targets<'_>,
    ) -> Result<(Probe, TrainReport)> {
        check_same_rows(x, t)?;
        let p = &self.0;
        let (n, k) = (x.rows(), x.cols());
        let labels = t.values();
        let standardizer = Standardizer::fit(x);
        let mut state = LossState::new(&p.loss, labels);
        let batch = p.batch_size.min(n);
        let steps_per_epoch = n.div_ceil(batch);
        let total = steps_per_epoch * p.epochs;

        // θ = (w, b); Adam moments.
        let mut theta = vec![0.0f64; k + 1];
        let mut m = vec![0.0f64; k + 1];
        let mut v2 = vec![0.0f64; k + 1];
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let mut grad = vec![0.0f64; k + 1];
        let mut raw = vec![0.0f64; k];
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = Stream::new(p.seed, "train-shuffle");
        let mut z = Vec::with_capacity(batch);
        let mut yb = Vec::with_capacity(batch);
        let mut tb = vec![0.0f64; batch];
        let mut thresholds = Vec::new();
        let mut coefs = Vec::new();
        let mut step = 0usize;
        for _epoch in 0..p.epochs {
            rng.shuffle(&mut order);
            for idx in order.chunks(batch) {
                let step_frac = step as f64 / total as f64;
                let (w, c) = standardizer.fold(&theta[..k], theta[k]);
                z.clear();
                yb.clear();
                for &i in idx {
                    let zi = kernels::dot(x.row(i), &w) + c;
                    if !zi.is_finite() {
                        return Err(Error::Diverged(format!(
                            "non-finite logit at step {step} (lr {} too large?)",
                            p.lr
                        )));
                    }
                    z.push(zi);
                    yb.push(labels[i]);
                }
                let tb = &mut tb[..idx.len()];
                if let Some(thr) = state.targets(step_frac, &z, &yb, tb) {
                    thresholds.push(thr);
                    if let Loss::Logconf(cfg) = &p.loss {
                        coefs.push(crate::loss::logconf_coef(cfg, step_frac));
                    }
                }
                raw.iter_mut().for_each(|r| *r = 0.0);
                let mut r_sum = 0.0;
                for ((&i, &zi), &ti) in idx.iter().zip(&z).zip(tb.iter()) {
                    let r = sigmoid(zi) - ti;
                    r_sum += r;
                    kernels::axpy(r, x.row(i), &mut raw);
                }
                let nb = idx.len() as f64;
                standardizer.unfold_gradient(&raw, r_sum, &mut grad[..k]);
                for (g, wj) in grad[..k].iter_mut().zip(&theta[..k]) {
                    *g = *g / nb + p.l2 * wj;
                }
                grad[k] = r_sum / nb;
                let lr = match p.schedule {
                    Schedule::Constant => p.lr,
                    Schedule::Cosine => {
                        p.lr * 0.5 * (1.0 + (std::f64::consts::PI * step_frac).cos())
                    }
                };
                let t1 = (step + 1) as i32;
                let (c1, c2) = (1.0 - b1.powi(t1), 1.0 - b2.powi(t1));
                for j in 0..=k {
                    m[j] = b1 * m[j] + (1.0 - b1) * grad[j];
                    v2[j] = b2 * v2[j] + (1.0 - b2) * grad[j] * grad[j];
                    theta[j] -= lr * (m[j] / c1) / ((v2[j] / c2).sqrt() + eps);
                }
                step += 1;
            }
        }
        if theta.iter().any(|v| !v.is_finite()) {
            return Err(Error::Diverged("non-finite weights after training".into()));
        }
        let mut obj = ProbeObjective::new(*x, labels, &standardizer, p.l2);
        let mut g = vec![0.0; k + 1];
        let f = obj.eval(&theta, &mut g);
        let fit = FitReport {
            iterations: step,
            evaluations: step,
            objective: f,
            grad_max: g.iter().fold(0.0f64, |a, v| a.max(v.abs())),
            converged: false,
            stop: "epochs".into(),
        };
        let probe = Probe {
            standardizer,
            weights: theta[..k].to_vec(),
            bias: theta[k],
        };
        Ok((
            probe,
            TrainReport {
                fit,
                thresholds,
                coefs,
            },
        ))
    }
}

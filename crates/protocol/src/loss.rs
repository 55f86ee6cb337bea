//! The losses of Burns et al. (2023, openai/weak-to-strong `weak_to_strong/loss.py`) for a binary
//! probe with one logit z (P(y = 1) = σ(z)), given weak soft labels y ∈ [0, 1].
//!
//! All three are a cross-entropy against a target that is treated as a constant (PyTorch `.detach()`),
//! so their gradient with respect to z is σ(z) − t̂ for an effective target t̂:
//!
//! - **xent**: t̂ = y. The same objective as [`crate::probe`] (mean cross-entropy on soft labels), so a
//!   mini-batch run with xent converges to the L-BFGS probe.
//! - **product**: t̂ ∝ p^β y^α, normalized over the two classes: t̂ = σ(β z + α logit y) (with
//!   logit 1 = +∞ and logit 0 = −∞ for α > 0, and y^0 = 1 for α = 0, as `torch.pow` does). The reference
//!   takes a `warmup_frac` but never uses it; so neither do we.
//! - **logconf** (the auxiliary confidence loss): t̂ = (1 − c) y + c h, where h ∈ {0, 1} is the student's
//!   own hardened prediction and c its weight.
//!
//! ## logconf: the weight ramp
//! The reference computes `coef = 1 if step_frac > warmup_frac else step_frac`, times `aux_coef`: during
//! the warmup the weight is `aux_coef · step_frac`, reaching only `aux_coef · warmup_frac` and then
//! jumping to `aux_coef`. The paper describes a linear warmup; [`Ramp::Linear`] (the default) is that:
//! c = aux_coef · min(1, step_frac / warmup_frac), continuous, reaching `aux_coef` at the end of the
//! warmup (warmup_frac = 0: full weight from the first step). [`Ramp::Burns2023`] reproduces the
//! reference's schedule exactly, for comparisons. step_frac = step / total_steps with the step counted
//! from 0, as in the reference's training loop.
//!
//! ## logconf: the hardening threshold, from a running quantile
//! The reference sets the threshold per batch: `torch.quantile(p₀, mean_weak₁)` over the batch's class-0
//! probabilities at the level of the batch's mean weak soft label, and hardens h = 1 where p₀ < threshold.
//! So exactly a fraction ≈ mean_weak₁ of every batch is called positive, whatever that batch contains:
//! with a batch of 32 the batch quantile has a standard error of order √(q(1−q)/32) ≈ 9 % in level, and
//! the threshold jumps from batch to batch. We instead take:
//!
//! - the level q from the mean weak soft label over the **whole training set** (a constant: the weak
//!   supervisor's positive rate does not change during training), and
//! - the threshold as the type-7 quantile, at level 1 − q, of the student's logits over a **sliding
//!   window of its most recent predictions** on training examples ([`crate::quantile::RunningQuantile`]),
//!   each logit as computed when its batch was trained on, the current batch included. The window holds
//!   one epoch (n_train values) by default, configurable.
//!
//! h = 1 where z > threshold (ties to class 0). This is the reference's rule mirrored (p₀ = σ(−z) is
//! decreasing in z, so "p₀ below its q-quantile" is "z above its (1 − q)-quantile"; both pick the same
//! examples). At the first step the window holds only the first batch, so the threshold starts as the
//! reference's per-batch one and becomes the quantile over the last epoch's predictions once an epoch
//! has passed: an estimate of the full-training-set quantile with at most one epoch of lag, exact (no
//! step size to tune, unlike a stochastic-approximation quantile tracker or an EMA of batch quantiles),
//! deterministic, and O(window) per step by selection. With `window = batch_size` it approximates the
//! reference's per-batch threshold (up to the level, which stays the training-set mean).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::probe::sigmoid;
use crate::quantile::RunningQuantile;

/// Which loss trains the student.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Loss {
    /// Cross-entropy on soft labels.
    Xent,
    /// Auxiliary confidence loss.
    Logconf(LogconfConfig),
    /// Product of the student's and the supervisor's distributions.
    Product(ProductConfig),
}

impl Loss {
    /// `xent`, `logconf` or `product`.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::Xent => "xent",
            Loss::Logconf(_) => "logconf",
            Loss::Product(_) => "product",
        }
    }

    /// Checks the coefficients.
    pub fn validate(&self) -> Result<()> {
        match self {
            Loss::Xent => Ok(()),
            Loss::Logconf(c) => {
                if !(c.aux_coef.is_finite() && (0.0..=1.0).contains(&c.aux_coef)) {
                    return Err(Error::config(
                        "loss.aux_coef",
                        format!("{} is not in [0, 1] (a mixing weight)", c.aux_coef),
                    ));
                }
                if !(c.warmup_frac.is_finite() && (0.0..=1.0).contains(&c.warmup_frac)) {
                    return Err(Error::config(
                        "loss.warmup_frac",
                        format!("{} is not in [0, 1]", c.warmup_frac),
                    ));
                }
                if c.window == Some(0) {
                    return Err(Error::config("loss.window", "must be at least 1"));
                }
                Ok(())
            }
            Loss::Product(c) => {
                for (field, v) in [("loss.alpha", c.alpha), ("loss.beta", c.beta)] {
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(Error::config(field, format!("{v} is not ≥ 0")));
                    }
                }
                Ok(())
            }
        }
    }
}

/// Settings of the auxiliary confidence loss (reference defaults: aux_coef 0.5, warmup 0.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogconfConfig {
    /// Final weight of the student's hardened predictions in the target.
    pub aux_coef: f64,
    /// Fraction of training over which the weight ramps up.
    pub warmup_frac: f64,
    /// Shape of the ramp.
    pub ramp: Ramp,
    /// Running-quantile window in examples; `None` is one epoch (the training-set size).
    pub window: Option<usize>,
}

impl Default for LogconfConfig {
    fn default() -> Self {
        LogconfConfig {
            aux_coef: 0.5,
            warmup_frac: 0.1,
            ramp: Ramp::Linear,
            window: None,
        }
    }
}

/// How the logconf weight grows during the warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ramp {
    /// aux_coef · min(1, step_frac / warmup_frac).
    Linear,
    /// The reference code's schedule: aux_coef · (step_frac during the warmup, 1 after it).
    Burns2023,
}

/// Settings of the product loss (reference defaults α = β = 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProductConfig {
    /// Exponent on the weak labels.
    pub alpha: f64,
    /// Exponent on the student's predictions.
    pub beta: f64,
}

impl Default for ProductConfig {
    fn default() -> Self {
        ProductConfig {
            alpha: 1.0,
            beta: 1.0,
        }
    }
}

/// The logconf weight c at `step_frac`.
pub fn logconf_coef(cfg: &LogconfConfig, step_frac: f64) -> f64 {
    let ramp = match cfg.ramp {
        Ramp::Linear => {
            if cfg.warmup_frac <= 0.0 {
                1.0
            } else {
                (step_frac / cfg.warmup_frac).min(1.0)
            }
        }
        Ramp::Burns2023 => {
            if step_frac > cfg.warmup_frac {
                1.0
            } else {
                step_frac
            }
        }
    };
    cfg.aux_coef * ramp
}

/// The product loss's target σ(β z + α logit y) with the limits at y ∈ {0, 1}.
pub fn product_target(z: f64, y: f64, cfg: &ProductConfig) -> f64 {
    if cfg.alpha > 0.0 {
        if y >= 1.0 {
            return 1.0;
        }
        if y <= 0.0 {
            return 0.0;
        }
    }
    let logit_y = if cfg.alpha > 0.0 {
        y.ln() - (-y).ln_1p()
    } else {
        0.0
    };
    sigmoid(cfg.beta * z + cfg.alpha * logit_y)
}

/// Per-run state of a loss: turns a batch's logits and weak labels into effective targets. The
/// mini-batch probe trainer and the sweep's fine-tuned students both train through it.
#[derive(Clone, Debug)]
pub struct LossState {
    loss: Loss,
    /// logconf: the level q (training-set mean weak label) and the window of recent logits.
    level: f64,
    window: Option<RunningQuantile>,
}

impl LossState {
    /// `train_targets` are the whole training set's labels (for logconf's level and default window).
    pub fn new(loss: &Loss, train_targets: &[f64]) -> Self {
        let level = train_targets.iter().sum::<f64>() / train_targets.len().max(1) as f64;
        let window = match loss {
            Loss::Logconf(c) => Some(RunningQuantile::new(
                c.window.unwrap_or(train_targets.len()),
            )),
            _ => None,
        };
        LossState {
            loss: loss.clone(),
            level,
            window,
        }
    }

    /// Writes t̂ for each example of a batch; returns the hardening threshold used (logconf only).
    pub fn targets(
        &mut self,
        step_frac: f64,
        logits: &[f64],
        labels: &[f64],
        out: &mut [f64],
    ) -> Option<f64> {
        match &self.loss {
            Loss::Xent => {
                out.copy_from_slice(labels);
                None
            }
            Loss::Product(c) => {
                for ((o, &z), &y) in out.iter_mut().zip(logits).zip(labels) {
                    *o = product_target(z, y, c);
                }
                None
            }
            Loss::Logconf(c) => {
                let window = self.window.as_mut().expect("logconf has a window");
                for &z in logits {
                    window.push(z);
                }
                let threshold = window
                    .quantile(1.0 - self.level)
                    .expect("window holds the current batch");
                let coef = logconf_coef(c, step_frac);
                for ((o, &z), &y) in out.iter_mut().zip(logits).zip(labels) {
                    let h = if z > threshold { 1.0 } else { 0.0 };
                    *o = (1.0 - coef) * y + coef * h;
                }
                Some(threshold)
            }
        }
    }
}

/// First bytes of a saved [`LossState`] (format version 1).
const STATE_MAGIC: &[u8; 8] = b"w2sgLS01";

impl LossState {
    /// The running state as bytes, for an epoch checkpoint of a fine-tuning run: the loss settings
    /// (JSON), the level and logconf's window (capacity, ring slot, values) with every f64 as its
    /// bits, so that [`LossState::restore`] continues with exactly the targets of an uninterrupted
    /// run.
    pub fn save(&self) -> Vec<u8> {
        let loss = serde_json::to_vec(&self.loss).expect("a loss serializes");
        let mut out = Vec::with_capacity(64 + loss.len());
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&(loss.len() as u64).to_le_bytes());
        out.extend_from_slice(&loss);
        out.extend_from_slice(&self.level.to_bits().to_le_bytes());
        match &self.window {
            None => out.push(0),
            Some(w) => {
                let (capacity, ring, next) = w.parts();
                out.push(1);
                for n in [capacity, next, ring.len()] {
                    out.extend_from_slice(&(n as u64).to_le_bytes());
                }
                for v in ring {
                    out.extend_from_slice(&v.to_bits().to_le_bytes());
                }
            }
        }
        out
    }

    /// Restores a state saved by [`LossState::save`] into this one, which must be for the same loss
    /// settings (and window capacity); on an error (other settings, truncated or foreign bytes) this
    /// state is unchanged.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let bad = |problem: String| Error::Input {
            what: "saved loss state",
            problem,
        };
        let mut r = Reader { bytes, at: 0 };
        if r.take(STATE_MAGIC.len()) != Some(&STATE_MAGIC[..]) {
            return Err(bad("not a saved loss state (bad magic)".into()));
        }
        let truncated = || bad("truncated".into());
        let len = r.u64().ok_or_else(truncated)? as usize;
        let loss: Loss = serde_json::from_slice(r.take(len).ok_or_else(truncated)?)
            .map_err(|e| bad(format!("loss settings: {e}")))?;
        if loss != self.loss {
            return Err(bad(format!(
                "saved for loss {loss:?}, this run trains with {:?}",
                self.loss
            )));
        }
        let level = f64::from_bits(r.u64().ok_or_else(truncated)?);
        let window = match r.take(1).ok_or_else(truncated)?[0] {
            0 => None,
            1 => {
                let capacity = r.u64().ok_or_else(truncated)? as usize;
                let next = r.u64().ok_or_else(truncated)? as usize;
                let n = r.u64().ok_or_else(truncated)? as usize;
                if n > capacity || n > bytes.len() / 8 {
                    return Err(bad(format!("{n} values in a window of {capacity}")));
                }
                let ring: Vec<f64> = (0..n)
                    .map(|_| r.u64().map(f64::from_bits))
                    .collect::<Option<_>>()
                    .ok_or_else(truncated)?;
                Some(
                    RunningQuantile::from_parts(capacity, ring, next)
                        .ok_or_else(|| bad("inconsistent window".into()))?,
                )
            }
            other => return Err(bad(format!("unknown window flag {other}"))),
        };
        if r.at != bytes.len() {
            return Err(bad(format!("{} trailing bytes", bytes.len() - r.at)));
        }
        let expected = self.window.as_ref().map(|w| w.parts().0);
        if window.as_ref().map(|w| w.parts().0) != expected {
            return Err(bad(format!(
                "window capacity {:?}, this run's is {expected:?}",
                window.as_ref().map(|w| w.parts().0)
            )));
        }
        self.level = level;
        self.window = window;
        Ok(())
    }
}

/// A cursor over saved bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A logconf state saved mid-run and restored into a fresh state gives the uninterrupted run's
    /// targets and thresholds bit for bit (the window has wrapped around, so the ring slot matters);
    /// a state for other settings, or cut short, is refused and leaves the state as it was.
    #[test]
    fn saved_state_continues_bit_for_bit() {
        let labels: Vec<f64> = (0..7).map(|i| (i as f64 * 0.37).fract()).collect();
        let loss = Loss::Logconf(LogconfConfig {
            window: Some(5),
            ..Default::default()
        });
        let batch = |s: usize| -> Vec<f64> {
            (0..3)
                .map(|j| ((s * 3 + j) as f64 * 1.618).sin() * 3.0)
                .collect()
        };
        let run = |st: &mut LossState, from: usize, to: usize| -> Vec<u64> {
            let mut bits = Vec::new();
            for s in from..to {
                let mut out = [0.0; 3];
                let thr = st.targets(s as f64 / 10.0, &batch(s), &labels[..3], &mut out);
                bits.push(thr.unwrap().to_bits());
                bits.extend(out.iter().map(|v| v.to_bits()));
            }
            bits
        };
        let mut whole = LossState::new(&loss, &labels);
        let reference = run(&mut whole, 0, 10);
        let mut first = LossState::new(&loss, &labels);
        let mut bits = run(&mut first, 0, 4);
        let saved = first.save();
        let mut resumed = LossState::new(&loss, &labels);
        resumed.restore(&saved).unwrap();
        bits.extend(run(&mut resumed, 4, 10));
        assert_eq!(bits, reference);
        // Without the restore the targets differ (the test can fail).
        let fresh = run(&mut LossState::new(&loss, &labels), 4, 10);
        assert_ne!(fresh[..], reference[4 * 4..]);

        for st in [
            LossState::new(&Loss::Xent, &labels),
            LossState::new(&Loss::Logconf(LogconfConfig::default()), &labels),
        ] {
            let mut st = st;
            let before = st.save();
            assert!(st.restore(&saved).is_err());
            assert_eq!(st.save(), before);
        }
        for cut in [0, 7, 20, saved.len() - 1] {
            let mut st = LossState::new(&loss, &labels);
            let err = st.restore(&saved[..cut]).unwrap_err().to_string();
            assert!(err.contains("saved loss state"), "{err}");
        }
        let mut extra = saved.clone();
        extra.push(0);
        assert!(LossState::new(&loss, &labels).restore(&extra).is_err());
        // Xent and product have no window: their state round-trips too.
        let xent = LossState::new(&Loss::Xent, &labels);
        LossState::new(&Loss::Xent, &labels)
            .restore(&xent.save())
            .unwrap();
    }

    #[test]
    fn ramp_hand_values() {
        let lin = LogconfConfig {
            aux_coef: 0.5,
            warmup_frac: 0.2,
            ..Default::default()
        };
        assert_eq!(logconf_coef(&lin, 0.0), 0.0);
        assert!((logconf_coef(&lin, 0.05) - 0.125).abs() < 1e-15); // 0.5 · 0.05/0.2
        assert!((logconf_coef(&lin, 0.1) - 0.25).abs() < 1e-15);
        assert_eq!(logconf_coef(&lin, 0.2), 0.5);
        assert_eq!(logconf_coef(&lin, 0.7), 0.5);
        let burns = LogconfConfig {
            ramp: Ramp::Burns2023,
            ..lin.clone()
        };
        assert!((logconf_coef(&burns, 0.1) - 0.05).abs() < 1e-15); // 0.5 · 0.1
        assert!((logconf_coef(&burns, 0.2) - 0.1).abs() < 1e-15); // still in warmup
        assert_eq!(logconf_coef(&burns, 0.21), 0.5); // the jump
        let none = LogconfConfig {
            warmup_frac: 0.0,
            ..lin
        };
        assert_eq!(logconf_coef(&none, 0.0), 0.5);
    }

    #[test]
    fn product_target_hand_values() {
        let c = ProductConfig::default();
        // p = σ(0) = 1/2, y = 0.8: t̂ = 0.5·0.8 / (0.5·0.8 + 0.5·0.2) = 0.8.
        assert!((product_target(0.0, 0.8, &c) - 0.8).abs() < 1e-15);
        // p = σ(ln 3) = 0.75, y = 0.4: 0.3 / (0.3 + 0.25·0.6) = 2/3.
        assert!((product_target(3f64.ln(), 0.4, &c) - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(product_target(-5.0, 1.0, &c), 1.0);
        assert_eq!(product_target(5.0, 0.0, &c), 0.0);
        // α = 0: y^0 = 1, t̂ = p^β normalized: β = 2, p = 0.75 → 0.5625/(0.5625 + 0.0625) = 0.9.
        let c2 = ProductConfig {
            alpha: 0.0,
            beta: 2.0,
        };
        assert!((product_target(3f64.ln(), 0.0, &c2) - 0.9).abs() < 1e-15);
    }

    /// Hand-computed logconf batch: level q = mean of the training labels = 0.25, window of the four
    /// logits [−2, −1, 1, 3] → threshold = type-7 quantile at 0.75 = 1 + 0.25·(3 − 1) = 1.5, so only
    /// z = 3 hardens to 1. At step_frac 0.05 with the linear ramp over 0.1: c = 0.5 · 0.5 = 0.25.
    #[test]
    fn logconf_batch_hand_values() {
        let labels = [0.0, 0.0, 0.4, 0.6];
        let loss = Loss::Logconf(LogconfConfig::default());
        let mut st = LossState::new(&loss, &labels);
        let mut out = [0.0; 4];
        let thr = st.targets(0.05, &[-2.0, -1.0, 1.0, 3.0], &labels, &mut out);
        assert_eq!(thr, Some(1.5));
        let c = 0.25;
        let expect = [0.0, 0.0, (1.0 - c) * 0.4, (1.0 - c) * 0.6 + c];
        for (o, e) in out.iter().zip(expect) {
            assert!((o - e).abs() < 1e-15, "{out:?}");
        }
        // The window (4 = training-set size) now slides: a batch of one logit 10 evicts −2, window
        // [−1, 1, 3, 10] → quantile 0.75 → 3 + 0.25·7 = 4.75; 10 hardens to 1.
        let mut out1 = [0.0];
        let thr = st.targets(1.0, &[10.0], &[0.0], &mut out1);
        assert_eq!(thr, Some(4.75));
        assert_eq!(out1[0], 0.5);
    }

    #[test]
    fn coefficients_are_validated() {
        let bad = Loss::Logconf(LogconfConfig {
            aux_coef: 1.5,
            ..Default::default()
        });
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("loss.aux_coef"));
        let bad = Loss::Product(ProductConfig {
            alpha: -1.0,
            beta: 1.0,
        });
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("loss.alpha"));
        assert!(Loss::Xent.validate().is_ok());
        let parsed: Loss = serde_json::from_str(r#"{"kind":"logconf","aux_coef":0.3}"#).unwrap();
        assert_eq!(parsed.name(), "logconf");
    }
}

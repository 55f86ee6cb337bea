//! AdamW with a savable state, global-norm gradient clipping.
//!
//! The update is PyTorch's `torch.optim.AdamW` (decoupled weight decay applied before the moment
//! update, bias-corrected moments, `eps` added to `√v̂`), so a PyTorch peer with the same hyper-parameters
//! follows the same trajectory up to float rounding. Weight decay applies to matrices only (the
//! `decay` flag of each [`Param`]), as in GPT-NeoX training.
//!
//! The state (both moments and the step count) is a list of named tensors plus one integer, written
//! next to a checkpoint so that a resumed run continues bit for bit. Every operation here is an
//! element-wise candle op or a sequential reduction, so the update is deterministic on the CPU.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

use super::model::Param;
use super::{PretrainError, Result};

/// AdamW hyper-parameters (the learning rate comes from the schedule at each step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW state: first and second moments per parameter, and the number of updates done.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// Updates applied so far (PyTorch's `state["step"]`).
    pub step: u64,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl AdamW {
    /// Zero moments for `params`.
    pub fn new(config: AdamWConfig, params: &[Param]) -> Result<Self> {
        let zeros =
            || -> Result<Vec<Tensor>> { params.iter().map(|p| Ok(p.var.zeros_like()?)).collect() };
        Ok(AdamW {
            config,
            step: 0,
            m: zeros()?,
            v: zeros()?,
        })
    }

    /// Global L2 norm of the gradients of `params` (missing gradients count as zero).
    pub fn grad_norm(params: &[Param], grads: &GradStore) -> Result<f64> {
        let mut total = 0f64;
        for p in params {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                total += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        Ok(total.sqrt())
    }

    /// One update at learning rate `lr`, gradients scaled by `grad_scale` (clipping). A parameter
    /// without a gradient is an error: it means the graph was cut, which must not pass silently.
    pub fn update(
        &mut self,
        params: &[Param],
        grads: &GradStore,
        lr: f64,
        grad_scale: f64,
    ) -> Result<()> {
        let c = self.config;
        self.step += 1;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for (i, p) in params.iter().enumerate() {
            let g = grads.get(p.var.as_tensor()).ok_or_else(|| {
                PretrainError::Config(format!("parameter `{}` received no gradient", p.name))
            })?;
            let g = if grad_scale != 1.0 {
                (g * grad_scale)?
            } else {
                g.clone()
            };
            let mut w = p.var.as_tensor().clone();
            if p.decay && c.weight_decay != 0.0 {
                w = (w * (1.0 - lr * c.weight_decay))?;
            }
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
            let w = (w - (m.div(&denom)? * (lr / bc1))?)?;
            p.var.set(&w)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The moments as named tensors (`m.NAME`, `v.NAME`) for saving.
    pub fn state_tensors(&self, params: &[Param]) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * params.len());
        for (i, p) in params.iter().enumerate() {
            out.push((format!("m.{}", p.name), self.m[i].clone()));
            out.push((format!("v.{}", p.name), self.v[i].clone()));
        }
        out
    }

    /// Restores moments saved by [`AdamW::state_tensors`]; `what` names the file in errors.
    pub fn from_state(
        config: AdamWConfig,
        step: u64,
        params: &[Param],
        mut tensors: BTreeMap<String, Tensor>,
        what: &str,
    ) -> Result<Self> {
        let mut m = Vec::new();
        let mut v = Vec::new();
        for p in params {
            for (prefix, out) in [("m", &mut m), ("v", &mut v)] {
                let name = format!("{prefix}.{}", p.name);
                let t = tensors.remove(&name).ok_or_else(|| {
                    PretrainError::Resume(format!("{what}: tensor `{name}` not found"))
                })?;
                if t.dims() != p.var.dims() {
                    return Err(PretrainError::Resume(format!(
                        "{what}: tensor `{name}` has shape {:?}, expected {:?}",
                        t.dims(),
                        p.var.dims()
                    )));
                }
                out.push(t.to_device(p.var.device())?);
            }
        }
        Ok(AdamW { config, step, m, v })
    }
}

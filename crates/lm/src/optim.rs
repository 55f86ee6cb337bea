//! AdamW with a savable state, global-norm gradient clipping: the one optimizer of pre-training and
//! fine-tuning.
//!
//! The update is PyTorch's `torch.optim.AdamW` (decoupled weight decay applied before the moment
//! update, bias-corrected moments, `eps` added to `√v̂`), so a PyTorch peer with the same hyper-parameters
//! follows the same trajectory up to float rounding. Weight decay applies to matrices only (the
//! `decay` flag of each [`Param`]), as in GPT-NeoX training.
//!
//! The state (both moments and the step count) is a list of named tensors plus one integer, written
//! next to a checkpoint so that a resumed run continues bit for bit. On the CPU (f32) the update of
//! each parameter is one pass over weight, gradient and moments (a dozen candle element-wise ops
//! otherwise, each allocating a tensor), with the same f32 operations in the same order as the
//! candle-op version used on other devices; the gradient norm is summed in fixed-size blocks in a
//! fixed order. Both are deterministic whatever the thread count.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

use crate::error::{LmError, Result};
use crate::weights::Param;

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
                if let Some(s) = with_cpu_f32(g, sum_of_squares) {
                    total += s;
                    continue;
                }
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
                LmError::Compute(candle_core::Error::Msg(format!(
                    "parameter `{}` received no gradient",
                    p.name
                )))
            })?;
            let h = Hyper {
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                decay: if p.decay { c.weight_decay } else { 0.0 },
                lr,
                bc1,
                bc2,
                grad_scale,
            };
            if let Some((w, m, v)) = self.update_cpu(i, p, g, &h)? {
                p.var.set(&w)?;
                self.m[i] = m;
                self.v[i] = v;
                continue;
            }
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

    /// The fused CPU update of parameter `i`: new (weight, m, v), or `None` where the tensors are not
    /// contiguous f32 CPU tensors (then the candle-op path runs).
    fn update_cpu(
        &self,
        i: usize,
        p: &Param,
        g: &Tensor,
        h: &Hyper,
    ) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        let w = p.var.as_tensor();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = g.storage_and_layout();
        let (ms, ml) = self.m[i].storage_and_layout();
        let (vs, vl) = self.v[i].storage_and_layout();
        let (Some(wv), Some(gv), Some(mv), Some(vv)) = (
            cpu_f32(&ws, wl),
            cpu_f32(&gs, gl),
            cpu_f32(&ms, ml),
            cpu_f32(&vs, vl),
        ) else {
            return Ok(None);
        };
        let n = wv.len();
        if gv.len() != n || mv.len() != n || vv.len() != n {
            return Ok(None);
        }
        let (mut w2, mut m2, mut v2) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        // The constants exactly as candle's ops round them (f64 → f32 per op), and each scaling as
        // candle's affine computes it (`x·mul + add`, here `+ 0.0`), so both paths give the same bits.
        let scale = h.grad_scale as f32;
        let wd = (1.0 - h.lr * h.decay) as f32;
        let (b1, b1c) = (h.beta1 as f32, (1.0 - h.beta1) as f32);
        let (b2, b2c) = (h.beta2 as f32, (1.0 - h.beta2) as f32);
        let inv_sqrt_bc2 = (1.0 / h.bc2.sqrt()) as f32;
        let eps = h.eps as f32;
        let step = (h.lr / h.bc1) as f32;
        const CHUNK: usize = 16 * 1024;
        w2.par_chunks_mut(CHUNK)
            .zip(m2.par_chunks_mut(CHUNK))
            .zip(v2.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, ((w2, m2), v2))| {
                let o = c * CHUNK;
                for j in 0..w2.len() {
                    let mut g = gv[o + j];
                    if h.grad_scale != 1.0 {
                        g = g * scale + 0.0;
                    }
                    let mut w = wv[o + j];
                    if h.decay != 0.0 {
                        w = w * wd + 0.0;
                    }
                    let m = (mv[o + j] * b1 + 0.0) + (g * b1c + 0.0);
                    let v = (vv[o + j] * b2 + 0.0) + ((g * g) * b2c + 0.0);
                    let denom = (v.sqrt() * inv_sqrt_bc2 + 0.0) + eps;
                    w2[j] = w - ((m / denom) * step + 0.0);
                    m2[j] = m;
                    v2[j] = v;
                }
            });
        let (dev, shape) = (w.device(), w.shape());
        Ok(Some((
            Tensor::from_vec(w2, shape, dev)?,
            Tensor::from_vec(m2, shape, dev)?,
            Tensor::from_vec(v2, shape, dev)?,
        )))
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
                let t = tensors
                    .remove(&name)
                    .ok_or_else(|| LmError::Input(format!("{what}: tensor `{name}` not found")))?;
                if t.dims() != p.var.dims() {
                    return Err(LmError::Input(format!(
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

/// The scalars of one AdamW update of one parameter.
struct Hyper {
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// Weight decay of this parameter (0 for vectors).
    decay: f64,
    lr: f64,
    bc1: f64,
    bc2: f64,
    grad_scale: f64,
}

fn cpu_f32<'a>(s: &'a Storage, l: &candle_core::Layout) -> Option<&'a [f32]> {
    match s {
        Storage::Cpu(candle_core::CpuStorage::F32(v)) => {
            let (a, b) = l.contiguous_offsets()?;
            Some(&v[a..b])
        }
        _ => None,
    }
}

fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (s, l) = t.storage_and_layout();
    cpu_f32(&s, l).map(f)
}

/// Σ x² in f64, over blocks of a fixed size summed in order: the same bits for every thread count.
fn sum_of_squares(x: &[f32]) -> f64 {
    const BLOCK: usize = 16 * 1024;
    let partial: Vec<f64> = x
        .par_chunks(BLOCK)
        .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum())
        .collect();
    partial.iter().sum()
}

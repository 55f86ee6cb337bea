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
    m: Vec<Moment>,
    v: Vec<Moment>,
}

/// One moment of one parameter: on the CPU a vector updated in place (no allocation per step, hence
/// no fresh pages to fault in); elsewhere a tensor.
#[derive(Debug, Clone)]
enum Moment {
    Host(Vec<f32>),
    Device(Tensor),
}

impl Moment {
    /// Zeros shaped like `p`, or `t`'s values.
    fn new(p: &Tensor, t: Option<Tensor>) -> Result<Self> {
        let t = match t {
            Some(t) => t,
            None => p.zeros_like()?,
        };
        if p.device().is_cpu() && p.dtype() == DType::F32 {
            Ok(Moment::Host(
                t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
            ))
        } else {
            Ok(Moment::Device(t))
        }
    }

    /// As a tensor shaped like `p`.
    fn tensor(&self, p: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Moment::Host(v) => Tensor::from_slice(v, p.shape(), p.device())?,
            Moment::Device(t) => t.clone(),
        })
    }
}

impl AdamW {
    /// Zero moments for `params`.
    pub fn new(config: AdamWConfig, params: &[Param]) -> Result<Self> {
        let zeros = || -> Result<Vec<Moment>> {
            params
                .iter()
                .map(|p| Moment::new(p.var.as_tensor(), None))
                .collect()
        };
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
            if let (Moment::Host(m), Moment::Host(v)) = (&mut self.m[i], &mut self.v[i]) {
                update_cpu(p, &g.contiguous()?, m, v, &h)?;
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
            let pt = p.var.as_tensor();
            let m = ((self.m[i].tensor(pt)? * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((self.v[i].tensor(pt)? * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
            let w = (w - (m.div(&denom)? * (lr / bc1))?)?;
            p.var.set(&w)?;
            self.m[i] = Moment::Device(m);
            self.v[i] = Moment::Device(v);
        }
        Ok(())
    }
}

/// The fused CPU update of parameter `p`: the weight and the moments in place.
///
/// The weight is updated inside its own storage (candle's in-place op, which holds the storage's
/// write lock), not computed into a fresh tensor and copied back: a fresh buffer per parameter per
/// step costs a page fault per 4 KiB (most of the optimizer's time on Pythia-70m's 178 MB of
/// weights) and a second pass to copy. Views that share the storage (the detached model of the
/// recomputed backward pass) see the update, as with `Var::set`.
fn update_cpu(p: &Param, g: &Tensor, m: &mut [f32], v: &mut [f32], h: &Hyper) -> Result<()> {
    // The constants exactly as candle's ops round them (f64 → f32 per op), and each scaling as
    // candle's affine computes it (`x·mul + add`, here `+ 0.0`), so both paths give the same bits.
    let k = Consts {
        scale: (h.grad_scale != 1.0).then_some(h.grad_scale as f32),
        wd: (h.decay != 0.0).then_some((1.0 - h.lr * h.decay) as f32),
        b1: h.beta1 as f32,
        b1c: (1.0 - h.beta1) as f32,
        b2: h.beta2 as f32,
        b2c: (1.0 - h.beta2) as f32,
        inv_sqrt_bc2: (1.0 / h.bc2.sqrt()) as f32,
        eps: h.eps as f32,
        step: (h.lr / h.bc1) as f32,
    };
    let op = InPlace {
        name: &p.name,
        k,
        moments: std::sync::Mutex::new((m, v)),
    };
    p.var.as_tensor().inplace_op2(g, &op)?;
    Ok(())
}

/// The AdamW update of one parameter as candle's in-place op on the weight's storage.
struct InPlace<'a> {
    name: &'a str,
    k: Consts,
    moments: std::sync::Mutex<(&'a mut [f32], &'a mut [f32])>,
}

impl candle_core::InplaceOp2 for InPlace<'_> {
    fn name(&self) -> &'static str {
        "w2sg-adamw"
    }

    fn cpu_fwd(
        &self,
        ws: &mut candle_core::CpuStorage,
        wl: &candle_core::Layout,
        gs: &candle_core::CpuStorage,
        gl: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let bad =
            |what: &str| candle_core::Error::Msg(format!("parameter `{}`: {what}", self.name));
        let (candle_core::CpuStorage::F32(wv), candle_core::CpuStorage::F32(gv)) = (ws, gs) else {
            return Err(bad("CPU f32 weight and gradient expected"));
        };
        let (Some((w0, w1)), Some((g0, g1))) = (wl.contiguous_offsets(), gl.contiguous_offsets())
        else {
            return Err(bad("contiguous weight and gradient expected"));
        };
        let (w, g) = (&mut wv[w0..w1], &gv[g0..g1]);
        let mut guard = self.moments.lock().map_err(|_| bad("poisoned moments"))?;
        let (m, v) = &mut *guard;
        let n = w.len();
        if g.len() != n || m.len() != n || v.len() != n {
            return Err(bad("gradient or moments of another size"));
        }
        const CHUNK: usize = 16 * 1024;
        w.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((w, g), m), v)| adamw_slice(w, g, m, v, &self.k));
        Ok(())
    }
}

impl AdamW {
    /// The moments as named tensors (`m.NAME`, `v.NAME`) for saving.
    pub fn state_tensors(&self, params: &[Param]) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * params.len());
        for (i, p) in params.iter().enumerate() {
            let t = p.var.as_tensor();
            out.push((format!("m.{}", p.name), self.m[i].tensor(t)?));
            out.push((format!("v.{}", p.name), self.v[i].tensor(t)?));
        }
        Ok(out)
    }

    /// Restores moments saved by [`AdamW::state_tensors`], taking them out of `tensors` (what is
    /// left is the caller's); `what` names the file in errors.
    pub fn from_state(
        config: AdamWConfig,
        step: u64,
        params: &[Param],
        tensors: &mut BTreeMap<String, Tensor>,
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
                if t.dims() != p.var.dims() || t.dtype() != p.var.dtype() {
                    return Err(LmError::Input(format!(
                        "{what}: tensor `{name}` has shape {:?} ({:?}), expected {:?} ({:?})",
                        t.dims(),
                        t.dtype(),
                        p.var.dims(),
                        p.var.dtype()
                    )));
                }
                out.push(Moment::new(
                    p.var.as_tensor(),
                    Some(t.to_device(p.var.device())?),
                )?);
            }
        }
        Ok(AdamW { config, step, m, v })
    }

    /// Writes the moments (`m.NAME`, `v.NAME`) and the caller's `extra` tensors into one safetensors
    /// file, atomically (a kill leaves the old file or the new one): the optimizer state of
    /// pre-training checkpoints and of fine-tuning's epoch checkpoints. The step count is the
    /// caller's to record (in `metadata` or beside the file).
    pub fn save_file(
        &self,
        path: &std::path::Path,
        params: &[Param],
        extra: &[(&str, &Tensor)],
        metadata: &BTreeMap<String, String>,
    ) -> Result<()> {
        let named = self.state_tensors(params)?;
        let mut refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        refs.extend_from_slice(extra);
        crate::checkpoint::write_safetensors(path, &refs, metadata)
    }

    /// Reads a file written by [`AdamW::save_file`]: the optimizer at `step`, and the other tensors.
    pub fn load_file(
        path: &std::path::Path,
        config: AdamWConfig,
        step: u64,
        params: &[Param],
    ) -> Result<(Self, BTreeMap<String, Tensor>)> {
        let mut tensors = crate::checkpoint::read_safetensors(path)?;
        let opt = Self::from_state(
            config,
            step,
            params,
            &mut tensors,
            &path.display().to_string(),
        )?;
        Ok((opt, tensors))
    }
}

/// The f32 constants of [`adamw_slice`].
struct Consts {
    /// Gradient scale, when not 1.
    scale: Option<f32>,
    /// Weight-decay factor `1 − lr·λ`, when λ ≠ 0.
    wd: Option<f32>,
    b1: f32,
    b1c: f32,
    b2: f32,
    b2c: f32,
    inv_sqrt_bc2: f32,
    eps: f32,
    step: f32,
}

/// One AdamW update of a slice, in candle's op order. The loop is written without branches or
/// bounds checks so that it vectorizes (square root and division included: IEEE-exact in every
/// lane, so the bits are those of the scalar loop).
#[inline(always)]
fn adamw_generic<const SCALE: bool, const DECAY: bool>(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &Consts,
) {
    let scale = k.scale.unwrap_or(1.0);
    let wd = k.wd.unwrap_or(1.0);
    let n = w.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for j in 0..n {
        let mut gj = g[j];
        if SCALE {
            gj = gj * scale + 0.0;
        }
        let mut wj = w[j];
        if DECAY {
            wj = wj * wd + 0.0;
        }
        let mj = (m[j] * k.b1 + 0.0) + (gj * k.b1c + 0.0);
        let vj = (v[j] * k.b2 + 0.0) + ((gj * gj) * k.b2c + 0.0);
        let denom = (vj.sqrt() * k.inv_sqrt_bc2 + 0.0) + k.eps;
        w[j] = wj - ((mj / denom) * k.step + 0.0);
        m[j] = mj;
        v[j] = vj;
    }
}

crate::ops::dispatch_avx2!(
    fn adamw_slice(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &Consts) {
        match (k.scale.is_some(), k.wd.is_some()) {
            (false, false) => adamw_generic::<false, false>(w, g, m, v, k),
            (true, false) => adamw_generic::<true, false>(w, g, m, v, k),
            (false, true) => adamw_generic::<false, true>(w, g, m, v, k),
            (true, true) => adamw_generic::<true, true>(w, g, m, v, k),
        }
    }
);

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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// The fused CPU update gives the bits of the candle-op version (the path of other devices),
    /// with and without weight decay and gradient scaling, over several steps.
    #[test]
    fn fused_update_matches_candle_ops_bit_for_bit() {
        let n = 40_000; // more than one parallel chunk, and a ragged tail
        let mut rng = w2sg_data::SplitMix64::new(3);
        let mut randn = |scale: f64| {
            let v: Vec<f32> = (0..n).map(|_| (rng.next_normal() * scale) as f32).collect();
            Tensor::from_vec(v, n, &Device::Cpu).unwrap()
        };
        let w0 = randn(1.0);
        let grads: Vec<Tensor> = (0..3).map(|_| randn(0.1)).collect();
        for (decay, scale) in [(true, 1.0), (false, 0.5), (true, 0.25), (false, 1.0)] {
            let c = AdamWConfig::default();
            let param = Param {
                name: "w".into(),
                var: Var::from_tensor(&w0).unwrap(),
                decay,
            };
            let params = [param];
            let mut opt = AdamW::new(c, &params).unwrap();
            let (mut w, mut m, mut v) = (
                w0.clone(),
                w0.zeros_like().unwrap(),
                w0.zeros_like().unwrap(),
            );
            for (t, g) in grads.iter().enumerate() {
                let lr = 1e-3 * (t + 1) as f64;
                let mut store = GradStore::default();
                store.insert(params[0].var.as_tensor(), g.clone());
                opt.update(&params, &store, lr, scale).unwrap();
                // The candle-op version of `update`.
                let step = (t + 1) as i32;
                let (bc1, bc2) = (1.0 - c.beta1.powi(step), 1.0 - c.beta2.powi(step));
                let g = if scale != 1.0 {
                    (g * scale).unwrap()
                } else {
                    g.clone()
                };
                if decay {
                    w = (w * (1.0 - lr * c.weight_decay)).unwrap();
                }
                m = ((&m * c.beta1).unwrap() + (&g * (1.0 - c.beta1)).unwrap()).unwrap();
                v = ((&v * c.beta2).unwrap() + (g.sqr().unwrap() * (1.0 - c.beta2)).unwrap())
                    .unwrap();
                let denom = ((v.sqrt().unwrap() / bc2.sqrt()).unwrap() + c.eps).unwrap();
                w = (w - (m.div(&denom).unwrap() * (lr / bc1)).unwrap()).unwrap();
                let bits = |t: &Tensor| -> Vec<u32> {
                    t.to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_bits())
                        .collect()
                };
                assert_eq!(
                    bits(params[0].var.as_tensor()),
                    bits(&w),
                    "decay {decay}, scale {scale}, step {step}"
                );
            }
        }
    }
}

//! `act(x Wᵀ + b)` as one node of the graph (`w2sg-linear`), and the three-way residual sum
//! (`w2sg-add3`).
//!
//! The forward pass is one multithreaded GEMM accumulating onto the bias, then the activation in
//! place, in parallel (candle would allocate and pass over the output twice more, the activation
//! single-threaded). When an input is tracked, the activation's derivative is computed alongside it
//! (GELU's erf and exponential are at hand there) and kept for the backward pass, which is then a
//! product and two GEMMs: `dx = g W`, `dW = gᵀ x`, `db` = column sums of g in a fixed order.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::math::{act_grad_slice, act_slice};
use super::{
    column_sums, cpu_f32, f32_slice, fused_ok, gemm, written, zeros, Mat, Threads, CHUNK,
    ROWS_PER_TASK,
};

/// Activation functions by their HF `hidden_act` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact, erf-based GELU (PyTorch's default).
    GeluErf,
    /// `gelu_new`, `gelu_fast`, `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    /// Parses an HF `hidden_act` value.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Activation::GeluErf),
            "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            "silu" | "swish" => Some(Activation::Silu),
            _ => None,
        }
    }

    /// The activation from candle ops (all with backward passes).
    pub fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::GeluErf => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}

/// `x Wᵀ (+ b)` for x (rows × inp), W (out × inp), b (out), all row-major: one GEMM onto the bias.
pub(super) fn linear_fwd(x: &[f32], w: &[f32], b: Option<&[f32]>, out: usize) -> Vec<f32> {
    let inp = w.len() / out.max(1);
    let rows = x.len() / inp.max(1);
    let n = rows * out;
    let mut y = Vec::<f32>::with_capacity(n);
    if let Some(b) = b {
        y.spare_capacity_mut()[..n]
            .par_chunks_mut(out * ROWS_PER_TASK)
            .for_each(|c| {
                c.chunks_mut(out).for_each(|r| {
                    r.iter_mut().zip(b).for_each(|(d, &s)| {
                        d.write(s);
                    })
                })
            });
    }
    // SAFETY: y is rows × out, x rows × inp and W out × inp (read as Wᵀ), all row-major. Every
    // element is written: by the bias rows above (then accumulated onto), or by the GEMM.
    unsafe {
        gemm(
            (rows, out, inp),
            y.as_mut_ptr(),
            out,
            b.is_some(),
            Mat::rm(x.as_ptr(), inp),
            Mat::tr(w.as_ptr(), inp),
            1.0,
            Threads::All,
        );
        y.set_len(n);
    }
    y
}

/// Gradients of [`linear_fwd`] from the output gradient g (rows × out): (dx, dW, db if `bias`).
pub(super) fn linear_bwd(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    out: usize,
    bias: bool,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let inp = w.len() / out.max(1);
    let rows = x.len() / inp.max(1);
    // SAFETY: dx = g W (rows × out · out × inp), dW = gᵀ x (out × rows · rows × inp); all buffers
    // row-major with these sizes, each written in full by its GEMM.
    let (dx, dw) = unsafe {
        (
            written(rows * inp, |dx| {
                gemm(
                    (rows, inp, out),
                    dx,
                    inp,
                    false,
                    Mat::rm(g.as_ptr(), out),
                    Mat::rm(w.as_ptr(), inp),
                    1.0,
                    Threads::All,
                )
            }),
            written(out * inp, |dw| {
                gemm(
                    (out, inp, rows),
                    dw,
                    inp,
                    false,
                    Mat::tr(g.as_ptr(), out),
                    Mat::rm(x.as_ptr(), inp),
                    1.0,
                    Threads::All,
                )
            }),
        )
    };
    (dx, dw, bias.then(|| column_sums(g, out)))
}

/// Applies `act` in place; with `save`, also returns its derivative at the pre-activation.
pub(super) fn apply_act(y: &mut [f32], act: Activation, save: bool) -> Option<Vec<f32>> {
    if !save {
        y.par_chunks_mut(CHUNK).for_each(|c| act_slice(c, act));
        return None;
    }
    let mut d = zeros(y.len());
    y.par_chunks_mut(CHUNK)
        .zip(d.par_chunks_mut(CHUNK))
        .for_each(|(y, d)| act_grad_slice(y, d, act));
    Some(d)
}

/// The gradient through an activation: `g ⊙ act′`, from the derivative kept by the forward pass.
pub(super) fn through_act(g: &[f32], dact: &[f32]) -> Vec<f32> {
    let n = dact.len();
    let mut d = Vec::<f32>::with_capacity(n);
    d.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .zip(dact.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
        .for_each(|(d, (da, g))| {
            for i in 0..d.len() {
                d[i].write(g[i] * da[i]);
            }
        });
    // SAFETY: the chunks cover all n elements, each written above.
    unsafe { d.set_len(n) };
    d
}

/// [`through_act`] with the derivative an op keeps behind a lock, consumed: freed as the backward
/// pass goes down the graph (a second pass over the same graph is an error).
fn through_saved_act(g: &[f32], dact: &Mutex<Option<Vec<f32>>>) -> candle_core::Result<Vec<f32>> {
    let dact = dact.lock().unwrap().take().ok_or_else(|| {
        candle_core::Error::Msg("activation: backward without a tracked forward".into())
    })?;
    Ok(through_act(g, &dact))
}

struct LinearOp {
    act: Option<Activation>,
    /// Keep the activation's derivative for the backward pass (an input is tracked).
    save: bool,
    /// Whether the weight and the bias need gradients (frozen ones, as under LoRA, skip a GEMM).
    grad_w: bool,
    dact: Mutex<Option<Vec<f32>>>,
}

impl LinearOp {
    fn fwd(
        &self,
        x: &[f32],
        lx: &Layout,
        w: &[f32],
        lw: &Layout,
        b: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, inp) = lw.shape().dims2()?;
        let dims = lx.dims();
        if dims.last() != Some(&inp) || b.is_some_and(|b| b.len() != out) {
            candle_core::bail!("linear: shapes {dims:?} · {:?}ᵀ do not match", lw.dims());
        }
        let mut y = linear_fwd(x, w, b, out);
        if let Some(act) = self.act {
            *self.dact.lock().unwrap() = apply_act(&mut y, act, self.save);
        }
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("non-scalar input") = out;
        Ok((CpuStorage::F32(y), Shape::from_dims(&shape)))
    }

    fn bwd_all(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        with_bias: bool,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (out, _) = w.dims2()?;
        if !self.grad_w && !x.track_op() {
            // A frozen layer on an untracked input (the first block under LoRA): nothing to do.
            return Ok((None, None, None));
        }
        let grad = grad.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let xv = cpu_f32(&xs, xl, "linear x")?;
        let wv = cpu_f32(&ws, wl, "linear weight")?;
        let g = cpu_f32(&gs, gl, "linear grad")?;
        let dz;
        let g = if self.act.is_some() {
            dz = through_saved_act(g, &self.dact)?;
            &dz[..]
        } else {
            g
        };
        let dev = x.device();
        if !self.grad_w {
            let inp = wv.len() / out.max(1);
            let mut dx = zeros(xv.len());
            // SAFETY: dx = g W (rows × out · out × inp), row-major buffers of these sizes.
            unsafe {
                gemm(
                    (xv.len() / inp.max(1), inp, out),
                    dx.as_mut_ptr(),
                    inp,
                    false,
                    Mat::rm(g.as_ptr(), out),
                    Mat::rm(wv.as_ptr(), inp),
                    1.0,
                    Threads::All,
                );
            }
            return Ok((Some(Tensor::from_vec(dx, x.shape(), dev)?), None, None));
        }
        let (dx, dw, db) = linear_bwd(xv, wv, g, out, with_bias);
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            db.map(|db| Tensor::from_vec(db, out, dev)).transpose()?,
        ))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "w2sg-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(
            f32_slice(s1, l1, "linear x")?,
            l1,
            f32_slice(s2, l2, "linear weight")?,
            l2,
            Some(f32_slice(s3, l3, "linear bias")?),
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.bwd_all(x, w, grad, true)?;
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "w2sg-linear-no-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(
            f32_slice(s1, l1, "linear x")?,
            l1,
            f32_slice(s2, l2, "linear weight")?,
            l2,
            None,
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.bwd_all(x, w, grad, false)?;
        Ok((dx, dw))
    }
}

/// `act(x Wᵀ + b)` for x (…, in), W (out, in), b (out); the fused op on CPU f32, else
/// [`super::composite::linear`].
pub fn linear(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Option<Activation>,
) -> candle_core::Result<Tensor> {
    let mut all = vec![x, w];
    all.extend(b);
    if !fused_ok(&all) {
        return super::composite::linear(x, w, b, act);
    }
    let op = LinearOp {
        act,
        save: all.iter().any(|t| t.track_op()),
        grad_w: w.track_op() || b.is_some_and(|b| b.track_op()),
        dact: Mutex::new(None),
    };
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}

/// `a + b + c`, summed as `(a + b) + c` (HF's order for mlp + attn + x); one node instead of two.
struct Add3Op;

impl CustomOp3 for Add3Op {
    fn name(&self) -> &'static str {
        "w2sg-add3"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let a = f32_slice(s1, l1, "add3 a")?;
        let b = f32_slice(s2, l2, "add3 b")?;
        let c = f32_slice(s3, l3, "add3 c")?;
        if l1.shape() != l2.shape() || l1.shape() != l3.shape() {
            candle_core::bail!("add3: shape mismatch");
        }
        let mut y = zeros(a.len());
        y.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK).zip(c.par_chunks(CHUNK)))
            .for_each(|((y, a), (b, c))| {
                for i in 0..y.len() {
                    y[i] = (a[i] + b[i]) + c[i];
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _c: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.clone()), Some(grad.clone()), Some(grad.clone())))
    }
}

/// `(a + b) + c` for tensors of one shape.
pub fn add3(a: &Tensor, b: &Tensor, c: &Tensor) -> candle_core::Result<Tensor> {
    if !fused_ok(&[a, b, c]) {
        return (a + b)? + c;
    }
    a.contiguous()?
        .apply_op3(&b.contiguous()?, &c.contiguous()?, Add3Op)
}

/// An activation alone (`w2sg-activation`), for the layers whose pre-activation is not one GEMM
/// (LoRA's `x Wᵀ + b + s·x Aᵀ Bᵀ`, side-by-side projections): the fused elementwise math and its
/// derivative, instead of candle's scalar erf.
struct ActivationOp {
    act: Activation,
    save: bool,
    dact: Mutex<Option<Vec<f32>>>,
}

impl candle_core::CustomOp1 for ActivationOp {
    fn name(&self) -> &'static str {
        "w2sg-activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut y = f32_slice(s, l, "activation")?.to_vec();
        *self.dact.lock().unwrap() = apply_act(&mut y, self.act, self.save);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let g = cpu_f32(&gs, gl, "activation grad")?;
        let dx = through_saved_act(g, &self.dact)?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// `act(x)` elementwise; the fused op on CPU f32, else candle's ops ([`Activation::apply`]).
pub fn activation(x: &Tensor, act: Activation) -> candle_core::Result<Tensor> {
    if !fused_ok(&[x]) {
        return act.apply(x);
    }
    x.contiguous()?.apply_op1(ActivationOp {
        act,
        save: x.track_op(),
        dact: Mutex::new(None),
    })
}

//! A linear layer with a LoRA adapter as one node of the graph (`w2sg-lora-linear`):
//! `act(x Wᵀ + b + s · (x Aᵀ) Bᵀ)`, W (out × in) and b frozen, A (r × in) and B (out × r) trained.
//!
//! Built from candle ops the layer is five nodes (three GEMMs, a scale, an add), each keeping its
//! output for the backward pass (four full-size copies of the output, plus the activation's), and
//! in the backward pass each returns a gradient that candle adds onto a zeroed buffer. Here:
//! - forward: one GEMM onto the bias, `xa = x Aᵀ` (rows × r), then `s · xa Bᵀ` accumulated into the
//!   same output by the GEMM, and the activation in place. Kept for the backward pass: `xa` and the
//!   activation's derivative (the op's inputs x, A, B are candle's to keep).
//! - backward, from the output gradient g (through the activation's derivative): `dB = s · gᵀ xa`
//!   (formed as its transpose), `gxa = s · g B`, `dA = gxaᵀ x`, and `dx = g W + gxa A` (the second GEMM accumulating onto the
//!   first) only when x is tracked. W's gradient is never formed.
//!
//! [`lora_linear_for_gradient`] builds the same node without computing its output (zeros): the
//! backward pass needs x, `xa` and the output gradient, never the output. Block recomputation uses
//! it for the projections whose output only adds into the block's output, which is never read
//! (see `finetune/runner.rs`).
//!
//! W and b are held by the op, not passed as inputs: candle ops take at most three tensors, and
//! frozen ones need no gradient slot. A tracked W or b (a trained base under an adapter) takes the
//! composite path. Every GEMM splits its output, never the inner dimension (deterministic).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::linear::{apply_act, linear_fwd, through_act, Activation};
use super::{cpu_f32, f32_slice, fused_ok, gemm, written, zeros, Mat, Threads};

/// What the forward pass keeps for the backward pass: `x Aᵀ`, and the activation's derivative.
type Saved = (Vec<f32>, Option<Vec<f32>>);

struct LoraLinearOp {
    w: Tensor,
    b: Option<Tensor>,
    scale: f32,
    act: Option<Activation>,
    save: bool,
    /// Whether the output is computed (else zeros: [`lora_linear_for_gradient`]).
    values: bool,
    saved: Mutex<Option<Saved>>,
}

impl CustomOp3 for LoraLinearOp {
    fn name(&self) -> &'static str {
        "w2sg-lora-linear"
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
        let x = f32_slice(s1, l1, "lora-linear x")?;
        let a = f32_slice(s2, l2, "lora-linear A")?;
        let bm = f32_slice(s3, l3, "lora-linear B")?;
        let (out, inp) = self.w.dims2()?;
        let (r, a_in) = l2.shape().dims2()?;
        let (b_out, b_r) = l3.shape().dims2()?;
        let dims = l1.dims();
        if dims.last() != Some(&inp) || a_in != inp || b_out != out || b_r != r {
            candle_core::bail!(
                "lora-linear: shapes x {dims:?}, W {:?}, A {:?}, B {:?} do not match",
                self.w.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let rows = x.len() / inp.max(1);
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("non-scalar input") = out;
        if !self.values {
            if self.save {
                *self.saved.lock().unwrap() = Some((linear_fwd(x, a, None, r), None));
            }
            return Ok((CpuStorage::F32(zeros(rows * out)), Shape::from_dims(&shape)));
        }
        let (ws, wl) = self.w.storage_and_layout();
        let w = cpu_f32(&ws, wl, "lora-linear W")?;
        let bias = self.b.as_ref().map(|b| b.storage_and_layout());
        let bias = match &bias {
            Some((bs, bl)) => Some(cpu_f32(bs, bl, "lora-linear bias")?),
            None => None,
        };
        let mut y = linear_fwd(x, w, bias, out);
        let xa = linear_fwd(x, a, None, r);
        // SAFETY: y is rows × out, xa rows × r and B out × r (read as Bᵀ), all row-major.
        unsafe {
            gemm(
                (rows, out, r),
                y.as_mut_ptr(),
                out,
                true,
                Mat::rm(xa.as_ptr(), r),
                Mat::tr(bm.as_ptr(), r),
                self.scale,
                Threads::All,
            );
        }
        let dact = match self.act {
            Some(act) => apply_act(&mut y, act, self.save),
            None => None,
        };
        if self.save {
            *self.saved.lock().unwrap() = Some((xa, dact));
        }
        Ok((CpuStorage::F32(y), Shape::from_dims(&shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        bm: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (out, inp) = self.w.dims2()?;
        let r = a.dim(0)?;
        let grad = grad.contiguous()?;
        let saved = self.saved.lock().unwrap().take().ok_or_else(|| {
            candle_core::Error::Msg("lora-linear: backward without a tracked forward".into())
        })?;
        let (xa, dact) = saved;
        let (gs, gl) = grad.storage_and_layout();
        let g = cpu_f32(&gs, gl, "lora-linear grad")?;
        let dz;
        let g = match dact {
            Some(d) => {
                dz = through_act(g, &d);
                &dz[..]
            }
            None => g,
        };
        let (xs, xl) = x.storage_and_layout();
        let (as_, al) = a.storage_and_layout();
        let (bs, bl) = bm.storage_and_layout();
        let (ws, wl) = self.w.storage_and_layout();
        let xv = cpu_f32(&xs, xl, "lora-linear x")?;
        let av = cpu_f32(&as_, al, "lora-linear A")?;
        let bv = cpu_f32(&bs, bl, "lora-linear B")?;
        let wv = cpu_f32(&ws, wl, "lora-linear W")?;
        let rows = xv.len() / inp.max(1);
        let mut dbt = vec![0f32; r * out];
        let mut gxa = vec![0f32; rows * r];
        let mut da = vec![0f32; r * inp];
        // SAFETY: every buffer is row-major with the sizes given: g rows × out, xa rows × r,
        // B out × r, x rows × in, A r × in, W out × in.
        unsafe {
            // dBᵀ = s · xaᵀ g (r × out), transposed below: formed as dB (out × r) directly, gemm
            // runs kernels whose vectors span 16 of its r = 8 columns, 2–3× slower (measured).
            gemm(
                (r, out, rows),
                dbt.as_mut_ptr(),
                out,
                false,
                Mat::tr(xa.as_ptr(), r),
                Mat::rm(g.as_ptr(), out),
                self.scale,
                Threads::All,
            );
            // gxa = s · g B (rows × r).
            gemm(
                (rows, r, out),
                gxa.as_mut_ptr(),
                r,
                false,
                Mat::rm(g.as_ptr(), out),
                Mat::rm(bv.as_ptr(), r),
                self.scale,
                Threads::All,
            );
            // dA = gxaᵀ x (r × in).
            gemm(
                (r, inp, rows),
                da.as_mut_ptr(),
                inp,
                false,
                Mat::tr(gxa.as_ptr(), r),
                Mat::rm(xv.as_ptr(), inp),
                1.0,
                Threads::All,
            );
        }
        let dx = if x.track_op() {
            // SAFETY: dx = g W + gxa A, rows × in, from the buffers above; the first GEMM writes
            // every element, the second accumulates onto it.
            let dx = unsafe {
                written(rows * inp, |dx| {
                    gemm(
                        (rows, inp, out),
                        dx,
                        inp,
                        false,
                        Mat::rm(g.as_ptr(), out),
                        Mat::rm(wv.as_ptr(), inp),
                        1.0,
                        Threads::All,
                    );
                    gemm(
                        (rows, inp, r),
                        dx,
                        inp,
                        true,
                        Mat::rm(gxa.as_ptr(), r),
                        Mat::rm(av.as_ptr(), inp),
                        1.0,
                        Threads::All,
                    );
                })
            };
            Some(Tensor::from_vec(dx, x.shape(), x.device())?)
        } else {
            None
        };
        let mut db = vec![0f32; out * r];
        for (j, row) in dbt.chunks(out).enumerate() {
            for (o, &v) in row.iter().enumerate() {
                db[o * r + j] = v;
            }
        }
        let dev = x.device();
        Ok((
            dx,
            Some(Tensor::from_vec(da, a.shape(), dev)?),
            Some(Tensor::from_vec(db, bm.shape(), dev)?),
        ))
    }
}

/// `act(x Wᵀ + b + scale · (x Aᵀ) Bᵀ)` for x (…, in), W (out, in), b (out), A (r, in), B (out, r):
/// the fused op on CPU f32 when W and b are frozen, else [`super::composite::lora_linear`].
pub fn lora_linear(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    a: &Tensor,
    bm: &Tensor,
    scale: f64,
    act: Option<Activation>,
) -> candle_core::Result<Tensor> {
    lora_op(x, w, b, a, bm, scale, act, true)
}

/// The node of [`lora_linear`] without activation, its output **not computed** (zeros): for an
/// output that is only the start of a backward pass, never read (the gradients of x, A and B need
/// x, `x Aᵀ` and the output's gradient, not the output). Off the fused path (other devices, a
/// trained W) the output is computed as by [`lora_linear`].
pub fn lora_linear_for_gradient(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    a: &Tensor,
    bm: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    lora_op(x, w, b, a, bm, scale, None, false)
}

/// The fused node (its output computed when `values`) where it can run, else the composite.
#[allow(clippy::too_many_arguments)]
fn lora_op(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    a: &Tensor,
    bm: &Tensor,
    scale: f64,
    act: Option<Activation>,
    values: bool,
) -> candle_core::Result<Tensor> {
    let mut all = vec![x, w, a, bm];
    all.extend(b);
    let frozen_base = !w.track_op() && b.is_none_or(|b| !b.track_op());
    if !fused_ok(&all) || !frozen_base {
        return super::composite::lora_linear(x, w, b, a, bm, scale, act);
    }
    let op = LoraLinearOp {
        w: w.contiguous()?,
        b: b.map(|b| b.contiguous()).transpose()?,
        scale: scale as f32,
        act,
        save: x.track_op() || a.track_op() || bm.track_op(),
        values,
        saved: Mutex::new(None),
    };
    x.contiguous()?
        .apply_op3(&a.contiguous()?, &bm.contiguous()?, op)
}

//! Fused causal self-attention with a backward pass, from the fused QKV projection to the per-token
//! attention output, for the trainable GPT-NeoX on the CPU.
//!
//! The composite path splits the QKV projection into q, k, v heads, applies partial rotary to q and
//! k and runs two batched matmuls around a softmax: about 35 candle ops per layer, each allocating a
//! tensor on the way forward and a zeroed gradient plus an add on the way back. Here one candle
//! `CustomOp3` does it all per (sequence, head), which also makes the task independent of every
//! other task (no cross-task reductions, so results do not depend on the thread count):
//!
//! - forward: gather q, k, v of the head from the interleaved QKV row (GPT-NeoX layout: per head
//!   `[q | k | v]`, each `head_dim` wide), rotate the first `rotary_ndims` channels of q and k
//!   (`x·cos + rotate_half(x)·sin`, HF's formula), scores `q kᵀ` (GEMM), causal softmax with the
//!   `1/√head_dim` scale, `P v` (GEMM) written straight into the (B, T, H) output that the dense
//!   projection reads. The probabilities are kept in the op (4 MB per layer for the `tiny` preset),
//!   which saves a GEMM and the exponentials in the backward pass.
//! - backward: `dV = Pᵀ g`, `dP = g Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP)) · scale`, `dQ = dS K`,
//!   `dK = dSᵀ Q`, then the transposed rotation, written into the interleaved (B, T, 3H) gradient.
//!
//! [`split_heads_rotary`] is the split + rotary step on its own (also used by the unit tests).
//! CPU and f32 only; the unit tests compare forward and backward with the composite ops of
//! [`super::model`].

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused::{cpu_f32, f32_slice, linear_bwd, linear_fwd};

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    nh: usize,
    hd: usize,
    /// Rotary channels per head (even, ≤ hd).
    rd: usize,
}

impl Dims {
    fn h(&self) -> usize {
        self.nh * self.hd
    }
}

/// Queries per block: a block of queries r0..r1 only needs keys 0..r1, which skips 3/8 of the
/// score and gradient GEMMs at T = 128.
const BLOCK: usize = 32;

/// Raw pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// Through a method, so that closures capture the whole (Send + Sync) wrapper, not its field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Row-major `dst (m × n) = lhs · rhs`, single-threaded (callers parallelise over heads), with
/// explicit strides (`*_rs` between rows, `*_cs` between columns) so that transposed and strided
/// operands need no copy.
///
/// # Safety
/// The pointers and strides must describe valid matrices of the given sizes, dst not overlapping
/// the inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_st(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Copies q (rotated), k (rotated) and v of head `h` of sequence `qkv` (T × 3H) into `q`, `k`, `v`
/// (T × hd each, row-major).
#[allow(clippy::too_many_arguments)]
fn gather_head(
    d: &Dims,
    qkv: &[f32],
    h: usize,
    cos: &[f32],
    sin: &[f32],
    q: &mut [f32],
    k: &mut [f32],
    v: &mut [f32],
) {
    let (hd, rd, row) = (d.hd, d.rd, 3 * d.h());
    let half = rd / 2;
    for t in 0..d.t {
        let src = &qkv[t * row + h * 3 * hd..][..3 * hd];
        let (c, s) = (&cos[t * rd..][..rd], &sin[t * rd..][..rd]);
        for (dst, x) in [(&mut *q, &src[..hd]), (&mut *k, &src[hd..2 * hd])] {
            let dst = &mut dst[t * hd..][..hd];
            // Same operations in the same order as the composite `x·cos + rotate_half(x)·sin`.
            for i in 0..half {
                dst[i] = x[i] * c[i] + (-x[i + half]) * s[i];
                dst[i + half] = x[i + half] * c[i + half] + x[i] * s[i + half];
            }
            dst[rd..].copy_from_slice(&x[rd..]);
        }
        v[t * hd..][..hd].copy_from_slice(&src[2 * hd..]);
    }
}

/// Transposed rotation of one row: the gradient of the input from the gradient `g` of the rotated
/// output, written to `dst`.
#[inline]
fn unrotate_row(g: &[f32], c: &[f32], s: &[f32], rd: usize, dst: &mut [f32]) {
    let half = rd / 2;
    for i in 0..half {
        dst[i] = g[i] * c[i] + g[i + half] * s[i + half];
        dst[i + half] = g[i + half] * c[i + half] - g[i] * s[i];
    }
    dst[rd..].copy_from_slice(&g[rd..]);
}

/// `softmax(scale · row + causal mask)` in place over the first `len` entries; the rest set to 0.
#[inline]
fn causal_softmax_row(row: &mut [f32], len: usize, scale: f32) {
    let (live, masked) = row.split_at_mut(len);
    live.iter_mut().for_each(|v| *v *= scale);
    let (_, sum) = super::fused::exp_shifted_sum_row(live);
    let inv = 1.0 / sum;
    live.iter_mut().for_each(|v| *v *= inv);
    masked.iter_mut().for_each(|v| *v = 0.0);
}

/// Attention output (B, T, H) and probabilities (B, nh, T, T) from qkv (B, T, 3H).
fn attn_fwd(d: &Dims, qkv: &[f32], cos: &[f32], sin: &[f32], scale: f32) -> (Vec<f32>, Vec<f32>) {
    let (t, hd, h) = (d.t, d.hd, d.h());
    let mut out = vec![0f32; d.b * t * h];
    let mut probs = vec![0f32; d.b * d.nh * t * t];
    let out_ptr = SyncPtr(out.as_mut_ptr());
    probs.par_chunks_mut(t * t).enumerate().for_each_init(
        || vec![0f32; 3 * t * hd],
        |buf, (task, p)| {
            let (bi, hi) = (task / d.nh, task % d.nh);
            let (q, rest) = buf.split_at_mut(t * hd);
            let (k, v) = rest.split_at_mut(t * hd);
            gather_head(
                d,
                &qkv[bi * t * 3 * h..][..t * 3 * h],
                hi,
                cos,
                sin,
                q,
                k,
                v,
            );
            // SAFETY: sizes as declared; each task writes only columns hi·hd.. of sequence bi of
            // `out`, which no other task touches.
            unsafe {
                for r0 in (0..t).step_by(BLOCK) {
                    // Queries r0..r1 see keys 0..r1 only.
                    let r1 = (r0 + BLOCK).min(t);
                    let pb = p[r0 * t..].as_mut_ptr();
                    gemm_st(
                        r1 - r0,
                        r1,
                        hd,
                        pb,
                        t,
                        q[r0 * hd..].as_ptr(),
                        hd,
                        1,
                        k.as_ptr(),
                        1,
                        hd,
                    );
                    for i in r0..r1 {
                        causal_softmax_row(&mut p[i * t..(i + 1) * t], i + 1, scale);
                    }
                    let dst = out_ptr.get().add((bi * t + r0) * h + hi * hd);
                    let pb = p[r0 * t..].as_ptr();
                    gemm_st(r1 - r0, hd, r1, dst, h, pb, t, 1, v.as_ptr(), hd, 1);
                }
            }
        },
    );
    (out, probs)
}

/// Gradient of qkv (B, T, 3H) from the output gradient g (B, T, H).
fn attn_bwd(
    d: &Dims,
    qkv: &[f32],
    cos: &[f32],
    sin: &[f32],
    probs: &[f32],
    g: &[f32],
    scale: f32,
) -> Vec<f32> {
    let (t, hd, h, rd) = (d.t, d.hd, d.h(), d.rd);
    let mut dqkv = vec![0f32; d.b * t * 3 * h];
    let dptr = SyncPtr(dqkv.as_mut_ptr());
    probs.par_chunks(t * t).enumerate().for_each_init(
        || vec![0f32; 5 * t * hd + t * t],
        |buf, (task, p)| {
            let (bi, hi) = (task / d.nh, task % d.nh);
            let (q, rest) = buf.split_at_mut(t * hd);
            let (k, rest) = rest.split_at_mut(t * hd);
            let (v, rest) = rest.split_at_mut(t * hd);
            let (dq, rest) = rest.split_at_mut(t * hd);
            let (dk, ds) = rest.split_at_mut(t * hd);
            gather_head(
                d,
                &qkv[bi * t * 3 * h..][..t * 3 * h],
                hi,
                cos,
                sin,
                q,
                k,
                v,
            );
            let g = &g[bi * t * h + hi * hd..];
            // SAFETY: sizes as declared; each task writes only the q, k, v slots of head hi of
            // sequence bi in `dqkv`, which no other task touches.
            unsafe {
                let dseq = dptr.get().add(bi * t * 3 * h + hi * 3 * hd);
                // Query blocks r0..r1 (keys 0..r1): dP = g Vᵀ, dS in place, dQ = dS K.
                for r0 in (0..t).step_by(BLOCK) {
                    let r1 = (r0 + BLOCK).min(t);
                    let (m, gb) = (r1 - r0, g[r0 * h..].as_ptr());
                    gemm_st(
                        m,
                        r1,
                        hd,
                        ds[r0 * t..].as_mut_ptr(),
                        t,
                        gb,
                        h,
                        1,
                        v.as_ptr(),
                        1,
                        hd,
                    );
                    for i in r0..r1 {
                        let (dr, pr) = (&mut ds[i * t..(i + 1) * t], &p[i * t..(i + 1) * t]);
                        let n = i + 1;
                        let dot: f32 = pr[..n].iter().zip(&dr[..n]).map(|(p, g)| p * g).sum();
                        for (dv, &pv) in dr[..n].iter_mut().zip(&pr[..n]) {
                            *dv = scale * pv * (*dv - dot);
                        }
                        dr[n..].iter_mut().for_each(|v| *v = 0.0);
                    }
                    let db = ds[r0 * t..].as_ptr();
                    gemm_st(
                        m,
                        hd,
                        r1,
                        dq[r0 * hd..].as_mut_ptr(),
                        hd,
                        db,
                        t,
                        1,
                        k.as_ptr(),
                        hd,
                        1,
                    );
                }
                // Key blocks s0..s1 (queries s0..T): dV = Pᵀ g into the v slots, dK = dSᵀ Q.
                for s0 in (0..t).step_by(BLOCK) {
                    let (m, n) = ((s0 + BLOCK).min(t) - s0, t - s0);
                    let (pb, gb) = (p[s0 * t + s0..].as_ptr(), g[s0 * h..].as_ptr());
                    let dv = dseq.add(s0 * 3 * h + 2 * hd);
                    gemm_st(m, hd, n, dv, 3 * h, pb, 1, t, gb, h, 1);
                    let (db, qb) = (ds[s0 * t + s0..].as_ptr(), q[s0 * hd..].as_ptr());
                    gemm_st(
                        m,
                        hd,
                        n,
                        dk[s0 * hd..].as_mut_ptr(),
                        hd,
                        db,
                        1,
                        t,
                        qb,
                        hd,
                        1,
                    );
                }
                for ti in 0..t {
                    let (c, s) = (&cos[ti * rd..][..rd], &sin[ti * rd..][..rd]);
                    let row = std::slice::from_raw_parts_mut(dseq.add(ti * 3 * h), 2 * hd);
                    let (rq, rk) = row.split_at_mut(hd);
                    unrotate_row(&dq[ti * hd..][..hd], c, s, rd, rq);
                    unrotate_row(&dk[ti * hd..][..hd], c, s, rd, rk);
                }
            }
        },
    );
    dqkv
}

fn dims_of(
    b: usize,
    t: usize,
    h3: usize,
    nh: usize,
    tc: usize,
    rd: usize,
) -> candle_core::Result<Dims> {
    if nh == 0 || h3 % (3 * nh) != 0 {
        candle_core::bail!("attention: last dimension {h3} is not 3 × {nh} heads × head_dim");
    }
    let hd = h3 / (3 * nh);
    if tc < t || rd > hd || rd % 2 != 0 {
        candle_core::bail!("attention: rotary tables {tc} × {rd} for T = {t}, head_dim {hd}");
    }
    Ok(Dims { b, t, nh, hd, rd })
}

/// Attention from a ready qkv tensor (args: qkv, cos, sin).
struct AttentionOp {
    nh: usize,
    scale: f32,
    /// Attention probabilities (B, nh, T, T) of the forward pass, for the backward pass.
    probs: Mutex<Option<Vec<f32>>>,
}

impl AttentionOp {
    fn dims(&self, qkv: &Layout, cos: &Layout) -> candle_core::Result<Dims> {
        let (b, t, h3) = qkv.shape().dims3()?;
        let (tc, rd) = cos.shape().dims2()?;
        dims_of(b, t, h3, self.nh, tc, rd)
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "w2sg-causal-attention"
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
        let d = self.dims(l1, l2)?;
        let qkv = f32_slice(s1, l1, "attention qkv")?;
        let cos = f32_slice(s2, l2, "attention cos")?;
        let sin = f32_slice(s3, l3, "attention sin")?;
        let (out, probs) = attn_fwd(&d, qkv, cos, sin, self.scale);
        *self.probs.lock().unwrap() = Some(probs);
        Ok((CpuStorage::F32(out), Shape::from_dims(&[d.b, d.t, d.h()])))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.dims(qkv.layout(), cos.layout())?;
        let guard = self.probs.lock().unwrap();
        let probs = guard
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("attention: backward before forward".into()))?;
        let grad = grad.contiguous()?;
        let (qkv_s, qkv_l) = qkv.storage_and_layout();
        let (cos_s, cos_l) = cos.storage_and_layout();
        let (sin_s, sin_l) = sin.storage_and_layout();
        let (g_s, g_l) = grad.storage_and_layout();
        let dqkv = attn_bwd(
            &d,
            cpu_f32(&qkv_s, qkv_l, "attention qkv")?,
            cpu_f32(&cos_s, cos_l, "attention cos")?,
            cpu_f32(&sin_s, sin_l, "attention sin")?,
            probs,
            cpu_f32(&g_s, g_l, "attention grad")?,
            self.scale,
        );
        Ok((
            Some(Tensor::from_vec(dqkv, qkv.shape(), qkv.device())?),
            None,
            None,
        ))
    }
}

/// The QKV projection and the attention in one op (args: x, W_qkv, b_qkv; the rotary tables are
/// constants held by the op): the (B, T, 3H) projection never becomes a tensor, so neither it nor
/// its gradient goes through the gradient store.
struct QkvAttentionOp {
    nh: usize,
    t: usize,
    rd: usize,
    scale: f32,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// (qkv, probabilities) of the forward pass.
    saved: Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

impl QkvAttentionOp {
    fn dims(&self, x: &Layout, w: &Layout) -> candle_core::Result<Dims> {
        let (n, _) = x.shape().dims2()?;
        let (h3, _) = w.shape().dims2()?;
        if n % self.t != 0 {
            candle_core::bail!(
                "qkv_attention: {n} rows are not whole sequences of {}",
                self.t
            );
        }
        dims_of(n / self.t, self.t, h3, self.nh, self.t, self.rd)
    }
}

impl CustomOp3 for QkvAttentionOp {
    fn name(&self) -> &'static str {
        "w2sg-qkv-causal-attention"
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
        let d = self.dims(l1, l2)?;
        let x = f32_slice(s1, l1, "qkv_attention x")?;
        let w = f32_slice(s2, l2, "qkv_attention weight")?;
        let b = f32_slice(s3, l3, "qkv_attention bias")?;
        if l1.dims()[1] != l2.dims()[1] || b.len() != 3 * d.h() {
            candle_core::bail!(
                "qkv_attention: shapes {:?} {:?} {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let qkv = linear_fwd(x, w, Some(b), 3 * d.h());
        let (out, probs) = attn_fwd(&d, &qkv, &self.cos, &self.sin, self.scale);
        *self.saved.lock().unwrap() = Some((qkv, probs));
        Ok((CpuStorage::F32(out), Shape::from_dims(&[d.b * d.t, d.h()])))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.dims(x.layout(), w.layout())?;
        let guard = self.saved.lock().unwrap();
        let (qkv, probs) = guard.as_ref().ok_or_else(|| {
            candle_core::Error::Msg("qkv_attention: backward before forward".into())
        })?;
        let grad = grad.contiguous()?;
        let (x_s, x_l) = x.storage_and_layout();
        let (w_s, w_l) = w.storage_and_layout();
        let (g_s, g_l) = grad.storage_and_layout();
        let g = cpu_f32(&g_s, g_l, "qkv_attention grad")?;
        let dqkv = attn_bwd(&d, qkv, &self.cos, &self.sin, probs, g, self.scale);
        let (dx, dw, db) = linear_bwd(
            cpu_f32(&x_s, x_l, "qkv_attention x")?,
            cpu_f32(&w_s, w_l, "qkv_attention weight")?,
            &dqkv,
            3 * d.h(),
            true,
        );
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            db.map(|db| Tensor::from_vec(db, b.shape(), dev))
                .transpose()?,
        ))
    }
}

/// Causal self-attention from the fused QKV projection `qkv` (B, T, 3H; per head `[q | k | v]`)
/// with rotary on the first `cos.dim(1)` channels of each head (`cos`, `sin`: (≥ T, rotary_ndims),
/// HF's duplicated-halves tables), `num_heads` heads, scores scaled by 1/√head_dim. Returns
/// (B, T, H), heads side by side in each row, as the dense projection reads it. f32 CPU tensors.
pub fn causal_attention(
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    num_heads: usize,
) -> candle_core::Result<Tensor> {
    let (_, _, h3) = qkv.dims3()?;
    let hd = h3 / (3 * num_heads).max(1);
    let op = AttentionOp {
        nh: num_heads,
        scale: 1.0 / (hd as f32).sqrt(),
        probs: Mutex::new(None),
    };
    qkv.contiguous()?
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, op)
}

/// [`causal_attention`] of the projection `x W_qkvᵀ + b_qkv` for x (B·T, H) holding whole
/// sequences of `t` tokens: returns (B·T, H). The projection is computed inside the op.
pub fn qkv_causal_attention(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    num_heads: usize,
    t: usize,
) -> candle_core::Result<Tensor> {
    let (h3, _) = w.dims2()?;
    let hd = h3 / (3 * num_heads).max(1);
    let (cos, sin) = (cos.narrow(0, 0, t)?, sin.narrow(0, 0, t)?);
    let op = QkvAttentionOp {
        nh: num_heads,
        t,
        rd: cos.dim(1)?,
        scale: 1.0 / (hd as f32).sqrt(),
        cos: super::fused::to_f32_vec(&cos)?,
        sin: super::fused::to_f32_vec(&sin)?,
        saved: Mutex::new(None),
    };
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, op)
}

/// The split + rotary step alone (forward only): q (rotated), k (rotated) and v, each
/// (B, heads, T, head_dim) contiguous, from `qkv` (B, T, 3H) as in [`causal_attention`].
pub fn split_heads_rotary(
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    num_heads: usize,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let (b, t, h3) = qkv.dims3()?;
    let hd = h3 / (3 * num_heads);
    let d = Dims {
        b,
        t,
        nh: num_heads,
        hd,
        rd: cos.dim(1)?,
    };
    let qkv_v = super::fused::to_f32_vec(qkv)?;
    let (cos_v, sin_v) = (
        super::fused::to_f32_vec(cos)?,
        super::fused::to_f32_vec(sin)?,
    );
    let n = b * num_heads * t * hd;
    let (mut q, mut k, mut v) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    let per = t * hd;
    q.par_chunks_mut(per)
        .zip(k.par_chunks_mut(per))
        .zip(v.par_chunks_mut(per))
        .enumerate()
        .for_each(|(task, ((q, k), v))| {
            let (bi, hi) = (task / num_heads, task % num_heads);
            gather_head(
                &d,
                &qkv_v[bi * t * h3..][..t * h3],
                hi,
                &cos_v,
                &sin_v,
                q,
                k,
                v,
            );
        });
    let shape = (b, num_heads, t, hd);
    let dev = qkv.device();
    Ok((
        Tensor::from_vec(q, shape, dev)?,
        Tensor::from_vec(k, shape, dev)?,
        Tensor::from_vec(v, shape, dev)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretrain::test_util::randn;
    use candle_core::{Device, Var, D};

    /// max |a − b| / max(max |b|, 1e-6): relative to the scale of the reference.
    fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let m = |t: &Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        m(&(a - b).unwrap()) / m(b).max(1e-6)
    }

    /// Tables for `rd` rotary channels, `t` positions, built like the model's.
    fn tables(t: usize, rd: usize) -> (Tensor, Tensor) {
        let inv: Vec<f32> = (0..rd / 2)
            .map(|i| 1.0 / 10000f32.powf((2 * i) as f32 / rd as f32))
            .collect();
        let (mut c, mut s) = (vec![], vec![]);
        for p in 0..t {
            for _ in 0..2 {
                for f in &inv {
                    c.push((p as f32 * f).cos());
                    s.push((p as f32 * f).sin());
                }
            }
        }
        (
            Tensor::from_vec(c, (t, rd), &Device::Cpu).unwrap(),
            Tensor::from_vec(s, (t, rd), &Device::Cpu).unwrap(),
        )
    }

    /// The composite path of the model: split, rotary, scores, masked softmax, values.
    fn composite_split(
        qkv: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        nh: usize,
    ) -> (Tensor, Tensor, Tensor) {
        let (b, t, h3) = qkv.dims3().unwrap();
        let hd = h3 / (3 * nh);
        let rd = cos.dim(1).unwrap();
        let qkv = qkv.reshape((b, t, nh, 3 * hd)).unwrap();
        let head = |i: usize| {
            qkv.narrow(3, i * hd, hd)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let rot = |x: &Tensor| crate::pretrain::model::rotary(x, cos, sin, rd).unwrap();
        (rot(&head(0)), rot(&head(1)), head(2))
    }

    fn composite_attention(qkv: &Tensor, cos: &Tensor, sin: &Tensor, nh: usize) -> Tensor {
        let (b, t, h3) = qkv.dims3().unwrap();
        let hd = h3 / (3 * nh);
        let (q, k, v) = composite_split(qkv, cos, sin, nh);
        let mask: Vec<f32> = (0..t * t)
            .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (hd as f64).sqrt())
            .unwrap()
            .broadcast_add(&mask)
            .unwrap();
        let p = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        p.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b, t, h3 / 3))
            .unwrap()
    }

    /// (output, d qkv) for the objective Σ out · probe.
    fn fwd_bwd(qkv: &Tensor, probe: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
        let var = Var::from_tensor(qkv).unwrap();
        let out = f(var.as_tensor());
        let grads = (&out * probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (out, grads.get(var.as_tensor()).unwrap().clone())
    }

    fn check(b: usize, t: usize, nh: usize, hd: usize, rd: usize, seed: u64) {
        let qkv = randn(&[b, t, 3 * nh * hd], seed).affine(1.5, 0.1).unwrap();
        let probe = randn(&[b, t, nh * hd], seed + 1);
        // Tables longer than T, as the model's are (max_position_embeddings rows).
        let (cos, sin) = tables(t + 5, rd);
        let (cos_t, sin_t) = (cos.narrow(0, 0, t).unwrap(), sin.narrow(0, 0, t).unwrap());

        let (q1, k1, v1) = split_heads_rotary(&qkv, &cos, &sin, nh).unwrap();
        let (q2, k2, v2) = composite_split(&qkv, &cos_t, &sin_t, nh);
        for (a, r) in [(&q1, &q2), (&k1, &k2), (&v1, &v2)] {
            assert_eq!(a.dims(), r.dims());
            assert!(rel_diff(a, r) < 1e-6, "split {}", rel_diff(a, r));
        }

        let (y1, g1) = fwd_bwd(&qkv, &probe, |x| {
            causal_attention(x, &cos, &sin, nh).unwrap()
        });
        let (y2, g2) = fwd_bwd(&qkv, &probe, |x| composite_attention(x, &cos_t, &sin_t, nh));
        assert_eq!(y1.dims(), y2.dims());
        assert!(rel_diff(&y1, &y2) < 1e-5, "forward {}", rel_diff(&y1, &y2));
        assert!(rel_diff(&g1, &g2) < 1e-5, "backward {}", rel_diff(&g1, &g2));
    }

    #[test]
    fn qkv_attention_matches_linear_then_composite_attention() {
        let (b, t, nh, hd, rd) = (2, 6, 2, 8, 2);
        let h = nh * hd;
        let x = randn(&[b * t, h], 30);
        let w = (randn(&[3 * h, h], 31) * 0.3).unwrap();
        let bias = randn(&[3 * h], 32);
        let probe = randn(&[b * t, h], 33);
        let (cos, sin) = tables(t + 3, rd);
        let (cos_t, sin_t) = (cos.narrow(0, 0, t).unwrap(), sin.narrow(0, 0, t).unwrap());
        let run = |fused: bool| {
            let vars: Vec<Var> = [&x, &w, &bias]
                .iter()
                .map(|t| Var::from_tensor(t).unwrap())
                .collect();
            let (xv, wv, bv) = (
                vars[0].as_tensor(),
                vars[1].as_tensor(),
                vars[2].as_tensor(),
            );
            let out = if fused {
                qkv_causal_attention(xv, wv, bv, &cos, &sin, nh, t).unwrap()
            } else {
                let qkv = xv
                    .matmul(&wv.t().unwrap())
                    .unwrap()
                    .broadcast_add(bv)
                    .unwrap()
                    .reshape((b, t, 3 * h))
                    .unwrap();
                composite_attention(&qkv, &cos_t, &sin_t, nh)
                    .reshape((b * t, h))
                    .unwrap()
            };
            let grads = (&out * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gs: Vec<Tensor> = vars
                .iter()
                .map(|v| grads.get(v.as_tensor()).unwrap().clone())
                .collect();
            (out, gs)
        };
        let ((y1, g1), (y2, g2)) = (run(true), run(false));
        assert!(rel_diff(&y1, &y2) < 1e-5, "forward {}", rel_diff(&y1, &y2));
        for (a, r) in g1.iter().zip(&g2) {
            assert_eq!(a.dims(), r.dims());
            assert!(rel_diff(a, r) < 1e-5, "backward {}", rel_diff(a, r));
        }
    }

    #[test]
    fn attention_matches_composite_with_partial_rotary() {
        // rotary_pct 0.25 as in the presets.
        check(2, 9, 3, 8, 2, 11);
        check(3, 16, 2, 16, 4, 12);
        // Several query blocks, the last one partial.
        check(2, 2 * BLOCK + 7, 2, 8, 2, 16);
    }

    #[test]
    fn attention_matches_composite_with_full_rotary() {
        check(2, 7, 2, 8, 8, 13);
    }

    #[test]
    fn attention_gradient_reaches_every_qkv_slot() {
        // A wrong interleaving that dropped a slot would leave zeros there.
        let (b, t, nh, hd) = (1, 5, 2, 4);
        let qkv = randn(&[b, t, 3 * nh * hd], 14);
        let (cos, sin) = tables(t, 2);
        let probe = randn(&[b, t, nh * hd], 15);
        let (_, g) = fwd_bwd(&qkv, &probe, |x| {
            causal_attention(x, &cos, &sin, nh).unwrap()
        });
        let g = g.reshape((b * t, nh, 3, hd)).unwrap();
        for slot in 0..3 {
            let s = g
                .narrow(2, slot, 1)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap();
            assert!(
                s.to_scalar::<f32>().unwrap() > 0.0,
                "slot {slot} has no gradient"
            );
        }
    }
}

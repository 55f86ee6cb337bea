//! Causal self-attention from a packed QKV projection, with rotary embeddings, in one op
//! (`w2sg-causal-attention`), and the same with the QKV projection inside the op
//! (`w2sg-qkv-causal-attention`).
//!
//! The composite path splits the projection into heads, rotates q and k, and runs two batched
//! matmuls around a softmax: about 35 candle ops per layer, each allocating a tensor on the way
//! forward and a zeroed gradient plus an add on the way back, and (B, H, T, T) scores materialised
//! several times (0.5 GB per copy for 16 sequences of 1000 tokens and 8 heads). Here one task per
//! (sequence, query head) does it all, which also makes each task independent of every other (no
//! cross-task reductions, so results do not depend on the thread count):
//!
//! - forward: gather q, k, v of the head from the packed row ([`QkvLayout`]), rotate the first
//!   `rd` channels of q and k (`x·cos + rotate_half(x)·sin`, HF's formula, tables with duplicated
//!   halves), then per block of 32 queries: scores `q kᵀ` against only the keys the block may see
//!   (GEMM), causal softmax in f32 with the `1/√head_dim` scale, `P v` (GEMM) written straight into
//!   the (B, T, H·head_dim) output that the output projection reads. Grouped-query attention maps
//!   query head h to key/value head h / (H / H_kv).
//! - When an input is tracked (training), the probabilities are kept in the op (B·H·T² floats), which
//!   saves a GEMM and the exponentials in the backward pass; otherwise a block's scores live in a
//!   per-task scratch of 32 × T floats.
//! - backward, one task per (sequence, key/value head), looping over the query heads of its group:
//!   `dV += Pᵀ g`, `dP = g Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP)) · scale`, `dQ = dS K`,
//!   `dK += dSᵀ Q`, then the transposed rotation, written into the packed gradient.
//!
//! Batches are padded on the right, so a real token never sees a padding token and no padding mask
//! is needed; outputs at padded positions are garbage by construction and must never be read.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::linear::{linear_bwd, linear_fwd};
use super::math::exp_shifted_sum;
use super::rope::{inv_freq, RopeScaling};
use super::{cpu_f32, f32_slice, gemm, zeros, Mat, SyncPtr, Threads};

/// Queries per block: a block of queries r0..r1 only needs keys 0..r1, which skips 3/8 of the
/// score and gradient GEMMs at T = 128.
const BLOCK: usize = 32;

/// Where q, k and v sit in the last dimension of the packed projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkvLayout {
    /// GPT-NeoX: per head `[q | k | v]`, each `head_dim` wide (key/value heads = query heads).
    PerHead,
    /// `[Q | K | V]`: all query heads, then all key heads, then all value heads (OLMo, Llama).
    Blocks,
}

/// The shape of an attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionSpec {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub layout: QkvLayout,
}

impl AttentionSpec {
    /// Width of the packed projection: (H + 2·H_kv)·head_dim.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }
}

/// Rotary tables for `rd` channels per head, positions 0..max_pos, f32, with duplicated halves
/// (HF's `cat(freqs, freqs)`): angle(p, i) = p · inv_freq[i mod rd/2].
#[derive(Debug, Clone)]
pub struct RotaryTables {
    rd: usize,
    max_pos: usize,
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
}

impl RotaryTables {
    /// HF's default rotary: inv_freq = 1 / θ^(2i/rd) in f32.
    pub fn new(rd: usize, theta: f64, max_pos: usize) -> candle_core::Result<Self> {
        Self::scaled(rd, theta, RopeScaling::None, max_pos)
    }

    /// Rotary with scaled frequencies ([`super::rope::inv_freq`]).
    pub fn scaled(
        rd: usize,
        theta: f64,
        scaling: RopeScaling,
        max_pos: usize,
    ) -> candle_core::Result<Self> {
        Self::from_inv_freq(&inv_freq(rd, theta, scaling), max_pos)
    }

    /// Tables from given inverse frequencies (rd = 2 · len).
    pub fn from_inv_freq(inv: &[f32], max_pos: usize) -> candle_core::Result<Self> {
        let rd = 2 * inv.len();
        if rd == 0 {
            candle_core::bail!("rotary dimension must be positive");
        }
        let mut cos = Vec::with_capacity(max_pos * rd);
        let mut sin = Vec::with_capacity(max_pos * rd);
        for p in 0..max_pos {
            for _half in 0..2 {
                for f in inv {
                    let a = p as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        Ok(RotaryTables {
            rd,
            max_pos,
            cos: Arc::new(cos),
            sin: Arc::new(sin),
        })
    }

    /// Rotated channels per head.
    pub fn dim(&self) -> usize {
        self.rd
    }

    /// (t, rd) cos and sin tensors for the composite path.
    pub fn tensors(&self, t: usize, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let n = t * self.rd;
        Ok((
            Tensor::from_slice(&self.cos[..n], (t, self.rd), device)?,
            Tensor::from_slice(&self.sin[..n], (t, self.rd), device)?,
        ))
    }
}

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    rd: usize,
    layout: QkvLayout,
}

impl Dims {
    fn new(
        spec: &AttentionSpec,
        b: usize,
        t: usize,
        width: usize,
        rot: &RotaryTables,
    ) -> candle_core::Result<Self> {
        let AttentionSpec {
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
            layout,
        } = *spec;
        if nh == 0 || nkv == 0 || nh % nkv != 0 || (layout == QkvLayout::PerHead && nh != nkv) {
            candle_core::bail!(
                "attention: {nh} query heads and {nkv} key/value heads do not fit {layout:?}"
            );
        }
        if width != spec.qkv_width() {
            candle_core::bail!(
                "attention: packed width {width} is not (H + 2·H_kv)·head_dim = {}",
                spec.qkv_width()
            );
        }
        if t > rot.max_pos || rot.rd > hd || rot.rd % 2 != 0 {
            candle_core::bail!(
                "attention: rotary tables {} × {} for T = {t}, head_dim {hd}",
                rot.max_pos,
                rot.rd
            );
        }
        Ok(Dims {
            b,
            t,
            nh,
            nkv,
            hd,
            rd: rot.rd,
            layout,
        })
    }
    /// Packed row width.
    fn w(&self) -> usize {
        (self.nh + 2 * self.nkv) * self.hd
    }
    /// Output row width.
    fn out(&self) -> usize {
        self.nh * self.hd
    }
    fn group(&self) -> usize {
        self.nh / self.nkv
    }
    fn q_off(&self, h: usize) -> usize {
        match self.layout {
            QkvLayout::PerHead => 3 * h * self.hd,
            QkvLayout::Blocks => h * self.hd,
        }
    }
    fn k_off(&self, g: usize) -> usize {
        match self.layout {
            QkvLayout::PerHead => 3 * g * self.hd + self.hd,
            QkvLayout::Blocks => (self.nh + g) * self.hd,
        }
    }
    fn v_off(&self, g: usize) -> usize {
        match self.layout {
            QkvLayout::PerHead => 3 * g * self.hd + 2 * self.hd,
            QkvLayout::Blocks => (self.nh + self.nkv + g) * self.hd,
        }
    }
}

/// Copies the channels at `off` of every token of `seq` (T × W) into `dst` (T × hd), rotating the
/// first rd channels when `rotate`.
fn gather(
    d: &Dims,
    seq: &[f32],
    off: usize,
    rotate: bool,
    cos: &[f32],
    sin: &[f32],
    dst: &mut [f32],
) {
    let (hd, rd, w) = (d.hd, d.rd, d.w());
    let half = rd / 2;
    for t in 0..d.t {
        let x = &seq[t * w + off..][..hd];
        let dst = &mut dst[t * hd..][..hd];
        if !rotate {
            dst.copy_from_slice(x);
            continue;
        }
        let (c, s) = (&cos[t * rd..][..rd], &sin[t * rd..][..rd]);
        // Same operations in the same order as the composite `x·cos + rotate_half(x)·sin`.
        for i in 0..half {
            dst[i] = x[i] * c[i] + (-x[i + half]) * s[i];
            dst[i + half] = x[i + half] * c[i + half] + x[i] * s[i + half];
        }
        dst[rd..].copy_from_slice(&x[rd..]);
    }
}

/// Writes `src` (T × hd) into the channels at `off` of every token of the packed gradient, applying
/// the transposed rotation when `rotate`.
///
/// # Safety
/// `seq` must point at a T × W row-major buffer whose channels at `off..off + hd` no other task
/// writes.
unsafe fn scatter(
    d: &Dims,
    src: &[f32],
    seq: *mut f32,
    off: usize,
    rotate: bool,
    cos: &[f32],
    sin: &[f32],
) {
    let (hd, rd, w) = (d.hd, d.rd, d.w());
    let half = rd / 2;
    for t in 0..d.t {
        let g = &src[t * hd..][..hd];
        let dst = std::slice::from_raw_parts_mut(seq.add(t * w + off), hd);
        if !rotate {
            dst.copy_from_slice(g);
            continue;
        }
        let (c, s) = (&cos[t * rd..][..rd], &sin[t * rd..][..rd]);
        for i in 0..half {
            dst[i] = g[i] * c[i] + g[i + half] * s[i + half];
            dst[i + half] = g[i + half] * c[i + half] - g[i] * s[i];
        }
        dst[rd..].copy_from_slice(&g[rd..]);
    }
}

/// `softmax(scale · row)` in place over the first `len` entries; the rest set to 0.
#[inline]
fn causal_softmax_row(row: &mut [f32], len: usize, scale: f32) {
    let (live, masked) = row.split_at_mut(len);
    live.iter_mut().for_each(|v| *v *= scale);
    let (_, sum) = exp_shifted_sum(live);
    let inv = 1.0 / sum;
    live.iter_mut().for_each(|v| *v *= inv);
    masked.iter_mut().for_each(|v| *v = 0.0);
}

/// Attention output (B, T, H·hd) from packed qkv (B, T, W), and the probabilities (B, H, T, T) when
/// `save`.
fn attn_fwd(
    d: &Dims,
    qkv: &[f32],
    cos: &[f32],
    sin: &[f32],
    scale: f32,
    save: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (t, hd, w, ow) = (d.t, d.hd, d.w(), d.out());
    let mut out = zeros(d.b * t * ow);
    let mut probs = if save {
        zeros(d.b * d.nh * t * t)
    } else {
        Vec::new()
    };
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let probs_ptr = SyncPtr(probs.as_mut_ptr());
    (0..d.b * d.nh).into_par_iter().for_each_init(
        || vec![0f32; 3 * t * hd + if save { 0 } else { BLOCK * t }],
        |buf, task| {
            let (bi, hi) = (task / d.nh, task % d.nh);
            let g = hi / d.group();
            let (q, rest) = buf.split_at_mut(t * hd);
            let (k, rest) = rest.split_at_mut(t * hd);
            let (v, scratch) = rest.split_at_mut(t * hd);
            let seq = &qkv[bi * t * w..][..t * w];
            gather(d, seq, d.q_off(hi), true, cos, sin, q);
            gather(d, seq, d.k_off(g), true, cos, sin, k);
            gather(d, seq, d.v_off(g), false, cos, sin, v);
            // SAFETY: sizes as declared; each task writes only columns hi·hd.. of sequence bi of
            // `out` and its own (T × T) slice of `probs`, which no other task touches.
            unsafe {
                for r0 in (0..t).step_by(BLOCK) {
                    // Queries r0..r1 see keys 0..r1 only.
                    let r1 = (r0 + BLOCK).min(t);
                    let (p, stride): (&mut [f32], usize) = if save {
                        let base = probs_ptr.get().add(task * t * t + r0 * t);
                        (std::slice::from_raw_parts_mut(base, (r1 - r0) * t), t)
                    } else {
                        (&mut scratch[..(r1 - r0) * r1], r1)
                    };
                    gemm(
                        (r1 - r0, r1, hd),
                        p.as_mut_ptr(),
                        stride,
                        false,
                        Mat::rm(q[r0 * hd..].as_ptr(), hd),
                        Mat::tr(k.as_ptr(), hd),
                        1.0,
                        Threads::One,
                    );
                    for i in r0..r1 {
                        let row = &mut p[(i - r0) * stride..][..stride];
                        causal_softmax_row(&mut row[..r1], i + 1, scale);
                    }
                    let dst = out_ptr.get().add((bi * t + r0) * ow + hi * hd);
                    gemm(
                        (r1 - r0, hd, r1),
                        dst,
                        ow,
                        false,
                        Mat::rm(p.as_ptr(), stride),
                        Mat::rm(v.as_ptr(), hd),
                        1.0,
                        Threads::One,
                    );
                }
            }
        },
    );
    (out, save.then_some(probs))
}

/// Gradient of packed qkv (B, T, W) from the output gradient g (B, T, H·hd).
fn attn_bwd(
    d: &Dims,
    qkv: &[f32],
    cos: &[f32],
    sin: &[f32],
    probs: &[f32],
    g: &[f32],
    scale: f32,
) -> Vec<f32> {
    let (t, hd, w, ow) = (d.t, d.hd, d.w(), d.out());
    let mut dqkv = zeros(d.b * t * w);
    let dptr = SyncPtr(dqkv.as_mut_ptr());
    (0..d.b * d.nkv).into_par_iter().for_each_init(
        || vec![0f32; 6 * t * hd + t * t],
        |buf, task| {
            let (bi, gi) = (task / d.nkv, task % d.nkv);
            let (q, rest) = buf.split_at_mut(t * hd);
            let (k, rest) = rest.split_at_mut(t * hd);
            let (v, rest) = rest.split_at_mut(t * hd);
            let (dq, rest) = rest.split_at_mut(t * hd);
            let (dk, rest) = rest.split_at_mut(t * hd);
            let (dv, ds) = rest.split_at_mut(t * hd);
            let seq = &qkv[bi * t * w..][..t * w];
            gather(d, seq, d.k_off(gi), true, cos, sin, k);
            gather(d, seq, d.v_off(gi), false, cos, sin, v);
            // SAFETY: sizes as declared; each task writes only the q slots of its group's query
            // heads and the k, v slots of its key/value head of sequence bi in `dqkv`.
            unsafe {
                let dseq = dptr.get().add(bi * t * w);
                for (n_in_group, hi) in (gi * d.group()..(gi + 1) * d.group()).enumerate() {
                    let acc = n_in_group > 0;
                    gather(d, seq, d.q_off(hi), true, cos, sin, q);
                    let p = &probs[(bi * d.nh + hi) * t * t..][..t * t];
                    let g = &g[bi * t * ow + hi * hd..];
                    // Query blocks r0..r1 (keys 0..r1): dP = g Vᵀ, dS in place, dQ = dS K.
                    for r0 in (0..t).step_by(BLOCK) {
                        let r1 = (r0 + BLOCK).min(t);
                        let m = r1 - r0;
                        gemm(
                            (m, r1, hd),
                            ds[r0 * t..].as_mut_ptr(),
                            t,
                            false,
                            Mat::rm(g[r0 * ow..].as_ptr(), ow),
                            Mat::tr(v.as_ptr(), hd),
                            1.0,
                            Threads::One,
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
                        gemm(
                            (m, hd, r1),
                            dq[r0 * hd..].as_mut_ptr(),
                            hd,
                            false,
                            Mat::rm(ds[r0 * t..].as_ptr(), t),
                            Mat::rm(k.as_ptr(), hd),
                            1.0,
                            Threads::One,
                        );
                    }
                    // Key blocks s0..s1 (queries s0..T): dV += Pᵀ g, dK += dSᵀ Q.
                    for s0 in (0..t).step_by(BLOCK) {
                        let (m, n) = ((s0 + BLOCK).min(t) - s0, t - s0);
                        gemm(
                            (m, hd, n),
                            dv[s0 * hd..].as_mut_ptr(),
                            hd,
                            acc,
                            Mat::tr(p[s0 * t + s0..].as_ptr(), t),
                            Mat::rm(g[s0 * ow..].as_ptr(), ow),
                            1.0,
                            Threads::One,
                        );
                        gemm(
                            (m, hd, n),
                            dk[s0 * hd..].as_mut_ptr(),
                            hd,
                            acc,
                            Mat::tr(ds[s0 * t + s0..].as_ptr(), t),
                            Mat::rm(q[s0 * hd..].as_ptr(), hd),
                            1.0,
                            Threads::One,
                        );
                    }
                    scatter(d, dq, dseq, d.q_off(hi), true, cos, sin);
                }
                scatter(d, dk, dseq, d.k_off(gi), true, cos, sin);
                scatter(d, dv, dseq, d.v_off(gi), false, cos, sin);
            }
        },
    );
    dqkv
}

/// Attention from a ready packed qkv (B, T, W).
struct AttentionOp {
    spec: AttentionSpec,
    rot: RotaryTables,
    save: bool,
    probs: Mutex<Option<Vec<f32>>>,
}

impl AttentionOp {
    fn dims(&self, l: &Layout) -> candle_core::Result<Dims> {
        let (b, t, w) = l.shape().dims3()?;
        Dims::new(&self.spec, b, t, w, &self.rot)
    }
    fn scale(&self) -> f32 {
        1.0 / (self.spec.head_dim as f32).sqrt()
    }
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "w2sg-causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims(l)?;
        let qkv = f32_slice(s, l, "attention qkv")?;
        let n = d.t * d.rd;
        let (out, probs) = attn_fwd(
            &d,
            qkv,
            &self.rot.cos[..n],
            &self.rot.sin[..n],
            self.scale(),
            self.save,
        );
        *self.probs.lock().unwrap() = probs;
        Ok((CpuStorage::F32(out), Shape::from_dims(&[d.b, d.t, d.out()])))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let d = self.dims(qkv.layout())?;
        // Consumed: freed as the backward pass goes down the graph (a second pass is an error).
        let probs = self.probs.lock().unwrap().take().ok_or_else(|| {
            candle_core::Error::Msg("attention: backward without a tracked forward".into())
        })?;
        let grad = grad.contiguous()?;
        let (qs, ql) = qkv.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let n = d.t * d.rd;
        let dqkv = attn_bwd(
            &d,
            cpu_f32(&qs, ql, "attention qkv")?,
            &self.rot.cos[..n],
            &self.rot.sin[..n],
            &probs,
            cpu_f32(&gs, gl, "attention grad")?,
            self.scale(),
        );
        Ok(Some(Tensor::from_vec(dqkv, qkv.shape(), qkv.device())?))
    }
}

/// Causal self-attention from the packed projection `qkv` (B, T, (H + 2·H_kv)·head_dim) laid out as
/// `spec.layout` says, rotary on the first `rot.dim()` channels of each q and k head, scores scaled by
/// 1/√head_dim. Returns (B, T, H·head_dim), heads side by side. The fused op on the CPU (other
/// float dtypes run it in f32 and cast back), else [`super::composite::attention`].
pub fn attention(
    qkv: &Tensor,
    spec: &AttentionSpec,
    rot: &RotaryTables,
) -> candle_core::Result<Tensor> {
    if super::composite_forced() || !qkv.device().is_cpu() {
        return super::composite::attention(qkv, spec, rot);
    }
    let dtype = qkv.dtype();
    let op = AttentionOp {
        spec: *spec,
        rot: rot.clone(),
        save: qkv.track_op(),
        probs: Mutex::new(None),
    };
    qkv.to_dtype(DType::F32)?
        .contiguous()?
        .apply_op1(op)?
        .to_dtype(dtype)
}

/// The QKV projection and the attention in one op (args: x, W_qkv, b_qkv): the (B, T, W) projection
/// never becomes a tensor, so neither it nor its gradient goes through the gradient store.
struct QkvAttentionOp {
    spec: AttentionSpec,
    rot: RotaryTables,
    t: usize,
    save: bool,
    /// (qkv, probabilities) of the forward pass.
    saved: Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

impl QkvAttentionOp {
    fn dims(&self, x: &Layout) -> candle_core::Result<Dims> {
        let (n, _) = x.shape().dims2()?;
        if self.t == 0 || n % self.t != 0 {
            candle_core::bail!(
                "qkv_attention: {n} rows are not whole sequences of {}",
                self.t
            );
        }
        Dims::new(
            &self.spec,
            n / self.t,
            self.t,
            self.spec.qkv_width(),
            &self.rot,
        )
    }
    fn scale(&self) -> f32 {
        1.0 / (self.spec.head_dim as f32).sqrt()
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
        let d = self.dims(l1)?;
        let x = f32_slice(s1, l1, "qkv_attention x")?;
        let w = f32_slice(s2, l2, "qkv_attention weight")?;
        let b = f32_slice(s3, l3, "qkv_attention bias")?;
        if l1.dims()[1] != l2.dims()[1] || l2.dims()[0] != d.w() || b.len() != d.w() {
            candle_core::bail!(
                "qkv_attention: shapes {:?} {:?} {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let qkv = linear_fwd(x, w, Some(b), d.w());
        let n = d.t * d.rd;
        let (out, probs) = attn_fwd(
            &d,
            &qkv,
            &self.rot.cos[..n],
            &self.rot.sin[..n],
            self.scale(),
            self.save,
        );
        *self.saved.lock().unwrap() = probs.map(|p| (qkv, p));
        Ok((
            CpuStorage::F32(out),
            Shape::from_dims(&[d.b * d.t, d.out()]),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.dims(x.layout())?;
        // Consumed: freed as the backward pass goes down the graph (a second pass is an error).
        let (qkv, probs) = self.saved.lock().unwrap().take().ok_or_else(|| {
            candle_core::Error::Msg("qkv_attention: backward without a tracked forward".into())
        })?;
        let grad = grad.contiguous()?;
        let (x_s, x_l) = x.storage_and_layout();
        let (w_s, w_l) = w.storage_and_layout();
        let (g_s, g_l) = grad.storage_and_layout();
        let n = d.t * d.rd;
        let g = cpu_f32(&g_s, g_l, "qkv_attention grad")?;
        let dqkv = attn_bwd(
            &d,
            &qkv,
            &self.rot.cos[..n],
            &self.rot.sin[..n],
            &probs,
            g,
            self.scale(),
        );
        let (dx, dw, db) = linear_bwd(
            cpu_f32(&x_s, x_l, "qkv_attention x")?,
            cpu_f32(&w_s, w_l, "qkv_attention weight")?,
            &dqkv,
            d.w(),
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

/// [`attention`] of the projection `x W_qkvᵀ + b_qkv` for x (B, T, H) or (B·T, H) holding whole
/// sequences of `t` tokens: returns (B·T, H·head_dim). The projection is computed inside the op (a
/// missing bias is zero). CPU f32 only; callers use [`super::linear`] + [`attention`] elsewhere.
pub fn qkv_attention(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    t: usize,
    spec: &AttentionSpec,
    rot: &RotaryTables,
) -> candle_core::Result<Tensor> {
    let hidden = x.dim(candle_core::D::Minus1)?;
    let x = x.reshape(((), hidden))?;
    let zeros;
    let b = match b {
        Some(b) => b,
        None => {
            zeros = Tensor::zeros(spec.qkv_width(), DType::F32, x.device())?;
            &zeros
        }
    };
    if !super::fused_ok(&[&x, w, b]) {
        let (n, _) = x.dims2()?;
        let qkv =
            super::linear(&x, w, Some(b), None)?.reshape((n / t.max(1), t, spec.qkv_width()))?;
        return attention(&qkv, spec, rot)?.reshape((n, spec.heads * spec.head_dim));
    }
    let op = QkvAttentionOp {
        spec: *spec,
        rot: rot.clone(),
        t,
        save: x.track_op() || w.track_op() || b.track_op(),
        saved: Mutex::new(None),
    };
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, op)
}

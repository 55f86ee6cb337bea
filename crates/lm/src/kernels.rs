//! Fused CPU kernels for inference where candle's op-by-op path is slow or memory-hungry.
//!
//! **Causal attention.** The op-by-op path materialises (B, H, T, T) scores several times (scores,
//! masked, softmax), which for a batch of 16 sequences of 1000 tokens and 8 heads is 0.5 GB per copy,
//! plus page faults on every fresh allocation. The kernel here works per (batch, head, block of 64
//! queries): one GEMM for the block's scores against the keys it may see (causal: only keys up to the
//! block's last query), a row softmax in f32 over the allowed keys, one GEMM with the values. Scratch
//! memory is 64 × T floats per thread, work is about half of the full T × T (causality), and blocks of
//! all heads run in parallel on rayon. Grouped-query attention maps query head h to key/value head
//! h / (H / H_kv) without copying.
//!
//! **Linear layers** run as one GEMM accumulating onto the bias, with the activation applied in place
//! afterwards in parallel (candle would allocate and pass over the output twice more, the activation
//! single-threaded). **SwiGLU** is one parallel pass. The elementwise functions (exp, erf-GELU, SiLU)
//! are polynomial approximations accurate to ~2e-7 relative, compiled for AVX2 when the CPU has it.
//!
//! These are forward-only (no gradients), f32 only; callers convert other dtypes.

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

/// Query rows per task: large enough for an efficient GEMM, small enough that the scores of one
/// block (64 × T floats) stay in cache.
const BLOCK: usize = 64;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// softmax(q kᵀ · scale + causal mask) v for q (B, H, T, D), k and v (B, H_kv, T, D); out (B, H, T, D).
pub(crate) struct CausalAttention {
    pub scale: f32,
}

/// `gemm` with the arguments we use: row-major dst (rows × cols), no accumulation, single-threaded.
///
/// # Safety
/// The pointers and strides must describe valid, non-overlapping matrices of the given sizes.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_rm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
    scale: f32,
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
        lhs_cs,
        lhs_rs,
        rhs,
        rhs_cs,
        rhs_rs,
        0.0,
        scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

impl CustomOp3 for CausalAttention {
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
        let (Some((a1, e1)), Some((a2, e2)), Some((a3, e3))) = (
            l1.contiguous_offsets(),
            l2.contiguous_offsets(),
            l3.contiguous_offsets(),
        ) else {
            candle_core::bail!("causal attention: q, k and v must be contiguous");
        };
        let (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) = (s1, s2, s3) else {
            candle_core::bail!("causal attention: q, k and v must be f32");
        };
        let (q, k, v) = (&q[a1..e1], &k[a2..e2], &v[a3..e3]);
        let [b, h, t, d] = *l1.dims() else {
            candle_core::bail!("causal attention: q must be 4-d")
        };
        let [bk, h_kv, tk, dk] = *l2.dims() else {
            candle_core::bail!("causal attention: k must be 4-d")
        };
        if (bk, tk, dk) != (b, t, d) || l3.dims() != l2.dims() || h_kv == 0 || h % h_kv != 0 {
            candle_core::bail!(
                "causal attention: shapes q {:?}, k {:?}, v {:?} do not match",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let group = h / h_kv;
        let scale = self.scale;
        let mut out = vec![0f32; b * h * t * d];
        out.par_chunks_mut(t * d)
            .enumerate()
            .for_each(|(bh, o_head)| {
                let (bi, hi) = (bh / h, bh % h);
                let kv = (bi * h_kv + hi / group) * t * d;
                let (qh, kh, vh) = (
                    &q[bh * t * d..(bh + 1) * t * d],
                    &k[kv..kv + t * d],
                    &v[kv..kv + t * d],
                );
                o_head
                    .par_chunks_mut(BLOCK * d)
                    .enumerate()
                    .for_each(|(blk, o)| {
                        let i0 = blk * BLOCK;
                        let rows = o.len() / d;
                        let keys = i0 + rows; // causal: this block sees keys 0..keys
                        SCRATCH.with(|s| {
                            let mut s = s.borrow_mut();
                            s.clear();
                            s.resize(rows * keys, 0.0);
                            // S = scale · Q[i0..i0+rows] Kᵀ[.., 0..keys]: K row-major is Kᵀ column-major.
                            unsafe {
                                gemm_rm(
                                    rows,
                                    keys,
                                    d,
                                    s.as_mut_ptr(),
                                    keys,
                                    qh[i0 * d..].as_ptr(),
                                    1,
                                    d as isize,
                                    kh.as_ptr(),
                                    d as isize,
                                    1,
                                    scale,
                                );
                            }
                            for r in 0..rows {
                                let row = &mut s[r * keys..(r + 1) * keys];
                                let (allowed, masked) = row.split_at_mut(i0 + r + 1);
                                softmax_row(allowed);
                                masked.fill(0.0);
                            }
                            // O = P V[0..keys].
                            unsafe {
                                gemm_rm(
                                    rows,
                                    d,
                                    keys,
                                    o.as_mut_ptr(),
                                    d,
                                    s.as_ptr(),
                                    1,
                                    keys as isize,
                                    vh.as_ptr(),
                                    1,
                                    d as isize,
                                    1.0,
                                );
                            }
                        });
                    });
            });
        Ok((CpuStorage::F32(out), Shape::from_dims(&[b, h, t, d])))
    }
}

// ---------------------------------------------------------------------------------------------------
// Elementwise math, written so that LLVM vectorizes it: the same code is compiled once for the
// baseline target and once with AVX2+FMA enabled (chosen at run time). No FMA contraction is written
// explicitly, so both builds compute the same IEEE operations and give bit-identical results.

/// e^x for x ≤ 88.7 (Cephes `expf` polynomial, relative error ~2e-7); underflows to ~1e-38, not 0.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest with the 1.5·2²³ trick (no SSE4.1 `round` needed).
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.7);
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// erf(x) (Abramowitz & Stegun 7.1.26, absolute error ≤ 1.5e-7; the formula of PyTorch's vectorized
/// `erf`).
#[inline(always)]
fn erf_approx(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_7) * t - 0.284_496_72) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp_approx(-a * a);
    if x < 0.0 {
        -y
    } else {
        y
    }
}

#[inline(always)]
fn act_scalar(x: f32, act: crate::layers::Activation) -> f32 {
    use crate::layers::Activation;
    match act {
        Activation::GeluErf => 0.5 * x * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2)),
        Activation::GeluTanh => {
            let u = 0.797_884_6 * (x + 0.044_715 * x * x * x);
            // tanh(u) = 1 − 2 / (e^{2u} + 1), stable at both ends.
            0.5 * x * (2.0 - 2.0 / (exp_approx(2.0 * u) + 1.0))
        }
        Activation::Relu => x.max(0.0),
        Activation::Silu => x / (1.0 + exp_approx(-x)),
    }
}

#[inline(always)]
fn act_slice_generic(xs: &mut [f32], act: crate::layers::Activation) {
    use crate::layers::Activation;
    // One loop per activation so that each vectorizes on its own.
    match act {
        Activation::GeluErf => xs
            .iter_mut()
            .for_each(|x| *x = act_scalar(*x, Activation::GeluErf)),
        Activation::GeluTanh => xs
            .iter_mut()
            .for_each(|x| *x = act_scalar(*x, Activation::GeluTanh)),
        Activation::Relu => xs
            .iter_mut()
            .for_each(|x| *x = act_scalar(*x, Activation::Relu)),
        Activation::Silu => xs
            .iter_mut()
            .for_each(|x| *x = act_scalar(*x, Activation::Silu)),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn act_slice_avx2(xs: &mut [f32], act: crate::layers::Activation) {
    act_slice_generic(xs, act)
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Applies an activation in place.
pub(crate) fn act_slice(xs: &mut [f32], act: crate::layers::Activation) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { act_slice_avx2(xs, act) };
    }
    act_slice_generic(xs, act)
}

/// silu(gate) · up for one row [up | gate] of width 2·inter, into `dst` (width inter).
#[inline(always)]
fn swiglu_row_generic(src: &[f32], dst: &mut [f32]) {
    let (up, gate) = src.split_at(dst.len());
    for ((d, &u), &g) in dst.iter_mut().zip(up).zip(gate) {
        *d = g / (1.0 + exp_approx(-g)) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_row_avx2(src: &[f32], dst: &mut [f32]) {
    swiglu_row_generic(src, dst)
}

fn swiglu_row(src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { swiglu_row_avx2(src, dst) };
    }
    swiglu_row_generic(src, dst)
}

/// In-place softmax of a row (exponentials from [`exp_approx`]).
#[inline(always)]
fn softmax_row_generic(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|x| *x = exp_approx(*x - max));
    let sum: f32 = row.iter().sum();
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(row: &mut [f32]) {
    softmax_row_generic(row)
}

pub(crate) fn softmax_row(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { softmax_row_avx2(row) };
    }
    softmax_row_generic(row)
}

/// Elements per parallel task of elementwise kernels.
const CHUNK: usize = 1 << 14;

/// `act(x Wᵀ + b)` for x (rows, k), W (n, k), b (n): one multithreaded GEMM accumulating onto the
/// bias, then the activation in place, in parallel.
pub(crate) struct LinearOp {
    pub act: Option<crate::layers::Activation>,
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
        let (Some((a1, e1)), Some((a2, e2)), Some((a3, e3))) = (
            l1.contiguous_offsets(),
            l2.contiguous_offsets(),
            l3.contiguous_offsets(),
        ) else {
            candle_core::bail!("linear: inputs must be contiguous");
        };
        let (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) = (s1, s2, s3) else {
            candle_core::bail!("linear: inputs must be f32");
        };
        let (x, w, b) = (&x[a1..e1], &w[a2..e2], &b[a3..e3]);
        let [rows, k] = *l1.dims() else {
            candle_core::bail!("linear: input must be 2-d")
        };
        let [n, kw] = *l2.dims() else {
            candle_core::bail!("linear: weight must be 2-d")
        };
        if kw != k || b.len() != n {
            candle_core::bail!(
                "linear: shapes {:?} · {:?}ᵀ + {:?} do not match",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let mut out = vec![0f32; rows * n];
        out.par_chunks_mut(n * 64)
            .for_each(|c| c.chunks_mut(n).for_each(|r| r.copy_from_slice(b)));
        let threads = rayon::current_num_threads();
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: out is rows×n row-major, x rows×k row-major, Wᵀ is W (n×k row-major) read
        // column-major; all sizes were checked above.
        unsafe {
            gemm::gemm(
                rows,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                true,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
        if let Some(act) = self.act {
            out.par_chunks_mut(CHUNK).for_each(|c| act_slice(c, act));
        }
        Ok((CpuStorage::F32(out), Shape::from_dims(&[rows, n])))
    }
}

/// silu(gate) · up from (rows, 2·inter) laid out [up | gate] per row.
pub(crate) struct SwiGlu;

impl candle_core::CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "w2sg-swiglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((a, e)) = l.contiguous_offsets() else {
            candle_core::bail!("swiglu: input must be contiguous")
        };
        let CpuStorage::F32(x) = s else {
            candle_core::bail!("swiglu: input must be f32")
        };
        let x = &x[a..e];
        let dims = l.dims();
        let width = *dims.last().unwrap_or(&0);
        if width % 2 != 0 {
            candle_core::bail!("swiglu: last dimension {width} is odd");
        }
        let inter = width / 2;
        let mut out = vec![0f32; x.len() / 2];
        out.par_chunks_mut(inter * 64)
            .zip(x.par_chunks(width * 64))
            .for_each(|(o, s)| {
                o.chunks_mut(inter)
                    .zip(s.chunks(width))
                    .for_each(|(o, s)| swiglu_row(s, o));
            });
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("non-empty shape") = inter;
        Ok((CpuStorage::F32(out), Shape::from_dims(&shape)))
    }
}

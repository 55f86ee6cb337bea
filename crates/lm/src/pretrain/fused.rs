//! Fused CPU kernels with a backward pass for the trainable GPT-NeoX: LayerNorm (weight and bias),
//! causal softmax over the last dimension (with the score scale folded in), bias + GELU (erf), mean
//! cross-entropy, linear layers (`x Wᵀ + b` as one GEMM onto the bias, optionally with GELU), the
//! output head fused with the cross-entropy, and the three-way residual sum.
//! The attention block has its own module, [`super::attention`]. The model's fused path uses
//! `layer_norm`, `linear`, `linear_gelu`, `add3` and `head_cross_entropy`; `causal_softmax`,
//! `bias_gelu` and `cross_entropy` remain as standalone ops.
//!
//! The composite versions in [`super::model`] build each of these from 5–10 small candle ops, each of
//! which allocates a full tensor on the way forward and more on the way back; these do one pass over
//! the data each way. They are candle `CustomOp`s with `bwd` implemented, so autograd flows through
//! them (unlike candle's own fused `layer_norm` / `softmax_last_dim`, which have no backward). CPU and
//! f32 only: [`super::model::TrainableGptNeoX`] uses them on the CPU and the composite ops elsewhere.
//! The unit tests below compare forward and backward with the composite versions.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Rows handled per rayon task (keeps task overhead small against short rows).
const ROWS_PER_TASK: usize = 64;

pub(super) fn f32_slice<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{what}: f32 input expected"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: contiguous input expected"),
    }
}

/// The f32 data of a contiguous CPU tensor, borrowed from behind its storage read guard (no copy).
pub(super) fn cpu_f32<'a>(
    s: &'a candle_core::Storage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    match s {
        candle_core::Storage::Cpu(c) => f32_slice(c, l, what),
        _ => candle_core::bail!("{what}: CPU tensor expected"),
    }
}

pub(super) fn to_f32_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

// ---------------------------------------------------------------------------------------------
// Element-wise math
// ---------------------------------------------------------------------------------------------
//
// exp and erf as polynomials (the inference kernels' `exp_approx`, relative error ~2e-7; A&S 7.1.26
// for erf, absolute error ≤ 1.5e-7, PyTorch's vectorized formula) written so that LLVM vectorizes
// them; compiled once for the baseline and once with AVX2 + FMA, chosen at run time. No FMA is
// written explicitly, so both builds give the same bits. libm's scalar `expf`/`erff` were 15–20 %
// of a training step (cross-entropy over the vocabulary, GELU).

use crate::kernels::exp_approx;

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

/// Defines `fn $name` whose body is compiled twice, for AVX2 + FMA and for the baseline, and picks
/// the first when the CPU has them.
macro_rules! dispatch_avx2 {
    ($(#[$m:meta])* $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty $body:block) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn generic($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) -> $ret {
                generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                // SAFETY: the CPU supports AVX2 and FMA (checked).
                return unsafe { avx2($($arg),*) };
            }
            generic($($arg),*)
        }
    };
}

/// GELU (erf) and its derivative at z, sharing one exponential (e^{−z²/2} is both erf's and the
/// Gaussian density's).
#[inline(always)]
fn gelu_and_grad(z: f32) -> (f32, f32) {
    let x = z * std::f32::consts::FRAC_1_SQRT_2;
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_7) * t - 0.284_496_72) * t
        + 0.254_829_6)
        * t;
    let e = exp_approx(-a * a);
    let erf_a = 1.0 - poly * e;
    let cdf = if x < 0.0 { 1.0 - erf_a } else { 1.0 + erf_a };
    (cdf * 0.5 * z, 0.5 * cdf + z * INV_SQRT_2PI * e)
}

dispatch_avx2!(gelu_fwd_slice(y: &mut [f32], d: &mut [f32]) -> () {
    for (y, d) in y.iter_mut().zip(d.iter_mut()) {
        (*y, *d) = gelu_and_grad(*y);
    }
});

dispatch_avx2!(
/// Maximum, then `row ← exp(row − max)` and its sum (in 8 fixed lanes, so it vectorizes and stays
/// the same for every thread count). Returns (max, sum).
exp_shifted_sum(row: &mut [f32]) -> (f32, f32) {
    let mut m8 = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            m8[i] = m8[i].max(c[i]);
        }
    }
    let max = tail.iter().fold(m8.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)), |m, &v| m.max(v));
    row.iter_mut().for_each(|x| *x = exp_approx(*x - max));
    let mut s8 = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            s8[i] += c[i];
        }
    }
    let sum = ((s8[0] + s8[4]) + (s8[1] + s8[5])) + ((s8[2] + s8[6]) + (s8[3] + s8[7]));
    (max, tail.iter().fold(sum, |s, &v| s + v))
});

/// [`exp_shifted_sum`] for the attention kernels.
pub(super) fn exp_shifted_sum_row(row: &mut [f32]) -> (f32, f32) {
    exp_shifted_sum(row)
}

// ---------------------------------------------------------------------------------------------
// LayerNorm
// ---------------------------------------------------------------------------------------------

struct LayerNormOp {
    eps: f32,
}

/// (mean, 1/sqrt(var + eps)) of one row, two-pass like the composite version.
#[inline]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "w2sg-layer-norm"
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
        let x = f32_slice(s1, l1, "layer_norm x")?;
        let w = f32_slice(s2, l2, "layer_norm weight")?;
        let b = f32_slice(s3, l3, "layer_norm bias")?;
        let h = w.len();
        if b.len() != h || l1.dims().last() != Some(&h) {
            candle_core::bail!("layer_norm: shape mismatch");
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(h * ROWS_PER_TASK)
            .zip(x.par_chunks(h * ROWS_PER_TASK))
            .for_each(|(ys, xs)| {
                for (yr, xr) in ys.chunks_mut(h).zip(xs.chunks(h)) {
                    let (mean, rstd) = row_stats(xr, self.eps);
                    for i in 0..h {
                        yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = w.elem_count();
        let grad = grad.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let xv = cpu_f32(&xs, xl, "layer_norm x")?;
        let wv = cpu_f32(&ws, wl, "layer_norm weight")?;
        let gv = cpu_f32(&gs, gl, "layer_norm grad")?;
        let eps = self.eps;
        let mut dx = vec![0f32; xv.len()];
        // Per task: dx rows, and partial sums of dw and db.
        let (dw, db) = dx
            .par_chunks_mut(h * ROWS_PER_TASK)
            .zip(xv.par_chunks(h * ROWS_PER_TASK))
            .zip(gv.par_chunks(h * ROWS_PER_TASK))
            .map(|((dxs, xs), gs)| {
                let mut dw = vec![0f32; h];
                let mut db = vec![0f32; h];
                let mut xhat = vec![0f32; h];
                for ((dxr, xr), gr) in dxs.chunks_mut(h).zip(xs.chunks(h)).zip(gs.chunks(h)) {
                    let (mean, rstd) = row_stats(xr, eps);
                    let mut s_gy = 0f32;
                    let mut s_gyx = 0f32;
                    for i in 0..h {
                        xhat[i] = (xr[i] - mean) * rstd;
                        let gy = gr[i] * wv[i];
                        s_gy += gy;
                        s_gyx += gy * xhat[i];
                        dw[i] += gr[i] * xhat[i];
                        db[i] += gr[i];
                    }
                    let (m_gy, m_gyx) = (s_gy / h as f32, s_gyx / h as f32);
                    for i in 0..h {
                        dxr[i] = rstd * (gr[i] * wv[i] - m_gy - xhat[i] * m_gyx);
                    }
                }
                (dw, db)
            })
            .collect::<Vec<_>>()
            .into_iter()
            // Fixed-order reduction: bit-identical results on every run (resumed runs rely on it).
            .fold((vec![0f32; h], vec![0f32; h]), |(mut a, mut b), (c, d)| {
                a.iter_mut().zip(&c).for_each(|(a, c)| *a += c);
                b.iter_mut().zip(&d).for_each(|(b, d)| *b += d);
                (a, b)
            });
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            Some(Tensor::from_vec(db, w.shape(), dev)?),
        ))
    }
}

/// LayerNorm over the last dimension of an f32 CPU tensor, with weight and bias.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        LayerNormOp { eps: eps as f32 },
    )
}

// ---------------------------------------------------------------------------------------------
// Causal softmax
// ---------------------------------------------------------------------------------------------

struct CausalSoftmaxOp {
    scale: f32,
}

/// Gradient of [`CausalSoftmaxOp`] from (probabilities, upstream gradient); forward only.
struct CausalSoftmaxBwdOp {
    scale: f32,
}

impl CustomOp1 for CausalSoftmaxOp {
    fn name(&self) -> &'static str {
        "w2sg-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "causal_softmax")?;
        let dims = l.dims();
        let n = dims.len();
        if n < 2 || dims[n - 1] != dims[n - 2] {
            candle_core::bail!("causal_softmax: (…, T, T) scores expected, got {dims:?}");
        }
        let t = dims[n - 1];
        let scale = self.scale;
        let mut y = vec![0f32; x.len()];
        // One task per (…) matrix of T rows.
        y.par_chunks_mut(t * t)
            .zip(x.par_chunks(t * t))
            .for_each(|(ys, xs)| {
                for (i, (yr, xr)) in ys.chunks_mut(t).zip(xs.chunks(t)).enumerate() {
                    let xr = &xr[..=i];
                    let max = xr.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * scale;
                    let mut sum = 0f32;
                    for (yv, &xv) in yr.iter_mut().zip(xr) {
                        let e = (xv * scale - max).exp();
                        *yv = e;
                        sum += e;
                    }
                    let inv = 1.0 / sum;
                    yr[..=i].iter_mut().for_each(|v| *v *= inv);
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = grad.contiguous()?;
        Ok(Some(res.apply_op2_no_bwd(
            &g,
            &CausalSoftmaxBwdOp { scale: self.scale },
        )?))
    }
}

impl CustomOp2 for CausalSoftmaxBwdOp {
    fn name(&self) -> &'static str {
        "w2sg-causal-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = f32_slice(s1, l1, "causal_softmax bwd p")?;
        let g = f32_slice(s2, l2, "causal_softmax bwd grad")?;
        let t = *l1.dims().last().unwrap_or(&1);
        let scale = self.scale;
        let mut dx = vec![0f32; p.len()];
        dx.par_chunks_mut(t * t)
            .zip(p.par_chunks(t * t))
            .zip(g.par_chunks(t * t))
            .for_each(|((ds, ps), gs)| {
                for (i, ((dr, pr), gr)) in ds
                    .chunks_mut(t)
                    .zip(ps.chunks(t))
                    .zip(gs.chunks(t))
                    .enumerate()
                {
                    let (pr, gr) = (&pr[..=i], &gr[..=i]);
                    let dot: f32 = pr.iter().zip(gr).map(|(p, g)| p * g).sum();
                    for ((d, &p), &g) in dr.iter_mut().zip(pr).zip(gr) {
                        *d = scale * p * (g - dot);
                    }
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// `softmax(scale · x + causal mask)` over the last dimension of f32 CPU scores (…, T, T): entries
/// above the diagonal get probability exactly 0.
pub fn causal_softmax(x: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(CausalSoftmaxOp {
        scale: scale as f32,
    })
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy
// ---------------------------------------------------------------------------------------------

struct CrossEntropyOp;

fn targets_of(s: &CpuStorage, l: &Layout) -> candle_core::Result<Vec<usize>> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("cross_entropy: contiguous targets".into()))?;
    Ok(match s {
        CpuStorage::U32(v) => v[a..b].iter().map(|&t| t as usize).collect(),
        CpuStorage::I64(v) => v[a..b].iter().map(|&t| t as usize).collect(),
        CpuStorage::U8(v) => v[a..b].iter().map(|&t| t as usize).collect(),
        _ => candle_core::bail!("cross_entropy: integer targets expected"),
    })
}

/// log Σ exp over one row.
#[inline]
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
    max + sum.ln()
}

impl CustomOp2 for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "w2sg-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "cross_entropy logits")?;
        let (n, v) = l1.shape().dims2()?;
        let targets = targets_of(s2, l2)?;
        if targets.len() != n || targets.iter().any(|&t| t >= v) {
            candle_core::bail!("cross_entropy: bad targets");
        }
        let per_row: Vec<f32> = x
            .par_chunks(v)
            .zip(targets.par_iter())
            .map(|(row, &t)| log_sum_exp(row) - row[t])
            .collect();
        // Summed in a fixed order so that the loss is bit-identical on every run.
        let total: f32 = per_row.iter().sum();
        Ok((CpuStorage::F32(vec![total / n as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, v) = logits.dims2()?;
        let g = grad.to_dtype(DType::F32)?.to_scalar::<f32>()? / n as f32;
        let (xs, xl) = logits.storage_and_layout();
        let x = cpu_f32(&xs, xl, "cross_entropy logits")?;
        let t: Vec<u32> = targets.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(v)
            .zip(x.par_chunks(v))
            .zip(t.par_iter())
            .for_each(|((dr, xr), &t)| {
                let lse = log_sum_exp(xr);
                for (d, &xv) in dr.iter_mut().zip(xr) {
                    *d = g * (xv - lse).exp();
                }
                dr[t as usize] -= g;
            });
        Ok((Some(Tensor::from_vec(dx, (n, v), logits.device())?), None))
    }
}

/// Mean cross-entropy of f32 CPU logits (N, V) against integer targets (N).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, CrossEntropyOp)
}

// ---------------------------------------------------------------------------------------------
// Bias + GELU (erf)
// ---------------------------------------------------------------------------------------------

struct BiasGeluOp;

#[inline]
fn gelu_erf(z: f32) -> f32 {
    // Exactly candle's `gelu_erf` on f32.
    (candle_core::cpu::erf::erf_f32(z * std::f32::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * z
}

const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline]
fn gelu_erf_grad(z: f32) -> f32 {
    0.5 * (1.0 + candle_core::cpu::erf::erf_f32(z * std::f32::consts::FRAC_1_SQRT_2))
        + z * INV_SQRT_2PI * (-0.5 * z * z).exp()
}

impl CustomOp2 for BiasGeluOp {
    fn name(&self) -> &'static str {
        "w2sg-bias-gelu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "bias_gelu x")?;
        let b = f32_slice(s2, l2, "bias_gelu bias")?;
        let m = b.len();
        if l1.dims().last() != Some(&m) {
            candle_core::bail!("bias_gelu: shape mismatch");
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(m * 16)
            .zip(x.par_chunks(m * 16))
            .for_each(|(ys, xs)| {
                for (yr, xr) in ys.chunks_mut(m).zip(xs.chunks(m)) {
                    for ((y, &x), &b) in yr.iter_mut().zip(xr).zip(b) {
                        *y = gelu_erf(x + b);
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let m = b.elem_count();
        let grad = grad.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (bs, bl) = b.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let xv = cpu_f32(&xs, xl, "bias_gelu x")?;
        let bv = cpu_f32(&bs, bl, "bias_gelu bias")?;
        let gv = cpu_f32(&gs, gl, "bias_gelu grad")?;
        let mut dx = vec![0f32; xv.len()];
        let db = dx
            .par_chunks_mut(m * 16)
            .zip(xv.par_chunks(m * 16))
            .zip(gv.par_chunks(m * 16))
            .map(|((ds, xs), gs)| {
                let mut db = vec![0f32; m];
                for ((dr, xr), gr) in ds.chunks_mut(m).zip(xs.chunks(m)).zip(gs.chunks(m)) {
                    for i in 0..m {
                        let d = gr[i] * gelu_erf_grad(xr[i] + bv[i]);
                        dr[i] = d;
                        db[i] += d;
                    }
                }
                db
            })
            .collect::<Vec<_>>()
            .into_iter()
            // Fixed-order reduction (see the LayerNorm backward).
            .fold(vec![0f32; m], |mut a, c| {
                a.iter_mut().zip(&c).for_each(|(a, c)| *a += c);
                a
            });
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(db, b.shape(), dev)?),
        ))
    }
}

/// `gelu_erf(x + b)` for f32 CPU x (…, M) and bias b (M), in one pass each way.
pub fn bias_gelu(x: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(&b.contiguous()?, BiasGeluOp)
}

// ---------------------------------------------------------------------------------------------
// Linear
// ---------------------------------------------------------------------------------------------

fn gemm_par() -> gemm::Parallelism {
    // gemm splits the output, never the inner dimension, so the sums are the same for every thread
    // count.
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// Row-major `dst (m × n) (+)= lhs · rhs` with explicit strides (rows `*_rs`, columns `*_cs`).
///
/// # Safety
/// The pointers and strides must describe valid matrices of the given sizes, dst not overlapping
/// the inputs.
unsafe fn gemm_rm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    accumulate: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        n as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        if accumulate { 1.0 } else { 0.0 },
        1.0,
        false,
        false,
        false,
        gemm_par(),
    )
}

/// `x Wᵀ (+ b)` for x (rows × inp), W (out × inp), b (out), all row-major: one GEMM onto the bias.
pub(super) fn linear_fwd(x: &[f32], w: &[f32], b: Option<&[f32]>, out: usize) -> Vec<f32> {
    let inp = w.len() / out.max(1);
    let rows = x.len() / inp.max(1);
    let mut y = vec![0f32; rows * out];
    if let Some(b) = b {
        y.par_chunks_mut(out * ROWS_PER_TASK)
            .for_each(|c| c.chunks_mut(out).for_each(|r| r.copy_from_slice(b)));
    }
    // SAFETY: y is rows × out, x rows × inp and W out × inp (read as Wᵀ), all row-major.
    unsafe {
        gemm_rm(
            (rows, out, inp),
            y.as_mut_ptr(),
            b.is_some(),
            x.as_ptr(),
            (inp, 1),
            w.as_ptr(),
            (1, inp),
        );
    }
    y
}

/// Column sums of g (rows × n), in fixed blocks of rows summed in order (deterministic).
fn column_sums(g: &[f32], n: usize) -> Vec<f32> {
    g.par_chunks(n * ROWS_PER_TASK)
        .map(|gs| {
            let mut s = vec![0f32; n];
            for r in gs.chunks(n) {
                s.iter_mut().zip(r).for_each(|(a, g)| *a += g);
            }
            s
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(vec![0f32; n], |mut a, c| {
            a.iter_mut().zip(&c).for_each(|(a, c)| *a += c);
            a
        })
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
    let mut dx = vec![0f32; rows * inp];
    let mut dw = vec![0f32; out * inp];
    // SAFETY: dx = g W (rows × out · out × inp), dW = gᵀ x (out × rows · rows × inp); all buffers
    // row-major with these sizes.
    unsafe {
        gemm_rm(
            (rows, inp, out),
            dx.as_mut_ptr(),
            false,
            g.as_ptr(),
            (out, 1),
            w.as_ptr(),
            (inp, 1),
        );
        gemm_rm(
            (out, inp, rows),
            dw.as_mut_ptr(),
            false,
            g.as_ptr(),
            (1, out),
            x.as_ptr(),
            (inp, 1),
        );
    }
    (dx, dw, bias.then(|| column_sums(g, out)))
}

/// `x Wᵀ (+ b)`, optionally followed by GELU (erf): one node in the graph instead of four or five
/// (transpose, matmul, broadcast, add, GELU), so the backward pass allocates one gradient per input
/// instead of a zeroed tensor plus a sum at every intermediate.
struct LinearOp {
    gelu: bool,
    /// GELU′ at the pre-activations of the forward pass when `gelu`: computed there, where the
    /// erf is at hand anyway, so the backward pass is a product.
    dgelu: std::sync::Mutex<Option<Vec<f32>>>,
}

impl LinearOp {
    fn new(gelu: bool) -> Self {
        LinearOp {
            gelu,
            dgelu: std::sync::Mutex::new(None),
        }
    }

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
        if self.gelu {
            let mut d = vec![0f32; y.len()];
            y.par_chunks_mut(16 * 1024)
                .zip(d.par_chunks_mut(16 * 1024))
                .for_each(|(y, d)| gelu_fwd_slice(y, d));
            *self.dgelu.lock().unwrap() = Some(d);
        }
        let mut shape = dims.to_vec();
        *shape.last_mut().unwrap() = out;
        Ok((CpuStorage::F32(y), Shape::from_dims(&shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        with_bias: bool,
    ) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
        let (out, _) = w.dims2()?;
        let grad = grad.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let xv = cpu_f32(&xs, xl, "linear x")?;
        let wv = cpu_f32(&ws, wl, "linear weight")?;
        let g = cpu_f32(&gs, gl, "linear grad")?;
        let dz;
        let g = if self.gelu {
            let dgelu = self.dgelu.lock().unwrap();
            let dgelu = dgelu
                .as_ref()
                .ok_or_else(|| candle_core::Error::Msg("linear: backward before forward".into()))?;
            let mut d = vec![0f32; dgelu.len()];
            d.par_chunks_mut(16 * 1024)
                .zip(dgelu.par_chunks(16 * 1024).zip(g.par_chunks(16 * 1024)))
                .for_each(|(d, (dg, g))| {
                    for i in 0..d.len() {
                        d[i] = g[i] * dg[i];
                    }
                });
            dz = d;
            &dz[..]
        } else {
            g
        };
        let (dx, dw, db) = linear_bwd(xv, wv, g, out, with_bias);
        let dev = x.device();
        Ok((
            Tensor::from_vec(dx, x.shape(), dev)?,
            Tensor::from_vec(dw, w.shape(), dev)?,
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
        let (dx, dw, db) = LinearOp::bwd(self, x, w, grad, true)?;
        Ok((Some(dx), Some(dw), db))
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
        let (dx, dw, _) = LinearOp::bwd(self, x, w, grad, false)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `x Wᵀ + b` (bias optional) for f32 CPU x (…, in), W (out, in), b (out).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, LinearOp::new(false)),
        None => x.apply_op2(&w, LinearOp::new(false)),
    }
}

/// `gelu_erf(x Wᵀ + b)` for f32 CPU x (…, in), W (out, in), b (out).
pub fn linear_gelu(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, LinearOp::new(true))
}

// ---------------------------------------------------------------------------------------------
// Output head + cross-entropy
// ---------------------------------------------------------------------------------------------

/// Mean cross-entropy of the logits `x Wᵀ`, without the logits ever becoming a tensor: the forward
/// pass keeps the softmax probabilities (N × V, overwriting the logits in place), the backward pass
/// turns them into the logit gradient in place and runs the two GEMMs. With separate ops the
/// (N × V) logits, their gradient, and the gradient store's zeroed copy and sum are four more
/// tensors of that size (32 MB each for the `tiny` preset).
struct HeadCrossEntropyOp {
    probs: std::sync::Mutex<Option<Vec<f32>>>,
}

impl HeadCrossEntropyOp {
    /// Softmax probabilities in place, and the mean loss; one (vectorized) exponential per logit.
    fn softmax_loss(logits: &mut [f32], targets: &[usize], v: usize) -> f32 {
        let per_row: Vec<f32> = logits
            .par_chunks_mut(v)
            .zip(targets.par_iter())
            .map(|(row, &t)| {
                let target = row[t];
                let (max, sum) = exp_shifted_sum(row);
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|x| *x *= inv);
                (max + sum.ln()) - target
            })
            .collect();
        // Summed in a fixed order so that the loss is bit-identical on every run.
        let total: f32 = per_row.iter().sum();
        total / targets.len() as f32
    }
}

impl CustomOp3 for HeadCrossEntropyOp {
    fn name(&self) -> &'static str {
        "w2sg-head-cross-entropy"
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
        let x = f32_slice(s1, l1, "head x")?;
        let w = f32_slice(s2, l2, "head weight")?;
        let (n, h) = l1.shape().dims2()?;
        let (v, hw) = l2.shape().dims2()?;
        let targets = targets_of(s3, l3)?;
        if hw != h || targets.len() != n || targets.iter().any(|&t| t >= v) {
            candle_core::bail!("head_cross_entropy: bad shapes or targets");
        }
        let mut p = linear_fwd(x, w, None, v);
        let loss = Self::softmax_loss(&mut p, &targets, v);
        *self.probs.lock().unwrap() = Some(p);
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, _) = x.dims2()?;
        let (v, _) = w.dims2()?;
        let g = grad.to_dtype(DType::F32)?.to_scalar::<f32>()? / n as f32;
        let t: Vec<u32> = targets.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let xv = cpu_f32(&xs, xl, "head x")?;
        let wv = cpu_f32(&ws, wl, "head weight")?;
        // The probabilities are consumed; a second backward pass recomputes them.
        let mut p = match self.probs.lock().unwrap().take() {
            Some(p) => p,
            None => {
                let mut p = linear_fwd(xv, wv, None, v);
                let tu: Vec<usize> = t.iter().map(|&t| t as usize).collect();
                Self::softmax_loss(&mut p, &tu, v);
                p
            }
        };
        p.par_chunks_mut(v).zip(t.par_iter()).for_each(|(row, &t)| {
            row.iter_mut().for_each(|d| *d *= g);
            row[t as usize] -= g;
        });
        let (dx, dw, _) = linear_bwd(xv, wv, &p, v, false);
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            None,
        ))
    }
}

/// Mean cross-entropy of the logits `x Wᵀ` (x: (N, H) f32 CPU, W: (V, H)) against integer
/// targets (N), as [`linear`] then [`cross_entropy`] in one op.
pub fn head_cross_entropy(x: &Tensor, w: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &targets.contiguous()?,
        HeadCrossEntropyOp {
            probs: std::sync::Mutex::new(None),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Residual sum
// ---------------------------------------------------------------------------------------------

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
        let mut y = vec![0f32; a.len()];
        const CHUNK: usize = 16 * 1024;
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

/// `(a + b) + c` for f32 CPU tensors of one shape.
pub fn add3(a: &Tensor, b: &Tensor, c: &Tensor) -> candle_core::Result<Tensor> {
    a.contiguous()?
        .apply_op3(&b.contiguous()?, &c.contiguous()?, Add3Op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretrain::test_util::randn;
    use candle_core::{Device, Var, D};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Runs `f` on fresh variables built from `inputs`, backpropagates `Σ out · probe` and returns
    /// the output and the gradient of every input.
    fn fwd_bwd(
        inputs: &[Tensor],
        probe: Option<&Tensor>,
        f: impl Fn(&[Tensor]) -> Tensor,
    ) -> (Tensor, Vec<Tensor>) {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = f(&ts);
        let obj = match probe {
            Some(p) => (&out * p).unwrap().sum_all().unwrap(),
            None => out.sum_all().unwrap(),
        };
        let grads = obj.backward().unwrap();
        let gs = ts.iter().map(|t| grads.get(t).unwrap().clone()).collect();
        (out, gs)
    }

    #[test]
    fn layer_norm_matches_composite() {
        let x = randn(&[3, 5, 32], 1).affine(3.0, 0.5).unwrap();
        let w = randn(&[32], 2).affine(0.5, 1.0).unwrap();
        let b = randn(&[32], 3);
        let probe = randn(&[3, 5, 32], 4);
        let eps = 1e-5;
        let (y1, g1) = fwd_bwd(&[x.clone(), w.clone(), b.clone()], Some(&probe), |t| {
            layer_norm(&t[0], &t[1], &t[2], eps).unwrap()
        });
        let (y2, g2) = fwd_bwd(&[x, w, b], Some(&probe), |t| {
            let mean = t[0].mean_keepdim(D::Minus1).unwrap();
            let xc = t[0].broadcast_sub(&mean).unwrap();
            let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let xn = xc
                .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
                .unwrap();
            xn.broadcast_mul(&t[1])
                .unwrap()
                .broadcast_add(&t[2])
                .unwrap()
        });
        assert!(max_diff(&y1, &y2) < 1e-5, "forward {}", max_diff(&y1, &y2));
        for (a, b) in g1.iter().zip(&g2) {
            assert!(max_diff(a, b) < 1e-5, "backward {}", max_diff(a, b));
        }
    }

    #[test]
    fn causal_softmax_matches_composite() {
        let t = 7;
        let x = (randn(&[2, 3, t, t], 5) * 4.0).unwrap();
        let probe = randn(&[2, 3, t, t], 6);
        let scale = 0.37;
        let mask: Vec<f32> = (0..t * t)
            .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
        let (y1, g1) = fwd_bwd(std::slice::from_ref(&x), Some(&probe), |v| {
            causal_softmax(&v[0], scale).unwrap()
        });
        let (y2, g2) = fwd_bwd(&[x], Some(&probe), |v| {
            let s = (&v[0] * scale).unwrap().broadcast_add(&mask).unwrap();
            candle_nn::ops::softmax(&s, D::Minus1).unwrap()
        });
        assert!(max_diff(&y1, &y2) < 1e-6, "forward {}", max_diff(&y1, &y2));
        assert!(
            max_diff(&g1[0], &g2[0]) < 1e-5,
            "backward {}",
            max_diff(&g1[0], &g2[0])
        );
    }

    #[test]
    fn cross_entropy_matches_composite() {
        let (n, v) = (9, 50);
        let logits = (randn(&[n, v], 7) * 3.0).unwrap();
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 17 + 3) % v as u32).collect();
        let targets = Tensor::from_vec(targets, n, &Device::Cpu).unwrap();
        let (y1, g1) = fwd_bwd(std::slice::from_ref(&logits), None, |t| {
            (cross_entropy(&t[0], &targets).unwrap() * 2.5).unwrap()
        });
        let (y2, g2) = fwd_bwd(&[logits], None, |t| {
            (candle_nn::loss::cross_entropy(&t[0], &targets).unwrap() * 2.5).unwrap()
        });
        assert!(max_diff(&y1, &y2) < 1e-5, "forward {}", max_diff(&y1, &y2));
        assert!(
            max_diff(&g1[0], &g2[0]) < 1e-6,
            "backward {}",
            max_diff(&g1[0], &g2[0])
        );
    }

    #[test]
    fn linear_matches_composite() {
        let x = randn(&[2, 9, 12], 16);
        let w = randn(&[7, 12], 17);
        let b = randn(&[7], 18);
        let probe = randn(&[2, 9, 7], 19);
        let (y1, g1) = fwd_bwd(&[x.clone(), w.clone(), b.clone()], Some(&probe), |t| {
            linear(&t[0], &t[1], Some(&t[2])).unwrap()
        });
        let (y2, g2) = fwd_bwd(&[x.clone(), w.clone(), b], Some(&probe), |t| {
            t[0].broadcast_matmul(&t[1].t().unwrap())
                .unwrap()
                .broadcast_add(&t[2])
                .unwrap()
        });
        assert_eq!(y1.dims(), y2.dims());
        assert!(max_diff(&y1, &y2) < 1e-5, "forward {}", max_diff(&y1, &y2));
        assert_eq!(g1.len(), 3);
        for (a, b) in g1.iter().zip(&g2) {
            assert_eq!(a.dims(), b.dims());
            assert!(max_diff(a, b) < 1e-5, "backward {}", max_diff(a, b));
        }
        let (y1, g1) = fwd_bwd(&[x.clone(), w.clone()], Some(&probe), |t| {
            linear(&t[0], &t[1], None).unwrap()
        });
        let (y2, g2) = fwd_bwd(&[x, w], Some(&probe), |t| {
            t[0].broadcast_matmul(&t[1].t().unwrap()).unwrap()
        });
        assert!(max_diff(&y1, &y2) < 1e-5, "forward {}", max_diff(&y1, &y2));
        for (a, b) in g1.iter().zip(&g2) {
            assert!(max_diff(a, b) < 1e-5, "backward {}", max_diff(a, b));
        }
    }

    #[test]
    fn linear_gelu_matches_composite() {
        let x = randn(&[10, 6], 24).affine(2.0, 0.0).unwrap();
        let w = randn(&[5, 6], 25);
        let b = randn(&[5], 26);
        let probe = randn(&[10, 5], 27);
        let (y1, g1) = fwd_bwd(&[x.clone(), w.clone(), b.clone()], Some(&probe), |t| {
            linear_gelu(&t[0], &t[1], &t[2]).unwrap()
        });
        let (y2, g2) = fwd_bwd(&[x, w, b], Some(&probe), |t| {
            t[0].matmul(&t[1].t().unwrap())
                .unwrap()
                .broadcast_add(&t[2])
                .unwrap()
                .gelu_erf()
                .unwrap()
        });
        assert!(max_diff(&y1, &y2) < 1e-5, "forward {}", max_diff(&y1, &y2));
        for (a, b) in g1.iter().zip(&g2) {
            assert!(max_diff(a, b) < 1e-5, "backward {}", max_diff(a, b));
        }
    }

    #[test]
    fn head_cross_entropy_matches_composite() {
        let (n, h, v) = (11, 8, 30);
        let x = randn(&[n, h], 28);
        let w = randn(&[v, h], 29);
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 13 + 5) % v as u32).collect();
        let targets = Tensor::from_vec(targets, n, &Device::Cpu).unwrap();
        let (y1, g1) = fwd_bwd(&[x.clone(), w.clone()], None, |t| {
            (head_cross_entropy(&t[0], &t[1], &targets).unwrap() * 2.5).unwrap()
        });
        let (y2, g2) = fwd_bwd(&[x, w], None, |t| {
            let logits = t[0].matmul(&t[1].t().unwrap()).unwrap();
            (candle_nn::loss::cross_entropy(&logits, &targets).unwrap() * 2.5).unwrap()
        });
        assert!(max_diff(&y1, &y2) < 1e-5, "forward {}", max_diff(&y1, &y2));
        for (a, b) in g1.iter().zip(&g2) {
            assert!(max_diff(a, b) < 1e-5, "backward {}", max_diff(a, b));
        }
    }

    #[test]
    fn add3_matches_composite() {
        let (a, b, c) = (randn(&[4, 5], 20), randn(&[4, 5], 21), randn(&[4, 5], 22));
        let probe = randn(&[4, 5], 23);
        let (y1, g1) = fwd_bwd(&[a.clone(), b.clone(), c.clone()], Some(&probe), |t| {
            add3(&t[0], &t[1], &t[2]).unwrap()
        });
        let (y2, g2) = fwd_bwd(&[a, b, c], Some(&probe), |t| {
            ((&t[0] + &t[1]).unwrap() + &t[2]).unwrap()
        });
        assert_eq!(max_diff(&y1, &y2), 0.0);
        for (a, b) in g1.iter().zip(&g2) {
            assert_eq!(max_diff(a, b), 0.0);
        }
    }

    #[test]
    fn bias_gelu_matches_composite() {
        let x = randn(&[6, 40], 8).affine(2.0, 0.0).unwrap();
        let b = randn(&[40], 9);
        let probe = randn(&[6, 40], 10);
        let (y1, g1) = fwd_bwd(&[x.clone(), b.clone()], Some(&probe), |t| {
            bias_gelu(&t[0], &t[1]).unwrap()
        });
        let (y2, g2) = fwd_bwd(&[x, b], Some(&probe), |t| {
            t[0].broadcast_add(&t[1]).unwrap().gelu_erf().unwrap()
        });
        assert!(max_diff(&y1, &y2) < 1e-6, "forward {}", max_diff(&y1, &y2));
        for (a, b) in g1.iter().zip(&g2) {
            assert!(max_diff(a, b) < 1e-5, "backward {}", max_diff(a, b));
        }
    }
}

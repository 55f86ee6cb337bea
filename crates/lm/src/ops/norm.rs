//! LayerNorm (`w2sg-layer-norm`) and RMSNorm (`w2sg-rms-norm`) over the last dimension.
//!
//! Numerics follow HF `transformers` where it matters at 1e-4:
//! - LayerNorm uses two passes (mean, then the centred variance) accumulated in f32. candle's fused
//!   `layer_norm` computes `E[x²] − E[x]²`, which loses digits when the mean is large against the
//!   spread, as in the residual stream of trained models.
//! - Both run in f32 whatever the input dtype (LayerNorm reads and writes bf16/f16 directly; RMSNorm
//!   converts), as HF does for bf16 models; the parameters are f32.
//!
//! Backward passes (f32): per block of rows, `dx` rows and partial sums of the parameter gradients,
//! reduced in a fixed order so that the gradients are bit-identical on every run.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_f32, f32_slice, zeros, ROWS_PER_TASK};

/// Elementwise sum of per-block partial vectors, in block order.
fn sum_partials(parts: Vec<Vec<f32>>, n: usize) -> Vec<f32> {
    parts.into_iter().fold(vec![0f32; n], |mut a, c| {
        a.iter_mut().zip(&c).for_each(|(a, c)| *a += c);
        a
    })
}

/// (mean, 1/sqrt(var + eps)) of one row, two passes.
#[inline]
fn row_stats(x: impl Iterator<Item = f32> + Clone, n: usize, eps: f32) -> (f32, f32) {
    let mean = x.clone().sum::<f32>() / n as f32;
    let var = x.map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
    (mean, 1.0 / (var + eps).sqrt())
}

fn layer_norm_rows<T: Copy + Send + Sync>(
    src: &[T],
    w: &[f32],
    b: &[f32],
    eps: f32,
    to: impl Fn(T) -> f32 + Sync,
    from: impl Fn(f32) -> T + Sync,
    zero: T,
) -> Vec<T> {
    let n = w.len();
    let mut dst = vec![zero; src.len()];
    dst.par_chunks_mut(n * ROWS_PER_TASK)
        .zip(src.par_chunks(n * ROWS_PER_TASK))
        .for_each(|(ds, ss)| {
            for (d, s) in ds.chunks_mut(n).zip(ss.chunks(n)) {
                let (mean, r) = row_stats(s.iter().map(|&v| to(v)), n, eps);
                for i in 0..n {
                    d[i] = from((to(s[i]) - mean) * r * w[i] + b[i]);
                }
            }
        });
    dst
}

struct LayerNormOp {
    eps: f32,
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
        let w = f32_slice(s2, l2, "layer_norm weight")?;
        let b = f32_slice(s3, l3, "layer_norm bias")?;
        if l1.dims().last() != Some(&w.len()) || w.len() != b.len() {
            candle_core::bail!(
                "layer_norm: input {:?} does not match parameters {}",
                l1.dims(),
                w.len()
            );
        }
        let Some((a1, e1)) = l1.contiguous_offsets() else {
            candle_core::bail!("layer_norm: contiguous input expected");
        };
        let eps = self.eps;
        let out = match s1 {
            CpuStorage::F32(x) => {
                CpuStorage::F32(layer_norm_rows(&x[a1..e1], w, b, eps, |v| v, |v| v, 0.0))
            }
            CpuStorage::BF16(x) => CpuStorage::BF16(layer_norm_rows(
                &x[a1..e1],
                w,
                b,
                eps,
                |v| v.to_f32(),
                half::bf16::from_f32,
                half::bf16::ZERO,
            )),
            CpuStorage::F16(x) => CpuStorage::F16(layer_norm_rows(
                &x[a1..e1],
                w,
                b,
                eps,
                |v| v.to_f32(),
                half::f16::from_f32,
                half::f16::ZERO,
            )),
            _ => candle_core::bail!("layer_norm: unsupported dtype"),
        };
        Ok((out, l1.shape().clone()))
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
        let mut dx = zeros(xv.len());
        let parts: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(h * ROWS_PER_TASK)
            .zip(xv.par_chunks(h * ROWS_PER_TASK))
            .zip(gv.par_chunks(h * ROWS_PER_TASK))
            .map(|((dxs, xs), gs)| {
                let mut dw = vec![0f32; h];
                let mut db = vec![0f32; h];
                let mut xhat = vec![0f32; h];
                for ((dxr, xr), gr) in dxs.chunks_mut(h).zip(xs.chunks(h)).zip(gs.chunks(h)) {
                    let (mean, rstd) = row_stats(xr.iter().copied(), h, eps);
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
            .collect();
        let (dws, dbs): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(sum_partials(dws, h), w.shape(), dev)?),
            Some(Tensor::from_vec(sum_partials(dbs, h), w.shape(), dev)?),
        ))
    }
}

/// LayerNorm over the last dimension with f32 weight and bias; the fused op on the CPU (f32, bf16
/// or f16 input), else [`super::composite::layer_norm`].
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    if super::composite_forced()
        || !x.device().is_cpu()
        || w.dtype() != DType::F32
        || b.dtype() != DType::F32
    {
        return super::composite::layer_norm(x, w, b, eps);
    }
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        LayerNormOp { eps: eps as f32 },
    )
}

struct RmsNormOp {
    eps: f32,
}

/// 1/sqrt(mean(x²) + eps) of one row.
#[inline]
fn rms_rstd(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "w2sg-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "rms_norm x")?;
        let w = f32_slice(s2, l2, "rms_norm weight")?;
        let h = w.len();
        if l1.dims().last() != Some(&h) {
            candle_core::bail!("rms_norm: input {:?} does not match weight {h}", l1.dims());
        }
        let mut y = zeros(x.len());
        y.par_chunks_mut(h * ROWS_PER_TASK)
            .zip(x.par_chunks(h * ROWS_PER_TASK))
            .for_each(|(ys, xs)| {
                for (yr, xr) in ys.chunks_mut(h).zip(xs.chunks(h)) {
                    let r = rms_rstd(xr, self.eps);
                    for i in 0..h {
                        yr[i] = w[i] * (xr[i] * r);
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let h = w.elem_count();
        let grad = grad.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let xv = cpu_f32(&xs, xl, "rms_norm x")?;
        let wv = cpu_f32(&ws, wl, "rms_norm weight")?;
        let gv = cpu_f32(&gs, gl, "rms_norm grad")?;
        let eps = self.eps;
        let mut dx = zeros(xv.len());
        let parts: Vec<Vec<f32>> = dx
            .par_chunks_mut(h * ROWS_PER_TASK)
            .zip(xv.par_chunks(h * ROWS_PER_TASK))
            .zip(gv.par_chunks(h * ROWS_PER_TASK))
            .map(|((dxs, xs), gs)| {
                let mut dw = vec![0f32; h];
                for ((dxr, xr), gr) in dxs.chunks_mut(h).zip(xs.chunks(h)).zip(gs.chunks(h)) {
                    let r = rms_rstd(xr, eps);
                    let mut s = 0f32;
                    for i in 0..h {
                        let xhat = xr[i] * r;
                        s += gr[i] * wv[i] * xhat;
                        dw[i] += gr[i] * xhat;
                    }
                    let m = s / h as f32;
                    for i in 0..h {
                        dxr[i] = r * (gr[i] * wv[i] - xr[i] * r * m);
                    }
                }
                dw
            })
            .collect();
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(sum_partials(parts, h), w.shape(), dev)?),
        ))
    }
}

/// RMSNorm `w · x / sqrt(mean(x²) + eps)` over the last dimension, computed in f32 and cast back to
/// the input dtype; the fused op on the CPU, else [`super::composite::rms_norm`].
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    if super::composite_forced() || !x.device().is_cpu() || w.dtype() != DType::F32 {
        return super::composite::rms_norm(x, w, eps);
    }
    let dtype = x.dtype();
    x.to_dtype(DType::F32)?
        .contiguous()?
        .apply_op2(&w.contiguous()?, RmsNormOp { eps: eps as f32 })?
        .to_dtype(dtype)
}

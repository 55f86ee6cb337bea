//! Fused CPU kernels with a backward pass for the trainable GPT-NeoX: LayerNorm (weight and bias),
//! causal softmax over the last dimension (with the score scale folded in), bias + GELU (erf) and mean
//! cross-entropy.
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

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{what}: f32 input expected"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: contiguous input expected"),
    }
}

fn to_f32_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
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
        let xv = to_f32_vec(x)?;
        let wv = to_f32_vec(w)?;
        let gv = to_f32_vec(grad)?;
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
        let x = to_f32_vec(logits)?;
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

#[inline]
fn gelu_erf_grad(z: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
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
        let xv = to_f32_vec(x)?;
        let bv = to_f32_vec(b)?;
        let gv = to_f32_vec(grad)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::pretrain::model::SplitMix64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.next_normal() as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

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

//! The output head fused with the mean next-token cross-entropy (`w2sg-head-cross-entropy`).
//!
//! The logits `x Wᵀ` never become a tensor: the forward pass keeps the softmax probabilities (N × V,
//! overwriting the logits in place), the backward pass turns them into the logit gradient in place
//! and runs the two GEMMs. With separate ops the (N × V) logits, their gradient, and the gradient
//! store's zeroed copy and sum would be four more tensors of that size (32 MB each for the `tiny`
//! pre-training preset).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::linear::{linear_bwd, linear_fwd};
use super::math::exp_shifted_sum;
use super::{cpu_f32, f32_slice, fused_ok};

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

struct HeadCrossEntropyOp {
    probs: Mutex<Option<Vec<f32>>>,
}

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
        let loss = softmax_loss(&mut p, &targets, v);
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
                softmax_loss(&mut p, &tu, v);
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

/// Mean cross-entropy of the logits `x Wᵀ` (x: (N, H), W: (V, H)) against integer targets (N); the
/// fused op on CPU f32, else [`super::composite::head_cross_entropy`].
pub fn head_cross_entropy(x: &Tensor, w: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    if !fused_ok(&[x, w]) {
        return super::composite::head_cross_entropy(x, w, targets);
    }
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &targets.contiguous()?,
        HeadCrossEntropyOp {
            probs: Mutex::new(None),
        },
    )
}

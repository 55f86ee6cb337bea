//! `silu(gate) · up` from one tensor laid out `[up | gate]` on the last dimension (`w2sg-swiglu`):
//! the fused up/gate projection's output, read in one parallel pass instead of two narrows, a SiLU
//! and a product.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::math::{swiglu_row, swiglu_row_grad};
use super::{cpu_f32, f32_slice, fused_ok, zeros, ROWS_PER_TASK};

struct SwiGluOp;

impl CustomOp1 for SwiGluOp {
    fn name(&self) -> &'static str {
        "w2sg-swiglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "swiglu")?;
        let dims = l.dims();
        let width = *dims.last().unwrap_or(&0);
        if width % 2 != 0 {
            candle_core::bail!("swiglu: last dimension {width} is odd");
        }
        let inter = width / 2;
        let mut out = zeros(x.len() / 2);
        out.par_chunks_mut(inter * ROWS_PER_TASK)
            .zip(x.par_chunks(width * ROWS_PER_TASK))
            .for_each(|(o, s)| {
                o.chunks_mut(inter)
                    .zip(s.chunks(width))
                    .for_each(|(o, s)| swiglu_row(s, o));
            });
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("non-empty shape") = inter;
        Ok((CpuStorage::F32(out), Shape::from_dims(&shape)))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let xv = cpu_f32(&xs, xl, "swiglu x")?;
        let gv = cpu_f32(&gs, gl, "swiglu grad")?;
        let width = x.dim(D::Minus1)?;
        let inter = width / 2;
        let mut dx = zeros(xv.len());
        dx.par_chunks_mut(width * ROWS_PER_TASK)
            .zip(xv.par_chunks(width * ROWS_PER_TASK))
            .zip(gv.par_chunks(inter * ROWS_PER_TASK))
            .for_each(|((d, s), g)| {
                for ((d, s), g) in d
                    .chunks_mut(width)
                    .zip(s.chunks(width))
                    .zip(g.chunks(inter))
                {
                    swiglu_row_grad(s, g, d);
                }
            });
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// `silu(gate) · up` for x (…, 2·inter) laid out `[up | gate]`; the fused op on CPU f32, else
/// [`super::composite::swiglu`].
pub fn swiglu(x: &Tensor) -> candle_core::Result<Tensor> {
    if !fused_ok(&[x]) {
        return super::composite::swiglu(x);
    }
    x.contiguous()?.apply_op1(SwiGluOp)
}

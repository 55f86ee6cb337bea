//! The start of a backward pass at a tensor that is not a scalar (`w2sg-gradient-seed`).
//!
//! candle's `backward` starts at a scalar. Block recomputation (`finetune/runner.rs`) needs the
//! gradients of a block's parameters and input given the gradient g at its output; `Σ out ⊙ g` is a
//! scalar whose gradient at `out` is exactly g, but it multiplies and sums the output (and candle's
//! backward pass of the product also forms the unused gradient of g). This node is that scalar
//! without the arithmetic: its value is 0, its backward pass hands g to `out`. Since `out` is never
//! read, the block may skip computing parts of it ([`super::lora_linear_for_gradient`]).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::fused_ok;

struct SeedOp {
    grad: Tensor,
}

impl CustomOp1 for SeedOp {
    fn name(&self) -> &'static str {
        "w2sg-gradient-seed"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(vec![0.0]), Shape::from(())))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // `backward` seeds a scalar with 1, so g itself (the same bits as g · 1).
        if grad.to_scalar::<f32>()? == 1.0 {
            Ok(Some(self.grad.clone()))
        } else {
            Ok(Some(self.grad.broadcast_mul(grad)?))
        }
    }
}

/// A scalar whose backward pass gives `out` the gradient `grad` (same shape): `Σ out ⊙ grad` as
/// far as gradients go, without reading `out`. Off the CPU (or for other dtypes) it is that sum.
pub fn gradient_seed(out: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
    if out.dims() != grad.dims() {
        candle_core::bail!(
            "gradient seed: output {:?} and gradient {:?} differ in shape",
            out.dims(),
            grad.dims()
        );
    }
    if !fused_ok(&[out, grad]) {
        return (out * grad)?.sum_all();
    }
    out.apply_op1(SeedOp {
        grad: grad.detach(),
    })
}

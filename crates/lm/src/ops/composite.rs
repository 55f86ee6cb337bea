//! Every fused op of [`super`] built from candle ops that all have backward passes: the path on
//! devices other than the CPU (and dtypes the fused ops do not take), and the oracle the fused ops
//! are tested against.
//!
//! candle pitfalls avoided here: `ops::layer_norm`, `softmax_last_dim`, `rms_norm` and
//! `rotary_emb::rope*` have no backward pass, so gradients would silently stop at them.

use candle_core::{DType, Tensor, D};

use super::attention::{AttentionSpec, QkvLayout, RotaryTables};
use super::linear::Activation;

/// `act(x Wᵀ + b)` for x (…, in).
pub fn linear(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Option<Activation>,
) -> candle_core::Result<Tensor> {
    let dims = x.dims();
    let k = dims[dims.len() - 1];
    let rows = x.elem_count() / k.max(1);
    let mut out_shape = dims.to_vec();
    *out_shape.last_mut().expect("non-scalar input") = w.dim(0)?;
    let y = x.reshape((rows, k))?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let y = match act {
        Some(a) => a.apply(&y)?,
        None => y,
    };
    y.reshape(out_shape)
}

/// `act(x Wᵀ + b + scale · (x Aᵀ) Bᵀ)`: a linear layer with a LoRA adapter, as peft computes it.
pub fn lora_linear(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    a: &Tensor,
    bm: &Tensor,
    scale: f64,
    act: Option<Activation>,
) -> candle_core::Result<Tensor> {
    let y = linear(x, w, b, None)?;
    let delta = linear(&linear(x, a, None, None)?, bm, None, None)?;
    let y = (y + (delta * scale)?)?;
    match act {
        Some(a) => a.apply(&y),
        None => Ok(y),
    }
}

/// Two-pass LayerNorm over the last dimension, in f32, cast back to the input dtype.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xn.broadcast_mul(w)?.broadcast_add(b)?.to_dtype(dtype)
}

/// `w · x / sqrt(mean(x²) + eps)` in f32, cast back to the input dtype.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = x.broadcast_div(&(ms + eps)?.sqrt()?)?;
    xn.broadcast_mul(w)?.to_dtype(dtype)
}

/// `silu(gate) · up` from `[up | gate]` on the last dimension.
pub fn swiglu(x: &Tensor) -> candle_core::Result<Tensor> {
    let inter = x.dim(D::Minus1)? / 2;
    let up = x.narrow(D::Minus1, 0, inter)?;
    let gate = x.narrow(D::Minus1, inter, inter)?;
    gate.silu()? * up
}

/// Mean cross-entropy of `x Wᵀ` against integer targets.
pub fn head_cross_entropy(x: &Tensor, w: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let logits = x.matmul(&w.t()?)?;
    candle_nn::loss::cross_entropy(&logits, targets)
}

/// Rotary embedding on the first `cos.dim(1)` channels of x (B, H, T, hd):
/// `x·cos + rotate_half(x)·sin` with duplicated-halves tables (T, rd).
pub fn rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let rd = cos.dim(1)?;
    let xr = x.narrow(D::Minus1, 0, rd)?;
    let half = rd / 2;
    let x1 = xr.narrow(D::Minus1, 0, half)?;
    let x2 = xr.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let out = (xr.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?;
    if rd == hd {
        Ok(out)
    } else {
        Tensor::cat(&[&out, &x.narrow(D::Minus1, rd, hd - rd)?], D::Minus1)
    }
}

/// q (B, H, T, hd), k and v (B, H_kv, T, hd) from the packed projection (B, T, W).
pub fn split_qkv(
    qkv: &Tensor,
    spec: &AttentionSpec,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let (b, t, _) = qkv.dims3()?;
    let AttentionSpec {
        heads: nh,
        kv_heads: nkv,
        head_dim: hd,
        layout,
    } = *spec;
    let heads = |x: Tensor, n: usize| -> candle_core::Result<Tensor> {
        x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
    };
    match layout {
        QkvLayout::PerHead => {
            let x = qkv.reshape((b, t, nh, 3 * hd))?;
            let part = |i: usize| -> candle_core::Result<Tensor> {
                x.narrow(3, i * hd, hd)?.transpose(1, 2)?.contiguous()
            };
            Ok((part(0)?, part(1)?, part(2)?))
        }
        QkvLayout::Blocks => Ok((
            heads(qkv.narrow(2, 0, nh * hd)?, nh)?,
            heads(qkv.narrow(2, nh * hd, nkv * hd)?, nkv)?,
            heads(qkv.narrow(2, (nh + nkv) * hd, nkv * hd)?, nkv)?,
        )),
    }
}

/// Causal self-attention from the packed projection, as [`super::attention`].
pub fn attention(
    qkv: &Tensor,
    spec: &AttentionSpec,
    rot: &RotaryTables,
) -> candle_core::Result<Tensor> {
    let (b, t, _) = qkv.dims3()?;
    let AttentionSpec {
        heads: nh,
        kv_heads: nkv,
        head_dim: hd,
        ..
    } = *spec;
    let dtype = qkv.dtype();
    let (q, k, v) = split_qkv(&qkv.to_dtype(DType::F32)?, spec)?;
    let (cos, sin) = rot.tensors(t, qkv.device())?;
    let (q, k) = (rotary(&q, &cos, &sin)?, rotary(&k, &cos, &sin)?);
    let (k, v) = if nkv == nh {
        (k, v)
    } else {
        let rep = nh / nkv;
        let expand = |x: Tensor| -> candle_core::Result<Tensor> {
            x.unsqueeze(2)?
                .expand((b, nkv, rep, t, hd))?
                .reshape((b, nh, t, hd))
        };
        (expand(k)?, expand(v)?)
    };
    let mask: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), qkv.device())?;
    let scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
    let p = candle_nn::ops::softmax(&scores, D::Minus1)?;
    p.matmul(&v.contiguous()?)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, t, nh * hd))?
        .to_dtype(dtype)
}

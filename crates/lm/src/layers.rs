//! Building blocks shared by the model files: linear layers, norms, rotary embeddings, causal attention.
//!
//! Inference only: several of these use candle ops without a backward pass (`rope`, `softmax_last_dim`,
//! `rms_norm`) or a custom CPU kernel (the layer norm), so no gradient flows through them. Code that
//! trains must not reuse them as they are.
//!
//! Numerics follow HF `transformers` where it matters at 1e-4:
//! - LayerNorm uses two passes (mean, then the centred variance) accumulated in f32. candle's fused
//!   `layer_norm` computes `E[x²] − E[x]²` in f32, which loses digits when the mean is large against the
//!   spread, as in the residual stream of trained models.
//! - Norms and softmax run in f32 whatever the model dtype, as HF does for bf16 models.
//! - Rotary tables are built in f32 from `1 / theta^(2i/d)`, as HF builds them.
//!
//! Attention is causal only. Batches are padded on the right, so a real token never sees a padding
//! token (padding comes after it) and no padding mask is needed; outputs at padded positions are
//! garbage by construction and must never be read (features pool from the attention mask).

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Module, Shape, Tensor, D};
use rayon::prelude::*;

use crate::checkpoint::Checkpoint;
use crate::error::{LmError, Result};

/// `y = x Wᵀ + b` over the last dimension, as one GEMM over all leading dimensions.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    /// `act(x Wᵀ + b)`; on the CPU in f32 a fused kernel ([`crate::kernels::LinearOp`]).
    pub(crate) fn forward_act(
        &self,
        x: &Tensor,
        act: Option<Activation>,
    ) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 && self.weight.dtype() == DType::F32 {
            let dims = x.dims();
            let k = dims[dims.len() - 1];
            let n = self.weight.dim(0)?;
            let rows = x.elem_count() / k.max(1);
            let mut out_shape = dims.to_vec();
            *out_shape.last_mut().expect("non-scalar input") = n;
            let bias = match &self.bias {
                Some(b) => b.clone(),
                None => Tensor::zeros(n, DType::F32, x.device())?,
            };
            let x2 = x.contiguous()?.reshape((rows, k))?;
            return x2
                .apply_op3_no_bwd(&self.weight, &bias, &crate::kernels::LinearOp { act })?
                .reshape(out_shape);
        }
        let y = self.forward(x)?;
        match act {
            Some(a) => a.apply(&y),
            None => Ok(y),
        }
    }

    /// Loads `{prefix}.weight` (out, in) and, if `bias`, `{prefix}.bias` (out).
    pub(crate) fn load(
        ck: &Checkpoint,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let weight = ck.get(
            &format!("{prefix}.weight"),
            &[out_dim, in_dim],
            dtype,
            device,
        )?;
        let bias = if bias {
            Some(ck.get(&format!("{prefix}.bias"), &[out_dim], dtype, device)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Concatenates layers along the output dimension (fusing projections into one GEMM).
    pub(crate) fn cat(parts: &[Linear]) -> Result<Self> {
        let ws: Vec<&Tensor> = parts.iter().map(|p| &p.weight).collect();
        let weight = Tensor::cat(&ws, 0)?;
        let bias = if parts.iter().all(|p| p.bias.is_some()) {
            let bs: Vec<&Tensor> = parts.iter().filter_map(|p| p.bias.as_ref()).collect();
            Some(Tensor::cat(&bs, 0)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 && self.weight.dtype() == DType::F32 {
            return self.forward_act(x, None);
        }
        let dims = x.dims();
        let k = dims[dims.len() - 1];
        let rows = x.elem_count() / k.max(1);
        let mut out_shape = dims.to_vec();
        *out_shape.last_mut().expect("non-scalar input") = self.weight.dim(0)?;
        let y = x.reshape((rows, k))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        y.reshape(out_shape)
    }
}

/// Activation functions by their HF `hidden_act` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact, erf-based GELU (PyTorch's default).
    GeluErf,
    /// `gelu_new`, `gelu_fast`, `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    /// Parses an HF `hidden_act` value.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Activation::GeluErf),
            "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            "silu" | "swish" => Some(Activation::Silu),
            _ => None,
        }
    }

    pub(crate) fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::GeluErf => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}

/// silu(gate) · up for x (…, 2·inter) laid out [up | gate] on the last dimension.
pub(crate) fn swiglu(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&crate::kernels::SwiGlu);
    }
    let inter = x.dim(D::Minus1)? / 2;
    let up = x.narrow(D::Minus1, 0, inter)?;
    let gate = x.narrow(D::Minus1, inter, inter)?;
    gate.silu()? * up
}

/// LayerNorm with f32 parameters (`weight`, `bias`), or without parameters (OLMo 1).
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub(crate) fn load(
        ck: &Checkpoint,
        prefix: &str,
        size: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self> {
        let weight = ck.get(&format!("{prefix}.weight"), &[size], DType::F32, device)?;
        let bias = ck.get(&format!("{prefix}.bias"), &[size], DType::F32, device)?;
        Ok(LayerNorm {
            weight,
            bias,
            eps: eps as f32,
        })
    }

    /// Non-parametric LayerNorm (weight 1, bias 0), as in OLMo 1.
    pub(crate) fn plain(size: usize, eps: f64, device: &Device) -> Result<Self> {
        let weight = Tensor::ones(size, DType::F32, device)?;
        let bias = Tensor::zeros(size, DType::F32, device)?;
        Ok(LayerNorm {
            weight,
            bias,
            eps: eps as f32,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() {
            let x = x.contiguous()?;
            x.apply_op3_no_bwd(&self.weight, &self.bias, &LayerNormOp { eps: self.eps })
        } else {
            // Same two-pass arithmetic from tensor ops, for GPU builds.
            let dtype = x.dtype();
            let x = x.to_dtype(DType::F32)?;
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            let y = xc.broadcast_div(&(var + self.eps as f64)?.sqrt()?)?;
            y.broadcast_mul(&self.weight)?
                .broadcast_add(&self.bias)?
                .to_dtype(dtype)
        }
    }
}

/// CPU LayerNorm kernel: rows in parallel, f32 accumulation, two passes.
struct LayerNormOp {
    eps: f32,
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
    dst.par_chunks_mut(n)
        .zip(src.par_chunks(n))
        .for_each(|(d, s)| {
            let mean = s.iter().map(|&v| to(v)).sum::<f32>() / n as f32;
            let var = s
                .iter()
                .map(|&v| (to(v) - mean) * (to(v) - mean))
                .sum::<f32>()
                / n as f32;
            let r = 1.0 / (var + eps).sqrt();
            for i in 0..n {
                d[i] = from((to(s[i]) - mean) * r * w[i] + b[i]);
            }
        });
    dst
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
        let (Some((a1, b1)), Some((a2, b2)), Some((a3, b3))) = (
            l1.contiguous_offsets(),
            l2.contiguous_offsets(),
            l3.contiguous_offsets(),
        ) else {
            candle_core::bail!("layer norm: inputs must be contiguous");
        };
        let (CpuStorage::F32(w), CpuStorage::F32(b)) = (s2, s3) else {
            candle_core::bail!("layer norm: parameters must be f32");
        };
        let (w, b) = (&w[a2..b2], &b[a3..b3]);
        if l1.dims().last() != Some(&w.len()) || w.len() != b.len() {
            candle_core::bail!(
                "layer norm: input {:?} does not match parameters {}",
                l1.dims(),
                w.len()
            );
        }
        let out = match s1 {
            CpuStorage::F32(x) => CpuStorage::F32(layer_norm_rows(
                &x[a1..b1],
                w,
                b,
                self.eps,
                |v| v,
                |v| v,
                0.0,
            )),
            CpuStorage::BF16(x) => CpuStorage::BF16(layer_norm_rows(
                &x[a1..b1],
                w,
                b,
                self.eps,
                |v| v.to_f32(),
                half::bf16::from_f32,
                half::bf16::ZERO,
            )),
            CpuStorage::F16(x) => CpuStorage::F16(layer_norm_rows(
                &x[a1..b1],
                w,
                b,
                self.eps,
                |v| v.to_f32(),
                half::f16::from_f32,
                half::f16::ZERO,
            )),
            _ => candle_core::bail!("layer norm: unsupported dtype"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// RMSNorm as OLMo 2 uses it: computed in f32, `weight * x / rms(x)`, cast back to the input dtype.
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn load(
        ck: &Checkpoint,
        name: &str,
        size: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self> {
        let weight = ck.get(name, &[size], DType::F32, device)?;
        Ok(RmsNorm {
            weight,
            eps: eps as f32,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        candle_nn::ops::rms_norm(&x, &self.weight, self.eps)?.to_dtype(dtype)
    }
}

/// Rotary position embedding on the first `dim` channels of each head (rotate-half convention).
#[derive(Debug, Clone)]
pub(crate) struct Rotary {
    /// (max_pos, dim/2), f32.
    cos: Tensor,
    sin: Tensor,
    dim: usize,
    /// Compute in f32 and cast back (OLMo) rather than in the model dtype (GPT-NeoX): as HF does.
    upcast: bool,
}

impl Rotary {
    pub(crate) fn new(
        dim: usize,
        theta: f64,
        max_pos: usize,
        upcast: bool,
        device: &Device,
    ) -> Result<Self> {
        if dim % 2 != 0 {
            return Err(LmError::Input(format!(
                "rotary dimension {dim} must be even"
            )));
        }
        let half = dim / 2;
        // HF: inv_freq = 1 / base^(arange(0, dim, 2) / dim) in f32; freqs = pos * inv_freq in f32.
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for &f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (max_pos, half), device)?;
        let sin = Tensor::from_vec(sin, (max_pos, half), device)?;
        Ok(Rotary {
            cos,
            sin,
            dim,
            upcast,
        })
    }

    /// Applies the rotation to `x` of shape (B, H, T, head_dim).
    pub(crate) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, t, hd) = x.dims4()?;
        if t > self.cos.dim(0)? {
            candle_core::bail!(
                "sequence of {t} tokens is longer than the rotary table ({})",
                self.cos.dim(0)?
            );
        }
        let dtype = x.dtype();
        let work = if self.upcast { DType::F32 } else { dtype };
        let cos = self.cos.narrow(0, 0, t)?.to_dtype(work)?;
        let sin = self.sin.narrow(0, 0, t)?.to_dtype(work)?;
        if self.dim == hd {
            let x = x.to_dtype(work)?.contiguous()?;
            return candle_nn::rotary_emb::rope(&x, &cos, &sin)?.to_dtype(dtype);
        }
        let rot = x.narrow(3, 0, self.dim)?.to_dtype(work)?.contiguous()?;
        let pass = x.narrow(3, self.dim, hd - self.dim)?;
        let rot = candle_nn::rotary_emb::rope(&rot, &cos, &sin)?.to_dtype(dtype)?;
        Tensor::cat(&[&rot, &pass], 3)
    }
}

/// Causal multi-head attention core: softmax(q kᵀ · scale + causal) v, with grouped KV heads.
///
/// q: (B, H, T, D), k and v: (B, H_kv, T, D). Returns (B, T, H·D). The softmax runs in f32. On the CPU
/// this is one fused kernel ([`crate::kernels::CausalAttention`]); elsewhere it is built from tensor ops.
pub(crate) fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let dtype = q.dtype();
    if q.device().is_cpu() {
        let f32c = |x: &Tensor| x.to_dtype(DType::F32)?.contiguous();
        let out = f32c(q)?.apply_op3_no_bwd(
            &f32c(k)?,
            &f32c(v)?,
            &crate::kernels::CausalAttention {
                scale: scale as f32,
            },
        )?;
        return out.to_dtype(dtype)?.transpose(1, 2)?.reshape((b, t, h * d));
    }
    let h_kv = k.dim(1)?;
    let (k, v) = if h_kv == h {
        (k.clone(), v.clone())
    } else {
        let rep = h / h_kv;
        let k = k
            .unsqueeze(2)?
            .expand((b, h_kv, rep, t, d))?
            .reshape((b, h, t, d))?;
        let v = v
            .unsqueeze(2)?
            .expand((b, h_kv, rep, t, d))?
            .reshape((b, h, t, d))?;
        (k, v)
    };
    let scores = q.matmul(&k.t()?)?;
    let scores = (scores.to_dtype(DType::F32)? * scale)?;
    let scores = if t > 1 {
        scores.broadcast_add(&causal_mask(t, q.device())?)?
    } else {
        scores
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
    let out = probs.matmul(&v.contiguous()?)?;
    out.transpose(1, 2)?.reshape((b, t, h * d))
}

/// (T, T) additive mask: 0 on and below the diagonal, −∞ above.
fn causal_mask(t: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, t), device)
}

/// Splits the last dimension of a (B, T, n·…) tensor into heads: (B, n, T, head_dim), contiguous.
pub(crate) fn split_heads(x: &Tensor, n: usize, head_dim: usize) -> candle_core::Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    x.reshape((b, t, n, head_dim))?
        .transpose(1, 2)?
        .contiguous()
}

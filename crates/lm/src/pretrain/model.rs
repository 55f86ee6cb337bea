//! A trainable GPT-NeoX (Pythia layout) on candle autograd.
//!
//! The inference model in [`crate::gpt_neox`] uses fused kernels and candle ops that have no backward
//! pass (a custom layer-norm kernel, `rope`, `softmax_last_dim`, a fused linear op), so gradients would
//! silently stop there. This file re-implements the same forward pass twice: from composite ops only
//! (matmul, broadcast arithmetic, `exp`, `max`, `sum`, `gelu_erf`, `index_select`), every one of which
//! has a backward pass in candle 0.11, and, on the CPU by default, from the fused kernels of
//! [`super::fused`] and [`super::attention`], which are candle custom ops with hand-written backward
//! passes (per layer: two LayerNorms, QKV projection + rotary + causal attention, the dense
//! projection, up-projection + GELU, down-projection, the residual sum; then the final LayerNorm and
//! the output head fused with the cross-entropy). `tests/pretrain.rs` checks that every parameter
//! receives a non-zero gradient, which is what catches a forward-only op slipping in, and that both
//! paths agree in the loss and every gradient.
//!
//! Parameters are candle [`Var`]s named exactly as HF `GPTNeoXForCausalLM` names them
//! (`gpt_neox.layers.{i}.attention.query_key_value.weight`, `embed_out.weight`, …), so a checkpoint is
//! the list of `(name, tensor)` pairs and loads in `transformers` and in [`crate::model::Model`].
//!
//! Edge cases:
//! - The fused QKV projection is interleaved per head ((B, T, H, 3·head_dim), [q | k | v] within each
//!   head), as Pythia stores it; anything else would give a checkpoint that trains but loads wrongly.
//! - Only the parallel residual with untied embeddings is implemented (every Pythia model); the config
//!   written for a checkpoint says so explicitly.
//! - Weights are initialised from our own SplitMix64 / Box–Muller stream, not candle's `randn`, whose
//!   CPU generator cannot be seeded: the same seed gives the same weights on every machine.

use candle_core::{DType, Device, Tensor, Var, D};

use super::{PretrainError, Result};
use crate::gpt_neox::GptNeoXConfig;

/// SplitMix64: a tiny, seedable generator whose whole state is one `u64` (easy to reproduce).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn next_open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal (Box–Muller; one of the pair is discarded for simplicity).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = self.next_open01();
        let u2 = self.next_open01();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// One trainable parameter: HF name, variable, and whether weight decay applies (matrices only).
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub decay: bool,
}

/// A GPT-NeoX causal LM whose parameters are candle variables.
#[derive(Debug, Clone)]
pub struct TrainableGptNeoX {
    config: GptNeoXConfig,
    params: Vec<Param>,
    /// (T_max, rotary_ndims) tables, constants.
    cos: Tensor,
    sin: Tensor,
    device: Device,
    /// Use the fused kernels of [`super::fused`] (CPU only; on by default there).
    fused: bool,
}

/// Parameter indices of one layer in [`TrainableGptNeoX::params`] (fixed order, see `names`).
const PER_LAYER: usize = 12;

/// HF names of all parameters, in the model's fixed order.
pub fn parameter_names(c: &GptNeoXConfig) -> Vec<(String, Vec<usize>, bool)> {
    let h = c.hidden_size;
    let m = c.intermediate_size;
    let mut out = vec![(
        "gpt_neox.embed_in.weight".to_string(),
        vec![c.vocab_size, h],
        true,
    )];
    for i in 0..c.num_hidden_layers {
        let p = format!("gpt_neox.layers.{i}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h], false));
        out.push((format!("{p}.input_layernorm.bias"), vec![h], false));
        out.push((
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            false,
        ));
        out.push((format!("{p}.post_attention_layernorm.bias"), vec![h], false));
        out.push((
            format!("{p}.attention.query_key_value.weight"),
            vec![3 * h, h],
            true,
        ));
        out.push((
            format!("{p}.attention.query_key_value.bias"),
            vec![3 * h],
            false,
        ));
        out.push((format!("{p}.attention.dense.weight"), vec![h, h], true));
        out.push((format!("{p}.attention.dense.bias"), vec![h], false));
        out.push((format!("{p}.mlp.dense_h_to_4h.weight"), vec![m, h], true));
        out.push((format!("{p}.mlp.dense_h_to_4h.bias"), vec![m], false));
        out.push((format!("{p}.mlp.dense_4h_to_h.weight"), vec![h, m], true));
        out.push((format!("{p}.mlp.dense_4h_to_h.bias"), vec![h], false));
    }
    out.push((
        "gpt_neox.final_layer_norm.weight".to_string(),
        vec![h],
        false,
    ));
    out.push(("gpt_neox.final_layer_norm.bias".to_string(), vec![h], false));
    out.push(("embed_out.weight".to_string(), vec![c.vocab_size, h], true));
    out
}

/// Checks that the config is one this trainer implements.
pub fn check_trainable(c: &GptNeoXConfig) -> Result<()> {
    let bad = |what: &str| Err(PretrainError::Config(format!("trainable GPT-NeoX: {what}")));
    if !c.use_parallel_residual {
        return bad("only use_parallel_residual = true is implemented");
    }
    if c.tie_word_embeddings {
        return bad("only untied embeddings (tie_word_embeddings = false) are implemented");
    }
    if !c.attention_bias {
        return bad("only attention_bias = true is implemented");
    }
    if c.hidden_act != "gelu" {
        return bad("only hidden_act = \"gelu\" is implemented");
    }
    Ok(())
}

impl TrainableGptNeoX {
    /// Fresh weights from `seed`: N(0, 0.02²) matrices, output projections (attention `dense`, MLP
    /// `dense_4h_to_h`) scaled by 1/√(2L) as in GPT-2/NeoX, zero biases, unit LayerNorm gains.
    pub fn init(config: &GptNeoXConfig, seed: u64, device: &Device) -> Result<Self> {
        check_trainable(config)?;
        let mut rng = SplitMix64(seed ^ 0x005E_ED0F_1417);
        let out_std = 0.02 / (2.0 * config.num_hidden_layers as f64).sqrt();
        let mut tensors = Vec::new();
        for (name, shape, _) in parameter_names(config) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with("layernorm.weight")
                || name.ends_with("final_layer_norm.weight")
            {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                let std = if name.ends_with("attention.dense.weight")
                    || name.ends_with("dense_4h_to_h.weight")
                {
                    out_std
                } else {
                    0.02
                };
                (0..n).map(|_| (rng.next_normal() * std) as f32).collect()
            };
            tensors.push((name, Tensor::from_vec(data, shape, device)?));
        }
        Self::from_tensors(config, tensors, device)
    }

    /// Builds the model from named tensors (in any order); every parameter must be present with the
    /// shape the config implies.
    pub fn from_tensors(
        config: &GptNeoXConfig,
        tensors: Vec<(String, Tensor)>,
        device: &Device,
    ) -> Result<Self> {
        check_trainable(config)?;
        let mut map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
        let mut params = Vec::new();
        for (name, shape, decay) in parameter_names(config) {
            let t = map
                .remove(&name)
                .ok_or_else(|| PretrainError::Config(format!("missing tensor `{name}`")))?;
            if t.dims() != shape.as_slice() {
                return Err(PretrainError::Config(format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            let t = t.to_dtype(DType::F32)?.to_device(device)?;
            params.push(Param {
                name,
                var: Var::from_tensor(&t)?,
                decay,
            });
        }
        let (cos, sin) = rotary_tables(config, device)?;
        Ok(TrainableGptNeoX {
            config: config.clone(),
            params,
            cos,
            sin,
            device: device.clone(),
            fused: device.is_cpu(),
        })
    }

    /// Switches the fused CPU kernels (see [`super::fused`] and [`super::attention`]) on or off; off
    /// means the composite candle ops. They are on by default on the CPU and cannot be switched on
    /// for other devices.
    pub fn with_fused_ops(mut self, on: bool) -> Self {
        self.fused = on && self.device.is_cpu();
        self
    }

    fn layer_norm(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        let eps = self.config.layer_norm_eps;
        if self.fused {
            super::fused::layer_norm(x, w, b, eps)
        } else {
            layer_norm(x, w, b, eps)
        }
    }

    pub fn config(&self) -> &GptNeoXConfig {
        &self.config
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    /// `(name, tensor)` pairs, HF names, in the fixed order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
            .collect()
    }

    fn p(&self, i: usize) -> &Tensor {
        self.params[i].var.as_tensor()
    }

    /// Logits (B, T, vocab) for token ids (B, T), through autograd-capable ops only.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let x = self.hidden(input_ids)?;
        let w = self.p(self.params.len() - 1);
        let logits = if self.fused {
            super::fused::linear(&x, w, None)?
        } else {
            linear(&x, w, None)?
        };
        Ok(logits.reshape((b, t, self.config.vocab_size))?)
    }

    /// Final hidden states (B·T, H), after the final LayerNorm.
    fn hidden(&self, input_ids: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = input_ids.dims2()?;
        if t > c.max_position_embeddings {
            return Err(PretrainError::Config(format!(
                "sequence length {t} exceeds max_position_embeddings {}",
                c.max_position_embeddings
            )));
        }
        let h = c.hidden_size;
        let mut x = self
            .p(0)
            .index_select(&input_ids.flatten_all()?, 0)?
            .reshape((b * t, h))?;
        let mask = causal_mask(t, &self.device)?;
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        for l in 0..c.num_hidden_layers {
            let o = 1 + l * PER_LAYER;
            let ln1 = self.layer_norm(&x, self.p(o), self.p(o + 1))?;
            let ln2 = self.layer_norm(&x, self.p(o + 2), self.p(o + 3))?;
            let nh = c.num_attention_heads;
            let hd = c.head_dim();
            if self.fused {
                use super::fused::{add3, linear, linear_gelu};
                let (wq, bq) = (self.p(o + 4), self.p(o + 5));
                let attn = super::attention::qkv_causal_attention(
                    &ln1, wq, bq, &self.cos, &self.sin, nh, t,
                )?;
                let attn = linear(&attn, self.p(o + 6), Some(self.p(o + 7)))?;
                let m = linear_gelu(&ln2, self.p(o + 8), self.p(o + 9))?;
                let m = linear(&m, self.p(o + 10), Some(self.p(o + 11)))?;
                x = add3(&m, &attn, &x)?;
                continue;
            }
            // Attention.
            let qkv = linear(&ln1, self.p(o + 4), Some(self.p(o + 5)))?;
            let qkv = qkv.reshape((b, t, nh, 3 * hd))?;
            let head = |i: usize| -> candle_core::Result<Tensor> {
                qkv.narrow(3, i * hd, hd)?.transpose(1, 2)?.contiguous()
            };
            let q = rotary(&head(0)?, &cos, &sin, c.rotary_ndims())?;
            let k = rotary(&head(1)?, &cos, &sin, c.rotary_ndims())?;
            let v = head(2)?;
            let raw = q.matmul(&k.transpose(2, 3)?.contiguous()?)?;
            let scores = (raw / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let attn = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * t, h))?;
            let attn = linear(&attn, self.p(o + 6), Some(self.p(o + 7)))?;
            // MLP (parallel residual: both branches read x).
            let m = linear(&ln2, self.p(o + 8), Some(self.p(o + 9)))?.gelu_erf()?;
            let m = linear(&m, self.p(o + 10), Some(self.p(o + 11)))?;
            // HF's order of additions: mlp + attn + x.
            x = ((m + attn)? + x)?;
        }
        let n = self.params.len();
        Ok(self.layer_norm(&x, self.p(n - 3), self.p(n - 2))?)
    }

    /// Mean next-token cross-entropy of `targets` (B, T) given `inputs` (B, T).
    pub fn loss(&self, inputs: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let targets = targets.flatten_all()?;
        if self.fused {
            let x = self.hidden(inputs)?;
            let w = self.p(self.params.len() - 1);
            return Ok(super::fused::head_cross_entropy(&x, w, &targets)?);
        }
        let logits = self.forward(inputs)?;
        let (b, t, v) = logits.dims3()?;
        Ok(candle_nn::loss::cross_entropy(
            &logits.reshape((b * t, v))?,
            &targets,
        )?)
    }
}

/// `x Wᵀ + b` for x (N, in).
fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Two-pass LayerNorm over the last dimension (composite ops, so it has a backward pass).
fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xn.broadcast_mul(w)?.broadcast_add(b)
}

/// Additive causal mask (T, T): 0 on and below the diagonal, a large negative number above.
fn causal_mask(t: usize, device: &Device) -> candle_core::Result<Tensor> {
    let data: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
        .collect();
    Tensor::from_vec(data, (t, t), device)
}

/// HF GPT-NeoX rotary tables, built in f32 as HF builds them: inv_freq = 1/base^(2i/d), angles t·f,
/// duplicated halves (`cat(freqs, freqs)`).
fn rotary_tables(c: &GptNeoXConfig, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let d = c.rotary_ndims();
    let base = c.rope_theta as f32;
    let inv: Vec<f32> = (0..d / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / d as f32))
        .collect();
    let tmax = c.max_position_embeddings;
    let mut cos = Vec::with_capacity(tmax * d);
    let mut sin = Vec::with_capacity(tmax * d);
    for p in 0..tmax {
        for _half in 0..2 {
            for f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    Ok((
        Tensor::from_vec(cos, (tmax, d), device)?,
        Tensor::from_vec(sin, (tmax, d), device)?,
    ))
}

/// Rotary embedding on the first `rd` channels of x (B, H, T, hd): `x·cos + rotate_half(x)·sin`.
pub(crate) fn rotary(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    rd: usize,
) -> candle_core::Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
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

//! OLMo 2, with access to every layer's hidden states.
//!
//! Why not candle-transformers: as for OLMo 1, its model returns only last-position logits and keeps
//! the layers private.
//!
//! Architecture (HF `Olmo2ForCausalLM`), which differs from OLMo 1 in its norms:
//! - RMSNorm with a weight (eps `rms_norm_eps`, computed in f32) everywhere;
//! - q and k are RMS-normalised over the **whole projection** (all heads together, widths
//!   heads·head_dim and kv_heads·head_dim), before the heads are split and rotated;
//! - norms come **after** each sublayer: `x + post_attention_layernorm(attn(x))`, then
//!   `h + post_feedforward_layernorm(mlp(h))`; there is no pre-norm;
//! - final RMSNorm `model.norm`, head `lm_head` unless tied.
//!
//! Attention is grouped-query when `num_key_value_heads` < `num_attention_heads`; the MLP is SwiGLU.
//! The q, k and v projections are fused into one GEMM at load time.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{check_sizes, config_err, parse, resolve_rope, RopeParameters};
use crate::error::Result;
use crate::layers::{embed, Activation, Linear, RmsNorm};
use crate::model::{check_inputs, run_stack, Output, Request};
use crate::ops::{self, AttentionSpec, QkvLayout, RotaryTables};
use crate::weights::WeightSource;

/// `config.json` of an OLMo 2 checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Olmo2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub hidden_act: String,
    pub activation: Activation,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    /// Default 1e-5 (HF's default; released models set 1e-6).
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
}

#[derive(Deserialize)]
struct Raw {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_silu")]
    hidden_act: String,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    rope_theta: Option<f64>,
    rope_parameters: Option<RopeParameters>,
    rope_scaling: Option<RopeParameters>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
}

fn default_silu() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    2048
}
fn default_eps() -> f64 {
    1e-5
}

impl Olmo2Config {
    /// Parses a `config.json` value; `path` is used in messages.
    pub fn from_value(value: &Value, path: &Path) -> Result<Self> {
        let raw: Raw = parse(value, path)?;
        let (rope_theta, _) = resolve_rope(
            path,
            raw.rope_parameters,
            raw.rope_scaling,
            raw.rope_theta,
            Some(1.0),
            1.0,
        )?;
        let activation = Activation::from_hf(&raw.hidden_act).ok_or_else(|| {
            config_err(
                path,
                format!("unsupported hidden_act \"{}\"", raw.hidden_act),
            )
        })?;
        let heads = raw.num_attention_heads;
        let c = Olmo2Config {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(heads),
            head_dim: raw
                .head_dim
                .unwrap_or(raw.hidden_size.checked_div(heads).unwrap_or(0)),
            hidden_act: raw.hidden_act,
            activation,
            max_position_embeddings: raw.max_position_embeddings,
            rope_theta,
            rms_norm_eps: raw.rms_norm_eps,
            tie_word_embeddings: raw.tie_word_embeddings,
            attention_bias: raw.attention_bias,
        };
        check_sizes(
            path,
            &[
                ("vocab_size", c.vocab_size),
                ("hidden_size", c.hidden_size),
                ("num_hidden_layers", c.num_hidden_layers),
                ("intermediate_size", c.intermediate_size),
                ("num_attention_heads", c.num_attention_heads),
                ("head_dim", c.head_dim),
                ("max_position_embeddings", c.max_position_embeddings),
            ],
            c.num_attention_heads,
            c.num_key_value_heads,
        )?;
        if c.head_dim % 2 != 0 {
            return Err(config_err(
                path,
                format!("head dim {} must be even for rotary embeddings", c.head_dim),
            ));
        }
        Ok(c)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    /// Fused [q; k; v].
    qkv: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    o_proj: Linear,
    /// Fused [up; gate].
    up_gate: Linear,
    down_proj: Linear,
    post_attention_layernorm: RmsNorm,
    post_feedforward_layernorm: RmsNorm,
}

/// An OLMo 2 model, built from any [`WeightSource`].
#[derive(Debug, Clone)]
pub struct Olmo2 {
    config: Olmo2Config,
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: RotaryTables,
    spec: AttentionSpec,
    dtype: DType,
    device: Device,
}

impl Olmo2 {
    /// Builds the model from tensors named as in HF (`model.*`, `lm_head`).
    pub fn load(config: &Olmo2Config, w: &dyn WeightSource) -> Result<Self> {
        let c = config;
        let h = c.hidden_size;
        let q_dim = c.num_attention_heads * c.head_dim;
        let kv_dim = c.num_key_value_heads * c.head_dim;
        let inter = c.intermediate_size;
        let eps = c.rms_norm_eps;
        let lin = |name: String, din: usize, dout: usize, bias: bool| {
            Linear::load(w, &name, din, dout, bias)
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = Self::layer_prefix(i);
            let bias = c.attention_bias;
            let q = lin(format!("{p}.self_attn.q_proj"), h, q_dim, bias)?;
            let k = lin(format!("{p}.self_attn.k_proj"), h, kv_dim, bias)?;
            let v = lin(format!("{p}.self_attn.v_proj"), h, kv_dim, bias)?;
            let up = lin(format!("{p}.mlp.up_proj"), h, inter, false)?;
            let gate = lin(format!("{p}.mlp.gate_proj"), h, inter, false)?;
            let norm = |name: &str, size: usize| {
                RmsNorm::load(w, &format!("{p}.{name}.weight"), size, eps)
            };
            layers.push(Layer {
                qkv: Linear::cat(vec![q, k, v])?,
                q_norm: norm("self_attn.q_norm", q_dim)?,
                k_norm: norm("self_attn.k_norm", kv_dim)?,
                o_proj: lin(format!("{p}.self_attn.o_proj"), q_dim, h, bias)?,
                up_gate: Linear::cat(vec![up, gate])?,
                down_proj: lin(format!("{p}.mlp.down_proj"), inter, h, false)?,
                post_attention_layernorm: norm("post_attention_layernorm", h)?,
                post_feedforward_layernorm: norm("post_feedforward_layernorm", h)?,
            });
        }
        let embed_tokens = w.get("model.embed_tokens.weight", &[c.vocab_size, h], w.dtype())?;
        let lm_head = if c.tie_word_embeddings {
            Linear::tied(embed_tokens.clone())
        } else {
            lin("lm_head".into(), h, c.vocab_size, false)?
        };
        Ok(Olmo2 {
            config: c.clone(),
            embed_tokens,
            layers,
            norm: RmsNorm::load(w, "model.norm.weight", h, eps)?,
            lm_head,
            rotary: RotaryTables::new(c.head_dim, c.rope_theta, c.max_position_embeddings)?,
            spec: AttentionSpec {
                heads: c.num_attention_heads,
                kv_heads: c.num_key_value_heads,
                head_dim: c.head_dim,
                layout: QkvLayout::Blocks,
            },
            dtype: w.dtype(),
            device: w.device().clone(),
        })
    }

    /// HF name prefix of block `i`.
    pub fn layer_prefix(i: usize) -> String {
        format!("model.layers.{i}")
    }

    pub fn config(&self) -> &Olmo2Config {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// q and k are RMS-normalised over the whole projection before the heads are split and rotated.
    fn attention(&self, layer: &Layer, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (q_dim, kv_dim) = (
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
        );
        let qkv = layer.qkv.forward(x)?;
        let q = layer.q_norm.forward(&qkv.narrow(2, 0, q_dim)?)?;
        let k = layer.k_norm.forward(&qkv.narrow(2, q_dim, kv_dim)?)?;
        let v = qkv.narrow(2, q_dim + kv_dim, kv_dim)?;
        let qkv = Tensor::cat(&[&q, &k, &v], 2)?;
        let out = ops::attention(&qkv, &self.spec, &self.rotary)?;
        Ok(layer.o_proj.forward(&out)?)
    }

    fn mlp(&self, layer: &Layer, x: &Tensor) -> Result<Tensor> {
        let ug = layer.up_gate.forward(x)?;
        let h = if self.config.activation == Activation::Silu {
            ops::swiglu(&ug)?
        } else {
            let inter = self.config.intermediate_size;
            let up = ug.narrow(2, 0, inter)?;
            let gate = ug.narrow(2, inter, inter)?;
            (self.config.activation.apply(&gate)? * up)?
        };
        Ok(layer.down_proj.forward(&h)?)
    }

    fn layer_forward(&self, layer: &Layer, x: &Tensor) -> Result<Tensor> {
        let attn = layer
            .post_attention_layernorm
            .forward(&self.attention(layer, x)?)?;
        let h = (x + attn)?;
        let mlp = layer
            .post_feedforward_layernorm
            .forward(&self.mlp(layer, &h)?)?;
        Ok((h + mlp)?)
    }

    /// Runs right-padded token ids (B, T) and returns the requested hidden states and logits.
    pub fn forward(&self, input_ids: &Tensor, request: &Request) -> Result<Output> {
        let c = &self.config;
        check_inputs(
            input_ids,
            request,
            c.num_hidden_layers,
            c.vocab_size,
            c.max_position_embeddings,
        )?;
        let x = embed(&self.embed_tokens, input_ids)?;
        self.forward_from(x, 0, request)
    }

    /// Runs the stack from hidden state `start` (0 = embeddings), given that state (B, T, H).
    pub fn forward_from(&self, x: Tensor, start: usize, request: &Request) -> Result<Output> {
        run_stack(
            x,
            start,
            &self.layers,
            |layer, x| self.layer_forward(layer, x),
            |x| Ok(self.norm.forward(x)?),
            |x| Ok(self.lm_head.forward(x)?),
            request,
        )
    }
}

//! Llama and OLMo 2: one decoder of RMSNorm, SwiGLU and grouped-query rotary attention, with access
//! to every layer's hidden states.
//!
//! Why not candle-transformers: its models return only last-position logits and keep the layers
//! private. Why one file for two architectures: OLMo 2 is the Llama block with its norms moved, so
//! both are one forward pass with a [`LlamaVariant`] switch (the project writes a forward pass once).
//!
//! Shared (HF `LlamaForCausalLM`, `Olmo2ForCausalLM`): token embedding `model.embed_tokens`; per
//! block `model.layers.{i}` the projections `self_attn.{q,k,v,o}_proj` (biases when
//! `attention_bias`) and `mlp.{gate,up,down}_proj` (biases when `mlp_bias`, Llama only), attention
//! grouped-query when `num_key_value_heads` < `num_attention_heads`, head width `head_dim` (default
//! hidden / heads), full-width rotary with base `rope_theta` and optional scaling ([`RopeScaling`]:
//! `linear`, `llama3`), SwiGLU MLP `down(silu(gate x) · up x)`; RMSNorm with an f32 weight computed
//! in f32; final RMSNorm `model.norm`; head `lm_head`, or the embedding when `tie_word_embeddings`.
//!
//! Where they differ:
//! - Llama is pre-norm: `h = x + attn(input_layernorm(x))`, `h + mlp(post_attention_layernorm(h))`.
//! - OLMo 2 is post-norm: `h = x + post_attention_layernorm(attn(x))`,
//!   `h + post_feedforward_layernorm(mlp(h))`; and q and k are RMS-normalised over the **whole
//!   projection** (all heads together, widths heads·head_dim and kv_heads·head_dim) before the heads
//!   are split and rotated.
//!
//! The q, k and v projections are fused into one GEMM at load time (up and gate likewise), which is
//! exact; Llama's attention then runs through the op that projects inside (as GPT-NeoX's does).
//!
//! Config keys outside what this implements are errors naming the key: another `rope_type`
//! (`dynamic`, `yarn`, …), a partial rotary fraction, sliding-window attention.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

use crate::config_keys::{
    check_sizes, config_err, parse, resolve_scaled_rope, RopeKeys, RopeParameters,
};
use crate::error::{LmError, Result};
use crate::layers::{embed, Activation, Linear, RmsNorm};
use crate::ops::{self, AttentionSpec, QkvLayout, RopeScaling, RotaryTables};
use crate::stack::{at_rows, check_inputs, run_stack, LayerRun, Output, Request};
use crate::weights::WeightSource;

/// Which member of the family a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlamaVariant {
    /// `model_type = "llama"` (Llama 1–3, TinyLlama, SmolLM, LLM360 Amber): pre-norm blocks.
    Llama,
    /// `model_type = "olmo2"`: post-norm blocks with q/k norms.
    Olmo2,
}

impl LlamaVariant {
    /// `model_type` in config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            LlamaVariant::Llama => "llama",
            LlamaVariant::Olmo2 => "olmo2",
        }
    }
}

/// `config.json` of a Llama or OLMo 2 checkpoint, with rotary settings resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub variant: LlamaVariant,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Default `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Default hidden_size / num_attention_heads.
    pub head_dim: usize,
    pub hidden_act: String,
    pub activation: Activation,
    /// Default 2048.
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// Default 1e-6 (Llama) or 1e-5 (OLMo 2), HF's defaults.
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    /// Biases on q, k, v and o.
    pub attention_bias: bool,
    /// Biases on gate, up and down (Llama only; OLMo 2 has none).
    pub mlp_bias: bool,
}

/// OLMo 2's config is the Llama config with [`LlamaVariant::Olmo2`].
pub type Olmo2Config = LlamaConfig;

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
    original_max_position_embeddings: Option<f64>,
    rms_norm_eps: Option<f64>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    sliding_window: Option<Value>,
    use_sliding_window: Option<bool>,
}

fn default_silu() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    2048
}

impl LlamaConfig {
    /// Parses a `config.json` value of the given variant; `path` is used in messages.
    pub fn from_value(value: &Value, path: &Path, variant: LlamaVariant) -> Result<Self> {
        let raw: Raw = parse(value, path)?;
        let sliding = raw.sliding_window.as_ref().is_some_and(|v| !v.is_null());
        if sliding && raw.use_sliding_window != Some(false) {
            return Err(LmError::Unsupported {
                path: path.to_path_buf(),
                what: "`sliding_window` (sliding-window attention is not implemented)".into(),
            });
        }
        let rope = resolve_scaled_rope(
            path,
            RopeKeys {
                rope_parameters: raw.rope_parameters,
                rope_scaling: raw.rope_scaling,
                theta: raw.rope_theta,
                partial: None,
                original_max_position_embeddings: raw.original_max_position_embeddings,
            },
            1.0,
            raw.max_position_embeddings,
        )?;
        if rope.partial != 1.0 {
            return Err(LmError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "`partial_rotary_factor` {} (this architecture rotates whole heads)",
                    rope.partial
                ),
            });
        }
        let activation = Activation::from_hf(&raw.hidden_act).ok_or_else(|| {
            config_err(
                path,
                format!("unsupported hidden_act \"{}\"", raw.hidden_act),
            )
        })?;
        let heads = raw.num_attention_heads;
        let default_eps = match variant {
            LlamaVariant::Llama => 1e-6,
            LlamaVariant::Olmo2 => 1e-5,
        };
        let c = LlamaConfig {
            variant,
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
            rope_theta: rope.theta,
            rope_scaling: rope.scaling,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(default_eps),
            tie_word_embeddings: raw.tie_word_embeddings,
            attention_bias: raw.attention_bias,
            // HF's OLMo 2 has no MLP biases whatever the config says.
            mlp_bias: raw.mlp_bias && variant == LlamaVariant::Llama,
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
                format!(
                    "`head_dim` {} must be even for rotary embeddings",
                    c.head_dim
                ),
            ));
        }
        if !(c.rms_norm_eps.is_finite() && c.rms_norm_eps > 0.0) {
            return Err(config_err(
                path,
                format!("`rms_norm_eps` must be positive, got {}", c.rms_norm_eps),
            ));
        }
        Ok(c)
    }

    /// One-line human summary.
    pub fn describe(&self) -> String {
        let name = match self.variant {
            LlamaVariant::Llama => "Llama",
            LlamaVariant::Olmo2 => "OLMo 2",
        };
        let scaling = match self.rope_scaling {
            RopeScaling::None => String::new(),
            RopeScaling::Linear { factor } => format!(" (linear scaling ×{factor})"),
            RopeScaling::Llama3 {
                factor,
                original_max_position_embeddings,
                ..
            } => format!(" (llama3 scaling ×{factor} from {original_max_position_embeddings})"),
        };
        format!(
            "{name}: {} layers, hidden {}, {} heads ({} KV, head dim {}), MLP {}, vocab {}, context {}, \
             rope base {}{scaling}, RMSNorm eps {}, {} output embedding",
            self.num_hidden_layers,
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
            self.intermediate_size,
            self.vocab_size,
            self.max_position_embeddings,
            self.rope_theta,
            self.rms_norm_eps,
            if self.tie_word_embeddings { "tied" } else { "untied" },
        )
    }
}

#[derive(Debug, Clone)]
struct Layer {
    /// Fused [q; k; v].
    qkv: Linear,
    /// OLMo 2's q and k norms.
    qk_norms: Option<(RmsNorm, RmsNorm)>,
    o_proj: Linear,
    /// Fused [up; gate].
    up_gate: Linear,
    down_proj: Linear,
    /// Llama: `input_layernorm`, before attention; OLMo 2: `post_attention_layernorm`, after it.
    attn_norm: RmsNorm,
    /// Llama: `post_attention_layernorm`, before the MLP; OLMo 2: `post_feedforward_layernorm`.
    mlp_norm: RmsNorm,
}

/// A Llama or OLMo 2 model, built from any [`WeightSource`].
#[derive(Debug, Clone)]
pub struct Llama {
    config: LlamaConfig,
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: RotaryTables,
    spec: AttentionSpec,
    dtype: DType,
    device: Device,
}

/// OLMo 2 is [`Llama`] with [`LlamaVariant::Olmo2`].
pub type Olmo2 = Llama;

impl Llama {
    /// Builds the model from tensors named as in HF (`model.*`, `lm_head`).
    pub fn load(config: &LlamaConfig, w: &dyn WeightSource) -> Result<Self> {
        let c = config;
        let h = c.hidden_size;
        let q_dim = c.num_attention_heads * c.head_dim;
        let kv_dim = c.num_key_value_heads * c.head_dim;
        let inter = c.intermediate_size;
        let eps = c.rms_norm_eps;
        let lin = |name: String, din: usize, dout: usize, bias: bool| {
            Linear::load(w, &name, din, dout, bias)
        };
        let (attn_norm, mlp_norm) = match c.variant {
            LlamaVariant::Llama => ("input_layernorm", "post_attention_layernorm"),
            LlamaVariant::Olmo2 => ("post_attention_layernorm", "post_feedforward_layernorm"),
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = Self::layer_prefix(i);
            let (ab, mb) = (c.attention_bias, c.mlp_bias);
            let q = lin(format!("{p}.self_attn.q_proj"), h, q_dim, ab)?;
            let k = lin(format!("{p}.self_attn.k_proj"), h, kv_dim, ab)?;
            let v = lin(format!("{p}.self_attn.v_proj"), h, kv_dim, ab)?;
            let up = lin(format!("{p}.mlp.up_proj"), h, inter, mb)?;
            let gate = lin(format!("{p}.mlp.gate_proj"), h, inter, mb)?;
            let norm = |name: &str, size: usize| {
                RmsNorm::load(w, &format!("{p}.{name}.weight"), size, eps)
            };
            let qk_norms = match c.variant {
                LlamaVariant::Llama => None,
                LlamaVariant::Olmo2 => Some((
                    norm("self_attn.q_norm", q_dim)?,
                    norm("self_attn.k_norm", kv_dim)?,
                )),
            };
            layers.push(Layer {
                qkv: Linear::cat(vec![q, k, v])?,
                qk_norms,
                o_proj: lin(format!("{p}.self_attn.o_proj"), q_dim, h, ab)?,
                up_gate: Linear::cat(vec![up, gate])?,
                down_proj: lin(format!("{p}.mlp.down_proj"), inter, h, mb)?,
                attn_norm: norm(attn_norm, h)?,
                mlp_norm: norm(mlp_norm, h)?,
            });
        }
        let embed_tokens = w.get("model.embed_tokens.weight", &[c.vocab_size, h], w.dtype())?;
        let lm_head = if c.tie_word_embeddings {
            Linear::tied(embed_tokens.clone())
        } else {
            lin("lm_head".into(), h, c.vocab_size, false)?
        };
        Ok(Llama {
            config: c.clone(),
            embed_tokens,
            layers,
            norm: RmsNorm::load(w, "model.norm.weight", h, eps)?,
            lm_head,
            rotary: RotaryTables::scaled(
                c.head_dim,
                c.rope_theta,
                c.rope_scaling,
                c.max_position_embeddings,
            )?,
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

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Attention at every position, or at `rows` only ([`at_rows`]).
    fn attention(&self, layer: &Layer, x: &Tensor, rows: Option<&Tensor>) -> Result<Tensor> {
        let out = match &layer.qk_norms {
            None => layer.qkv.attention(x, &self.spec, &self.rotary)?,
            Some((q_norm, k_norm)) => {
                let c = &self.config;
                let (q_dim, kv_dim) = (
                    c.num_attention_heads * c.head_dim,
                    c.num_key_value_heads * c.head_dim,
                );
                let qkv = layer.qkv.forward(x)?;
                let q = q_norm.forward(&qkv.narrow(2, 0, q_dim)?)?;
                let k = k_norm.forward(&qkv.narrow(2, q_dim, kv_dim)?)?;
                let v = qkv.narrow(2, q_dim + kv_dim, kv_dim)?;
                let qkv = Tensor::cat(&[&q, &k, &v], 2)?;
                ops::attention(&qkv, &self.spec, &self.rotary)?
            }
        };
        Ok(layer.o_proj.forward(&at_rows(&out, rows)?)?)
    }

    fn mlp(&self, layer: &Layer, x: &Tensor, gradient_only: bool) -> Result<Tensor> {
        let ug = layer.up_gate.forward(x)?;
        let h = if self.config.activation == Activation::Silu {
            ops::swiglu(&ug)?
        } else {
            let inter = self.config.intermediate_size;
            let up = ug.narrow(2, 0, inter)?;
            let gate = ug.narrow(2, inter, inter)?;
            (self.config.activation.apply(&gate)? * up)?
        };
        Ok(layer
            .down_proj
            .forward_maybe_for_gradient(&h, gradient_only)?)
    }

    /// One block. Under `run.gradient_only` Llama's MLP output projection skips its values;
    /// OLMo 2's does not (the norm after it reads them).
    fn layer_forward(&self, layer: &Layer, x: &Tensor, run: LayerRun<'_>) -> Result<Tensor> {
        match self.config.variant {
            LlamaVariant::Llama => {
                let attn = self.attention(layer, &layer.attn_norm.forward(x)?, run.rows)?;
                let h = (at_rows(x, run.rows)? + attn)?;
                let mlp = self.mlp(layer, &layer.mlp_norm.forward(&h)?, run.gradient_only)?;
                Ok((h + mlp)?)
            }
            LlamaVariant::Olmo2 => {
                let attn = layer
                    .attn_norm
                    .forward(&self.attention(layer, x, run.rows)?)?;
                let h = (at_rows(x, run.rows)? + attn)?;
                let mlp = layer.mlp_norm.forward(&self.mlp(layer, &h, false)?)?;
                Ok((h + mlp)?)
            }
        }
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
            |layer, x, run| self.layer_forward(layer, x, run),
            |x| Ok(self.norm.forward(x)?),
            |x| Ok(self.lm_head.forward(x)?),
            request,
        )
    }
}

//! OLMo 1, with access to every layer's hidden states.
//!
//! Why not candle-transformers: its OLMo returns only last-position logits and keeps its layers
//! private, and it reads only HF-native names; the checkpoint lab needs every layer, and the original
//! OLMo repositories (e.g. `allenai/OLMo-1B`, whose intermediate checkpoints are `stepN-tokensNB`
//! branches) use AI2's `hf_olmo` layout.
//!
//! Architecture (HF `OlmoForCausalLM`): pre-norm blocks with a **non-parametric** LayerNorm (no weight,
//! no bias, eps 1e-5, computed in f32), attention with optional clipping of q, k and v to
//! ±`clip_qkv`, full-width rotary embedding, SwiGLU MLP `down(silu(gate(x)) · up(x))`, a final
//! non-parametric LayerNorm, and an output head that is tied to the embedding when
//! `tie_word_embeddings` (AI2: `weight_tying`).
//!
//! Two weight layouts are read, told apart by the config (`d_model` present → AI2):
//! - HF-native: `model.layers.{i}.self_attn.{q,k,v,o}_proj`, `model.layers.{i}.mlp.{gate,up,down}_proj`,
//!   `model.embed_tokens`, `lm_head`.
//! - AI2 `hf_olmo`: `model.transformer.blocks.{i}.att_proj` (q, k and v stacked as three blocks, not
//!   interleaved), `attn_out`, `ff_proj` (the **up** projection first, then the gate: AI2's SwiGLU is
//!   `x, gate = chunk(2); silu(gate) · x`), `ff_out`, `model.transformer.wte`, and
//!   `model.transformer.ff_out` for an untied head. The `model.` prefix is optional.
//!
//! Either way the projections are fused at load time (q/k/v into one GEMM, up/gate into one), which
//! is exact: clipping is elementwise and the split happens after the GEMM.
//!
//! AI2 configs outside what the released OLMo 1 models use (ALiBi, no RoPE, parametric or RMS norms,
//! biases, q/k norms, parallel blocks, non-SwiGLU MLPs) are reported as unsupported.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

use crate::config_keys::{check_sizes, config_err, parse, resolve_rope, RopeParameters};
use crate::error::{LmError, Result};
use crate::layers::{embed, Activation, LayerNorm, Linear};
use crate::ops::{self, AttentionSpec, QkvLayout, RotaryTables};
use crate::stack::{at_rows, check_inputs, run_stack, LayerRun, Output, Request};
use crate::weights::WeightSource;

/// Which tensor names the checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OlmoLayout {
    /// HF-native names (`OlmoForCausalLM`, the `-hf` repositories).
    Hf,
    /// AI2's `hf_olmo` names (`OLMoForCausalLM`, fused `att_proj` / `ff_proj`).
    Ai2,
}

/// OLMo 1 hyper-parameters, from either config form.
#[derive(Debug, Clone, PartialEq)]
pub struct OlmoConfig {
    pub layout: OlmoLayout,
    /// Rows of the embedding (AI2: `embedding_size` if given, else `vocab_size`).
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// SwiGLU width (AI2: `mlp_hidden_size / 2` or `d_model · mlp_ratio / 2`).
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub hidden_act: String,
    pub activation: Activation,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub clip_qkv: Option<f64>,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
}

#[derive(Deserialize)]
struct RawHf {
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
    clip_qkv: Option<f64>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
}

/// AI2 `hf_olmo` config; defaults are those of AI2's `ModelConfig`.
#[derive(Deserialize)]
struct RawAi2 {
    d_model: usize,
    n_heads: usize,
    n_layers: usize,
    vocab_size: usize,
    n_kv_heads: Option<usize>,
    #[serde(default)]
    multi_query_attention: bool,
    embedding_size: Option<usize>,
    #[serde(default = "default_mlp_ratio")]
    mlp_ratio: usize,
    mlp_hidden_size: Option<usize>,
    #[serde(default = "default_max_seq")]
    max_sequence_length: usize,
    #[serde(default = "default_true")]
    weight_tying: bool,
    #[serde(default = "default_true")]
    include_bias: bool,
    #[serde(default)]
    rope: bool,
    #[serde(default)]
    alibi: bool,
    #[serde(default = "default_theta")]
    rope_theta: f64,
    clip_qkv: Option<f64>,
    #[serde(default = "default_swiglu")]
    activation_type: String,
    #[serde(default = "default_sequential")]
    block_type: String,
    #[serde(default = "default_ln_type")]
    layer_norm_type: String,
    #[serde(default = "default_true")]
    layer_norm_with_affine: bool,
    #[serde(default)]
    attention_layer_norm: bool,
    #[serde(default)]
    scale_logits: bool,
}

fn default_silu() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    2048
}
fn default_mlp_ratio() -> usize {
    4
}
fn default_max_seq() -> usize {
    1024
}
fn default_true() -> bool {
    true
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_swiglu() -> String {
    "swiglu".into()
}
fn default_sequential() -> String {
    "sequential".into()
}
fn default_ln_type() -> String {
    "default".into()
}

impl OlmoConfig {
    /// Parses a `config.json` value of either form; `path` is used in messages.
    pub fn from_value(value: &Value, path: &Path) -> Result<Self> {
        let c = if value.get("d_model").is_some() {
            Self::from_ai2(parse(value, path)?, path)?
        } else {
            Self::from_hf(parse(value, path)?, path)?
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

    fn from_hf(raw: RawHf, path: &Path) -> Result<Self> {
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
        Ok(OlmoConfig {
            layout: OlmoLayout::Hf,
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
            clip_qkv: raw.clip_qkv,
            tie_word_embeddings: raw.tie_word_embeddings,
            attention_bias: raw.attention_bias,
        })
    }

    fn from_ai2(raw: RawAi2, path: &Path) -> Result<Self> {
        let unsupported = |what: String| LmError::Unsupported {
            path: path.to_path_buf(),
            what,
        };
        if raw.alibi || !raw.rope {
            return Err(unsupported(
                "AI2 OLMo without rotary embeddings (`rope` false or `alibi` true)".into(),
            ));
        }
        if raw.activation_type != "swiglu" {
            return Err(unsupported(format!(
                "activation_type \"{}\"",
                raw.activation_type
            )));
        }
        if raw.block_type != "sequential" {
            return Err(unsupported(format!("block_type \"{}\"", raw.block_type)));
        }
        // "low_precision" is the same LayerNorm run under autocast.
        if !matches!(raw.layer_norm_type.as_str(), "default" | "low_precision")
            || raw.layer_norm_with_affine
        {
            return Err(unsupported(format!(
                "layer norm \"{}\" with affine = {} (only the non-parametric LayerNorm is implemented)",
                raw.layer_norm_type, raw.layer_norm_with_affine
            )));
        }
        if raw.include_bias {
            return Err(unsupported("include_bias = true".into()));
        }
        if raw.attention_layer_norm {
            return Err(unsupported("attention_layer_norm = true".into()));
        }
        if raw.scale_logits {
            return Err(unsupported("scale_logits = true".into()));
        }
        let kv = match (raw.n_kv_heads, raw.multi_query_attention) {
            (Some(n), _) => n,
            (None, true) => 1,
            (None, false) => raw.n_heads,
        };
        let mlp_hidden = raw.mlp_hidden_size.unwrap_or(raw.d_model * raw.mlp_ratio);
        if mlp_hidden % 2 != 0 {
            return Err(config_err(
                path,
                format!("SwiGLU hidden size {mlp_hidden} must be even"),
            ));
        }
        Ok(OlmoConfig {
            layout: OlmoLayout::Ai2,
            vocab_size: raw.embedding_size.unwrap_or(raw.vocab_size),
            hidden_size: raw.d_model,
            intermediate_size: mlp_hidden / 2,
            num_hidden_layers: raw.n_layers,
            num_attention_heads: raw.n_heads,
            num_key_value_heads: kv,
            head_dim: raw.d_model.checked_div(raw.n_heads).unwrap_or(0),
            hidden_act: "silu".into(),
            activation: Activation::Silu,
            max_position_embeddings: raw.max_sequence_length,
            rope_theta: raw.rope_theta,
            clip_qkv: raw.clip_qkv,
            tie_word_embeddings: raw.weight_tying,
            attention_bias: false,
        })
    }
}

#[derive(Debug, Clone)]
struct Layer {
    /// Fused [q; k; v].
    qkv: Linear,
    o_proj: Linear,
    /// Fused [up; gate].
    up_gate: Linear,
    down_proj: Linear,
}

/// An OLMo 1 model, built from any [`WeightSource`].
#[derive(Debug, Clone)]
pub struct Olmo {
    config: OlmoConfig,
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: LayerNorm,
    lm_head: Linear,
    rotary: RotaryTables,
    spec: AttentionSpec,
    dtype: DType,
    device: Device,
}

impl Olmo {
    /// Builds the model from tensors named in the layout the config names.
    pub fn load(config: &OlmoConfig, w: &dyn WeightSource) -> Result<Self> {
        let c = config;
        let h = c.hidden_size;
        let q_dim = c.num_attention_heads * c.head_dim;
        let kv_dim = c.num_key_value_heads * c.head_dim;
        let inter = c.intermediate_size;
        let lin = |name: &str, din: usize, dout: usize, bias: bool| {
            Linear::load(w, name, din, dout, bias)
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        let dtype = w.dtype();
        let (embed_tokens, lm_head) = match c.layout {
            OlmoLayout::Hf => {
                let bias = c.attention_bias;
                for i in 0..c.num_hidden_layers {
                    let p = Self::layer_prefix(c, w, i);
                    let q = lin(&format!("{p}.self_attn.q_proj"), h, q_dim, bias)?;
                    let k = lin(&format!("{p}.self_attn.k_proj"), h, kv_dim, bias)?;
                    let v = lin(&format!("{p}.self_attn.v_proj"), h, kv_dim, bias)?;
                    let up = lin(&format!("{p}.mlp.up_proj"), h, inter, false)?;
                    let gate = lin(&format!("{p}.mlp.gate_proj"), h, inter, false)?;
                    layers.push(Layer {
                        qkv: Linear::cat(vec![q, k, v])?,
                        o_proj: lin(&format!("{p}.self_attn.o_proj"), q_dim, h, bias)?,
                        up_gate: Linear::cat(vec![up, gate])?,
                        down_proj: lin(&format!("{p}.mlp.down_proj"), inter, h, false)?,
                    });
                }
                let embed = w.get("model.embed_tokens.weight", &[c.vocab_size, h], dtype)?;
                let head = if c.tie_word_embeddings {
                    Linear::tied(embed.clone())
                } else {
                    lin("lm_head", h, c.vocab_size, false)?
                };
                (embed, head)
            }
            OlmoLayout::Ai2 => {
                let prefix = ai2_prefix(w);
                for i in 0..c.num_hidden_layers {
                    let p = Self::layer_prefix(c, w, i);
                    layers.push(Layer {
                        qkv: lin(&format!("{p}.att_proj"), h, q_dim + 2 * kv_dim, false)?,
                        o_proj: lin(&format!("{p}.attn_out"), q_dim, h, false)?,
                        up_gate: lin(&format!("{p}.ff_proj"), h, 2 * inter, false)?,
                        down_proj: lin(&format!("{p}.ff_out"), inter, h, false)?,
                    });
                }
                let embed = w.get(&format!("{prefix}.wte.weight"), &[c.vocab_size, h], dtype)?;
                let head = if c.tie_word_embeddings {
                    Linear::tied(embed.clone())
                } else {
                    lin(&format!("{prefix}.ff_out"), h, c.vocab_size, false)?
                };
                (embed, head)
            }
        };
        Ok(Olmo {
            config: c.clone(),
            embed_tokens,
            layers,
            norm: LayerNorm::plain(w, h, 1e-5)?,
            lm_head,
            rotary: RotaryTables::new(c.head_dim, c.rope_theta, c.max_position_embeddings)?,
            spec: AttentionSpec {
                heads: c.num_attention_heads,
                kv_heads: c.num_key_value_heads,
                head_dim: c.head_dim,
                layout: QkvLayout::Blocks,
            },
            dtype,
            device: w.device().clone(),
        })
    }

    /// HF name prefix of block `i` in the layout of the config (and, for AI2's layout, of the
    /// weights: the `model.` prefix is optional there).
    pub fn layer_prefix(c: &OlmoConfig, w: &dyn WeightSource, i: usize) -> String {
        match c.layout {
            OlmoLayout::Hf => format!("model.layers.{i}"),
            OlmoLayout::Ai2 => format!("{}.blocks.{i}", ai2_prefix(w)),
        }
    }

    pub fn config(&self) -> &OlmoConfig {
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
        let mut qkv = layer.qkv.forward(x)?;
        if let Some(clip) = self.config.clip_qkv {
            qkv = qkv.clamp(-clip, clip)?;
        }
        let out = ops::attention(&qkv, &self.spec, &self.rotary)?;
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

    /// One block; under `run.gradient_only` the MLP's output projection skips its values (the
    /// attention output feeds the second norm).
    fn layer_forward(&self, layer: &Layer, x: &Tensor, run: LayerRun<'_>) -> Result<Tensor> {
        let attn = self.attention(layer, &self.norm.forward(x)?, run.rows)?;
        let a = (at_rows(x, run.rows)? + attn)?;
        Ok((&a + self.mlp(layer, &self.norm.forward(&a)?, run.gradient_only)?)?)
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

/// AI2's `hf_olmo` names start with `model.transformer` or, in some exports, `transformer`.
fn ai2_prefix(w: &dyn WeightSource) -> &'static str {
    if w.contains("transformer.wte.weight") {
        "transformer"
    } else {
        "model.transformer"
    }
}

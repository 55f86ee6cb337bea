//! GPT-NeoX as the Pythia suite uses it, with access to every layer's hidden states.
//!
//! Architecture (HF `GPTNeoXForCausalLM`): token embedding `gpt_neox.embed_in`, then per layer
//! `h = LN₁(x)`, attention with a fused `query_key_value` projection, rotary embedding on the first
//! `rotary_pct · head_dim` channels of each head, and a GELU MLP; the residual is either parallel
//! (`x + attn(LN₁ x) + mlp(LN₂ x)`, all Pythia models) or sequential (`a = x + attn(LN₁ x)`,
//! `a + mlp(LN₂ a)`); a final LayerNorm; an untied output embedding `embed_out` (HF 5 also accepts
//! `lm_head`; a tied config reuses `embed_in`).
//!
//! Edge cases that silently give wrong features if missed:
//! - The fused QKV output is interleaved **per head**: viewed as (B, T, H, 3·head_dim), each head's
//!   slice is [q | k | v]. It is not three (hidden)-sized blocks.
//! - The rotary fraction is `int(head_dim · rotary_pct)` channels (HF truncates), base
//!   `rotary_emb_base`; Pythia uses 0.25 and 10000.
//! - v0 Pythia configs have no `use_parallel_residual`: HF defaults it to true, and so does this file.
//! - The config may use the classic keys (`rotary_pct`, `rotary_emb_base`) or `transformers` 5's
//!   `rope_parameters` (`partial_rotary_factor`, `rope_theta`); see [`crate::config`].
//! - Old `pytorch_model.bin` files also hold `attention.bias`, `attention.masked_bias` and
//!   `rotary_emb.inv_freq` buffers; they are ignored (the mask and the frequencies are recomputed).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

use crate::config_keys::{check_sizes, config_err, parse, resolve_rope, RopeParameters};
use crate::error::Result;
use crate::layers::{embed, Activation, LayerNorm, Linear};
use crate::ops::{self, AttentionSpec, QkvLayout, RotaryTables};
use crate::stack::{at_rows, check_inputs, run_stack, LayerRun, Output, Request};
use crate::weights::WeightSource;

/// `config.json` of a GPT-NeoX checkpoint, with rotary settings resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct GptNeoXConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// HF `hidden_act` (default `gelu`, the exact erf GELU).
    pub hidden_act: String,
    pub activation: Activation,
    /// Default 2048.
    pub max_position_embeddings: usize,
    /// Default 1e-5.
    pub layer_norm_eps: f64,
    /// Default true (v0 Pythia configs lack the key).
    pub use_parallel_residual: bool,
    /// Default false.
    pub tie_word_embeddings: bool,
    /// Biases on the attention projections (default true).
    pub attention_bias: bool,
    /// Fraction of each head's channels that are rotated (`rotary_pct` / `partial_rotary_factor`;
    /// default 0.25 as in HF).
    pub rotary_pct: f64,
    /// Rotary base (`rotary_emb_base` / `rope_theta`; default 10000).
    pub rope_theta: f64,
}

#[derive(Deserialize)]
struct Raw {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_true")]
    use_parallel_residual: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "default_true")]
    attention_bias: bool,
    rotary_pct: Option<f64>,
    rotary_emb_base: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<RopeParameters>,
    rope_scaling: Option<RopeParameters>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_max_pos() -> usize {
    2048
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

impl GptNeoXConfig {
    /// Parses a `config.json` value; `path` is used in messages.
    pub fn from_value(value: &Value, path: &Path) -> Result<Self> {
        let raw: Raw = parse(value, path)?;
        let (rope_theta, rotary_pct) = resolve_rope(
            path,
            raw.rope_parameters,
            raw.rope_scaling,
            raw.rotary_emb_base.or(raw.rope_theta),
            raw.rotary_pct,
            0.25,
        )?;
        let activation = Activation::from_hf(&raw.hidden_act).ok_or_else(|| {
            config_err(
                path,
                format!("unsupported hidden_act \"{}\"", raw.hidden_act),
            )
        })?;
        let c = GptNeoXConfig {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            hidden_act: raw.hidden_act,
            activation,
            max_position_embeddings: raw.max_position_embeddings,
            layer_norm_eps: raw.layer_norm_eps,
            use_parallel_residual: raw.use_parallel_residual,
            tie_word_embeddings: raw.tie_word_embeddings,
            attention_bias: raw.attention_bias,
            rotary_pct,
            rope_theta,
        };
        check_sizes(
            path,
            &[
                ("vocab_size", c.vocab_size),
                ("hidden_size", c.hidden_size),
                ("num_hidden_layers", c.num_hidden_layers),
                ("num_attention_heads", c.num_attention_heads),
                ("intermediate_size", c.intermediate_size),
                ("max_position_embeddings", c.max_position_embeddings),
            ],
            c.num_attention_heads,
            c.num_attention_heads,
        )?;
        if c.hidden_size % c.num_attention_heads != 0 {
            return Err(config_err(
                path,
                format!(
                    "hidden_size {} is not divisible by num_attention_heads {}",
                    c.hidden_size, c.num_attention_heads
                ),
            ));
        }
        if c.rotary_ndims() % 2 != 0 || c.rotary_ndims() == 0 {
            return Err(config_err(
                path,
                format!(
                    "rotary dimension int({} · {}) = {} must be even and positive",
                    c.head_dim(),
                    c.rotary_pct,
                    c.rotary_ndims()
                ),
            ));
        }
        Ok(c)
    }

    /// hidden_size / num_attention_heads.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Rotated channels per head: `int(head_dim · rotary_pct)`, as HF computes it.
    pub fn rotary_ndims(&self) -> usize {
        (self.head_dim() as f64 * self.rotary_pct) as usize
    }
}

#[derive(Debug, Clone)]
struct Layer {
    input_layernorm: LayerNorm,
    post_attention_layernorm: LayerNorm,
    query_key_value: Linear,
    dense: Linear,
    dense_h_to_4h: Linear,
    dense_4h_to_h: Linear,
}

/// A GPT-NeoX model, built from any [`WeightSource`].
#[derive(Debug, Clone)]
pub struct GptNeoX {
    config: GptNeoXConfig,
    embed_in: Tensor,
    layers: Vec<Layer>,
    final_layer_norm: LayerNorm,
    embed_out: Linear,
    rotary: RotaryTables,
    spec: AttentionSpec,
    dtype: DType,
    device: Device,
}

impl GptNeoX {
    /// Builds the model from tensors named as in HF (`gpt_neox.*`, `embed_out` or `lm_head`).
    pub fn load(config: &GptNeoXConfig, w: &dyn WeightSource) -> Result<Self> {
        let c = config;
        let h = c.hidden_size;
        let eps = c.layer_norm_eps;
        let embed_in = w.get("gpt_neox.embed_in.weight", &[c.vocab_size, h], w.dtype())?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = Self::layer_prefix(i);
            let lin = |name: &str, din: usize, dout: usize, bias: bool| {
                Linear::load(w, &format!("{p}.{name}"), din, dout, bias)
            };
            let ln = |name: &str| LayerNorm::load(w, &format!("{p}.{name}"), h, eps);
            layers.push(Layer {
                input_layernorm: ln("input_layernorm")?,
                post_attention_layernorm: ln("post_attention_layernorm")?,
                query_key_value: lin("attention.query_key_value", h, 3 * h, c.attention_bias)?,
                dense: lin("attention.dense", h, h, c.attention_bias)?,
                dense_h_to_4h: lin("mlp.dense_h_to_4h", h, c.intermediate_size, true)?,
                dense_4h_to_h: lin("mlp.dense_4h_to_h", c.intermediate_size, h, true)?,
            });
        }
        let final_layer_norm = LayerNorm::load(w, "gpt_neox.final_layer_norm", h, eps)?;
        let embed_out = if c.tie_word_embeddings {
            Linear::tied(embed_in.clone())
        } else {
            // Hub checkpoints call the head `embed_out`; transformers 5 renames it `lm_head` in memory.
            let name = if !w.contains("embed_out.weight") && w.contains("lm_head.weight") {
                "lm_head"
            } else {
                "embed_out"
            };
            Linear::load(w, name, h, c.vocab_size, false)?
        };
        let rotary = RotaryTables::new(c.rotary_ndims(), c.rope_theta, c.max_position_embeddings)?;
        let spec = AttentionSpec {
            heads: c.num_attention_heads,
            kv_heads: c.num_attention_heads,
            head_dim: c.head_dim(),
            layout: QkvLayout::PerHead,
        };
        Ok(GptNeoX {
            config: c.clone(),
            embed_in,
            layers,
            final_layer_norm,
            embed_out,
            rotary,
            spec,
            dtype: w.dtype(),
            device: w.device().clone(),
        })
    }

    /// HF name prefix of block `i`.
    pub fn layer_prefix(i: usize) -> String {
        format!("gpt_neox.layers.{i}")
    }

    /// Names (relative to a block's prefix) and (in, out) sizes of a block's linear layers: where
    /// LoRA adapters go.
    pub fn block_linears(c: &GptNeoXConfig) -> Vec<(&'static str, usize, usize)> {
        let (h, m) = (c.hidden_size, c.intermediate_size);
        vec![
            ("attention.query_key_value", h, 3 * h),
            ("attention.dense", h, h),
            ("mlp.dense_h_to_4h", h, m),
            ("mlp.dense_4h_to_h", m, h),
        ]
    }

    pub fn config(&self) -> &GptNeoXConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Attention at every position, or at `rows` only ([`at_rows`]: every position's keys and
    /// values are still computed); the output projection's values skipped if `gradient_only`.
    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        rows: Option<&Tensor>,
        gradient_only: bool,
    ) -> Result<Tensor> {
        let out = layer
            .query_key_value
            .attention(x, &self.spec, &self.rotary)?;
        Ok(layer
            .dense
            .forward_maybe_for_gradient(&at_rows(&out, rows)?, gradient_only)?)
    }

    fn mlp(&self, layer: &Layer, x: &Tensor, gradient_only: bool) -> Result<Tensor> {
        let h = layer
            .dense_h_to_4h
            .forward_act(x, Some(self.config.activation))?;
        Ok(layer
            .dense_4h_to_h
            .forward_maybe_for_gradient(&h, gradient_only)?)
    }

    /// One block. Under `run.gradient_only` the projections whose outputs only add into the
    /// block's output skip their values: both output projections with the parallel residual, the
    /// MLP's with the sequential one (whose attention output feeds the second norm).
    fn layer_forward(&self, layer: &Layer, x: &Tensor, run: LayerRun<'_>) -> Result<Tensor> {
        let parallel = self.config.use_parallel_residual;
        let attn = self.attention(
            layer,
            &layer.input_layernorm.forward(x)?,
            run.rows,
            run.gradient_only && parallel,
        )?;
        let x = &at_rows(x, run.rows)?;
        if parallel {
            let mlp = self.mlp(
                layer,
                &layer.post_attention_layernorm.forward(x)?,
                run.gradient_only,
            )?;
            // HF's order of additions: mlp + attn + x.
            Ok(ops::add3(&mlp, &attn, x)?)
        } else {
            let a = (attn + x)?;
            let mlp = self.mlp(
                layer,
                &layer.post_attention_layernorm.forward(&a)?,
                run.gradient_only,
            )?;
            Ok((mlp + a)?)
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
        let x = embed(&self.embed_in, input_ids)?;
        self.forward_from(x, 0, request)
    }

    /// Runs the stack from hidden state `start` (0 = embeddings), given that state (B, T, H).
    pub fn forward_from(&self, x: Tensor, start: usize, request: &Request) -> Result<Output> {
        run_stack(
            x,
            start,
            &self.layers,
            |layer, x, run| self.layer_forward(layer, x, run),
            |x| Ok(self.final_layer_norm.forward(x)?),
            |x| Ok(self.embed_out.forward(x)?),
            request,
        )
    }

    /// Mean next-token cross-entropy of `targets` (B, T) given `inputs` (B, T): the output head is
    /// fused with the loss, so the (B·T, vocab) logits are never a tensor.
    pub fn lm_loss(&self, inputs: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let n = self.config.num_hidden_layers;
        let out = self.forward(inputs, &Request::hidden_state(n))?;
        let x = out.hidden_state(n).expect("requested").flatten_to(1)?;
        let (w, _) = self
            .embed_out
            .plain()
            .expect("the output head has no adapter");
        Ok(ops::head_cross_entropy(&x, w, &targets.flatten_all()?)?)
    }
}

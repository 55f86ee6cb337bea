//! `config.json` of a checkpoint: which architecture, and its hyper-parameters.
//!
//! The file is dispatched on `model_type`: `gpt_neox` ([`GptNeoXConfig`]), `olmo` ([`OlmoConfig`], both
//! the HF-native form and AI2's `hf_olmo` form with `d_model`/`n_heads`), `llama` and `olmo2` ([`LlamaConfig`]).
//! Each architecture's config mirrors the HF config class: keys the model's shape depends on are
//! required (a missing one is an error naming the file and the key), optional keys take the defaults
//! of HF `transformers`, and unknown keys are ignored (hub configs carry many keys that inference does
//! not need).
//!
//! Rotary settings come in two spellings. Hub configs written by `transformers` 4.x use top-level keys
//! (`rotary_pct` and `rotary_emb_base` for GPT-NeoX, `rope_theta` for OLMo); `transformers` 5 writes a
//! `rope_parameters` object (`rope_theta`, `partial_rotary_factor`, `rope_type`). Both are read; as in
//! HF, `rope_parameters` (or a legacy `rope_scaling`) wins over the top-level keys. Only the default
//! rope type is implemented for GPT-NeoX and OLMo 1; Llama and OLMo 2 also read `linear` and `llama3`
//! scaling. Other scaled variants are reported as unsupported (naming the key) rather than run wrongly.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{LmError, Result};
use crate::gpt_neox::GptNeoXConfig;
use crate::llama::{LlamaConfig, LlamaVariant};
use crate::olmo::OlmoConfig;
use crate::ops::RopeScaling;

/// The architecture and hyper-parameters of a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// GPT-NeoX as Pythia uses it.
    GptNeoX(GptNeoXConfig),
    /// OLMo 1 (HF-native or AI2 `hf_olmo` layout).
    Olmo(OlmoConfig),
    /// Llama or OLMo 2 ([`LlamaConfig::variant`]).
    Llama(LlamaConfig),
}

impl ModelConfig {
    /// Reads `config.json` from a checkpoint directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        if !path.is_file() {
            return Err(LmError::MissingConfig {
                dir: dir.to_path_buf(),
            });
        }
        Self::from_file(&path)
    }

    /// Reads a `config.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses the text of a `config.json`; `path` is only used in messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| config_err(path, format!("invalid JSON: {e}")))?;
        let Some(obj) = value.as_object() else {
            return Err(config_err(path, "expected a JSON object"));
        };
        let model_type = match obj.get("model_type") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(config_err(path, "`model_type` must be a string")),
            None => return Err(config_err(path, "missing key `model_type`")),
        };
        match model_type {
            "gpt_neox" => Ok(ModelConfig::GptNeoX(GptNeoXConfig::from_value(
                &value, path,
            )?)),
            "olmo" | "hf_olmo" => Ok(ModelConfig::Olmo(OlmoConfig::from_value(&value, path)?)),
            "llama" => Ok(ModelConfig::Llama(LlamaConfig::from_value(
                &value,
                path,
                LlamaVariant::Llama,
            )?)),
            "olmo2" => Ok(ModelConfig::Llama(LlamaConfig::from_value(
                &value,
                path,
                LlamaVariant::Olmo2,
            )?)),
            other => Err(LmError::UnknownModelType {
                path: path.to_path_buf(),
                model_type: other.to_string(),
            }),
        }
    }

    /// `model_type` as in `config.json` (`hf_olmo` configs report `olmo`).
    pub fn model_type(&self) -> &'static str {
        match self {
            ModelConfig::GptNeoX(_) => "gpt_neox",
            ModelConfig::Olmo(_) => "olmo",
            ModelConfig::Llama(c) => c.variant.model_type(),
        }
    }

    /// Number of transformer layers L; hidden states are indexed 0..=L.
    pub fn num_layers(&self) -> usize {
        match self {
            ModelConfig::GptNeoX(c) => c.num_hidden_layers,
            ModelConfig::Olmo(c) => c.num_hidden_layers,
            ModelConfig::Llama(c) => c.num_hidden_layers,
        }
    }

    /// Width of the hidden states (the feature dimension).
    pub fn hidden_size(&self) -> usize {
        match self {
            ModelConfig::GptNeoX(c) => c.hidden_size,
            ModelConfig::Olmo(c) => c.hidden_size,
            ModelConfig::Llama(c) => c.hidden_size,
        }
    }

    /// Rows of the embedding matrix and columns of the logits.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::GptNeoX(c) => c.vocab_size,
            ModelConfig::Olmo(c) => c.vocab_size,
            ModelConfig::Llama(c) => c.vocab_size,
        }
    }

    /// Longest input the model was trained on; longer inputs are truncated.
    pub fn max_position_embeddings(&self) -> usize {
        match self {
            ModelConfig::GptNeoX(c) => c.max_position_embeddings,
            ModelConfig::Olmo(c) => c.max_position_embeddings,
            ModelConfig::Llama(c) => c.max_position_embeddings,
        }
    }

    /// One-line human summary of the architecture.
    pub fn describe(&self) -> String {
        match self {
            ModelConfig::GptNeoX(c) => format!(
                "GPT-NeoX: {} layers, hidden {}, {} heads (head dim {}), MLP {}, vocab {}, context {}, \
                 rotary {} of head dim (base {}), {} residual, {}, {} output embedding",
                c.num_hidden_layers,
                c.hidden_size,
                c.num_attention_heads,
                c.head_dim(),
                c.intermediate_size,
                c.vocab_size,
                c.max_position_embeddings,
                c.rotary_pct,
                c.rope_theta,
                if c.use_parallel_residual { "parallel" } else { "sequential" },
                c.hidden_act,
                if c.tie_word_embeddings { "tied" } else { "untied" },
            ),
            ModelConfig::Olmo(c) => format!(
                "OLMo 1 ({} layout): {} layers, hidden {}, {} heads ({} KV), MLP {}, vocab {}, context {}, \
                 rope base {}, clip_qkv {}, {} output embedding",
                match c.layout {
                    crate::olmo::OlmoLayout::Hf => "HF",
                    crate::olmo::OlmoLayout::Ai2 => "AI2 hf_olmo",
                },
                c.num_hidden_layers,
                c.hidden_size,
                c.num_attention_heads,
                c.num_key_value_heads,
                c.intermediate_size,
                c.vocab_size,
                c.max_position_embeddings,
                c.rope_theta,
                c.clip_qkv.map_or("none".to_string(), |v| v.to_string()),
                if c.tie_word_embeddings { "tied" } else { "untied" },
            ),
            ModelConfig::Llama(c) => c.describe(),
        }
    }
}

pub(crate) fn config_err(path: &Path, msg: impl Into<String>) -> LmError {
    LmError::Config {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Deserializes a config struct, turning serde's message ("missing field `hidden_size`") into an error
/// that names the file.
pub(crate) fn parse<T: DeserializeOwned>(value: &Value, path: &Path) -> Result<T> {
    T::deserialize(value).map_err(|e| config_err(path, e.to_string()))
}

/// `rope_parameters` (transformers 5) or `rope_scaling` (older, for scaled variants).
#[derive(Debug, Deserialize, Default)]
pub(crate) struct RopeParameters {
    pub rope_type: Option<String>,
    /// transformers 4 wrote `type` in `rope_scaling`.
    #[serde(rename = "type")]
    pub legacy_type: Option<String>,
    pub rope_theta: Option<f64>,
    pub partial_rotary_factor: Option<f64>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<f64>,
}

/// The rotary keys of a config.json, in either spelling.
#[derive(Debug, Default)]
pub(crate) struct RopeKeys {
    pub rope_parameters: Option<RopeParameters>,
    pub rope_scaling: Option<RopeParameters>,
    /// The architecture's top-level base (`rope_theta`, `rotary_emb_base`).
    pub theta: Option<f64>,
    /// The architecture's top-level rotary fraction (`rotary_pct`).
    pub partial: Option<f64>,
    /// A top-level `original_max_position_embeddings` (HF prefers it to the one in the rope object).
    pub original_max_position_embeddings: Option<f64>,
}

/// Resolved rotary settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rope {
    pub theta: f64,
    pub partial: f64,
    pub scaling: RopeScaling,
}

/// Resolves rotary settings the way HF does: `rope_parameters` / `rope_scaling` first, then the
/// architecture's top-level keys, then the defaults. Scaled types (`linear`, `llama3`) read their
/// parameters from the same object; `max_positions` is llama3's fallback for
/// `original_max_position_embeddings`, as in HF.
pub(crate) fn resolve_scaled_rope(
    path: &Path,
    keys: RopeKeys,
    default_partial: f64,
    max_positions: usize,
) -> Result<Rope> {
    let object = if keys.rope_scaling.is_some() {
        "rope_scaling"
    } else {
        "rope_parameters"
    };
    let params = keys
        .rope_scaling
        .or(keys.rope_parameters)
        .unwrap_or_default();
    let rope_type = params
        .rope_type
        .clone()
        .or(params.legacy_type.clone())
        .unwrap_or_else(|| "default".into());
    let need = |v: Option<f64>, key: &str| {
        v.filter(|v| v.is_finite() && *v > 0.0).ok_or_else(|| {
            config_err(
                path,
                format!("`{object}.{key}` must be a positive number for rope type \"{rope_type}\""),
            )
        })
    };
    let scaling = match rope_type.as_str() {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need(params.factor, "factor")?,
        },
        "llama3" => {
            let low_freq_factor = need(params.low_freq_factor, "low_freq_factor")?;
            let high_freq_factor = need(params.high_freq_factor, "high_freq_factor")?;
            if high_freq_factor <= low_freq_factor {
                return Err(config_err(
                    path,
                    format!(
                        "`{object}.high_freq_factor` ({high_freq_factor}) must exceed \
                         `{object}.low_freq_factor` ({low_freq_factor})"
                    ),
                ));
            }
            RopeScaling::Llama3 {
                factor: need(params.factor, "factor")?,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: need(
                    keys.original_max_position_embeddings
                        .or(params.original_max_position_embeddings)
                        .or(Some(max_positions as f64)),
                    "original_max_position_embeddings",
                )?,
            }
        }
        other => {
            return Err(LmError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "`{object}.rope_type` \"{other}\" (implemented: default, linear, llama3)"
                ),
            })
        }
    };
    let theta = params.rope_theta.or(keys.theta).unwrap_or(10_000.0);
    let partial = params
        .partial_rotary_factor
        .or(keys.partial)
        .unwrap_or(default_partial);
    if theta.is_nan() || theta <= 0.0 {
        return Err(config_err(
            path,
            format!("rope theta must be positive, got {theta}"),
        ));
    }
    if partial.is_nan() || partial <= 0.0 || partial > 1.0 {
        return Err(config_err(
            path,
            format!("rotary fraction must be in (0, 1], got {partial}"),
        ));
    }
    Ok(Rope {
        theta,
        partial,
        scaling,
    })
}

/// [`resolve_scaled_rope`] for architectures that implement only the default rotary: returns
/// (theta, rotary fraction).
pub(crate) fn resolve_rope(
    path: &Path,
    rope_parameters: Option<RopeParameters>,
    rope_scaling: Option<RopeParameters>,
    theta: Option<f64>,
    partial: Option<f64>,
    default_partial: f64,
) -> Result<(f64, f64)> {
    let object = if rope_scaling.is_some() {
        "rope_scaling"
    } else {
        "rope_parameters"
    };
    let keys = RopeKeys {
        rope_parameters,
        rope_scaling,
        theta,
        partial,
        original_max_position_embeddings: None,
    };
    let rope = resolve_scaled_rope(path, keys, default_partial, 1)?;
    if rope.scaling != RopeScaling::None {
        return Err(LmError::Unsupported {
            path: path.to_path_buf(),
            what: format!(
                "`{object}.rope_type` {:?} for this architecture (only the default rotary embedding)",
                rope.scaling
            ),
        });
    }
    Ok((rope.theta, rope.partial))
}

/// Checks that the sizes are positive and the head layout consistent, with a message naming the keys.
pub(crate) fn check_sizes(
    path: &Path,
    sizes: &[(&str, usize)],
    heads: usize,
    kv_heads: usize,
) -> Result<()> {
    for (key, v) in sizes {
        if *v == 0 {
            return Err(config_err(path, format!("`{key}` must be positive")));
        }
    }
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(config_err(
            path,
            format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            ),
        ));
    }
    Ok(())
}

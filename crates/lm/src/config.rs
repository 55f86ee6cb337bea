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

use serde_json::Value;

use crate::config_keys::config_err;
use crate::error::{LmError, Result};
use crate::gpt_neox::GptNeoXConfig;
use crate::llama::{LlamaConfig, LlamaVariant};
use crate::olmo::OlmoConfig;

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

//! Training configuration: named presets and the TOML config-file form.
//!
//! A config file names a `preset` (default `tiny`) and overrides any of its keys; unknown keys are
//! errors naming the file and the key, so a typo never trains the wrong model silently:
//!
//! ```toml
//! preset = "tiny"
//! seed = 3
//! steps = 400
//! [model]
//! num_layers = 2
//! ```
//!
//! Presets (all Pythia-style: parallel residual, rotary on 25% of each head, untied embeddings,
//! byte-level BPE with 4096 tokens):
//! - `weak`: 2 layers × 64 wide — the weak supervisor of a W2SG experiment;
//! - `tiny`: 4 layers × 128 wide, 150 steps of 16 × 128 tokens — minutes on 2 cores;
//! - `small`: 6 layers × 256 wide, context 256, 2,400 steps of 16 × 256 tokens — about an hour on 2
//!   cores (1.5 s per step measured).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{PretrainError, Result};

/// Architecture of the model to train (GPT-NeoX hyper-parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelShape {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    /// Training context length; also `max_position_embeddings` of the saved config.
    pub context: usize,
    pub rotary_pct: f64,
    pub rope_theta: f64,
}

/// Everything that determines a training run (and so its checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// The preset this config started from (informational).
    pub preset: String,
    pub seed: u64,
    /// `"default"` (SOTU + Shakespeare/Milton + Moby Dick) and/or paths to UTF-8 text files or
    /// directories of `.txt` files.
    pub corpus: Vec<String>,
    /// Fraction of paragraphs held out for validation.
    pub validation_fraction: f64,
    pub vocab_size: usize,
    /// The tokenizer is trained on the first this-many bytes of training text (0: all of it).
    pub tokenizer_train_bytes: usize,
    pub model: ModelShape,
    /// Optimizer updates.
    pub steps: u64,
    /// Sequences per update.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_ratio: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global gradient-norm clip (0: none).
    pub grad_clip: f64,
    /// Checkpoints every this-many steps after the log-spaced ones (0, 1, 2, …, 512).
    pub checkpoint_every: u64,
    /// Validation tokens scored at each checkpoint.
    pub eval_tokens: usize,
    /// Training loss is logged (averaged) every this-many steps.
    pub log_every: u64,
}

/// Names of the built-in presets.
pub const PRESETS: &[&str] = &["weak", "tiny", "small"];

impl PretrainConfig {
    /// A built-in preset by name.
    pub fn preset(name: &str) -> Result<Self> {
        let base = PretrainConfig {
            preset: name.to_string(),
            seed: 0,
            corpus: vec!["default".into()],
            validation_fraction: 0.01,
            vocab_size: 4096,
            tokenizer_train_bytes: 8_000_000,
            model: ModelShape {
                hidden_size: 128,
                num_layers: 4,
                num_heads: 4,
                intermediate_size: 512,
                context: 128,
                rotary_pct: 0.25,
                rope_theta: 10_000.0,
            },
            steps: 150,
            batch_size: 16,
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 50,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            checkpoint_every: 50,
            eval_tokens: 8_192,
            log_every: 10,
        };
        match name {
            "tiny" => Ok(base),
            "weak" => Ok(PretrainConfig {
                model: ModelShape {
                    hidden_size: 64,
                    num_layers: 2,
                    num_heads: 4,
                    intermediate_size: 256,
                    ..base.model.clone()
                },
                lr: 2e-3,
                steps: 300,
                ..base
            }),
            "small" => Ok(PretrainConfig {
                model: ModelShape {
                    hidden_size: 256,
                    num_layers: 6,
                    num_heads: 8,
                    intermediate_size: 1024,
                    context: 256,
                    ..base.model.clone()
                },
                steps: 2400,
                lr: 6e-4,
                warmup_steps: 100,
                checkpoint_every: 100,
                eval_tokens: 32_768,
                ..base
            }),
            other => Err(PretrainError::Config(format!(
                "unknown preset \"{other}\" (known: {})",
                PRESETS.join(", ")
            ))),
        }
    }

    /// Reads a TOML config file: its `preset` (default `tiny`) with the file's keys on top.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| PretrainError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            PretrainError::Config(msg) => {
                PretrainError::Config(format!("{}: {msg}", path.display()))
            }
            other => other,
        })
    }

    /// Parses the text of a TOML config (see the module docs).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let file: toml::Table = toml::from_str(text)
            .map_err(|e| PretrainError::Config(format!("invalid TOML: {e}")))?;
        let preset = match file.get("preset") {
            None => "tiny",
            Some(toml::Value::String(s)) => s.as_str(),
            Some(_) => return Err(PretrainError::Config("`preset` must be a string".into())),
        };
        let base = Self::preset(preset)?;
        let mut merged = toml::Table::try_from(&base)
            .map_err(|e| PretrainError::Config(format!("internal: {e}")))?;
        merge(&mut merged, file);
        let config: PretrainConfig = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| PretrainError::Config(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that would otherwise fail deep inside training.
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        let err = |msg: String| Err(PretrainError::Config(msg));
        for (key, v) in [
            ("model.hidden_size", m.hidden_size),
            ("model.num_layers", m.num_layers),
            ("model.num_heads", m.num_heads),
            ("model.intermediate_size", m.intermediate_size),
            ("model.context", m.context),
            ("batch_size", self.batch_size),
            ("vocab_size", self.vocab_size),
        ] {
            if v == 0 {
                return err(format!("`{key}` must be positive"));
            }
        }
        if m.hidden_size % m.num_heads != 0 {
            return err(format!(
                "`model.hidden_size` {} is not divisible by `model.num_heads` {}",
                m.hidden_size, m.num_heads
            ));
        }
        if self.vocab_size > 65_536 {
            return err(format!("`vocab_size` {} exceeds 65536", self.vocab_size));
        }
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            return err("`validation_fraction` must be in (0, 1)".into());
        }
        if self.lr.is_nan() || self.lr <= 0.0 || !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return err("`lr` must be positive and `min_lr_ratio` in [0, 1]".into());
        }
        if self.corpus.is_empty() {
            return err("`corpus` is empty".into());
        }
        if !(m.rotary_pct > 0.0 && m.rotary_pct <= 1.0) {
            return err(format!(
                "`model.rotary_pct` must be in (0, 1], not {}",
                m.rotary_pct
            ));
        }
        if !(m.rope_theta.is_finite() && m.rope_theta > 0.0) {
            return err(format!(
                "`model.rope_theta` must be positive, not {}",
                m.rope_theta
            ));
        }
        // Anything else the model definition refuses, still before a file is written.
        self.gpt_neox_config()
            .map_err(|e| PretrainError::Config(format!("`model`: {e}")))?;
        Ok(())
    }

    /// Peak memory of training, estimated from above: f32 weights, gradients and the two AdamW moments
    /// (16 bytes per parameter), plus the activations kept for the backward pass and the logits.
    pub fn memory_estimate(&self) -> f64 {
        let m = &self.model;
        let (h, l, i, v) = (
            m.hidden_size as f64,
            m.num_layers as f64,
            m.intermediate_size as f64,
            self.vocab_size as f64,
        );
        let (b, t, heads) = (self.batch_size as f64, m.context as f64, m.num_heads as f64);
        let params = 2.0 * v * h + l * (4.0 * h * h + 2.0 * h * i + 9.0 * h + i);
        let activations = b * t * l * (12.0 * h + 2.0 * i + heads * t) * 4.0;
        let logits = 3.0 * b * t * v * 4.0;
        16.0 * params + activations + logits
    }

    /// Refuses a config whose estimated peak memory exceeds `available` bytes (None: not checked),
    /// naming the keys that drive it; an allocation failure would abort the process instead.
    pub fn check_resources(&self, available: Option<f64>) -> Result<()> {
        let need = self.memory_estimate();
        match available {
            Some(have) if need > have => Err(PretrainError::Config(format!(
                "training needs about {:.1} GB of memory (weights, gradients and AdamW state for \
                 `model.hidden_size` = {}, `model.num_layers` = {}, `model.intermediate_size` = {}, \
                 plus activations for `batch_size` = {} × `model.context` = {}), but {:.1} GB are \
                 available; make the model or the batch smaller",
                need / 1e9,
                self.model.hidden_size,
                self.model.num_layers,
                self.model.intermediate_size,
                self.batch_size,
                self.model.context,
                have / 1e9
            ))),
            _ => Ok(()),
        }
    }

    /// The HF `config.json` of the model this config trains.
    pub fn hf_config_json(&self) -> serde_json::Value {
        let m = &self.model;
        serde_json::json!({
            "architectures": ["GPTNeoXForCausalLM"],
            "model_type": "gpt_neox",
            "vocab_size": self.vocab_size,
            "hidden_size": m.hidden_size,
            "num_hidden_layers": m.num_layers,
            "num_attention_heads": m.num_heads,
            "intermediate_size": m.intermediate_size,
            "hidden_act": "gelu",
            "max_position_embeddings": m.context,
            "rotary_pct": m.rotary_pct,
            "rotary_emb_base": m.rope_theta,
            "layer_norm_eps": 1e-5,
            "use_parallel_residual": true,
            "tie_word_embeddings": false,
            "attention_bias": true,
            "attention_dropout": 0.0,
            "hidden_dropout": 0.0,
            "initializer_range": 0.02,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "use_cache": true,
            "torch_dtype": "float32",
        })
    }

    /// The parsed GPT-NeoX config (through the same parser the loader uses).
    pub fn gpt_neox_config(&self) -> Result<crate::gpt_neox::GptNeoXConfig> {
        Ok(crate::gpt_neox::GptNeoXConfig::from_value(
            &self.hf_config_json(),
            Path::new("<pretrain config>"),
        )?)
    }
}

/// Recursive merge of `over` into `base` (tables merge, everything else replaces).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_overrides_preset_and_rejects_unknown_keys() {
        let c = PretrainConfig::from_toml_str(
            "preset = \"weak\"\nsteps = 7\n[model]\nnum_layers = 3\n",
        )
        .unwrap();
        assert_eq!(c.steps, 7);
        assert_eq!(c.model.num_layers, 3);
        assert_eq!(c.model.hidden_size, 64);
        let e = PretrainConfig::from_toml_str("stepz = 7\n").unwrap_err();
        assert!(e.to_string().contains("stepz"), "{e}");
        assert!(PretrainConfig::from_toml_str("preset = \"huge\"").is_err());
        for p in PRESETS {
            PretrainConfig::preset(p)
                .unwrap()
                .gpt_neox_config()
                .unwrap();
        }
    }
}

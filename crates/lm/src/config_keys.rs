//! Reading an architecture's keys from `config.json`: errors that name the file and the key, the two
//! spellings of the rotary settings, and the size checks every architecture needs.
//!
//! These helpers sit below both [`crate::config`] (which dispatches on `model_type`) and the model files
//! (which parse their own config structs), so neither imports the other for them.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{LmError, Result};
use crate::ops::RopeScaling;

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

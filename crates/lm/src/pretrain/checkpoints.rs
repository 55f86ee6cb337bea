//! Checkpoints in Hugging Face layout and the family manifest.
//!
//! `OUT/step{N}/` holds `config.json` (HF `GPTNeoXConfig` keys), `model.safetensors` (f32, HF names,
//! metadata `{"format": "pt"}` which `transformers` requires), `tokenizer.json` and
//! `trainer_state.json` (step, tokens seen, losses, learning rate, sha256 of the weights). The latest
//! checkpoint also holds `optimizer.safetensors` (AdamW moments); older ones drop it to keep a family
//! small. `OUT/family.json` lists every checkpoint in step order.
//!
//! Crash safety: a checkpoint is written under `OUT/.partial/step{N}` and renamed into place, so a kill
//! mid-write never leaves a half checkpoint that looks complete (the family scanner only looks at
//! direct sub-directories with a `config.json`). The optimizer state of the previous checkpoint is
//! removed only after the new one is in place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::model::TrainableGptNeoX;
use super::presets::PretrainConfig;
use super::{PretrainError, Result};
use crate::checkpoint::{read_safetensors, write_safetensors};
use crate::optim::AdamW;

/// Training position and scores of one checkpoint (`trainer_state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: u64,
    pub tokens_seen: u64,
    /// Mean validation loss (nats per token).
    pub val_loss: Option<f64>,
    /// Mean training loss since the previous log point.
    pub train_loss: Option<f64>,
    /// Learning rate of the last update.
    pub lr: f64,
    /// sha256 of `model.safetensors`.
    pub sha256: String,
    /// AdamW updates done (equals `step`).
    pub adam_step: u64,
}

/// One entry of `family.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub revision: String,
    pub step: u64,
    pub tokens_seen: u64,
    pub val_loss: Option<f64>,
    pub sha256: String,
}

/// `family.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub num_parameters: usize,
    pub config: PretrainConfig,
    pub checkpoints: Vec<ManifestEntry>,
}

pub const MANIFEST: &str = "family.json";
pub const STATE: &str = "trainer_state.json";
pub const OPTIMIZER: &str = "optimizer.safetensors";
/// The run's config, written once at the start and compared on resume.
pub const RUN_CONFIG: &str = "pretrain_config.json";

/// Revision directory name of a step.
pub fn revision_name(step: u64) -> String {
    format!("step{step}")
}

/// sha256 of a file, hex (the workspace's one file hash, re-exported where checkpoints are written).
pub use w2sg_fsio::file_sha256 as sha256_file;

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serializable");
    std::fs::write(path, text + "\n").map_err(|e| PretrainError::write(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| PretrainError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_str(&text)
        .map_err(|e| PretrainError::Resume(format!("{}: invalid JSON: {e}", path.display())))
}

fn pt_metadata() -> BTreeMap<String, String> {
    BTreeMap::from([("format".to_string(), "pt".to_string())])
}

/// Writes the model weights as `model.safetensors` in HF layout.
pub fn save_weights(model: &TrainableGptNeoX, path: &Path) -> Result<()> {
    let named = model.named_tensors();
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_safetensors(path, &refs, &pt_metadata())?;
    Ok(())
}

/// Writes checkpoint `state.step` into `out`, with the optimizer state if given, and removes the
/// optimizer state of older checkpoints unless `keep_old_optimizer`.
pub fn save_checkpoint(
    out: &Path,
    config: &PretrainConfig,
    model: &TrainableGptNeoX,
    tokenizer_json: &Path,
    optimizer: Option<&AdamW>,
    mut state: TrainerState,
    keep_old_optimizer: bool,
) -> Result<TrainerState> {
    let name = revision_name(state.step);
    let partial = out.join(".partial").join(&name);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| PretrainError::write(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| PretrainError::write(&partial, e))?;
    write_json(&partial.join("config.json"), &config.hf_config_json())?;
    let weights = partial.join("model.safetensors");
    save_weights(model, &weights)?;
    state.sha256 = sha256_file(&weights).map_err(|e| PretrainError::Io {
        path: weights.clone(),
        source: e,
    })?;
    let tok_dst = partial.join("tokenizer.json");
    std::fs::copy(tokenizer_json, &tok_dst).map_err(|e| PretrainError::write(&tok_dst, e))?;
    if let Some(opt) = optimizer {
        opt.save_file(
            &partial.join(OPTIMIZER),
            model.params(),
            &[],
            &pt_metadata(),
        )?;
    }
    write_json(&partial.join(STATE), &state)?;
    let dst = out.join(&name);
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(|e| PretrainError::write(&dst, e))?;
    }
    std::fs::rename(&partial, &dst).map_err(|e| PretrainError::write(&dst, e))?;
    if !keep_old_optimizer {
        for (step, dir) in step_dirs(out)? {
            if step != state.step && dir.join(OPTIMIZER).is_file() {
                let p = dir.join(OPTIMIZER);
                std::fs::remove_file(&p).map_err(|e| PretrainError::write(&p, e))?;
            }
        }
    }
    Ok(state)
}

/// `(step, dir)` of every `step{N}` sub-directory with a `config.json`, by step.
pub fn step_dirs(out: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut v: Vec<(u64, PathBuf)> = crate::hub::family_members(out)?
        .into_iter()
        .filter_map(|(name, dir)| {
            let step = name.strip_prefix("step")?.parse().ok()?;
            Some((step, dir))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Rewrites `family.json` from the `trainer_state.json` of every checkpoint.
pub fn write_manifest(out: &Path, config: &PretrainConfig, num_parameters: usize) -> Result<()> {
    let mut checkpoints = Vec::new();
    for (step, dir) in step_dirs(out)? {
        let path = dir.join(STATE);
        if !path.is_file() {
            continue;
        }
        let s: TrainerState = read_json(&path)?;
        checkpoints.push(ManifestEntry {
            revision: revision_name(step),
            step,
            tokens_seen: s.tokens_seen,
            val_loss: s.val_loss,
            sha256: s.sha256,
        });
    }
    let manifest = Manifest {
        format: "w2sg-pretrain-family/1".into(),
        num_parameters,
        config: config.clone(),
        checkpoints,
    };
    let tmp = out.join(format!("{MANIFEST}.tmp"));
    write_json(&tmp, &manifest)?;
    let dst = out.join(MANIFEST);
    std::fs::rename(&tmp, &dst).map_err(|e| PretrainError::write(&dst, e))
}

/// Reads `family.json`.
pub fn read_manifest(out: &Path) -> Result<Manifest> {
    read_json(&out.join(MANIFEST))
}

/// The latest checkpoint that can be resumed from (has optimizer state), if any.
pub fn latest_resumable(out: &Path) -> Result<Option<(PathBuf, TrainerState)>> {
    if !out.is_dir() {
        return Ok(None);
    }
    let mut best = None;
    for (_, dir) in step_dirs(out)? {
        if dir.join(OPTIMIZER).is_file() && dir.join(STATE).is_file() {
            let s: TrainerState = read_json(&dir.join(STATE))?;
            best = Some((dir, s));
        }
    }
    Ok(best)
}

/// Loads the trainable model (and, if present, optimizer moments) of a checkpoint directory.
pub fn load_checkpoint(
    dir: &Path,
    config: &PretrainConfig,
    device: &Device,
) -> Result<TrainableGptNeoX> {
    let tensors = read_safetensors(&dir.join("model.safetensors"))?;
    TrainableGptNeoX::from_tensors(
        &config.gpt_neox_config()?,
        tensors.into_iter().collect(),
        device,
    )
}

/// Loads the trainable model of any GPT-NeoX checkpoint directory, reading its own `config.json`.
pub fn load_checkpoint_dir(dir: &Path, device: &Device) -> Result<TrainableGptNeoX> {
    let config = match crate::config::ModelConfig::from_dir(dir)? {
        crate::config::ModelConfig::GptNeoX(c) => c,
        other => {
            return Err(PretrainError::Config(format!(
                "{}: model_type {} is not gpt_neox",
                dir.display(),
                other.model_type()
            )))
        }
    };
    let tensors = read_safetensors(&dir.join("model.safetensors"))?;
    TrainableGptNeoX::from_tensors(&config, tensors.into_iter().collect(), device)
}

/// Loads the AdamW state saved with a checkpoint.
pub fn load_optimizer(
    dir: &Path,
    model: &TrainableGptNeoX,
    config: crate::optim::AdamWConfig,
    step: u64,
) -> Result<AdamW> {
    let (opt, _) = AdamW::load_file(&dir.join(OPTIMIZER), config, step, model.params())?;
    Ok(opt)
}

/// Writes the run's config (`pretrain_config.json`).
pub fn write_run_config(out: &Path, config: &PretrainConfig) -> Result<()> {
    write_json(&out.join(RUN_CONFIG), config)
}

/// Reads the run's config, if the directory holds one.
pub fn read_run_config(out: &Path) -> Result<Option<PretrainConfig>> {
    let p = out.join(RUN_CONFIG);
    if !p.is_file() {
        return Ok(None);
    }
    read_json(&p).map(Some)
}

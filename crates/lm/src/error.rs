//! Errors of the checkpoint lab.
//!
//! Every error that comes from a file names that file, and every error about a tensor names the tensor:
//! with hundreds of checkpoints on disk, "shape mismatch" alone is useless. Bad input (a missing or
//! malformed file, an unsupported config) is an error value, never a panic; [`LmError::exit_code`] maps
//! it to the CLI's convention (2 bad input, 1 a failure while running or writing).

use std::path::{Path, PathBuf};

/// Result type of this crate.
pub type Result<T, E = LmError> = std::result::Result<T, E>;

/// What can go wrong when reading checkpoints, running models and writing features.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A directory that should be a checkpoint has no `config.json`.
    #[error("{}: no config.json: not a checkpoint directory in Hugging Face layout", dir.display())]
    MissingConfig { dir: PathBuf },

    /// `config.json` is not valid JSON, lacks a required key, or has a key of the wrong type.
    #[error("{}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },

    /// `model_type` names an architecture this crate does not implement.
    #[error("{}: unknown model_type \"{model_type}\" (supported: gpt_neox, olmo, olmo2, llama)", path.display())]
    UnknownModelType { path: PathBuf, model_type: String },

    /// A known architecture with a variant this crate does not implement (e.g. ALiBi OLMo, scaled RoPE).
    #[error("{}: unsupported configuration: {what}", path.display())]
    Unsupported { path: PathBuf, what: String },

    /// The directory holds no weights file this crate can read.
    #[error(
        "{}: no weights found (model.safetensors, model.safetensors.index.json, pytorch_model.bin or \
         pytorch_model.bin.index.json)",
        dir.display()
    )]
    NoWeights { dir: PathBuf },

    /// A weights file is malformed (bad header, inconsistent offsets, unsupported dtype, bad index).
    #[error("{}: {msg}", path.display())]
    Weights { path: PathBuf, msg: String },

    /// A safetensors file ends before the data its header promises.
    #[error(
        "{}: file is truncated: tensor `{tensor}` needs bytes up to {needed} but the file has {size}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        tensor: String,
        needed: u64,
        size: u64,
    },

    /// A tensor the model needs is absent.
    #[error("{}: tensor `{tensor}` not found", path.display())]
    MissingTensor { path: PathBuf, tensor: String },

    /// A tensor has a different shape than the config implies.
    #[error("{}: tensor `{tensor}` has shape {found:?}, but the config implies {expected:?}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A tensor could not be read or converted.
    #[error("{}: tensor `{tensor}`: {msg}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },

    /// `tokenizer.json` is missing or cannot be used.
    #[error("{}: tokenizer: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },

    /// A model reference (`PATH[@REV]`, `ORG/NAME[@REV]`) that resolves to nothing.
    #[error("{spec}: {msg}")]
    NotFound { spec: String, msg: String },

    /// A line of an input data file is malformed.
    #[error("{}:{line}: {msg}", path.display())]
    Data {
        path: PathBuf,
        line: usize,
        msg: String,
    },

    /// An input text produced no tokens (index among the inputs).
    #[error("example {index} has no tokens (empty text)")]
    EmptyText { index: usize },

    /// An invalid argument (layer index out of range, empty input, unknown option value).
    #[error("{0}")]
    Input(String),

    /// A model produced NaN or infinite values (corrupt weights, or an overflow in a half dtype).
    #[error(
        "{model}: {what}: the checkpoint's weights are corrupt (NaN or inf), or the dtype overflowed \
         (try --dtype f32); nothing was written"
    )]
    NonFinite { model: String, what: String },

    /// A tensor operation failed while running the model.
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),

    /// Results could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl LmError {
    /// The `w2sg` exit code for this error: 1 when running or writing failed, 2 for bad input.
    pub fn exit_code(&self) -> u8 {
        match self {
            LmError::Compute(_) | LmError::Write { .. } => 1,
            _ => 2,
        }
    }

    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        LmError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub(crate) fn weights(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        LmError::Weights {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
}

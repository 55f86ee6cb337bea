//! One interface over the architectures: load a checkpoint directory, run a forward pass.
//!
//! A forward pass takes right-padded token ids (B, T) and returns what a [`Request`] asks for: hidden
//! states at chosen layers and/or logits. Hidden states are indexed as HF's `output_hidden_states`:
//! index 0 is the embedding output, index i (1 ≤ i < L) the output of layer i, and index L the output
//! of the last layer after the final norm (HF's `last_hidden_state`). A pass stops after the deepest
//! layer it needs, so features from layer 3 of a 24-layer model cost 3 layers.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::{LmError, Result};
use crate::gpt_neox::GptNeoX;
use crate::llama::Llama;
use crate::olmo::Olmo;
use crate::weights::{CheckpointWeights, WeightSource};

pub use crate::stack::{Output, Request};

/// A loaded model of any supported architecture.
#[derive(Debug, Clone)]
pub enum Model {
    GptNeoX(GptNeoX),
    Olmo(Olmo),
    /// Llama and OLMo 2 (one decoder, [`crate::llama::LlamaVariant`]).
    Llama(Llama),
}

impl Model {
    /// Loads `config.json` and the weights of a checkpoint directory.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        let ck = Checkpoint::open(dir)?;
        Self::from_checkpoint(&config, &ck, dtype, device)
    }

    /// Builds the model of `config` from opened weights.
    pub fn from_checkpoint(
        config: &ModelConfig,
        ck: &Checkpoint,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(LmError::Input(format!(
                "unsupported compute dtype {dtype:?} (use f32, bf16 or f16)"
            )));
        }
        let w = CheckpointWeights::new(ck, dtype, device);
        let model = Self::from_weights(config, &w)?;
        check_layer_count(config, ck, &w.unused())?;
        Ok(model)
    }

    /// Builds the model of `config` from any weight source (a checkpoint, trainable variables, or
    /// variables layered over a frozen checkpoint).
    pub fn from_weights(config: &ModelConfig, w: &dyn WeightSource) -> Result<Self> {
        Ok(match config {
            ModelConfig::GptNeoX(c) => Model::GptNeoX(GptNeoX::load(c, w)?),
            ModelConfig::Olmo(c) => Model::Olmo(Olmo::load(c, w)?),
            ModelConfig::Llama(c) => Model::Llama(Llama::load(c, w)?),
        })
    }

    /// Runs right-padded token ids (B, T, u32) and returns what `request` asks for.
    pub fn forward(&self, input_ids: &Tensor, request: &Request) -> Result<Output> {
        match self {
            Model::GptNeoX(m) => m.forward(input_ids, request),
            Model::Olmo(m) => m.forward(input_ids, request),
            Model::Llama(m) => m.forward(input_ids, request),
        }
    }

    /// Runs the stack from hidden state `start` (0 = embeddings) given that state (B, T, hidden):
    /// what fine-tuning the last blocks runs on the frozen blocks' cached output.
    pub fn forward_from(&self, x: Tensor, start: usize, request: &Request) -> Result<Output> {
        match self {
            Model::GptNeoX(m) => m.forward_from(x, start, request),
            Model::Olmo(m) => m.forward_from(x, start, request),
            Model::Llama(m) => m.forward_from(x, start, request),
        }
    }

    /// Number of layers L (hidden states are 0..=L).
    pub fn num_layers(&self) -> usize {
        match self {
            Model::GptNeoX(m) => m.config().num_hidden_layers,
            Model::Olmo(m) => m.config().num_hidden_layers,
            Model::Llama(m) => m.config().num_hidden_layers,
        }
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        match self {
            Model::GptNeoX(m) => m.config().hidden_size,
            Model::Olmo(m) => m.config().hidden_size,
            Model::Llama(m) => m.config().hidden_size,
        }
    }

    /// Longest input the model accepts.
    pub fn max_position_embeddings(&self) -> usize {
        match self {
            Model::GptNeoX(m) => m.config().max_position_embeddings,
            Model::Olmo(m) => m.config().max_position_embeddings,
            Model::Llama(m) => m.config().max_position_embeddings,
        }
    }

    /// Compute dtype.
    pub fn dtype(&self) -> DType {
        match self {
            Model::GptNeoX(m) => m.dtype(),
            Model::Olmo(m) => m.dtype(),
            Model::Llama(m) => m.dtype(),
        }
    }

    /// Device the weights live on.
    pub fn device(&self) -> &Device {
        match self {
            Model::GptNeoX(m) => m.device(),
            Model::Olmo(m) => m.device(),
            Model::Llama(m) => m.device(),
        }
    }
}

/// The layer index of a per-layer tensor name (`gpt_neox.layers.3.…`, `model.layers.3.…`,
/// `model.transformer.blocks.3.…`).
fn layer_index(name: &str) -> Option<usize> {
    let mut parts = name.split('.');
    while let Some(p) = parts.next() {
        if matches!(p, "layers" | "blocks" | "h") {
            return parts.next()?.parse().ok();
        }
    }
    None
}

/// Weights of layers beyond `num_hidden_layers` mean config.json and the weights disagree: the
/// model would silently compute with a prefix of the network. (transformers warns about unused
/// weights; here features would be wrong without a sign, so it is an error.) Other unused tensors
/// are tolerated: checkpoints carry buffers (`attention.bias`, `rotary_emb.inv_freq`) and heads that
/// feature extraction does not need.
fn check_layer_count(config: &ModelConfig, ck: &Checkpoint, unused: &[String]) -> Result<()> {
    let layers = config.num_layers();
    let extra: Vec<&String> = unused
        .iter()
        .filter(|n| layer_index(n).is_some_and(|i| i >= layers))
        .collect();
    if let Some(first) = extra.first() {
        return Err(LmError::Config {
            path: ck.dir().join("config.json"),
            msg: format!(
                "the config has {layers} layers (`num_hidden_layers`), but the weights hold {} tensors \
                 of further layers (e.g. `{first}`), unused: the config does not match the weights",
                extra.len()
            ),
        });
    }
    Ok(())
}

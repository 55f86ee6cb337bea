//! The GPT-NeoX that pre-training trains: the one model definition of [`crate::gpt_neox`], built
//! from a [`VarStore`] of every parameter, plus the initialisation.
//!
//! Parameters are candle variables named exactly as HF `GPTNeoXForCausalLM` names them
//! (`gpt_neox.layers.{i}.attention.query_key_value.weight`, `embed_out.weight`, …), so a checkpoint is
//! the list of `(name, tensor)` pairs and loads in `transformers` and in [`crate::model::Model`].
//! Every op of the forward pass has a backward pass ([`crate::ops`]); `tests/pretrain.rs` checks that
//! every parameter receives a non-zero gradient and that the fused ops and their composite versions
//! agree in the loss and every gradient.
//!
//! Edge cases:
//! - Only the parallel residual with untied embeddings is implemented for pre-training (every Pythia
//!   model); the config written for a checkpoint says so explicitly.
//! - Weights are initialised from [`w2sg_data::SplitMix64`] with Box–Muller normals, not candle's
//!   `randn`, whose CPU generator cannot be seeded: the same seed gives the same weights on every
//!   machine.

use candle_core::{Device, Tensor};

use super::{PretrainError, Result};
use crate::gpt_neox::{GptNeoX, GptNeoXConfig};
use crate::weights::{Param, VarStore};

/// A GPT-NeoX causal LM whose parameters are candle variables.
#[derive(Debug, Clone)]
pub struct TrainableGptNeoX {
    store: VarStore,
    model: GptNeoX,
}

/// HF names, shapes and weight-decay flags of all parameters, in the model's fixed order (the order
/// of the optimizer state).
pub fn parameter_names(c: &GptNeoXConfig) -> Vec<(String, Vec<usize>, bool)> {
    let h = c.hidden_size;
    let mut out = vec![(
        "gpt_neox.embed_in.weight".to_string(),
        vec![c.vocab_size, h],
        true,
    )];
    for i in 0..c.num_hidden_layers {
        let p = GptNeoX::layer_prefix(i);
        for ln in ["input_layernorm", "post_attention_layernorm"] {
            out.push((format!("{p}.{ln}.weight"), vec![h], false));
            out.push((format!("{p}.{ln}.bias"), vec![h], false));
        }
        for (name, din, dout) in GptNeoX::block_linears(c) {
            out.push((format!("{p}.{name}.weight"), vec![dout, din], true));
            out.push((format!("{p}.{name}.bias"), vec![dout], false));
        }
    }
    out.push(("gpt_neox.final_layer_norm.weight".into(), vec![h], false));
    out.push(("gpt_neox.final_layer_norm.bias".into(), vec![h], false));
    out.push(("embed_out.weight".to_string(), vec![c.vocab_size, h], true));
    out
}

/// Checks that the config is one this trainer implements.
pub fn check_trainable(c: &GptNeoXConfig) -> Result<()> {
    let bad = |what: &str| Err(PretrainError::Config(format!("trainable GPT-NeoX: {what}")));
    if !c.use_parallel_residual {
        return bad("only use_parallel_residual = true is implemented");
    }
    if c.tie_word_embeddings {
        return bad("only untied embeddings (tie_word_embeddings = false) are implemented");
    }
    if !c.attention_bias {
        return bad("only attention_bias = true is implemented");
    }
    if c.hidden_act != "gelu" {
        return bad("only hidden_act = \"gelu\" is implemented");
    }
    Ok(())
}

impl TrainableGptNeoX {
    /// Fresh weights from `seed`: N(0, 0.02²) matrices, output projections (attention `dense`, MLP
    /// `dense_4h_to_h`) scaled by 1/√(2L) as in GPT-2/NeoX, zero biases, unit LayerNorm gains.
    pub fn init(config: &GptNeoXConfig, seed: u64, device: &Device) -> Result<Self> {
        check_trainable(config)?;
        let mut rng = w2sg_data::SplitMix64::new(seed ^ 0x005E_ED0F_1417);
        let out_std = 0.02 / (2.0 * config.num_hidden_layers as f64).sqrt();
        let mut tensors = Vec::new();
        for (name, shape, _) in parameter_names(config) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with("layernorm.weight")
                || name.ends_with("final_layer_norm.weight")
            {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                let std = if name.ends_with("attention.dense.weight")
                    || name.ends_with("dense_4h_to_h.weight")
                {
                    out_std
                } else {
                    0.02
                };
                (0..n).map(|_| (rng.next_normal() * std) as f32).collect()
            };
            tensors.push((name, Tensor::from_vec(data, shape, device)?));
        }
        Self::from_tensors(config, tensors, device)
    }

    /// Builds the model from named tensors (in any order); every parameter must be present with the
    /// shape the config implies.
    pub fn from_tensors(
        config: &GptNeoXConfig,
        tensors: Vec<(String, Tensor)>,
        device: &Device,
    ) -> Result<Self> {
        check_trainable(config)?;
        let mut map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
        let mut store = VarStore::new(device);
        for (name, shape, decay) in parameter_names(config) {
            let t = map
                .remove(&name)
                .ok_or_else(|| PretrainError::Config(format!("missing tensor `{name}`")))?;
            if t.dims() != shape.as_slice() {
                return Err(PretrainError::Config(format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            store.insert(&name, &t, decay)?;
        }
        let model = GptNeoX::load(config, &store)?;
        Ok(TrainableGptNeoX { store, model })
    }

    pub fn config(&self) -> &GptNeoXConfig {
        self.model.config()
    }

    pub fn params(&self) -> &[Param] {
        self.store.params()
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// The model itself (for hidden states and logits).
    pub fn model(&self) -> &GptNeoX {
        &self.model
    }

    /// Number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.store.num_parameters()
    }

    /// `(name, tensor)` pairs, HF names, in the fixed order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.store.named_tensors()
    }

    /// Logits (B, T, vocab) for token ids (B, T).
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let req = crate::model::Request::default().with_logits();
        Ok(self
            .model
            .forward(input_ids, &req)?
            .logits
            .expect("requested"))
    }

    /// Mean next-token cross-entropy of `targets` (B, T) given `inputs` (B, T).
    pub fn loss(&self, inputs: &Tensor, targets: &Tensor) -> Result<Tensor> {
        if inputs.dim(1)? > self.config().max_position_embeddings {
            return Err(PretrainError::Config(format!(
                "sequence length {} exceeds max_position_embeddings {}",
                inputs.dim(1)?,
                self.config().max_position_embeddings
            )));
        }
        Ok(self.model.lm_loss(inputs, targets)?)
    }
}

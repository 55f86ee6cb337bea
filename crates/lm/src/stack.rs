//! What every architecture's forward pass shares: the [`Request`] (which hidden states, logits or not),
//! the [`Output`], the input checks, and the layer stack that stops at the deepest layer needed.
//!
//! It sits below the model files and [`crate::model`] (which dispatches over them), so that neither
//! imports the other for it.

use candle_core::{DType, Tensor};

use crate::error::{LmError, Result};

/// What a forward pass should return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Hidden-state indices to return (0 = embeddings … L = after the final norm).
    pub hidden_states: Vec<usize>,
    /// Whether to compute logits (B, T, vocab).
    pub logits: bool,
}

impl Request {
    /// Every hidden state, 0..=L.
    pub fn all_hidden_states(num_layers: usize) -> Self {
        Request {
            hidden_states: (0..=num_layers).collect(),
            logits: false,
        }
    }

    /// One hidden state.
    pub fn hidden_state(index: usize) -> Self {
        Request {
            hidden_states: vec![index],
            logits: false,
        }
    }

    /// Also compute logits.
    pub fn with_logits(mut self) -> Self {
        self.logits = true;
        self
    }
}

/// Result of a forward pass.
#[derive(Debug, Clone)]
pub struct Output {
    /// (index, tensor (B, T, hidden)) for each requested index, in increasing index order.
    pub hidden_states: Vec<(usize, Tensor)>,
    /// (B, T, vocab) if requested.
    pub logits: Option<Tensor>,
}

impl Output {
    /// The hidden state at `index`, if it was requested.
    pub fn hidden_state(&self, index: usize) -> Option<&Tensor> {
        self.hidden_states
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, t)| t)
    }
}

/// Checks a request against the number of layers and the token ids against the vocabulary.
pub(crate) fn check_inputs(
    input_ids: &Tensor,
    request: &Request,
    num_layers: usize,
    vocab: usize,
    max_positions: usize,
) -> Result<()> {
    if let Some(&bad) = request.hidden_states.iter().find(|&&i| i > num_layers) {
        return Err(LmError::Input(format!(
            "hidden state {bad} requested, but the model has {num_layers} layers (indices 0..={num_layers})"
        )));
    }
    let dims = input_ids.dims();
    if dims.len() != 2 || dims[0] == 0 || dims[1] == 0 {
        return Err(LmError::Input(format!(
            "input ids must have shape (batch, tokens), got {dims:?}"
        )));
    }
    if dims[1] > max_positions {
        return Err(LmError::Input(format!(
            "{} tokens exceed the model's context of {max_positions} (truncate the input)",
            dims[1]
        )));
    }
    if input_ids.dtype() != DType::U32 {
        return Err(LmError::Input(format!(
            "input ids must be u32, got {:?}",
            input_ids.dtype()
        )));
    }
    let max = input_ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
    if max as usize >= vocab {
        return Err(LmError::Input(format!(
            "token id {max} is outside the model's vocabulary of {vocab} (tokenizer and model do not match?)"
        )));
    }
    Ok(())
}

/// Runs the layer stack shared by all architectures from hidden state `start` (`x`; 0 = the
/// embeddings): layers start+1.. (stopping at the deepest one needed), the final norm at index L, and
/// the output head if logits are requested. Starting later than 0 is how fine-tuning the last k
/// blocks reuses the frozen blocks' cached output.
pub(crate) fn run_stack<L>(
    x: Tensor,
    start: usize,
    layers: &[L],
    layer_forward: impl Fn(&L, &Tensor) -> Result<Tensor>,
    final_norm: impl Fn(&Tensor) -> Result<Tensor>,
    head: impl Fn(&Tensor) -> Result<Tensor>,
    request: &Request,
) -> Result<Output> {
    let n = layers.len();
    let deepest = if request.logits {
        n
    } else {
        request.hidden_states.iter().copied().max().unwrap_or(0)
    };
    let mut wanted: Vec<usize> = request.hidden_states.clone();
    wanted.sort_unstable();
    wanted.dedup();
    if let Some(&bad) = wanted.iter().find(|&&i| i < start) {
        return Err(LmError::Input(format!(
            "hidden state {bad} requested from a pass that starts at {start}"
        )));
    }
    let mut hidden_states = Vec::with_capacity(wanted.len());
    let mut x = x;
    if wanted.first() == Some(&start) {
        hidden_states.push((start, x.clone()));
    }
    for (i, layer) in layers.iter().enumerate().take(deepest).skip(start) {
        x = layer_forward(layer, &x)?;
        if i + 1 == n {
            x = final_norm(&x)?;
        }
        if wanted.binary_search(&(i + 1)).is_ok() {
            hidden_states.push((i + 1, x.clone()));
        }
    }
    let logits = if request.logits {
        Some(head(&x)?)
    } else {
        None
    };
    Ok(Output {
        hidden_states,
        logits,
    })
}

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
    /// One position per sequence at which the model's **last layer** is computed, instead of every
    /// position: what a classifier on the last real token needs. That layer's attention still reads
    /// every position's keys and values, but its output projection, MLP and residual run on one row
    /// per sequence, so hidden state L (and the logits) come out (B, 1, ·); the other hidden states
    /// are unchanged. The result at those rows is the full pass's, up to the order of float sums
    /// inside the GEMMs (about 3/4 of the last layer's work is skipped). Ignored by a pass that
    /// stops before the last layer.
    pub last_layer_positions: Option<Vec<usize>>,
    /// The deepest hidden state requested is only where a backward pass starts
    /// ([`crate::ops::gradient_seed`]), never read: its layer may skip computing the projections
    /// whose output only adds into the layer's output (their backward passes need their inputs and
    /// the output's gradient, not their values), so **that state's values are wrong** and its graph
    /// right. What block recomputation asks for. Ignored when the deepest state is L (the final
    /// norm reads its input).
    pub gradient_only: bool,
}

impl Request {
    /// Every hidden state, 0..=L.
    pub fn all_hidden_states(num_layers: usize) -> Self {
        Request {
            hidden_states: (0..=num_layers).collect(),
            ..Request::default()
        }
    }

    /// One hidden state.
    pub fn hidden_state(index: usize) -> Self {
        Request {
            hidden_states: vec![index],
            ..Request::default()
        }
    }

    /// Also compute logits.
    pub fn with_logits(mut self) -> Self {
        self.logits = true;
        self
    }

    /// Computes the last layer at one position per sequence only
    /// ([`Request::last_layer_positions`]).
    pub fn at_positions(mut self, positions: Vec<usize>) -> Self {
        self.last_layer_positions = Some(positions);
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

/// How [`run_stack`] asks a layer to run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LayerRun<'a> {
    /// Compute the output at these flat rows only ([`at_rows`]; the last layer, under
    /// [`Request::last_layer_positions`]).
    pub rows: Option<&'a Tensor>,
    /// The output's values are never read, only its graph ([`Request::gradient_only`]): the
    /// projections that only add into it may run through
    /// [`crate::layers::Linear::forward_maybe_for_gradient`].
    pub gradient_only: bool,
}

/// The rows `rows` (flat indices into B·T) of a (B, T, H) tensor, as (B, 1, H); `t` itself when
/// `rows` is `None`. How a layer computed at one position per sequence
/// ([`Request::last_layer_positions`]) narrows its attention output and its residual input: a
/// gather, whose backward pass scatters the rows' gradients back.
pub(crate) fn at_rows(t: &Tensor, rows: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let Some(rows) = rows else {
        return Ok(t.clone());
    };
    let (_, _, h) = t.dims3()?;
    let n = rows.dim(0)?;
    t.reshape(((), h))?
        .index_select(rows, 0)?
        .reshape((n, 1, h))
}

/// The flat row indices b·T + p of the positions of `request` for a (B, T, ·) input, checked.
fn position_rows(x: &Tensor, positions: &[usize]) -> Result<Tensor> {
    let (b, t) = (x.dim(0)?, x.dim(1)?);
    if positions.len() != b {
        return Err(LmError::Input(format!(
            "last_layer_positions holds {} positions for a batch of {b} sequences",
            positions.len()
        )));
    }
    if let Some(&bad) = positions.iter().find(|&&p| p >= t) {
        return Err(LmError::Input(format!(
            "last_layer_positions: position {bad} is outside sequences of {t} tokens"
        )));
    }
    let flat: Vec<u32> = positions
        .iter()
        .enumerate()
        .map(|(i, &p)| (i * t + p) as u32)
        .collect();
    Ok(Tensor::from_vec(flat, b, x.device())?)
}

/// Runs the layer stack shared by all architectures from hidden state `start` (`x`; 0 = the
/// embeddings): layers start+1.. (stopping at the deepest one needed), the final norm at index L, and
/// the output head if logits are requested. Starting later than 0 is how fine-tuning the last k
/// blocks reuses the frozen blocks' cached output. `layer_forward` is told how to run each layer
/// ([`LayerRun`]).
pub(crate) fn run_stack<L>(
    x: Tensor,
    start: usize,
    layers: &[L],
    layer_forward: impl Fn(&L, &Tensor, LayerRun<'_>) -> Result<Tensor>,
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
    let rows = match &request.last_layer_positions {
        Some(p) if deepest == n && start < n => Some(position_rows(&x, p)?),
        _ => None,
    };
    let mut hidden_states = Vec::with_capacity(wanted.len());
    let mut x = x;
    if wanted.first() == Some(&start) {
        hidden_states.push((start, x.clone()));
    }
    for (i, layer) in layers.iter().enumerate().take(deepest).skip(start) {
        let last = i + 1 == n;
        let run = LayerRun {
            rows: rows.as_ref().filter(|_| last),
            gradient_only: request.gradient_only && i + 1 == deepest && !last,
        };
        x = layer_forward(layer, &x, run)?;
        if last {
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

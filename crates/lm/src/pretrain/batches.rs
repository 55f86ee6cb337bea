//! Training and validation batches from token streams.
//!
//! A training batch is a function of (seed, step) only: row r of step s is the window of `context + 1`
//! tokens starting at `hash(seed, s, r) mod (n − context − 1)` of the training stream. So the "data
//! position" of a run is its step count, and a run resumed at step s draws exactly the batches the
//! uninterrupted run drew — no sampler state to save. Windows may cross document boundaries, which
//! are marked by `<|endoftext|>`, as in Pythia's packed sequences.
//!
//! Validation uses fixed, non-overlapping windows from the start of the validation stream, so every
//! checkpoint of a family is scored on the same tokens.

use candle_core::{Device, Tensor};

use super::{PretrainError, Result};
use w2sg_data::SplitMix64;

/// Inputs and next-token targets, both (B, T) u32.
#[derive(Debug, Clone)]
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
}

impl Batch {
    /// Builds a batch from windows of `context + 1` tokens.
    pub fn from_windows(windows: &[&[u32]], context: usize, device: &Device) -> Result<Self> {
        let b = windows.len();
        let mut inputs = Vec::with_capacity(b * context);
        let mut targets = Vec::with_capacity(b * context);
        for w in windows {
            inputs.extend_from_slice(&w[..context]);
            targets.extend_from_slice(&w[1..context + 1]);
        }
        Ok(Batch {
            inputs: Tensor::from_vec(inputs, (b, context), device)?,
            targets: Tensor::from_vec(targets, (b, context), device)?,
        })
    }

    /// Tokens predicted by this batch.
    pub fn num_tokens(&self) -> usize {
        self.targets.elem_count()
    }
}

fn check_len(stream: &[u32], context: usize, what: &str) -> Result<()> {
    if stream.len() < context + 2 {
        return Err(PretrainError::Config(format!(
            "the {what} text has {} tokens, fewer than context + 2 = {}: use more text or a shorter context",
            stream.len(),
            context + 2
        )));
    }
    Ok(())
}

/// The training batch of update `step`.
pub fn train_batch(
    stream: &[u32],
    seed: u64,
    step: u64,
    batch_size: usize,
    context: usize,
    device: &Device,
) -> Result<Batch> {
    check_len(stream, context, "training")?;
    let span = (stream.len() - context - 1) as u64;
    let mut rng = SplitMix64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step.rotate_left(32));
    let windows: Vec<&[u32]> = (0..batch_size)
        .map(|_| {
            let start = (rng.next() % span) as usize;
            &stream[start..start + context + 1]
        })
        .collect();
    Batch::from_windows(&windows, context, device)
}

/// Validation batches: up to `max_tokens` predicted tokens in non-overlapping windows.
pub fn validation_batches(
    stream: &[u32],
    max_tokens: usize,
    batch_size: usize,
    context: usize,
    device: &Device,
) -> Result<Vec<Batch>> {
    check_len(stream, context, "validation")?;
    let n_windows = ((stream.len() - 1) / context).min(max_tokens.div_ceil(context).max(1));
    let windows: Vec<&[u32]> = (0..n_windows)
        .map(|i| &stream[i * context..i * context + context + 1])
        .collect();
    windows
        .chunks(batch_size.max(1))
        .map(|c| Batch::from_windows(c, context, device))
        .collect()
}

//! Micro-batches through the model and the classifier head, and their gradients: on candle's graph
//! of the whole model, or by recomputing one block at a time (activation checkpointing).
//!
//! candle's backward pass keeps every node of the graph alive until it returns, so training on the
//! whole graph holds every block's activations at once (about 40 MiB per GPT-NeoX block of
//! Pythia-70m's shape at 8 × 128 tokens, plus the gradients in flight). Recomputing keeps only the
//! hidden states between blocks:
//! 1. forward through the trained blocks without a graph (the model over detached views of the
//!    variables, which share their storage and so see every optimizer update), keeping the hidden
//!    state between blocks; the final state gives the logits, the targets and the loss (the same
//!    bits as the whole graph's, since every fused op gives the same bits tracked and untracked);
//! 2. then, for each group of sequences of at most [`RECOMPUTE_TOKENS`] padded tokens (attention
//!    never crosses sequences, so groups are independent): the last block, the final norm and the
//!    head with a graph from that block's input as a leaf, whose loss's backward pass gives the
//!    head's and the block's gradients and the leaf's; then down the blocks, block i again with a
//!    graph from its input, and a backward pass started at its output with the gradient `g_out`
//!    ([`ops::gradient_seed`], as `Σ out ⊙ g_out` would) gives the block's gradients and the
//!    gradient at its input.
//!
//! Only one block of one group is on a graph at a time. The gradients are the whole graph's up to
//! the order of float sums (the groups' gradients are added, and a block input's gradient
//! contributions may be summed in another order); same bits for every thread count. The cost is one
//! more forward pass through the trained blocks, less what the recomputed block's output does not
//! need: that output is never read (only its gradient is given), so the projections whose output
//! only adds into it skip computing their values ([`Request::gradient_only`]: both output
//! projections of a GPT-NeoX block with the parallel residual, about 40 % of its GEMM work; the
//! MLP's output projection of a sequential GPT-NeoX, OLMo or Llama block; none in OLMo 2, whose
//! norm after the MLP reads it).
//!
//! Under last-token pooling the classifier reads one row per sequence of hidden state L, so the
//! last block runs at that row only ([`Request::last_layer_positions`]): its keys and values at
//! every position, its output projection, MLP, residual and final norm on one row per sequence. In
//! every pass (forward, recomputation, backward) that skips about 3/4 of the last block, a tenth
//! of a step on Pythia-70m's shape; the logits are the full pass's up to the order of float sums in
//! the GEMMs. (HF's sequence classifiers run the last block at every position, then pick the row.)
//!
//! Recomputation is on under LoRA ([`super::FinetuneConfig::recomputes`]): there the frozen base
//! makes the activations most of the memory, and the detached model reads the base weights as they
//! are (a trained base weight could be copied at load time, e.g. concatenated, and miss updates).

use std::cell::Cell;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

use crate::error::{LmError, Result};
use crate::features::{last_positions, pad_right, pool_output, Pooling};
use crate::model::{Model, Request};
use crate::ops;
use crate::weights::Param;

thread_local! {
    static RECOMPUTE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Runs `f` with block recomputation under LoRA turned on or off on this thread (the other modes
/// never recompute): how the tests check the two backward passes against each other, and how the benchmark
/// measures both.
pub fn with_block_recompute<R>(on: bool, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<bool>);
    impl Drop for Reset {
        fn drop(&mut self) {
            RECOMPUTE.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(RECOMPUTE.with(|c| c.replace(Some(on))));
    f()
}

/// The forced setting, if any.
pub(super) fn recompute_override() -> Option<bool> {
    RECOMPUTE.with(|c| c.get())
}

/// Per-example model inputs: token ids, or the frozen blocks' output (len × H) when training starts
/// above the embeddings.
pub(super) enum Inputs {
    Ids(Vec<Vec<u32>>),
    Cached(Vec<Tensor>),
}

/// A padded micro-batch at hidden state `start`: token ids (start 0), or hidden states.
#[derive(Clone)]
enum Batch {
    Ids(Tensor),
    Hidden(Tensor),
}

/// Padded tokens per group of sequences whose gradients are recomputed together.
const RECOMPUTE_TOKENS: usize = 512;

/// Runs micro-batches through the model from hidden state `start` and the classifier head.
pub(super) struct Runner<'a> {
    /// The model with every weight frozen, when training starts above the embeddings.
    pub frozen: Option<&'a Model>,
    pub model: &'a Model,
    /// The training model over detached views of the variables: when set, gradients are computed
    /// by recomputing one block at a time.
    pub recompute: Option<&'a Model>,
    pub start: usize,
    pub num_layers: usize,
    pub pooling: Pooling,
    pub device: &'a Device,
    pub head_w: Tensor,
    pub head_b: Tensor,
    /// The token-embedding table when it trains: its gradient is formed here rather than by
    /// candle (see [`Runner::loss_and_grads`]).
    pub embedding: Option<Tensor>,
}

/// Σ over the batch of the numerically stable binary cross-entropy with logits z and targets t.
fn bce_sum(z: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
    ((z.relu()? - (z * t)?)? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?.sum_all()
}

/// The gradient of an embedding table (V, H) whose rows `ids` (B, T) received `g_rows` (B, T, H):
/// each token's row added into the table's row, in token order (so the bits do not depend on the
/// thread count). The table-sized buffer comes zeroed from the allocator, untouched rows cost no
/// writes.
fn scatter_rows(table: &Tensor, ids: &Tensor, g_rows: &Tensor) -> Result<Tensor> {
    let (vocab, hidden) = table.dims2()?;
    let ids = ids.flatten_all()?.to_vec1::<u32>()?;
    let g = g_rows.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; vocab * hidden];
    for (k, &id) in ids.iter().enumerate() {
        let row = &mut out[id as usize * hidden..(id as usize + 1) * hidden];
        for (o, &v) in row.iter_mut().zip(&g[k * hidden..(k + 1) * hidden]) {
            *o += v;
        }
    }
    Ok(Tensor::from_vec(out, (vocab, hidden), table.device())?)
}

/// Adds `g`'s gradients of `params` into `acc`, in the parameters' order.
fn merge(acc: &mut GradStore, g: &GradStore, params: &[Param]) -> Result<()> {
    for p in params {
        let t = p.var.as_tensor();
        if let Some(b) = g.get(t) {
            let sum = match acc.get(t) {
                Some(a) => (a + b)?,
                None => b.clone(),
            };
            acc.insert(t, sum);
        }
    }
    Ok(())
}

impl Runner<'_> {
    pub(super) fn inputs(&self, ids: &[Vec<u32>], batch: usize) -> Result<Inputs> {
        if self.start == 0 {
            return Ok(Inputs::Ids(ids.to_vec()));
        }
        let mut cached = Vec::with_capacity(ids.len());
        let idx: Vec<usize> = (0..ids.len()).collect();
        for b in idx.chunks(batch) {
            let seqs: Vec<&[u32]> = b.iter().map(|&i| ids[i].as_slice()).collect();
            let padded = pad_right(&seqs, 0, self.device)?;
            let frozen = self
                .frozen
                .expect("a frozen model when training starts above the embeddings");
            let out = frozen.forward(&padded.input_ids, &Request::hidden_state(self.start))?;
            let h = out.hidden_state(self.start).expect("requested");
            for (row, s) in seqs.iter().enumerate() {
                cached.push(h.get(row)?.narrow(0, 0, s.len())?.contiguous()?);
            }
        }
        Ok(Inputs::Cached(cached))
    }

    /// The padded micro-batch `batch` at hidden state `start`, and its attention mask (B, T).
    fn batch(&self, inputs: &Inputs, batch: &[usize]) -> Result<(Batch, Tensor)> {
        match inputs {
            Inputs::Ids(ids) => {
                let seqs: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
                let padded = pad_right(&seqs, 0, self.device)?;
                Ok((Batch::Ids(padded.input_ids), padded.attention_mask))
            }
            Inputs::Cached(states) => {
                let t = batch
                    .iter()
                    .map(|&i| states[i].dim(0))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let tmax = t.iter().copied().max().unwrap_or(0);
                let hidden = states[0].dim(1)?;
                let mut rows = Vec::with_capacity(batch.len());
                let mut mask = Vec::with_capacity(batch.len() * tmax);
                for (&i, &len) in batch.iter().zip(&t) {
                    let s = &states[i];
                    rows.push(if len < tmax {
                        Tensor::cat(
                            &[
                                s,
                                &Tensor::zeros((tmax - len, hidden), s.dtype(), self.device)?,
                            ],
                            0,
                        )?
                    } else {
                        s.clone()
                    });
                    mask.extend((0..tmax).map(|j| if j < len { 1f32 } else { 0.0 }));
                }
                Ok((
                    Batch::Hidden(Tensor::stack(&rows, 0)?),
                    Tensor::from_vec(mask, (batch.len(), tmax), self.device)?,
                ))
            }
        }
    }

    /// Whether the last block runs at the pooled position only: under last-token pooling the
    /// classifier reads one row per sequence of hidden state L, so the last block's output
    /// projection, MLP and residual run on that row alone ([`Request::last_layer_positions`]).
    /// Not when no block trains above the cached state L (the head reads it as it is).
    fn pooled_last_block(&self) -> bool {
        self.pooling == Pooling::LastToken && self.start < self.num_layers
    }

    /// The hidden states `wanted` of `model`, run from hidden state `from` whose value is `x`, the
    /// last block at the pooled positions of `mask` when [`Runner::pooled_last_block`].
    fn run(
        &self,
        model: &Model,
        x: &Batch,
        mask: &Tensor,
        from: usize,
        wanted: Vec<usize>,
    ) -> Result<Vec<Tensor>> {
        let request = Request {
            last_layer_positions: if self.pooled_last_block() && wanted.contains(&self.num_layers) {
                Some(last_positions(mask)?)
            } else {
                None
            },
            hidden_states: wanted,
            logits: false,
            gradient_only: false,
        };
        self.pass(model, x, from, &request)
    }

    /// The hidden states `request` asks for, of `model` run from hidden state `from` = `x`.
    fn pass(
        &self,
        model: &Model,
        x: &Batch,
        from: usize,
        request: &Request,
    ) -> Result<Vec<Tensor>> {
        let out = match x {
            Batch::Ids(ids) => model.forward(ids, request)?,
            Batch::Hidden(h) => model.forward_from(h.clone(), from, request)?,
        };
        Ok(out.hidden_states.into_iter().map(|(_, t)| t).collect())
    }

    /// Block `i` (with the final norm after the last block) on its input `x`.
    fn block(&self, x: &Batch, mask: &Tensor, i: usize) -> Result<Tensor> {
        Ok(self.run(self.model, x, mask, i, vec![i + 1])?.remove(0))
    }

    /// The gradients of `Σ out ⊙ g_out` for the output `out` of block `i` < L − 1 on its input `x`:
    /// the block's graph with the output's values skipped where they only add into it
    /// ([`Request::gradient_only`]), seeded with `g_out` ([`ops::gradient_seed`]).
    fn block_gradients(&self, x: &Batch, i: usize, g_out: &Tensor) -> Result<GradStore> {
        let request = Request {
            hidden_states: vec![i + 1],
            gradient_only: true,
            ..Request::default()
        };
        let out = self.pass(self.model, x, i, &request)?.remove(0);
        Ok(ops::gradient_seed(&out, g_out)?.backward()?)
    }

    /// The pooled final hidden states (B, H): hidden state L (B, T, H) pooled with the mask, or
    /// its one row per sequence (B, 1, H) when the last block ran at the pooled positions.
    fn pooled(&self, h: &Tensor, mask: &Tensor) -> Result<Tensor> {
        pool_output(h, mask, self.pooling, self.pooled_last_block())
    }

    /// The classifier's logits (B,) from the final hidden states.
    fn head(&self, h: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let z = self
            .pooled(h, mask)?
            .matmul(&self.head_w.t()?)?
            .broadcast_add(&self.head_b)?;
        Ok(z.squeeze(1)?)
    }

    /// Logits (B,) of the examples `batch`.
    pub(super) fn logits(&self, inputs: &Inputs, batch: &[usize]) -> Result<Tensor> {
        let (x, mask) = self.batch(inputs, batch)?;
        let h = self
            .run(self.model, &x, &mask, self.start, vec![self.num_layers])?
            .remove(0);
        self.head(&h, &mask)
    }

    /// One micro-batch: its logits go to `targets`, which returns the effective targets t̂; returns
    /// the loss `Σ BCE(z, t̂) / denom` and the gradients of `params`.
    pub(super) fn loss_and_grads(
        &self,
        inputs: &Inputs,
        batch: &[usize],
        denom: f64,
        params: &[Param],
        targets: &mut dyn FnMut(&[f32]) -> Result<Tensor>,
    ) -> Result<(f32, GradStore)> {
        let mut grads = GradStore::default();
        let Some(nograd) = self.recompute else {
            let (x, mask) = self.batch(inputs, batch)?;
            // A trained embedding table: the lookup is a leaf of the graph, and the table's
            // gradient is the leaf's scattered into the table's rows. candle's own backward pass
            // of the lookup would zero a table-sized tensor, then copy it into a second one to add
            // the rows (two fresh 100 MB buffers per micro-batch on Pythia-70m, most of whose time
            // is page faults); this touches only the rows of the batch's tokens. On the CPU: on a
            // GPU candle's own scatter runs on the device.
            let embedded = match (&self.embedding, &x) {
                (Some(table), Batch::Ids(ids)) if self.start == 0 && self.device.is_cpu() => {
                    let h0 = self
                        .run(self.model, &x, &mask, 0, vec![0])?
                        .remove(0)
                        .detach();
                    Some((table, ids.clone(), Var::from_tensor(&h0)?))
                }
                _ => None,
            };
            let x = match &embedded {
                Some((_, _, leaf)) => Batch::Hidden(leaf.as_tensor().clone()),
                None => x,
            };
            let h = self
                .run(self.model, &x, &mask, self.start, vec![self.num_layers])?
                .remove(0);
            let z = self.head(&h, &mask)?;
            let t = targets(&z.to_vec1::<f32>()?)?;
            let loss = (bce_sum(&z, &t)? / denom)?;
            let g = loss.backward()?;
            merge(&mut grads, &g, params)?;
            if let Some((table, ids, leaf)) = embedded {
                let g_rows = g.get(leaf.as_tensor()).ok_or_else(|| {
                    LmError::Compute(candle_core::Error::Msg(
                        "finetune: no gradient reached the token embeddings".into(),
                    ))
                })?;
                grads.insert(table, scatter_rows(table, &ids, g_rows)?);
            }
            return Ok((loss.to_scalar::<f32>()?, grads));
        };
        let (s, l) = (self.start, self.num_layers);
        let (x, mask) = self.batch(inputs, batch)?;
        // Hidden states s+1 … L without a graph: the inputs of the trained blocks above the first,
        // and the final state, whose logits (the same bits as the graph's) give the targets and the
        // loss.
        let mut states = self.run(nograd, &x, &mask, s, (s + 1..=l).collect())?;
        let last = states.pop().expect("hidden state L requested");
        let z = {
            let z = self
                .pooled(&last, &mask)?
                .matmul(&self.head_w.detach().t()?)?
                .broadcast_add(&self.head_b.detach())?;
            z.squeeze(1)?
        };
        drop(last);
        let t = targets(&z.to_vec1::<f32>()?)?;
        let loss = (bce_sum(&z, &t)? / denom)?.to_scalar::<f32>()?;
        // Gradients, a group of sequences at a time (attention never crosses sequences): a
        // group's recomputed block holds its activations, so groups bound the memory.
        let (nb, tlen) = mask.dims2()?;
        let per_group = (RECOMPUTE_TOKENS / tlen.max(1)).clamp(1, nb);
        for r0 in (0..nb).step_by(per_group) {
            let n = per_group.min(nb - r0);
            let rows = |t: &Tensor| t.narrow(0, r0, n);
            // Block i's input: the batch for the first block, else a leaf whose gradient is wanted.
            let input = |i: usize| -> Result<(Batch, Option<Var>)> {
                if i == s {
                    return Ok((
                        match &x {
                            Batch::Ids(t) => Batch::Ids(rows(t)?),
                            Batch::Hidden(t) => Batch::Hidden(rows(t)?),
                        },
                        None,
                    ));
                }
                let leaf = Var::from_tensor(&rows(&states[i - s - 1])?)?;
                Ok((Batch::Hidden(leaf.as_tensor().clone()), Some(leaf)))
            };
            let (top, leaf) = input(l - 1)?;
            let group_mask = rows(&mask)?;
            let z = self.head(&self.block(&top, &group_mask, l - 1)?, &group_mask)?;
            let g = (bce_sum(&z, &rows(&t)?)? / denom)?.backward()?;
            merge(&mut grads, &g, params)?;
            let mut g_out = leaf.and_then(|v| g.get(v.as_tensor()).cloned());
            drop(g);
            for i in (s..l - 1).rev() {
                let g_next = g_out.take().ok_or_else(|| {
                    LmError::Compute(candle_core::Error::Msg(format!(
                        "finetune: no gradient reached the input of block {}",
                        i + 1
                    )))
                })?;
                let (xi, leaf) = input(i)?;
                let g = self.block_gradients(&xi, i, &g_next)?;
                merge(&mut grads, &g, params)?;
                g_out = leaf.and_then(|v| g.get(v.as_tensor()).cloned());
            }
        }
        Ok((loss, grads))
    }
}

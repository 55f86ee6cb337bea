//! Text → features: tokenize, batch with padding, run to a chosen layer, pool.
//!
//! - **Tokenization** uses the checkpoint's `tokenizer.json` (`tokenizers` crate) with the tokenizer's
//!   own special tokens, as HF's `tokenizer(text)` does.
//! - **Truncation**: inputs longer than `max_tokens` (default: the model's context) keep their first
//!   `max_tokens` tokens and are counted in [`Features::num_truncated`] and flagged per example. An
//!   input is never dropped; an empty one (no tokens) is an error naming its index.
//! - **Batching**: examples are sorted by length so that a batch pads little, run at most
//!   `batch_size` sequences and `max_batch_tokens` padded tokens at a time (small activations stay in
//!   reused heap memory instead of fresh page-faulting allocations), and returned in input order. Padding is on the right; the attention mask records the real
//!   tokens.
//! - **Pooling** reads the attention mask, never the token ids: the last real token is at
//!   `sum(mask) − 1`. (`input_ids != pad` would be wrong for Pythia, whose id 0 `<|endoftext|>` is a
//!   real token and often the last one.) Mean pooling averages the real tokens only.
//!
//! Features are returned in f32 whatever the compute dtype.

use candle_core::{DType, Device, Tensor, D};
use tokenizers::Tokenizer;

use crate::error::{LmError, Result};
use crate::model::{Model, Request};

/// How a sequence of hidden states becomes one feature vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The hidden state of the last real token (the default for causal models).
    LastToken,
    /// The mean over real tokens.
    Mean,
}

impl Pooling {
    /// `last` or `mean`.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::LastToken => "last",
            Pooling::Mean => "mean",
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = LmError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "last" | "last_token" | "last-token" => Ok(Pooling::LastToken),
            "mean" => Ok(Pooling::Mean),
            _ => Err(LmError::Input(format!(
                "unknown pooling \"{s}\" (use last or mean)"
            ))),
        }
    }
}

/// Options of [`extract`].
#[derive(Debug, Clone)]
pub struct FeatureOptions {
    /// Hidden-state index: 0 = embeddings … L = last layer after the final norm; negative counts from
    /// the end (−1 = L, the default).
    pub layer: i64,
    pub pooling: Pooling,
    /// Most sequences per forward pass.
    pub batch_size: usize,
    /// Most padded tokens (sequences × longest length) per forward pass; a longer sequence runs alone.
    /// Bounds the activations' memory; default 4096.
    pub max_batch_tokens: usize,
    /// Truncation length; `None` = the model's `max_position_embeddings`.
    pub max_tokens: Option<usize>,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        FeatureOptions {
            layer: -1,
            pooling: Pooling::LastToken,
            batch_size: 16,
            max_batch_tokens: 4096,
            max_tokens: None,
        }
    }
}

/// Resolves a possibly negative layer index against L layers (valid: −(L+1) ..= L).
pub fn resolve_layer(layer: i64, num_layers: usize) -> Result<usize> {
    let n = num_layers as i64 + 1;
    let idx = if layer < 0 { n + layer } else { layer };
    if idx < 0 || idx >= n {
        return Err(LmError::Input(format!(
            "layer {layer} is out of range: the model has hidden states 0..={num_layers} (or -1..=-{n})"
        )));
    }
    Ok(idx as usize)
}

/// Token ids of a set of texts, after truncation.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<Vec<u32>>,
    /// Whether each example was truncated.
    pub truncated: Vec<bool>,
}

impl Encoded {
    /// Number of truncated examples.
    pub fn num_truncated(&self) -> usize {
        self.truncated.iter().filter(|&&t| t).count()
    }
}

/// Tokenizes texts (with the tokenizer's special tokens) and truncates each to `max_tokens`.
pub fn tokenize(tokenizer: &Tokenizer, texts: &[&str], max_tokens: usize) -> Result<Encoded> {
    if max_tokens == 0 {
        return Err(LmError::Input("max_tokens must be positive".into()));
    }
    let encodings = tokenizer
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| LmError::Input(format!("tokenization failed: {e}")))?;
    let mut ids = Vec::with_capacity(texts.len());
    let mut truncated = Vec::with_capacity(texts.len());
    for (i, enc) in encodings.iter().enumerate() {
        let mut v = enc.get_ids().to_vec();
        if v.is_empty() {
            return Err(LmError::EmptyText { index: i });
        }
        truncated.push(v.len() > max_tokens);
        v.truncate(max_tokens);
        ids.push(v);
    }
    Ok(Encoded { ids, truncated })
}

/// A right-padded batch: ids (B, T) u32 and the attention mask (B, T) f32 (1 = real token).
#[derive(Debug, Clone)]
pub struct PaddedBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
}

/// Pads sequences on the right to the longest one. The padding id is irrelevant to the results (the
/// causal mask keeps real tokens from seeing later positions); it only has to be a valid id.
pub fn pad_right(seqs: &[&[u32]], pad_id: u32, device: &Device) -> Result<PaddedBatch> {
    let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    if seqs.is_empty() || t == 0 {
        return Err(LmError::Input("cannot pad an empty batch".into()));
    }
    let mut ids = Vec::with_capacity(seqs.len() * t);
    let mut mask = Vec::with_capacity(seqs.len() * t);
    for s in seqs {
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(pad_id, t - s.len()));
        mask.extend(std::iter::repeat_n(1f32, s.len()));
        mask.extend(std::iter::repeat_n(0f32, t - s.len()));
    }
    Ok(PaddedBatch {
        input_ids: Tensor::from_vec(ids, (seqs.len(), t), device)?,
        attention_mask: Tensor::from_vec(mask, (seqs.len(), t), device)?,
    })
}

/// The position of each sequence's last real token, from a right-padded attention mask (B, T).
pub fn last_positions(attention_mask: &Tensor) -> Result<Vec<usize>> {
    attention_mask
        .to_dtype(DType::F32)?
        .sum(D::Minus1)?
        .to_vec1::<f32>()?
        .iter()
        .map(|&c| {
            if c < 1.0 {
                Err(LmError::Input(
                    "a sequence in the batch has no real tokens".into(),
                ))
            } else {
                Ok(c as usize - 1)
            }
        })
        .collect()
}

/// [`pool`] for the output of a pass whose last layer may have run at the last real tokens only
/// ([`crate::model::Request::last_layer_positions`], `at_positions`): that output is (B, 1, H),
/// already the last-token pooling.
pub(crate) fn pool_output(
    hidden: &Tensor,
    attention_mask: &Tensor,
    pooling: Pooling,
    at_positions: bool,
) -> Result<Tensor> {
    if at_positions {
        Ok(hidden.squeeze(1)?.to_dtype(DType::F32)?)
    } else {
        pool(hidden, attention_mask, pooling)
    }
}

/// Pools hidden states (B, T, H) with the attention mask (B, T) into (B, H) f32.
pub fn pool(hidden: &Tensor, attention_mask: &Tensor, pooling: Pooling) -> Result<Tensor> {
    let hidden = hidden.to_dtype(DType::F32)?;
    let mask = attention_mask.to_dtype(DType::F32)?;
    let (b, _, h) = hidden.dims3()?;
    let counts = mask.sum(D::Minus1)?; // (B,)
    match pooling {
        Pooling::LastToken => {
            let last: Vec<u32> = last_positions(&mask)?
                .into_iter()
                .map(|p| p as u32)
                .collect();
            let idx = Tensor::from_vec(last, (b, 1, 1), hidden.device())?
                .broadcast_as((b, 1, h))?
                .contiguous()?;
            Ok(hidden.gather(&idx, 1)?.squeeze(1)?)
        }
        Pooling::Mean => {
            let summed = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?; // (B, H)
            Ok(summed.broadcast_div(&counts.unsqueeze(1)?)?)
        }
    }
}

/// Pooled features of a set of texts.
#[derive(Debug, Clone)]
pub struct Features {
    /// (N, hidden) f32, in input order.
    pub values: Tensor,
    /// Tokens used per example (after truncation).
    pub lengths: Vec<usize>,
    /// Whether each example was truncated.
    pub truncated: Vec<bool>,
    /// Resolved hidden-state index.
    pub layer: usize,
    pub pooling: Pooling,
    /// Truncation length used.
    pub max_tokens: usize,
}

impl Features {
    /// Number of truncated examples.
    pub fn num_truncated(&self) -> usize {
        self.truncated.iter().filter(|&&t| t).count()
    }
}

/// Extracts pooled features of `texts`. `progress` is called with the number of examples finished
/// after each batch.
pub fn extract(
    model: &Model,
    tokenizer: &Tokenizer,
    texts: &[&str],
    opts: &FeatureOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Features> {
    let layer = resolve_layer(opts.layer, model.num_layers())?;
    let context = model.max_position_embeddings();
    let max_tokens = match opts.max_tokens {
        Some(m) if m > context => {
            return Err(LmError::Input(format!(
                "max_tokens {m} exceeds the model's context of {context} tokens"
            )))
        }
        Some(m) => m,
        None => context,
    };
    if opts.batch_size == 0 || opts.max_batch_tokens == 0 {
        return Err(LmError::Input(
            "batch size and tokens per batch must be positive".into(),
        ));
    }
    if texts.is_empty() {
        return Err(LmError::Input("no input texts".into()));
    }
    let encoded = tokenize(tokenizer, texts, max_tokens)?;
    let batches = plan_batches(&encoded, opts.batch_size, opts.max_batch_tokens);
    extract_encoded(
        model,
        &encoded,
        layer,
        opts.pooling,
        &batches,
        max_tokens,
        progress,
    )
}

/// Groups example indices into batches: longest first (similar lengths share a batch, and the largest
/// activations come first), at most `batch_size` sequences and `max_batch_tokens` padded tokens each.
pub fn plan_batches(
    encoded: &Encoded,
    batch_size: usize,
    max_batch_tokens: usize,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..encoded.ids.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(encoded.ids[i].len()));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted longest first, so the batch's padded length is that of its first sequence.
        let longest = current
            .first()
            .map_or(encoded.ids[i].len(), |&f| encoded.ids[f].len());
        if !current.is_empty()
            && (current.len() >= batch_size || (current.len() + 1) * longest > max_batch_tokens)
        {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// [`extract`] on already tokenized input, in the given batches; `layer` is a resolved index.
pub fn extract_encoded(
    model: &Model,
    encoded: &Encoded,
    layer: usize,
    pooling: Pooling,
    batches: &[Vec<usize>],
    max_tokens: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Features> {
    let n = encoded.ids.len();
    let device = model.device();
    // The last token of the last layer: that layer runs at the last real token of each sequence
    // only (its keys and values everywhere), which skips about 3/4 of its work.
    let last_only = pooling == Pooling::LastToken && layer == model.num_layers();
    let mut pooled: Vec<Option<Tensor>> = vec![None; n];
    let mut done = 0;
    for chunk in batches {
        let seqs: Vec<&[u32]> = chunk.iter().map(|&i| encoded.ids[i].as_slice()).collect();
        let batch = pad_right(&seqs, 0, device)?;
        let request = Request::hidden_state(layer);
        let request = if last_only {
            request.at_positions(last_positions(&batch.attention_mask)?)
        } else {
            request
        };
        let out = model.forward(&batch.input_ids, &request)?;
        let hidden = out
            .hidden_state(layer)
            .expect("requested hidden state is returned");
        let p = pool_output(hidden, &batch.attention_mask, pooling, last_only)?
            .to_device(&Device::Cpu)?;
        for (row, &i) in chunk.iter().enumerate() {
            pooled[i] = Some(p.get(row)?);
        }
        done += chunk.len();
        progress(done);
    }
    let rows: Vec<Tensor> = pooled
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| LmError::Input(format!("example {i} is in no batch"))))
        .collect::<Result<_>>()?;
    Ok(Features {
        values: Tensor::stack(&rows, 0)?,
        lengths: encoded.ids.iter().map(Vec::len).collect(),
        truncated: encoded.truncated.clone(),
        layer,
        pooling,
        max_tokens,
    })
}

//! Fine-tuning a checkpoint as a binary classifier: the whole model, its last k blocks, or LoRA
//! adapters, through the same model definition that extracts features and pre-trains.
//!
//! The classifier is one logit `z = s · pool(h_L) + c` on the pooled final hidden state (last real
//! token from the attention mask, or the mean over real tokens), with a fresh head `score.weight`
//! (1 × H, N(0, 0.02²) from the seed) and `score.bias` (0). Training minimises the mean binary
//! cross-entropy of z against an **effective target** t̂ that the caller computes from the batch's
//! current logits ([`Targets`]): every loss of Burns et al. (xent on soft labels, the auxiliary
//! confidence loss, the product loss) has gradient σ(z) − t̂ for such a detached t̂, so one loop serves
//! all three and the loss logic stays in the protocol crate.
//!
//! What is trained ([`FinetuneConfig::layers`], [`FinetuneConfig::lora_rank`]):
//! - `All`: every parameter the model reads except the unused language-model head;
//! - `Last(k)`, k ≥ 1: blocks L−k … L−1 and the final norm; `Last(0)`: the head only;
//! - LoRA (rank r > 0): adapters A (r × in, uniform ±1/√in as peft's Kaiming init) and B (out × r,
//!   zero) on every linear layer of the trained blocks, scaled by α/r; the base weights stay frozen.
//!
//! Names come from the model itself: a recording [`WeightSource`] lists every tensor the model file
//! reads, so the selection works for any architecture without per-architecture lists (a block's
//! tensors are those named `…layers.{i}.…` or `…blocks.{i}.…`; its linear layers are its 2-D weights).
//!
//! Memory: frozen weights are plain tensors (no gradient, no optimizer state); when only the last k
//! blocks train, the output of the frozen blocks is computed once per example and reused every epoch;
//! under LoRA the backward pass recomputes one block of one group of sequences at a time
//! (`finetune/runner.rs`), so that the activations of only one block are held (peak memory about
//! 1.2× that of inference on Pythia-70m's shape at 8 × 128 tokens, against 1.8× with the whole graph).
//!
//! Speed: under last-token pooling the last block runs at the pooled row of each sequence only
//! (its keys and values at every position), in training and evaluation alike (`finetune/runner.rs`).
//!
//! Determinism: the batch order is a seeded permutation per epoch, every op sums in a fixed order,
//! so the same seed gives the same bits with any number of threads. Gradient accumulation sums the
//! micro-batches' gradients in order; no gradient clipping (as in Burns et al.'s training loop).
//!
//! Resuming: [`finetune_resumable`] with a [`Resume`] writes an epoch checkpoint after each epoch
//! that more epochs follow, and a rerun continues after the last one with the same bits (what is
//! saved, why it is exact and what invalidates a checkpoint: [`resume`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use tokenizers::Tokenizer;

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::{LmError, Result};
use crate::features::{tokenize, Pooling};
use crate::model::Model;
use crate::optim::{AdamW, AdamWConfig};
use crate::pretrain::schedule::learning_rate;
use crate::weights::{CheckpointWeights, Layered, VarStore, WeightSource};

pub mod resume;
mod runner;
pub use resume::{Resume, ResumeReport};
pub use runner::with_block_recompute;
use runner::Runner;

/// Which blocks train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layers {
    /// The whole model (embeddings, every block, final norm).
    All,
    /// The last k blocks and the final norm; 0 = the classifier head only.
    Last(usize),
}

/// Settings of one fine-tuning run.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneConfig {
    pub layers: Layers,
    /// > 0: LoRA adapters of this rank on the trained blocks' linear layers, base weights frozen.
    pub lora_rank: usize,
    pub lora_alpha: f64,
    pub epochs: usize,
    /// Peak learning rate (linear warmup, then cosine decay to 0).
    pub lr: f64,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accumulation: usize,
    pub warmup_frac: f64,
    pub weight_decay: f64,
    /// Longest input, in tokens (longer inputs keep their first tokens).
    pub max_tokens: usize,
    pub pooling: Pooling,
    pub seed: u64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            layers: Layers::All,
            lora_rank: 0,
            lora_alpha: 16.0,
            epochs: 2,
            lr: 5e-5,
            batch_size: 32,
            grad_accumulation: 1,
            warmup_frac: 0.1,
            weight_decay: 0.0,
            max_tokens: 128,
            pooling: Pooling::LastToken,
            seed: 0,
        }
    }
}

impl FinetuneConfig {
    /// Checks every setting; errors name the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(LmError::Input(format!("finetune: {what}")));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be positive, got {}", self.lr));
        }
        if self.batch_size == 0 || self.grad_accumulation == 0 {
            return bad("batch_size and grad_accumulation must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.warmup_frac) {
            return bad(format!(
                "warmup_frac must be in [0, 1), got {}",
                self.warmup_frac
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be ≥ 0, got {}",
                self.weight_decay
            ));
        }
        if self.max_tokens == 0 {
            return bad("max_tokens must be at least 1".into());
        }
        if self.lora_rank > 0 && !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
            return bad(format!(
                "lora_alpha must be positive, got {}",
                self.lora_alpha
            ));
        }
        if self.lora_rank > 0 && self.layers == Layers::Last(0) {
            return bad(
                "lora_rank > 0 needs at least one trained block (layers = 0 trains the head only)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether gradients are computed by recomputing one block at a time (`finetune/runner.rs`):
    /// under LoRA unless [`with_block_recompute`] turns it off; never in the other modes.
    pub fn recomputes(&self) -> bool {
        self.lora_rank > 0 && runner::recompute_override().unwrap_or(true)
    }

    /// The settings as the results store's content key reads them, written out field by field
    /// rather than by the derived `Debug` (whose format Rust does not promise, and which would
    /// change every key when a field is added). The text is the one earlier versions keyed on, so
    /// stores written by them keep their keys; a setting added later must join the text only when
    /// it differs from its default, for the same reason.
    pub fn key_text(&self) -> String {
        let layers = match self.layers {
            Layers::All => "All".to_string(),
            Layers::Last(k) => format!("Last({k})"),
        };
        let pooling = match self.pooling {
            Pooling::LastToken => "LastToken",
            Pooling::Mean => "Mean",
        };
        // f64's `{:?}` is the shortest text that reads back to the same value (`5e-5`, `16.0`).
        format!(
            "FinetuneConfig {{ layers: {layers}, lora_rank: {}, lora_alpha: {:?}, epochs: {}, \
             lr: {:?}, batch_size: {}, grad_accumulation: {}, warmup_frac: {:?}, \
             weight_decay: {:?}, max_tokens: {}, pooling: {pooling}, seed: {} }}",
            self.lora_rank,
            self.lora_alpha,
            self.epochs,
            self.lr,
            self.batch_size,
            self.grad_accumulation,
            self.warmup_frac,
            self.weight_decay,
            self.max_tokens,
            self.seed
        )
    }

    /// The mode's name in tables: `finetune-all`, `finetune-last-2`, `head-only`, `lora-8`,
    /// `lora-8-last-2`.
    pub fn mode_name(&self) -> String {
        match (self.lora_rank, self.layers) {
            (0, Layers::All) => "finetune-all".into(),
            (0, Layers::Last(0)) => "head-only".into(),
            (0, Layers::Last(k)) => format!("finetune-last-{k}"),
            (r, Layers::All) => format!("lora-{r}"),
            (r, Layers::Last(k)) => format!("lora-{r}-last-{k}"),
        }
    }
}

/// What the caller sees of a micro-batch, to compute its effective targets.
#[derive(Debug)]
pub struct TargetRequest<'a> {
    /// Indices of the batch's examples in the training set.
    pub indices: &'a [usize],
    /// The current logits of those examples.
    pub logits: &'a [f32],
    /// Optimizer step (0-based) and the total number of steps.
    pub step: usize,
    pub total_steps: usize,
}

/// Effective targets t̂ ∈ [0, 1] for a micro-batch, one per example (see the module docs).
pub type Targets<'a> = dyn FnMut(&TargetRequest<'_>) -> Vec<f32> + 'a;

/// Result of a run.
#[derive(Debug, Clone)]
pub struct FinetuneOutput {
    /// Logits of the evaluation texts, in order.
    pub eval_logits: Vec<f32>,
    /// Mean training loss of each optimizer step.
    pub step_losses: Vec<f32>,
    /// Trainable scalars (adapters and head included).
    pub trainable_parameters: usize,
}

/// What a run can record for parity checks against another implementation.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    /// The trainable tensors before the first step (HF names; `score.*` is the head).
    pub initial: Vec<(String, Tensor)>,
    /// Training-set indices of each micro-batch, in order.
    pub micro_batches: Vec<Vec<usize>>,
    /// The trainable tensors after the last step.
    pub trained: Vec<(String, Tensor)>,
}

/// A weight source that records the name and shape of every tensor read, and keeps each tensor so
/// that the frozen, training and evaluation models share one copy of the checkpoint in memory.
struct Recorder<'a> {
    inner: &'a dyn WeightSource,
    seen: RefCell<Vec<(String, Vec<usize>)>>,
    cache: RefCell<HashMap<String, Tensor>>,
}

impl Recorder<'_> {
    /// Drops the cached copies of tensors that variables now hold.
    fn forget(&self, names: &[(String, Vec<usize>)]) {
        let mut cache = self.cache.borrow_mut();
        for (n, _) in names {
            cache.remove(n);
        }
    }
}

impl WeightSource for Recorder<'_> {
    fn get(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        if let Some(t) = self.cache.borrow().get(name) {
            if t.dims() == shape && t.dtype() == dtype {
                return Ok(t.clone());
            }
        }
        let t = self.inner.get(name, shape, dtype)?;
        let mut seen = self.seen.borrow_mut();
        if !seen.iter().any(|(n, _)| n == name) {
            seen.push((name.to_string(), shape.to_vec()));
        }
        self.cache.borrow_mut().insert(name.to_string(), t.clone());
        Ok(t)
    }
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }
    fn device(&self) -> &Device {
        self.inner.device()
    }
    fn dtype(&self) -> DType {
        self.inner.dtype()
    }
}

/// The block a tensor belongs to (`…layers.{i}.…` or `…blocks.{i}.…`).
fn block_of(name: &str) -> Option<usize> {
    for key in ["layers.", "blocks."] {
        if let Some(pos) = name.find(key) {
            let rest = &name[pos + key.len()..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if !digits.is_empty() && rest[digits.len()..].starts_with('.') {
                return digits.parse().ok();
            }
        }
    }
    None
}

/// The causal-LM output head, which a classifier does not use.
fn is_lm_head(name: &str) -> bool {
    block_of(name).is_none()
        && (name.starts_with("embed_out.")
            || name.starts_with("lm_head.")
            || name.ends_with("transformer.ff_out.weight"))
}

/// Which tensors train, and where LoRA adapters go: (names to train, LoRA (prefix, in, out)).
fn select(
    seen: &[(String, Vec<usize>)],
    num_layers: usize,
    cfg: &FinetuneConfig,
) -> (Vec<(String, Vec<usize>)>, Vec<(String, usize, usize)>) {
    let first = match cfg.layers {
        Layers::All => 0,
        Layers::Last(k) => num_layers - k.min(num_layers),
    };
    let in_trained_block = |n: &str| block_of(n).is_some_and(|b| b >= first);
    if cfg.lora_rank > 0 {
        let lora = seen
            .iter()
            .filter(|(n, s)| in_trained_block(n) && s.len() == 2 && n.ends_with(".weight"))
            .map(|(n, s)| (n.trim_end_matches(".weight").to_string(), s[1], s[0]))
            .collect();
        return (Vec::new(), lora);
    }
    let train = seen
        .iter()
        .filter(|(n, s)| match cfg.layers {
            Layers::All => !is_lm_head(n),
            Layers::Last(0) => false,
            // The blocks and the final norm (the 1-D tensors outside every block).
            Layers::Last(_) => in_trained_block(n) || (block_of(n).is_none() && s.len() == 1),
        })
        .cloned()
        .collect();
    (train, Vec::new())
}

/// The trained token-embedding table, if any: the one trained matrix outside every block with the
/// vocabulary's rows (the unused language-model head was never selected).
fn embedding_name<'a>(train: &'a [(String, Vec<usize>)], config: &ModelConfig) -> Option<&'a str> {
    let mut found = train
        .iter()
        .filter(|(n, s)| block_of(n).is_none() && s.len() == 2 && s[0] == config.vocab_size());
    match (found.next(), found.next()) {
        (Some((n, _)), None) => Some(n.as_str()),
        _ => None,
    }
}

/// A standard-normal or uniform stream for initialisation, seeded per run.
fn init_stream(seed: u64) -> w2sg_data::SplitMix64 {
    w2sg_data::SplitMix64::new(seed ^ 0x0F1E_7E57_C1A5)
}

/// Fine-tunes the checkpoint in `dir` on `train_texts` with effective targets from `targets`, and
/// returns the logits of `eval_texts`. `progress` is called after every optimizer step with
/// (step, total steps).
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    dir: &std::path::Path,
    tokenizer: &Tokenizer,
    train_texts: &[&str],
    targets: &mut Targets<'_>,
    eval_texts: &[&str],
    cfg: &FinetuneConfig,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
    trace: Option<&mut Trace>,
) -> Result<FinetuneOutput> {
    finetune_resumable(
        dir,
        tokenizer,
        train_texts,
        targets,
        eval_texts,
        cfg,
        device,
        progress,
        trace,
        None,
    )
}

/// [`finetune`] with an epoch checkpoint ([`resume`]): if `resume`'s file holds this run's
/// checkpoint, training continues after its last finished epoch (with the bits of an uninterrupted
/// run), and a checkpoint is written after each epoch that more epochs follow. `progress` is called
/// for the steps run, not for those restored.
#[allow(clippy::too_many_arguments)]
pub fn finetune_resumable(
    dir: &std::path::Path,
    tokenizer: &Tokenizer,
    train_texts: &[&str],
    targets: &mut Targets<'_>,
    eval_texts: &[&str],
    cfg: &FinetuneConfig,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
    mut trace: Option<&mut Trace>,
    mut resume: Option<&mut Resume<'_>>,
) -> Result<FinetuneOutput> {
    cfg.validate()?;
    if train_texts.is_empty() {
        return Err(LmError::Input("finetune: no training texts".into()));
    }
    let config = ModelConfig::from_dir(dir)?;
    let ck = Checkpoint::open(dir)?;
    let base = CheckpointWeights::new(&ck, DType::F32, device);
    let recorder = Recorder {
        inner: &base,
        seen: RefCell::new(Vec::new()),
        cache: RefCell::new(HashMap::new()),
    };
    let frozen = Model::from_weights(&config, &recorder)?;
    let seen = recorder.seen.borrow().clone();
    let num_layers = frozen.num_layers();
    let hidden = frozen.hidden_size();
    if let Layers::Last(k) = cfg.layers {
        if k > num_layers {
            return Err(LmError::Input(format!(
                "finetune: layers = {k}, but the model has {num_layers} blocks"
            )));
        }
    }
    let max_tokens = cfg.max_tokens.min(frozen.max_position_embeddings());

    // The trainable variables: selected weights (copied from the checkpoint), LoRA adapters, head.
    let (train_names, lora) = select(&seen, num_layers, cfg);
    let mut vars = VarStore::new(device);
    for (name, shape) in &train_names {
        vars.insert(
            name,
            &recorder.get(name, shape, DType::F32)?,
            shape.len() >= 2,
        )?;
    }
    let mut rng = init_stream(cfg.seed);
    for (prefix, din, dout) in &lora {
        let bound = 1.0 / (*din as f64).sqrt();
        let a: Vec<f32> = (0..cfg.lora_rank * din)
            .map(|_| ((2.0 * rng.next_open01() - 1.0) * bound) as f32)
            .collect();
        vars.insert(
            &format!("{prefix}.lora_A.weight"),
            &Tensor::from_vec(a, (cfg.lora_rank, *din), device)?,
            true,
        )?;
        vars.insert(
            &format!("{prefix}.lora_B.weight"),
            &Tensor::zeros((*dout, cfg.lora_rank), DType::F32, device)?,
            true,
        )?;
    }
    vars.set_lora_scale(cfg.lora_alpha / cfg.lora_rank.max(1) as f64);
    let head: Vec<f32> = (0..hidden)
        .map(|_| (rng.next_normal() * 0.02) as f32)
        .collect();
    vars.insert(
        "score.weight",
        &Tensor::from_vec(head, (1, hidden), device)?,
        true,
    )?;
    vars.insert("score.bias", &Tensor::zeros(1, DType::F32, device)?, false)?;
    if let Some(t) = trace.as_deref_mut() {
        t.initial = vars
            .named_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.copy().expect("copy")))
            .collect();
    }

    let start = match cfg.layers {
        Layers::All => 0,
        Layers::Last(k) => num_layers - k,
    };
    // The frozen model is needed only to compute the frozen blocks' outputs once; trained tensors
    // are held by the variables from here on.
    let frozen = (start > 0).then_some(frozen);
    recorder.forget(&train_names);
    let model = Model::from_weights(
        &config,
        &Layered {
            vars: &vars,
            base: &recorder,
        },
    )?;
    // Detached views of the variables (same storage): the forward pass that keeps no graph.
    let detached: BTreeMap<String, Tensor> = vars
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.detach()))
        .collect();
    let lora_scale = cfg.lora_alpha / cfg.lora_rank.max(1) as f64;
    let recompute_model = if cfg.recomputes() {
        Some(Model::from_weights(
            &config,
            &Snapshot {
                tensors: &detached,
                base: &recorder,
                lora_scale,
            },
        )?)
    } else {
        None
    };
    let runner = Runner {
        frozen: frozen.as_ref(),
        model: &model,
        recompute: recompute_model.as_ref(),
        start,
        num_layers,
        pooling: cfg.pooling,
        device,
        head_w: vars
            .var("score.weight")
            .expect("inserted")
            .as_tensor()
            .clone(),
        head_b: vars
            .var("score.bias")
            .expect("inserted")
            .as_tensor()
            .clone(),
        embedding: embedding_name(&train_names, &config)
            .and_then(|n| vars.var(n))
            .map(|v| v.as_tensor().clone()),
    };

    let train = tokenize(tokenizer, train_texts, max_tokens)?;
    let train_inputs = runner.inputs(&train.ids, cfg.batch_size)?;
    let n = train_texts.len();
    let per_step = cfg.batch_size * cfg.grad_accumulation;
    let steps_per_epoch = n.div_ceil(per_step);
    let total = steps_per_epoch * cfg.epochs;
    let warmup = (cfg.warmup_frac * total as f64).round() as u64;
    // PyTorch's and HF Trainer's defaults for fine-tuning (pre-training uses β₂ = 0.95).
    let adam = AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: cfg.weight_decay,
    };
    let mut opt = AdamW::new(adam, vars.params())?;
    let mut step_losses = Vec::with_capacity(total);
    let mut step = 0;
    let mut first_epoch = 0;
    let fingerprint = resume
        .is_some()
        .then(|| resume::fingerprint(cfg, device, train_texts, eval_texts.len()));
    if let (Some(r), Some(fp)) = (resume.as_deref_mut(), &fingerprint) {
        if let Some(restored) = r.load(&vars, adam, fp, steps_per_epoch, cfg.epochs) {
            opt = restored.opt;
            step = restored.step;
            step_losses = restored.step_losses;
            first_epoch = restored.epochs;
            if let Some(t) = trace.as_deref_mut() {
                for epoch in 0..first_epoch {
                    let order = permutation(n, cfg.seed, epoch as u64);
                    for chunk in order.chunks(per_step) {
                        t.micro_batches
                            .extend(chunk.chunks(cfg.batch_size).map(<[usize]>::to_vec));
                    }
                }
            }
        }
    }
    for epoch in first_epoch..cfg.epochs {
        let clock = resume::EpochClock::start();
        let order = permutation(n, cfg.seed, epoch as u64);
        for chunk in order.chunks(per_step) {
            let mut grads: Option<GradStore> = None;
            let mut loss_sum = 0f64;
            for micro in chunk.chunks(cfg.batch_size) {
                if let Some(t) = trace.as_deref_mut() {
                    t.micro_batches.push(micro.to_vec());
                }
                let mut effective = |zs: &[f32]| -> Result<Tensor> {
                    let t_hat = targets(&TargetRequest {
                        indices: micro,
                        logits: zs,
                        step,
                        total_steps: total,
                    });
                    if t_hat.len() != micro.len() || t_hat.iter().any(|t| !(0.0..=1.0).contains(t))
                    {
                        return Err(LmError::Input(format!(
                            "finetune: targets must be one value in [0, 1] per example (got {} for {})",
                            t_hat.len(),
                            micro.len()
                        )));
                    }
                    Ok(Tensor::from_vec(t_hat, micro.len(), device)?)
                };
                // Σ over the micro-batch of the stable BCE with logits, over the step's examples.
                let (loss, g) = runner.loss_and_grads(
                    &train_inputs,
                    micro,
                    chunk.len() as f64,
                    vars.params(),
                    &mut effective,
                )?;
                loss_sum += loss as f64;
                grads = Some(match grads {
                    None => g,
                    Some(acc) => add_grads(acc, g, &vars)?,
                });
            }
            let lr = learning_rate(step as u64, total as u64, warmup, cfg.lr, 0.0);
            opt.update(
                vars.params(),
                &grads.expect("a step has a micro-batch"),
                lr,
                1.0,
            )?;
            step_losses.push(loss_sum as f32);
            step += 1;
            progress(step, total);
        }
        if let (Some(r), Some(fp)) = (resume.as_deref_mut(), &fingerprint) {
            r.save(
                &clock,
                &vars,
                &opt,
                fp,
                epoch + 1,
                cfg.epochs,
                step,
                &step_losses,
            )?;
        }
    }
    if let Some(t) = trace.as_deref_mut() {
        t.trained = vars
            .named_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.copy().expect("copy")))
            .collect();
    }

    // Evaluation: the trained weights as constants, so no graph is recorded.
    let snapshot: BTreeMap<String, Tensor> = vars
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.detach()))
        .collect();
    let frozen_vars = Snapshot {
        tensors: &snapshot,
        base: &recorder,
        lora_scale,
    };
    let eval_model = Model::from_weights(&config, &frozen_vars)?;
    let eval_runner = Runner {
        model: &eval_model,
        recompute: None,
        head_w: snapshot["score.weight"].clone(),
        head_b: snapshot["score.bias"].clone(),
        embedding: None,
        ..runner
    };
    let eval = tokenize(tokenizer, eval_texts, max_tokens)?;
    let eval_inputs = eval_runner.inputs(&eval.ids, cfg.batch_size)?;
    let mut eval_logits = Vec::with_capacity(eval_texts.len());
    let idx: Vec<usize> = (0..eval_texts.len()).collect();
    for b in idx.chunks(cfg.batch_size) {
        eval_logits.extend(eval_runner.logits(&eval_inputs, b)?.to_vec1::<f32>()?);
    }
    Ok(FinetuneOutput {
        eval_logits,
        step_losses,
        trainable_parameters: vars.num_parameters(),
    })
}

/// Sums two gradient stores over the trainable variables, in a fixed order.
fn add_grads(mut acc: GradStore, g: GradStore, vars: &VarStore) -> Result<GradStore> {
    for p in vars.params() {
        let t = p.var.as_tensor();
        match (acc.get(t), g.get(t)) {
            (Some(a), Some(b)) => {
                let s = (a + b)?;
                acc.insert(t, s);
            }
            (None, Some(b)) => {
                acc.insert(t, b.clone());
            }
            _ => {}
        }
    }
    Ok(acc)
}

/// A seeded permutation of 0..n for one epoch (Fisher–Yates on SplitMix64).
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = w2sg_data::SplitMix64::new(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch.wrapping_add(0xB47C_4),
    );
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Trained weights frozen as constants over the base (for evaluation).
struct Snapshot<'a> {
    tensors: &'a BTreeMap<String, Tensor>,
    base: &'a dyn WeightSource,
    lora_scale: f64,
}

impl WeightSource for Snapshot<'_> {
    fn get(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        match self.tensors.get(name) {
            Some(t) => Ok(t.clone()),
            None => self.base.get(name, shape, dtype),
        }
    }
    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.base.contains(name)
    }
    fn device(&self) -> &Device {
        self.base.device()
    }
    fn dtype(&self) -> DType {
        self.base.dtype()
    }
    fn lora(&self, prefix: &str) -> Option<crate::weights::Lora> {
        Some(crate::weights::Lora {
            a: self
                .tensors
                .get(&format!("{prefix}.lora_A.weight"))?
                .clone(),
            b: self
                .tensors
                .get(&format!("{prefix}.lora_B.weight"))?
                .clone(),
            scale: self.lora_scale,
        })
    }
}

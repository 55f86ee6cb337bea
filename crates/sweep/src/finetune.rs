//! Fine-tuned students (the `finetune` training mode of a sweep, beside the linear probes) and the
//! fine-tuned weak supervisor.
//!
//! ```toml
//! [train]
//! mode = ["probe", "finetune"]   # "probe" (default), "finetune", or both
//!
//! [finetune]
//! layers = "all"                 # "all", or k = the last k blocks (+ final norm and head); 0 = head only
//! lora_rank = 0                  # > 0: LoRA adapters of this rank on the trained blocks, base frozen
//! lora_alpha = 16.0
//! epochs = 2
//! lr = 5e-5                      # default 5e-5 for full / last-k fine-tuning, 2e-4 with LoRA
//! batch_size = 32
//! grad_accumulation = 1
//! warmup_frac = 0.1              # linear warmup, then cosine decay to 0
//! weight_decay = 0.0
//! max_tokens = 128
//! revisions = "all"              # which of the swept checkpoints are also fine-tuned: "all", a list,
//!                                # or { every = N } (every N-th in training order, always the last)
//! tasks = ["word-order"]         # which tasks get fine-tuned students (default: every task)
//! seeds = [0]                    # which of the plan's seeds get fine-tuned students (default: all)
//! checkpoint_after_s = 60        # epoch checkpoint after an epoch this long (0: every epoch)
//!
//! [weak]
//! train = "finetune"             # optional: the weak supervisor fine-tuned too, with these settings
//! ```
//!
//! Learning-rate defaults: 5e-5 is the example of Burns et al.'s full fine-tuning (their `lr`
//! argument's default for GPT-2-sized models); LoRA starts from a zero update (B = 0), so its adapters
//! need a larger step, and 2e-4 is the common starting point for LoRA on models of this size. Both are
//! plan keys: set `lr` for your family.
//!
//! Units: each fine-tuned student (the ceiling on half B's true labels, and one w2s student per loss
//! on the weak supervisor's soft labels) is one unit of the store, of kind `probe` with an extra
//! `mode` field (`finetune-all`, `finetune-last-2`, `head-only`, `lora-8`, …) and a config hash over
//! the split, the fine-tuning settings and the loss settings; probe units keep their keys, so adding
//! fine-tuning to a finished probe sweep reruns nothing.
//!
//! The weak supervisor is the probe on the weak model's features unless `[weak] train = "finetune"`:
//! then [`finetune_weak_labels`] fine-tunes the weak model itself with the same `[finetune]` settings
//! (the seed is the plan seed; `revisions`, `tasks` and `seeds` select strong students only) on split
//! A's true labels, and its probabilities on B and test are the weak labels of every student of that
//! seed, probe or fine-tuned. Its unit is a `weak_labels` unit with its own config hash
//! ([`crate::specs::weak_spec`]), so the probe supervisor's units keep their keys.
//!
//! Resuming: a unit killed mid-training runs again with the same result (fine-tuning is
//! deterministic). After each epoch that took at least `checkpoint_after_s` seconds and that more
//! epochs follow, the unit writes an epoch checkpoint ([`w2sg_lm::finetune::resume`]: trainable
//! tensors, AdamW's moments and step, the step losses and the loss's running state, e.g. logconf's
//! window) to `DIR/.w2sg-partial/<store>/<unit key>.ft` beside the results store ([`epoch_checkpoint`]);
//! a rerun continues after that epoch, with the bits of an uninterrupted run. The checkpoint carries
//! the unit key and a fingerprint of the settings and data, so no other unit (and no changed unit)
//! ever loads it; it is deleted once the unit's result is in the store. Each shard has its own
//! store, hence its own directory of checkpoints.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use w2sg_lm::finetune::{FinetuneConfig, FinetuneOutput, TargetRequest};
use w2sg_protocol::key::config_hash;
use w2sg_protocol::{EvalMetrics, Loss, LossState, UnitKey, UnitKind, UnitOutput, UnitSpec};

use crate::dataset::{Dataset, Split};
pub use crate::plan::finetune::{FinetunePlan, LayersPlan, Modes};
use crate::plan::Plan;
use crate::resolve::CheckpointRef;
use crate::specs::{finetune_config, metrics_json, weak_output, CEILING, ECE_BINS};

/// The fine-tuned student unit of (checkpoint, task, seed, loss); `weak_key` for w2s students.
pub fn finetune_spec(
    plan: &Plan,
    ck: &CheckpointRef,
    ds: &Dataset,
    seed: u64,
    loss: &str,
    weak_key: Option<&UnitKey>,
) -> crate::error::Result<UnitSpec> {
    let cfg = finetune_config(plan, ds, seed)?;
    let training = match loss {
        CEILING | "xent" => json!("xent"),
        other => json!(plan.train_params(other, seed).loss),
    };
    let config = config_hash(&json!({
        "finetune": cfg.key_text(),
        "split": plan.split,
        "dtype": "f32",
        "loss": training,
    }))?;
    let mut spec = UnitSpec::new(UnitKind::Probe, &ck.content_id(), &ds.fingerprint, &config)
        .seed(seed)
        .loss(loss)
        .extra("mode", &cfg.mode_name());
    spec.step = ck.step;
    if let Some(k) = weak_key {
        spec = spec.extra("weak_labels", k.as_str());
    }
    Ok(spec)
}

/// The epoch checkpoint of unit `key` of the results store at `store`:
/// `DIR/.w2sg-partial/STORE_NAME/KEY.ft` (its own directory per store, so shards never share one).
pub fn epoch_checkpoint(store: &Path, key: &UnitKey) -> PathBuf {
    let dir = store.parent().unwrap_or(Path::new("."));
    let name = store
        .file_stem()
        .map_or_else(|| "results".into(), |s| s.to_string_lossy().into_owned());
    dir.join(".w2sg-partial")
        .join(name)
        .join(format!("{key}.ft"))
}

/// Removes a unit's epoch checkpoint (its result is stored) and the directories left empty.
pub fn remove_epoch_checkpoint(path: &Path) {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
        if let Some(root) = dir.parent() {
            let _ = std::fs::remove_dir(root);
        }
    }
}

/// Creates a directory of epoch checkpoints. Retried: another shard finishing a unit removes the
/// shared `.w2sg-partial` when it is empty, which may happen between the two levels' creation.
fn create_dir(dir: &Path) -> std::result::Result<(), String> {
    let mut tries = 0;
    loop {
        match std::fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => tries += 1,
            Err(e) => return Err(format!("{}: cannot create: {e}", dir.display())),
        }
    }
}

/// Trains one fine-tuned student and evaluates it on the test split: the unit's computation.
/// `resume`: the unit's epoch checkpoint file and its identity (the unit key); `steps(done, total)`
/// is called after every optimizer step.
#[allow(clippy::too_many_arguments)]
pub fn finetune_student(
    plan: &Plan,
    ck: &CheckpointRef,
    ds: &Dataset,
    split: &Split,
    seed: u64,
    loss: &str,
    weak: Option<(&[f64], &[f64])>,
    resume: Option<(&Path, &UnitKey)>,
    steps: &mut dyn FnMut(usize, usize),
) -> std::result::Result<UnitOutput, String> {
    let cfg = finetune_config(plan, ds, seed).map_err(|e| e.to_string())?;
    let targets: Vec<f64> = match (loss, weak) {
        (CEILING, _) => w2sg_protocol::features::hard_targets(&ds.labels_at(&split.strong)),
        (_, Some((on_b, _))) => on_b.to_vec(),
        (_, None) => return Err(format!("the {loss} student needs weak labels")),
    };
    let loss_kind = match loss {
        CEILING | "xent" => Loss::Xent,
        other => plan.train_params(other, seed).loss,
    };
    let (on_test, out) = train_and_predict(
        plan,
        ck,
        ds,
        &cfg,
        &split.strong,
        &targets,
        &loss_kind,
        &split.test,
        resume,
        steps,
    )?;
    let e = |e: w2sg_protocol::Error| e.to_string();
    let labels = ds.labels_at(&split.test);
    let m = EvalMetrics::compute(&on_test, &labels, ECE_BINS).map_err(e)?;
    let mut result = Map::new();
    metrics_json(&m, &mut result);
    insert_run_fields(&mut result, &cfg, &out);
    if let Some((_, weak_test)) = weak {
        result.insert(
            "agreement_with_weak".into(),
            json!(w2sg_protocol::agreement(&on_test, weak_test).map_err(e)?),
        );
    }
    Ok(UnitOutput {
        result,
        blob: Some(w2sg_protocol::store::f64s_to_bytes(&on_test)),
    })
}

/// The fine-tuned weak supervisor of one seed (`[weak] train = "finetune"`): the weak model
/// fine-tuned on split A's true labels (hard targets, cross-entropy) with the plan's `[finetune]`
/// settings and the seed; its probabilities on B, then on test, are the unit's blob, laid out as the
/// probe supervisor's ([`crate::specs::weak_output`]).
/// `resume` and `steps` as for [`finetune_student`].
pub fn finetune_weak_labels(
    plan: &Plan,
    weak: &CheckpointRef,
    ds: &Dataset,
    split: &Split,
    seed: u64,
    resume: Option<(&Path, &UnitKey)>,
    steps: &mut dyn FnMut(usize, usize),
) -> std::result::Result<UnitOutput, String> {
    let cfg = finetune_config(plan, ds, seed).map_err(|e| e.to_string())?;
    let targets = w2sg_protocol::features::hard_targets(&ds.labels_at(&split.weak));
    // B and test in one evaluation pass, split after.
    let eval: Vec<usize> = split.strong.iter().chain(&split.test).copied().collect();
    let (mut probs, out) = train_and_predict(
        plan,
        weak,
        ds,
        &cfg,
        &split.weak,
        &targets,
        &Loss::Xent,
        &eval,
        resume,
        steps,
    )?;
    let on_test = probs.split_off(split.strong.len());
    let (mut result, blob) = weak_output(ds, split, probs, &on_test)?;
    insert_run_fields(&mut result, &cfg, &out);
    Ok(UnitOutput {
        result,
        blob: Some(blob),
    })
}

/// What a fine-tuning run adds to a unit's result beside its metrics.
fn insert_run_fields(result: &mut Map<String, Value>, cfg: &FinetuneConfig, out: &FinetuneOutput) {
    result.insert("mode".into(), json!(cfg.mode_name()));
    result.insert(
        "trainable_parameters".into(),
        json!(out.trainable_parameters),
    );
    result.insert("final_train_loss".into(), json!(out.step_losses.last()));
}

/// Fine-tunes checkpoint `ck` on the examples `train` of `ds` with per-example `targets` under
/// `loss`, then returns its probabilities (σ of the logits) on the examples `eval`, in order, and the
/// run's output. A non-finite logit is an error (the run diverged), never a stored probability.
/// `resume` and `steps` as for [`finetune_student`].
#[allow(clippy::too_many_arguments)]
fn train_and_predict(
    plan: &Plan,
    ck: &CheckpointRef,
    ds: &Dataset,
    cfg: &FinetuneConfig,
    train: &[usize],
    targets: &[f64],
    loss: &Loss,
    eval: &[usize],
    resume: Option<(&Path, &UnitKey)>,
    steps: &mut dyn FnMut(usize, usize),
) -> std::result::Result<(Vec<f64>, FinetuneOutput), String> {
    ck.ensure_weights()?;
    // Shared by the targets and the epoch checkpoint's save and restore.
    let state = RefCell::new(LossState::new(loss, targets));
    let mut provider = |r: &TargetRequest<'_>| {
        let z: Vec<f64> = r.logits.iter().map(|&v| v as f64).collect();
        let y: Vec<f64> = r.indices.iter().map(|&i| targets[i]).collect();
        let mut out = vec![0.0; z.len()];
        state.borrow_mut().targets(
            r.step as f64 / r.total_steps.max(1) as f64,
            &z,
            &y,
            &mut out,
        );
        out.iter().map(|&t| t as f32).collect()
    };
    let tok_path = ck.dir.join("tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| format!("{}: cannot read the tokenizer: {e}", tok_path.display()))?;
    let train: Vec<&str> = train.iter().map(|&i| ds.texts[i].as_str()).collect();
    let eval: Vec<&str> = eval.iter().map(|&i| ds.texts[i].as_str()).collect();
    let mut save = || state.borrow().save();
    let mut load = |b: &[u8]| state.borrow_mut().restore(b).map_err(|e| e.to_string());
    let mut resume = match resume {
        Some((path, key)) => {
            if let Some(dir) = path.parent() {
                create_dir(dir)?;
            }
            Some(w2sg_lm::finetune::Resume {
                path: path.to_path_buf(),
                identity: key.to_string(),
                min_epoch_secs: plan.finetune.checkpoint_after_s,
                save_state: &mut save,
                load_state: &mut load,
                report: Default::default(),
            })
        }
        None => None,
    };
    let out = w2sg_lm::finetune::finetune_resumable(
        &ck.dir,
        &tokenizer,
        &train,
        &mut provider,
        &eval,
        cfg,
        &candle_core::Device::Cpu,
        &mut |done, total| {
            crate::fault::visit("sweep-finetune-step");
            steps(done, total)
        },
        None,
        resume.as_mut(),
    )
    .map_err(|e| e.to_string())?;
    if let Some(i) = out.eval_logits.iter().position(|z| !z.is_finite()) {
        return Err(format!(
            "non-finite logit for evaluation example {i}: training diverged (lr {} too large?)",
            cfg.lr
        ));
    }
    let probs = out
        .eval_logits
        .iter()
        .map(|&z| w2sg_protocol::probe::sigmoid(z as f64))
        .collect();
    Ok((probs, out))
}

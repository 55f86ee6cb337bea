//! The training loop: data preparation, (resumed) training, checkpoints, loss log and figure.
//!
//! Output directory layout:
//! - `tokenizer.json`, `data/{train,validation}.u32` (token streams, little-endian u32; reused on
//!   resume so that a resumed run sees exactly the same tokens without re-tokenizing);
//! - `pretrain_config.json` (the run's config; resuming with a different config is an error naming
//!   the keys that differ);
//! - `step{N}/` checkpoints and `family.json` (see [`super::checkpoints`]);
//! - `loss.csv` (`step,tokens_seen,lr,train_loss,val_loss`; a row every `log_every` steps and at each
//!   checkpoint; empty cell = not measured at that row) and `loss_curve.png`/`.svg`.
//!
//! The train/validation split uses a fixed split seed (0), not the run seed, so that runs with
//! different seeds are scored on the same validation text.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use w2sg_data::corpus::{default_corpus, split, text_files, Document};
use w2sg_data::ArchiveStore;
use w2sg_progress::Reporter;

use super::batches::{train_batch, validation_batches, Batch};
use super::checkpoints::{
    latest_resumable, load_checkpoint, load_optimizer, read_run_config, save_checkpoint, step_dirs,
    write_manifest, write_run_config, TrainerState,
};
use super::model::TrainableGptNeoX;
use super::presets::PretrainConfig;
use super::schedule::{checkpoint_steps, learning_rate};
use super::tokenizer::{encode_stream, save_tokenizer, train_tokenizer};
use super::{PretrainError, Result};
use crate::optim::{AdamW, AdamWConfig};

/// How to run (not part of what determines the checkpoints).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where training reports its steps (default: nowhere).
    pub progress: Reporter,
    /// Stop after this many updates without saving anything more: simulates a kill (tests).
    pub stop_after: Option<u64>,
    /// Keep the optimizer state in every checkpoint (default: only the latest).
    pub keep_optimizer_states: bool,
    /// Documents to train on instead of `config.corpus` (tests, library users).
    pub documents: Option<Vec<Document>>,
    /// Draw `loss_curve.png` at the end.
    pub plot: bool,
    pub device: Device,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            progress: Reporter::default(),
            stop_after: None,
            keep_optimizer_states: false,
            documents: None,
            plot: true,
            device: Device::Cpu,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub out: PathBuf,
    /// The step the run resumed from, if it resumed.
    pub resumed_from: Option<u64>,
    /// Updates done when it returned.
    pub step: u64,
    pub num_parameters: usize,
    pub train_tokens: usize,
    pub validation_tokens: usize,
    pub final_val_loss: Option<f64>,
    /// Wall time of this invocation (data preparation included).
    pub wall_seconds: f64,
    /// Training tokens per second of the updates done in this invocation.
    pub tokens_per_second: f64,
}

/// One row of `loss.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    pub step: u64,
    pub tokens_seen: u64,
    pub lr: f64,
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
}

const CSV_HEADER: &str = "step,tokens_seen,lr,train_loss,val_loss";

fn opt_cell(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

/// Reads `loss.csv`.
pub fn read_log(path: &Path) -> Result<Vec<LogRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| PretrainError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        let bad = || PretrainError::Resume(format!("{}:{}: malformed row", path.display(), i + 1));
        if c.len() != 5 {
            return Err(bad());
        }
        let opt = |s: &str| -> Result<Option<f64>> {
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse().map(Some).map_err(|_| bad())
            }
        };
        rows.push(LogRow {
            step: c[0].parse().map_err(|_| bad())?,
            tokens_seen: c[1].parse().map_err(|_| bad())?,
            lr: c[2].parse().map_err(|_| bad())?,
            train_loss: opt(c[3])?,
            val_loss: opt(c[4])?,
        });
    }
    Ok(rows)
}

fn write_log(path: &Path, rows: &[LogRow]) -> Result<()> {
    let mut text = String::from(CSV_HEADER);
    text.push('\n');
    for r in rows {
        text.push_str(&format!(
            "{},{},{:.6e},{},{}\n",
            r.step,
            r.tokens_seen,
            r.lr,
            opt_cell(r.train_loss),
            opt_cell(r.val_loss)
        ));
    }
    std::fs::write(path, text).map_err(|e| PretrainError::write(path, e))
}

fn append_log(path: &Path, r: &LogRow) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| PretrainError::write(path, e))?;
    writeln!(
        f,
        "{},{},{:.6e},{},{}",
        r.step,
        r.tokens_seen,
        r.lr,
        opt_cell(r.train_loss),
        opt_cell(r.val_loss)
    )
    .map_err(|e| PretrainError::write(path, e))
}

/// The documents of the corpus spec (`default` and/or files and directories of `.txt` files).
pub fn load_corpus(spec: &[String]) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    for item in spec {
        if item == "default" {
            docs.extend(default_corpus(&ArchiveStore::from_env())?);
            continue;
        }
        let path = PathBuf::from(item);
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| PretrainError::Io {
                    path: path.clone(),
                    source: e,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "txt"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(PretrainError::Config(format!(
                    "corpus directory {} has no .txt files",
                    path.display()
                )));
            }
            docs.extend(text_files(&files)?);
        } else if path.is_file() {
            docs.extend(text_files(&[path])?);
        } else {
            return Err(PretrainError::Config(format!(
                "corpus entry \"{item}\" is neither \"default\" nor an existing file or directory"
            )));
        }
    }
    Ok(docs)
}

fn write_tokens(path: &Path, tokens: &[u32]) -> Result<()> {
    let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    std::fs::write(path, bytes).map_err(|e| PretrainError::write(path, e))
}

fn read_tokens(path: &Path) -> Result<Vec<u32>> {
    let bytes = std::fs::read(path).map_err(|e| PretrainError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    if bytes.len() % 4 != 0 {
        return Err(PretrainError::Resume(format!(
            "{}: length is not a multiple of 4 (truncated?)",
            path.display()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Tokenizer and token streams: trained and cached on the first run, read back on a resumed one.
fn prepare_data(
    config: &PretrainConfig,
    out: &Path,
    documents: Option<&[Document]>,
) -> Result<(PathBuf, Vec<u32>, Vec<u32>)> {
    let tok_path = out.join("tokenizer.json");
    let data = out.join("data");
    let (train_path, val_path) = (data.join("train.u32"), data.join("validation.u32"));
    if tok_path.is_file() && train_path.is_file() && val_path.is_file() {
        return Ok((tok_path, read_tokens(&train_path)?, read_tokens(&val_path)?));
    }
    let docs = match documents {
        Some(d) => d.to_vec(),
        None => load_corpus(&config.corpus)?,
    };
    let parts = split(&docs, config.validation_fraction, 0, &[]);
    if parts.train.is_empty() || parts.validation.is_empty() {
        return Err(PretrainError::Config(format!(
            "the corpus gives {} training and {} validation paragraphs; both must be non-empty",
            parts.train.len(),
            parts.validation.len()
        )));
    }
    let mut budget = if config.tokenizer_train_bytes == 0 {
        usize::MAX
    } else {
        config.tokenizer_train_bytes
    };
    let sample: Vec<&str> = parts
        .train
        .iter()
        .take_while(|p| {
            let keep = budget > 0;
            budget = budget.saturating_sub(p.len());
            keep
        })
        .map(String::as_str)
        .collect();
    let tok = train_tokenizer(&sample, config.vocab_size)?;
    std::fs::create_dir_all(&data).map_err(|e| PretrainError::write(&data, e))?;
    let train = encode_stream(&tok, &parts.train)?;
    let val = encode_stream(&tok, &parts.validation)?;
    write_tokens(&train_path, &train)?;
    write_tokens(&val_path, &val)?;
    // The tokenizer last: its presence marks the data as complete.
    save_tokenizer(&tok, &tok_path)?;
    Ok((tok_path, train, val))
}

/// Mean validation loss over the batches (nats per token).
pub fn evaluate(model: &TrainableGptNeoX, batches: &[Batch]) -> Result<f64> {
    let mut total = 0f64;
    let mut n = 0usize;
    for b in batches {
        let l = model.loss(&b.inputs, &b.targets)?.to_scalar::<f32>()? as f64;
        total += l * b.num_tokens() as f64;
        n += b.num_tokens();
    }
    Ok(total / n.max(1) as f64)
}

/// Names of the top-level keys whose values differ between two configs.
fn differing_keys(a: &PretrainConfig, b: &PretrainConfig) -> Vec<String> {
    let (a, b) = (
        serde_json::to_value(a).expect("serializable"),
        serde_json::to_value(b).expect("serializable"),
    );
    let mut out = Vec::new();
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, v) in a {
            if b.get(k) != Some(v) {
                out.push(k.clone());
            }
        }
    }
    out
}

/// Test-only fault-injection hook: `W2SG_TEST_ABORT_AT=<point>:<step>` makes the process die with
/// `std::process::abort()` (no destructors, no flushing: as abrupt as a kill) at a named point, so
/// that tests can interrupt a real `w2sg lm pretrain` child deterministically. Points:
/// - `step:N`: right after update N (its optimizer step), before its checkpoint or log row;
/// - `checkpoint-write:N`: checkpoint N's files fully written in its `.partial/stepN` staging
///   directory, but not yet renamed into place (staged with the real [`save_checkpoint`] in a
///   scratch directory, then moved to the staging path);
/// - `checkpoint-published:N`: checkpoint N renamed into place (and older optimizer states
///   removed), but `family.json` and `loss.csv` not yet updated.
///
/// Unset in normal use; never set it outside tests.
const ABORT_ENV: &str = "W2SG_TEST_ABORT_AT";

fn maybe_abort(at: &Option<(String, u64)>, point: &str, step: u64) {
    if let Some((p, s)) = at {
        if p == point && *s == step {
            eprintln!("{ABORT_ENV}: aborting at {point}:{step}");
            std::process::abort();
        }
    }
}

/// Trains (or resumes) the run described by `config` in `out`.
pub fn pretrain(config: &PretrainConfig, out: &Path, opts: &RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let abort_at = w2sg_fsio::test_abort_point();
    // Everything about the config is checked before anything is written, so a rejected config
    // leaves no trace that would block the corrected one.
    config.validate()?;
    config.check_resources(w2sg_fsio::available_memory())?;
    std::fs::create_dir_all(out).map_err(|e| PretrainError::write(out, e))?;
    // One trainer per directory: two would interleave loss.csv and overwrite each other's steps.
    let _lock = w2sg_fsio::DirLock::acquire(&out.join(".w2sg-lock"))
        .map_err(|e| PretrainError::Resume(e.to_string()))?;
    if let Some(prev) = read_run_config(out)? {
        // A directory without a finished step holds nothing to protect: take the new config.
        if &prev != config && !step_dirs(out)?.is_empty() {
            return Err(PretrainError::Resume(format!(
                "{} holds a run with a different config (keys: {}); use another --out directory",
                out.display(),
                differing_keys(&prev, config).join(", ")
            )));
        }
        if &prev != config {
            // The tokenizer and token files were derived from the old config's corpus and vocabulary.
            for stale in [out.join("tokenizer.json"), out.join("data")] {
                let gone = if stale.is_dir() {
                    std::fs::remove_dir_all(&stale)
                } else {
                    std::fs::remove_file(&stale)
                };
                match gone {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(PretrainError::write(&stale, e))
                    }
                    _ => {}
                }
            }
        }
    }
    let (tok_path, train, val) = prepare_data(config, out, opts.documents.as_deref())?;
    write_run_config(out, config)?;
    let device = &opts.device;
    let ctx = config.model.context;
    let val_batches = validation_batches(&val, config.eval_tokens, config.batch_size, ctx, device)?;
    let adam = AdamWConfig {
        beta1: config.beta1,
        beta2: config.beta2,
        eps: config.eps,
        weight_decay: config.weight_decay,
    };
    let log_path = out.join("loss.csv");
    let (model, mut opt, start, mut tokens_seen, resumed_from) = match latest_resumable(out)? {
        Some((dir, state)) => {
            let model = load_checkpoint(&dir, config, device)?;
            let opt = load_optimizer(&dir, &model, adam, state.adam_step)?;
            // Checkpoints past the resume point can only come from a run killed while writing the
            // next one's optimizer clean-up; they would be rewritten identically, so drop them.
            for (s, d) in step_dirs(out)? {
                if s > state.step {
                    std::fs::remove_dir_all(&d).map_err(|e| PretrainError::write(&d, e))?;
                }
            }
            (model, opt, state.step, state.tokens_seen, Some(state))
        }
        None => {
            let model = TrainableGptNeoX::init(&config.gpt_neox_config()?, config.seed, device)?;
            let opt = AdamW::new(adam, model.params())?;
            (model, opt, 0, 0, None)
        }
    };
    let mut rows = match &resumed_from {
        Some(state) if log_path.is_file() => read_log(&log_path)?
            .into_iter()
            .filter(|r| r.step <= state.step)
            .collect(),
        _ => Vec::new(),
    };
    let num_parameters = model.num_parameters();
    if let Some(state) = &resumed_from {
        // A run killed after publishing checkpoint N but before logging it left no row N (and, at the last
        // step, a stale family.json): both are rebuilt from the checkpoint's own trainer_state.json, which
        // holds exactly what the uninterrupted run logged.
        if !rows
            .iter()
            .any(|r| r.step == state.step && r.val_loss.is_some())
        {
            rows.retain(|r| r.step != state.step);
            rows.push(LogRow {
                step: state.step,
                tokens_seen: state.tokens_seen,
                lr: state.lr,
                train_loss: state.train_loss,
                val_loss: state.val_loss,
            });
        }
        write_manifest(out, config, num_parameters)?;
    }
    let resumed_from = resumed_from.map(|state| state.step);
    write_log(&log_path, &rows)?;
    let schedule = checkpoint_steps(config.steps, config.checkpoint_every);
    let bar = &opts.progress;
    bar.phase(config.steps, start, "steps");
    let checkpoint = |step: u64,
                      tokens_seen: u64,
                      lr: f64,
                      train_loss: Option<f64>,
                      model: &TrainableGptNeoX,
                      opt: &AdamW,
                      rows: &mut Vec<LogRow>|
     -> Result<f64> {
        let val_loss = evaluate(model, &val_batches)?;
        let state = TrainerState {
            step,
            tokens_seen,
            val_loss: Some(val_loss),
            train_loss,
            lr,
            sha256: String::new(),
            adam_step: opt.step,
        };
        if matches!(&abort_at, Some((p, s)) if p == "checkpoint-write" && *s == step) {
            let scratch = out.join(".partial").join(".fault-injection");
            save_checkpoint(
                &scratch,
                config,
                model,
                &tok_path,
                Some(opt),
                state.clone(),
                true,
            )?;
            let name = super::checkpoints::revision_name(step);
            let staged = out.join(".partial").join(&name);
            if staged.exists() {
                std::fs::remove_dir_all(&staged).map_err(|e| PretrainError::write(&staged, e))?;
            }
            std::fs::rename(scratch.join(&name), &staged)
                .map_err(|e| PretrainError::write(&staged, e))?;
            maybe_abort(&abort_at, "checkpoint-write", step);
        }
        save_checkpoint(
            out,
            config,
            model,
            &tok_path,
            Some(opt),
            state,
            opts.keep_optimizer_states,
        )?;
        maybe_abort(&abort_at, "checkpoint-published", step);
        write_manifest(out, config, num_parameters)?;
        let row = LogRow {
            step,
            tokens_seen,
            lr,
            train_loss,
            val_loss: Some(val_loss),
        };
        append_log(&log_path, &row)?;
        rows.push(row);
        Ok(val_loss)
    };
    let mut final_val = None;
    if resumed_from.is_none() {
        final_val = Some(checkpoint(0, 0, 0.0, None, &model, &opt, &mut rows)?);
    }
    let train_started = Instant::now();
    let tokens_at_start = tokens_seen;
    let (mut loss_sum, mut loss_n) = (0f64, 0u64);
    let mut step = start;
    while step < config.steps {
        if opts.stop_after == Some(step) {
            break;
        }
        let batch = train_batch(&train, config.seed, step, config.batch_size, ctx, device)?;
        let loss = model.loss(&batch.inputs, &batch.targets)?;
        let loss_value = loss.to_scalar::<f32>()?;
        if !loss_value.is_finite() {
            return Err(PretrainError::Diverged {
                step,
                loss: loss_value,
            });
        }
        let grads = loss.backward()?;
        let lr = learning_rate(
            step,
            config.steps,
            config.warmup_steps,
            config.lr,
            config.min_lr_ratio,
        );
        let scale = if config.grad_clip > 0.0 {
            let norm = AdamW::grad_norm(model.params(), &grads)?;
            if norm > config.grad_clip {
                config.grad_clip / (norm + 1e-6)
            } else {
                1.0
            }
        } else {
            1.0
        };
        opt.update(model.params(), &grads, lr, scale)?;
        drop(grads);
        step += 1;
        tokens_seen += batch.num_tokens() as u64;
        loss_sum += loss_value as f64;
        loss_n += 1;
        bar.position(step);
        maybe_abort(&abort_at, "step", step);
        let is_ckpt = schedule.binary_search(&step).is_ok();
        let is_log = config.log_every > 0 && step % config.log_every == 0;
        if is_ckpt || is_log {
            let train_loss = Some(loss_sum / loss_n as f64);
            bar.status(&format!("loss {:.3}", loss_sum / loss_n as f64));
            (loss_sum, loss_n) = (0.0, 0);
            if is_ckpt {
                final_val = Some(checkpoint(
                    step,
                    tokens_seen,
                    lr,
                    train_loss,
                    &model,
                    &opt,
                    &mut rows,
                )?);
            } else {
                let row = LogRow {
                    step,
                    tokens_seen,
                    lr,
                    train_loss,
                    val_loss: None,
                };
                append_log(&log_path, &row)?;
                rows.push(row);
            }
        }
    }
    bar.end_phase();
    let train_secs = train_started.elapsed().as_secs_f64();
    if opts.plot && step == config.steps {
        plot_losses(&rows, out, &config.preset)?;
    }
    Ok(RunSummary {
        out: out.to_path_buf(),
        resumed_from,
        step,
        num_parameters,
        train_tokens: train.len(),
        validation_tokens: val.len(),
        final_val_loss: final_val,
        wall_seconds: started.elapsed().as_secs_f64(),
        tokens_per_second: (tokens_seen - tokens_at_start) as f64 / train_secs.max(1e-9),
    })
}

/// Draws `loss_curve.png` / `.svg`: validation loss at the checkpoints and the logged training loss
/// against tokens seen.
pub fn plot_losses(rows: &[LogRow], out: &Path, name: &str) -> Result<()> {
    use w2sg_report::{Axis, Figure, LineSeries, Marker, Plot};
    let pts = |f: &dyn Fn(&LogRow) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r.tokens_seen > 0)
            .filter_map(|r| f(r).map(|v| (r.tokens_seen as f64, v)))
            .collect()
    };
    let val = pts(&|r| r.val_loss);
    let train = pts(&|r| r.train_loss);
    if val.is_empty() {
        return Ok(());
    }
    let plot = Plot::new(format!("Pre-training the {name} family: loss per token"))
        .x_axis(Axis::new("training tokens seen").log())
        .y_axis(Axis::new("cross-entropy (nats/token)"))
        .line(LineSeries::new("train (mean since last log)", train))
        .line(LineSeries::new("validation (checkpoints)", val).marker(Marker::Circle));
    Figure::new(plot)
        .save(out, "loss_curve")
        .map_err(|e| PretrainError::Figure(e.to_string()))?;
    Ok(())
}

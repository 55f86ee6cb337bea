//! Epoch checkpoints of a fine-tuning run: a run killed after its first epoch resumes after the last
//! finished epoch and ends with the bits of an uninterrupted run.
//!
//! ## What is saved
//! After each finished epoch that more epochs follow (and that took at least
//! [`Resume::min_epoch_secs`]), one safetensors file at [`Resume::path`], written atomically (a kill
//! leaves the previous checkpoint or the new one, never a mix) by the optimizer's own state writer
//! ([`AdamW::save_file`], shared with pre-training checkpoints):
//! - `var.NAME`: every trainable variable (the names of `VarStore::params`: HF names, LoRA adapters,
//!   the head `score.*`);
//! - `m.NAME`, `v.NAME`: AdamW's moments (its step count is in the metadata);
//! - `step_losses`: the mean loss of every step so far (f32, so their bits);
//! - `caller_state`: the caller's opaque bytes ([`Resume::save_state`], e.g. the loss's running state,
//!   `w2sg_protocol::LossState::save`);
//! - metadata: the format, the caller's identity, a fingerprint of the run, the finished epochs, the
//!   global step and AdamW's step count.
//!
//! ## Why the resumed run has the same bits
//! Every input of the remaining steps is restored exactly or recomputed identically: the variables
//! and moments as f32 bits (set in place, so the models, which share the variables' storage, see
//! them as they see an optimizer update); AdamW's step count, hence its bias corrections; the global
//! step, hence the learning rate and the targets' step fraction; the caller's state (bit-exact by
//! the caller's contract); the batch order, a permutation that is a function of (seed, epoch) only;
//! the frozen blocks' cached outputs, a function of the checkpoint and the texts. Nothing else carries
//! over between steps (the initialisation stream is used up before the first step).
//!
//! ## What invalidates a checkpoint
//! It is loaded only if its format, the caller's identity (e.g. a sweep's unit key) and the
//! fingerprint (sha256 of the [`FinetuneConfig`], the device, the training texts and the number of
//! evaluation texts) all match, if every variable and moment is there with the run's shape, and if
//! its step is that of a finished epoch before the last. Anything else (another unit's file, changed
//! settings or data, a truncated or corrupt file, caller bytes the caller refuses) is ignored with
//! the reason in [`ResumeReport::ignored`] and training starts from scratch; it is never a panic,
//! and nothing of the run is changed before the whole file has been checked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::read_safetensors_metadata;
use crate::error::{LmError, Result};
use crate::optim::{AdamW, AdamWConfig};
use crate::weights::VarStore;

use super::FinetuneConfig;

/// The `format` metadata value of an epoch checkpoint.
pub const FORMAT: &str = "w2sg-finetune-epoch/1";

/// Where and for whom a run keeps its epoch checkpoint (see the module docs).
pub struct Resume<'a> {
    /// The checkpoint file (its directory must exist).
    pub path: PathBuf,
    /// Whose checkpoint it is: a checkpoint with another identity is never loaded.
    pub identity: String,
    /// An epoch shorter than this (in seconds) is not checkpointed (0: every epoch but the last).
    pub min_epoch_secs: f64,
    /// The caller's running state at the end of an epoch, saved with the checkpoint.
    pub save_state: &'a mut dyn FnMut() -> Vec<u8>,
    /// Restores what `save_state` returned; an error makes the checkpoint ignored (the caller must
    /// then leave its state untouched).
    pub load_state: &'a mut dyn FnMut(&[u8]) -> std::result::Result<(), String>,
    /// What the run did with the checkpoint (filled by the run).
    pub report: ResumeReport,
}

/// What a run did with its epoch checkpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResumeReport {
    /// Epochs skipped because a checkpoint held them (0: trained from the start).
    pub resumed_epochs: usize,
    /// Why a checkpoint at the path was not used.
    pub ignored: Option<String>,
    /// The finished epochs (1-based) after which a checkpoint was written.
    pub saved_after: Vec<usize>,
}

/// The metadata of an epoch checkpoint, as read from its header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub identity: String,
    pub fingerprint: String,
    /// Finished epochs.
    pub epochs: usize,
    /// Optimizer steps done.
    pub step: usize,
}

/// Reads the header of an epoch checkpoint (for tools and tests; loading checks far more).
pub fn read_header(path: &std::path::Path) -> Result<Header> {
    let meta = read_safetensors_metadata(path)?;
    let get = |k: &str| {
        meta.get(k).cloned().ok_or_else(|| {
            LmError::weights(
                path,
                format!("not a fine-tuning epoch checkpoint (no `{k}`)"),
            )
        })
    };
    let num = |k: &str| -> Result<usize> {
        get(k)?
            .parse()
            .map_err(|_| LmError::weights(path, format!("`{k}` is not a number")))
    };
    if get("format")? != FORMAT {
        return Err(LmError::weights(
            path,
            format!("format {:?}, expected {FORMAT}", meta.get("format")),
        ));
    }
    Ok(Header {
        identity: get("identity")?,
        fingerprint: get("fingerprint")?,
        epochs: num("epochs")?,
        step: num("step")?,
    })
}

/// The run's fingerprint: what, beside the caller's identity, a checkpoint must have been made by.
pub(super) fn fingerprint(
    cfg: &FinetuneConfig,
    device: &Device,
    train_texts: &[&str],
    eval_count: usize,
) -> String {
    use w2sg_fsio::Digest;
    let mut h = w2sg_fsio::Sha256::new();
    // Debug prints every field, floats in their shortest round-trip form.
    h.update(format!("{cfg:?}\n{:?}\n{eval_count}\n", device.location()).as_bytes());
    for t in train_texts {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    w2sg_fsio::hex(&h.finalize())
}

/// The training position restored from a checkpoint.
pub(super) struct Restored {
    pub opt: AdamW,
    pub epochs: usize,
    pub step: usize,
    pub step_losses: Vec<f32>,
}

/// Times an epoch, to decide whether it is worth a checkpoint.
pub(super) struct EpochClock(Instant);

impl EpochClock {
    pub fn start() -> Self {
        EpochClock(Instant::now())
    }
}

impl Resume<'_> {
    /// Loads the checkpoint if it is this run's; otherwise records why not and returns `None`.
    pub(super) fn load(
        &mut self,
        vars: &VarStore,
        adam: AdamWConfig,
        fingerprint: &str,
        steps_per_epoch: usize,
        epochs: usize,
    ) -> Option<Restored> {
        if !self.path.exists() {
            return None;
        }
        match self.try_load(vars, adam, fingerprint, steps_per_epoch, epochs) {
            Ok(r) => {
                self.report.resumed_epochs = r.epochs;
                Some(r)
            }
            Err(why) => {
                self.report.ignored = Some(format!("{}: {why}", self.path.display()));
                None
            }
        }
    }

    fn try_load(
        &mut self,
        vars: &VarStore,
        adam: AdamWConfig,
        fingerprint: &str,
        steps_per_epoch: usize,
        epochs: usize,
    ) -> std::result::Result<Restored, String> {
        let h = read_header(&self.path).map_err(|e| e.to_string())?;
        if h.identity != self.identity {
            return Err(format!(
                "made for {:?}, not {:?}",
                h.identity, self.identity
            ));
        }
        if h.fingerprint != fingerprint {
            return Err("made with other settings, data or device".into());
        }
        if h.epochs == 0 || h.epochs >= epochs || h.step != h.epochs * steps_per_epoch {
            return Err(format!(
                "step {} after epoch {} does not fit a run of {epochs} epochs of {steps_per_epoch} steps",
                h.step, h.epochs
            ));
        }
        let (opt, mut rest) = AdamW::load_file(&self.path, adam, h.step as u64, vars.params())
            .map_err(|e| e.to_string())?;
        let mut values = Vec::with_capacity(vars.params().len());
        for p in vars.params() {
            let name = format!("var.{}", p.name);
            let t = rest
                .remove(&name)
                .ok_or_else(|| format!("tensor `{name}` not found"))?;
            if t.dims() != p.var.dims() || t.dtype() != p.var.dtype() {
                return Err(format!(
                    "tensor `{name}` has shape {:?} ({:?}), expected {:?} ({:?})",
                    t.dims(),
                    t.dtype(),
                    p.var.dims(),
                    p.var.dtype()
                ));
            }
            values.push(t);
        }
        let losses = take_vec::<f32>(&mut rest, "step_losses", DType::F32)?;
        if losses.len() != h.step {
            return Err(format!("{} step losses for step {}", losses.len(), h.step));
        }
        let state = take_vec::<u8>(&mut rest, "caller_state", DType::U8)?;
        if let Some(extra) = rest.keys().next() {
            return Err(format!("unexpected tensor `{extra}`"));
        }
        // The last check that can fail; the caller leaves its state as it was on an error.
        (self.load_state)(&state).map_err(|e| format!("caller state: {e}"))?;
        for (p, t) in vars.params().iter().zip(values) {
            p.var
                .set(&t.to_device(p.var.device()).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        Ok(Restored {
            opt,
            epochs: h.epochs,
            step: h.step,
            step_losses: losses,
        })
    }

    /// Writes the checkpoint after `epochs` finished epochs, if more follow and the epoch was long
    /// enough to be worth it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn save(
        &mut self,
        clock: &EpochClock,
        vars: &VarStore,
        opt: &AdamW,
        fingerprint: &str,
        epochs_done: usize,
        epochs: usize,
        step: usize,
        step_losses: &[f32],
    ) -> Result<()> {
        if epochs_done >= epochs || clock.0.elapsed().as_secs_f64() < self.min_epoch_secs {
            return Ok(());
        }
        let cpu = Device::Cpu;
        let state = (self.save_state)();
        let state_t = Tensor::from_vec(state.clone(), state.len(), &cpu)?;
        let losses_t = Tensor::from_slice(step_losses, step_losses.len(), &cpu)?;
        let named: Vec<(String, Tensor)> = vars
            .params()
            .iter()
            .map(|p| (format!("var.{}", p.name), p.var.as_tensor().clone()))
            .collect();
        let mut extra: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        extra.push(("step_losses", &losses_t));
        extra.push(("caller_state", &state_t));
        let metadata = BTreeMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("identity".to_string(), self.identity.clone()),
            ("fingerprint".to_string(), fingerprint.to_string()),
            ("epochs".to_string(), epochs_done.to_string()),
            ("step".to_string(), step.to_string()),
            ("adam_step".to_string(), opt.step.to_string()),
        ]);
        opt.save_file(&self.path, vars.params(), &extra, &metadata)?;
        self.report.saved_after.push(epochs_done);
        Ok(())
    }
}

/// Takes a 1-D tensor of `dtype` out of `rest` as a vector.
fn take_vec<T: candle_core::WithDType>(
    rest: &mut BTreeMap<String, Tensor>,
    name: &str,
    dtype: DType,
) -> std::result::Result<Vec<T>, String> {
    let t = rest
        .remove(name)
        .ok_or_else(|| format!("tensor `{name}` not found"))?;
    if t.dtype() != dtype || t.rank() != 1 {
        return Err(format!("tensor `{name}` is not a vector of {dtype:?}"));
    }
    t.to_vec1::<T>().map_err(|e| e.to_string())
}

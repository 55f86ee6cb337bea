//! Running a plan: resolve the checkpoints, then run every unit not yet in the results store.
//!
//! ## Units (crates/protocol's store, keyed by content)
//! - **features** of a checkpoint on a task: the pooled hidden states of every example (f32 blob).
//!   Key: the checkpoint's weight fingerprint, the dataset fingerprint, the feature settings (layer,
//!   pooling, truncation, dtype). Computed once and reused by every seed, loss and weak model.
//! - **weak_labels** of the weak model on a task and seed: its L-BFGS probe trained on half A's ground
//!   truth, then its probabilities on half B (the students' soft labels) and on the test set (f64
//!   blob, B then test). Key: the weak model's fingerprint, the dataset, and a config hash of the
//!   feature, split and probe settings. With `[weak] train = "finetune"` the weak model itself is
//!   fine-tuned on half A instead ([`crate::finetune::finetune_weak_labels`]; no weak features unit),
//!   and the config hash covers the fine-tuning settings, with a `mode` field in the key.
//! - **probe** units, per strong checkpoint, task and seed: the ceiling (`loss = "ground_truth"`,
//!   trained on half B's true labels) and one w2s student per loss (trained on the weak soft labels;
//!   its key includes the weak-labels unit's key). Blob: probabilities on the test set.
//!
//! ## Order, failure and resume
//! The weak model's units run first, on every task. Then checkpoints run in training order; for each,
//! every task in turn: its features, then its probes, seed by seed (so a checkpoint's weights are
//! needed over one stretch of the run: [`crate::fetch`] downloads them at its first unit and, with
//! `keep_weights = false`, deletes them after its last). A unit
//! that fails (a corrupt checkpoint file, an unreadable tokenizer, a diverging fit, even a panic) is
//! committed as failed with its message, the units that need its output are skipped, and the sweep
//! goes on; the command exits 1 at the end. Nothing is ever half-written: a unit's row and blob are
//! one SQLite transaction, so a kill at any moment loses at most the unit in flight, which runs again
//! on resume with the same result (every computation is deterministic; a fine-tuned student continues
//! from its last epoch checkpoint, see [`crate::finetune`]).
//!
//! ## Shards
//! `--shard I/N` keeps the checkpoints whose group (family and revision name) falls in slice I of N
//! ([`ShardSpec::select`]). The weak model's units are needed by every shard, so every shard computes
//! them; they are identical and [`w2sg_protocol::store::merge`] keeps one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use w2sg_progress::{Progress, Reporter};
use w2sg_protocol::{Outcome, RunPolicy, ShardSpec, Store, UnitKey, UnitSpec};

use crate::dataset::{Dataset, Split};
use crate::error::Result;
use crate::plan::Plan;

pub use crate::compute::*;
pub use crate::fault;
pub use crate::resolve::*;
pub use crate::specs::*;

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub shard: ShardSpec,
    pub policy: RunPolicy,
    /// Where the run reports its units as they finish (default: nowhere).
    pub progress: Reporter,
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub units_done: usize,
    pub units_skipped: usize,
    pub units_failed: usize,
    /// Of `units_failed`, those recorded as failed by an earlier run and not retried.
    pub units_failed_earlier: usize,
    /// Units not run because a unit they need failed.
    pub units_blocked: usize,
    pub checkpoints: usize,
    /// (unit description, error) of the failures of this run.
    pub failures: Vec<(String, String)>,
}

impl RunReport {
    fn count(&mut self, what: &str, o: &Outcome) {
        match o {
            Outcome::Done => self.units_done += 1,
            Outcome::Skipped(w2sg_protocol::UnitStatus::Done) => self.units_skipped += 1,
            Outcome::Skipped(w2sg_protocol::UnitStatus::Failed) => {
                self.units_skipped += 1;
                self.units_failed += 1;
                self.units_failed_earlier += 1;
            }
            Outcome::Failed(msg) => {
                self.units_failed += 1;
                self.failures.push((what.to_string(), msg.clone()));
            }
        }
    }
}

/// Units per checkpoint and task: features, then per seed the ceiling and one w2s per loss.

/// Runs (or resumes) every unit of `resolved` in this shard into `store`.
pub fn run(resolved: &Resolved, store: &Store, opts: &RunOptions) -> Result<RunReport> {
    let plan = &resolved.plan;
    let mut report = RunReport::default();
    if fault::armed() {
        store.set_before_commit(Some(Box::new(|_| fault::visit("sweep-commit"))));
    }
    let all: Vec<CheckpointRef> = resolved
        .families
        .iter()
        .flat_map(|(_, cks)| cks.iter().cloned())
        .collect();
    let mine: Vec<&CheckpointRef> = opts.shard.select(&all, CheckpointRef::group);
    let tuned = finetuned_groups(resolved);
    report.checkpoints = mine.len();
    let students = plan.seeds.len() * (1 + plan.losses.len());
    let probe_units = if plan.probes() { 1 + students } else { 0 };
    let tuned_here = mine.iter().filter(|c| tuned.contains(&c.group())).count();
    let total: usize = resolved
        .datasets
        .iter()
        .map(|ds| {
            let tuned_units = if plan.finetune.covers(&ds.name) {
                let seeds = plan
                    .seeds
                    .iter()
                    .filter(|&&s| plan.finetune.covers_seed(s))
                    .count();
                tuned_here * seeds * (1 + plan.losses.len())
            } else {
                0
            };
            let weak_units = usize::from(!plan.weak.finetuned()) + plan.seeds.len();
            mine.len() * probe_units + tuned_units + weak_units
        })
        .sum();
    let total = total as u64;
    let bar: &dyn Progress = &*opts.progress;
    bar.phase(total, 0, "units");

    // The weak supervisor first, on every task: its features (probe supervisor), then its labels
    // per seed.
    let mut weak_parts = Vec::with_capacity(resolved.datasets.len());
    for ds in &resolved.datasets {
        weak_parts.push(run_weak(resolved, ds, store, opts, &mut report, bar)?);
    }
    // Then checkpoint by checkpoint, every task, so that a checkpoint's weights are needed over one
    // stretch of the run and can be released after it (`keep_weights = false`).
    for ck in &mine {
        for (ds, w) in resolved.datasets.iter().zip(&weak_parts) {
            bar.status(&format!("{} · {}/{}", ds.name, ck.family, ck.revision));
            run_checkpoint(
                plan,
                ck,
                ds,
                store,
                opts,
                &w.splits,
                &w.keys,
                &w.blobs,
                &mut report,
                bar,
            )?;
            if tuned.contains(&ck.group()) && plan.finetune.covers(&ds.name) {
                run_finetuned(
                    plan,
                    ck,
                    ds,
                    store,
                    opts,
                    &w.splits,
                    &w.keys,
                    &w.blobs,
                    &mut report,
                    bar,
                )?;
            }
        }
        if !ck.keep_weights && ck.fingerprint.is_ok() {
            let tuned_ck = tuned.contains(&ck.group());
            let mut stored = true;
            for key in weight_units(resolved, ck, &weak_parts, tuned_ck)? {
                stored &= store.status(&key)?.is_some();
            }
            if stored {
                crate::fetch::release(&ck.dir)?;
            }
        }
    }
    bar.end_phase();
    Ok(report)
}

/// Progress inside a feature-extraction unit of `ds`, as the status line: `label` and the examples
/// done so far.
fn examples_done<'a>(bar: &'a dyn Progress, label: String, ds: &Dataset) -> impl FnMut(usize) + 'a {
    let n = ds.texts.len();
    move |done| bar.status(&format!("{label} · features {done}/{n} examples"))
}

/// Progress inside a fine-tuning unit, as the status line: `label` and the optimizer steps done.
fn steps_done<'a>(bar: &'a dyn Progress, label: &'a str) -> impl FnMut(usize, usize) + 'a {
    move |done, total| bar.status(&format!("{label} · step {done}/{total}"))
}

/// The weak supervisor's units on one task, and what the students need of them.
struct WeakParts {
    splits: BTreeMap<u64, Split>,
    keys: BTreeMap<u64, Option<UnitKey>>,
    blobs: BTreeMap<u64, (Vec<f64>, Vec<f64>)>,
}

fn run_weak(
    resolved: &Resolved,
    ds: &Dataset,
    store: &Store,
    opts: &RunOptions,
    report: &mut RunReport,
    bar: &dyn Progress,
) -> Result<WeakParts> {
    let plan = &resolved.plan;
    let weak = &resolved.weak;
    // A fine-tuned supervisor reads the weak model's weights, not its features: no features unit.
    let weak_features = if plan.weak.finetuned() {
        None
    } else {
        let wf_spec = features_spec(plan, weak, ds)?;
        bar.status(&format!("{} · weak {} features", ds.name, weak.revision));
        let o = store.run_unit(&wf_spec, opts.policy, || {
            let label = format!("{} · weak {}", ds.name, weak.revision);
            extract_features(plan, weak, ds, &mut examples_done(bar, label, ds))
        })?;
        report.count(
            &format!("features of weak {} on {}", weak.revision, ds.name),
            &o,
        );
        bar.advance(1);
        Some(load_features(store, &wf_spec.key()?)?)
    };
    let mut weak_keys: BTreeMap<u64, Option<UnitKey>> = BTreeMap::new();
    let mut splits: BTreeMap<u64, Split> = BTreeMap::new();
    for &seed in &plan.seeds {
        let split = ds.split(&plan.split, seed)?;
        let spec = weak_spec(plan, weak, ds, seed)?;
        let key = spec.key()?;
        let o = match &weak_features {
            Some(Some(wf)) => {
                Some(store.run_unit(&spec, opts.policy, || weak_labels(plan, wf, ds, &split))?)
            }
            Some(None) => None,
            None => {
                let label = format!(
                    "{} · fine-tuning weak {} seed {seed}",
                    ds.name, weak.revision
                );
                bar.status(&label);
                let partial = crate::finetune::epoch_checkpoint(store.path(), &key);
                let o = store.run_unit(&spec, opts.policy, || {
                    crate::finetune::finetune_weak_labels(
                        plan,
                        weak,
                        ds,
                        &split,
                        seed,
                        Some((&partial, &key)),
                        &mut steps_done(bar, &label),
                    )
                })?;
                crate::finetune::remove_epoch_checkpoint(&partial);
                Some(o)
            }
        };
        match o {
            Some(o) => {
                report.count(&format!("weak labels of {} seed {seed}", ds.name), &o);
                let ok = matches!(store.status(&key)?, Some(w2sg_protocol::UnitStatus::Done));
                weak_keys.insert(seed, ok.then_some(key));
            }
            None => {
                report.units_blocked += 1;
                weak_keys.insert(seed, None);
            }
        }
        splits.insert(seed, split);
        bar.advance(1);
    }
    let mut weak_blobs: BTreeMap<u64, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for (&seed, key) in &weak_keys {
        if let Some(k) = key {
            let blob = store
                .blob(k)?
                .ok_or_else(|| store_problem(store, k, "weak labels without their blob"))?;
            let parts = split_weak_blob(&blob, splits[&seed].strong.len())
                .ok_or_else(|| store_problem(store, k, "weak labels of the wrong size"))?;
            weak_blobs.insert(seed, parts);
        }
    }
    Ok(WeakParts {
        splits,
        keys: weak_keys,
        blobs: weak_blobs,
    })
}

/// The keys of a checkpoint's units that read its weights: features (when probes run) and the
/// fine-tuned students, on every task.
fn weight_units(
    resolved: &Resolved,
    ck: &CheckpointRef,
    weak_parts: &[WeakParts],
    tuned: bool,
) -> Result<Vec<UnitKey>> {
    let plan = &resolved.plan;
    let mut keys = Vec::new();
    for (ds, w) in resolved.datasets.iter().zip(weak_parts) {
        if plan.probes() {
            keys.push(features_spec(plan, ck, ds)?.key()?);
        }
        if tuned {
            for &seed in &plan.seeds {
                keys.push(
                    crate::finetune::finetune_spec(plan, ck, ds, seed, CEILING, None)?.key()?,
                );
                if let Some(wk) = &w.keys[&seed] {
                    for loss in &plan.losses {
                        keys.push(
                            crate::finetune::finetune_spec(plan, ck, ds, seed, loss, Some(wk))?
                                .key()?,
                        );
                    }
                }
            }
        }
    }
    Ok(keys)
}

#[allow(clippy::too_many_arguments)]
fn run_checkpoint(
    plan: &Plan,
    ck: &CheckpointRef,
    ds: &Dataset,
    store: &Store,
    opts: &RunOptions,
    splits: &BTreeMap<u64, Split>,
    weak_keys: &BTreeMap<u64, Option<UnitKey>>,
    weak_blobs: &BTreeMap<u64, (Vec<f64>, Vec<f64>)>,
    report: &mut RunReport,
    bar: &dyn Progress,
) -> Result<()> {
    if !plan.probes() {
        return Ok(());
    }
    // Every probe spec of this checkpoint; if all are finished there is nothing to load.
    let mut probes: Vec<(u64, String, UnitSpec)> = Vec::new();
    for &seed in &plan.seeds {
        probes.push((
            seed,
            CEILING.into(),
            probe_spec(plan, ck, ds, seed, CEILING, None)?,
        ));
        for loss in &plan.losses {
            if let Some(wk) = &weak_keys[&seed] {
                probes.push((
                    seed,
                    loss.clone(),
                    probe_spec(plan, ck, ds, seed, loss, Some(wk))?,
                ));
            }
        }
    }
    let blocked = plan.seeds.len() * (1 + plan.losses.len()) - probes.len();
    report.units_blocked += blocked;
    let fspec = features_spec(plan, ck, ds)?;
    let fkey = fspec.key()?;
    let mut pending = Vec::new();
    for (seed, loss, spec) in &probes {
        match store.status(&spec.key()?)? {
            Some(st @ w2sg_protocol::UnitStatus::Done) => report.count("", &Outcome::Skipped(st)),
            Some(st @ w2sg_protocol::UnitStatus::Failed) if !opts.policy.retry_failed => {
                report.count("", &Outcome::Skipped(st))
            }
            _ => pending.push((*seed, loss.clone(), spec.clone())),
        }
    }
    bar.advance((blocked + probes.len() - pending.len()) as u64);
    let fstatus = store.status(&fkey)?;
    if pending.is_empty() {
        if let Some(st) = fstatus {
            report.count("", &Outcome::Skipped(st));
            bar.advance(1);
            return Ok(());
        }
    }
    let what = format!("features of {}/{} on {}", ck.family, ck.revision, ds.name);
    let o = store.run_unit(&fspec, opts.policy, || {
        let label = format!("{} · {}/{}", ds.name, ck.family, ck.revision);
        extract_features(plan, ck, ds, &mut examples_done(bar, label, ds))
    })?;
    report.count(&what, &o);
    bar.advance(1);
    let Some(features) = load_features(store, &fkey)? else {
        report.units_blocked += pending.len();
        bar.advance(pending.len() as u64);
        return Ok(());
    };
    for (seed, loss, spec) in pending {
        let split = &splits[&seed];
        let weak = weak_blobs
            .get(&seed)
            .map(|(b, t)| (b.as_slice(), t.as_slice()));
        let weak = if loss == CEILING { None } else { weak };
        let o = store.run_unit(&spec, opts.policy, || {
            train_student(plan, &features, ds, split, seed, &loss, weak)
        })?;
        report.count(
            &format!(
                "{loss} student of {}/{} on {} seed {seed}",
                ck.family, ck.revision, ds.name
            ),
            &o,
        );
        bar.advance(1);
    }
    Ok(())
}

/// The fine-tuned students of one checkpoint (see [`crate::finetune`]): per seed, the ceiling and one
/// w2s student per loss.
#[allow(clippy::too_many_arguments)]
fn run_finetuned(
    plan: &Plan,
    ck: &CheckpointRef,
    ds: &Dataset,
    store: &Store,
    opts: &RunOptions,
    splits: &BTreeMap<u64, Split>,
    weak_keys: &BTreeMap<u64, Option<UnitKey>>,
    weak_blobs: &BTreeMap<u64, (Vec<f64>, Vec<f64>)>,
    report: &mut RunReport,
    bar: &dyn Progress,
) -> Result<()> {
    use crate::finetune::{
        epoch_checkpoint, finetune_spec, finetune_student, remove_epoch_checkpoint,
    };
    for seed in plan
        .seeds
        .iter()
        .copied()
        .filter(|&s| plan.finetune.covers_seed(s))
    {
        let split = &splits[&seed];
        let mut students = vec![(CEILING.to_string(), None)];
        for loss in &plan.losses {
            match &weak_keys[&seed] {
                Some(wk) => students.push((loss.clone(), Some(wk))),
                None => {
                    report.units_blocked += 1;
                    bar.advance(1);
                }
            }
        }
        for (loss, wk) in students {
            let spec = finetune_spec(plan, ck, ds, seed, &loss, wk)?;
            let weak = if loss == CEILING {
                None
            } else {
                weak_blobs
                    .get(&seed)
                    .map(|(b, t)| (b.as_slice(), t.as_slice()))
            };
            let label = format!(
                "{} · {}/{} · fine-tuning {loss} seed {seed}",
                ds.name, ck.family, ck.revision
            );
            bar.status(&label);
            let key = spec.key()?;
            let partial = epoch_checkpoint(store.path(), &key);
            let o = store.run_unit(&spec, opts.policy, || {
                finetune_student(
                    plan,
                    ck,
                    ds,
                    split,
                    seed,
                    &loss,
                    weak,
                    Some((&partial, &key)),
                    &mut steps_done(bar, &label),
                )
            })?;
            // Stored (done or failed) or found stored: the epoch checkpoint is of no more use.
            remove_epoch_checkpoint(&partial);
            report.count(
                &format!(
                    "fine-tuned {loss} student of {}/{} on {} seed {seed}",
                    ck.family, ck.revision, ds.name
                ),
                &o,
            );
            bar.advance(1);
        }
    }
    Ok(())
}

/// The default results database of an output directory, or a shard's.
pub fn store_path(out: &Path, shard: &ShardSpec) -> PathBuf {
    if shard.count == 1 {
        out.join("results.sqlite")
    } else {
        out.join("shards")
            .join(format!("shard-{}-of-{}.sqlite", shard.index, shard.count))
    }
}

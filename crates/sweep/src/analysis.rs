//! From finished units to the sweep's answers: per checkpoint the accuracies of weak, w2s and ceiling
//! with PGR and its bootstrap interval over test examples and seeds, and per (family, task, loss) where
//! W2SG appears: the first sustained step and the sigmoid fit of the W2S gain (acc_w2s − acc_weak)
//! against log(step), with its midpoint reported only where the data identify it.
//!
//! Reads the store only (plus the plan's splits), so it can run again at any time, on a partial
//! sweep or after a merge; a checkpoint with missing or failed units gets a row saying so, never a
//! made-up number.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use w2sg_protocol::metrics::paired_diff_se;
use w2sg_protocol::pgr::mean_and_se;
use w2sg_protocol::store::bytes_to_f64s;
use w2sg_protocol::{
    first_sustained_step, fit_gain_sigmoid, pgr, PgrConfig, SeedOutcomes, SigmoidFit, StepDiff,
    StepOutcomes, Store, UnitKey, UnitStatus,
};

use crate::error::Result;
use crate::resolve::{finetuned_groups, CheckpointRef, Resolved};
use crate::specs::{features_spec, probe_spec, split_weak_blob, weak_spec, CEILING};

/// One (checkpoint, task, loss, seed).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedRow {
    pub family: String,
    pub task: String,
    /// `probe`, or the fine-tuning mode (`finetune-all`, `lora-8`, …).
    pub mode: String,
    /// The weak supervisor's: `probe`, or its fine-tuning mode (`[weak] train = "finetune"`).
    pub weak_mode: String,
    pub loss: String,
    pub revision: String,
    pub step: Option<u64>,
    pub seed: u64,
    pub n_test: usize,
    pub acc_weak: f64,
    pub acc_w2s: f64,
    pub acc_ceiling: f64,
    pub auroc_weak: Option<f64>,
    pub auroc_w2s: Option<f64>,
    pub auroc_ceiling: Option<f64>,
    pub ece_weak: f64,
    pub ece_w2s: f64,
    pub ece_ceiling: f64,
    pub agreement_with_weak: f64,
    /// PGR of this seed alone (`None` when its gap is within its standard error).
    pub pgr: Option<f64>,
}

/// One (checkpoint, task, loss), over seeds: a row of results.csv.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepRow {
    pub family: String,
    pub task: String,
    pub mode: String,
    pub weak_mode: String,
    pub loss: String,
    pub revision: String,
    pub step: Option<u64>,
    pub tokens: Option<u64>,
    /// `ok`, `partial` (some seeds missing or failed), `failed` or `missing`.
    pub status: String,
    /// The first error of a failed unit of this checkpoint, if any.
    pub error: Option<String>,
    pub n_seeds: usize,
    pub n_test: usize,
    pub acc_weak: Option<f64>,
    pub acc_weak_se: Option<f64>,
    pub acc_w2s: Option<f64>,
    pub acc_w2s_se: Option<f64>,
    pub acc_ceiling: Option<f64>,
    pub acc_ceiling_se: Option<f64>,
    pub auroc_weak: Option<f64>,
    pub auroc_w2s: Option<f64>,
    pub auroc_ceiling: Option<f64>,
    pub ece_w2s: Option<f64>,
    pub ece_ceiling: Option<f64>,
    pub agreement_with_weak: Option<f64>,
    pub gap: Option<f64>,
    pub gap_se: Option<f64>,
    pub pgr: Option<f64>,
    pub pgr_lo: Option<f64>,
    pub pgr_hi: Option<f64>,
}

/// Where W2SG appears for one (family, task, loss).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Transition {
    pub family: String,
    pub task: String,
    pub mode: String,
    pub loss: String,
    /// First step from which w2s beats weak by more than z SEs at every later step.
    pub sustained_step: Option<u64>,
    pub z: f64,
    /// The sigmoid fit of the W2S gain against ln(step); its midpoint is a finding only when
    /// [`SigmoidFit::identified`] (see [`Transition::not_identified`]).
    pub sigmoid: Option<SigmoidFit>,
    /// Why there is no sigmoid fit (too few steps with outcomes).
    pub sigmoid_error: Option<String>,
}

/// Everything the outputs need.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Analysis {
    pub seeds: Vec<SeedRow>,
    pub steps: Vec<StepRow>,
    pub transitions: Vec<Transition>,
}

/// What one probe unit left in the store.
enum Found {
    Done(Map<String, Value>, Vec<f64>),
    Failed(String),
    Missing,
}

fn find(store: &Store, key: &UnitKey) -> Result<Found> {
    let Some(rec) = store.get(key)? else {
        return Ok(Found::Missing);
    };
    match rec.status {
        UnitStatus::Failed => Ok(Found::Failed(rec.error.unwrap_or_default())),
        UnitStatus::Done => {
            let probs = store
                .blob(key)?
                .and_then(|b| bytes_to_f64s(&b))
                .unwrap_or_default();
            Ok(Found::Done(rec.result.unwrap_or_default(), probs))
        }
    }
}

fn num(m: &Map<String, Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}

/// The weak supervisor of one seed, as the analysis needs it.
struct WeakSeed {
    labels: Vec<bool>,
    probs: Vec<f64>,
    result: Map<String, Value>,
}

/// Analyses every checkpoint of the plan that the store holds.
pub fn analyse(resolved: &Resolved, store: &Store) -> Result<Analysis> {
    let plan = &resolved.plan;
    let mut out = Analysis::default();
    let single = PgrConfig {
        bootstrap: 0,
        ..plan.pgr.clone()
    };
    for ds in &resolved.datasets {
        // Weak labels per seed (seeds whose weak unit is not done drop out everywhere).
        let mut weak: BTreeMap<u64, WeakSeed> = BTreeMap::new();
        let mut weak_error: Option<String> = None;
        // Weak features that failed leave no weak-labels units: report their error.
        if !plan.weak.finetuned() {
            let weak_features = features_spec(plan, &resolved.weak, ds)?.key()?;
            if let Found::Failed(e) = find(store, &weak_features)? {
                weak_error = Some(format!("features of the weak model: {e}"));
            }
        }
        for &seed in &plan.seeds {
            let split = ds.split(&plan.split, seed)?;
            let key = weak_spec(plan, &resolved.weak, ds, seed)?.key()?;
            match find(store, &key)? {
                Found::Done(result, blob) => {
                    let bytes = w2sg_protocol::store::f64s_to_bytes(&blob);
                    if let Some((_, on_test)) = split_weak_blob(&bytes, split.strong.len()) {
                        weak.insert(
                            seed,
                            WeakSeed {
                                labels: ds.labels_at(&split.test),
                                probs: on_test,
                                result,
                            },
                        );
                    }
                }
                Found::Failed(e) => {
                    weak_error.get_or_insert(format!("weak labels, seed {seed}: {e}"));
                }
                Found::Missing => {}
            }
        }
        let tuned = finetuned_groups(resolved);
        let mut modes: Vec<Option<String>> = Vec::new();
        if plan.probes() {
            modes.push(None);
        }
        if plan.finetunes() && plan.finetune.covers(&ds.name) {
            modes.push(Some(plan.finetune.mode_name()));
        }
        for (family, checkpoints) in &resolved.families {
            for mode in &modes {
                for loss in &plan.losses {
                    let mut diffs = Vec::new();
                    let mut step_outcomes = Vec::new();
                    for ck in checkpoints {
                        if mode.is_some() && !tuned.contains(&ck.group()) {
                            continue;
                        }
                        let row = analyse_checkpoint(
                            resolved,
                            store,
                            ds,
                            ck,
                            mode.as_deref(),
                            loss,
                            &weak,
                            weak_error.as_deref(),
                            &single,
                            &mut out.seeds,
                            &mut diffs,
                            &mut step_outcomes,
                        )?;
                        out.steps.push(row);
                    }
                    let mut t = transition(plan, family, &ds.name, loss, &diffs, &step_outcomes);
                    t.mode = mode.clone().unwrap_or_else(|| "probe".into());
                    out.transitions.push(t);
                }
            }
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn analyse_checkpoint(
    resolved: &Resolved,
    store: &Store,
    ds: &crate::dataset::Dataset,
    ck: &CheckpointRef,
    mode: Option<&str>,
    loss: &str,
    weak: &BTreeMap<u64, WeakSeed>,
    weak_error: Option<&str>,
    single: &PgrConfig,
    seed_rows: &mut Vec<SeedRow>,
    diffs: &mut Vec<StepDiff>,
    step_outcomes: &mut Vec<StepOutcomes>,
) -> Result<StepRow> {
    let plan = &resolved.plan;
    let mut outcomes = Vec::new();
    let mut rows: Vec<SeedRow> = Vec::new();
    let mut error: Option<String> = weak_error.map(str::to_string);
    let mut failed = 0;
    // A checkpoint whose features failed has no probe units at all: report the features' error.
    if mode.is_some() {
        // Fine-tuned students do not read features.
    } else if let Some(UnitStatus::Failed) = store.status(&features_spec(plan, ck, ds)?.key()?)? {
        if let Found::Failed(e) = find(store, &features_spec(plan, ck, ds)?.key()?)? {
            failed += 1;
            error = Some(e);
        }
    }
    for &seed in &plan.seeds {
        if mode.is_some() && !plan.finetune.covers_seed(seed) {
            continue;
        }
        let Some(w) = weak.get(&seed) else {
            continue;
        };
        let wkey = weak_spec(plan, &resolved.weak, ds, seed)?.key()?;
        let spec = |l: &str, wk: Option<&UnitKey>| match mode {
            None => probe_spec(plan, ck, ds, seed, l, wk),
            Some(_) => crate::finetune::finetune_spec(plan, ck, ds, seed, l, wk),
        };
        let ceiling = find(store, &spec(CEILING, None)?.key()?)?;
        let student = find(store, &spec(loss, Some(&wkey))?.key()?)?;
        let (c_res, c_probs, s_res, s_probs) = match (ceiling, student) {
            (Found::Done(a, b), Found::Done(c, d)) => (a, b, c, d),
            (Found::Failed(e), _) | (_, Found::Failed(e)) => {
                failed += 1;
                error.get_or_insert(e);
                continue;
            }
            _ => continue,
        };
        let n = w.labels.len();
        if c_probs.len() != n || s_probs.len() != n {
            failed += 1;
            error.get_or_insert(format!(
                "stored test predictions of seed {seed} do not match the split ({n} examples)"
            ));
            continue;
        }
        let o = SeedOutcomes::from_probs(seed, &w.labels, &w.probs, &s_probs, &c_probs)?;
        let seed_pgr = pgr(std::slice::from_ref(&o), single)?.pgr;
        if let Some(step) = ck.step {
            diffs.push(StepDiff {
                step,
                seed,
                diff: mean(&o.w2s) - mean(&o.weak),
                se: paired_diff_se(&o.w2s, &o.weak),
            });
            step_outcomes.push(StepOutcomes {
                step,
                seed,
                w2s: o.w2s.clone(),
                weak: o.weak.clone(),
            });
        }
        rows.push(SeedRow {
            family: ck.family.clone(),
            task: ds.name.clone(),
            mode: mode.unwrap_or("probe").to_string(),
            weak_mode: plan.weak_mode(),
            loss: loss.to_string(),
            revision: ck.revision.clone(),
            step: ck.step,
            seed,
            n_test: n,
            acc_weak: mean(&o.weak),
            acc_w2s: mean(&o.w2s),
            acc_ceiling: mean(&o.ceiling),
            auroc_weak: num(&w.result, "auroc"),
            auroc_w2s: num(&s_res, "auroc"),
            auroc_ceiling: num(&c_res, "auroc"),
            ece_weak: num(&w.result, "ece").unwrap_or(f64::NAN),
            ece_w2s: num(&s_res, "ece").unwrap_or(f64::NAN),
            ece_ceiling: num(&c_res, "ece").unwrap_or(f64::NAN),
            agreement_with_weak: num(&s_res, "agreement_with_weak").unwrap_or(f64::NAN),
            pgr: seed_pgr,
        });
        outcomes.push(o);
    }
    let status = if outcomes.len() == plan.seeds.len() {
        "ok"
    } else if !outcomes.is_empty() {
        "partial"
    } else if failed > 0 || error.is_some() {
        "failed"
    } else {
        "missing"
    };
    let mut row = StepRow {
        family: ck.family.clone(),
        task: ds.name.clone(),
        mode: mode.unwrap_or("probe").to_string(),
        weak_mode: plan.weak_mode(),
        loss: loss.to_string(),
        revision: ck.revision.clone(),
        step: ck.step,
        tokens: ck.tokens,
        status: status.into(),
        error: if status == "ok" { None } else { error },
        n_seeds: outcomes.len(),
        n_test: outcomes.iter().map(|o| o.weak.len()).sum(),
        acc_weak: None,
        acc_weak_se: None,
        acc_w2s: None,
        acc_w2s_se: None,
        acc_ceiling: None,
        acc_ceiling_se: None,
        auroc_weak: None,
        auroc_w2s: None,
        auroc_ceiling: None,
        ece_w2s: None,
        ece_ceiling: None,
        agreement_with_weak: None,
        gap: None,
        gap_se: None,
        pgr: None,
        pgr_lo: None,
        pgr_hi: None,
    };
    if !outcomes.is_empty() {
        let (aw, sw) = seed_mean_se(&outcomes, |o| &o.weak);
        let (a2, s2) = seed_mean_se(&outcomes, |o| &o.w2s);
        let (ac, sc) = seed_mean_se(&outcomes, |o| &o.ceiling);
        row.acc_weak = Some(aw);
        row.acc_weak_se = Some(sw);
        row.acc_w2s = Some(a2);
        row.acc_w2s_se = Some(s2);
        row.acc_ceiling = Some(ac);
        row.acc_ceiling_se = Some(sc);
        row.auroc_weak = opt_mean(rows.iter().map(|r| r.auroc_weak));
        row.auroc_w2s = opt_mean(rows.iter().map(|r| r.auroc_w2s));
        row.auroc_ceiling = opt_mean(rows.iter().map(|r| r.auroc_ceiling));
        row.ece_w2s = opt_mean(rows.iter().map(|r| Some(r.ece_w2s)));
        row.ece_ceiling = opt_mean(rows.iter().map(|r| Some(r.ece_ceiling)));
        row.agreement_with_weak = opt_mean(rows.iter().map(|r| Some(r.agreement_with_weak)));
        let est = pgr(&outcomes, &plan.pgr)?;
        row.gap = Some(est.gap);
        row.gap_se = Some(est.gap_se);
        row.pgr = est.pgr;
        row.pgr_lo = est.interval.map(|i| i.0);
        row.pgr_hi = est.interval.map(|i| i.1);
    }
    seed_rows.extend(rows);
    Ok(row)
}

fn mean(v: &[bool]) -> f64 {
    v.iter().filter(|&&b| b).count() as f64 / v.len().max(1) as f64
}

/// Mean accuracy over seeds and its conservative SE (binomial within seeds, spread across seeds).
fn seed_mean_se(
    outcomes: &[SeedOutcomes],
    pick: impl Fn(&SeedOutcomes) -> &Vec<bool>,
) -> (f64, f64) {
    let accs: Vec<f64> = outcomes.iter().map(|o| mean(pick(o))).collect();
    let ses: Vec<f64> = outcomes
        .iter()
        .zip(&accs)
        .map(|(o, &a)| w2sg_protocol::binomial_se(a, pick(o).len()))
        .collect();
    mean_and_se(&accs, &ses)
}

fn opt_mean(vals: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = vals.flatten().filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn transition(
    plan: &crate::plan::Plan,
    family: &str,
    task: &str,
    loss: &str,
    diffs: &[StepDiff],
    step_outcomes: &[StepOutcomes],
) -> Transition {
    let z = plan.transition.z;
    let sustained_step = if diffs.is_empty() {
        None
    } else {
        first_sustained_step(diffs, z).ok().and_then(|s| s.step)
    };
    let (sigmoid, sigmoid_error) = match fit_gain_sigmoid(step_outcomes, &plan.transition.sigmoid) {
        Ok(fit) => (Some(fit), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Transition {
        family: family.to_string(),
        task: task.to_string(),
        mode: "probe".into(),
        loss: loss.to_string(),
        sustained_step,
        z,
        sigmoid,
        sigmoid_error,
    }
}

impl Transition {
    /// The fit whose midpoint the data identify, if any.
    pub fn identified_fit(&self) -> Option<&SigmoidFit> {
        self.sigmoid.as_ref().filter(|s| s.identified())
    }

    /// Why no midpoint is reported: no fit at all, or a fit whose midpoint is not identified.
    pub fn not_identified(&self) -> Option<String> {
        match &self.sigmoid {
            None => Some(
                self.sigmoid_error
                    .clone()
                    .unwrap_or_else(|| "no fit".into()),
            ),
            Some(s) => s.not_identified.clone(),
        }
    }
}

//! Running a plan: resolve the checkpoints, then run every unit not yet in the results store.
//!
//! ## Units (crates/protocol's store, keyed by content)
//! - **features** of a checkpoint on a task: the pooled hidden states of every example (f32 blob).
//!   Key: the checkpoint's weight fingerprint, the dataset fingerprint, the feature settings (layer,
//!   pooling, truncation, dtype). Computed once and reused by every seed, loss and weak model.
//! - **weak_labels** of the weak model on a task and seed: its L-BFGS probe trained on half A's ground
//!   truth, then its probabilities on half B (the students' soft labels) and on the test set (f64
//!   blob, B then test). Key: the weak model's fingerprint, the dataset, and a config hash of the
//!   feature, split and probe settings.
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
//! on resume with the same result (every computation is deterministic).
//!
//! ## Shards
//! `--shard I/N` keeps the checkpoints whose group (family and revision name) falls in slice I of N
//! ([`ShardSpec::select`]). The weak model's units are needed by every shard, so every shard computes
//! them; they are identical and [`w2sg_protocol::store::merge`] keeps one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Serialize;
use serde_json::{json, Map, Value};

use w2sg_lm::features::{FeatureOptions, Pooling};
use w2sg_lm::model::Model;
use w2sg_lm::revisions::{
    family_source, fingerprint, list_revisions, repo_family, scale_checkpoint_steps, Revision,
};
use w2sg_protocol::key::config_hash;
use w2sg_protocol::store::{bytes_to_f32s, bytes_to_f64s, f32s_to_bytes, f64s_to_bytes};
use w2sg_protocol::{
    EvalMetrics, Features, Outcome, ProbeConfig, RunPolicy, ShardSpec, Store, Targets, UnitKey,
    UnitKind, UnitOutput, UnitSpec,
};

use crate::dataset::{Dataset, Split};
use crate::error::{Error, Result};
use crate::plan::{FamilyPlan, Plan, Revisions};

/// Test-only fault injection: `W2SG_TEST_ABORT_AT=<point>:<N>` makes the process `abort()` (as
/// abrupt as a kill: no destructors, no flushing) the N-th time (1-based) it reaches a point:
/// - `sweep-features`: inside a feature extraction, after its first batch;
/// - `sweep-train`: a student trained, its result not yet handed to the store;
/// - `sweep-commit`: inside the store's write transaction, before `COMMIT`.
///
/// Unset in normal use; never set it outside tests.
pub mod fault {
    use std::sync::atomic::{AtomicU64, Ordering};

    static FEATURES: AtomicU64 = AtomicU64::new(0);
    static TRAIN: AtomicU64 = AtomicU64::new(0);
    static COMMIT: AtomicU64 = AtomicU64::new(0);
    static FINETUNE: AtomicU64 = AtomicU64::new(0);

    /// Counts a visit to `point` and aborts if it is the configured one.
    pub fn visit(point: &str) {
        if !armed() {
            return;
        }
        let counter = match point {
            "sweep-features" => &FEATURES,
            "sweep-train" => &TRAIN,
            "sweep-commit" => &COMMIT,
            "sweep-finetune-step" => &FINETUNE,
            _ => return,
        };
        let count = counter.fetch_add(1, Ordering::SeqCst) + 1;
        w2sg_fsio::test_abort_if(point, count);
    }

    /// Whether any fault is configured (so the store hook is installed only then).
    pub fn armed() -> bool {
        std::env::var_os(w2sg_fsio::TEST_ABORT_ENV).is_some()
    }
}

/// Bins of the expected calibration error.
pub const ECE_BINS: usize = 10;

/// One checkpoint of the sweep: where it is, where it sits in training, and its weights' identity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckpointRef {
    pub family: String,
    pub revision: String,
    pub step: Option<u64>,
    pub tokens: Option<u64>,
    pub dir: PathBuf,
    pub dtype: String,
    /// The weight fingerprint, or why it could not be taken (then every unit of the checkpoint fails
    /// with that message).
    pub fingerprint: std::result::Result<String, String>,
    /// Where the weights are downloaded from, for a `download = true` family ([`crate::fetch`]).
    #[serde(skip)]
    pub hub: Option<crate::fetch::HubRevision>,
    /// Whether the weights stay in the hub cache after the checkpoint's units are stored.
    #[serde(skip)]
    pub keep_weights: bool,
}

impl CheckpointRef {
    /// The content id used in unit keys: the fingerprint, or a stand-in naming the unreadable path.
    pub fn content_id(&self) -> String {
        match &self.fingerprint {
            Ok(fp) => fp.clone(),
            Err(_) => format!(
                "unreadable:{}",
                w2sg_protocol::key::sha256_hex(self.dir.to_string_lossy().as_bytes())
            ),
        }
    }

    /// `family/revision`, the shard group.
    pub fn group(&self) -> String {
        format!("{}/{}", self.family, self.revision)
    }

    fn of(family: &str, rev: &Revision, dtype: &str) -> Self {
        CheckpointRef {
            family: family.to_string(),
            revision: rev.name.clone(),
            step: rev.step,
            tokens: rev.tokens,
            dir: rev.dir.clone(),
            dtype: dtype.to_string(),
            fingerprint: fingerprint(&rev.dir).map_err(|e| e.to_string()),
            hub: None,
            keep_weights: true,
        }
    }

    /// Makes sure the weights are on disk before a unit reads them (a `download = true` family's
    /// are fetched now; the error is the unit's).
    pub fn ensure_weights(&self) -> std::result::Result<(), String> {
        if let Err(e) = &self.fingerprint {
            return Err(e.clone());
        }
        match &self.hub {
            Some(hub) => crate::fetch::ensure_weights(hub, &self.dir),
            None => Ok(()),
        }
    }
}

/// The selected revisions of a family, in training order.
pub fn family_checkpoints(plan: &Plan, family: &FamilyPlan) -> Result<Vec<CheckpointRef>> {
    let name = plan.family_name(family);
    let (mut revs, cache) = if family.download {
        let (revs, cache) = crate::fetch::hub_revisions(family, &name)?;
        (revs, Some(cache))
    } else if family.repos.is_empty() {
        (list_revisions(&family_source(&family.path, None)?)?, None)
    } else {
        (repo_family(&family.repos, &family.steps, None)?, None)
    };
    if let Some(k) = family.steps_per_checkpoint {
        scale_checkpoint_steps(&mut revs, k);
    }
    let source_label = if family.repos.is_empty() {
        family.path.clone()
    } else {
        family.repos.join(", ")
    };
    let stepped: Vec<&Revision> = revs.iter().filter(|r| r.step.is_some()).collect();
    let chosen: Vec<&Revision> = match &family.revisions {
        Revisions::All(_) => stepped,
        Revisions::Every { every } => {
            let mut v: Vec<&Revision> = stepped.iter().copied().step_by(*every).collect();
            if let Some(last) = stepped.last() {
                if v.last().map(|r| &r.name) != Some(&last.name) {
                    v.push(last);
                }
            }
            v
        }
        Revisions::List(names) => {
            let mut v = Vec::new();
            for n in names {
                match revs.iter().find(|r| &r.name == n) {
                    Some(r) => v.push(r),
                    None => {
                        return Err(Error::Input {
                            what: format!("family {name} ({source_label})"),
                            problem: format!(
                                "no revision `{n}` (it has: {})",
                                preview(revs.iter().map(|r| r.name.as_str()))
                            ),
                        })
                    }
                }
            }
            v
        }
    };
    if chosen.is_empty() {
        return Err(Error::Input {
            what: format!("family {name} ({source_label})"),
            problem: "no revision with a step number (name revisions explicitly to sweep them)"
                .into(),
        });
    }
    Ok(chosen
        .into_iter()
        .map(|r| {
            let mut ck = CheckpointRef::of(&name, r, &family.dtype);
            ck.keep_weights = family.keep_weights;
            if let (Some(cache), Some(commit)) = (&cache, &r.commit) {
                let hub = crate::fetch::HubRevision {
                    repo: family.path.clone(),
                    revision: r.name.clone(),
                    commit: commit.clone(),
                    cache: cache.root().to_path_buf(),
                };
                if ck.fingerprint.is_err() {
                    ck.fingerprint = crate::fetch::identify(&hub);
                }
                ck.hub = Some(hub);
            }
            ck
        })
        .collect())
}

fn preview<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.len() > 8 {
        format!("{}, … ({} in all)", v[..8].join(", "), v.len())
    } else {
        v.join(", ")
    }
}

/// The weak model as a checkpoint.
pub fn weak_checkpoint(plan: &Plan) -> Result<CheckpointRef> {
    let resolved = w2sg_lm::hub::resolve(&plan.weak.model, None)?;
    let name = resolved.revision.clone().unwrap_or_else(|| {
        resolved
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "weak".into())
    });
    let parsed = w2sg_lm::revisions::RevisionName::parse(&name);
    Ok(CheckpointRef {
        family: "weak".into(),
        revision: name,
        step: parsed.step,
        tokens: parsed.tokens,
        fingerprint: fingerprint(&resolved.dir).map_err(|e| e.to_string()),
        dir: resolved.dir,
        dtype: plan.weak.dtype.clone(),
        hub: None,
        keep_weights: true,
    })
}

/// Everything resolved before any unit runs.
#[derive(Debug)]
pub struct Resolved {
    pub plan: Plan,
    pub weak: CheckpointRef,
    /// Per family, its checkpoints in training order.
    pub families: Vec<(String, Vec<CheckpointRef>)>,
    pub datasets: Vec<Dataset>,
}

/// Resolves the plan's checkpoints and loads its tasks.
pub fn resolve(plan: &Plan, archives: &w2sg_data::ArchiveStore) -> Result<Resolved> {
    let weak = weak_checkpoint(plan)?;
    let mut families = Vec::new();
    for f in &plan.families {
        families.push((plan.family_name(f), family_checkpoints(plan, f)?));
    }
    check_layer(plan, &weak, &families)?;
    let mut datasets = Vec::new();
    for (i, t) in plan.tasks.iter().enumerate() {
        let pooling = t.pooling.as_deref().unwrap_or(&plan.features.pooling);
        let ds = Dataset::load(t, archives).map_err(|e| match (&t.jsonl, e) {
            // A task file the plan names that cannot be read is bad input of the plan.
            (Some(_), Error::Data(d)) => Error::PlanKey {
                key: "task.jsonl".into(),
                problem: format!("[[task]] {} ({}): {d}", i + 1, t.label()),
            },
            (_, e) => e,
        })?;
        datasets.push(ds.with_pooling(pooling));
    }
    if plan.finetunes() {
        for name in plan.finetune.tasks.iter().flatten() {
            if !datasets.iter().any(|d| &d.name == name) {
                return Err(Error::PlanKey {
                    key: "finetune.tasks".into(),
                    problem: format!(
                        "no task is named \"{name}\" (the plan's tasks: {})",
                        datasets
                            .iter()
                            .map(|d| d.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
    }
    Ok(Resolved {
        plan: plan.clone(),
        weak,
        families,
        datasets,
    })
}

/// `features.layer` against every checkpoint whose config can be read (one that cannot is recorded as
/// failed when its units run): checked here, before anything runs, so a layer no model has is bad
/// input of the plan, not a failed run.
fn check_layer(
    plan: &Plan,
    weak: &CheckpointRef,
    families: &[(String, Vec<CheckpointRef>)],
) -> Result<()> {
    let all = std::iter::once(weak).chain(families.iter().flat_map(|(_, c)| c.iter()));
    for ck in all {
        let Ok(config) = w2sg_lm::config::ModelConfig::from_dir(&ck.dir) else {
            continue;
        };
        if let Err(e) = w2sg_lm::features::resolve_layer(plan.features.layer, config.num_layers()) {
            return Err(Error::PlanKey {
                key: "features.layer".into(),
                problem: format!("{e} (checkpoint {} of {})", ck.revision, ck.family),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Unit specs

#[derive(Serialize)]
struct FeatureKey<'a> {
    layer: i64,
    pooling: &'a str,
    max_tokens: usize,
    dtype: &'a str,
}

fn feature_config(plan: &Plan, ds: &Dataset, dtype: &str) -> Result<String> {
    Ok(config_hash(&FeatureKey {
        layer: plan.features.layer,
        pooling: &ds.pooling,
        max_tokens: plan.features.max_tokens,
        dtype,
    })?)
}

/// The features unit of a checkpoint on a dataset.
pub fn features_spec(plan: &Plan, ck: &CheckpointRef, ds: &Dataset) -> Result<UnitSpec> {
    let mut spec = UnitSpec::new(
        UnitKind::Features,
        &ck.content_id(),
        &ds.fingerprint,
        &feature_config(plan, ds, &ck.dtype)?,
    );
    spec.step = ck.step;
    Ok(spec)
}

/// The weak-labels unit of a seed.
pub fn weak_spec(plan: &Plan, weak: &CheckpointRef, ds: &Dataset, seed: u64) -> Result<UnitSpec> {
    let config = config_hash(&json!({
        "features": feature_config(plan, ds, &weak.dtype)?,
        "split": plan.split,
        "probe": plan.probe,
    }))?;
    Ok(UnitSpec::new(
        UnitKind::WeakLabels,
        &weak.content_id(),
        &ds.fingerprint,
        &config,
    )
    .seed(seed))
}

/// The loss name of ceiling units.
pub const CEILING: &str = "ground_truth";

/// A probe unit: `loss` is [`CEILING`] or a w2s loss; `weak_key` is the weak-labels unit (w2s only).
pub fn probe_spec(
    plan: &Plan,
    ck: &CheckpointRef,
    ds: &Dataset,
    seed: u64,
    loss: &str,
    weak_key: Option<&UnitKey>,
) -> Result<UnitSpec> {
    let training = match loss {
        CEILING | "xent" => json!({ "probe": plan.probe }),
        other => json!({ "train": plan.train_params(other, seed) }),
    };
    let config = config_hash(&json!({
        "features": feature_config(plan, ds, &ck.dtype)?,
        "split": plan.split,
        "training": training,
    }))?;
    let mut spec = UnitSpec::new(UnitKind::Probe, &ck.content_id(), &ds.fingerprint, &config)
        .seed(seed)
        .loss(loss);
    spec.step = ck.step;
    if let Some(k) = weak_key {
        spec = spec.extra("weak_labels", k.as_str());
    }
    Ok(spec)
}

// ---------------------------------------------------------------------------------------------------
// Computations

/// A feature matrix in memory.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

impl Matrix {
    fn view(&self) -> Result<Features<'_>> {
        Ok(Features::new(&self.data, self.rows, self.cols)?)
    }

    /// The rows at `idx`, in that order.
    pub fn gather(&self, idx: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(idx.len() * self.cols);
        for &i in idx {
            data.extend_from_slice(&self.data[i * self.cols..(i + 1) * self.cols]);
        }
        Matrix {
            data,
            rows: idx.len(),
            cols: self.cols,
        }
    }
}

/// Extracts a checkpoint's features on a dataset (the features unit's computation).
pub fn extract_features(
    plan: &Plan,
    ck: &CheckpointRef,
    ds: &Dataset,
    progress: &mut dyn FnMut(usize),
) -> std::result::Result<UnitOutput, String> {
    ck.ensure_weights()?;
    // The plan checked the name; parsing again cannot fail silently into f32.
    let dtype = w2sg_lm::device::parse_dtype(&ck.dtype).map_err(|e| e.to_string())?;
    let model = Model::load(&ck.dir, dtype, &Device::Cpu).map_err(|e| e.to_string())?;
    let tok_path = ck.dir.join("tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| format!("{}: cannot read the tokenizer: {e}", tok_path.display()))?;
    let opts = FeatureOptions {
        layer: plan.features.layer,
        pooling: ds.pooling.parse::<Pooling>().map_err(|e| e.to_string())?,
        batch_size: plan.features.batch_size,
        max_batch_tokens: 4096,
        max_tokens: (plan.features.max_tokens > 0).then(|| {
            plan.features
                .max_tokens
                .min(model.max_position_embeddings())
        }),
    };
    let texts: Vec<&str> = ds.texts.iter().map(String::as_str).collect();
    let mut first_batch = true;
    let mut on_batch = |done: usize| {
        if std::mem::take(&mut first_batch) {
            fault::visit("sweep-features");
        }
        progress(done)
    };
    let f = w2sg_lm::features::extract(&model, &tokenizer, &texts, &opts, &mut on_batch)
        .map_err(|e| e.to_string())?;
    let (rows, cols) = f.values.dims2().map_err(|e| e.to_string())?;
    let data: Vec<f32> = f
        .values
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| e.to_string())?;
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "non-finite feature at example {} (dimension {}): the checkpoint's weights are corrupt \
             or overflow in {}",
            i / cols.max(1),
            i % cols.max(1),
            ck.dtype
        ));
    }
    let mut result = Map::new();
    result.insert("rows".into(), json!(rows));
    result.insert("cols".into(), json!(cols));
    result.insert("layer".into(), json!(f.layer));
    result.insert("pooling".into(), json!(f.pooling.name()));
    result.insert("max_tokens".into(), json!(f.max_tokens));
    result.insert("truncated".into(), json!(f.num_truncated()));
    result.insert("family".into(), json!(ck.family));
    result.insert("revision".into(), json!(ck.revision));
    Ok(UnitOutput {
        result,
        blob: Some(f32s_to_bytes(&data)),
    })
}

/// Reads a finished features unit back.
pub fn load_features(store: &Store, key: &UnitKey) -> Result<Option<Matrix>> {
    let Some(rec) = store.get(key)? else {
        return Ok(None);
    };
    let Some(result) = rec.result else {
        return Ok(None);
    };
    let (Some(rows), Some(cols)) = (
        result.get("rows").and_then(Value::as_u64),
        result.get("cols").and_then(Value::as_u64),
    ) else {
        return Err(store_problem(store, key, "features without rows/cols"));
    };
    let blob = store
        .blob(key)?
        .ok_or_else(|| store_problem(store, key, "features unit without its matrix"))?;
    let data = bytes_to_f32s(&blob)
        .filter(|d| d.len() == (rows * cols) as usize)
        .ok_or_else(|| store_problem(store, key, "feature matrix of the wrong size"))?;
    Ok(Some(Matrix {
        data,
        rows: rows as usize,
        cols: cols as usize,
    }))
}

fn store_problem(store: &Store, key: &UnitKey, problem: &str) -> Error {
    Error::Protocol(w2sg_protocol::Error::Store {
        path: store.path().to_path_buf(),
        problem: format!("unit {key}: {problem}"),
    })
}

pub(crate) fn metrics_json(m: &EvalMetrics, out: &mut Map<String, Value>) {
    out.insert("accuracy".into(), json!(m.accuracy));
    out.insert("accuracy_se".into(), json!(m.accuracy_se));
    out.insert("auroc".into(), json!(m.auroc));
    out.insert("ece".into(), json!(m.ece));
    out.insert("n_test".into(), json!(m.n));
}

fn probe_config(plan: &Plan) -> std::result::Result<ProbeConfig, String> {
    plan.probe.check().map_err(|e| e.to_string())
}

/// The weak supervisor of one seed: trained on A's ground truth; probabilities on B, then on test.
pub fn weak_labels(
    plan: &Plan,
    weak_features: &Matrix,
    ds: &Dataset,
    split: &Split,
) -> std::result::Result<UnitOutput, String> {
    let e = |e: w2sg_protocol::Error| e.to_string();
    let train = weak_features.gather(&split.weak);
    let targets = w2sg_protocol::features::hard_targets(&ds.labels_at(&split.weak));
    let (probe, fit) = probe_config(plan)?
        .fit_with_report(
            &train.view().map_err(|e| e.to_string())?,
            &Targets::new(&targets).map_err(e)?,
        )
        .map_err(e)?;
    let on_b = probe
        .predict_proba(
            &weak_features
                .gather(&split.strong)
                .view()
                .map_err(|e| e.to_string())?,
        )
        .map_err(e)?;
    let on_test = probe
        .predict_proba(
            &weak_features
                .gather(&split.test)
                .view()
                .map_err(|e| e.to_string())?,
        )
        .map_err(e)?;
    let m = EvalMetrics::compute(&on_test, &ds.labels_at(&split.test), ECE_BINS).map_err(e)?;
    let mut result = Map::new();
    metrics_json(&m, &mut result);
    result.insert(
        "accuracy_on_b".into(),
        json!(w2sg_protocol::accuracy(&on_b, &ds.labels_at(&split.strong)).map_err(e)?),
    );
    result.insert("n_b".into(), json!(on_b.len()));
    result.insert("converged".into(), json!(fit.converged));
    let mut all = on_b;
    all.extend_from_slice(&on_test);
    Ok(UnitOutput {
        result,
        blob: Some(f64s_to_bytes(&all)),
    })
}

/// A weak-labels blob split into (on B, on test).
pub fn split_weak_blob(blob: &[u8], n_b: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    let v = bytes_to_f64s(blob)?;
    (v.len() > n_b).then(|| (v[..n_b].to_vec(), v[n_b..].to_vec()))
}

/// A student (ceiling or w2s) on a strong checkpoint's features.
pub fn train_student(
    plan: &Plan,
    features: &Matrix,
    ds: &Dataset,
    split: &Split,
    seed: u64,
    loss: &str,
    weak: Option<(&[f64], &[f64])>,
) -> std::result::Result<UnitOutput, String> {
    let e = |e: w2sg_protocol::Error| e.to_string();
    let train = features.gather(&split.strong);
    let test = features.gather(&split.test);
    let targets: Vec<f64> = match (loss, weak) {
        (CEILING, _) => w2sg_protocol::features::hard_targets(&ds.labels_at(&split.strong)),
        (_, Some((on_b, _))) => on_b.to_vec(),
        (_, None) => return Err(format!("the {loss} student needs weak labels")),
    };
    let x = train.view().map_err(|e| e.to_string())?;
    let t = Targets::new(&targets).map_err(e)?;
    let mut result = Map::new();
    let probe = if loss == CEILING || loss == "xent" {
        let (p, fit) = probe_config(plan)?.fit_with_report(&x, &t).map_err(e)?;
        result.insert("converged".into(), json!(fit.converged));
        p
    } else {
        let (p, report) = plan
            .train_params(loss, seed)
            .check()
            .map_err(e)?
            .fit_with_report(&x, &t)
            .map_err(e)?;
        result.insert("train_objective".into(), json!(report.fit.objective));
        p
    };
    let on_test = probe
        .predict_proba(&test.view().map_err(|e| e.to_string())?)
        .map_err(e)?;
    fault::visit("sweep-train");
    let labels = ds.labels_at(&split.test);
    let m = EvalMetrics::compute(&on_test, &labels, ECE_BINS).map_err(e)?;
    metrics_json(&m, &mut result);
    if let Some((on_b, weak_test)) = weak {
        result.insert(
            "agreement_with_weak".into(),
            json!(w2sg_protocol::agreement(&on_test, weak_test).map_err(e)?),
        );
        let on_b_student = probe.predict_proba(&x).map_err(e)?;
        result.insert(
            "agreement_with_weak_on_b".into(),
            json!(w2sg_protocol::agreement(&on_b_student, on_b).map_err(e)?),
        );
    }
    Ok(UnitOutput {
        result,
        blob: Some(f64s_to_bytes(&on_test)),
    })
}

// ---------------------------------------------------------------------------------------------------
// The run

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub shard: ShardSpec,
    pub policy: RunPolicy,
    /// Draw progress bars (on stderr).
    pub progress: bool,
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

/// The checkpoints of `resolved` that get fine-tuned students (by group), per the plan's
/// `[finetune] revisions`.
pub fn finetuned_groups(resolved: &Resolved) -> std::collections::BTreeSet<String> {
    let plan = &resolved.plan;
    let mut out = std::collections::BTreeSet::new();
    if !plan.finetunes() {
        return out;
    }
    for (_, cks) in &resolved.families {
        for (i, ck) in cks.iter().enumerate() {
            if plan.finetune.selects(ck, i, cks.len()) {
                out.insert(ck.group());
            }
        }
    }
    out
}

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
            mine.len() * probe_units + tuned_units + 1 + plan.seeds.len()
        })
        .sum();
    let total = total as u64;
    let bar = crate::progress::bar(opts.progress, total, "units");

    // The weak supervisor first, on every task: its features, then its labels per seed.
    let mut weak_parts = Vec::with_capacity(resolved.datasets.len());
    for ds in &resolved.datasets {
        weak_parts.push(run_weak(resolved, ds, store, opts, &mut report, &bar)?);
    }
    // Then checkpoint by checkpoint, every task, so that a checkpoint's weights are needed over one
    // stretch of the run and can be released after it (`keep_weights = false`).
    for ck in &mine {
        for (ds, w) in resolved.datasets.iter().zip(&weak_parts) {
            bar.set_message(format!("{} · {}/{}", ds.name, ck.family, ck.revision));
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
                &bar,
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
                    &bar,
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
    bar.finish_and_clear();
    Ok(report)
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
    bar: &indicatif::ProgressBar,
) -> Result<WeakParts> {
    let plan = &resolved.plan;
    let weak = &resolved.weak;
    let wf_spec = features_spec(plan, weak, ds)?;
    bar.set_message(format!("{} · weak {} features", ds.name, weak.revision));
    let o = store.run_unit(&wf_spec, opts.policy, || {
        extract_features(plan, weak, ds, &mut |_| {})
    })?;
    report.count(
        &format!("features of weak {} on {}", weak.revision, ds.name),
        &o,
    );
    bar.inc(1);
    let weak_features = load_features(store, &wf_spec.key()?)?;
    let mut weak_keys: BTreeMap<u64, Option<UnitKey>> = BTreeMap::new();
    let mut splits: BTreeMap<u64, Split> = BTreeMap::new();
    for &seed in &plan.seeds {
        let split = ds.split(&plan.split, seed)?;
        let spec = weak_spec(plan, weak, ds, seed)?;
        let key = spec.key()?;
        match &weak_features {
            Some(wf) => {
                let o = store.run_unit(&spec, opts.policy, || weak_labels(plan, wf, ds, &split))?;
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
        bar.inc(1);
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
    bar: &indicatif::ProgressBar,
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
    bar.inc((blocked + probes.len() - pending.len()) as u64);
    let fstatus = store.status(&fkey)?;
    if pending.is_empty() {
        if let Some(st) = fstatus {
            report.count("", &Outcome::Skipped(st));
            bar.inc(1);
            return Ok(());
        }
    }
    let what = format!("features of {}/{} on {}", ck.family, ck.revision, ds.name);
    let o = store.run_unit(&fspec, opts.policy, || {
        extract_features(plan, ck, ds, &mut |_| {})
    })?;
    report.count(&what, &o);
    bar.inc(1);
    let Some(features) = load_features(store, &fkey)? else {
        report.units_blocked += pending.len();
        bar.inc(pending.len() as u64);
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
        bar.inc(1);
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
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    use crate::finetune::{finetune_spec, finetune_student};
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
                    bar.inc(1);
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
            bar.set_message(format!(
                "{} · {}/{} · fine-tuning {loss} seed {seed}",
                ds.name, ck.family, ck.revision
            ));
            let o = store.run_unit(&spec, opts.policy, || {
                finetune_student(plan, ck, ds, split, seed, &loss, weak)
            })?;
            report.count(
                &format!(
                    "fine-tuned {loss} student of {}/{} on {} seed {seed}",
                    ck.family, ck.revision, ds.name
                ),
                &o,
            );
            bar.inc(1);
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

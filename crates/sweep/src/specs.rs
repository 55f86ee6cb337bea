//! The store units' specs (what keys a unit), shared by the run loop and the analysis: features,
//! weak labels and probe students, and how a unit's metrics and blobs are laid out.

use serde::Serialize;
use serde_json::{json, Map, Value};

use w2sg_lm::features::Pooling;
use w2sg_lm::finetune::FinetuneConfig;
use w2sg_protocol::key::config_hash;
use w2sg_protocol::store::bytes_to_f64s;
use w2sg_protocol::{EvalMetrics, UnitKey, UnitKind, UnitSpec};

use crate::dataset::{Dataset, Split};
use crate::error::Result;
use crate::plan::Plan;
use crate::resolve::CheckpointRef;

/// Bins of the expected calibration error.
pub const ECE_BINS: usize = 10;

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

/// The weak-labels unit of a seed: the probe supervisor's, or with `[weak] train = "finetune"` the
/// fine-tuned weak model's (its own config hash and a `mode` field, so the two never share a key; the
/// probe's key is the one it always had).
pub fn weak_spec(plan: &Plan, weak: &CheckpointRef, ds: &Dataset, seed: u64) -> Result<UnitSpec> {
    if plan.weak.finetuned() {
        let cfg = finetune_config(plan, ds, seed)?;
        let config = config_hash(&json!({
            "supervisor": "finetune",
            "finetune": cfg.key_text(),
            "split": plan.split,
            "dtype": "f32",
            "loss": "xent",
        }))?;
        return Ok(UnitSpec::new(
            UnitKind::WeakLabels,
            &weak.content_id(),
            &ds.fingerprint,
            &config,
        )
        .seed(seed)
        .extra("mode", &cfg.mode_name()));
    }
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

/// The lm crate's fine-tuning settings of a unit on `ds` (the plan's `[finetune]`, the task's pooling,
/// the unit's seed).
pub fn finetune_config(plan: &Plan, ds: &Dataset, seed: u64) -> Result<FinetuneConfig> {
    let pooling: Pooling = ds.pooling.parse().unwrap_or(Pooling::LastToken);
    plan.finetune
        .config(pooling, seed)
        .map_err(|problem| crate::error::Error::Input {
            what: "plan [finetune]".into(),
            problem,
        })
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

pub fn metrics_json(m: &EvalMetrics, out: &mut Map<String, Value>) {
    out.insert("accuracy".into(), json!(m.accuracy));
    out.insert("accuracy_se".into(), json!(m.accuracy_se));
    out.insert("auroc".into(), json!(m.auroc));
    out.insert("ece".into(), json!(m.ece));
    out.insert("n_test".into(), json!(m.n));
}

/// The weak-labels unit's result and blob from the supervisor's probabilities on B and on test (the
/// same fields whichever way it was trained).
pub fn weak_output(
    ds: &Dataset,
    split: &Split,
    on_b: Vec<f64>,
    on_test: &[f64],
) -> std::result::Result<(Map<String, Value>, Vec<u8>), String> {
    let e = |e: w2sg_protocol::Error| e.to_string();
    let m = EvalMetrics::compute(on_test, &ds.labels_at(&split.test), ECE_BINS).map_err(e)?;
    let mut result = Map::new();
    metrics_json(&m, &mut result);
    result.insert(
        "accuracy_on_b".into(),
        json!(w2sg_protocol::accuracy(&on_b, &ds.labels_at(&split.strong)).map_err(e)?),
    );
    result.insert("n_b".into(), json!(on_b.len()));
    let mut all = on_b;
    all.extend_from_slice(on_test);
    Ok((result, w2sg_protocol::store::f64s_to_bytes(&all)))
}

/// A weak-labels blob split into (on B, on test).
pub fn split_weak_blob(blob: &[u8], n_b: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    let v = bytes_to_f64s(blob)?;
    (v.len() > n_b).then(|| (v[..n_b].to_vec(), v[n_b..].to_vec()))
}

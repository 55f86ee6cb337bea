//! What a unit computes: a checkpoint's features, the weak supervisor's labels, a probe student.

use candle_core::Device;
use serde_json::{json, Map, Value};

use w2sg_lm::features::{FeatureOptions, Pooling};
use w2sg_lm::model::Model;
use w2sg_protocol::store::{bytes_to_f32s, f32s_to_bytes, f64s_to_bytes};
use w2sg_protocol::{EvalMetrics, Features, ProbeConfig, Store, Targets, UnitKey, UnitOutput};

use crate::dataset::{Dataset, Split};
use crate::error::{Error, Result};
use crate::fault;
use crate::plan::Plan;
use crate::resolve::CheckpointRef;
use crate::specs::*;

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

pub(crate) fn store_problem(store: &Store, key: &UnitKey, problem: &str) -> Error {
    Error::Protocol(w2sg_protocol::Error::Store {
        path: store.path().to_path_buf(),
        problem: format!("unit {key}: {problem}"),
    })
}

fn probe_config(plan: &Plan) -> std::result::Result<ProbeConfig, String> {
    plan.probe.check().map_err(|e| e.to_string())
}

/// The probe weak supervisor of one seed: trained on A's ground truth; probabilities on B, then on
/// test (the fine-tuned one is [`crate::finetune::finetune_weak_labels`]).
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
    let (mut result, blob) = weak_output(ds, split, on_b, &on_test)?;
    result.insert("converged".into(), json!(fit.converged));
    Ok(UnitOutput {
        result,
        blob: Some(blob),
    })
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

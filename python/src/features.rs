//! Feature extraction from Python: the same entry points as `w2sg lm features` (hub resolution, the
//! checkpoint's `tokenizer.json`, `Model::load`, `features::extract`), texts from a Python list instead
//! of a JSONL file, and the (N, hidden) float32 matrix handed to numpy without a copy.

use std::path::PathBuf;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError};
use pyo3::prelude::*;

use w2sg_lm::device::{parse_device, parse_dtype};
use w2sg_lm::features::{extract, FeatureOptions, Pooling};
use w2sg_lm::features_job::open_model;
use w2sg_lm::hub::HubCache;
use w2sg_lm::LmError;

use crate::{interrupt, ConfigError};

/// Bad input (exit code 2 in the CLI) is a ConfigError; a missing model a FileNotFoundError; the rest
/// (a failure while running) a RuntimeError.
fn to_py(e: LmError) -> PyErr {
    let msg = e.to_string();
    match e {
        LmError::NotFound { .. } => PyFileNotFoundError::new_err(msg),
        _ if e.exit_code() == 2 => ConfigError::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

/// Pooled hidden states of `texts`: a float32 array of shape (len(texts), hidden).
#[pyfunction]
#[pyo3(signature = (model, texts, layer=-1, pooling="last", max_tokens=None, batch_size=16,
                    max_batch_tokens=4096, dtype="f32", device="cpu", cache_dir=None, progress=false))]
#[allow(clippy::too_many_arguments)]
pub fn features<'py>(
    py: Python<'py>,
    model: &str,
    texts: Vec<String>,
    layer: i64,
    pooling: &str,
    max_tokens: Option<usize>,
    batch_size: usize,
    max_batch_tokens: usize,
    dtype: &str,
    device: &str,
    cache_dir: Option<PathBuf>,
    progress: bool,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let pooling: Pooling = pooling.parse().map_err(to_py)?;
    let dtype = parse_dtype(dtype).map_err(to_py)?;
    let device = parse_device(device).map_err(to_py)?;
    let cache = cache_dir.map(HubCache::new);
    let opts = FeatureOptions {
        layer,
        pooling,
        batch_size,
        max_batch_tokens,
        max_tokens,
    };
    let (values, n) = interrupt::run(py, |cancel| -> Result<(Vec<f32>, usize), LmError> {
        cancel.check();
        let (_, tokenizer, model) = open_model(model, cache.as_ref(), dtype, &device)?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let bar = if progress {
            indicatif::ProgressBar::new(refs.len() as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        let features = extract(&model, &tokenizer, &refs, &opts, &mut |done| {
            cancel.check();
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        let n = features.lengths.len();
        let values = features
            .values
            .to_dtype(candle_core::DType::F32)
            .and_then(|v| v.flatten_all())
            .and_then(|v| v.to_vec1::<f32>())?;
        Ok((values, n))
    })?
    .map_err(|e| match e {
        LmError::EmptyText { index } => {
            ConfigError::new_err(format!("texts[{index}] has no tokens (empty text)"))
        }
        other => to_py(other),
    })?;
    let hidden = values.len().checked_div(n).unwrap_or(0);
    let array = Array2::from_shape_vec((n, hidden), values).expect("n × hidden values");
    Ok(array.into_pyarray(py))
}

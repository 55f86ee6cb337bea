//! `w2sg lm features` as one library call: a JSONL file in, one pooled feature vector per record out.
//!
//! Edge cases handled here rather than in each front end:
//! - Line numbers in errors are the JSONL file's (an empty text is reported at its line, not as
//!   "example 17").
//! - Features that are not finite (NaN or ±inf weights, an overflow in f16) are refused before
//!   anything is written: a features file is something a later step trusts without looking.
//! - The output (and a `.npy` file's sidecar) is replaced atomically ([`crate::output`]), so a full
//!   disk or a kill leaves the previous file intact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::error::{LmError, Result};
use crate::features::{extract, FeatureOptions, Features, Pooling};
use crate::hub::{resolve, HubCache, Resolved};
use crate::model::Model;
use crate::output::{write_features, Format};

/// What to extract, already parsed and typed (the front end parses the strings).
#[derive(Debug, Clone)]
pub struct FeaturesJob {
    /// `PATH[@REV]` or `ORG/NAME[@REV]`, as given (recorded in the output's metadata).
    pub model: String,
    pub data: PathBuf,
    pub out: PathBuf,
    /// The JSON field holding the text.
    pub field: String,
    pub options: FeatureOptions,
    pub dtype: DType,
    pub device: Device,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct FeaturesSummary {
    pub examples: usize,
    pub hidden_size: usize,
    pub layer: usize,
    pub num_layers: usize,
    pub pooling: Pooling,
    pub tokens: usize,
    pub truncated: usize,
    pub max_tokens: usize,
    pub format: Format,
}

/// Runs the job; `progress(done, total)` is called as examples finish.
pub fn extract_to_file(
    job: &FeaturesJob,
    cache: Option<&HubCache>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<FeaturesSummary> {
    // Check what can be checked before the model is loaded.
    let format = Format::from_path(&job.out)?;
    let texts = read_texts(&job.data, &job.field)?;
    let (resolved, tokenizer, model) = open_model(&job.model, cache, job.dtype, &job.device)?;
    let refs: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
    let total = refs.len();
    let features = extract(&model, &tokenizer, &refs, &job.options, &mut |done| {
        progress(done, total)
    })
    .map_err(|e| match e {
        LmError::EmptyText { index } => LmError::Data {
            path: job.data.clone(),
            line: texts[index].0,
            msg: format!("field `{}` has no tokens (empty text)", job.field),
        },
        other => other,
    })?;
    check_finite(&features, &job.model, |i| texts[i].0, &job.data)?;
    let mut meta = BTreeMap::new();
    meta.insert("model".to_string(), job.model.clone());
    meta.insert("model_dir".to_string(), resolved.dir.display().to_string());
    if let Some(rev) = &resolved.revision {
        meta.insert("revision".to_string(), rev.clone());
    }
    meta.insert("data".to_string(), job.data.display().to_string());
    meta.insert("field".to_string(), job.field.clone());
    meta.insert(
        "dtype".to_string(),
        crate::device::dtype_name(job.dtype).to_string(),
    );
    meta.insert(
        "w2sg_version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    write_features(&job.out, &features, &meta)?;
    Ok(FeaturesSummary {
        examples: features.lengths.len(),
        hidden_size: model.hidden_size(),
        layer: features.layer,
        num_layers: model.num_layers(),
        pooling: features.pooling,
        tokens: features.lengths.iter().sum(),
        truncated: features.num_truncated(),
        max_tokens: features.max_tokens,
        format,
    })
}

/// Resolves `PATH[@REV]` / `ORG/NAME[@REV]` and loads its tokenizer and model: what every front end
/// that extracts features (this module, the Python module) does first.
pub fn open_model(
    spec: &str,
    cache: Option<&HubCache>,
    dtype: DType,
    device: &Device,
) -> Result<(Resolved, tokenizers::Tokenizer, Model)> {
    let resolved = resolve(spec, cache)?;
    let tok_path = resolved.dir.join("tokenizer.json");
    let tokenizer =
        tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| LmError::Tokenizer {
            path: tok_path.clone(),
            msg: e.to_string(),
        })?;
    let model = Model::load(&resolved.dir, dtype, device)?;
    Ok((resolved, tokenizer, model))
}

/// Refuses features holding NaN or ±inf, naming the first example (by its file line) and dimension.
fn check_finite(
    features: &Features,
    model: &str,
    line_of: impl Fn(usize) -> usize,
    data: &Path,
) -> Result<()> {
    let values = features
        .values
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?;
    let (_, width) = values.dims2()?;
    let flat = values.flatten_all()?.to_vec1::<f32>()?;
    if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
        return Err(LmError::NonFinite {
            model: model.to_string(),
            what: format!(
                "the feature of {}:{} (dimension {}) is {}",
                data.display(),
                line_of(i / width),
                i % width,
                flat[i]
            ),
        });
    }
    Ok(())
}

/// The `field` string of every JSONL record with its file line, through the one JSONL reader.
pub fn read_texts(path: &Path, field: &str) -> Result<Vec<(usize, String)>> {
    w2sg_data::jsonl::texts(path, field).map_err(|e| match e {
        w2sg_data::DataError::Line { path, line, reason } => LmError::Data {
            path,
            line,
            msg: reason,
        },
        w2sg_data::DataError::Format { path, reason } => LmError::Data {
            path,
            line: 0,
            msg: reason,
        },
        other => LmError::Input(other.to_string()),
    })
}

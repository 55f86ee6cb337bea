//! Feature files: safetensors (features, lengths, truncation flags and provenance metadata in one file)
//! or NumPy `.npy` (the feature matrix, with the rest in a `<file>.json` sidecar).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::checkpoint::write_safetensors;
use crate::error::{LmError, Result};
use crate::features::Features;

/// Output format, from the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    Npy,
}

impl Format {
    /// `.safetensors` or `.npy`; anything else is an error.
    pub fn from_path(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Ok(Format::Safetensors),
            Some("npy") => Ok(Format::Npy),
            _ => Err(LmError::Input(format!(
                "{}: unknown output format (use a .safetensors or .npy file name)",
                path.display()
            ))),
        }
    }
}

/// The sidecar of a `.npy` feature file.
pub fn npy_sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// Writes features in the format the extension names; `metadata` records provenance.
pub fn write_features(
    path: &Path,
    features: &Features,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut meta = metadata.clone();
    meta.insert("layer".into(), features.layer.to_string());
    meta.insert("pooling".into(), features.pooling.name().into());
    meta.insert("max_tokens".into(), features.max_tokens.to_string());
    meta.insert("num_truncated".into(), features.num_truncated().to_string());
    meta.insert("format".into(), "pt".into());
    match Format::from_path(path)? {
        Format::Safetensors => {
            let n = features.lengths.len();
            let lengths: Vec<i64> = features.lengths.iter().map(|&l| l as i64).collect();
            let truncated: Vec<u8> = features.truncated.iter().map(|&t| t as u8).collect();
            let lengths = Tensor::from_vec(lengths, n, &candle_core::Device::Cpu)?;
            let truncated = Tensor::from_vec(truncated, n, &candle_core::Device::Cpu)?;
            let values = features.values.to_dtype(DType::F32)?;
            write_safetensors(
                path,
                &[
                    ("features", &values),
                    ("lengths", &lengths),
                    ("truncated", &truncated),
                ],
                &meta,
            )
        }
        Format::Npy => {
            let truncated_rows: Vec<usize> = features
                .truncated
                .iter()
                .enumerate()
                .filter(|(_, &t)| t)
                .map(|(i, _)| i)
                .collect();
            let side = serde_json::json!({
                "metadata": meta,
                "lengths": features.lengths,
                "truncated_rows": truncated_rows,
            });
            let side_path = npy_sidecar(path);
            let text = serde_json::to_string_pretty(&side).expect("JSON of plain values") + "\n";
            // The pair is not one file, so: drop the old sidecar first (a crash then leaves a matrix
            // without a sidecar, never one beside another run's sidecar), then the matrix, then the
            // new sidecar, each atomically.
            match std::fs::remove_file(&side_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(LmError::Write {
                        path: side_path,
                        source: e,
                    })
                }
            }
            write_npy_f32(path, &features.values)?;
            w2sg_fsio::write_atomic(&side_path, text.as_bytes()).map_err(|e| LmError::Write {
                path: side_path,
                source: e,
            })
        }
    }
}

/// Writes a 2-D f32 tensor as a NumPy v1.0 `.npy` file (little-endian, C order).
pub fn write_npy_f32(path: &Path, t: &Tensor) -> Result<()> {
    let write_err = |e: std::io::Error| LmError::Write {
        path: path.to_path_buf(),
        source: e,
    };
    let t = t
        .to_dtype(DType::F32)?
        .to_device(&candle_core::Device::Cpu)?;
    let shape = t
        .dims()
        .iter()
        .map(|d| format!("{d}, "))
        .collect::<String>();
    let shape = if t.rank() == 1 {
        shape
    } else {
        shape.trim_end_matches(", ").to_string()
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}");
    // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64, ending in \n.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let data = t.flatten_all()?.to_vec1::<f32>()?;
    w2sg_fsio::write_atomic_with(path, |w| {
        w.write_all(b"\x93NUMPY\x01\x00")?;
        w.write_all(&(header.len() as u16).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        for v in data {
            w.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    })
    .map_err(write_err)
}

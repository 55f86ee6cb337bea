//! Weights of a checkpoint directory in Hugging Face layout.
//!
//! Reads `model.safetensors`, sharded `model-0000x-of-0000y.safetensors` with their
//! `model.safetensors.index.json`, `pytorch_model.bin` (PyTorch's zip format, unpickled with candle's
//! pickle machine) and sharded `.bin` with `pytorch_model.bin.index.json`, in HF's order of preference.
//! Entries of a `.bin` state dict that are not float tensors (old GPT-NeoX checkpoints store a boolean
//! causal-mask buffer per layer) are skipped silently; candle's own reader prints a line, and a
//! backtrace, for each.
//!
//! Safetensors headers are parsed here rather than through the `safetensors` crate so that every
//! problem is reported with the file and the tensor: a header that does not parse, offsets that do not
//! match the shape, a file shorter than its header promises (an interrupted download) — all are
//! checked when the checkpoint is opened, before any model is built. Tensor data are read on demand
//! with positioned reads straight into the destination buffer (no mmap, no second copy), so peak memory
//! while loading is the model itself plus one chunk.
//!
//! [`Checkpoint::get`] checks the shape the config implies before reading; a mismatch names both.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::error::{LmError, Result};

/// How the weights of a checkpoint are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// One `model.safetensors`.
    Safetensors,
    /// Shards listed in `model.safetensors.index.json`.
    ShardedSafetensors,
    /// One `pytorch_model.bin`.
    PytorchBin,
    /// Shards listed in `pytorch_model.bin.index.json`.
    ShardedPytorchBin,
}

impl WeightFormat {
    /// Short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Safetensors => "safetensors",
            WeightFormat::ShardedSafetensors => "sharded safetensors",
            WeightFormat::PytorchBin => "pytorch_model.bin",
            WeightFormat::ShardedPytorchBin => "sharded pytorch_model.bin",
        }
    }
}

/// The weight files of a checkpoint directory, found without reading them.
#[derive(Debug, Clone)]
pub struct WeightFiles {
    pub format: WeightFormat,
    /// The weight files, in index order for shards.
    pub files: Vec<PathBuf>,
    /// The shard index, if sharded.
    pub index: Option<PathBuf>,
}

impl WeightFiles {
    /// Finds the weight files in `dir`, in HF's order of preference.
    pub fn find(dir: &Path) -> Result<Self> {
        Self::find_with(dir, &|p: &Path| p.is_file())
    }

    /// [`WeightFiles::find`] with `exists` deciding which weight files are there (shard indexes are
    /// still read from `dir`): lets a downloader name the files a revision's loader would read from
    /// the hub's file list, before fetching them.
    pub fn find_with(dir: &Path, exists: &dyn Fn(&Path) -> bool) -> Result<Self> {
        let single = dir.join("model.safetensors");
        if exists(&single) {
            return Ok(WeightFiles {
                format: WeightFormat::Safetensors,
                files: vec![single],
                index: None,
            });
        }
        let index = dir.join("model.safetensors.index.json");
        if index.is_file() {
            let files = shard_files(dir, &index, exists)?;
            return Ok(WeightFiles {
                format: WeightFormat::ShardedSafetensors,
                files,
                index: Some(index),
            });
        }
        let bin = dir.join("pytorch_model.bin");
        if exists(&bin) {
            return Ok(WeightFiles {
                format: WeightFormat::PytorchBin,
                files: vec![bin],
                index: None,
            });
        }
        let index = dir.join("pytorch_model.bin.index.json");
        if index.is_file() {
            let files = shard_files(dir, &index, exists)?;
            return Ok(WeightFiles {
                format: WeightFormat::ShardedPytorchBin,
                files,
                index: Some(index),
            });
        }
        if !dir.is_dir() {
            return Err(LmError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            ));
        }
        Err(LmError::NoWeights {
            dir: dir.to_path_buf(),
        })
    }
}

/// The distinct shard files named by an index's `weight_map`, in order of first appearance.
fn shard_files(dir: &Path, index: &Path, exists: &dyn Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| LmError::io(index, e))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| LmError::weights(index, format!("invalid JSON: {e}")))?;
    let Some(map) = value.get("weight_map").and_then(Value::as_object) else {
        return Err(LmError::weights(index, "missing object `weight_map`"));
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for (tensor, file) in map {
        let Some(file) = file.as_str() else {
            return Err(LmError::weights(
                index,
                format!("weight_map entry `{tensor}` is not a file name"),
            ));
        };
        // A shard name is a plain file name next to the index; anything else would escape the directory.
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(LmError::weights(
                index,
                format!("shard name `{file}` is not a plain file name"),
            ));
        }
        let path = dir.join(file);
        if !files.contains(&path) {
            if !exists(&path) {
                return Err(LmError::weights(
                    index,
                    format!("shard `{file}` (holding tensor `{tensor}`) is missing"),
                ));
            }
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(LmError::weights(index, "`weight_map` is empty"));
    }
    Ok(files)
}

/// dtype and shape of a stored tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The dtype as stored (safetensors spelling, e.g. `BF16`).
    pub dtype: String,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Debug)]
enum Location {
    /// Byte range in a safetensors file.
    Bytes { start: u64, end: u64 },
    /// Inside a PyTorch zip checkpoint.
    Pickle,
}

#[derive(Debug)]
struct Entry {
    file: usize,
    info: TensorInfo,
    location: Location,
}

/// The weights of one checkpoint, indexed by tensor name; data are read on demand.
pub struct Checkpoint {
    dir: PathBuf,
    files: WeightFiles,
    tensors: BTreeMap<String, Entry>,
    /// Layout of each tensor of a `.bin` file (by tensor name).
    pickled: BTreeMap<String, candle_core::pickle::TensorInfo>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("format", &self.files.format)
            .field("files", &self.files.files)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Buffers that old checkpoints store next to the parameters; not counted as parameters.
fn is_buffer(name: &str) -> bool {
    name.ends_with(".attention.bias")
        || name.ends_with(".attention.masked_bias")
        || name.ends_with("rotary_emb.inv_freq")
}

impl Checkpoint {
    /// Opens the weights of a checkpoint directory and validates every file's header.
    pub fn open(dir: &Path) -> Result<Self> {
        let files = WeightFiles::find(dir)?;
        let mut tensors = BTreeMap::new();
        let mut pickled = BTreeMap::new();
        for (i, path) in files.files.iter().enumerate() {
            let is_safetensors = matches!(
                files.format,
                WeightFormat::Safetensors | WeightFormat::ShardedSafetensors
            );
            if is_safetensors {
                for (name, info, start, end) in read_safetensors_header(path)? {
                    let location = Location::Bytes { start, end };
                    tensors.insert(
                        name,
                        Entry {
                            file: i,
                            info,
                            location,
                        },
                    );
                }
            } else {
                for ti in read_pth_index(path)? {
                    let info = TensorInfo {
                        dtype: dtype_name(ti.dtype).to_string(),
                        shape: ti.layout.dims().to_vec(),
                    };
                    tensors.insert(
                        ti.name.clone(),
                        Entry {
                            file: i,
                            info,
                            location: Location::Pickle,
                        },
                    );
                    pickled.insert(ti.name.clone(), ti);
                }
            }
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            files,
            tensors,
            pickled,
        })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Storage format.
    pub fn format(&self) -> WeightFormat {
        self.files.format
    }

    /// The weight files.
    pub fn files(&self) -> &[PathBuf] {
        &self.files.files
    }

    /// Names of all stored tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// dtype and shape of a stored tensor.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name).map(|e| &e.info)
    }

    /// Whether a tensor is stored.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Number of parameters (stored tensors, without old checkpoints' attention-mask and rotary buffers).
    pub fn num_parameters(&self) -> usize {
        self.tensors
            .iter()
            .filter(|(n, _)| !is_buffer(n))
            .map(|(_, e)| e.info.numel())
            .sum()
    }

    /// The stored dtype most parameters use (by element count).
    pub fn dominant_dtype(&self) -> Option<String> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (name, e) in &self.tensors {
            if !is_buffer(name) {
                *counts.entry(e.info.dtype.as_str()).or_default() += e.info.numel();
            }
        }
        counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(d, _)| d.to_string())
    }

    /// The file a message about `name` should point at: its file, or the index/single file if absent.
    fn path_for(&self, name: &str) -> &Path {
        match self.tensors.get(name) {
            Some(e) => &self.files.files[e.file],
            None => self.files.index.as_deref().unwrap_or(&self.files.files[0]),
        }
    }

    /// Reads tensor `name`, checks that its shape is `shape`, and converts it to `dtype` on `device`.
    pub fn get(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let Some(entry) = self.tensors.get(name) else {
            return Err(LmError::MissingTensor {
                path: self.path_for(name).to_path_buf(),
                tensor: name.to_string(),
            });
        };
        let path = &self.files.files[entry.file];
        if entry.info.shape != shape {
            return Err(LmError::ShapeMismatch {
                path: path.clone(),
                tensor: name.to_string(),
                expected: shape.to_vec(),
                found: entry.info.shape.clone(),
            });
        }
        let tensor_err = |msg: String| LmError::Tensor {
            path: path.clone(),
            tensor: name.to_string(),
            msg,
        };
        let tensor = match entry.location {
            Location::Bytes { start, end } => {
                read_safetensors_data(path, name, &entry.info, start, end)?
            }
            Location::Pickle => match self.pickled.get(name) {
                Some(ti) => read_pth_tensor(path, ti).map_err(tensor_err)?,
                None => {
                    return Err(LmError::MissingTensor {
                        path: path.clone(),
                        tensor: name.to_string(),
                    })
                }
            },
        };
        let tensor = tensor
            .to_dtype(dtype)
            .and_then(|t| t.to_device(device))
            .map_err(|e| tensor_err(format!("cannot convert to {dtype:?}: {e}")))?;
        Ok(tensor)
    }
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::U8 => "U8",
        DType::U32 => "U32",
        DType::I64 => "I64",
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        DType::F32 => "F32",
        DType::F64 => "F64",
        _ => "other",
    }
}

/// The tensors of a PyTorch zip checkpoint (`torch.save` of a state dict), without reading their data.
fn read_pth_index(path: &Path) -> Result<Vec<candle_core::pickle::TensorInfo>> {
    use candle_core::pickle::{Object, Stack};
    let err =
        |msg: String| LmError::weights(path, format!("cannot read PyTorch checkpoint: {msg}"));
    let file = File::open(path).map_err(|e| LmError::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        err(format!(
            "not a zip archive ({e}); legacy non-zip torch.save files are not supported"
        ))
    })?;
    let names = zip
        .file_names()
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    let pickles: Vec<String> = names
        .into_iter()
        .filter(|n| n.ends_with("data.pkl"))
        .map(|n| n.into_owned())
        .collect();
    if pickles.is_empty() {
        return Err(err("no data.pkl in the archive".into()));
    }
    let mut out = Vec::new();
    for pkl in pickles {
        let dir_name = PathBuf::from(pkl.strip_suffix(".pkl").unwrap_or(&pkl));
        let reader = zip.by_name(&pkl).map_err(|e| err(e.to_string()))?;
        let mut stack = Stack::empty();
        stack
            .read_loop(&mut std::io::BufReader::new(reader))
            .map_err(|e| err(format!("bad pickle: {e}")))?;
        let obj = stack
            .finalize()
            .map_err(|e| err(format!("bad pickle: {e}")))?;
        // A scripted module wraps the dict; a plain state dict is the dict itself.
        let obj = match obj {
            Object::Build { callable, args } => match *callable {
                Object::Reduce { callable, .. } => match *callable {
                    Object::Class {
                        module_name,
                        class_name,
                    } if module_name == "__torch__" && class_name == "Module" => *args,
                    _ => continue,
                },
                _ => continue,
            },
            obj => obj,
        };
        if let Object::Dict(entries) = obj {
            for (name, value) in entries {
                // Entries that are not tensors of a supported dtype (bool masks, ints, nested
                // objects) are not weights: skip them without noise.
                if let Ok(Some(ti)) = value.into_tensor_info(name, &dir_name) {
                    out.push(ti);
                }
            }
        }
    }
    Ok(out)
}

/// Reads one tensor of a PyTorch zip checkpoint (contiguous or Fortran-contiguous storage).
fn read_pth_tensor(
    path: &Path,
    ti: &candle_core::pickle::TensorInfo,
) -> std::result::Result<Tensor, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
    let mut reader = zip
        .by_name(&ti.path)
        .map_err(|e| format!("storage {}: {e}", ti.path))?;
    let size = ti.dtype.size_in_bytes();
    let skip = (ti.layout.start_offset() * size) as u64;
    std::io::copy(&mut reader.by_ref().take(skip), &mut std::io::sink())
        .map_err(|e| e.to_string())?;
    let dims = ti.layout.dims();
    let mut buf = vec![0u8; dims.iter().product::<usize>() * size];
    reader
        .read_exact(&mut buf)
        .map_err(|e| format!("storage {} is truncated: {e}", ti.path))?;
    let t = if ti.layout.is_contiguous() {
        Tensor::from_raw_buffer(&buf, ti.dtype, dims, &Device::Cpu)
    } else if ti.layout.is_fortran_contiguous() {
        let rev: Vec<usize> = dims.iter().rev().copied().collect();
        let perm: Vec<usize> = (0..dims.len()).rev().collect();
        Tensor::from_raw_buffer(&buf, ti.dtype, rev.as_slice(), &Device::Cpu)
            .and_then(|t| t.permute(perm))
            .and_then(|t| t.contiguous())
    } else {
        return Err(format!("strided storage {:?} is not supported", ti.layout));
    };
    t.map_err(|e| e.to_string())
}

/// Bytes per element of a safetensors dtype, or None for dtypes this crate cannot read as weights.
fn safetensors_dtype(name: &str) -> Option<(DType, usize)> {
    match name {
        "F32" => Some((DType::F32, 4)),
        "F16" => Some((DType::F16, 2)),
        "BF16" => Some((DType::BF16, 2)),
        "F64" => Some((DType::F64, 8)),
        "I64" => Some((DType::I64, 8)),
        "U32" => Some((DType::U32, 4)),
        "U8" => Some((DType::U8, 1)),
        _ => None,
    }
}

/// Element sizes of all safetensors dtypes, for validating offsets of tensors we may never read.
fn safetensors_dtype_size(name: &str) -> Option<usize> {
    match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => Some(1),
        "I16" | "U16" | "F16" | "BF16" => Some(2),
        "I32" | "U32" | "F32" => Some(4),
        "I64" | "U64" | "F64" => Some(8),
        _ => None,
    }
}

/// Largest header accepted (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// The JSON header of a safetensors file, its data section's offset and the file's size.
fn read_header_json(path: &Path) -> Result<(serde_json::Map<String, Value>, u64, u64)> {
    let mut file = File::open(path).map_err(|e| LmError::io(path, e))?;
    let size = file.metadata().map_err(|e| LmError::io(path, e))?.len();
    if size < 8 {
        return Err(LmError::weights(
            path,
            format!("file is truncated: {size} bytes, too short for a safetensors header"),
        ));
    }
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| LmError::io(path, e))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(LmError::weights(
            path,
            format!("not a safetensors file (header length {n})"),
        ));
    }
    if 8 + n > size {
        return Err(LmError::weights(
            path,
            format!(
                "file is truncated: the header needs {} bytes but the file has {size}",
                8 + n
            ),
        ));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| LmError::io(path, e))?;
    let value: Value = serde_json::from_slice(&header)
        .map_err(|e| LmError::weights(path, format!("invalid safetensors header: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(LmError::weights(
            path,
            "invalid safetensors header: not a JSON object",
        ));
    };
    Ok((obj, 8 + n, size))
}

/// The `__metadata__` of a safetensors file (string values only; empty when absent), read from its
/// header alone.
pub fn read_safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let (obj, _, _) = read_header_json(path)?;
    let mut out = BTreeMap::new();
    if let Some(meta) = obj.get("__metadata__") {
        let Some(meta) = meta.as_object() else {
            return Err(LmError::weights(path, "__metadata__ is not a JSON object"));
        };
        for (k, v) in meta {
            let Some(v) = v.as_str() else {
                return Err(LmError::weights(
                    path,
                    format!("__metadata__ value of `{k}` is not a string"),
                ));
            };
            out.insert(k.clone(), v.to_string());
        }
    }
    Ok(out)
}

/// Parses and validates a safetensors header: (name, info, absolute start, absolute end) per tensor.
pub(crate) fn read_safetensors_header(path: &Path) -> Result<Vec<(String, TensorInfo, u64, u64)>> {
    let (obj, data_start, size) = read_header_json(path)?;
    let mut out = Vec::with_capacity(obj.len());
    for (name, v) in &obj {
        if name == "__metadata__" {
            continue;
        }
        let bad = |msg: &str| LmError::Tensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
            msg: format!("invalid safetensors header entry: {msg}"),
        };
        let dtype = v
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no dtype"))?;
        let shape: Vec<usize> = v
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape is not a list of sizes"))?;
        let offsets: Vec<u64> = v
            .get("data_offsets")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no data_offsets"))?
            .iter()
            .map(Value::as_u64)
            .collect::<Option<_>>()
            .ok_or_else(|| bad("data_offsets are not integers"))?;
        let [begin, end] = offsets[..] else {
            return Err(bad("data_offsets must have two entries"));
        };
        let elem =
            safetensors_dtype_size(dtype).ok_or_else(|| bad(&format!("unknown dtype {dtype}")))?;
        // Checked: a hostile shape must not wrap around to a small element count.
        let numel = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .and_then(|n| n.checked_mul(elem as u64).map(|_| n))
            .ok_or_else(|| {
                bad(&format!(
                    "shape {shape:?} has more elements than fit in memory"
                ))
            })?;
        if end < begin || end - begin != numel * elem as u64 {
            return Err(bad(&format!(
                "data_offsets [{begin}, {end}] do not hold {numel} elements of {dtype}"
            )));
        }
        let info = TensorInfo {
            dtype: dtype.to_string(),
            shape,
        };
        out.push((name.clone(), info, data_start + begin, data_start + end));
    }
    // Two tensors over the same bytes (Python's safetensors refuses such a file): writing one through
    // a trainable copy would silently change the other.
    let mut ranges: Vec<(u64, u64, &str)> = out
        .iter()
        .filter(|t| t.3 > t.2)
        .map(|t| (t.2, t.3, t.0.as_str()))
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(LmError::weights(
                path,
                format!(
                    "tensors `{}` and `{}` overlap in the file (bytes {}..{} and {}..{}): \
                     not a valid safetensors file",
                    w[0].2, w[1].2, w[0].0, w[0].1, w[1].0, w[1].1
                ),
            ));
        }
    }
    // An interrupted download: report the first tensor that does not fit.
    if let Some((name, _, _, end)) = out.iter().filter(|t| t.3 > size).min_by_key(|t| t.2) {
        return Err(LmError::Truncated {
            path: path.to_path_buf(),
            tensor: name.clone(),
            needed: *end,
            size,
        });
    }
    Ok(out)
}

/// Reads a tensor's bytes with positioned reads, converting little-endian chunks in place.
fn read_safetensors_data(
    path: &Path,
    name: &str,
    info: &TensorInfo,
    start: u64,
    end: u64,
) -> Result<Tensor> {
    let err = |msg: String| LmError::Tensor {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        msg,
    };
    let (dtype, elem) = safetensors_dtype(&info.dtype)
        .ok_or_else(|| err(format!("dtype {} cannot be loaded as a weight", info.dtype)))?;
    let mut file = File::open(path).map_err(|e| LmError::io(path, e))?;
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(start))
        .map_err(|e| LmError::io(path, e))?;
    let n = ((end - start) as usize) / elem;
    let mut reader = file.take(end - start);
    let shape = info.shape.as_slice();
    let io_err = |e: std::io::Error| err(format!("cannot read data: {e}"));
    let tensor = match dtype {
        DType::F32 => Tensor::from_vec(
            read_le(&mut reader, n, f32::from_le_bytes).map_err(io_err)?,
            shape,
            &Device::Cpu,
        ),
        DType::F64 => Tensor::from_vec(
            read_le(&mut reader, n, f64::from_le_bytes).map_err(io_err)?,
            shape,
            &Device::Cpu,
        ),
        DType::BF16 => Tensor::from_vec(
            read_le(&mut reader, n, |b: [u8; 2]| {
                half::bf16::from_bits(u16::from_le_bytes(b))
            })
            .map_err(io_err)?,
            shape,
            &Device::Cpu,
        ),
        DType::F16 => Tensor::from_vec(
            read_le(&mut reader, n, |b: [u8; 2]| {
                half::f16::from_bits(u16::from_le_bytes(b))
            })
            .map_err(io_err)?,
            shape,
            &Device::Cpu,
        ),
        DType::I64 => Tensor::from_vec(
            read_le(&mut reader, n, i64::from_le_bytes).map_err(io_err)?,
            shape,
            &Device::Cpu,
        ),
        DType::U32 => Tensor::from_vec(
            read_le(&mut reader, n, u32::from_le_bytes).map_err(io_err)?,
            shape,
            &Device::Cpu,
        ),
        DType::U8 => Tensor::from_vec(
            read_le(&mut reader, n, |b: [u8; 1]| b[0]).map_err(io_err)?,
            shape,
            &Device::Cpu,
        ),
        _ => unreachable!("safetensors_dtype returns only the dtypes above"),
    };
    tensor.map_err(|e| err(e.to_string()))
}

/// Reads `n` little-endian elements of `N` bytes each, in 1 MiB chunks.
fn read_le<T, const N: usize>(
    reader: &mut impl Read,
    n: usize,
    convert: impl Fn([u8; N]) -> T,
) -> std::io::Result<Vec<T>> {
    const CHUNK: usize = 1 << 20;
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; CHUNK.min(n * N).max(N)];
    let mut left = n * N;
    while left > 0 {
        let take = left.min(buf.len() / N * N);
        reader.read_exact(&mut buf[..take])?;
        out.extend(
            buf[..take]
                .chunks_exact(N)
                .map(|c| convert(c.try_into().expect("chunk of N bytes"))),
        );
        left -= take;
    }
    Ok(out)
}

/// Writes a safetensors file (F32/I64/U8/U32/BF16/F16 tensors) with string metadata.
///
/// candle's own writer records no metadata; HF tools expect `{"format": "pt"}`, and feature files carry
/// their provenance there.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(&str, &Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let write_err = |e: std::io::Error| LmError::Write {
        path: path.to_path_buf(),
        source: e,
    };
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta: serde_json::Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), Value::Object(meta));
    }
    let mut offset = 0usize;
    let mut blobs = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let flat = t.to_device(&Device::Cpu)?.flatten_all()?;
        let (dtype, bytes) = tensor_le_bytes(&flat)?;
        header.insert(
            name.to_string(),
            serde_json::json!({
                "dtype": dtype,
                "shape": t.dims().to_vec(),
                "data_offsets": [offset, offset + bytes.len()],
            }),
        );
        offset += bytes.len();
        blobs.push(bytes);
    }
    let mut text =
        serde_json::to_string(&Value::Object(header)).expect("JSON of strings and numbers");
    // The data section starts 8-byte aligned, as the format recommends.
    while (8 + text.len()) % 8 != 0 {
        text.push(' ');
    }
    // Atomic: a full disk or a kill leaves the old file (or none), never a truncated one.
    w2sg_fsio::write_atomic_with(path, |w| {
        w.write_all(&(text.len() as u64).to_le_bytes())?;
        w.write_all(text.as_bytes())?;
        for b in blobs {
            w.write_all(&b)?;
        }
        Ok(())
    })
    .map_err(write_err)
}

/// The safetensors dtype name and little-endian bytes of a contiguous CPU tensor.
fn tensor_le_bytes(t: &Tensor) -> Result<(&'static str, Vec<u8>)> {
    Ok(match t.dtype() {
        DType::F32 => (
            "F32",
            t.to_vec1::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F64 => (
            "F64",
            t.to_vec1::<f64>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::I64 => (
            "I64",
            t.to_vec1::<i64>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::U32 => (
            "U32",
            t.to_vec1::<u32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::U8 => ("U8", t.to_vec1::<u8>()?),
        DType::BF16 => (
            "BF16",
            t.to_vec1::<half::bf16>()?
                .iter()
                .flat_map(|v| v.to_bits().to_le_bytes())
                .collect(),
        ),
        DType::F16 => (
            "F16",
            t.to_vec1::<half::f16>()?
                .iter()
                .flat_map(|v| v.to_bits().to_le_bytes())
                .collect(),
        ),
        other => {
            return Err(LmError::Input(format!(
                "cannot write dtype {other:?} to safetensors"
            )))
        }
    })
}

/// Reads every tensor of a safetensors file (reference outputs, feature files) onto the CPU.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for (name, info, start, end) in read_safetensors_header(path)? {
        let t = read_safetensors_data(path, &name, &info, start, end)?;
        out.insert(name, t);
    }
    Ok(out)
}

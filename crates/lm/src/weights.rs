//! Where a model's tensors come from: a checkpoint (read-only, shape-checked) or trainable
//! variables, named as HF's module tree names them.
//!
//! A model file builds itself from a [`WeightSource`] and never knows which: the same GPT-NeoX serves
//! feature extraction (a [`CheckpointWeights`]), pre-training (a [`VarStore`] holding every parameter)
//! and fine-tuning (a [`Layered`] source: the trained parameters as variables over the frozen
//! checkpoint, or LoRA adapters beside frozen base weights). Gradients flow to exactly the tensors
//! that are candle [`Var`]s, so a frozen weight never gets a gradient or optimizer state.
//!
//! LoRA (Hu et al. 2021, as peft implements it): a linear layer `prefix` with adapters gets
//! `y = x Wᵀ + b + (α/r) · (x Aᵀ) Bᵀ`, A (r × in) and B (out × r) named `{prefix}.lora_A.weight`
//! and `{prefix}.lora_B.weight`; B starts at zero, so the adapted model starts as the base model.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};

use crate::checkpoint::Checkpoint;
use crate::error::{LmError, Result};

/// A LoRA adapter attached to one linear layer.
#[derive(Debug, Clone)]
pub struct Lora {
    /// (r, in).
    pub a: Tensor,
    /// (out, r).
    pub b: Tensor,
    /// α / r.
    pub scale: f64,
}

/// A source of named tensors for building a model.
pub trait WeightSource {
    /// Tensor `name` with shape `shape`, as `dtype` on [`Self::device`]; an error naming the tensor
    /// (and its file) when it is missing or has another shape.
    fn get(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor>;
    /// Whether `name` exists.
    fn contains(&self, name: &str) -> bool;
    /// The device tensors are placed on.
    fn device(&self) -> &Device;
    /// The compute dtype of the model's matrices (norm parameters stay f32).
    fn dtype(&self) -> DType;
    /// The LoRA adapter of the linear layer `prefix`, if one is attached.
    fn lora(&self, _prefix: &str) -> Option<Lora> {
        None
    }
}

/// Read-only tensors of a checkpoint, converted to the compute dtype. Remembers which tensors the
/// model asked for, so that weights the config does not account for can be reported.
pub struct CheckpointWeights<'a> {
    ck: &'a Checkpoint,
    dtype: DType,
    device: Device,
    used: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl<'a> CheckpointWeights<'a> {
    pub fn new(ck: &'a Checkpoint, dtype: DType, device: &Device) -> Self {
        CheckpointWeights {
            ck,
            dtype,
            device: device.clone(),
            used: Default::default(),
        }
    }

    /// Tensors of the checkpoint that no `get` asked for, in name order.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = self
            .ck
            .names()
            .filter(|n| !used.contains(*n))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }
}

impl WeightSource for CheckpointWeights<'_> {
    fn get(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        self.ck.get(name, shape, dtype, &self.device)
    }
    fn contains(&self, name: &str) -> bool {
        self.ck.contains(name)
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
}

/// One trainable parameter: HF name, variable, and whether weight decay applies (matrices only).
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub decay: bool,
}

/// Trainable f32 variables by HF name, in insertion order (the order of the optimizer state and of
/// saved files).
#[derive(Debug, Clone)]
pub struct VarStore {
    params: Vec<Param>,
    index: HashMap<String, usize>,
    device: Device,
    /// α / r of the LoRA adapters this store holds.
    lora_scale: f64,
}

impl VarStore {
    pub fn new(device: &Device) -> Self {
        VarStore {
            params: Vec::new(),
            index: HashMap::new(),
            device: device.clone(),
            lora_scale: 1.0,
        }
    }

    /// Adds a variable initialised to `value` (converted to f32 on the store's device). Replaces
    /// nothing: a second insert of one name is an error.
    pub fn insert(&mut self, name: &str, value: &Tensor, decay: bool) -> Result<()> {
        if self.index.contains_key(name) {
            return Err(LmError::Input(format!("parameter `{name}` added twice")));
        }
        let t = value.to_dtype(DType::F32)?.to_device(&self.device)?;
        // A copy, so that the variable never shares storage with a frozen source tensor.
        let var = Var::from_tensor(&t.copy()?)?;
        self.index.insert(name.to_string(), self.params.len());
        self.params.push(Param {
            name: name.to_string(),
            var,
            decay,
        });
        Ok(())
    }

    /// Sets α / r for the adapters held.
    pub fn set_lora_scale(&mut self, scale: f64) {
        self.lora_scale = scale;
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn var(&self, name: &str) -> Option<&Var> {
        self.index.get(name).map(|&i| &self.params[i].var)
    }

    /// Number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    /// `(name, tensor)` pairs in insertion order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
            .collect()
    }
}

impl WeightSource for VarStore {
    fn get(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let var = self
            .var(name)
            .ok_or_else(|| LmError::Input(format!("missing parameter `{name}`")))?;
        if var.dims() != shape {
            return Err(LmError::Input(format!(
                "parameter `{name}` has shape {:?}, expected {shape:?}",
                var.dims()
            )));
        }
        if dtype != DType::F32 {
            return Err(LmError::Input(format!(
                "trainable parameter `{name}` is f32, {dtype:?} was asked for"
            )));
        }
        // The variable's own tensor (same id), so that gradients reach it and updates are seen.
        Ok(var.as_tensor().clone())
    }
    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn dtype(&self) -> DType {
        DType::F32
    }
    fn lora(&self, prefix: &str) -> Option<Lora> {
        let a = self.var(&format!("{prefix}.lora_A.weight"))?;
        let b = self.var(&format!("{prefix}.lora_B.weight"))?;
        Some(Lora {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: self.lora_scale,
        })
    }
}

/// Variables over a frozen base: a name the store holds is its variable, any other comes from the
/// base (in f32, the dtype of training).
pub struct Layered<'a> {
    pub vars: &'a VarStore,
    pub base: &'a dyn WeightSource,
}

impl WeightSource for Layered<'_> {
    fn get(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        if self.vars.contains(name) {
            self.vars.get(name, shape, dtype)
        } else {
            self.base.get(name, shape, dtype)
        }
    }
    fn contains(&self, name: &str) -> bool {
        self.vars.contains(name) || self.base.contains(name)
    }
    fn device(&self) -> &Device {
        self.base.device()
    }
    fn dtype(&self) -> DType {
        self.base.dtype()
    }
    fn lora(&self, prefix: &str) -> Option<Lora> {
        self.vars.lora(prefix)
    }
}

//! Names of compute dtypes and devices, as users type them (`--dtype bf16`, `device = "cuda:1"`).
//!
//! One parser for every front end (the CLI, sweep plans, the Python module): an unknown name is an
//! error naming the accepted ones, never a silent fallback to f32 or the CPU.

use candle_core::{DType, Device};

use crate::error::{LmError, Result};

/// Parses `f32`, `bf16` or `f16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        _ => Err(LmError::Input(format!(
            "unknown dtype \"{s}\" (use f32, bf16 or f16)"
        ))),
    }
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    let cuda = |i: usize| {
        Device::new_cuda(i).map_err(|e| LmError::Input(format!("cannot use device {s}: {e}")))
    };
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        _ => match s.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(i) => cuda(i),
            None => Err(LmError::Input(format!(
                "unknown device \"{s}\" (use cpu, cuda or cuda:N)"
            ))),
        },
    }
}

/// The canonical name of a compute dtype (`f32`, `bf16`, `f16`), as [`parse_dtype`] reads it.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        DType::F64 => "f64",
        _ => "other",
    }
}

//! w2sg-lm: language-model checkpoints for the checkpoint lab.
//!
//! Reads Pythia (GPT-NeoX), OLMo (1 and 2) and Llama-architecture checkpoints in Hugging Face layout — a local directory,
//! a directory of revisions, or the hub cache — runs them on candle (CPU, or GPU with the `cuda`
//! feature) in f32 or bf16, and turns text into features: hidden states at any layer, pooled at the
//! last real token or averaged. Outputs match HF `transformers` (see `tests/fixtures.rs` and
//! `scripts/make_lm_fixtures.py`).
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use w2sg_lm::{features, hub, model::Model};
//! # fn main() -> w2sg_lm::Result<()> {
//! let ckpt = hub::resolve("EleutherAI/pythia-70m@step1000", None)?; // offline, from the hub cache
//! let model = Model::load(&ckpt.dir, DType::F32, &Device::Cpu)?;
//! let tok = tokenizers::Tokenizer::from_file(ckpt.dir.join("tokenizer.json")).unwrap();
//! let opts = features::FeatureOptions { layer: 3, ..Default::default() };
//! let f = features::extract(&model, &tok, &["Hello world"], &opts, &mut |_| {})?;
//! println!("{:?}, {} truncated", f.values.dims(), f.num_truncated());
//! # Ok(()) }
//! ```
//!
//! Modules: [`config`] (config.json), [`checkpoint`] (weights), [`gpt_neox`], [`olmo`], [`llama`] (Llama
//! and OLMo 2; one model per file), [`model`] (the common interface), [`hub`] (resolving paths,
//! revisions and the hub cache), `download` (fetching revisions into the hub cache; `download`
//! feature), [`revisions`] (families, training order, duplicates), [`features`], [`output`],
//! [`features_job`] (`lm features` as one call), [`info`] (`lm info`), [`device`] (dtype and device
//! names). The `w2sg` binary (crates/cli) owns arguments, printing and exit codes.

pub mod checkpoint;
pub mod config;
pub mod config_keys;
pub mod device;
#[cfg(feature = "download")]
pub mod download;
pub mod error;
pub mod features;
pub mod features_job;
pub mod finetune;
pub mod gpt_neox;
pub mod host;
pub mod hub;
pub mod info;
pub mod layers;
pub mod llama;
pub mod model;
pub mod olmo;
pub mod ops;
pub mod optim;
pub mod output;
pub mod pretrain;
pub mod released;
pub mod revisions;
pub mod stack;
pub mod weights;
pub mod weights_record;

pub use error::{LmError, Result};

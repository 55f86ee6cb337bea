//! w2sg-lm: language-model checkpoints for the checkpoint lab.
//!
//! Reads Pythia (GPT-NeoX) and OLMo (1 and 2) checkpoints in Hugging Face layout — a local directory,
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
//! Modules: [`config`] (config.json), [`checkpoint`] (weights), [`gpt_neox`], [`olmo`], [`olmo2`] (one
//! model per file), [`model`] (the common interface), [`hub`] (resolving paths, revisions and the hub
//! cache), `download` (fetching revisions into the hub cache; `download` feature), [`revisions`] (families, training order, duplicates), [`features`], [`output`], [`cli`].

pub mod checkpoint;
pub mod cli;
pub mod config;
#[cfg(feature = "download")]
pub mod download;
pub mod error;
pub mod features;
pub mod finetune;
pub mod gpt_neox;
pub mod hub;
pub mod layers;
pub mod model;
pub mod olmo;
pub mod olmo2;
pub mod ops;
pub mod optim;
pub mod output;
pub mod pretrain;
pub mod released;
pub mod revisions;
pub mod weights;
pub mod weights_record;

pub use error::{LmError, Result};

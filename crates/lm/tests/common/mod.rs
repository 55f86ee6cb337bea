//! Shared helpers: fixture paths, reference outputs, and error relative to the reference's scale.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use w2sg_lm::checkpoint::read_safetensors;
use w2sg_lm::features::pad_right;
use w2sg_lm::model::{Model, Request};

/// f32: max |ours − HF| ≤ 1e-4 · max |HF|, per compared tensor (the bound).
pub const F32_TOL: f32 = 1e-4;
/// bf16 weights and activations (8-bit mantissa, ε = 2⁻⁸ ≈ 3.9e-3) against the f32 reference: a few ε
/// after two layers. Measured worst case 2.1e-2 (olmo2).
pub const BF16_TOL: f32 = 5e-2;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn texts() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures().join("texts.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn reference(name: &str) -> BTreeMap<String, Tensor> {
    read_safetensors(&fixtures().join(name).join("reference.safetensors")).unwrap()
}

/// max |a − b| / max |b|.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap();
    assert_eq!(a.dims(), b.dims());
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let s = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    d / s
}

/// Worst relative errors (hidden states, logits) of a checkpoint directory against a reference.
#[derive(Debug, Clone, Copy)]
pub struct Errors {
    pub hidden: f32,
    pub logits: f32,
}

/// Loads `dir`, checks that tokenizer.json reproduces the reference ids, runs all texts as one
/// right-padded batch and compares every hidden state and the logits at the real positions.
pub fn compare(dir: &Path, reference_name: &str, dtype: DType) -> Errors {
    let model = Model::load(dir, dtype, &Device::Cpu).unwrap();
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let r = reference(reference_name);
    let texts = texts();
    let mut ids = Vec::new();
    for (j, t) in texts.iter().enumerate() {
        let got: Vec<i64> = tok
            .encode(t.as_str(), true)
            .unwrap()
            .get_ids()
            .iter()
            .map(|&x| x as i64)
            .collect();
        let want: Vec<i64> = r[&format!("ids.{j}")].to_vec1().unwrap();
        assert_eq!(got, want, "token ids of text {j}");
        ids.push(got.iter().map(|&x| x as u32).collect::<Vec<u32>>());
    }
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    // Padding id 1 is a real token too: results at real positions must not depend on it.
    let batch = pad_right(&seqs, 1, &Device::Cpu).unwrap();
    let l = model.num_layers();
    let out = model
        .forward(
            &batch.input_ids,
            &Request::all_hidden_states(l).with_logits(),
        )
        .unwrap();
    assert_eq!(out.hidden_states.len(), l + 1);
    let mut e = Errors {
        hidden: 0.0,
        logits: 0.0,
    };
    for (j, seq) in ids.iter().enumerate() {
        let n = seq.len();
        let rh = &r[&format!("hidden.{j}")];
        for k in 0..=l {
            let got = out.hidden_state(k).unwrap().i((j, 0..n)).unwrap();
            e.hidden = e.hidden.max(rel_err(&got, &rh.i(k).unwrap()));
        }
        // The reference keeps logits only for short texts (size); the long one checks hidden states.
        if let Some(want) = r.get(&format!("logits.{j}")) {
            let got = out.logits.as_ref().unwrap().i((j, 0..n)).unwrap();
            e.logits = e.logits.max(rel_err(&got, want));
        }
    }
    // The last layer at the last real token only (what a classifier on the last token runs):
    // hidden state L and the logits at that row, against the reference's; the layer below is
    // computed in full.
    let last: Vec<usize> = ids.iter().map(|s| s.len() - 1).collect();
    let out = model
        .forward(
            &batch.input_ids,
            &Request {
                hidden_states: vec![l - 1, l],
                ..Request::default()
            }
            .with_logits()
            .at_positions(last.clone()),
        )
        .unwrap();
    let full_t = batch.input_ids.dim(1).unwrap();
    assert_eq!(out.hidden_state(l - 1).unwrap().dim(1).unwrap(), full_t);
    assert_eq!(out.hidden_state(l).unwrap().dim(1).unwrap(), 1);
    for (j, &p) in last.iter().enumerate() {
        let got = out.hidden_state(l).unwrap().i((j, 0)).unwrap();
        let want = r[&format!("hidden.{j}")].i((l, p)).unwrap();
        e.hidden = e.hidden.max(rel_err(&got, &want));
        if let Some(want) = r.get(&format!("logits.{j}")) {
            let got = out.logits.as_ref().unwrap().i((j, 0)).unwrap();
            e.logits = e.logits.max(rel_err(&got, &want.i(p).unwrap()));
        }
    }
    eprintln!(
        "{} vs {reference_name} ({dtype:?}): hidden {:.2e}, logits {:.2e}",
        dir.display(),
        e.hidden,
        e.logits
    );
    e
}

/// Asserts both errors are within `tol`.
pub fn assert_matches(dir: &Path, reference_name: &str, dtype: DType, tol: f32) {
    let e = compare(dir, reference_name, dtype);
    assert!(
        e.hidden <= tol,
        "{}: hidden-state error {:.3e} > {tol:e}",
        dir.display(),
        e.hidden
    );
    assert!(
        e.logits <= tol,
        "{}: logits error {:.3e} > {tol:e}",
        dir.display(),
        e.logits
    );
}

/// Copies a directory's files (not recursively) into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

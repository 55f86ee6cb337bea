//! Pre-training: tokenizer, gradients, loss, checkpoints in HF layout, resume, transformers fixture.
//!
//! Everything runs on a synthetic corpus and models of a few thousand parameters so the whole file
//! takes seconds; the real corpus is only used by the CLI and the benchmark.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use w2sg_data::corpus::Document;
use w2sg_data::SplitMix64;
use w2sg_lm::model::{Model, Request};
use w2sg_lm::optim::{AdamW, AdamWConfig};
use w2sg_lm::pretrain::batches::train_batch;
use w2sg_lm::pretrain::checkpoints::{read_manifest, sha256_file};
use w2sg_lm::pretrain::model::TrainableGptNeoX;
use w2sg_lm::pretrain::tokenizer::{decode, encode, train_tokenizer};
use w2sg_lm::pretrain::{pretrain, ModelShape, PretrainConfig, RunOptions};

const WORDS: &[&str] = &[
    "the", "whale", "king", "nation", "sea", "ship", "people", "law", "crown", "war", "peace",
    "congress", "captain", "ocean", "thou", "art", "shall", "union", "state", "great", "white",
    "and", "of", "to", "in", "a", "is", "that", "with", "for",
];

/// Deterministic pseudo-English: `n_docs` documents of paragraphs of sentences.
fn corpus(n_docs: usize) -> Vec<Document> {
    let mut rng = SplitMix64::new(42);
    (0..n_docs)
        .map(|d| {
            let mut text = String::new();
            for _ in 0..30 {
                for _ in 0..4 {
                    let n = 5 + (rng.next() % 8) as usize;
                    let words: Vec<&str> = (0..n)
                        .map(|_| WORDS[(rng.next() % WORDS.len() as u64) as usize])
                        .collect();
                    text.push_str(&words.join(" "));
                    text.push_str(". ");
                }
                text.push_str("\n\n");
            }
            Document {
                source: "synthetic".into(),
                name: format!("synthetic/{d}"),
                text,
            }
        })
        .collect()
}

fn micro_config() -> PretrainConfig {
    let mut c = PretrainConfig::preset("tiny").unwrap();
    c.vocab_size = 300;
    c.tokenizer_train_bytes = 0;
    c.validation_fraction = 0.1;
    c.model = ModelShape {
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        intermediate_size: 64,
        context: 16,
        rotary_pct: 0.25,
        rope_theta: 10_000.0,
    };
    c.steps = 12;
    c.batch_size = 4;
    c.warmup_steps = 2;
    c.lr = 3e-3;
    c.checkpoint_every = 100;
    c.eval_tokens = 128;
    c.log_every = 3;
    c
}

fn quiet(docs: Vec<Document>) -> RunOptions {
    RunOptions {
        plot: false,
        documents: Some(docs),
        ..RunOptions::default()
    }
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn tokenizer_round_trips_and_is_deterministic() {
    let texts: Vec<String> = corpus(3).into_iter().map(|d| d.text).collect();
    let tok = train_tokenizer(&texts, 400).unwrap();
    // 30 distinct words run out of merges before 400 tokens; the cap must hold.
    let n = tok.get_vocab_size(true);
    assert!(n > 300 && n <= 400, "vocabulary {n}");
    for s in [
        "the whale and the king",
        "  Unseen wörds, ünïcode ✓ and\ttabs\n\nnew lines  ",
        "<|endoftext|> is special",
        "",
    ] {
        let ids = encode(&tok, s).unwrap();
        assert_eq!(decode(&tok, &ids).unwrap(), s);
    }
    // Frequent words become single tokens: BPE learnt merges.
    assert_eq!(encode(&tok, " the").unwrap().len(), 1);
    let again = train_tokenizer(&texts, 400).unwrap();
    assert_eq!(
        tok.to_string(false).unwrap(),
        again.to_string(false).unwrap()
    );
    assert!(train_tokenizer(&texts, 100).is_err());
}

fn micro_model(seed: u64) -> TrainableGptNeoX {
    TrainableGptNeoX::init(
        &micro_config().gpt_neox_config().unwrap(),
        seed,
        &Device::Cpu,
    )
    .unwrap()
}

fn fixed_batch() -> (Tensor, Tensor) {
    let stream: Vec<u32> = (0..400u32).map(|i| (i * 7 + i / 3) % 300).collect();
    let b = train_batch(&stream, 1, 0, 4, 16, &Device::Cpu).unwrap();
    (b.inputs, b.targets)
}

#[test]
fn every_parameter_receives_a_nonzero_gradient() {
    let model = micro_model(0);
    let (x, y) = fixed_batch();
    let grads = model.loss(&x, &y).unwrap().backward().unwrap();
    assert_eq!(model.params().len(), 1 + 2 * 12 + 3);
    for p in model.params() {
        let g = grads
            .get(p.var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {}", p.name));
        let s = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(s > 0.0 && s.is_finite(), "{}: |grad| sum {s}", p.name);
    }
}

#[test]
fn fused_kernels_match_the_composite_ops_in_loss_and_every_gradient() {
    // The same model and variables, once through the fused CPU ops and once through their
    // composite versions (the path of GPU builds).
    let fused = micro_model(3);
    let (x, y) = fixed_batch();
    let lf = fused.loss(&x, &y).unwrap();
    let lc = w2sg_lm::ops::with_composite_ops(|| fused.loss(&x, &y).unwrap());
    let (a, b) = (
        lf.to_scalar::<f32>().unwrap(),
        lc.to_scalar::<f32>().unwrap(),
    );
    assert!((a - b).abs() < 1e-5, "loss fused {a} vs composite {b}");
    let (gf, gc) = (lf.backward().unwrap(), lc.backward().unwrap());
    for p in fused.params() {
        let t = p.var.as_tensor();
        let (f, c) = (gf.get(t).unwrap(), gc.get(t).unwrap());
        let scale = c
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let d = max_abs_diff(f, c);
        assert!(
            d <= 1e-5 + 1e-4 * scale,
            "{}: max |Δgrad| {d} (max |grad| {scale})",
            p.name
        );
    }
}

#[test]
fn a_few_steps_lower_the_loss_on_a_fixed_batch() {
    let model = micro_model(0);
    let (x, y) = fixed_batch();
    let mut opt = AdamW::new(AdamWConfig::default(), model.params()).unwrap();
    let loss = |m: &TrainableGptNeoX| m.loss(&x, &y).unwrap().to_scalar::<f32>().unwrap();
    let first = loss(&model);
    // Random weights: loss ≈ ln(vocab).
    assert!((first - (300f32).ln()).abs() < 0.2, "initial loss {first}");
    for _ in 0..15 {
        let grads = model.loss(&x, &y).unwrap().backward().unwrap();
        opt.update(model.params(), &grads, 1e-2, 1.0).unwrap();
    }
    let last = loss(&model);
    assert!(last < first - 1.0, "loss {first} → {last}");
}

fn logits_of(model: &Model, ids: &Tensor) -> Tensor {
    model
        .forward(ids, &Request::default().with_logits())
        .unwrap()
        .logits
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn run_writes_a_family_that_the_loader_reads_with_the_same_logits() {
    let dir = tmpdir();
    let out = dir.path().join("family");
    let config = micro_config();
    let summary = pretrain(&config, &out, &quiet(corpus(8))).unwrap();
    assert_eq!(summary.step, 12);
    // Checkpoints on the scaled Pythia schedule, listed as a family in training order.
    let manifest = read_manifest(&out).unwrap();
    let steps: Vec<u64> = manifest.checkpoints.iter().map(|c| c.step).collect();
    assert_eq!(steps, vec![0, 1, 2, 4, 8, 12]);
    let source = w2sg_lm::revisions::family_source(out.to_str().unwrap(), None).unwrap();
    let revs = w2sg_lm::revisions::list_revisions(&source).unwrap();
    let rev_steps: Vec<Option<u64>> = revs.iter().map(|r| r.step).collect();
    assert_eq!(
        rev_steps,
        steps.iter().map(|&s| Some(s)).collect::<Vec<_>>()
    );
    for c in &manifest.checkpoints {
        let d = out.join(&c.revision);
        assert_eq!(c.sha256, sha256_file(&d.join("model.safetensors")).unwrap());
        assert!(d.join("tokenizer.json").is_file() && d.join("config.json").is_file());
        assert_eq!(c.tokens_seen, c.step * 4 * 16);
    }
    // Only the latest checkpoint keeps the optimizer state.
    assert!(out.join("step12/optimizer.safetensors").is_file());
    assert!(!out.join("step8/optimizer.safetensors").exists());
    // Validation loss went down from the random start.
    let v0 = manifest.checkpoints[0].val_loss.unwrap();
    let v12 = manifest.checkpoints[5].val_loss.unwrap();
    assert!(v12 < v0, "validation loss {v0} → {v12}");
    let csv = std::fs::read_to_string(out.join("loss.csv")).unwrap();
    assert!(csv.starts_with("step,tokens_seen,lr,train_loss,val_loss\n"));

    // Load with crates/lm's inference loader and with the trainable loader: same logits.
    let ck = out.join("step12");
    let trained =
        w2sg_lm::pretrain::checkpoints::load_checkpoint(&ck, &config, &Device::Cpu).unwrap();
    let inference = Model::load(&ck, candle_core::DType::F32, &Device::Cpu).unwrap();
    let (x, _) = fixed_batch();
    let a = trained.forward(&x).unwrap();
    let b = logits_of(&inference, &x);
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-4, "trainable vs inference logits differ by {d}");
    // And a save → load of the trainable model is bit-exact.
    let p = dir.path().join("again.safetensors");
    w2sg_lm::pretrain::checkpoints::save_weights(&trained, &p).unwrap();
    assert_eq!(
        sha256_file(&p).unwrap(),
        sha256_file(&ck.join("model.safetensors")).unwrap()
    );
}

#[test]
fn interrupted_run_resumes_to_identical_weights() {
    let dir = tmpdir();
    let config = micro_config();
    let full = dir.path().join("full");
    pretrain(&config, &full, &quiet(corpus(8))).unwrap();
    // Killed at step 10, between the checkpoints at 8 and 12: steps 9 and 10 are lost.
    let cut = dir.path().join("cut");
    let killed = pretrain(
        &config,
        &cut,
        &RunOptions {
            stop_after: Some(10),
            ..quiet(corpus(8))
        },
    )
    .unwrap();
    assert_eq!(killed.step, 10);
    assert!(!cut.join("step12").exists());
    // Resuming needs no corpus: tokenizer and token streams come from the directory.
    let rec = std::sync::Arc::new(w2sg_progress::Recorder::default());
    let resumed = pretrain(
        &config,
        &cut,
        &RunOptions {
            documents: None,
            progress: w2sg_progress::Reporter::new(rec.clone()),
            ..quiet(Vec::new())
        },
    )
    .unwrap();
    assert_eq!(resumed.resumed_from, Some(8));
    assert_eq!(resumed.step, 12);
    // The resumed run's progress starts where the checkpoint left off and ends at the last step.
    use w2sg_progress::Event;
    let events = rec.events();
    assert_eq!(
        events.first(),
        Some(&Event::Phase {
            len: 12,
            done: 8,
            unit: "steps".into()
        })
    );
    let last_position = events.iter().rev().find_map(|e| match e {
        Event::Position(p) => Some(*p),
        _ => None,
    });
    assert_eq!(last_position, Some(12));
    assert_eq!(events.last(), Some(&Event::EndPhase));
    let m_full = read_manifest(&full).unwrap();
    let m_cut = read_manifest(&cut).unwrap();
    assert_eq!(m_full.checkpoints, m_cut.checkpoints);
    let h = |d: &Path| sha256_file(&d.join("step12/model.safetensors")).unwrap();
    assert_eq!(h(&full), h(&cut));
    // A different seed is a different run, and reusing the directory with it is refused.
    let mut other = config.clone();
    other.seed = 1;
    let e = pretrain(&other, &cut, &quiet(corpus(8))).unwrap_err();
    assert!(e.to_string().contains("seed"), "{e}");
}

/// The committed fixture, or any checkpoint named by `W2SG_PRETRAIN_CHECK_DIR` (holding the
/// `transformers_logits.safetensors` that the script wrote), to check a real family by hand.
fn fixture_dir() -> PathBuf {
    match std::env::var_os("W2SG_PRETRAIN_CHECK_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pretrain-step12"),
    }
}

/// `scripts/check_pretrain_checkpoint.py` recorded HF transformers' logits for a checkpoint written by
/// this crate; both our loaders must reproduce them.
#[test]
fn committed_checkpoint_matches_transformers_logits() {
    let dir = fixture_dir();
    let reference =
        w2sg_lm::checkpoint::read_safetensors(&dir.join("transformers_logits.safetensors"))
            .unwrap();
    let ids = reference["input_ids"]
        .to_dtype(candle_core::DType::U32)
        .unwrap();
    let expected = &reference["logits"];
    let inference = Model::load(&dir, candle_core::DType::F32, &Device::Cpu).unwrap();
    let d = max_abs_diff(&logits_of(&inference, &ids), expected);
    assert!(d < 1e-4, "inference loader vs transformers: {d}");
    let trainable =
        w2sg_lm::pretrain::checkpoints::load_checkpoint_dir(&dir, &Device::Cpu).unwrap();
    let d = max_abs_diff(&trainable.forward(&ids).unwrap(), expected);
    assert!(d < 1e-4, "trainable model vs transformers: {d}");
    eprintln!("max |logit difference| vs transformers: {d:e}");
}

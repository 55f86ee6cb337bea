//! Fine-tuning (full, last k blocks, LoRA) on the tiny fixtures: what trains and what does not, the
//! frozen-block cache, determinism across thread counts, learning, and per-step parity with HF
//! transformers + peft (`scripts/make_finetune_fixtures.py`, committed in
//! `tests/fixtures/finetune/*/expected.json`).
//!
//! To regenerate the PyTorch side: `W2SG_WRITE_FINETUNE_CASES=DIR cargo test --release -p w2sg-lm
//! --test finetune parity` writes each case's initial trainable tensors and batches to DIR, then
//! `python scripts/make_finetune_fixtures.py DIR crates/lm/tests/fixtures/finetune`.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::fixtures;
use w2sg_lm::checkpoint::write_safetensors;
use w2sg_lm::features::Pooling;
use w2sg_lm::finetune::{
    finetune, with_block_recompute, FinetuneConfig, FinetuneOutput, Layers, TargetRequest, Trace,
};

/// 40 short texts and soft labels: texts with "good" lean positive.
fn data() -> (Vec<String>, Vec<f32>) {
    let words = [
        "good", "bad", "film", "plot", "actors", "music", "dull", "bright", "story", "end",
    ];
    let mut rng = w2sg_data::SplitMix64::new(5);
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for i in 0..40 {
        let n = 3 + (rng.next() % 6) as usize;
        let mut t: Vec<&str> = (0..n)
            .map(|_| words[(rng.next() % words.len() as u64) as usize])
            .collect();
        let pos = i % 2 == 0;
        t.insert(
            (rng.next() % n as u64) as usize,
            if pos { "good" } else { "bad" },
        );
        texts.push(t.join(" "));
        labels.push(if pos {
            0.8 + 0.2 * (i % 3) as f32 / 3.0
        } else {
            0.1 + 0.1 * (i % 4) as f32 / 4.0
        });
    }
    (texts, labels)
}

fn tokenizer(dir: &Path) -> tokenizers::Tokenizer {
    tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap()
}

fn run(fixture: &str, cfg: &FinetuneConfig, trace: Option<&mut Trace>) -> FinetuneOutput {
    let dir = fixtures().join(fixture);
    let (texts, labels) = data();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let mut targets =
        |r: &TargetRequest<'_>| r.indices.iter().map(|&i| labels[i]).collect::<Vec<f32>>();
    finetune(
        &dir,
        &tokenizer(&dir),
        &refs,
        &mut targets,
        &refs[..8],
        cfg,
        &Device::Cpu,
        &mut |_, _| {},
        trace,
    )
    .unwrap()
}

fn cfg(layers: Layers, lora_rank: usize) -> FinetuneConfig {
    FinetuneConfig {
        layers,
        lora_rank,
        lora_alpha: 8.0,
        epochs: 2,
        lr: 2e-3,
        batch_size: 4,
        grad_accumulation: 2,
        warmup_frac: 0.2,
        weight_decay: 0.01,
        max_tokens: 16,
        pooling: Pooling::LastToken,
        seed: 11,
    }
}

#[test]
fn lora_trains_only_adapters_and_head() {
    let mut trace = Trace::default();
    let out = run(
        "neox-parallel-rot25",
        &cfg(Layers::All, 4),
        Some(&mut trace),
    );
    let names: Vec<&str> = trace.initial.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names
            .iter()
            .all(|n| n.contains(".lora_") || n.starts_with("score.")),
        "{names:?}"
    );
    // 2 blocks × 4 linear layers, each with A and B, plus the head's weight and bias.
    assert_eq!(names.len(), 2 * 4 * 2 + 2);
    // r · (in + out) per layer: qkv 32→96, dense 32→32, up 32→128, down 128→32; head 32 + 1.
    let per_block = 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32));
    assert_eq!(out.trainable_parameters, 2 * per_block + 33);
    // B starts at zero and moves.
    let b0 = &trace
        .initial
        .iter()
        .find(|(n, _)| n.ends_with("query_key_value.lora_B.weight"))
        .unwrap()
        .1;
    let b1 = &trace
        .trained
        .iter()
        .find(|(n, _)| n.ends_with("query_key_value.lora_B.weight"))
        .unwrap()
        .1;
    assert_eq!(
        b0.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    assert!(
        b1.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
    assert_eq!(out.step_losses.len(), 2 * 5);
}

#[test]
fn last_k_trains_the_top_blocks_and_final_norm_from_cached_states() {
    let mut trace = Trace::default();
    let last = run(
        "neox-parallel-rot25",
        &cfg(Layers::Last(1), 0),
        Some(&mut trace),
    );
    let names: Vec<&str> = trace.initial.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.iter().all(|n| n.starts_with("gpt_neox.layers.1.")
            || n.starts_with("gpt_neox.final_layer_norm.")
            || n.starts_with("score.")),
        "{names:?}"
    );
    assert_eq!(names.len(), 12 + 2 + 2);
    // Before any update the model is the same whatever trains: the first loss through the cached
    // block-0 output equals the first loss of full fine-tuning from the token ids.
    let all = run("neox-parallel-rot25", &cfg(Layers::All, 0), None);
    let (a, b) = (last.step_losses[0], all.step_losses[0]);
    assert!(
        (a - b).abs() <= 1e-6 * b.abs(),
        "first loss {a} (cached) vs {b} (full)"
    );
    assert_ne!(last.step_losses[5], all.step_losses[5]);
    // Head only: the final hidden states are cached and nothing else trains.
    let mut trace = Trace::default();
    run(
        "neox-parallel-rot25",
        &cfg(Layers::Last(0), 0),
        Some(&mut trace),
    );
    assert_eq!(trace.initial.len(), 2);
}

#[test]
fn same_seed_same_bits_with_one_and_two_threads() {
    let go = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let o = run("olmo2", &cfg(Layers::All, 4), None);
            (o.step_losses, o.eval_logits)
        })
    };
    assert_eq!(go(1), go(2));
}

/// Under LoRA the backward pass recomputes each block, a group of sequences at a time; it must
/// train as the whole graph does, up to float reassociation. Texts of 200 tokens, so that a
/// micro-batch of 4 spans two groups of sequences. Every kind of block: GPT-NeoX's parallel and
/// sequential residuals, OLMo 1, Llama and OLMo 2 (each skips the values of other projections when
/// recomputed, see `Request::gradient_only`).
#[test]
fn recomputed_blocks_train_as_the_whole_graph() {
    let words = ["good", "bad", "film", "plot", "actors", "music"];
    let texts: Vec<String> = (0..8)
        .map(|i| {
            (0..220)
                .map(|j| words[(i * 7 + j * j * 3) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    for fixture in [
        "neox-parallel-rot25",
        "neox-sequential-rot100",
        "olmo-hf",
        "llama-gqa-llama3-tied",
        "olmo2",
    ] {
        let dir = fixtures().join(fixture);
        let mut c = cfg(Layers::All, 4);
        c.max_tokens = 200;
        c.grad_accumulation = 1;
        assert!(c.recomputes(), "LoRA recomputes by default");
        let go = |on: bool| {
            with_block_recompute(on, || {
                let mut trace = Trace::default();
                let mut targets = |r: &TargetRequest<'_>| {
                    r.indices
                        .iter()
                        .map(|&i| (i % 2) as f32)
                        .collect::<Vec<f32>>()
                };
                let out = finetune(
                    &dir,
                    &tokenizer(&dir),
                    &refs,
                    &mut targets,
                    &refs[..4],
                    &c,
                    &Device::Cpu,
                    &mut |_, _| {},
                    Some(&mut trace),
                )
                .unwrap();
                (out, trace)
            })
        };
        let (graph, tg) = go(false);
        let (recomputed, tr) = go(true);
        assert_eq!(graph.step_losses.len(), 4);
        for (a, b) in recomputed.step_losses.iter().zip(&graph.step_losses) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "{fixture}: loss {a} vs {b}"
            );
        }
        for ((name, a), (_, b)) in tr.trained.iter().zip(&tg.trained) {
            let (a, b) = (
                a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                diff <= 1e-4 * scale,
                "{fixture}: {name} differs by {diff} (max {scale})"
            );
        }
        for (a, b) in recomputed.eval_logits.iter().zip(&graph.eval_logits) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "{fixture}: eval {a} vs {b}"
            );
        }
    }
}

#[test]
fn fine_tuning_fits_the_soft_labels() {
    let mut c = cfg(Layers::All, 0);
    c.epochs = 20;
    c.lr = 5e-3;
    let out = run("neox-sequential-rot100", &c, None);
    let (first, last) = (out.step_losses[0], *out.step_losses.last().unwrap());
    assert!(last < 0.8 * first, "loss {first} → {last}");
    // The eval texts are the first 8 training texts, alternating positive and negative.
    let (_, labels) = data();
    let correct = out
        .eval_logits
        .iter()
        .zip(&labels)
        .filter(|(z, y)| (**z > 0.0) == (**y > 0.5))
        .count();
    assert!(
        correct >= 7,
        "{correct}/8 eval texts on the right side: {:?}",
        out.eval_logits
    );
}

#[test]
fn bad_settings_are_errors_naming_the_setting() {
    let dir = fixtures().join("neox-parallel-rot25");
    let mut targets = |r: &TargetRequest<'_>| vec![0.5; r.indices.len()];
    for (c, what) in [
        (
            FinetuneConfig {
                epochs: 0,
                ..cfg(Layers::All, 0)
            },
            "epochs",
        ),
        (
            FinetuneConfig {
                lr: -1.0,
                ..cfg(Layers::All, 0)
            },
            "lr",
        ),
        (
            FinetuneConfig {
                layers: Layers::Last(3),
                ..cfg(Layers::All, 0)
            },
            "layers = 3",
        ),
        (
            FinetuneConfig {
                layers: Layers::Last(0),
                ..cfg(Layers::All, 2)
            },
            "lora_rank",
        ),
    ] {
        let e = finetune(
            &dir,
            &tokenizer(&dir),
            &["a b"],
            &mut targets,
            &["a"],
            &c,
            &Device::Cpu,
            &mut |_, _| {},
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains(what), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}

/// The parity cases: fixture, trained blocks, LoRA rank.
const CASES: &[(&str, &str, Layers, usize)] = &[
    ("neox-par-full", "neox-parallel-rot25", Layers::All, 0),
    ("neox-par-last1", "neox-parallel-rot25", Layers::Last(1), 0),
    ("neox-par-lora4", "neox-parallel-rot25", Layers::All, 4),
    ("neox-seq-full", "neox-sequential-rot100", Layers::All, 0),
    (
        "neox-seq-lora4",
        "neox-sequential-rot100",
        Layers::Last(1),
        4,
    ),
    ("olmo2-full", "olmo2", Layers::All, 0),
    ("olmo2-last1", "olmo2", Layers::Last(1), 0),
    ("olmo2-lora4", "olmo2", Layers::All, 4),
    ("llama-gqa-full", "llama-gqa-llama3-tied", Layers::All, 0),
    ("llama-gqa-lora4", "llama-gqa-llama3-tied", Layers::All, 4),
    (
        "llama-mha-last1",
        "llama-mha-untied-bf16",
        Layers::Last(1),
        0,
    ),
];

/// Per-step loss within 1e-4 relative and the trained head within 1e-3 of HF transformers (+ peft)
/// trained from the same initial tensors on the same batches.
#[test]
fn parity_with_pytorch_per_step_loss_and_head() {
    let write = std::env::var_os("W2SG_WRITE_FINETUNE_CASES").map(std::path::PathBuf::from);
    let (texts, labels) = data();
    for &(name, fixture, layers, rank) in CASES {
        let c = cfg(layers, rank);
        let mut trace = Trace::default();
        let out = run(fixture, &c, Some(&mut trace));
        if let Some(root) = &write {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let named: Vec<(&str, &Tensor)> =
                trace.initial.iter().map(|(n, t)| (n.as_str(), t)).collect();
            write_safetensors(&dir.join("init.safetensors"), &named, &Default::default()).unwrap();
            let case = serde_json::json!({
                "fixture": fixture, "texts": texts, "labels": labels, "micro_batches": trace.micro_batches,
                "layers": match layers { Layers::All => -1, Layers::Last(k) => k as i64 },
                "lora_rank": rank, "lora_alpha": c.lora_alpha, "lr": c.lr, "epochs": c.epochs,
                "batch_size": c.batch_size, "grad_accumulation": c.grad_accumulation,
                "warmup_frac": c.warmup_frac, "weight_decay": c.weight_decay, "max_tokens": c.max_tokens,
                "steps": out.step_losses.len(), "w2sg_losses": out.step_losses,
            });
            std::fs::write(
                dir.join("case.json"),
                serde_json::to_string_pretty(&case).unwrap(),
            )
            .unwrap();
            continue;
        }
        let path = fixtures().join("finetune").join(name).join("expected.json");
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let losses: Vec<f32> = serde_json::from_value(expected["losses"].clone()).unwrap();
        assert!(
            losses.len() >= 10 && losses.len() == out.step_losses.len(),
            "{name}: {} steps",
            losses.len()
        );
        for (i, (a, b)) in out.step_losses.iter().zip(&losses).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs(),
                "{name}: step {i} loss {a} vs PyTorch {b}"
            );
        }
        let head: Vec<f32> = serde_json::from_value(expected["head_weight"].clone()).unwrap();
        let ours: Vec<f32> = trace
            .trained
            .iter()
            .find(|(n, _)| n == "score.weight")
            .unwrap()
            .1
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let scale = head.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = ours
            .iter()
            .zip(&head)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-3 * scale,
            "{name}: head differs by {diff} (max |w| {scale})"
        );
    }
}

/// The store keys fine-tuned units on `key_text`: it must stay the text earlier versions wrote (the
/// derived `Debug` of these settings), or every fine-tuned unit of an existing store would run again;
/// and every setting must change it, or two different runs would share a key.
#[test]
fn key_text_is_stable_and_every_setting_changes_it() {
    let base = FinetuneConfig::default();
    assert_eq!(
        base.key_text(),
        "FinetuneConfig { layers: All, lora_rank: 0, lora_alpha: 16.0, epochs: 2, lr: 5e-5, \
         batch_size: 32, grad_accumulation: 1, warmup_frac: 0.1, weight_decay: 0.0, \
         max_tokens: 128, pooling: LastToken, seed: 0 }"
    );
    let lora = FinetuneConfig {
        layers: Layers::Last(2),
        lora_rank: 8,
        lr: 3e-4,
        pooling: Pooling::Mean,
        seed: 7,
        ..base.clone()
    };
    assert_eq!(
        lora.key_text(),
        "FinetuneConfig { layers: Last(2), lora_rank: 8, lora_alpha: 16.0, epochs: 2, lr: 0.0003, \
         batch_size: 32, grad_accumulation: 1, warmup_frac: 0.1, weight_decay: 0.0, \
         max_tokens: 128, pooling: Mean, seed: 7 }"
    );
    let variants = [
        FinetuneConfig {
            layers: Layers::Last(0),
            ..base.clone()
        },
        FinetuneConfig {
            lora_rank: 4,
            ..base.clone()
        },
        FinetuneConfig {
            lora_alpha: 32.0,
            ..base.clone()
        },
        FinetuneConfig {
            epochs: 3,
            ..base.clone()
        },
        FinetuneConfig {
            lr: 1e-5,
            ..base.clone()
        },
        FinetuneConfig {
            batch_size: 16,
            ..base.clone()
        },
        FinetuneConfig {
            grad_accumulation: 2,
            ..base.clone()
        },
        FinetuneConfig {
            warmup_frac: 0.0,
            ..base.clone()
        },
        FinetuneConfig {
            weight_decay: 0.01,
            ..base.clone()
        },
        FinetuneConfig {
            max_tokens: 64,
            ..base.clone()
        },
        FinetuneConfig {
            pooling: Pooling::Mean,
            ..base.clone()
        },
        FinetuneConfig {
            seed: 1,
            ..base.clone()
        },
    ];
    let mut texts: Vec<String> = variants.iter().map(FinetuneConfig::key_text).collect();
    texts.push(base.key_text());
    let n = texts.len();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), n, "two different settings share a key text");
}

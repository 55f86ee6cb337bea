//! A fine-tuning step (forward, backward, AdamW) on a GPT-NeoX of Pythia-70m's shape, full and LoRA,
//! against HF transformers (+ peft) on PyTorch CPU; and LoRA's peak memory against inference's.
//!
//! `cargo bench -p w2sg-lm --bench finetune` writes the random checkpoint of `benches/common`, then runs
//! child processes, one measurement each, with the same thread count (`BENCH_THREADS`, default all
//! cores):
//! - this binary with `--child infer|full|lora|lora-graph`: [`w2sg_lm::finetune::finetune`] on `STEPS` batches of
//!   `BATCH` texts truncated to `SEQ` tokens (one epoch, classification head on the last token), timed
//!   per optimizer step after `WARMUP` untimed steps; `infer` runs the same batches forward only.
//! - `benches/peers/finetune_torch.py` with the same mode, shapes and optimizer; our block
//!   recomputation runs against transformers' gradient checkpointing, our whole graph against PyTorch's (`W2SG_PYTHON`, else
//!   `/work/venv-lm/bin/python`, else `python3`).
//!
//! LoRA: rank 8, α 16, on every linear layer of every block; `lora` recomputes each block in the
//! backward pass (the default), `lora-graph` keeps candle's whole graph. Full: every parameter but the LM head.
//! `BENCH_ROUNDS` (default 1) repeats each measurement, alternating with the peer, and keeps each
//! side's median. Peak memory is each process's VmHWM (Python's includes the interpreter and torch).
//! The CPU steal time during each median run is shown, to tell a loaded host. Prints a Markdown
//! table; no assertions.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device};
use common::{peak_rss_kb, python, run_json, write_model, Rng};
use w2sg_lm::features::{pad_right, tokenize, Pooling};
use w2sg_lm::finetune::{finetune, FinetuneConfig, Layers, TargetRequest};
use w2sg_lm::model::{Model, Request};

const BATCH: usize = 8;
const SEQ: usize = 128;
const STEPS: usize = 8;
const WARMUP: usize = 2;

/// Texts long enough to be cut at SEQ tokens.
fn texts() -> Vec<String> {
    let words = [
        "the",
        "strong",
        "student",
        "weak",
        "supervisor",
        "labels",
        "model",
        "token",
        "layer",
        "of",
        "and",
        "a",
    ];
    let mut rng = Rng(7);
    (0..BATCH * STEPS)
        .map(|_| {
            (0..400)
                .map(|_| words[(rng.next() % words.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn child(mode: &str, dir: &Path) {
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    if mode == "infer" {
        let model = Model::load(dir, DType::F32, &Device::Cpu).unwrap();
        let enc = tokenize(&tok, &refs, SEQ).unwrap();
        let t0 = Instant::now();
        for b in enc.ids.chunks(BATCH) {
            let seqs: Vec<&[u32]> = b.iter().map(|s| s.as_slice()).collect();
            let p = pad_right(&seqs, 0, &Device::Cpu).unwrap();
            model
                .forward(&p.input_ids, &Request::hidden_state(model.num_layers()))
                .unwrap();
        }
        let s = t0.elapsed().as_secs_f64() / STEPS as f64;
        println!(
            "{}",
            serde_json::json!({ "seconds_per_step": s, "peak_rss_kb": peak_rss_kb() })
        );
        return;
    }
    let cfg = FinetuneConfig {
        layers: Layers::All,
        lora_rank: if mode.starts_with("lora") { 8 } else { 0 },
        lora_alpha: 16.0,
        epochs: 1,
        lr: 1e-4,
        batch_size: BATCH,
        grad_accumulation: 1,
        warmup_frac: 0.0,
        weight_decay: 0.0,
        max_tokens: SEQ,
        pooling: Pooling::LastToken,
        seed: 0,
    };
    let mut targets = |r: &TargetRequest<'_>| {
        r.indices
            .iter()
            .map(|&i| (i % 2) as f32)
            .collect::<Vec<f32>>()
    };
    let mut times = Vec::new();
    let mut last = Instant::now();
    let run = || {
        finetune(
            dir,
            &tok,
            &refs,
            &mut targets,
            &refs[..1],
            &cfg,
            &Device::Cpu,
            &mut |_, _| {
                times.push(last.elapsed().as_secs_f64());
                last = Instant::now();
            },
            None,
        )
    };
    // `lora` recomputes each block in the backward pass (the default under LoRA); `lora-graph` keeps
    // the whole graph, as full fine-tuning does.
    let out = w2sg_lm::finetune::with_block_recompute(mode != "lora-graph", run).unwrap();
    let timed = &times[WARMUP..];
    println!(
        "{}",
        serde_json::json!({
            "seconds_per_step": timed.iter().sum::<f64>() / timed.len() as f64,
            "peak_rss_kb": peak_rss_kb(),
            "trainable_parameters": out.trainable_parameters,
            "first_loss": out.step_losses[0],
        })
    );
}

fn main() {
    // As the w2sg binary does (`BENCH_GLIBC_MALLOC=1`: glibc's defaults, to measure the difference).
    if std::env::var_os("BENCH_GLIBC_MALLOC").is_none() {
        w2sg_lm::host::tune_allocator();
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], Path::new(&args[i + 2]));
        return;
    }
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lm-bench");
    let model_dir = work.join("pythia-70m-shape-random");
    if !model_dir.join("model.safetensors").is_file() {
        write_model(&model_dir);
    }
    let threads: usize = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let exe = std::env::current_exe().unwrap();
    let ours = |mode: &str| {
        run_json(
            Command::new(&exe)
                .args(["--child", mode])
                .arg(&model_dir)
                .env("RAYON_NUM_THREADS", threads.to_string())
                .env("CANDLE_NUM_THREADS", "1"),
        )
        .expect("w2sg child failed")
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peers/finetune_torch.py");
    let py = python();
    let peer = |mode: &str| {
        py.as_ref().and_then(|py| {
            run_json(
                Command::new(py)
                    .arg(&script)
                    .arg(mode)
                    .arg(&model_dir)
                    .args([
                        threads.to_string(),
                        BATCH.to_string(),
                        SEQ.to_string(),
                        STEPS.to_string(),
                        WARMUP.to_string(),
                    ]),
            )
        })
    };
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let tokens = (BATCH * SEQ) as f64;

    // On a shared machine the load changes between runs: each mode runs `BENCH_ROUNDS` times,
    // alternating with its peer, and each side's median run is shown.
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let median = |mut runs: Vec<serde_json::Value>| {
        runs.sort_by(|a, b| f(a, "seconds_per_step").total_cmp(&f(b, "seconds_per_step")));
        runs.get(runs.len() / 2).cloned()
    };
    let measure = |mode: &str, with_peer: bool| {
        let (mut o, mut p) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            o.push(ours(mode));
            if with_peer {
                // Like for like: our block recomputation against transformers' gradient
                // checkpointing, our whole graph against PyTorch's.
                p.extend(peer(match mode {
                    "lora" => "lora-ckpt",
                    "lora-graph" => "lora",
                    other => other,
                }));
            }
        }
        (median(o).expect("at least one round"), median(p))
    };
    println!("\nFine-tuning step, GPT-NeoX of Pythia-70m's shape (random weights, f32), batch {BATCH} × {SEQ} tokens, AdamW, {threads} thread(s), mean of {} steps after {WARMUP}, median of {rounds} run(s) per side\n", STEPS - WARMUP);
    let (infer, infer_peer) = measure("infer", true);
    let mut rows = vec![("inference (forward only)", infer.clone(), infer_peer)];
    let (full, full_peer) = measure("full", true);
    rows.push(("full fine-tuning", full, full_peer));
    let (lora, lora_peer) = measure("lora", true);
    rows.push((
        "LoRA r = 8, blocks recomputed (default; PyTorch: gradient checkpointing)",
        lora,
        lora_peer,
    ));
    let (graph, graph_peer) = measure("lora-graph", true);
    rows.push(("LoRA r = 8, whole graph kept", graph, graph_peer));
    println!("| mode | w2sg tokens/s | PyTorch tokens/s | ratio | w2sg peak RSS MiB | PyTorch peak RSS MiB | CPU steal s, w2sg / PyTorch |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, o, p) in &rows {
        let tp = p.as_ref().map(|p| tokens / f(p, "seconds_per_step"));
        println!(
            "| {name} | {:.0} | {} | {} | {:.0} | {} | {:.1} / {} |",
            tokens / f(o, "seconds_per_step"),
            tp.map_or("–".into(), |v| format!("{v:.0}")),
            tp.map_or("–".into(), |v| format!(
                "{:.2}×",
                tokens / f(o, "seconds_per_step") / v
            )),
            f(o, "peak_rss_kb") / 1024.0,
            p.as_ref().map_or("–".into(), |p| format!(
                "{:.0}",
                f(p, "peak_rss_kb") / 1024.0
            )),
            f(o, "steal_s"),
            p.as_ref()
                .map_or("–".into(), |p| format!("{:.1}", f(p, "steal_s"))),
        );
    }
    println!("\n(CPU steal: time the hypervisor ran other guests on these cores during the median run; near 0 on an unloaded host.)");
    for (name, o, _) in &rows[1..] {
        println!("{name}: first step loss {}", o["first_loss"]);
    }
    for (name, lora) in [("recomputed", &rows[2].1), ("whole graph", &rows[3].1)] {
        println!(
            "\nw2sg LoRA ({name}) peak memory / w2sg inference peak memory: {:.2}× ({:.0} / {:.0} MiB)",
            f(lora, "peak_rss_kb") / f(&infer, "peak_rss_kb"),
            f(lora, "peak_rss_kb") / 1024.0,
            f(&infer, "peak_rss_kb") / 1024.0
        );
    }
    if py.is_none() {
        println!(
            "(no Python with torch + transformers found: set W2SG_PYTHON to run the PyTorch peer)"
        );
    }
}

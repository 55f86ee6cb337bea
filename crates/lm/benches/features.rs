//! Feature-extraction throughput on a GPT-NeoX of Pythia-70m's shape (or, with
//! `BENCH_MODEL=smollm2-135m`, a Llama of SmolLM2-135M's shape), against HF transformers.
//!
//! `cargo bench -p w2sg-lm --bench features` writes a random-weight checkpoint of Pythia-70m's shape
//! (6 layers, hidden 512, 8 heads, MLP 2048, vocabulary 50304, rotary 0.25, parallel residual; f32
//! safetensors, 282 MB; for SmolLM2-135M see [`common::write_llama_model`]) and a JSONL of synthetic texts into cargo's bench scratch directory, then runs
//! the same extraction (tokenize with the fixtures' tokenizer.json, sort by length, batches of 16 padded
//! on the right, last layer, last-token pooling) in two child processes:
//! - this binary with `--child` (w2sg-lm on candle), and
//! - `benches/peers/features_hf.py` (HF `GPTNeoXModel` on PyTorch CPU, sdpa attention), if a Python
//!   with torch and transformers is found (`W2SG_PYTHON`, else `/work/venv-lm/bin/python`, else `python3`);
//!   `AutoModel` builds `GPTNeoXModel` or `LlamaModel` from the config.
//!
//! Both use the same thread count (`BENCH_THREADS`, default: all cores), report tokens/s after an
//! untimed warm-up batch, and their own peak resident memory (VmHWM / ru_maxrss, so the Python number
//! includes the interpreter and torch libraries). The features of both are compared as a sanity check
//! at full scale. Prints a Markdown table; no assertions on timing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;

use candle_core::{DType, Device};
use common::{cpu_seconds, peak_rss_kb, python, run_json, write_llama_model, write_model, Rng};
use w2sg_lm::features::{extract, FeatureOptions, Pooling};
use w2sg_lm::model::Model;

const BATCH: usize = 16;
const N_TEXTS: usize = 64;

/// Synthetic English-like texts of varied length (about 30 to 500 tokens with the fixtures' small BPE).
fn write_texts(path: &Path) {
    let words = [
        "the",
        "strong",
        "student",
        "weak",
        "supervisor",
        "labels",
        "pre-training",
        "generalization",
        "model",
        "checkpoint",
        "features",
        "layer",
        "token",
        "attention",
        "rotary",
        "hidden",
        "state",
        "of",
        "and",
        "a",
        "learns",
        "from",
        "beyond",
        "its",
        "teacher",
        "Pythia",
        "OLMo",
        "2048",
        "steps",
        "data,",
        "loss.",
    ];
    let mut rng = Rng(42);
    let mut f = std::fs::File::create(path).unwrap();
    for _ in 0..N_TEXTS {
        let n = 10 + (rng.next() % 150) as usize;
        let text: Vec<&str> = (0..n)
            .map(|_| words[(rng.next() % words.len() as u64) as usize])
            .collect();
        writeln!(f, "{}", serde_json::json!({ "text": text.join(" ") })).unwrap();
    }
}

/// The measured side: load, warm up, extract, save, print one JSON line.
fn child(model_dir: &Path, texts: &Path, out: &Path) {
    let t0 = Instant::now();
    let model = Model::load(model_dir, DType::F32, &Device::Cpu).unwrap();
    let tok = tokenizers::Tokenizer::from_file(model_dir.join("tokenizer.json")).unwrap();
    let load_seconds = t0.elapsed().as_secs_f64();
    let texts = w2sg_lm::features_job::read_texts(texts, "text").unwrap();
    let refs: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
    let max_batch_tokens = std::env::var("MAX_BATCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let opts = FeatureOptions {
        layer: -1,
        pooling: Pooling::LastToken,
        batch_size: BATCH,
        max_batch_tokens,
        max_tokens: None,
    };
    extract(&model, &tok, &refs[..BATCH], &opts, &mut |_| {}).unwrap(); // warm-up
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let f = extract(&model, &tok, &refs, &opts, &mut |_| {}).unwrap();
    let (seconds, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    w2sg_lm::output::write_npy_f32(out, &f.values).unwrap();
    let tokens: usize = f.lengths.iter().sum();
    println!(
        "{}",
        serde_json::json!({
            "tokens": tokens,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "load_seconds": load_seconds,
            "peak_rss_kb": peak_rss_kb()
        })
    );
}

fn read_npy_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn main() {
    // As the w2sg binary does (`BENCH_GLIBC_MALLOC=1`: glibc's defaults, to measure the difference).
    if std::env::var_os("BENCH_GLIBC_MALLOC").is_none() {
        w2sg_lm::host::tune_allocator();
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(
            Path::new(&args[i + 1]),
            Path::new(&args[i + 2]),
            Path::new(&args[i + 3]),
        );
        return;
    }
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lm-bench");
    let which = std::env::var("BENCH_MODEL").unwrap_or_else(|_| "pythia-70m".into());
    let (model_dir, title) = match which.as_str() {
        "pythia-70m" => (
            work.join("pythia-70m-shape-random"),
            "GPT-NeoX of Pythia-70m's shape",
        ),
        "smollm2-135m" => (
            work.join("smollm2-135m-shape-random"),
            "Llama of SmolLM2-135M's shape",
        ),
        other => panic!("BENCH_MODEL={other}: use pythia-70m or smollm2-135m"),
    };
    if !model_dir.join("model.safetensors").is_file() {
        eprintln!(
            "writing a random {title} checkpoint to {}",
            model_dir.display()
        );
        if which == "pythia-70m" {
            write_model(&model_dir);
        } else {
            write_llama_model(&model_dir);
        }
    }
    let texts = work.join("texts.jsonl");
    write_texts(&texts);
    let threads: usize = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    let ours_out = work.join("features-w2sg.npy");
    let exe = std::env::current_exe().unwrap();
    let ours = run_json(
        Command::new(&exe)
            .arg("--child")
            .arg(&model_dir)
            .arg(&texts)
            .arg(&ours_out)
            .env("RAYON_NUM_THREADS", threads.to_string()),
    )
    .expect("w2sg-lm child run failed");

    let peer_out = work.join("features-hf.npy");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peers/features_hf.py");
    let peer = python().and_then(|py| {
        run_json(
            Command::new(py)
                .arg(&script)
                .arg(&model_dir)
                .arg(&texts)
                .arg(threads.to_string())
                .arg(BATCH.to_string())
                .arg(&peer_out),
        )
    });

    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let tps = |v: &serde_json::Value| f(v, "tokens") / f(v, "seconds");
    println!("\nFeature extraction, {title} (random weights, f32), {} texts, {} tokens, batch {BATCH}, last layer, last-token pooling, {threads} thread(s)\n",
        N_TEXTS, f(&ours, "tokens"));
    println!(
        "| implementation | tokens/s | extraction s | CPU s (user+sys) | load s | peak RSS MiB | CPU steal s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, v: &serde_json::Value| {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} |",
            tps(v),
            f(v, "seconds"),
            f(v, "cpu_seconds"),
            f(v, "load_seconds"),
            f(v, "peak_rss_kb") / 1024.0,
            f(v, "steal_s")
        )
    };
    row("w2sg-lm (candle)", &ours);
    match &peer {
        Some(p) => {
            row(
                &format!(
                    "HF transformers {} on torch {} ({})",
                    p["transformers"].as_str().unwrap_or("?"),
                    p["torch"].as_str().unwrap_or("?"),
                    p["attn"].as_str().unwrap_or("?")
                ),
                p,
            );
            println!(
                "\nratio (w2sg-lm / PyTorch): throughput {:.2}× (CPU time {:.2}×), peak memory {:.2}× (PyTorch after `import torch, transformers`: {:.0} MiB)",
                tps(&ours) / tps(p),
                f(&ours, "cpu_seconds") / f(p, "cpu_seconds"),
                f(&ours, "peak_rss_kb") / f(p, "peak_rss_kb"),
                f(p, "import_rss_kb") / 1024.0
            );
            let a = read_npy_f32(&ours_out);
            let b = read_npy_f32(&peer_out);
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            println!("features agree: max |diff| / max |HF| = {:.2e}", err / scale);
        }
        None => println!("\n(no Python with torch + transformers found: set W2SG_PYTHON to run the PyTorch peer)"),
    }
}

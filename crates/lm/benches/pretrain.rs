//! Training throughput of the `tiny` preset: w2sg (candle autograd) against PyTorch on the CPU.
//!
//! `cargo bench -p w2sg-lm --bench pretrain` (threads: `BENCH_THREADS`, default all cores). Both sides
//! train the same model (the `tiny` preset's GPT-NeoX: 4 layers × 128, vocab 4096, context 128) from
//! the same initial weights on the same batch of 16 × 128 tokens, a full step each: forward,
//! cross-entropy, backward, global-norm clipping, AdamW. The Rust side runs in a child process with
//! `RAYON_NUM_THREADS` set, the peer (`benches/peers/pretrain_torch.py`: `GPTNeoXForCausalLM` +
//! `torch.optim.AdamW`) with `torch.set_num_threads`. Prints a Markdown table with the ratio; the
//! peer is skipped with a note when no Python with torch + transformers is found (`W2SG_PYTHON`,
//! else `/work/venv-lm/bin/python`, else `python3`).
//!
//! The child sets `CANDLE_NUM_THREADS=1` as `w2sg lm pretrain` does (see
//! `w2sg_lm::host::serial_candle_elementwise`). The peer inherits the environment, so on a loaded
//! machine `OMP_WAIT_POLICY=PASSIVE` keeps PyTorch's OpenMP threads from spin-waiting (see
//! BENCHMARKS.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;

use candle_core::{Device, Tensor};
use common::{python, run_json};
use w2sg_data::SplitMix64;
use w2sg_lm::optim::{AdamW, AdamWConfig};
use w2sg_lm::pretrain::checkpoints::save_weights;
use w2sg_lm::pretrain::model::TrainableGptNeoX;
use w2sg_lm::pretrain::PretrainConfig;

const WARMUP: usize = 2;
const STEPS: usize = 10;

fn child(dir: &Path) {
    // As `w2sg lm pretrain` does (see its doc).
    w2sg_lm::host::serial_candle_elementwise();
    let cfg = PretrainConfig::preset("tiny").unwrap();
    let model = TrainableGptNeoX::init(&cfg.gpt_neox_config().unwrap(), 0, &Device::Cpu).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg.hf_config_json()).unwrap(),
    )
    .unwrap();
    save_weights(&model, &dir.join("model.safetensors")).unwrap();
    let (b, t) = (cfg.batch_size, cfg.model.context);
    let mut rng = SplitMix64::new(7);
    let ids: Vec<u32> = (0..b * (t + 1))
        .map(|_| (rng.next() % cfg.vocab_size as u64) as u32)
        .collect();
    let bytes: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("batch.u32"), bytes).unwrap();
    let all = Tensor::from_vec(ids, (b, t + 1), &Device::Cpu).unwrap();
    let x = all.narrow(1, 0, t).unwrap().contiguous().unwrap();
    let y = all.narrow(1, 1, t).unwrap().contiguous().unwrap();
    let adam = AdamWConfig {
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
    };
    let mut opt = AdamW::new(adam, model.params()).unwrap();
    let mut losses = Vec::new();
    let mut step = |losses: &mut Vec<f32>| {
        let loss = model.loss(&x, &y).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        let grads = loss.backward().unwrap();
        let norm = AdamW::grad_norm(model.params(), &grads).unwrap();
        let scale = if norm > cfg.grad_clip {
            cfg.grad_clip / (norm + 1e-6)
        } else {
            1.0
        };
        opt.update(model.params(), &grads, 1e-3, scale).unwrap();
    };
    for _ in 0..WARMUP {
        step(&mut losses);
    }
    let t0 = Instant::now();
    for _ in 0..STEPS {
        step(&mut losses);
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "tokens_per_s": (STEPS * b * t) as f64 / secs,
            "seconds_per_step": secs / STEPS as f64,
            "parameters": model.num_parameters(),
            "losses": losses,
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
        child(Path::new(&args[i + 1]));
        return;
    }
    let threads: usize = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pretrain-bench");
    let exe = std::env::current_exe().unwrap();
    let ours = run_json(
        Command::new(&exe)
            .arg("--child")
            .arg(&work)
            .env("RAYON_NUM_THREADS", threads.to_string()),
    )
    .expect("w2sg child run failed");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peers/pretrain_torch.py");
    let peer = python().and_then(|py| {
        run_json(
            Command::new(py)
                .arg(&script)
                .arg(&work)
                .arg(threads.to_string())
                .arg(WARMUP.to_string())
                .arg(STEPS.to_string()),
        )
    });
    let f = |v: &serde_json::Value| v["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
    let steal = |v: &serde_json::Value| {
        v["steal_s"]
            .as_f64()
            .map_or("–".into(), |s| format!("{s:.1}"))
    };
    println!(
        "\nTraining step of the `tiny` preset ({} parameters; batch 16 × 128 tokens; forward, backward, \
         clip, AdamW; f32), {threads} thread(s), {STEPS} timed steps after {WARMUP} warm-up\n",
        ours["parameters"]
    );
    println!("| implementation | tokens/s | s/step | ratio to PyTorch | CPU steal s |");
    println!("|---|---:|---:|---:|---:|");
    let ratio = peer.as_ref().map(|p| f(&ours) / f(p));
    println!(
        "| w2sg (candle autograd) | {:.0} | {:.3} | {} | {} |",
        f(&ours),
        ours["seconds_per_step"].as_f64().unwrap_or(f64::NAN),
        ratio.map_or("–".into(), |r| format!("{r:.2}×")),
        steal(&ours)
    );
    match &peer {
        Some(p) => {
            println!(
                "| PyTorch {} + transformers (CPU) | {:.0} | {:.3} | 1.00× | {} |",
                p["torch"].as_str().unwrap_or("?"),
                f(p),
                p["seconds_per_step"].as_f64().unwrap_or(f64::NAN),
                steal(p)
            );
            println!(
                "\nfirst-step loss: w2sg {:.5}, PyTorch {:.5} (same weights and batch); last: {:.5} vs {:.5}",
                ours["losses"][0].as_f64().unwrap_or(f64::NAN),
                p["losses"][0].as_f64().unwrap_or(f64::NAN),
                ours["losses"].as_array().and_then(|a| a.last()).and_then(|v| v.as_f64()).unwrap_or(f64::NAN),
                p["losses"].as_array().and_then(|a| a.last()).and_then(|v| v.as_f64()).unwrap_or(f64::NAN),
            );
        }
        None => println!(
            "\n(no Python with torch + transformers found: set W2SG_PYTHON to run the PyTorch peer)"
        ),
    }
}

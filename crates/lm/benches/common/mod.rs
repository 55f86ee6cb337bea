//! What the lm benchmarks share: random-weight checkpoints of Pythia-70m's and SmolLM2-135M's shapes,
//! the Python peer's interpreter, and the measurements every child process reports.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use w2sg_lm::checkpoint::write_safetensors;

pub const LAYERS: usize = 6;
pub const HIDDEN: usize = 512;
pub const HEADS: usize = 8;
pub const VOCAB: usize = 50304;
pub const INTER: usize = 2048;

/// xorshift64*: deterministic weights and texts without a dependency.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform on [−a, a].
    pub fn uniform(&mut self, a: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }
}

/// Uniform ±0.035 weights (HF's init scale, std 0.02) from a seeded stream.
fn random_weights(seed: u64) -> impl FnMut(&[usize]) -> Tensor {
    let mut rng = Rng(seed);
    move |shape: &[usize]| {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.uniform(0.035)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
}

/// config.json, and the fixtures' tokenizer.
fn write_config_and_tokenizer(dir: &Path, config: &serde_json::Value) {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config).unwrap(),
    )
    .unwrap();
    let tok = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/neox-parallel-rot25/tokenizer.json");
    std::fs::copy(tok, dir.join("tokenizer.json")).unwrap();
}

fn ones(n: usize) -> Tensor {
    Tensor::ones(n, DType::F32, &Device::Cpu).unwrap()
}

pub fn write_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rand = random_weights(0x9E37_79B9_7F4A_7C15);
    let zeros = |n: usize| Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap();
    let mut t: BTreeMap<String, Tensor> = BTreeMap::new();
    t.insert("gpt_neox.embed_in.weight".into(), rand(&[VOCAB, HIDDEN]));
    t.insert("embed_out.weight".into(), rand(&[VOCAB, HIDDEN]));
    t.insert("gpt_neox.final_layer_norm.weight".into(), ones(HIDDEN));
    t.insert("gpt_neox.final_layer_norm.bias".into(), zeros(HIDDEN));
    for i in 0..LAYERS {
        let p = format!("gpt_neox.layers.{i}");
        for ln in ["input_layernorm", "post_attention_layernorm"] {
            t.insert(format!("{p}.{ln}.weight"), ones(HIDDEN));
            t.insert(format!("{p}.{ln}.bias"), zeros(HIDDEN));
        }
        for (name, out, inp) in [
            ("attention.query_key_value", 3 * HIDDEN, HIDDEN),
            ("attention.dense", HIDDEN, HIDDEN),
            ("mlp.dense_h_to_4h", INTER, HIDDEN),
            ("mlp.dense_4h_to_h", HIDDEN, INTER),
        ] {
            t.insert(format!("{p}.{name}.weight"), rand(&[out, inp]));
            t.insert(format!("{p}.{name}.bias"), rand(&[out]));
        }
    }
    let list: Vec<(&str, &Tensor)> = t.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&dir.join("model.safetensors"), &list, &meta).unwrap();
    // Pythia-70m's hub config.json, as published.
    let config = serde_json::json!({
        "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
        "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": INTER, "layer_norm_eps": 1e-5,
        "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS, "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": false,
        "torch_dtype": "float32", "use_cache": true, "use_parallel_residual": true, "vocab_size": VOCAB
    });
    write_config_and_tokenizer(dir, &config);
}

/// Writes a random-weight Llama checkpoint of SmolLM2-135M's shape (30 layers, hidden 576, 9 heads
/// with 3 KV heads, MLP 1536, vocabulary 49152, tied embeddings, rope base 100000; f32 safetensors,
/// 540 MB) with the fixtures' tokenizer into `dir`.
pub fn write_llama_model(dir: &Path) {
    const L: usize = 30;
    const H: usize = 576;
    const KV_DIM: usize = 3 * 64;
    const M: usize = 1536;
    const V: usize = 49152;
    std::fs::create_dir_all(dir).unwrap();
    let mut rand = random_weights(0x5EED_11A4_A135_0001);
    let mut t: BTreeMap<String, Tensor> = BTreeMap::new();
    t.insert("model.embed_tokens.weight".into(), rand(&[V, H]));
    t.insert("model.norm.weight".into(), ones(H));
    for i in 0..L {
        let p = format!("model.layers.{i}");
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            t.insert(format!("{p}.{norm}.weight"), ones(H));
        }
        for (name, out, inp) in [
            ("self_attn.q_proj", H, H),
            ("self_attn.k_proj", KV_DIM, H),
            ("self_attn.v_proj", KV_DIM, H),
            ("self_attn.o_proj", H, H),
            ("mlp.gate_proj", M, H),
            ("mlp.up_proj", M, H),
            ("mlp.down_proj", H, M),
        ] {
            t.insert(format!("{p}.{name}.weight"), rand(&[out, inp]));
        }
    }
    let list: Vec<(&str, &Tensor)> = t.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&dir.join("model.safetensors"), &list, &meta).unwrap();
    // SmolLM2-135M's hub config.json (the keys that shape the model).
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu",
        "hidden_size": H, "initializer_range": 0.041666666666666664, "intermediate_size": M,
        "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9,
        "num_hidden_layers": L, "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-5,
        "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true, "torch_dtype": "float32",
        "use_cache": true, "vocab_size": V
    });
    write_config_and_tokenizer(dir, &config);
}

/// User + system CPU seconds of this process so far (Linux; 0 elsewhere).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / 100.0
}

pub fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs a child process and returns the last JSON line it printed, with `steal_s` added: the CPU
/// time the hypervisor gave to other guests on this machine's cores while the child ran (from
/// `/proc/stat`; a measurement taken while it is not near 0 ran on a loaded host).
pub fn run_json(cmd: &mut Command) -> Option<serde_json::Value> {
    let steal0 = steal_seconds();
    let out = cmd.output().ok()?;
    let steal = steal_seconds().zip(steal0).map(|(b, a)| b - a);
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut v: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())?;
    if let (Some(obj), Some(s)) = (v.as_object_mut(), steal) {
        obj.insert("steal_s".into(), serde_json::json!(s));
    }
    Some(v)
}

/// Total CPU steal time of the machine so far, in seconds (`/proc/stat`'s `cpu` line, 8th value).
pub fn steal_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: f64 = stat
        .lines()
        .next()?
        .split_whitespace()
        .nth(8)?
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (hz > 0.0).then(|| ticks / hz)
}

pub fn python() -> Option<String> {
    let candidates = [
        std::env::var("W2SG_PYTHON").ok(),
        Some("/work/venv-lm/bin/python".into()),
        Some("python3".into()),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import torch, transformers, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

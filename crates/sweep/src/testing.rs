//! Test support: a micro GPT-NeoX family pre-trained in seconds on a synthetic corpus, a weaker micro
//! model, a synthetic task and a plan that ties them together, so sweep tests (and the kill tests of
//! the CLI) run end to end without network or shared data.
//!
//! The corpus mixes sentences about the sea and about the land; the task asks which of the two a
//! sentence is about, so features of a trained checkpoint carry the answer and those of step 0 less.

use std::path::{Path, PathBuf};

use w2sg_data::corpus::Document;
use w2sg_data::SplitMix64;
use w2sg_lm::pretrain::presets::PretrainConfig;
use w2sg_lm::pretrain::train::{pretrain, RunOptions};

const SEA: &[&str] = &[
    "whale", "sea", "ship", "captain", "ocean", "harpoon", "sail", "wave", "deck", "crew",
];
const LAND: &[&str] = &[
    "king", "nation", "law", "crown", "congress", "union", "state", "people", "court", "field",
];
const GLUE: &[&str] = &[
    "the", "and", "of", "to", "in", "a", "is", "that", "with", "for", "great", "white", "old",
];

/// The fixture's random stream (the same on every machine).
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.next()
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

/// A sentence about the sea (`sea = true`) or the land: mostly topic words, some glue, and a few
/// words of the other topic so that the task is not trivial.
fn sentence(rng: &mut Rng, sea: bool) -> String {
    let n = 4 + (rng.next() % 6) as usize;
    let words: Vec<&str> = (0..n)
        .map(|_| match rng.next() % 10 {
            0..=4 => rng.pick(if sea { SEA } else { LAND }),
            5 => rng.pick(if sea { LAND } else { SEA }),
            _ => rng.pick(GLUE),
        })
        .collect();
    words.join(" ")
}

fn corpus() -> Vec<Document> {
    let mut rng = Rng::new(7);
    (0..8)
        .map(|d| {
            let mut text = String::new();
            for _ in 0..40 {
                let sea = rng.next() % 2 == 0;
                for _ in 0..4 {
                    text.push_str(&sentence(&mut rng, sea));
                    text.push_str(". ");
                }
                text.push_str("\n\n");
            }
            Document {
                source: "synthetic".into(),
                name: format!("doc{d}"),
                text,
            }
        })
        .collect()
}

/// Writes the synthetic corpus as text files into `dir` (for configs that name a corpus path).
pub fn write_corpus(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("corpus directory");
    for d in corpus() {
        std::fs::write(dir.join(format!("{}.txt", d.name)), &d.text).expect("corpus file");
    }
    dir.to_path_buf()
}

/// The micro pre-training config text: `hidden` wide, `layers` deep, `steps` updates.
pub fn micro_config_text(hidden: usize, layers: usize, steps: u64, every: u64) -> String {
    format!(
        "preset = \"tiny\"\nvocab_size = 300\ntokenizer_train_bytes = 0\nvalidation_fraction = 0.1\n\
         steps = {steps}\nbatch_size = 4\nwarmup_steps = 2\nlr = 3e-3\ncheckpoint_every = {every}\n\
         eval_tokens = 128\nlog_every = 4\n[model]\nhidden_size = {hidden}\nnum_layers = {layers}\n\
         num_heads = {}\nintermediate_size = {}\ncontext = 32\nrotary_pct = 0.25\nrope_theta = 10000.0\n",
        hidden / 8,
        hidden * 2
    )
}

fn micro_config(hidden: usize, layers: usize, steps: u64, every: u64) -> PretrainConfig {
    PretrainConfig::from_toml_str(&micro_config_text(hidden, layers, steps, every))
        .expect("the micro config is valid")
}

/// Trains a micro family into `out` (checkpoints 0, 1, 2, 4, 8, 12, 16, 24 for the strong one).
pub fn train_family(out: &Path, strong: bool) {
    let config = if strong {
        micro_config(32, 2, 24, 4)
    } else {
        micro_config(16, 1, 8, 100)
    };
    let opts = RunOptions {
        documents: Some(corpus()),
        plot: false,
        ..RunOptions::default()
    };
    pretrain(&config, out, &opts).expect("micro pre-training runs");
}

/// Writes the synthetic task: `n` sentences, label 1 = about the sea.
pub fn write_task(path: &Path, n: usize) {
    let mut rng = Rng::new(99);
    let mut text = String::new();
    for _ in 0..n {
        let sea = rng.next() % 2 == 0;
        let line =
            serde_json::json!({ "txt": sentence(&mut rng, sea), "hard_label": u8::from(sea) });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).expect("task file written");
}

/// A ready fixture: families, task and plan under one directory.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub dir: PathBuf,
    pub plan: PathBuf,
    pub strong: PathBuf,
    pub weak: PathBuf,
    pub task: PathBuf,
}

/// The plan text of the fixture (relative paths: the plan sits in the fixture directory).
pub const PLAN: &str = r#"
name = "micro"
seeds = [0, 1]
losses = ["xent", "logconf"]

[[family]]
path = "strong"

[weak]
model = "weak@step8"

[[task]]
jsonl = "task.jsonl"

[features]
pooling = "mean"
batch_size = 16

[train]
epochs = 3

[pgr]
bootstrap = 200

[transition.sigmoid]
bootstrap = 20
"#;

/// Builds the fixture in `dir` (a few seconds).
pub fn fixture(dir: &Path) -> Fixture {
    std::fs::create_dir_all(dir).expect("fixture directory");
    let strong = dir.join("strong");
    let weak = dir.join("weak");
    train_family(&strong, true);
    train_family(&weak, false);
    let task = dir.join("task.jsonl");
    write_task(&task, 240);
    let plan = dir.join("plan.toml");
    std::fs::write(&plan, PLAN).expect("plan written");
    Fixture {
        dir: dir.to_path_buf(),
        plan,
        strong,
        weak,
        task,
    }
}

/// `w2sg sweep PLAN --out DIR` as the tests need it: open, run, and fail when units failed.
pub fn run_command(
    plan: &Path,
    out: &Path,
    opts: &crate::RunOptions,
) -> crate::Result<crate::RunReport> {
    let outcome = crate::Session::open(plan)?.run(out, opts)?;
    match outcome.failure(opts.policy.retry_failed) {
        Some(e) => Err(e),
        None => Ok(outcome.report),
    }
}

/// `w2sg sweep merge`.
pub fn merge_command(
    plan: &Path,
    out: &Path,
    shards: Vec<PathBuf>,
    allow_missing: bool,
) -> crate::Result<()> {
    crate::Session::open(plan)?
        .merge(out, shards, allow_missing)
        .map(|_| ())
}

/// `w2sg sweep report`.
pub fn report_command(plan: &Path, out: &Path) -> crate::Result<()> {
    crate::Session::open(plan)?.report(out).map(|_| ())
}

/// Lays out tiny random Llama checkpoints in a hub cache the way TinyLlama publishes a family: one
/// repository per checkpoint, `models--{org}--{name}` with `refs/main`, a snapshot whose
/// `model.safetensors` links into `blobs/` under its sha256, `config.json` and a copy of
/// `tokenizer` (its vocabulary is `vocab`). `checkpoints` are (repository name, weight seed): equal
/// seeds give identical weights, a duplicate. Returns the repository ids (`org/name`).
pub fn write_llama_repos(
    cache: &Path,
    org: &str,
    checkpoints: &[(&str, u64)],
    tokenizer: &Path,
    vocab: usize,
) -> Vec<String> {
    use candle_core::{Device, Tensor};
    use sha2::{Digest, Sha256};

    let (h, layers, heads, kv, hd, inter) = (16usize, 2usize, 4usize, 2usize, 4usize, 24usize);
    let config = serde_json::json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab,
        "hidden_size": h, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
        "rope_theta": 10000.0, "torch_dtype": "float32",
    });
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut ids = Vec::new();
    for &(name, seed) in checkpoints {
        let mut rng = SplitMix64::new(seed);
        let mut tensor = |shape: &[usize], std: f64, mean: f64| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| (mean + std * rng.next_normal()) as f32)
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
        };
        let mut named = vec![(
            "model.embed_tokens.weight".to_string(),
            tensor(&[vocab, h], 1.0, 0.0),
        )];
        for i in 0..layers {
            let p = format!("model.layers.{i}");
            for (n, rows, cols) in [
                ("self_attn.q_proj", heads * hd, h),
                ("self_attn.k_proj", kv * hd, h),
                ("self_attn.v_proj", kv * hd, h),
                ("self_attn.o_proj", h, heads * hd),
                ("mlp.gate_proj", inter, h),
                ("mlp.up_proj", inter, h),
                ("mlp.down_proj", h, inter),
            ] {
                named.push((format!("{p}.{n}.weight"), tensor(&[rows, cols], 0.2, 0.0)));
            }
            for n in ["input_layernorm", "post_attention_layernorm"] {
                named.push((format!("{p}.{n}.weight"), tensor(&[h], 0.1, 1.0)));
            }
        }
        named.push(("model.norm.weight".to_string(), tensor(&[h], 0.1, 1.0)));

        let repo = cache.join(format!("models--{org}--{name}"));
        let blobs = repo.join("blobs");
        std::fs::create_dir_all(&blobs).expect("blobs directory");
        let staged = blobs.join("staged.safetensors");
        let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut meta = std::collections::BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        w2sg_lm::checkpoint::write_safetensors(&staged, &refs, &meta).expect("weights written");
        let sha = hex(&Sha256::digest(
            std::fs::read(&staged).expect("weights read"),
        ));
        std::fs::rename(&staged, blobs.join(&sha)).expect("blob named");
        let commit = hex(&Sha256::digest(format!("{name}{sha}").as_bytes()))[..40].to_string();
        let snapshot = repo.join("snapshots").join(&commit);
        std::fs::create_dir_all(&snapshot).expect("snapshot directory");
        std::fs::create_dir_all(repo.join("refs")).expect("refs directory");
        std::fs::write(repo.join("refs/main"), &commit).expect("ref written");
        #[cfg(unix)]
        std::os::unix::fs::symlink(
            format!("../../blobs/{sha}"),
            snapshot.join("model.safetensors"),
        )
        .expect("weights linked");
        #[cfg(not(unix))]
        std::fs::copy(blobs.join(&sha), snapshot.join("model.safetensors")).expect("weights");
        std::fs::write(snapshot.join("config.json"), config.to_string()).expect("config");
        std::fs::copy(tokenizer, snapshot.join("tokenizer.json")).expect("tokenizer");
        ids.push(format!("{org}/{name}"));
    }
    ids
}

//! Hostile inputs to `w2sg lm features` and `w2sg lm pretrain`: corrupt or inconsistent checkpoints,
//! configs that cannot run, and second writers. Each is refused with README's exit code and a message
//! naming the file or key, and nothing already written is lost.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn w2sg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_w2sg"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2sg-hostile-lm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A copy of the tiny GPT-NeoX fixture (2 layers, f32) that a test may damage.
fn checkpoint(dir: &Path) -> PathBuf {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../lm/tests/fixtures/neox-parallel-rot25");
    let ck = dir.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), ck.join(f)).unwrap();
    }
    ck
}

/// The header and data section of a safetensors file.
fn read_st(path: &Path) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), bytes[8 + n..].to_vec())
}

fn write_st(path: &Path, header: &serde_json::Map<String, Value>, data: &[u8]) {
    let text = serde_json::to_string(header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

fn offsets(header: &serde_json::Map<String, Value>, name: &str) -> (usize, usize) {
    let o = header[name]["data_offsets"].as_array().unwrap();
    (
        o[0].as_u64().unwrap() as usize,
        o[1].as_u64().unwrap() as usize,
    )
}

fn features(ck: &Path, data: &Path, out: &Path) -> Output {
    w2sg()
        .args(["lm", "features", "--model"])
        .arg(ck)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn task(dir: &Path) -> PathBuf {
    let data = dir.join("task.jsonl");
    std::fs::write(
        &data,
        "{\"txt\": \"hello world\"}\n{\"txt\": \"the quick brown fox\"}\n",
    )
    .unwrap();
    data
}

fn refused(o: &Output, code: i32, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{e}");
    for n in needles {
        assert!(e.contains(n), "message should contain `{n}`: {e}");
    }
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn nan_weights_are_refused_and_an_older_output_survives() {
    let dir = scratch("nan");
    let ck = checkpoint(&dir);
    let data = task(&dir);
    let out = dir.join("f.npy");
    let good = features(&ck, &data, &out);
    assert!(good.status.success(), "{}", stderr(&good));
    let before = std::fs::read(&out).unwrap();
    let sidecar = std::fs::read(dir.join("f.npy.json")).unwrap();

    let st = ck.join("model.safetensors");
    let (header, mut bytes) = read_st(&st);
    let (a, b) = offsets(&header, "gpt_neox.final_layer_norm.weight");
    for chunk in bytes[a..b].chunks_mut(4) {
        chunk.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    write_st(&st, &header, &bytes);
    let bad = features(&ck, &data, &out);
    refused(&bad, 2, &["NaN", "task.jsonl:1"]);
    assert_eq!(std::fs::read(&out).unwrap(), before, "old features intact");
    assert_eq!(
        std::fs::read(dir.join("f.npy.json")).unwrap(),
        sidecar,
        "old sidecar intact"
    );
    let fresh = dir.join("g.safetensors");
    refused(&features(&ck, &data, &fresh), 2, &["NaN"]);
    assert!(!fresh.exists(), "nothing written for NaN features");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-") || n.ends_with("w2sg-lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn aliased_tensors_and_wrapping_shapes_are_refused_naming_the_tensors() {
    let dir = scratch("alias");
    let ck = checkpoint(&dir);
    let data = task(&dir);
    let st = ck.join("model.safetensors");
    let (original, bytes) = read_st(&st);

    let mut header = original.clone();
    let w = "gpt_neox.layers.0.input_layernorm.weight";
    let b = "gpt_neox.layers.0.input_layernorm.bias";
    header[b]["data_offsets"] = header[w]["data_offsets"].clone();
    write_st(&st, &header, &bytes);
    refused(
        &features(&ck, &data, &dir.join("a.npy")),
        2,
        &["model.safetensors", w, b, "overlap"],
    );

    let mut header = original.clone();
    header[w]["shape"] = serde_json::json!([1u64 << 32, 1u64 << 32, 1u64 << 32]);
    write_st(&st, &header, &bytes);
    refused(
        &features(&ck, &data, &dir.join("b.npy")),
        2,
        &["model.safetensors", w, "more elements than fit"],
    );
    assert!(!dir.join("a.npy").exists() && !dir.join("b.npy").exists());
}

#[test]
fn a_config_with_fewer_layers_than_the_weights_is_refused() {
    let dir = scratch("layers");
    let ck = checkpoint(&dir);
    let data = task(&dir);
    let cfg = ck.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1"),
    )
    .unwrap();
    refused(
        &features(&ck, &data, &dir.join("f.npy")),
        2,
        &["config.json", "num_hidden_layers", "gpt_neox.layers.1."],
    );
}

#[test]
fn a_second_features_writer_is_refused() {
    let dir = scratch("lock");
    let ck = checkpoint(&dir);
    let data = task(&dir);
    // A lock held by a live process (this test).
    std::fs::write(dir.join(".f.npy.w2sg-lock"), std::process::id().to_string()).unwrap();
    let o = features(&ck, &data, &dir.join("f.npy"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("another w2sg process"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("f.npy").exists());
}

const MICRO: &str = "preset = \"tiny\"\nvocab_size = 300\ntokenizer_train_bytes = 0\n\
    validation_fraction = 0.1\nsteps = 2\nbatch_size = 2\nwarmup_steps = 1\ncheckpoint_every = 100\n\
    eval_tokens = 64\nlog_every = 1\n[model]\nhidden_size = 32\nnum_layers = 1\nnum_heads = 4\n\
    intermediate_size = 64\ncontext = 16\nrope_theta = 10000.0\n";

fn corpus(dir: &Path) -> PathBuf {
    let c = dir.join("corpus.txt");
    let para = "The whale swam past the ship while the crew watched from the deck. ";
    let text: String = (0..60)
        .map(|i| format!("{} {i}\n\n", para.repeat(3)))
        .collect();
    std::fs::write(&c, text).unwrap();
    c
}

fn pretrain(config: &Path, corpus: &Path, out: &Path) -> Output {
    w2sg()
        .args(["lm", "pretrain", "--config"])
        .arg(config)
        .arg("--corpus")
        .arg(corpus)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn a_rejected_pretrain_config_does_not_block_the_corrected_one() {
    let dir = scratch("rotary");
    let corpus = corpus(&dir);
    let out = dir.join("run");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, format!("{MICRO}rotary_pct = 0.0\n")).unwrap();
    refused(&pretrain(&bad, &corpus, &out), 2, &["model.rotary_pct"]);
    assert!(
        !out.join("pretrain_config.json").exists(),
        "nothing written for a rejected config"
    );
    let good = dir.join("good.toml");
    std::fs::write(&good, format!("{MICRO}rotary_pct = 0.25\n")).unwrap();
    let o = pretrain(&good, &corpus, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("step2").join("model.safetensors").is_file());
}

#[test]
fn a_started_but_unfinished_pretrain_dir_takes_a_new_config() {
    let dir = scratch("unfinished");
    let corpus = corpus(&dir);
    let out = dir.join("run");
    let first = dir.join("first.toml");
    std::fs::write(&first, format!("{MICRO}rotary_pct = 0.25\n")).unwrap();
    // Killed while writing its first checkpoint (step 0): the config and data are written, no step is.
    let o = w2sg()
        .args(["lm", "pretrain", "--config"])
        .arg(&first)
        .arg("--corpus")
        .arg(&corpus)
        .arg("--out")
        .arg(&out)
        .env("W2SG_TEST_ABORT_AT", "checkpoint-write:0")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(out.join("pretrain_config.json").is_file(), "{}", stderr(&o));
    let second = dir.join("second.toml");
    std::fs::write(&second, format!("{MICRO}rotary_pct = 0.5\n")).unwrap();
    let o = pretrain(&second, &corpus, &out);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn an_oversized_model_is_refused_up_front_naming_the_key() {
    let dir = scratch("huge");
    let corpus = corpus(&dir);
    let cfg = dir.join("huge.toml");
    std::fs::write(
        &cfg,
        format!("{MICRO}rotary_pct = 0.25\n").replace("hidden_size = 32", "hidden_size = 1000000"),
    )
    .unwrap();
    let out = dir.join("run");
    refused(
        &pretrain(&cfg, &corpus, &out),
        2,
        &["model.hidden_size", "GB"],
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn a_second_pretrain_on_one_out_is_refused() {
    let dir = scratch("pretrain-lock");
    let corpus = corpus(&dir);
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, format!("{MICRO}rotary_pct = 0.25\n")).unwrap();
    let out = dir.join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(".w2sg-lock"), std::process::id().to_string()).unwrap();
    refused(&pretrain(&cfg, &corpus, &out), 2, &["another w2sg process"]);
    assert!(!out.join("loss.csv").exists());
}

//! `w2sg lm pretrain` killed for real (a child process that dies mid-run) and resumed must end with
//! exactly the files of an uninterrupted run: same weights, same optimizer state, same family.json
//! and loss.csv, byte for byte.
//!
//! Interruptions: SIGKILLs sent by this test at racy points (as soon as `step2/`, `step8/` appear),
//! and the deterministic test-only fault-injection hook `W2SG_TEST_ABORT_AT` (see
//! `crates/lm/src/pretrain/train.rs`), which makes the child `abort()` between an update and its
//! checkpoint, with a checkpoint fully staged under `.partial/` but not yet renamed into place, and
//! with a checkpoint published but the manifest and the loss log not yet updated (resume rebuilds both
//! from the checkpoint's trainer_state.json).
//!
//! Tiny model (2 × 32), 24 steps: checkpoints at 0, 1, 2, 4, 8, 16, 24; loss rows every 3 steps.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const STEPS: u64 = 24;

const WORDS: &[&str] = &[
    "the", "whale", "king", "nation", "sea", "ship", "people", "law", "crown", "war", "peace",
    "congress", "captain", "ocean", "thou", "art", "shall", "union", "state", "great", "white",
    "and", "of", "to", "in", "a", "is", "that", "with", "for",
];

/// The SplitMix64 generator (as in crates/lm), so the corpus is fixed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A directory of 8 `.txt` files of deterministic pseudo-English paragraphs.
fn write_corpus(dir: &Path) -> PathBuf {
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let mut rng = SplitMix64(42);
    for d in 0..8 {
        let mut text = String::new();
        for _ in 0..30 {
            for _ in 0..4 {
                let n = 5 + (rng.next_u64() % 8) as usize;
                let words: Vec<&str> = (0..n)
                    .map(|_| WORDS[(rng.next_u64() % WORDS.len() as u64) as usize])
                    .collect();
                text.push_str(&words.join(" "));
                text.push_str(". ");
            }
            text.push_str("\n\n");
        }
        std::fs::write(corpus.join(format!("doc{d}.txt")), text).unwrap();
    }
    corpus
}

/// The micro config of crates/lm/tests/pretrain.rs, with 24 steps.
fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("micro.toml");
    std::fs::write(
        &path,
        format!(
            "preset = \"tiny\"\n\
             vocab_size = 300\n\
             tokenizer_train_bytes = 0\n\
             validation_fraction = 0.1\n\
             steps = {STEPS}\n\
             batch_size = 4\n\
             warmup_steps = 2\n\
             lr = 3e-3\n\
             checkpoint_every = 100\n\
             eval_tokens = 128\n\
             log_every = 3\n\
             [model]\n\
             hidden_size = 32\n\
             num_layers = 2\n\
             num_heads = 4\n\
             intermediate_size = 64\n\
             context = 16\n\
             rotary_pct = 0.25\n\
             rope_theta = 10000.0\n"
        ),
    )
    .unwrap();
    path
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2sg-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Run {
    config: PathBuf,
    corpus: PathBuf,
}

impl Run {
    fn command(&self, out: &Path, abort_at: Option<&str>) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_w2sg"));
        c.args(["lm", "pretrain", "--config"])
            .arg(&self.config)
            .arg("--corpus")
            .arg(&self.corpus)
            .arg("--out")
            .arg(out)
            .env_remove("W2SG_TEST_ABORT_AT");
        if let Some(a) = abort_at {
            c.env("W2SG_TEST_ABORT_AT", a);
        }
        c
    }

    fn run(&self, out: &Path, abort_at: Option<&str>) -> Output {
        self.command(out, abort_at).output().unwrap()
    }

    fn complete(&self, out: &Path) -> String {
        let o = self.run(out, None);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            o.status.success(),
            "run in {} failed: {stderr}",
            out.display()
        );
        stderr
    }

    /// Runs with the fault-injection hook; the child must die by the signal of `abort()`.
    fn aborted(&self, out: &Path, at: &str) {
        let o = self.run(out, Some(at));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.code().is_none() && stderr.contains(&format!("aborting at {at}")),
            "expected an abort at {at}, got {:?}: {stderr}",
            o.status
        );
    }

    /// Starts a child and SIGKILLs it as soon as `out/<marker>` exists.
    fn killed_when(&self, out: &Path, marker: &str) {
        let mut child = self
            .command(out, None)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !out.join(marker).exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("child exited ({status}) before {marker} appeared");
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no {marker}");
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        // Killed (no exit code) unless it raced to the end, which the final check also covers.
        assert!(status.code().is_none() || status.success(), "{status}");
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn resumed_from(stderr: &str) -> Option<u64> {
    let rest = stderr.split("resumed from step ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A scratch directory with the corpus, the config and a complete uninterrupted run in `A`.
fn setup(name: &str) -> (PathBuf, Run, PathBuf, PathBuf) {
    let dir = scratch(name);
    let run = Run {
        config: write_config(&dir),
        corpus: write_corpus(&dir),
    };
    let (a, b) = (dir.join("A"), dir.join("B"));
    run.complete(&a);
    (dir, run, a, b)
}

/// Every checkpoint's weights, the final optimizer and trainer state: byte for byte; only the
/// latest checkpoint keeps its optimizer state.
fn assert_same_checkpoints(a: &Path, b: &Path) {
    for s in [0, 1, 2, 4, 8, 16, STEPS] {
        let d = format!("step{s}");
        assert!(
            read(&a.join(&d).join("model.safetensors"))
                == read(&b.join(&d).join("model.safetensors")),
            "{d}/model.safetensors differs"
        );
        let has_opt = b.join(&d).join("optimizer.safetensors").exists();
        assert_eq!(has_opt, s == STEPS, "{d}/optimizer.safetensors");
    }
    let last = format!("step{STEPS}");
    for f in ["optimizer.safetensors", "trainer_state.json", "config.json"] {
        let (x, y) = (a.join(&last).join(f), b.join(&last).join(f));
        assert!(read(&x) == read(&y), "{last}/{f} differs between A and B");
    }
}

/// family.json (every checkpoint's step, tokens, validation loss and sha256) and loss.csv.
fn assert_same_manifest_and_log(a: &Path, b: &Path) {
    let ma: serde_json::Value = serde_json::from_slice(&read(&a.join("family.json"))).unwrap();
    let mb: serde_json::Value = serde_json::from_slice(&read(&b.join("family.json"))).unwrap();
    let steps: Vec<u64> = ma["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![0, 1, 2, 4, 8, 16, STEPS]);
    assert_eq!(ma["checkpoints"], mb["checkpoints"], "family.json differs");
    assert_eq!(ma, mb, "family.json differs");
    assert_eq!(
        String::from_utf8(read(&a.join("loss.csv"))).unwrap(),
        String::from_utf8(read(&b.join("loss.csv"))).unwrap(),
        "loss.csv differs"
    );
}

/// Two real SIGKILLs at racy points (as soon as `step2/`, then `step8/`, appear), resuming in
/// between.
#[test]
fn sigkilled_child_resumes_to_the_weights_of_an_uninterrupted_run() {
    let (dir, run, a, b) = setup("pretrain-sigkill");
    run.killed_when(&b, "step2");
    run.killed_when(&b, "step8");
    run.complete(&b);
    assert_same_checkpoints(&a, &b);
    assert_same_manifest_and_log(&a, &b);
    let manifest = |d: &Path| -> serde_json::Value {
        serde_json::from_slice(&read(&d.join("family.json"))).unwrap()
    };
    assert_eq!(manifest(&a), manifest(&b), "family.json differs");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Deterministic kills (the fault-injection hook), resuming in between: after update 11, then
/// with checkpoint 16 fully staged under `.partial/` but not renamed into place. Everything,
/// loss.csv included, ends byte-identical.
#[test]
fn aborted_child_resumes_to_the_files_of_an_uninterrupted_run() {
    let (dir, run, a, b) = setup("pretrain-abort");
    // Killed after update 11: steps 9–11 and their loss rows are lost; resume from step 8.
    run.aborted(&b, "step:11");
    assert!(b.join("step8/optimizer.safetensors").is_file() && !b.join("step16").exists());
    // Killed while writing checkpoint 16: every file staged, not yet renamed into place.
    run.aborted(&b, "checkpoint-write:16");
    assert!(b.join(".partial/step16/model.safetensors").is_file());
    assert!(b.join(".partial/step16/trainer_state.json").is_file());
    assert!(!b.join("step16").exists());
    let stderr = run.complete(&b);
    assert_eq!(resumed_from(&stderr), Some(8), "{stderr}");
    assert_same_checkpoints(&a, &b);
    assert_same_manifest_and_log(&a, &b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills right after a checkpoint is renamed into place (older optimizer states already removed)
/// but before family.json and loss.csv are updated: once for checkpoint 16, once for the last one.
fn killed_after_publishing(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (dir, run, a, b) = setup(name);
    run.aborted(&b, "checkpoint-published:16");
    assert!(b.join("step16/optimizer.safetensors").is_file());
    assert!(!b.join("step8/optimizer.safetensors").exists());
    run.aborted(&b, &format!("checkpoint-published:{STEPS}"));
    assert!(b
        .join(format!("step{STEPS}/optimizer.safetensors"))
        .is_file());
    let stderr = run.complete(&b);
    assert_eq!(resumed_from(&stderr), Some(STEPS), "{stderr}");
    (dir, a, b)
}

#[test]
fn killed_after_publishing_a_checkpoint_keeps_the_weights() {
    let (dir, a, b) = killed_after_publishing("pretrain-kill-published");
    assert_same_checkpoints(&a, &b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A kill between publishing checkpoint N and updating family.json / loss.csv: resume must restore
/// row N of loss.csv and, when N is the last step, rewrite family.json.
#[test]
fn killed_after_publishing_a_checkpoint_keeps_manifest_and_log() {
    let (dir, a, b) = killed_after_publishing("pretrain-kill-published-log");
    assert_same_manifest_and_log(&a, &b);
    let _ = std::fs::remove_dir_all(&dir);
}

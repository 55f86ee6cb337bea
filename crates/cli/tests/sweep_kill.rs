//! `w2sg sweep` killed for real and resumed must end with exactly the results of an uninterrupted
//! run: the same units in the store (compared by `Store::digest`, which leaves out timings) and the
//! same results.csv, byte for byte.
//!
//! Interruptions: the test-only hook `W2SG_TEST_ABORT_AT` (crates/sweep/src/engine.rs, `fault`) makes
//! the child `abort()` during a feature extraction, after a student is trained but before its result
//! is stored, and inside the store's write transaction before `COMMIT`; and a real SIGKILL sent once
//! the database holds some finished units. The reference runs with 2 threads and every resume with 1,
//! so the comparison also checks that results do not depend on the thread count.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use w2sg_protocol::Store;
use w2sg_sweep::testing::{fixture, Fixture};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2sg-sweep-kill-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sweep(f: &Fixture, out: &Path, threads: usize, abort_at: Option<&str>) -> Command {
    sweep_plan(&f.plan, out, threads, abort_at)
}

fn sweep_plan(plan: &Path, out: &Path, threads: usize, abort_at: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_w2sg"));
    c.arg("sweep")
        .arg(plan)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env_remove("W2SG_TEST_ABORT_AT");
    if let Some(a) = abort_at {
        c.env("W2SG_TEST_ABORT_AT", a);
    }
    c
}

fn ok(o: Output) {
    assert!(
        o.status.success(),
        "sweep failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

struct Finished {
    digest: String,
    results: Vec<u8>,
    units: usize,
}

fn finished(out: &Path) -> Finished {
    let store = Store::open(out.join("results.sqlite")).unwrap();
    Finished {
        digest: store.digest().unwrap(),
        results: std::fs::read(out.join("results.csv")).unwrap(),
        units: store.counts().unwrap().0,
    }
}

fn done_units(db: &Path) -> usize {
    Store::open(db)
        .ok()
        .and_then(|s| s.counts().ok())
        .map_or(0, |c| c.0)
}

#[test]
fn a_killed_sweep_resumes_to_the_uninterrupted_result() {
    let f = fixture(&scratch("fixture"));
    let reference_dir = scratch("reference");
    ok(sweep(&f, &reference_dir, 2, None).output().unwrap());
    let reference = finished(&reference_dir);
    assert_eq!(reference.units, 9 * 7 + 3);

    for point in [
        "sweep-features:1",
        "sweep-features:4",
        "sweep-train:5",
        "sweep-commit:1",
        "sweep-commit:20",
    ] {
        let out = scratch(&point.replace(':', "-"));
        let o = sweep(&f, &out, 2, Some(point)).output().unwrap();
        assert!(
            !o.status.success(),
            "{point}: the child should have aborted"
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("aborting at"),
            "{point}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let before = done_units(&out.join("results.sqlite"));
        assert!(
            before < reference.units,
            "{point}: {before} units before the abort"
        );
        ok(sweep(&f, &out, 1, None).output().unwrap());
        let resumed = finished(&out);
        assert_eq!(resumed.digest, reference.digest, "{point}");
        assert_eq!(resumed.results, reference.results, "{point}");
    }

    // A real SIGKILL once some units are committed (wherever the child is at that moment).
    let out = scratch("sigkill");
    let db = out.join("results.sqlite");
    let mut child = sweep(&f, &out, 2, None).spawn().unwrap();
    let start = Instant::now();
    loop {
        if done_units(&db) >= 10 || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    ok(sweep(&f, &out, 1, None).output().unwrap());
    let resumed = finished(&out);
    assert_eq!(resumed.digest, reference.digest);
    assert_eq!(resumed.results, reference.results);
}

/// A sweep with fine-tuned students (full fine-tuning of the micro family at three checkpoints),
/// aborted in the middle of a fine-tuning run and SIGKILLed, resumes to the uninterrupted result with
/// one thread instead of two.
#[test]
fn a_killed_fine_tuning_sweep_resumes_to_the_uninterrupted_result() {
    let f = fixture(&scratch("ft-fixture"));
    let text = std::fs::read_to_string(&f.plan).unwrap().replace("[train]\n", "[train]\nmode = \"finetune\"\n")
        + "\n[finetune]\nepochs = 2\nlr = 1e-3\nbatch_size = 8\nmax_tokens = 32\nrevisions = [\"step0\", \"step8\", \"step24\"]\n";
    let plan = f.dir.join("plan-ft.toml");
    std::fs::write(&plan, text).unwrap();
    let reference_dir = scratch("ft-reference");
    ok(sweep_plan(&plan, &reference_dir, 2, None).output().unwrap());
    let reference = finished(&reference_dir);
    // Weak features + 2 weak labels, then 3 checkpoints × 2 seeds × 3 students.
    assert_eq!(reference.units, 3 + 3 * 2 * 3);
    for point in ["sweep-finetune-step:3", "sweep-finetune-step:40"] {
        let out = scratch(&format!("ft-{}", point.replace(':', "-")));
        let o = sweep_plan(&plan, &out, 2, Some(point)).output().unwrap();
        assert!(
            !o.status.success(),
            "{point}: the child should have aborted"
        );
        assert!(
            done_units(&out.join("results.sqlite")) < reference.units,
            "{point}"
        );
        ok(sweep_plan(&plan, &out, 1, None).output().unwrap());
        let resumed = finished(&out);
        assert_eq!(resumed.digest, reference.digest, "{point}");
        assert_eq!(resumed.results, reference.results, "{point}");
    }
    let out = scratch("ft-sigkill");
    let db = out.join("results.sqlite");
    let mut child = sweep_plan(&plan, &out, 2, None).spawn().unwrap();
    let start = Instant::now();
    while done_units(&db) < 6
        && start.elapsed() < Duration::from_secs(60)
        && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    ok(sweep_plan(&plan, &out, 1, None).output().unwrap());
    let resumed = finished(&out);
    assert_eq!(resumed.digest, reference.digest);
    assert_eq!(resumed.results, reference.results);
}

/// A sweep whose weak supervisor is the fine-tuned weak model, aborted inside its fine-tuning and
/// just before its first unit commits, resumes to the uninterrupted result (one thread instead of two).
#[test]
fn a_killed_sweep_with_a_fine_tuned_weak_supervisor_resumes_to_the_uninterrupted_result() {
    let f = fixture(&scratch("weak-ft-fixture"));
    let text = std::fs::read_to_string(&f.plan)
        .unwrap()
        .replace(
            "path = \"strong\"",
            "path = \"strong\"\nrevisions = [\"step24\"]",
        )
        .replace(
            "model = \"weak@step8\"",
            "model = \"weak@step8\"\ntrain = \"finetune\"",
        )
        + "\n[finetune]\nepochs = 2\nlr = 1e-3\nbatch_size = 8\nmax_tokens = 32\n";
    let plan = f.dir.join("plan-weak-ft.toml");
    std::fs::write(&plan, text).unwrap();
    let reference_dir = scratch("weak-ft-reference");
    ok(sweep_plan(&plan, &reference_dir, 2, None).output().unwrap());
    let reference = finished(&reference_dir);
    // 2 weak labels (no weak features), then 1 checkpoint: features, 2 seeds × 3 students.
    assert_eq!(reference.units, 2 + 1 + 2 * 3);
    // The first fine-tuning run is the weak model's (seed 0), and so is the first commit.
    for point in ["sweep-finetune-step:3", "sweep-commit:1", "sweep-commit:2"] {
        let out = scratch(&format!("weak-ft-{}", point.replace(':', "-")));
        let o = sweep_plan(&plan, &out, 2, Some(point)).output().unwrap();
        assert!(
            !o.status.success(),
            "{point}: the child should have aborted"
        );
        assert!(done_units(&out.join("results.sqlite")) < 2, "{point}");
        ok(sweep_plan(&plan, &out, 1, None).output().unwrap());
        let resumed = finished(&out);
        assert_eq!(resumed.digest, reference.digest, "{point}");
        assert_eq!(resumed.results, reference.results, "{point}");
    }
    // An unknown `[weak] train` is bad input: exit 2, naming the key, before anything runs.
    let bad = f.dir.join("plan-weak-bad.toml");
    let text = std::fs::read_to_string(&plan).unwrap();
    std::fs::write(
        &bad,
        text.replace("train = \"finetune\"", "train = \"lora\""),
    )
    .unwrap();
    let out = scratch("weak-ft-bad");
    let o = sweep_plan(&bad, &out, 1, None).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("weak.train") && stderr.contains("\"lora\""),
        "{stderr}"
    );
    assert!(!out.join("results.sqlite").exists());
}

/// A fine-tuning unit killed in its second epoch resumes from its epoch checkpoint, not from its
/// start, and the sweep ends with the uninterrupted results.csv. One checkpoint (step24), seed 0:
/// the ceiling, xent and logconf students, 2 epochs of 3 steps each (96 training examples in
/// batches of 32), a checkpoint after every epoch but the last (`checkpoint_after_s = 0`). The abort
/// at the 17th fine-tuning step is the second step of the logconf student's second epoch (so its
/// running-quantile window must be restored too). The rerun is armed to abort at its 4th step: it
/// finishes only if the unit ran its second epoch alone (3 steps), not both (6).
#[test]
fn a_fine_tuning_unit_resumes_from_its_epoch_checkpoint() {
    let f = fixture(&scratch("ep-fixture"));
    let text = std::fs::read_to_string(&f.plan).unwrap().replace("[train]\n", "[train]\nmode = \"finetune\"\n")
        + "\n[finetune]\nepochs = 2\nlr = 1e-3\nbatch_size = 32\nmax_tokens = 32\nrevisions = [\"step24\"]\nseeds = [0]\ncheckpoint_after_s = 0\n";
    let plan = f.dir.join("plan-ep.toml");
    std::fs::write(&plan, text).unwrap();
    let reference_dir = scratch("ep-reference");
    ok(sweep_plan(&plan, &reference_dir, 2, None).output().unwrap());
    let reference = finished(&reference_dir);
    let partial_root = |out: &Path| out.join(".w2sg-partial");
    assert!(
        !partial_root(&reference_dir).exists(),
        "epoch checkpoints are removed once their units are stored"
    );

    let out = scratch("ep-killed");
    let o = sweep_plan(&plan, &out, 2, Some("sweep-finetune-step:17"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "the child should have aborted");
    assert_eq!(done_units(&out.join("results.sqlite")), reference.units - 1);
    let files: Vec<PathBuf> = std::fs::read_dir(partial_root(&out).join("results"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "only the unit in flight keeps a checkpoint: {files:?}"
    );
    let header = w2sg_lm::finetune::resume::read_header(&files[0]).unwrap();
    assert_eq!((header.epochs, header.step), (1, 3));
    assert_eq!(
        files[0].file_stem().unwrap().to_string_lossy(),
        header.identity,
        "the file is named by its unit key, which it carries"
    );

    let o = sweep_plan(&plan, &out, 1, Some("sweep-finetune-step:4"))
        .output()
        .unwrap();
    ok(o);
    let resumed = finished(&out);
    assert_eq!(resumed.digest, reference.digest);
    assert_eq!(resumed.results, reference.results);
    assert!(!partial_root(&out).exists());
}

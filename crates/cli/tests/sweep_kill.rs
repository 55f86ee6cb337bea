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
    let mut c = Command::new(env!("CARGO_BIN_EXE_w2sg"));
    c.arg("sweep")
        .arg(&f.plan)
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

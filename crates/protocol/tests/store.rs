//! The results store: resume after real kills, re-runs that do nothing, failures recorded, shards
//! merged into exactly the unsharded results, conflicts detected, CSV export.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{sweep, total_units, Pause};
use serde_json::{json, Map};
use w2sg_protocol::export::export_csv;
use w2sg_protocol::store::merge;
use w2sg_protocol::{
    Error, Outcome, RunPolicy, ShardSpec, Store, UnitKind, UnitOutput, UnitSpec, UnitStatus,
};

fn reference(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("reference.db");
    let store = Store::open(&path).unwrap();
    sweep(&store, ShardSpec::all(), Pause::default());
    let d = store.digest().unwrap();
    (path, d)
}

#[test]
fn rerun_does_nothing_and_failures_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("a.db")).unwrap();
    let first = sweep(&store, ShardSpec::all(), Pause::default());
    assert_eq!(first.len(), total_units());
    let (done, failed) = store.counts().unwrap();
    // The corrupt checkpoint: its features unit and its 6 probe units fail, the sweep goes on.
    assert_eq!(failed, 1 + 2 * 3, "{first:?}");
    assert_eq!(done + failed, total_units());
    let fkey = common::feature_spec(common::CORRUPT_STEP).key().unwrap();
    let rec = store.get(&fkey).unwrap().unwrap();
    assert_eq!(rec.status, UnitStatus::Failed);
    assert!(
        rec.error.as_deref().unwrap().contains("corrupt file"),
        "{rec:?}"
    );
    let probe_fail = store
        .records(Some(UnitKind::Probe))
        .unwrap()
        .into_iter()
        .find(|r| r.status == UnitStatus::Failed)
        .unwrap();
    assert!(probe_fail
        .error
        .unwrap()
        .contains(&format!("features unit {fkey} unavailable")));
    let digest = store.digest().unwrap();
    let stamps: Vec<i64> = store
        .records(None)
        .unwrap()
        .iter()
        .map(|r| r.finished_at)
        .collect();
    // A second run skips every unit and changes nothing.
    let second = sweep(&store, ShardSpec::all(), Pause::default());
    assert!(
        second.iter().all(|o| matches!(o, Outcome::Skipped(_))),
        "{second:?}"
    );
    assert_eq!(store.digest().unwrap(), digest);
    let stamps2: Vec<i64> = store
        .records(None)
        .unwrap()
        .iter()
        .map(|r| r.finished_at)
        .collect();
    assert_eq!(stamps, stamps2);
    // Results are sane: the ceiling beats the weak supervisor at the best checkpoint.
    let best = common::probe_spec(100000, 0, &w2sg_protocol::Loss::Xent)
        .key()
        .unwrap();
    let r = store.get(&best).unwrap().unwrap().result.unwrap();
    assert!(
        r["acc_ceiling"].as_f64().unwrap() > r["acc_weak"].as_f64().unwrap() + 0.05,
        "{r:?}"
    );
}

#[test]
fn panics_are_failures_and_retry_replaces_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("p.db")).unwrap();
    let spec = UnitSpec::new(UnitKind::Features, "w", "d", "c").step(5);
    let o = store
        .run_unit(
            &spec,
            RunPolicy::default(),
            || -> Result<UnitOutput, String> { panic!("index out of bounds in the tokenizer") },
        )
        .unwrap();
    assert_eq!(
        o,
        Outcome::Failed("panicked: index out of bounds in the tokenizer".into())
    );
    // Not retried by default.
    let o = store
        .run_unit(
            &spec,
            RunPolicy::default(),
            || -> Result<UnitOutput, String> { unreachable!() },
        )
        .unwrap();
    assert_eq!(o, Outcome::Skipped(UnitStatus::Failed));
    // Retried on request, and the success replaces the failure in place.
    let o = store
        .run_unit(
            &spec,
            RunPolicy { retry_failed: true },
            || -> Result<UnitOutput, String> {
                Ok(UnitOutput {
                    result: Map::from_iter([("n".to_string(), json!(3))]),
                    blob: Some(vec![1, 2, 3]),
                })
            },
        )
        .unwrap();
    assert_eq!(o, Outcome::Done);
    assert_eq!(store.counts().unwrap(), (1, 0));
    assert_eq!(
        store.blob(&spec.key().unwrap()).unwrap(),
        Some(vec![1, 2, 3])
    );
    // A spec missing a required field is an error before anything runs.
    let bad = UnitSpec::new(UnitKind::Probe, "w", "d", "c");
    let e = store
        .run_unit(
            &bad,
            RunPolicy::default(),
            || -> Result<UnitOutput, String> { unreachable!() },
        )
        .unwrap_err();
    assert!(e.to_string().contains("probe unit without a seed"), "{e}");
}

/// The child process of the kill test: runs the sweep into the database named by the environment,
/// pausing where asked (and is killed there by the parent). A no-op in a normal test run.
#[test]
fn kill_worker_entry() {
    let Ok(db) = std::env::var("W2SG_PROTOCOL_WORKER_DB") else {
        return;
    };
    let num = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse::<usize>().unwrap())
    };
    let pause = Pause {
        compute_at: num("W2SG_PROTOCOL_PAUSE_COMPUTE"),
        commit_at: num("W2SG_PROTOCOL_PAUSE_COMMIT"),
    };
    let store = Store::open(&db).unwrap();
    sweep(&store, ShardSpec::all(), pause);
    println!("FINISHED");
}

fn spawn_worker(db: &Path, env: &[(&str, String)]) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "kill_worker_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("W2SG_PROTOCOL_WORKER_DB", db)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Waits for the child to print PAUSED, then SIGKILLs it.
fn kill_when_paused(mut child: std::process::Child) {
    let out = child.stdout.take().unwrap();
    let mut paused = false;
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        if line.contains("PAUSED") {
            paused = true;
            break;
        }
        assert!(
            !line.contains("FINISHED"),
            "the worker finished instead of pausing"
        );
    }
    assert!(paused, "the worker exited without pausing");
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success());
}

#[test]
fn killed_runs_resume_to_exactly_the_uninterrupted_results() {
    let dir = tempfile::tempdir().unwrap();
    let (_, want) = reference(dir.path());
    let db = dir.path().join("killed.db");
    let mut done_before = 0;
    // Deterministic kill points, each on the database left by the previous kill: in the computation
    // of the first unit, inside the write transaction of a unit with a blob (features), in a probe's
    // computation, and inside a probe's write transaction. Unit indices count units that run in that
    // process (skipped ones are not counted).
    let points: [(&str, usize); 5] = [
        ("W2SG_PROTOCOL_PAUSE_COMPUTE", 0),
        ("W2SG_PROTOCOL_PAUSE_COMMIT", 2),
        ("W2SG_PROTOCOL_PAUSE_COMPUTE", 5),
        ("W2SG_PROTOCOL_PAUSE_COMMIT", 4),
        ("W2SG_PROTOCOL_PAUSE_COMMIT", 0),
    ];
    for (var, at) in points {
        kill_when_paused(spawn_worker(&db, &[(var, at.to_string())]));
        let store = Store::open(&db).unwrap();
        let (d, f) = store.counts().unwrap();
        // The unit being computed or written when the process died is absent; everything committed
        // before it is still there.
        assert_eq!(d + f, done_before + at, "kill at {var}={at}");
        done_before = d + f;
    }
    // Timed kills at arbitrary points (in computation, in SQLite, in the commit's fsync).
    for delay_ms in [3u64, 15, 40] {
        let mut child = spawn_worker(&db, &[]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let store = Store::open(&db).unwrap();
        let (d, f) = store.counts().unwrap();
        assert!(d + f >= done_before, "a kill lost finished units");
        done_before = d + f;
    }
    // Resume to the end in a child that is not killed.
    let mut child = spawn_worker(&db, &[]);
    let start = Instant::now();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "resume failed after {:?}",
        start.elapsed()
    );
    let store = Store::open(&db).unwrap();
    let (d, f) = store.counts().unwrap();
    assert_eq!(d + f, total_units(), "a unit is missing or duplicated");
    assert_eq!(
        store.digest().unwrap(),
        want,
        "resumed results differ from the uninterrupted run"
    );
}

#[test]
fn shards_merge_into_the_unsharded_results() {
    let dir = tempfile::tempdir().unwrap();
    let (ref_path, want) = reference(dir.path());
    let mut shard_paths = Vec::new();
    for i in 0..3 {
        let p = dir.path().join(format!("shard{i}.db"));
        let store = Store::open(&p).unwrap();
        sweep(&store, ShardSpec::new(i, 3).unwrap(), Pause::default());
        shard_paths.push(p);
    }
    let merged = dir.path().join("merged.db");
    let report = merge(&merged, &shard_paths).unwrap();
    // Every shard computed both seeds' weak labels: 2 added, 4 identical duplicates.
    assert_eq!(report.identical, 2 * 2);
    assert_eq!(report.added, total_units());
    let store = Store::open(&merged).unwrap();
    assert_eq!(store.digest().unwrap(), want);
    // Merging again is a no-op.
    let again = merge(&merged, &shard_paths).unwrap();
    assert_eq!(again.added, 0);
    assert_eq!(again.identical, total_units() + 4);
    assert_eq!(store.digest().unwrap(), want);
    // CSV exports are byte-identical.
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    export_csv(&store, Some(UnitKind::Probe), &a).unwrap();
    export_csv(&Store::open(&ref_path).unwrap(), Some(UnitKind::Probe), &b).unwrap();
    let text = std::fs::read_to_string(&a).unwrap();
    assert_eq!(text, std::fs::read_to_string(&b).unwrap());
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("key,kind,status,error,checkpoint,dataset,config,step,seed,loss,"),
        "{header}"
    );
    assert!(
        header.contains("acc_w2s") && header.contains("pgr"),
        "{header}"
    );
    assert_eq!(lines.clone().count(), common::CHECKPOINTS.len() * 6);
    // Failed rows have the error and empty metric cells.
    let failed = lines.find(|l| l.contains(",failed,")).unwrap();
    assert!(
        failed.contains("unavailable") && failed.contains(",,"),
        "{failed}"
    );
}

fn one_unit_db(path: &Path, value: f64, status_ok: bool) -> UnitSpec {
    let spec = UnitSpec::new(UnitKind::Probe, "w", "d", "c")
        .seed(0)
        .loss("xent")
        .step(7);
    let store = Store::open(path).unwrap();
    store
        .run_unit(&spec, RunPolicy::default(), || {
            if status_ok {
                Ok(UnitOutput {
                    result: Map::from_iter([("acc".to_string(), json!(value))]),
                    blob: None,
                })
            } else {
                Err("out of memory".to_string())
            }
        })
        .unwrap();
    spec
}

#[test]
fn merge_detects_conflicts_and_prefers_done_over_failed() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let c = dir.path().join("c.db");
    let spec = one_unit_db(&a, 0.75, true);
    one_unit_db(&b, 0.80, true);
    one_unit_db(&c, 0.0, false);
    let dest = dir.path().join("dest.db");
    let e = merge(&dest, &[a.clone(), b.clone()]).unwrap_err();
    match &e {
        Error::MergeConflict {
            key,
            problem,
            source_path,
            ..
        } => {
            assert_eq!(key, spec.key().unwrap().as_str());
            assert!(
                problem.contains("0.75") && problem.contains("0.8"),
                "{problem}"
            );
            assert_eq!(source_path, &b);
        }
        other => panic!("expected a conflict, got {other}"),
    }
    // Atomic: nothing was merged.
    assert_eq!(Store::open(&dest).unwrap().counts().unwrap(), (0, 0));
    // failed then done: the done unit replaces the failure; done then failed: kept.
    let r = merge(&dest, &[c.clone(), a.clone()]).unwrap();
    assert_eq!((r.added, r.replaced_failed), (1, 1));
    let r = merge(&dest, &[c]).unwrap();
    assert_eq!(r.kept, 1);
    let store = Store::open(&dest).unwrap();
    assert_eq!(store.counts().unwrap(), (1, 0));
}

#[test]
fn unreadable_databases_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
    let e = Store::open(&junk).unwrap_err().to_string();
    assert!(e.contains("junk.db"), "{e}");
    let e = merge(dir.path().join("d.db"), &[junk])
        .unwrap_err()
        .to_string();
    assert!(e.contains("junk.db"), "{e}");
}

#[cfg(feature = "parquet")]
#[test]
fn parquet_export_round_trips_the_table() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("r.db")).unwrap();
    sweep(&store, ShardSpec::all(), Pause::default());
    let path = dir.path().join("results.parquet");
    w2sg_protocol::export::export_parquet(&store, Some(UnitKind::Probe), &path).unwrap();
    let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let meta = reader.metadata();
    assert_eq!(
        meta.file_metadata().num_rows() as usize,
        common::CHECKPOINTS.len() * 6
    );
    let names: Vec<String> = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert!(
        names.contains(&"acc_w2s".to_string()) && names.contains(&"seed".to_string()),
        "{names:?}"
    );
}

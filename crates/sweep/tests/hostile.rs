//! Hostile inputs to `w2sg sweep` (issue 14, section 2): a layer no checkpoint has, task files that
//! are missing or not UTF-8, a revision without config.json, a merge with a shard missing, and two
//! writers of one output directory. Each is checked before anything runs where it can be (exit code
//! 2, naming the plan's key and the file or line), or recorded and reported without losing anything.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use w2sg_protocol::{RunPolicy, ShardSpec};
use w2sg_sweep::testing::{fixture, Fixture, PLAN};
use w2sg_sweep::testing::{merge_command, report_command, run_command};
use w2sg_sweep::{Error, RunOptions};

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("w2sg-sweep-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn shared_fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| fixture(&scratch("fixture")))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn copy_fixture(name: &str) -> Fixture {
    let f = shared_fixture();
    let dir = scratch(name);
    copy_dir(&f.dir, &dir);
    Fixture {
        plan: dir.join("plan.toml"),
        strong: dir.join("strong"),
        weak: dir.join("weak"),
        task: dir.join("task.jsonl"),
        dir,
    }
}

fn opts(shard: ShardSpec) -> RunOptions {
    RunOptions {
        shard,
        policy: RunPolicy::default(),
        progress: Default::default(),
    }
}

/// Bad input: exit code 2, the plan file and every needle named, and nothing run.
fn bad_input(err: &Error, plan: &Path, out: &Path, needles: &[&str]) {
    let msg = err.to_string();
    assert_eq!(err.exit_code(), 2, "{msg}");
    assert!(
        msg.contains(&plan.display().to_string()),
        "names the plan: {msg}"
    );
    for n in needles {
        assert!(msg.contains(n), "should contain {n:?}: {msg}");
    }
    assert!(
        !out.join("results.sqlite").exists(),
        "nothing runs on bad input"
    );
}

#[test]
fn a_layer_no_checkpoint_has_is_a_plan_error_before_anything_runs() {
    let f = copy_fixture("layer");
    std::fs::write(
        &f.plan,
        PLAN.replace("pooling = \"mean\"", "pooling = \"mean\"\nlayer = 99"),
    )
    .unwrap();
    let out = f.dir.join("out");
    let err = run_command(&f.plan, &out, &opts(ShardSpec::all())).unwrap_err();
    bad_input(
        &err,
        &f.plan,
        &out,
        &["features.layer", "99", "out of range"],
    );
}

#[test]
fn missing_and_non_utf8_task_files_are_plan_errors_with_the_line() {
    let f = copy_fixture("task");
    let out = f.dir.join("out");
    // Missing.
    std::fs::write(&f.plan, PLAN.replace("task.jsonl", "nowhere.jsonl")).unwrap();
    let err = run_command(&f.plan, &out, &opts(ShardSpec::all())).unwrap_err();
    bad_input(
        &err,
        &f.plan,
        &out,
        &["task.jsonl", "[[task]] 1", "nowhere.jsonl"],
    );
    // Not UTF-8 on line 3 (a Latin-1 'é').
    std::fs::write(&f.plan, PLAN).unwrap();
    let text = std::fs::read(&f.task).unwrap();
    let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    lines[2] = b"{\"txt\": \"caf\xe9 by the sea\", \"hard_label\": 1}".to_vec();
    std::fs::write(&f.task, lines.join(&b'\n')).unwrap();
    let err = run_command(&f.plan, &out, &opts(ShardSpec::all())).unwrap_err();
    bad_input(
        &err,
        &f.plan,
        &out,
        &["task.jsonl", "line 3", "not UTF-8", "0xe9"],
    );
}

#[test]
fn a_revision_without_config_json_is_recorded_as_failed_not_dropped() {
    let f = copy_fixture("noconfig");
    std::fs::remove_file(f.strong.join("step8").join("config.json")).unwrap();
    let out = f.dir.join("out");
    let err = run_command(&f.plan, &out, &opts(ShardSpec::all())).unwrap_err();
    assert_eq!(err.exit_code(), 1, "{err}");
    let results = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let row = results
        .lines()
        .find(|l| l.contains(",step8,"))
        .expect("step8 still has its rows");
    assert!(
        row.contains("failed") && row.contains("config.json"),
        "{row}"
    );
    assert_eq!(
        results.lines().count(),
        1 + 9 * 2,
        "all 9 checkpoints reported"
    );
}

#[test]
fn a_merge_with_a_shard_missing_names_it_unless_allowed() {
    let f = copy_fixture("merge");
    let out = f.dir.join("out");
    for i in [0, 2] {
        run_command(&f.plan, &out, &opts(ShardSpec { index: i, count: 3 })).unwrap();
    }
    let err = merge_command(&f.plan, &out, Vec::new(), false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingShards { .. }), "{msg}");
    assert!(
        msg.contains("shard(s) 1 of 3") && msg.contains("--allow-missing"),
        "{msg}"
    );
    assert_ne!(err.exit_code(), 0);
    assert!(
        !out.join("results.csv").exists(),
        "nothing merged without --allow-missing"
    );
    merge_command(&f.plan, &out, Vec::new(), true).unwrap();
    let results = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(
        results.contains(",missing,"),
        "the absent shard's checkpoints say so"
    );
}

#[test]
fn a_second_writer_of_the_outputs_is_refused() {
    let f = copy_fixture("lock");
    let out = f.dir.join("out");
    run_command(&f.plan, &out, &opts(ShardSpec::all())).unwrap();
    let held = w2sg_fsio::DirLock::acquire(&out.join(".outputs.w2sg-lock")).unwrap();
    let err = report_command(&f.plan, &out).unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err}");
    assert!(err.to_string().contains("another w2sg process"), "{err}");
    drop(held);
    report_command(&f.plan, &out).unwrap();
}

#[test]
fn transitions_csv_holds_only_identified_midpoints_inside_the_steps() {
    let f = copy_fixture("transitions");
    let out = f.dir.join("out");
    run_command(&f.plan, &out, &opts(ShardSpec::all())).unwrap();
    let mut r = csv::Reader::from_path(out.join("transitions.csv")).unwrap();
    let headers = r.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (first, last) = (1.0, 24.0); // the fixture's steps > 0
    let mut rows = 0;
    for rec in r.records() {
        let rec = rec.unwrap();
        rows += 1;
        let num = |name: &str| rec[col(name)].parse::<f64>().ok();
        if &rec[col("identified")] == "true" {
            let (m, lo, hi) = (
                num("midpoint_step").unwrap(),
                num("midpoint_lo").unwrap(),
                num("midpoint_hi").unwrap(),
            );
            assert!(lo < hi && lo <= m && m <= hi, "{rec:?}");
            assert!(lo >= first && hi <= last, "{rec:?}");
            assert!(rec[col("not_identified_reason")].is_empty(), "{rec:?}");
        } else {
            for c in [
                "midpoint_step",
                "midpoint_lo",
                "midpoint_hi",
                "width",
                "gain_lower",
            ] {
                assert!(
                    rec[col(c)].is_empty(),
                    "{c} of an unidentified fit: {rec:?}"
                );
            }
            assert!(!rec[col("not_identified_reason")].is_empty(), "{rec:?}");
        }
    }
    assert_eq!(rows, 2, "one row per (family, task, loss)");
}

//! End-to-end sweeps on the micro fixture (crates/sweep/src/testing.rs): results, resume, shards and
//! merge, a corrupt checkpoint, bad task files and bad plans.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use std::sync::Arc;

use w2sg_progress::{Event, Recorder, Reporter};
use w2sg_protocol::{RunPolicy, ShardSpec, Store};
use w2sg_sweep::testing::run_command;
use w2sg_sweep::testing::{fixture, Fixture};
use w2sg_sweep::{Error, RunOptions};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2sg-sweep-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn shared_fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| fixture(&scratch("fixture")))
}

/// A private copy of the fixture (families, task, plan) for tests that change files.
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

fn opts(shard: ShardSpec) -> RunOptions {
    RunOptions {
        shard,
        policy: RunPolicy::default(),
        progress: Default::default(),
    }
}

/// `opts(shard)` reporting to a recorder the test keeps.
fn recorded(shard: ShardSpec) -> (RunOptions, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let mut o = opts(shard);
    o.progress = Reporter::new(rec.clone());
    (o, rec)
}

/// A run reports one phase of `units` units, its advances add up to exactly that (the bar ends
/// full, neither short nor past its end), a status names each checkpoint's revision, and the phase
/// ends.
fn assert_one_full_phase(events: &[Event], units: u64) {
    let phases: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::Phase { .. }))
        .collect();
    assert_eq!(
        phases,
        [&Event::Phase {
            len: units,
            done: 0,
            unit: "units".into()
        }]
    );
    let advanced: u64 = events
        .iter()
        .map(|e| match e {
            Event::Advance(n) => *n,
            _ => 0,
        })
        .sum();
    assert_eq!(
        advanced, units,
        "the units advanced are the units announced"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Status(s) if s.contains("step24"))));
    assert_eq!(events.last(), Some(&Event::EndPhase));
}

fn digest(db: &Path) -> String {
    Store::open(db).unwrap().digest().unwrap()
}

fn read_csv(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn num(row: &std::collections::HashMap<String, String>, k: &str) -> Option<f64> {
    row.get(k).and_then(|v| v.parse().ok())
}

#[test]
fn a_sweep_writes_results_and_a_rerun_does_nothing() {
    let f = shared_fixture();
    let out = scratch("full");
    let (o, rec) = recorded(ShardSpec::all());
    let first = run_command(&f.plan, &out, &o).unwrap();
    // 9 checkpoints (0, 1, 2, 4, 8, …, 24) × (features + 2 seeds × (ceiling + 2 losses)) + weak features + 2 weak labels,
    // less one features unit: none of the strong family's checkpoints is the weak model.
    let units = 9 * (1 + 2 * 3) + 1 + 2;
    assert_eq!(first.checkpoints, 9);
    assert_eq!(first.units_done, units);
    assert_eq!(first.units_failed, 0);
    assert_one_full_phase(&rec.events(), units as u64);
    let before = digest(&out.join("results.sqlite"));
    let csv_before = std::fs::read(out.join("results.csv")).unwrap();

    let (o, rec) = recorded(ShardSpec::all());
    let second = run_command(&f.plan, &out, &o).unwrap();
    assert_eq!(second.units_done, 0, "a finished sweep runs nothing again");
    assert_one_full_phase(&rec.events(), units as u64);
    assert_eq!(digest(&out.join("results.sqlite")), before);
    assert_eq!(std::fs::read(out.join("results.csv")).unwrap(), csv_before);

    let rows = read_csv(&out.join("results.csv"));
    assert_eq!(rows.len(), 9 * 2);
    for r in &rows {
        assert_eq!(r["status"], "ok", "{r:?}");
        assert_eq!(r["n_seeds"], "2");
        // The row's PGR is the ratio of its own mean accuracies (ratio of means over seeds).
        let (w, s, c) = (
            num(r, "acc_weak").unwrap(),
            num(r, "acc_w2s").unwrap(),
            num(r, "acc_ceiling").unwrap(),
        );
        if let Some(p) = num(r, "pgr") {
            assert!((p - (s - w) / (c - w)).abs() < 1e-9, "{r:?}");
            let (lo, hi) = (num(r, "pgr_lo").unwrap(), num(r, "pgr_hi").unwrap());
            assert!(lo <= hi, "{r:?}");
        }
    }
    // Pre-training helps on the topic task: the final checkpoint's ceiling beats step 0's.
    let ceiling = |rev: &str| {
        rows.iter()
            .find(|r| r["revision"] == rev && r["loss"] == "xent")
            .and_then(|r| num(r, "acc_ceiling"))
            .unwrap()
    };
    assert!(
        ceiling("step24") > 0.75,
        "final ceiling {}",
        ceiling("step24")
    );
    // The weak supervisor is the same model on every row.
    let weak: Vec<f64> = rows.iter().map(|r| num(r, "acc_weak").unwrap()).collect();
    assert!(weak.iter().all(|&w| w == weak[0]));

    for name in [
        "seeds.csv",
        "transitions.csv",
        "results.json",
        "units.csv",
        "failures.csv",
    ] {
        assert!(out.join(name).is_file(), "{name}");
    }
    assert_eq!(read_csv(&out.join("seeds.csv")).len(), 9 * 2 * 2);
    assert_eq!(read_csv(&out.join("transitions.csv")).len(), 2);
    let figs: Vec<_> = std::fs::read_dir(out.join("figures")).unwrap().collect();
    assert_eq!(figs.len(), 2, "one figure, PNG and SVG");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Checkpoint sweep: micro") && html.contains("<img"));
}

#[test]
fn shards_merged_equal_the_unsharded_run() {
    let f = shared_fixture();
    let whole = scratch("whole");
    run_command(&f.plan, &whole, &opts(ShardSpec::all())).unwrap();
    let sharded = scratch("sharded");
    let mut checkpoints = 0;
    for i in 0..3 {
        let r = run_command(&f.plan, &sharded, &opts(ShardSpec::new(i, 3).unwrap())).unwrap();
        checkpoints += r.checkpoints;
        assert!(
            !sharded.join("results.csv").exists(),
            "a shard writes only its database"
        );
    }
    assert_eq!(checkpoints, 9, "every checkpoint in exactly one shard");
    let shards: Vec<PathBuf> = (0..3)
        .map(|i| {
            sharded
                .join("shards")
                .join(format!("shard-{i}-of-3.sqlite"))
        })
        .collect();
    let dest = sharded.join("results.sqlite");
    w2sg_protocol::store::merge(&dest, &shards).unwrap();
    assert_eq!(digest(&dest), digest(&whole.join("results.sqlite")));
    // Merging again changes nothing.
    w2sg_protocol::store::merge(&dest, &shards).unwrap();
    assert_eq!(digest(&dest), digest(&whole.join("results.sqlite")));
}

#[test]
fn a_corrupt_checkpoint_is_recorded_as_failed_and_the_sweep_goes_on() {
    let f = copy_fixture("corrupt");
    let weights = f.strong.join("step8").join("model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &good[..good.len() / 2]).unwrap();
    let out = f.dir.join("out");
    let err = run_command(&f.plan, &out, &opts(ShardSpec::all())).unwrap_err();
    assert!(matches!(err, Error::UnitsFailed(1)), "{err}");
    assert_eq!(err.exit_code(), 1);
    let rows = read_csv(&out.join("results.csv"));
    for r in &rows {
        if r["revision"] == "step8" {
            assert_eq!(r["status"], "failed");
            assert!(r["error"].contains("model.safetensors"), "{}", r["error"]);
        } else {
            assert_eq!(r["status"], "ok", "{r:?}");
        }
    }
    let failures = read_csv(&out.join("failures.csv"));
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["kind"], "features");
    // A rerun does not retry it (exit 1 again, nothing run) ...
    // ... and says how to retry it.
    let again = run_command(&f.plan, &out, &opts(ShardSpec::all())).unwrap_err();
    assert!(
        matches!(
            again,
            Error::FailedEarlier {
                failed: 1,
                earlier: 1
            }
        ),
        "{again}"
    );
    assert!(again.to_string().contains("--retry-failed"), "{again}");
    assert_eq!(again.exit_code(), 1);
    // ... and repairing the file gives new content, so its units run under their new key.
    std::fs::write(&weights, &good).unwrap();
    let fixed = run_command(&f.plan, &out, &opts(ShardSpec::all())).unwrap();
    assert_eq!(fixed.units_done, 1 + 2 * 3);
    let rows = read_csv(&out.join("results.csv"));
    assert!(rows.iter().all(|r| r["status"] == "ok"));
}

#[test]
fn malformed_task_lines_are_reported_with_line_numbers() {
    let f = copy_fixture("badtask");
    let text = std::fs::read_to_string(&f.task).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[2] = "{\"txt\": \"no label\"}".into();
    lines[6] = "not json".into();
    std::fs::write(&f.task, lines.join("\n")).unwrap();
    let out = f.dir.join("out");
    let err = run_command(&f.plan, &out, &opts(ShardSpec::all())).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("task.jsonl, line 3") && msg.contains("hard_label"),
        "{msg}"
    );
    assert!(msg.contains("7"), "the other bad line is listed: {msg}");
    assert_eq!(err.exit_code(), 2);
    assert!(
        !out.join("results.sqlite").exists(),
        "nothing runs on bad input"
    );
}

#[test]
fn bad_plans_are_errors_naming_the_file_and_the_problem() {
    let f = copy_fixture("badplan");
    let cases = [
        (
            w2sg_sweep::testing::PLAN.replace(
                "path = \"strong\"",
                "path = \"strong\"\nrevisions = [\"step999\"]",
            ),
            "no revision `step999`",
        ),
        (
            w2sg_sweep::testing::PLAN.replace("weak@step8", "weak@step5"),
            "step5",
        ),
        (
            w2sg_sweep::testing::PLAN.replace("seeds = [0, 1]", "seeds = [0, 1]\nsedes = 2"),
            "unknown field `sedes`",
        ),
    ];
    for (text, needle) in cases {
        std::fs::write(&f.plan, text).unwrap();
        let err = run_command(&f.plan, &f.dir.join("out"), &opts(ShardSpec::all())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(needle), "{msg}");
        assert_eq!(err.exit_code(), 2, "{msg}");
    }
}

#[test]
fn a_corrupt_weak_model_fails_its_units_and_blocks_only_the_students() {
    let f = copy_fixture("corrupt-weak");
    let weights = f.weak.join("step8").join("model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &good[..100]).unwrap();
    let out = f.dir.join("out");
    let err = run_command(&f.plan, &out, &opts(ShardSpec::all())).unwrap_err();
    assert!(matches!(err, Error::UnitsFailed(1)), "{err}");
    let rows = read_csv(&out.join("results.csv"));
    assert_eq!(rows.len(), 9 * 2);
    for r in &rows {
        assert_eq!(r["status"], "failed", "{r:?}");
        assert!(
            r["error"].contains("features of the weak model"),
            "{}",
            r["error"]
        );
    }
    // The ceilings do not need the weak model: they ran (9 checkpoints × 2 seeds).
    let units = read_csv(&out.join("units.csv"));
    let ceilings = units
        .iter()
        .filter(|u| u["loss"] == "ground_truth" && u["status"] == "done")
        .count();
    assert_eq!(ceilings, 9 * 2);
}

/// The plan of the micro fixture with fine-tuned students beside the probes (last block + LoRA, at
/// every other checkpoint).
fn finetune_plan(f: &Fixture, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(&f.plan).unwrap();
    let text = text.replace("[train]\n", "[train]\nmode = [\"probe\", \"finetune\"]\n")
        + "\n[finetune]\nlayers = 1\nlora_rank = 2\nepochs = 1\nlr = 1e-3\nbatch_size = 16\nmax_tokens = 32\nrevisions = { every = 4 }\n";
    let path = f.dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn fine_tuned_students_sit_beside_the_probes_resume_and_merge() {
    let f = shared_fixture();
    let plan = finetune_plan(f, "plan-finetune.toml");
    let out = scratch("finetune");
    let (o, rec) = recorded(ShardSpec::all());
    let first = run_command(&plan, &out, &o).unwrap();
    // Probes as before, plus at steps 0, 8 and 24 (every 4th of the 9, and the last): 2 seeds × 3
    // students each.
    let units = 9 * (1 + 2 * 3) + 1 + 2 + 3 * 2 * 3;
    assert_eq!(first.units_done, units);
    let events = rec.events();
    assert_one_full_phase(&events, units as u64);
    // Inside the long units the status line counts too, up to the end: the examples of a
    // feature-extraction unit, the optimizer steps of a fine-tuning one.
    let finished = |s: &str, before: &str, after: &str| {
        s.rsplit_once(before)
            .and_then(|(_, tail)| tail.strip_suffix(after))
            .and_then(|c| c.split_once('/'))
            .is_some_and(|(d, t)| d == t && t.parse::<usize>().is_ok_and(|t| t > 0))
    };
    let statuses: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Status(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        statuses
            .iter()
            .any(|s| s.contains("step8 · fine-tuning") && finished(s, " · step ", "")),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .any(|s| s.contains("step8") && finished(s, " · features ", " examples")),
        "{statuses:?}"
    );
    assert_eq!(first.units_failed, 0);
    let rows = read_csv(&out.join("results.csv"));
    let tuned: Vec<_> = rows
        .iter()
        .filter(|r| r["mode"] == "lora-2-last-1")
        .collect();
    assert_eq!(rows.iter().filter(|r| r["mode"] == "probe").count(), 9 * 2);
    assert_eq!(tuned.len(), 3 * 2);
    let revs: std::collections::BTreeSet<&str> =
        tuned.iter().map(|r| r["revision"].as_str()).collect();
    assert_eq!(revs, ["step0", "step24", "step8"].into_iter().collect());
    for r in &tuned {
        assert_eq!(r["status"], "ok", "{r:?}");
        let c = num(r, "acc_ceiling").unwrap();
        assert!((0.0..=1.0).contains(&c));
        // The weak supervisor is the probe's: the same weak accuracy as the probe rows.
        let probe = rows
            .iter()
            .find(|p| {
                p["mode"] == "probe" && p["revision"] == r["revision"] && p["loss"] == r["loss"]
            })
            .unwrap();
        assert_eq!(r["acc_weak"], probe["acc_weak"]);
    }
    assert_eq!(read_csv(&out.join("transitions.csv")).len(), 4);
    let csv = std::fs::read(out.join("results.csv")).unwrap();
    // Nothing runs again; the same plan on 2 shards, merged, gives the same store.
    let again = run_command(&plan, &out, &opts(ShardSpec::all())).unwrap();
    assert_eq!(again.units_done, 0);
    let sharded = scratch("finetune-sharded");
    for i in 0..2 {
        run_command(&plan, &sharded, &opts(ShardSpec::new(i, 2).unwrap())).unwrap();
    }
    let shards: Vec<PathBuf> = (0..2)
        .map(|i| {
            sharded
                .join("shards")
                .join(format!("shard-{i}-of-2.sqlite"))
        })
        .collect();
    w2sg_protocol::store::merge(&sharded.join("results.sqlite"), &shards).unwrap();
    assert_eq!(
        digest(&sharded.join("results.sqlite")),
        digest(&out.join("results.sqlite"))
    );
    // Probe-only reruns of a finished fine-tuning sweep reuse the probe units (their keys did not
    // change): a probe-only plan on the same store runs nothing.
    let probe_only = run_command(&f.plan, &out, &opts(ShardSpec::all())).unwrap();
    assert_eq!(probe_only.units_done, 0);
    assert_ne!(std::fs::read(out.join("results.csv")).unwrap(), csv);
}

#[test]
fn finetune_tasks_limits_fine_tuning_to_the_named_tasks() {
    let f = shared_fixture();
    std::fs::copy(f.dir.join("task.jsonl"), f.dir.join("other.jsonl")).unwrap();
    let text = std::fs::read_to_string(finetune_plan(f, "plan-ft-tasks.toml"))
        .unwrap()
        .replace(
            "[[task]]\njsonl = \"task.jsonl\"\n",
            "[[task]]\njsonl = \"task.jsonl\"\n\n[[task]]\njsonl = \"other.jsonl\"\n",
        )
        .replace(
            "revisions = { every = 4 }",
            "revisions = [\"step24\"]\ntasks = [\"other\"]",
        );
    let path = f.dir.join("plan-ft-tasks.toml");
    std::fs::write(&path, text).unwrap();
    let out = scratch("ft-tasks");
    let r = run_command(&path, &out, &opts(ShardSpec::all())).unwrap();
    assert_eq!(r.units_failed, 0);
    let rows = read_csv(&out.join("results.csv"));
    let tuned: Vec<_> = rows.iter().filter(|r| r["mode"] != "probe").collect();
    assert_eq!(
        tuned.len(),
        2,
        "one checkpoint × two losses, on `other` only"
    );
    assert!(tuned
        .iter()
        .all(|r| r["task"] == "other" && r["revision"] == "step24"));
    assert_eq!(
        rows.iter().filter(|r| r["mode"] == "probe").count(),
        2 * 9 * 2
    );

    let bad = std::fs::read_to_string(&path)
        .unwrap()
        .replace("tasks = [\"other\"]", "tasks = [\"nope\"]");
    std::fs::write(&path, bad).unwrap();
    let e = run_command(&path, &scratch("ft-tasks-bad"), &opts(ShardSpec::all())).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(
        e.to_string().contains("finetune.tasks") && e.to_string().contains("nope"),
        "{e}"
    );
}

#[test]
fn bad_finetune_settings_are_plan_errors_naming_the_key() {
    let f = shared_fixture();
    for (bad, key) in [
        ("[finetune]\nlayers = \"most\"\n", "finetune.layers"),
        ("[finetune]\nepochs = 0\n", "epochs"),
        ("[finetune]\nlora_rank = 2\nlayers = 0\n", "lora_rank"),
        ("[finetune]\nlearning_rate = 1e-4\n", "learning_rate"),
        ("[finetune]\ntasks = []\n", "finetune.tasks"),
        ("[finetune]\nseeds = [7]\n", "finetune.seeds"),
    ] {
        let text = std::fs::read_to_string(&f.plan).unwrap() + "\n" + bad;
        let path = f.dir.join("plan-bad-finetune.toml");
        std::fs::write(&path, text).unwrap();
        let e = run_command(&path, &scratch("bad-ft"), &opts(ShardSpec::all())).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains(key), "{e}");
    }
    let text = std::fs::read_to_string(&f.plan)
        .unwrap()
        .replace("[train]\n", "[train]\nmode = \"fine-tune\"\n");
    let path = f.dir.join("plan-bad-mode.toml");
    std::fs::write(&path, text).unwrap();
    let e = run_command(&path, &scratch("bad-mode"), &opts(ShardSpec::all())).unwrap_err();
    assert!(e.to_string().contains("train.mode"), "{e}");
}

/// A family of one hub-cache repository per checkpoint (TinyLlama's layout) of Llama models: `repos`
/// lists a glob and a repository whose step comes from `steps`; the checkpoints sweep in step order,
/// and two repositories with the same weights are reported as duplicates (one fingerprint), as
/// duplicate branches are.
#[test]
fn a_family_of_cache_repositories_of_llama_checkpoints_sweeps_in_step_order() {
    let f = copy_fixture("llama-repos");
    let cache = f.dir.join("hub");
    let ids = w2sg_sweep::testing::write_llama_repos(
        &cache,
        "w2sg",
        &[
            ("tiny-llama-step-2k-4b", 2),
            ("tiny-llama-step-1k-2b", 1),
            ("tiny-llama-step-3k-6b", 3),
            ("tiny-llama-final", 3),
            ("other-llama-step-9k", 9),
        ],
        &f.weak.join("tokenizer.json"),
        300,
    );
    assert_eq!(ids.len(), 5);
    // Only this test reads the hub cache; the others name local paths.
    std::env::set_var("HF_HUB_CACHE", &cache);
    let plan = f.dir.join("llama.toml");
    // The fixture's plan with one seed, one loss and this family.
    let text = w2sg_sweep::testing::PLAN
        .replace("seeds = [0, 1]", "seeds = [0]")
        .replace("losses = [\"xent\", \"logconf\"]", "losses = [\"xent\"]")
        .replace(
            "path = \"strong\"",
            "repos = [\"w2sg/tiny-llama-step-*\", \"w2sg/tiny-llama-final\"]\nsteps = { \"w2sg/tiny-llama-final\" = 4000 }",
        );
    assert!(text.contains("repos =") && text.contains("seeds = [0]\n"));
    std::fs::write(&plan, text).unwrap();
    let out = f.dir.join("out");
    let s = run_command(&plan, &out, &opts(ShardSpec::all())).unwrap();
    assert_eq!(s.checkpoints, 4);
    // 4 checkpoints × (features + ceiling + xent student) + weak features + weak labels.
    assert_eq!(s.units_done, 4 * 3 + 2);
    assert_eq!(s.units_failed, 0);
    let rows = read_csv(&out.join("results.csv"));
    let order: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["family"].as_str(),
                r["revision"].as_str(),
                r["step"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("tiny-llama", "w2sg/tiny-llama-step-1k-2b", "1000"),
            ("tiny-llama", "w2sg/tiny-llama-step-2k-4b", "2000"),
            ("tiny-llama", "w2sg/tiny-llama-step-3k-6b", "3000"),
            ("tiny-llama", "w2sg/tiny-llama-final", "4000"),
        ]
    );
    // The duplicate's numbers are its twin's, and the family's duplicate groups name the pair.
    let acc = |i: usize| num(&rows[i], "acc_ceiling").unwrap();
    assert_eq!(acc(2), acc(3));
    let repos = ["w2sg/tiny-llama-*".to_string()];
    let cache = w2sg_lm::hub::HubCache::new(&cache);
    let revs = w2sg_lm::revisions::repo_family(
        &repos,
        &[("w2sg/tiny-llama-final".to_string(), 4000)].into(),
        Some(&cache),
    )
    .unwrap();
    let fps = w2sg_lm::revisions::fingerprints(&revs, &mut |_| {});
    let groups = w2sg_lm::revisions::duplicate_groups(&revs, &fps);
    assert_eq!(groups.len(), 1);
    assert_eq!(
        groups[0].1,
        ["w2sg/tiny-llama-step-3k-6b", "w2sg/tiny-llama-final"]
    );
    // `w2sg lm info` on a glob: the repositories with a step in their names, in training order.
    let report =
        w2sg_lm::info::info("w2sg/tiny-llama-step-*", Some(&cache), true, &mut |_, _| {}).unwrap();
    let names: Vec<&str> = report.revisions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "w2sg/tiny-llama-step-1k-2b",
            "w2sg/tiny-llama-step-2k-4b",
            "w2sg/tiny-llama-step-3k-6b"
        ]
    );
    assert!(report
        .to_string()
        .contains("repositories matching w2sg/tiny-llama-step-*"));

    // Plan errors name the key.
    for (family, want) in [
        ("repos = [\"w2sg/none-*\"]", "matches no repository"),
        (
            "repos = [\"w2sg/tiny-llama-final\"]",
            "no step in its name; give it in `steps`",
        ),
        (
            "repos = [\"w2sg/tiny-llama-step-*\"]\nsteps = { \"w2sg/typo\" = 5 }",
            "`steps` names `w2sg/typo`",
        ),
        (
            "path = \"strong\"\nrepos = [\"w2sg/tiny-llama-final\"]",
            "`path` and `repos` both given",
        ),
        ("repos = [\"not a repo\"]", "`repos` entry \"not a repo\""),
    ] {
        let text = std::fs::read_to_string(&plan).unwrap().replace(
            "repos = [\"w2sg/tiny-llama-step-*\", \"w2sg/tiny-llama-final\"]\nsteps = { \"w2sg/tiny-llama-final\" = 4000 }",
            family,
        );
        let bad = f.dir.join("bad-llama.toml");
        std::fs::write(&bad, text).unwrap();
        let e = run_command(&bad, &f.dir.join("out-bad"), &opts(ShardSpec::all())).unwrap_err();
        assert!(e.to_string().contains(want), "want {want}: {e}");
    }
}

/// The micro plan at two checkpoints with the weak supervisor trained as `weak_train` says; with
/// "finetune", fine-tuned students (at step24) beside the probes too, so that both kinds of student
/// train on the fine-tuned supervisor.
fn weak_train_plan(f: &Fixture, name: &str, weak_train: &str) -> PathBuf {
    let mut text = std::fs::read_to_string(&f.plan).unwrap().replace(
        "path = \"strong\"",
        "path = \"strong\"\nrevisions = [\"step8\", \"step24\"]",
    );
    if weak_train != "probe" {
        text = text
            .replace(
                "model = \"weak@step8\"",
                &format!("model = \"weak@step8\"\ntrain = \"{weak_train}\""),
            )
            .replace("[train]\n", "[train]\nmode = [\"probe\", \"finetune\"]\n")
            + "\n[finetune]\nepochs = 2\nlr = 1e-3\nbatch_size = 8\nmax_tokens = 32\nrevisions = [\"step24\"]\n";
    }
    let path = f.dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Probabilities of a weak-labels unit on the test split, its stored result, and its key.
fn weak_unit(
    session: &w2sg_sweep::Session,
    store: &Store,
    seed: u64,
) -> (
    Vec<f64>,
    serde_json::Map<String, serde_json::Value>,
    w2sg_protocol::UnitKey,
) {
    let r = &session.resolved;
    let ds = &r.datasets[0];
    let key = w2sg_sweep::specs::weak_spec(&r.plan, &r.weak, ds, seed)
        .unwrap()
        .key()
        .unwrap();
    let rec = store.get(&key).unwrap().expect("the weak unit is stored");
    let blob = store.blob(&key).unwrap().expect("with its blob");
    let n_b = ds.split(&r.plan.split, seed).unwrap().strong.len();
    let (_, on_test) = w2sg_sweep::specs::split_weak_blob(&blob, n_b).unwrap();
    (on_test, rec.result.unwrap(), key)
}

#[test]
fn a_fine_tuned_weak_supervisor_has_its_own_units_and_trains_every_student() {
    let f = shared_fixture();
    let probe = weak_train_plan(f, "plan-weak-probe.toml", "probe");
    let tuned = weak_train_plan(f, "plan-weak-ft.toml", "finetune");
    let out = scratch("weak-ft");
    let r = run_command(&probe, &out, &opts(ShardSpec::all())).unwrap();
    assert_eq!(r.units_done, 2 * (1 + 2 * 3) + 1 + 2);
    let probe_rows = read_csv(&out.join("results.csv"));
    assert!(probe_rows.iter().all(|r| r["weak_mode"] == "probe"));
    // The fine-tuned supervisor on the same store: its 2 weak units (no weak features), and every
    // student that learns from it (2 checkpoints × 2 seeds × 2 losses of probes, 2 seeds × 3
    // fine-tuned students at step24); the ceilings and features are reused.
    let r = run_command(&tuned, &out, &opts(ShardSpec::all())).unwrap();
    assert_eq!(r.units_done, 2 + 2 * 2 * 2 + 2 * 3);
    assert_eq!(r.units_failed, 0);
    // Switching back and forth runs nothing: each supervisor keeps its own units.
    for plan in [&probe, &tuned] {
        assert_eq!(
            run_command(plan, &out, &opts(ShardSpec::all()))
                .unwrap()
                .units_done,
            0
        );
    }
    let rows = read_csv(&out.join("results.csv"));
    assert_eq!(
        rows.len(),
        2 * 2 + 2,
        "probe rows, and fine-tuned rows at step24"
    );
    assert!(rows
        .iter()
        .all(|r| r["weak_mode"] == "finetune-all" && r["status"] == "ok"));

    let store = Store::open(out.join("results.sqlite")).unwrap();
    let s_probe = w2sg_sweep::Session::open(&probe).unwrap();
    let s_tuned = w2sg_sweep::Session::open(&tuned).unwrap();
    let ds = &s_tuned.resolved.datasets[0];
    let seeds = read_csv(&out.join("seeds.csv"));
    let mut accs = Vec::new();
    for seed in [0, 1] {
        let (p_test, _, p_key) = weak_unit(&s_probe, &store, seed);
        let (t_test, t_result, t_key) = weak_unit(&s_tuned, &store, seed);
        assert_ne!(p_key, t_key);
        assert_eq!(t_result["mode"], "finetune-all");
        // A different supervisor: its test predictions disagree with the probe's somewhere.
        let moved = p_test
            .iter()
            .zip(&t_test)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(moved > 0.05, "seed {seed}: largest change {moved}");
        // Its stored accuracy is that of its stored probabilities against the test labels (an
        // independent count, threshold 0.5).
        let labels = ds.labels_at(&ds.split(&s_tuned.resolved.plan.split, seed).unwrap().test);
        assert_eq!(labels.len(), t_test.len());
        let hits = t_test
            .iter()
            .zip(&labels)
            .filter(|(p, &y)| (**p > 0.5) == y)
            .count();
        let acc = hits as f64 / labels.len() as f64;
        assert!((t_result["accuracy"].as_f64().unwrap() - acc).abs() < 1e-12);
        // Trained on A's true labels, it is well above chance (0.79 and 0.75 when written).
        assert!(acc > 0.6, "seed {seed}: {acc}");
        for row in seeds.iter().filter(|r| r["seed"] == seed.to_string()) {
            assert!(
                (num(row, "acc_weak").unwrap() - acc).abs() < 1e-12,
                "{row:?}"
            );
        }
        accs.push(acc);
    }
    let mean = (accs[0] + accs[1]) / 2.0;
    for r in &rows {
        assert!((num(r, "acc_weak").unwrap() - mean).abs() < 1e-12, "{r:?}");
    }
    // The probe supervisor's key is the one it has always had: the weak model's fingerprint, the
    // dataset and the hash of {features, split, probe}, as before `[weak] train` existed.
    let r = &s_probe.resolved;
    for seed in [0, 1] {
        let features = w2sg_protocol::key::config_hash(&serde_json::json!({
            "layer": -1, "pooling": "mean", "max_tokens": 0, "dtype": "f32",
        }))
        .unwrap();
        let config = w2sg_protocol::key::config_hash(&serde_json::json!({
            "features": features, "split": r.plan.split, "probe": r.plan.probe,
        }))
        .unwrap();
        let old = w2sg_protocol::UnitSpec::new(
            w2sg_protocol::UnitKind::WeakLabels,
            &r.weak.content_id(),
            &r.datasets[0].fingerprint,
            &config,
        )
        .seed(seed)
        .key()
        .unwrap();
        assert_eq!(weak_unit(&s_probe, &store, seed).2, old);
    }

    // Any fine-tuning setting is part of the fine-tuned supervisor's key.
    let text = std::fs::read_to_string(&tuned)
        .unwrap()
        .replace("lr = 1e-3", "lr = 2e-3");
    let retuned = f.dir.join("plan-weak-ft-lr.toml");
    std::fs::write(&retuned, text).unwrap();
    let s_retuned = w2sg_sweep::Session::open(&retuned).unwrap();
    let r2 = &s_retuned.resolved;
    let key = |r: &w2sg_sweep::Resolved| {
        w2sg_sweep::specs::weak_spec(&r.plan, &r.weak, &r.datasets[0], 0)
            .unwrap()
            .key()
            .unwrap()
    };
    assert_ne!(key(r2), key(&s_tuned.resolved));

    // Every shard computes the fine-tuned supervisor, to the same bits: merging the shards into the
    // unsharded store finds every unit there already, identical (a different result is a conflict).
    let sharded = scratch("weak-ft-sharded");
    let mut shards = Vec::new();
    for i in 0..2 {
        run_command(&tuned, &sharded, &opts(ShardSpec::new(i, 2).unwrap())).unwrap();
        let db = sharded
            .join("shards")
            .join(format!("shard-{i}-of-2.sqlite"));
        let shard = Store::open(&db).unwrap();
        for seed in [0, 1] {
            let (_, _, key) = weak_unit(&s_tuned, &shard, seed);
            assert!(shard.get(&key).unwrap().is_some());
        }
        shards.push(db);
    }
    drop(store);
    let merged = w2sg_protocol::store::merge(out.join("results.sqlite"), &shards).unwrap();
    assert_eq!(merged.added, 0, "{merged:?}");
    assert!(merged.identical > 0, "{merged:?}");
}

#[test]
fn a_weak_model_the_fine_tuner_cannot_load_fails_its_units_and_a_bad_weak_train_is_a_plan_error() {
    let f = copy_fixture("weak-ft-broken");
    let plan = weak_train_plan(&f, "plan-weak-ft.toml", "finetune");
    std::fs::remove_file(f.weak.join("step8").join("tokenizer.json")).unwrap();
    let out = f.dir.join("out");
    let err = run_command(&plan, &out, &opts(ShardSpec::all())).unwrap_err();
    assert!(matches!(err, Error::UnitsFailed(2)), "{err}");
    assert_eq!(err.exit_code(), 1);
    for r in read_csv(&out.join("results.csv")) {
        assert_eq!(r["status"], "failed", "{r:?}");
        assert!(
            r["error"].contains("weak labels") && r["error"].contains("tokenizer"),
            "{}",
            r["error"]
        );
    }
    let failures = read_csv(&out.join("failures.csv"));
    assert!(failures.iter().all(|u| u["kind"] == "weak_labels"));

    let bad = std::fs::read_to_string(&plan)
        .unwrap()
        .replace("train = \"finetune\"", "train = \"fine-tune\"");
    std::fs::write(&plan, bad).unwrap();
    let err = run_command(&plan, &f.dir.join("out-bad"), &opts(ShardSpec::all())).unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(
        err.to_string().contains("weak.train") && err.to_string().contains("fine-tune"),
        "{err}"
    );
}

//! Hostile inputs to `w2sg sim run` / `sim theory` (issue 14, section 2): plans too large to hold,
//! configs that would run but mean nothing, unusable or shared output directories, and a crash while the
//! results are written. Each is an exit code and a message naming the file, key or path; none aborts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn w2sg() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_w2sg"));
    c.env_remove("W2SG_TEST_ABORT_AT");
    c
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2sg-hostile-sim-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sim(sub: &str, config: &Path, out: &Path) -> Output {
    w2sg()
        .args(["sim", sub])
        .arg(config)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2, no panic or abort, and every `needles` in the message.
fn refused(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        !e.contains("panicked") && !e.contains("memory allocation"),
        "{e}"
    );
    for n in needles {
        assert!(e.contains(n), "message should contain {n:?}: {e}");
    }
}

#[test]
fn plans_too_large_to_hold_are_refused_up_front_naming_the_key() {
    let dir = scratch("large");
    let values = |n: usize, scale: f64| {
        (0..n)
            .map(|i| format!("{}", scale * (i + 1) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let cases = [
        // d = 10¹²: the default n_pre = 4·d makes the spectral start's model 10¹² entries.
        (
            "d1e12.toml",
            "d = 1000000000000\n".to_string(),
            "pretrain.n_pre",
        ),
        // The full engine at d = 10⁸: a 4·10⁸ × 10⁸ pre-training matrix.
        (
            "full1e8.toml",
            "d = 100000000\nengine = \"full\"\n".to_string(),
            "pretrain.n_pre",
        ),
        // 4·10⁷ runs as seeds, and as a cartesian product.
        (
            "seeds.toml",
            "d = 100\nseeds = 40000000\n".to_string(),
            "seeds",
        ),
        (
            "product.toml",
            format!(
                "d = 100\nseeds = 1000\n[weak]\nrho = [{}]\n[sgd]\nlr = [{}]\n",
                values(200, 0.004),
                values(201, 0.001)
            ),
            "sgd.lr",
        ),
    ];
    for (name, text, key) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let started = Instant::now();
        let o = sim("run", &path, &dir.join("out"));
        refused(&o, &[name, key]);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name} was not refused up front"
        );
        assert!(!dir.join("out").exists(), "{name}: nothing may be written");
    }
    let o = sim("run", &dir.join("d1e12.toml"), &dir.join("out"));
    refused(&o, &["GB", "available"]);
}

#[test]
fn constant_links_and_negative_m0_are_bad_input() {
    let dir = scratch("meaningless");
    let cases = [
        (
            "zero.toml",
            "d = 100\nlink = { coefficients = [0.0, 0.0, 0.0] }\n",
            "link",
        ),
        (
            "constant.toml",
            "d = 100\nlink = { coefficients = [1.5] }\n",
            "constant link",
        ),
        (
            "weak.toml",
            "d = 100\n[weak]\nlink = { coefficients = [0.3, 0.0] }\n",
            "weak.link",
        ),
        (
            "m0.toml",
            "d = 100\ninit = \"overlap\"\nm0 = -0.3\n",
            "`m0`",
        ),
    ];
    for (name, text, key) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        for sub in ["run", "theory"] {
            refused(&sim(sub, &path, &dir.join("out")), &[name, key]);
        }
    }
}

const SMALL: &str = "d = 50\nlink = \"he2\"\ninit = \"overlap\"\nm0 = 0.5\nseeds = 1\n\
                     [sgd]\nlr = 0.05\ntau_max = 2.0\n[metrics]\npoints = 5\n";

#[test]
fn an_unusable_out_is_refused_before_computing() {
    let dir = scratch("out");
    let config = dir.join("c.toml");
    std::fs::write(&config, SMALL).unwrap();
    for sub in ["run", "theory"] {
        refused(
            &sim(sub, &config, Path::new("/proc/x/y")),
            &["--out /proc/x/y"],
        );
        // A file where the directory should be.
        let file = dir.join("a-file");
        std::fs::write(&file, "mine").unwrap();
        refused(&sim(sub, &config, &file), &["not a directory"]);
        // A directory with the user's own files: replacing it would lose them.
        let mine = dir.join("mine");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
        refused(&sim(sub, &config, &mine), &["notes.txt"]);
        assert_eq!(
            std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
            "keep me"
        );
    }
}

#[test]
fn a_swept_m0_gives_one_column_per_name() {
    let dir = scratch("m0");
    let config = dir.join("c.toml");
    std::fs::write(&config, SMALL.replace("m0 = 0.5", "m0 = [0.2, 0.6]")).unwrap();
    for sub in ["run", "theory"] {
        let out = dir.join(sub);
        let o = sim(sub, &config, &out);
        assert!(o.status.success(), "{}", stderr(&o));
        let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
        let header: Vec<&str> = summary.lines().next().unwrap().split(',').collect();
        let mut sorted = header.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            header.len(),
            "a column name repeats: {header:?}"
        );
        let at = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (config_m0, m0) = (at("config.m0"), at("m0"));
        let row: Vec<&str> = summary.lines().nth(2).unwrap().split(',').collect();
        assert_eq!(row[config_m0], "0.6");
        assert!(
            (row[m0].parse::<f64>().unwrap() - 0.6).abs() < 1e-9,
            "{row:?}"
        );
    }
}

#[test]
fn a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over() {
    let dir = scratch("lock");
    let config = dir.join("c.toml");
    std::fs::write(&config, SMALL).unwrap();
    let out = dir.join("o");
    let lock = dir.join(".o.w2sg-lock");
    // A live holder: this test process.
    std::fs::write(&lock, std::process::id().to_string()).unwrap();
    refused(
        &sim("run", &config, &out),
        &[
            "another w2sg process",
            &std::process::id().to_string(),
            ".o.w2sg-lock",
        ],
    );
    assert!(!out.exists());
    // A holder that is gone (no such pid): a killed run's lock.
    std::fs::write(&lock, "999999999").unwrap();
    let o = sim("run", &config, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!lock.exists(), "the lock is released");
    assert!(out.join("summary.json").exists());
}

#[test]
fn concurrent_runs_on_one_out_never_mix_their_files() {
    let dir = scratch("concurrent");
    let config = dir.join("c.toml");
    std::fs::write(&config, SMALL.replace("tau_max = 2.0", "tau_max = 40000.0")).unwrap();
    let out = dir.join("o");
    for _ in 0..4 {
        let spawn = || {
            w2sg()
                .args(["sim", "run"])
                .arg(&config)
                .arg("--out")
                .arg(&out)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        for child in [a, b] {
            let o = child.wait_with_output().unwrap();
            match o.status.code() {
                Some(0) => {}
                Some(2) => assert!(
                    stderr(&o).contains("another w2sg process"),
                    "{}",
                    stderr(&o)
                ),
                other => panic!("exit {other:?}: {}", stderr(&o)),
            }
        }
        let json = std::fs::read_to_string(out.join("summary.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&json).expect("summary.json holds JSON");
        assert!(std::fs::read_to_string(out.join("summary.csv"))
            .unwrap()
            .starts_with("run,"));
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n.contains("w2sg-new") || n.contains("w2sg-lock")),
            "{names:?}"
        );
    }
}

#[test]
fn a_crash_while_writing_leaves_the_old_results_whole() {
    let dir = scratch("crash");
    let (a, b) = (dir.join("a.toml"), dir.join("b.toml"));
    std::fs::write(&a, SMALL).unwrap();
    std::fs::write(&b, SMALL.replace("seeds = 1", "seeds = 2")).unwrap();
    let out = dir.join("o");
    let o = sim("run", &a, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let before: Vec<(String, Vec<u8>)> = [
        "config.toml",
        "summary.csv",
        "summary.json",
        "trajectory.csv",
    ]
    .iter()
    .map(|n| (n.to_string(), std::fs::read(out.join(n)).unwrap()))
    .collect();
    for k in 1..=3 {
        let o = w2sg()
            .args(["sim", "run"])
            .arg(&b)
            .arg("--out")
            .arg(&out)
            .env("W2SG_TEST_ABORT_AT", format!("sim-write:{k}"))
            .output()
            .unwrap();
        assert!(!o.status.success(), "the hook aborts");
        assert!(
            std::fs::read_dir(&dir).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".o.w2sg-new-")),
            "the killed run left its staged set"
        );
        for (name, bytes) in &before {
            assert_eq!(
                &std::fs::read(out.join(name)).unwrap(),
                bytes,
                "{name} after a crash at file {k}"
            );
        }
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            4,
            "no partial files in --out"
        );
    }
    // The next run takes over the dead run's lock, replaces the whole set and cleans up after the
    // killed runs.
    let o = sim("run", &b, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".o."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        std::fs::read_to_string(out.join("config.toml")).unwrap(),
        SMALL.replace("seeds = 1", "seeds = 2")
    );
    assert_eq!(
        std::fs::read_to_string(out.join("summary.csv"))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

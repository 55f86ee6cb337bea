//! The `w2sg` binary as a user meets it: exit codes, messages and files.

use std::path::PathBuf;
use std::process::Command;

fn w2sg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_w2sg"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2sg-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn bad_configs_exit_2_naming_file_and_key() {
    let dir = scratch("bad");
    let cases = [
        ("unknown.toml", "d = 100\nfoo = 1\n", "foo"),
        ("type.toml", "d = 100\n[sgd]\nlr = \"fast\"\n", "sgd.lr"),
        ("zero_d.toml", "d = 0\n", "`d`"),
        ("rho.toml", "d = 100\n[weak]\nrho = -1.5\n", "weak.rho"),
        ("lr.toml", "d = 100\n[sgd]\nlr = 0\n", "sgd.lr"),
        ("link.toml", "d = 100\nlink = \"cosh\"\n", "link"),
        ("syntax.toml", "d = = 3\n", "TOML"),
    ];
    for (name, text, key) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        for sub in ["run", "theory"] {
            let out = w2sg()
                .args(["sim", sub])
                .arg(&path)
                .arg("--out")
                .arg(dir.join("out"))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
            assert!(
                stderr.contains(name) && stderr.contains(key),
                "{name}: message should name file and key: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
    let out = w2sg()
        .args(["sim", "run"])
        .arg(dir.join("missing.toml"))
        .arg("--out")
        .arg(dir.join("o"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    let out = w2sg().args(["sim", "run", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_and_theory_write_matching_tables() {
    let dir = scratch("ok");
    let config = dir.join("c.toml");
    std::fs::write(&config, "d = 200\nlink = \"he2\"\ninit = \"overlap\"\nm0 = 0.5\nseeds = 2\n[weak]\nrho = [0.5, 0.9]\n[sgd]\nlr = 0.05\ntau_max = 2.0\n[metrics]\npoints = 5\n").unwrap();
    let sim = w2sg()
        .args(["sim", "run"])
        .arg(&config)
        .arg("--out")
        .arg(dir.join("sim"))
        .output()
        .unwrap();
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    let theory = w2sg()
        .args(["sim", "theory"])
        .arg(&config)
        .arg("--out")
        .arg(dir.join("theory"))
        .output()
        .unwrap();
    assert!(
        theory.status.success(),
        "{}",
        String::from_utf8_lossy(&theory.stderr)
    );

    let summary = std::fs::read_to_string(dir.join("sim/summary.csv")).unwrap();
    let header = summary.lines().next().unwrap();
    for col in [
        "run",
        "seed",
        "weak.rho",
        "m0",
        "m_peak",
        "tau_peak",
        "m_final",
        "risk_weak",
        "risk_w2s_final",
        "risk_ceiling_final",
        "pgr_peak",
        "pgr_final",
    ] {
        assert!(
            header.split(',').any(|h| h == col),
            "summary.csv lacks {col}: {header}"
        );
    }
    assert_eq!(
        summary.lines().count(),
        1 + 4,
        "4 runs = 2 rho values × 2 seeds"
    );
    let traj = std::fs::read_to_string(dir.join("sim/trajectory.csv")).unwrap();
    assert!(traj.starts_with("run,seed,t,tau,m,r,s,m_ceiling,risk_w2s,risk_ceiling,pgr"));
    let theory_traj = std::fs::read_to_string(dir.join("theory/trajectory.csv")).unwrap();
    // Same τ grid: each theory grid point has as many rows as each simulated run.
    let rows_per_run = traj.lines().skip(1).filter(|l| l.starts_with("0,")).count();
    let theory_rows = theory_traj
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("0,"))
        .count();
    assert_eq!(rows_per_run, theory_rows);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sim/summary.json")).unwrap())
            .unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 4);
    assert_eq!(json["runs"][3]["swept"]["weak.rho"], "0.9");
    assert!(dir.join("sim/config.toml").exists());
}

#[test]
fn a_diverging_run_is_reported_and_the_others_are_kept() {
    let dir = scratch("diverge");
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        "d = 20\nlink = \"he4\"\ninit = \"random\"\n[sgd]\nlr = [0.01, 1e305]\ntau_max = 5.0\n",
    )
    .unwrap();
    let out = w2sg()
        .args(["sim", "run"])
        .arg(&config)
        .arg("--out")
        .arg(dir.join("o"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("diverged at sample"), "{stderr}");
    let summary = std::fs::read_to_string(dir.join("o/summary.csv")).unwrap();
    let rows: Vec<&str> = summary.lines().skip(1).collect();
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0].ends_with(','),
        "first run succeeded, so its error cell is empty: {}",
        rows[0]
    );
    assert!(rows[1].contains("diverged"), "{}", rows[1]);
}

#[test]
fn lm_features_reads_weak_to_strong_jsonl_and_names_bad_lines() {
    let dir = scratch("lm-features");
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lm/tests/fixtures/neox-parallel-rot25"
    );
    let data = dir.join("task.jsonl");
    std::fs::write(&data, "{\"txt\": \"hello world\", \"hard_label\": 1}\n{\"txt\": \"the quick brown fox\", \"hard_label\": 0}\n").unwrap();
    let out = dir.join("features.safetensors");
    let run = w2sg()
        .args(["lm", "features", "--model", model, "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        std::fs::metadata(&out).unwrap().len() > 2 * 32 * 4,
        "two 32-dim f32 feature rows at least"
    );
    std::fs::write(&data, "{\"txt\": \"fine\", \"hard_label\": 1}\nnot json\n").unwrap();
    let run = w2sg()
        .args(["lm", "features", "--model", model, "--data"])
        .arg(&data)
        .arg("--out")
        .arg(dir.join("g.npy"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("task.jsonl:2") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn sweep_bad_input_exits_2_naming_the_file() {
    let dir = scratch("sweep-bad");
    let plan = dir.join("plan.toml");
    std::fs::write(&plan, "seeds = [0]\nlosses = [\"hinge\"]\n").unwrap();
    let out = w2sg()
        .args(["sweep"])
        .arg(&plan)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("plan.toml") && stderr.contains("family"),
        "{stderr}"
    );

    let out = w2sg().args(["sweep"]).arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "missing --out");
    let out = w2sg()
        .args(["sweep", "--shard", "3/2"])
        .arg(&plan)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("3/2"), "{stderr}");

    let missing = dir.join("missing.toml");
    let out = w2sg()
        .args(["sweep"])
        .arg(&missing)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

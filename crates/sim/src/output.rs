//! Result tables of `sim run` and `sim theory`: `summary.csv`, `summary.json`, `trajectory.csv`.
//!
//! One summary row per run (per grid point for theory), with the swept config values as columns, so a
//! plot or a dataframe can group by them directly. Undefined values (PGR with no gap, a failed run's
//! metrics) are empty cells in CSV and `null` in JSON, never a made-up number. The tables are built in
//! memory and handed to `OutDir::commit` (crate::outdir), which switches the whole set in at once.

use serde_json::{json, Value};

use crate::config::Plan;
use crate::engine::{engine_for, RunOutput, SimError, TrajectoryPoint};
use crate::prediction::TheoryOutput;

/// The files of one result set: (name in the output directory, bytes).
pub type Files = Vec<(&'static str, Vec<u8>)>;

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_default()
}

fn csv_bytes(header: &[String], rows: &[Vec<String>]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header).expect("in-memory write");
    for row in rows {
        w.write_record(row).expect("in-memory write");
    }
    w.into_inner().expect("in-memory flush")
}

/// The outcome columns of `summary.csv`, in order (shared by simulation and theory, and by the Python
/// bindings, which return the same columns).
pub const SUMMARY_FIELDS: &[&str] = &[
    "m0",
    "r0",
    "rho_weak",
    "m_peak",
    "tau_peak",
    "m_final",
    "m_ceiling_final",
    "risk_weak",
    "risk_w2s_min",
    "tau_risk_min",
    "risk_w2s_final",
    "risk_ceiling_final",
    "pgr_peak",
    "pgr_final",
];

/// The three result tables of a `sim` command.
fn tables(
    header: &[String],
    rows: &[Vec<String>],
    trajectory: &[Vec<String>],
    doc: &Value,
) -> Files {
    let traj_header: Vec<String> = TRAJECTORY_HEADER.iter().map(|s| s.to_string()).collect();
    vec![
        ("summary.csv", csv_bytes(header, rows)),
        ("trajectory.csv", csv_bytes(&traj_header, trajectory)),
        (
            "summary.json",
            serde_json::to_string_pretty(doc)
                .expect("json")
                .into_bytes(),
        ),
    ]
}

/// Column names of the swept keys: a swept key that is also a result column (`m0`: the configured
/// initial overlap beside the measured one) is prefixed with `config.`, so no header appears twice.
pub fn swept_columns(plan: &Plan) -> Vec<String> {
    plan.swept_keys
        .iter()
        .map(|k| {
            if SUMMARY_FIELDS.contains(&k.as_str()) {
                format!("config.{k}")
            } else {
                k.clone()
            }
        })
        .collect()
}

/// The columns of `trajectory.csv`, in order.
pub const TRAJECTORY_HEADER: &[&str] = &[
    "run",
    "seed",
    "t",
    "tau",
    "m",
    "r",
    "s",
    "m_ceiling",
    "risk_w2s",
    "risk_ceiling",
    "pgr",
];

fn trajectory_row(run: usize, seed: &str, p: &TrajectoryPoint) -> Vec<String> {
    vec![
        run.to_string(),
        seed.to_string(),
        p.t.to_string(),
        num(p.tau),
        num(p.m),
        num(p.r),
        num(p.s),
        num(p.m_ceiling),
        num(p.risk_w2s),
        num(p.risk_ceiling),
        opt(p.pgr),
    ]
}

/// Summary values in `SUMMARY_FIELDS` order, read from the serialized summary.
fn summary_cells(summary: &Value) -> Vec<String> {
    SUMMARY_FIELDS
        .iter()
        .map(|f| {
            summary
                .get(*f)
                .and_then(Value::as_f64)
                .map(num)
                .unwrap_or_default()
        })
        .collect()
}

/// The columns `sim run` adds after [`SUMMARY_FIELDS`].
pub const RUN_FIELDS: [&str; 6] = [
    "spectral_eigenvalue",
    "lanczos_iterations",
    "sign_flipped",
    "engine",
    "fallback_reason",
    "error",
];

/// The tables of `sim run`. `results[i]` belongs to run i, that is grid point `i / seeds` and seed
/// `seeds[i % seeds]`.
pub fn simulation_tables(
    plan: &Plan,
    config_file: &str,
    results: &[Result<RunOutput, SimError>],
) -> Files {
    let mut header: Vec<String> = vec!["run".into(), "grid".into(), "seed".into()];
    header.extend(swept_columns(plan));
    header.extend(SUMMARY_FIELDS.iter().map(|s| s.to_string()));
    header.extend(RUN_FIELDS.map(String::from));
    let mut rows = Vec::new();
    let mut runs_json = Vec::new();
    let mut traj_rows = Vec::new();
    for (run, result) in results.iter().enumerate() {
        let grid = run / plan.seeds.len();
        let seed = plan.seeds[run % plan.seeds.len()];
        let point = &plan.grid[grid];
        let mut row = vec![run.to_string(), grid.to_string(), seed.to_string()];
        row.extend(point.swept.iter().map(|(_, v)| v.clone()));
        let swept: serde_json::Map<String, Value> = point
            .swept
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        match result {
            Ok(out) => {
                let summary = serde_json::to_value(&out.summary).expect("serializable");
                row.extend(summary_cells(&summary));
                match &out.summary.spectral {
                    Some(s) => row.extend([
                        num(s.eigenvalue),
                        s.lanczos_iterations.to_string(),
                        s.sign_flipped.to_string(),
                    ]),
                    None => row.extend([String::new(), String::new(), String::new()]),
                }
                row.push(out.summary.engine.as_str().to_string());
                row.push(out.summary.fallback_reason.clone().unwrap_or_default());
                row.push(String::new());
                let seed_s = seed.to_string();
                traj_rows.extend(
                    out.trajectory
                        .iter()
                        .map(|p| trajectory_row(run, &seed_s, p)),
                );
                runs_json.push(json!({"run": run, "grid": grid, "seed": seed, "swept": swept, "config": point.config.raw, "summary": summary, "error": null}));
            }
            Err(e) => {
                row.extend(std::iter::repeat_n(String::new(), SUMMARY_FIELDS.len() + 3));
                // Which engine failed is known from the config alone.
                let (engine, reason) = engine_for(&point.config);
                row.push(engine.as_str().to_string());
                row.push(reason.unwrap_or_default());
                row.push(e.to_string());
                runs_json.push(json!({"run": run, "grid": grid, "seed": seed, "swept": swept, "config": point.config.raw, "summary": null, "error": e.to_string()}));
            }
        }
        rows.push(row);
    }
    let doc = json!({
        "software": format!("w2sg {}", env!("CARGO_PKG_VERSION")),
        "kind": "simulation",
        "config_file": config_file,
        "swept_keys": plan.swept_keys,
        "seeds": plan.seeds,
        "runs": runs_json,
    });
    tables(&header, &rows, &traj_rows, &doc)
}

/// The columns `sim theory` adds after [`SUMMARY_FIELDS`].
pub const THEORY_FIELDS: [&str; 6] = [
    "bbp_overlap",
    "bbp_eigenvalue",
    "above_bbp",
    "geodesic_peak",
    "information_exponent",
    "escape_samples",
];

/// The tables of `sim theory`: one row per grid point, seed empty.
pub fn theory_tables(plan: &Plan, config_file: &str, results: &[TheoryOutput]) -> Files {
    let extra = THEORY_FIELDS;
    let mut header: Vec<String> = vec!["run".into(), "grid".into(), "seed".into()];
    header.extend(swept_columns(plan));
    header.extend(SUMMARY_FIELDS.iter().map(|s| s.to_string()));
    header.extend(extra.map(String::from));
    let mut rows = Vec::new();
    let mut traj_rows = Vec::new();
    let mut runs_json = Vec::new();
    for (grid, (out, point)) in results.iter().zip(&plan.grid).enumerate() {
        let summary = serde_json::to_value(&out.summary).expect("serializable");
        let mut row = vec![grid.to_string(), grid.to_string(), String::new()];
        row.extend(point.swept.iter().map(|(_, v)| v.clone()));
        row.extend(summary_cells(&summary));
        row.extend(extra.iter().map(|k| match summary.get(*k) {
            Some(Value::Number(n)) => n.as_f64().map(num).unwrap_or_default(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => String::new(),
        }));
        rows.push(row);
        traj_rows.extend(out.trajectory.iter().map(|p| trajectory_row(grid, "", p)));
        let swept: serde_json::Map<String, Value> = point
            .swept
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        runs_json.push(json!({"run": grid, "grid": grid, "seed": null, "swept": swept, "config": point.config.raw, "summary": summary}));
    }
    let doc = json!({
        "software": format!("w2sg {}", env!("CARGO_PKG_VERSION")),
        "kind": "theory",
        "config_file": config_file,
        "swept_keys": plan.swept_keys,
        "runs": runs_json,
    });
    tables(&header, &rows, &traj_rows, &doc)
}

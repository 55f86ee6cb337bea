//! Running one sweep for a figure: a config text through the engine and the theory, grouped by grid point.
//!
//! Every figure's data comes from config texts in the same format users write, so the report can print
//! the exact config of every figure and a reader can rerun any of them with `w2sg sim run`.

use rayon::prelude::*;
use w2sg_sim::config::Plan;
use w2sg_sim::engine::{simulate_all, RunOutput};
use w2sg_sim::prediction::{predict, TheoryOutput};

use std::sync::atomic::{AtomicUsize, Ordering};

use w2sg_sim::engine::EngineKind;

use crate::{Options, ReproError};

/// Runs per engine since the last [`take_engine_counts`]: (reduced, full), for the report.
static REDUCED_RUNS: AtomicUsize = AtomicUsize::new(0);
static FULL_RUNS: AtomicUsize = AtomicUsize::new(0);

/// (reduced, full) runs since the last call.
pub fn take_engine_counts() -> (usize, usize) {
    (
        REDUCED_RUNS.swap(0, Ordering::Relaxed),
        FULL_RUNS.swap(0, Ordering::Relaxed),
    )
}

/// A finished sweep: the plan, each run's output (grid-major, seed-minor) and the theory per grid point.
pub struct Sweep {
    pub name: String,
    pub config_text: String,
    pub plan: Plan,
    pub runs: Vec<RunOutput>,
    pub theory: Vec<TheoryOutput>,
}

impl Sweep {
    /// Runs every (grid point, seed) of `config_text` on `opts.threads` threads, reporting its work
    /// to `opts.progress` (one phase, its status the sweep's name).
    pub fn run(
        name: &str,
        config_text: &str,
        opts: &Options,
        with_theory: bool,
    ) -> Result<Self, ReproError> {
        let plan = Plan::parse(config_text, name).map_err(|e| ReproError::Config(e.to_string()))?;
        let jobs = plan.jobs();
        let progress = &opts.progress;
        // Simulation cost has no unit a reader would count in: the front end shows a percentage.
        progress.phase(plan.cost(), 0, "");
        progress.status(name);
        let results = simulate_all(&jobs, opts.threads, &|n| progress.advance(n));
        progress.end_phase();
        let mut runs = Vec::with_capacity(results.len());
        for (i, r) in results.into_iter().enumerate() {
            let run = r.map_err(|e| ReproError::Run(format!("{name}, run {i}: {e}")))?;
            match run.summary.engine {
                EngineKind::Reduced => REDUCED_RUNS.fetch_add(1, Ordering::Relaxed),
                EngineKind::Full => FULL_RUNS.fetch_add(1, Ordering::Relaxed),
            };
            runs.push(run);
        }
        let theory = if with_theory {
            plan.grid.par_iter().map(|g| predict(&g.config)).collect()
        } else {
            Vec::new()
        };
        Ok(Sweep {
            name: name.to_string(),
            config_text: config_text.to_string(),
            plan,
            runs,
            theory,
        })
    }

    pub fn seeds(&self) -> usize {
        self.plan.seeds.len()
    }

    /// The runs of grid point `g`.
    pub fn runs_of(&self, g: usize) -> &[RunOutput] {
        let s = self.seeds();
        &self.runs[g * s..(g + 1) * s]
    }

    /// The swept value of `key` at grid point `g`, as written.
    pub fn value(&self, g: usize, key: &str) -> &str {
        self.plan.grid[g]
            .swept
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// The swept value of `key` at grid point `g`, as a number (NaN if not numeric).
    pub fn number(&self, g: usize, key: &str) -> f64 {
        self.value(g, key).parse().unwrap_or(f64::NAN)
    }

    /// Grid points whose swept numeric values equal all `(key, value)` pairs (relative tolerance 1e-9).
    pub fn select_num(&self, filter: &[(&str, f64)]) -> Vec<usize> {
        (0..self.plan.grid.len())
            .filter(|&g| {
                filter
                    .iter()
                    .all(|(k, v)| (self.number(g, k) - v).abs() <= 1e-9 * v.abs().max(1.0))
            })
            .collect()
    }

    /// Grid points whose swept values match all `(key, value)` pairs.
    pub fn select(&self, filter: &[(&str, &str)]) -> Vec<usize> {
        (0..self.plan.grid.len())
            .filter(|&g| filter.iter().all(|(k, v)| self.value(g, k) == *v))
            .collect()
    }
}

/// Mean and sample standard deviation (0 for one value); NaNs are skipped, and all-NaN gives NaN.
pub fn mean_sd(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, sd)
}

/// Mean and sd over runs of one trajectory field, at each grid time.
pub fn trajectory_band(
    runs: &[RunOutput],
    field: impl Fn(&w2sg_sim::engine::TrajectoryPoint) -> f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = runs[0].trajectory.len();
    let taus = runs[0].trajectory.iter().map(|p| p.tau).collect();
    let (means, sds) = (0..n)
        .map(|i| mean_sd(runs.iter().map(|r| field(&r.trajectory[i]))))
        .unzip();
    (taus, means, sds)
}

/// A tidy CSV table.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.header.len());
        self.rows.push(row);
    }

    pub fn to_csv(&self) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&self.header).expect("in-memory");
        for r in &self.rows {
            w.write_record(r).expect("in-memory");
        }
        w.into_inner().expect("in-memory")
    }
}

/// A number for a CSV cell: empty when not finite.
pub fn cell(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}

/// An optional number for a CSV cell.
pub fn opt_cell(v: Option<f64>) -> String {
    v.map(cell).unwrap_or_default()
}

//! Memory and work of a plan, estimated before anything runs, so that a config that cannot fit is
//! refused with a message naming the key and the estimate (exit code 2) instead of aborting on an
//! allocation failure part-way.
//!
//! The estimates are upper bounds of the large allocations, not exact accounting: on the full engine
//! the f32 pre-training matrix (n_pre × d), the Lanczos basis (up to 300 vectors of d), the Monte Carlo
//! test set (n_test × d, f32) and the d-dimensional students and samples; on the reduced engine the
//! spectral start's bidiagonal model (a dozen arrays of min(n_pre, d)); and for every run its
//! trajectory and its rows in the result tables, which are held until the tables are written. Runs in
//! flight at once are as many as the worker threads.
//!
//! Work is counted in elementary operations (about 6·d per sample on the full engine, 40 on the
//! reduced one, plus the spectral start); a plan of more than [`MAX_OPERATIONS`] (about three years of
//! one core) is refused as well: that is a typo in `d` or `tau_max`, not an experiment.

use crate::config::{ConfigError, Init, Plan, RiskMethod, SimConfig, Weak};
use crate::engine::{engine_for, run_cost, EngineKind};

/// Plans with more elementary operations than this are refused.
pub const MAX_OPERATIONS: f64 = 1e17;

/// Bytes each run's trajectory and table rows hold per recorded point (strings of ~11 numbers).
const BYTES_PER_POINT: f64 = 800.0;
/// Bytes each run holds besides its trajectory (summary, config, JSON).
const BYTES_PER_RUN: f64 = 4096.0;

/// One run's estimate: peak bytes, operations, and the key behind the largest memory term.
#[derive(Clone, Debug, PartialEq)]
pub struct RunEstimate {
    pub bytes: f64,
    pub operations: f64,
    pub key: &'static str,
    pub what: &'static str,
    /// The key behind the largest work term.
    pub work_key: &'static str,
}

/// The estimate of one run of `config`.
pub fn run_estimate(config: &SimConfig) -> RunEstimate {
    let d = config.d as f64;
    let full = engine_for(config).0 == EngineKind::Full;
    let mut terms: Vec<(f64, &'static str, &'static str)> = Vec::new();
    let samples = run_cost(config) as f64;
    let mut work: Vec<(f64, &'static str)> =
        vec![(samples * if full { 6.0 * d } else { 40.0 }, "sgd.tau_max")];
    if full {
        terms.push((
            8.0 * d * (config.batch as f64 + 8.0),
            "d",
            "the d-dimensional students and samples",
        ));
        if let Weak::Trained { .. } = config.weak {
            terms.push((8.0 * d * 4.0, "weak.n_train", "the trained weak model"));
        }
        if config.risk == RiskMethod::MonteCarlo {
            terms.push((
                4.0 * config.n_test as f64 * d,
                "metrics.n_test",
                "the Monte Carlo test set (n_test × d)",
            ));
            work.push((
                2.0 * config.n_test as f64 * d * (config.points as f64 + 1.0),
                "metrics.n_test",
            ));
        }
    }
    if let Init::Spectral { n_pre, .. } = config.init {
        let n = n_pre as f64;
        if full {
            terms.push((
                4.0 * n * d,
                "pretrain.n_pre",
                "the n_pre × d pre-training matrix of the full engine",
            ));
            terms.push((8.0 * d * d.min(300.0), "d", "the Lanczos basis"));
            work.push((2.0 * n * d * d.min(300.0), "pretrain.n_pre"));
        } else {
            let m = n.min(d);
            terms.push((
                96.0 * m,
                "pretrain.n_pre",
                "the bidiagonal model of the spectral start (min(n_pre, d) entries)",
            ));
            work.push((200.0 * m, "pretrain.n_pre"));
        }
    }
    let points = config.points as f64 + 1.0;
    terms.push((
        BYTES_PER_RUN + BYTES_PER_POINT * points,
        "metrics.points",
        "the run's trajectory and table rows",
    ));
    let bytes = terms.iter().map(|t| t.0).sum();
    let operations = work.iter().map(|t| t.0).sum();
    let (_, work_key) = work
        .into_iter()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .expect("at least one term");
    let (_, key, what) = terms
        .into_iter()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .expect("at least one term");
    RunEstimate {
        bytes,
        operations,
        key,
        what,
        work_key,
    }
}

/// The plan's estimate with `threads` runs in flight.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanEstimate {
    pub bytes: f64,
    pub operations: f64,
}

pub use w2sg_fsio::available_memory;

fn gb(bytes: f64) -> String {
    format!("{:.3} GB", bytes / 1e9)
}

/// Checks that `plan` fits in `available` bytes (none: not checked) with `threads` runs at once and
/// does not exceed [`MAX_OPERATIONS`]; the error names the key behind the estimate.
pub fn check_plan(
    plan: &Plan,
    file: &str,
    threads: usize,
    available: Option<f64>,
) -> Result<PlanEstimate, ConfigError> {
    let fail = |key: &str, message: String| ConfigError {
        file: file.to_string(),
        key: Some(key.to_string()),
        message,
    };
    let runs = plan.len() as f64;
    let seeds = plan.seeds.len() as f64;
    let estimates: Vec<RunEstimate> = plan.grid.iter().map(|g| run_estimate(&g.config)).collect();
    let in_flight = (threads.max(1) as f64).min(runs);
    // Every run's table rows are held until the end; the largest runs' working memory at once.
    let held: f64 = estimates
        .iter()
        .map(|e| seeds * (BYTES_PER_RUN + BYTES_PER_POINT * 41.0).min(e.bytes))
        .sum();
    let largest = estimates
        .iter()
        .max_by(|a, b| a.bytes.total_cmp(&b.bytes))
        .expect("a plan has at least one grid point");
    let bytes = held + in_flight * largest.bytes;
    let operations: f64 = estimates.iter().map(|e| seeds * e.operations).sum();
    if let Some(avail) = available {
        if bytes > avail {
            let key = if largest.bytes * in_flight >= held {
                largest.key
            } else if plan.seeds.len() > 1 {
                "seeds"
            } else {
                "metrics.points"
            };
            return Err(fail(
                key,
                format!(
                    "the plan needs an estimated {} of memory ({} runs, {} at once; largest \
                     single term: {}, {} per run), more than the {} available",
                    gb(bytes),
                    runs,
                    in_flight,
                    largest.what,
                    gb(largest.bytes),
                    gb(avail)
                ),
            ));
        }
    }
    if operations > MAX_OPERATIONS {
        let heaviest = estimates
            .iter()
            .max_by(|a, b| a.operations.total_cmp(&b.operations))
            .expect("non-empty");
        // One absurd run (d or tau_max) or too many ordinary ones.
        let key = if heaviest.operations > MAX_OPERATIONS / 10.0 {
            heaviest.work_key
        } else {
            "seeds"
        };
        return Err(fail(
            key,
            format!(
                "the plan needs an estimated {operations:.2e} elementary operations (about {:.0} \
                 core-days at 10⁹ per second; {} runs of up to {:.2e} each): more than the {:.0e} \
                 allowed; check d and sgd.tau_max",
                operations / 1e9 / 86400.0,
                runs,
                heaviest.operations,
                MAX_OPERATIONS
            ),
        ));
    }
    Ok(PlanEstimate { bytes, operations })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Plan {
        Plan::parse(text, "t.toml").unwrap()
    }

    #[test]
    fn the_largest_term_names_the_key() {
        // Full engine, spectral: the f32 pre-training matrix dominates.
        let p = plan("d = 1000\nengine = \"full\"\n[pretrain]\nn_pre = 2000\n");
        let e = run_estimate(&p.grid[0].config);
        assert_eq!(e.key, "pretrain.n_pre");
        assert!(
            e.bytes >= 4.0 * 2000.0 * 1000.0 && e.bytes < 2.0 * 4.0 * 2000.0 * 1000.0,
            "{e:?}"
        );
        // Reduced engine from a random start: only the trajectory, whatever d is.
        let p = plan("d = 1000000\ninit = \"random\"\n");
        let e = run_estimate(&p.grid[0].config);
        assert_eq!(e.key, "metrics.points");
        assert!(e.bytes < 1e6, "{e:?}");
        // Monte Carlo risk on the full engine: the test set.
        let p = plan(
            "d = 10000\ninit = \"random\"\n[metrics]\nrisk = \"monte_carlo\"\nn_test = 100000\n",
        );
        assert_eq!(run_estimate(&p.grid[0].config).key, "metrics.n_test");
    }

    #[test]
    fn plans_are_checked_against_the_memory_given() {
        let p = plan("d = 100000\nengine = \"full\"\n");
        // 4·10⁵ × 10⁵ f32 = 160 GB.
        let e = check_plan(&p, "t.toml", 2, Some(16e9)).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("pretrain.n_pre"));
        assert!(
            e.message.contains("160.") && e.message.contains("16.000 GB"),
            "{}",
            e.message
        );
        // Unknown memory: not checked (about 3·10¹³ operations is allowed) ...
        check_plan(&p, "t.toml", 2, None).unwrap();
        // ... but the work still is: Lanczos on a 4·10⁷ × 10⁷ matrix, 2.4·10¹⁷.
        let p = plan("d = 10000000\nengine = \"full\"\n");
        let e = check_plan(&p, "t.toml", 2, None).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("pretrain.n_pre"));
        assert!(e.message.contains("elementary operations"), "{}", e.message);
        // A long run on the reduced engine: τ names it.
        let p = plan("d = 1000000000000\ninit = \"random\"\n[sgd]\ntau_max = 1e6\n");
        let e = check_plan(&p, "t.toml", 2, None).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sgd.tau_max"));
        let ok = plan("d = 1000\n");
        let est = check_plan(&ok, "t.toml", 2, Some(16e9)).unwrap();
        assert!(est.bytes > 0.0 && est.operations > 0.0);
    }
}

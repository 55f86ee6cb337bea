//! Simulation engines: one run, and many runs in parallel.
//!
//! A run is a validated [`SimConfig`] and a seed. Its random streams are derived from
//! `(seed, config key, purpose)`, so a run's numbers depend only on what it is, never on the thread that
//! ran it or on the other runs of its sweep. Runs are spread over a rayon pool; each run is sequential.
//!
//! Two engines simulate the same process. The full engine here stores the d-dimensional students and
//! pays O(d) per sample. The reduced engine ([`crate::reduced`]) tracks the students in a 5-dimensional
//! frame and pays O(1) per sample, exact in distribution; it is the default wherever it applies
//! (`engine = "auto"`), and [`simulate`] says in each run's summary which engine ran and why it fell
//! back when it did.

use rayon::prelude::*;

use crate::config::{EngineChoice, SimConfig};

pub use crate::full::simulate_full;
pub use crate::model::finetune_law;
pub use crate::outcome::{
    pgr, EngineKind, Outcome, RunOutput, RunSummary, SimError, SpectralInfo, TrajectoryPoint,
};

/// Simulates one run on the engine the config asks for (`auto`: reduced where it applies).
/// `progress(n)` is called with numbers of samples processed as they are.
pub fn simulate(
    config: &SimConfig,
    seed: u64,
    progress: &dyn Fn(u64),
) -> Result<RunOutput, SimError> {
    match engine_for(config) {
        (EngineKind::Reduced, _) => crate::reduced::simulate_reduced(config, seed, progress),
        (EngineKind::Full, reason) => {
            let mut out = simulate_full(config, seed, progress)?;
            out.summary.fallback_reason = reason;
            Ok(out)
        }
    }
}

/// The engine [`simulate`] runs `config` on, and why `auto` fell back to the full engine if it did.
/// (Validation rejects `engine = "reduced"` on configs that do not reduce.)
pub fn engine_for(config: &SimConfig) -> (EngineKind, Option<String>) {
    match config.engine {
        EngineChoice::Full => (EngineKind::Full, None),
        EngineChoice::Reduced => (EngineKind::Reduced, None),
        EngineChoice::Auto => match config.reduction_obstacle() {
            None => (EngineKind::Reduced, None),
            Some(reason) => (EngineKind::Full, Some(reason)),
        },
    }
}

/// Samples a run processes (for progress bars).
pub fn run_cost(config: &SimConfig) -> u64 {
    config.cost()
}

/// Runs `jobs` (config, seed) on `threads` threads (0: all cores). Results come back in job order and are
/// identical for every thread count. `progress(n)` is called from worker threads.
pub fn simulate_all(
    jobs: &[(&SimConfig, u64)],
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Vec<Result<RunOutput, SimError>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    pool.install(|| {
        jobs.par_iter()
            .map(|(config, seed)| simulate(config, *seed, progress))
            .collect()
    })
}

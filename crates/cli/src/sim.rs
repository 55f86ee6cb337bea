//! `w2sg sim run|theory`: the single-index theory lab from a TOML config (or the built-in quick start).
//!
//! `--out` is checked and locked before anything is computed; the tables are switched in at once
//! ([`w2sg_sim::outdir::OutDir`]), so a crash or a full disk leaves the old set or the new one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use w2sg_sim::config::Plan;
use w2sg_sim::engine::simulate_all;
use w2sg_sim::outdir::OutDir;
use w2sg_sim::output::{simulation_tables, theory_tables, Files};
use w2sg_sim::prediction::predict;

#[derive(Subcommand)]
pub enum SimCommand {
    /// Simulate every run of a config (lists are swept, `seeds = N` repeats) and write result tables.
    Run {
        /// TOML config file (see README, "Config keys"); without one, the built-in quick-start config.
        config: Option<PathBuf>,
        /// Output directory: summary.csv, summary.json, trajectory.csv.
        #[arg(long)]
        out: PathBuf,
        /// Worker threads (default: all cores). Results do not depend on it.
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Write the d → ∞ theory for every grid point of a config, in the same tables.
    Theory {
        /// TOML config file; without one, the built-in quick-start config.
        config: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

/// The config used when none is given: He3, spectral warm start, biased weak supervisor.
const DEFAULT_CONFIG: &str = include_str!("../../../configs/quickstart.toml");
const DEFAULT_NAME: &str = "<built-in configs/quickstart.toml>";

/// Reads the plan and returns it with the config text (for provenance) and the name used in messages.
fn read_plan(path: Option<&Path>) -> Result<(Plan, String, String), ExitCode> {
    let (text, name) = match path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => (t, p.display().to_string()),
            Err(e) => {
                eprintln!("error: {}: cannot read: {e}", p.display());
                return Err(ExitCode::from(2));
            }
        },
        None => {
            eprintln!("no config given: using {DEFAULT_NAME}");
            (DEFAULT_CONFIG.to_string(), DEFAULT_NAME.to_string())
        }
    };
    match Plan::parse(&text, &name) {
        Ok(plan) => Ok((plan, text, name)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// Checks and locks `--out` before anything is computed (exit code 2 when it cannot be used).
fn open_out(out: &Path) -> Result<OutDir, ExitCode> {
    OutDir::open(out).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// The config that produced the tables, next to them (provenance), then the tables; switched in at once.
fn commit(dir: OutDir, text: String, tables: Files) -> Result<(), ExitCode> {
    let mut files: Files = vec![("config.toml", text.into_bytes())];
    files.extend(tables);
    dir.commit(&files).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })
}

fn sim_run(config: Option<&Path>, out: &Path, threads: usize) -> ExitCode {
    let (plan, text, name) = match read_plan(config) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let workers = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let estimate = match w2sg_sim::resources::check_plan(
        &plan,
        &name,
        workers,
        w2sg_sim::resources::available_memory(),
    ) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = match open_out(out) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let jobs = plan.jobs();
    let total = plan.cost();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {percent:>3}% samples {human_pos}/{human_len} ({per_sec}, eta {eta})")
            .expect("valid template"),
    );
    eprintln!(
        "w2sg sim run: {} runs ({} grid points × {} seeds), estimated peak memory {:.2} GB",
        jobs.len(),
        plan.grid.len(),
        plan.seeds.len(),
        estimate.bytes / 1e9
    );
    let started = std::time::Instant::now();
    let results = simulate_all(&jobs, threads, &|n| bar.inc(n));
    bar.finish_and_clear();
    let failed: Vec<String> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.as_ref()
                .err()
                .map(|e| format!("run {i} (seed {}): {e}", jobs[i].1))
        })
        .collect();
    if let Err(code) = commit(dir, text, simulation_tables(&plan, &name, &results)) {
        return code;
    }
    eprintln!(
        "wrote {}/summary.csv, summary.json, trajectory.csv in {:.1} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in &failed {
            eprintln!("error: {f}");
        }
        eprintln!(
            "{} of {} runs failed; the others are in the tables",
            failed.len(),
            jobs.len()
        );
        ExitCode::from(1)
    }
}

fn sim_theory(config: Option<&Path>, out: &Path) -> ExitCode {
    let (plan, text, name) = match read_plan(config) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let dir = match open_out(out) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let bar = ProgressBar::new(plan.grid.len() as u64);
    let results: Vec<_> = plan
        .grid
        .iter()
        .map(|g| {
            let r = predict(&g.config);
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    if let Err(code) = commit(dir, text, theory_tables(&plan, &name, &results)) {
        return code;
    }
    eprintln!(
        "wrote {}/summary.csv, summary.json, trajectory.csv",
        out.display()
    );
    ExitCode::SUCCESS
}

/// Runs `w2sg sim …`.
pub fn run(command: SimCommand) -> ExitCode {
    match command {
        SimCommand::Run {
            config,
            out,
            threads,
        } => sim_run(config.as_deref(), &out, threads),
        SimCommand::Theory { config, out } => sim_theory(config.as_deref(), &out),
    }
}

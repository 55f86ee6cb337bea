//! The `w2sg` command-line tool: a thin layer over the lab crates.
//!
//! Exit codes: 0 success; 1 a run failed or results could not be written (everything that finished is
//! still written); 2 bad input (config file, flags).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use w2sg_sim::config::Plan;
use w2sg_sim::engine::simulate_all;
use w2sg_sim::outdir::OutDir;
use w2sg_sim::output::{simulation_tables, theory_tables, Files};
use w2sg_sim::prediction::predict;

#[derive(Parser)]
#[command(
    name = "w2sg",
    version,
    about = "Weak-to-strong generalization lab: single-index simulations with exact theory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The single-index theory lab.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
    /// One-command reproductions of the paper's findings, with figures and an HTML report:
    /// `w2sg reproduce [--quick] --out DIR` runs both labs; `theory` and `lm` run one.
    Reproduce(ReproduceArgs),
    /// The weak-to-strong protocol at every checkpoint of a family (resumable, shardable).
    Sweep(w2sg_sweep::cli::SweepArgs),
    /// Language-model checkpoints (Pythia / GPT-NeoX, OLMo): inspect them, extract features.
    Lm {
        #[command(subcommand)]
        command: LmCommand,
    },
}

/// `w2sg lm …`: the checkpoint lab's commands plus pre-training.
#[derive(Subcommand)]
enum LmCommand {
    #[command(flatten)]
    Lab(w2sg_lm::cli::LmCommand),
    /// Pre-train a small GPT-NeoX family on real text, with checkpoints on Pythia's schedule.
    Pretrain(w2sg_lm::pretrain::cli::PretrainArgs),
}

/// `w2sg reproduce`: both labs, or one of them.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct ReproduceArgs {
    #[command(subcommand)]
    command: Option<ReproduceCommand>,
    /// Output directory: theory/, lm/, report.html (both labs) and summary.json.
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// The quick versions: the theory figures at smaller d, the checkpoint lab on the tiny family
    /// (about 15 minutes in all on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Worker threads for the theory lab (default: all cores). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Subcommand)]
enum ReproduceCommand {
    /// The checkpoint lab: pre-train (or reuse) w2sg's own families, sweep every checkpoint.
    Lm {
        /// Output directory: families/, sweep/, report.html, summary.json.
        #[arg(long)]
        out: PathBuf,
        /// The tiny family (41 checkpoints) on VADER movie snippets: under 15 minutes on 2 cores.
        #[arg(long)]
        quick: bool,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// The theory lab: seven figures, report.html and summary.json.
    Theory {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Smaller d and fewer seeds: every figure in a few minutes on 2 cores.
        #[arg(long)]
        quick: bool,
        /// Worker threads (default: all cores). Results do not depend on it.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Only these figures, e.g. `--only 1,4`.
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u8).range(1..=7))]
        only: Vec<u8>,
    },
}

fn reproduce_theory(out: PathBuf, quick: bool, threads: usize, only: Vec<u8>) -> ExitCode {
    let opts = w2sg_reproduce::Options {
        quick,
        out: out.clone(),
        threads,
        only: only.into_iter().map(usize::from).collect(),
    };
    match w2sg_reproduce::theory_lab(&opts) {
        Ok(outcome) => {
            let secs = outcome.summary["total_seconds"]
                .as_f64()
                .unwrap_or(f64::NAN);
            eprintln!(
                "wrote {}/report.html and summary.json in {secs:.1} s",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn finish_reproduction(
    out: &Path,
    result: Result<serde_json::Value, w2sg_reproduce::ReproError>,
) -> ExitCode {
    match result {
        Ok(summary) => {
            let secs = summary["total_seconds"].as_f64().unwrap_or(f64::NAN);
            eprintln!(
                "wrote {}/report.html and summary.json in {secs:.0} s",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

#[derive(Subcommand)]
enum SimCommand {
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Reproduce(ReproduceArgs {
            command:
                Some(ReproduceCommand::Theory {
                    out,
                    quick,
                    threads,
                    only,
                }),
            ..
        }) => reproduce_theory(out, quick, threads, only),
        Command::Reproduce(ReproduceArgs {
            command: Some(ReproduceCommand::Lm { out, quick, quiet }),
            ..
        }) => {
            let opts = w2sg_reproduce::lm_lab::LmOptions {
                quick,
                out: out.clone(),
                progress: !quiet,
            };
            finish_reproduction(
                &out,
                w2sg_reproduce::lm_lab::lm_lab(&opts).map(|o| o.summary),
            )
        }
        Command::Reproduce(ReproduceArgs {
            command: None,
            out,
            quick,
            threads,
        }) => {
            let Some(out) = out else {
                eprintln!("error: `w2sg reproduce` needs --out DIR");
                return ExitCode::from(2);
            };
            finish_reproduction(&out, w2sg_reproduce::both_labs(quick, &out, threads, true))
        }
        Command::Sim {
            command:
                SimCommand::Run {
                    config,
                    out,
                    threads,
                },
        } => sim_run(config.as_deref(), &out, threads),
        Command::Sim {
            command: SimCommand::Theory { config, out },
        } => sim_theory(config.as_deref(), &out),
        Command::Sweep(args) => ExitCode::from(w2sg_sweep::cli::main(args)),
        Command::Lm {
            command: LmCommand::Lab(command),
        } => ExitCode::from(w2sg_lm::cli::run(command)),
        Command::Lm {
            command: LmCommand::Pretrain(args),
        } => ExitCode::from(w2sg_lm::pretrain::cli::run(args)),
    }
}

//! `w2sg sweep`: run a plan, merge shards, re-analyse, or run it as a Slurm job array.
//!
//! - `w2sg sweep PLAN.toml --out DIR`: runs (or resumes) every unit into `DIR/results.sqlite`, then
//!   writes the tables, figures and `DIR/report.html`.
//! - `w2sg sweep PLAN.toml --out DIR --shard I/N`: runs slice I of N into
//!   `DIR/shards/shard-I-of-N.sqlite` and nothing else (for a job array).
//! - `w2sg sweep merge PLAN.toml --out DIR [SHARD.sqlite ...]`: merges shard databases (default: all
//!   of `DIR/shards/`) into `DIR/results.sqlite` and writes the outputs.
//! - `w2sg sweep report PLAN.toml --out DIR`: writes the outputs again from `DIR/results.sqlite`.
//! - `w2sg sweep slurm PLAN.toml --out DIR --shards N [--submit] [--wait] [--sbatch-arg ARG]...`:
//!   writes `DIR/slurm/{array,merge}.sbatch`, optionally submits them and waits (`w2sg_sweep::slurm`).
//!
//! The work is [`w2sg_sweep::Session`]'s; this module parses flags, prints and picks the exit code:
//! 0 success; 1 some unit failed (recorded with its error; everything else finished and is written)
//! or a file could not be written, or (`slurm --wait`) a task or the merge failed; 2 bad input (plan,
//! flags, task file).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use w2sg_protocol::{RunPolicy, ShardSpec};
use w2sg_sweep::error::{Error, Result};
use w2sg_sweep::{RunOptions, Session};

/// Arguments of `w2sg sweep`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: Option<SweepCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `w2sg sweep PLAN --out DIR [--shard I/N]`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plan file (TOML; see crates/sweep/README.md).
    #[arg(required = true)]
    pub plan: Option<PathBuf>,
    /// Output directory (results.sqlite, tables, figures, report.html). Re-running resumes.
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// Run only slice I of N (0-based), e.g. `--shard $SLURM_ARRAY_TASK_ID/16`.
    #[arg(long)]
    pub shard: Option<ShardSpec>,
    /// Run units recorded as failed again (e.g. after replacing a corrupt checkpoint).
    #[arg(long)]
    pub retry_failed: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum SweepCommand {
    /// Merge shard databases into DIR/results.sqlite and write the outputs.
    Merge {
        plan: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Shard databases (default: every .sqlite file in DIR/shards).
        shards: Vec<PathBuf>,
        /// Merge even when shards named `shard-I-of-N` are missing for some I (their checkpoints are
        /// reported as missing).
        #[arg(long)]
        allow_missing: bool,
    },
    /// Write the tables, figures and report again from DIR/results.sqlite.
    Report {
        plan: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a Slurm job array (one task per shard) and a merge job; optionally submit and wait.
    Slurm(SlurmArgs),
}

/// `w2sg sweep slurm PLAN --out DIR --shards N [--submit] [--wait] [--sbatch-arg ARG]...`.
#[derive(Debug, Args)]
pub struct SlurmArgs {
    pub plan: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Number of array tasks; task I runs `--shard I/N`.
    #[arg(long)]
    pub shards: usize,
    /// Submit the array and the merge (printing both job ids).
    #[arg(long)]
    pub submit: bool,
    /// With --submit: wait for the merge; exit 1 naming each failed task and its log.
    #[arg(long, requires = "submit")]
    pub wait: bool,
    /// An sbatch option for both jobs, e.g. --sbatch-arg=--partition=gpu (repeatable).
    #[arg(long = "sbatch-arg", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
}

/// Runs `w2sg sweep …`; returns the exit code.
pub fn run(args: SweepArgs) -> u8 {
    let result = match args.command {
        Some(SweepCommand::Merge {
            plan,
            out,
            shards,
            allow_missing,
        }) => merge(&plan, &out, shards, allow_missing),
        Some(SweepCommand::Report { plan, out }) => Session::open(&plan)
            .and_then(|s| s.report(&out))
            .map(|_| ()),
        Some(SweepCommand::Slurm(a)) => slurm_command(a),
        None => {
            let (Some(plan), Some(out)) = (args.run.plan, args.run.out) else {
                eprintln!("error: `w2sg sweep PLAN.toml --out DIR` needs a plan and --out");
                return 2;
            };
            let opts = RunOptions {
                shard: args.run.shard.unwrap_or_else(ShardSpec::all),
                policy: RunPolicy {
                    retry_failed: args.run.retry_failed,
                },
                progress: crate::bars::Bars::reporter(!args.run.quiet, !args.run.quiet),
            };
            run_plan(&plan, &out, &opts, args.run.quiet)
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn run_plan(
    plan: &std::path::Path,
    out: &std::path::Path,
    opts: &RunOptions,
    quiet: bool,
) -> Result<()> {
    let session = Session::open(plan)?;
    if !quiet {
        let r = &session.resolved;
        let n_ck: usize = r.families.iter().map(|(_, c)| c.len()).sum();
        eprintln!(
            "w2sg sweep {}: {} checkpoint(s) in {} family(ies), weak {}, {} task(s) ({} examples), \
             {} seed(s), losses {} → {}",
            r.plan.name,
            n_ck,
            r.families.len(),
            r.weak.revision,
            r.datasets.len(),
            r.datasets
                .iter()
                .map(|d| d.len().to_string())
                .collect::<Vec<_>>()
                .join("+"),
            r.plan.seeds.len(),
            r.plan.losses.join(","),
            w2sg_sweep::engine::store_path(out, &opts.shard).display()
        );
    }
    let outcome = session.run(out, opts)?;
    let report = &outcome.report;
    if !quiet {
        eprintln!(
            "{} unit(s) run, {} already finished, {} failed, {} blocked by a failure, in {:.1} s",
            report.units_done,
            report.units_skipped,
            report.units_failed,
            report.units_blocked,
            outcome.seconds
        );
    }
    // Also with --quiet: a job array's log must say what failed.
    for (what, err) in report.failures.iter().take(10) {
        eprintln!("  failed: {what}: {err}");
    }
    match outcome.failure(opts.policy.retry_failed) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn merge(
    plan: &std::path::Path,
    out: &std::path::Path,
    shards: Vec<PathBuf>,
    allow_missing: bool,
) -> Result<()> {
    let session = Session::open(plan)?;
    let m = session.merge(out, shards, allow_missing)?;
    if let Some((count, missing)) = &m.missing {
        let list: Vec<String> = missing.iter().map(|i| i.to_string()).collect();
        eprintln!(
            "warning: shard(s) {} of {count} are missing; merged the others (--allow-missing)",
            list.join(", ")
        );
    }
    eprintln!(
        "merged {} shard(s) into {}: {} unit(s) added, {} identical, {} failed replaced by done, {} kept",
        m.shards.len(),
        m.dest.display(),
        m.merged.added,
        m.merged.identical,
        m.merged.replaced_failed,
        m.merged.kept
    );
    Ok(())
}

fn slurm_command(args: SlurmArgs) -> Result<()> {
    use w2sg_sweep::slurm;
    // Check the plan here, not in N jobs on the cluster.
    Session::open(&args.plan)?;
    let binary = std::env::current_exe().map_err(|e| Error::io("the running w2sg binary", e))?;
    let job = slurm::SlurmJob {
        binary,
        plan: args.plan,
        out: args.out,
        shards: args.shards,
        sbatch_args: args.sbatch_args,
    };
    let scripts = slurm::write_scripts(&job)?;
    eprintln!(
        "wrote {} and {}",
        scripts.array.display(),
        scripts.merge.display()
    );
    if !args.submit {
        eprintln!(
            "submit with: sbatch {}   then: sbatch --dependency=afterany:<array job id> {}",
            scripts.array.display(),
            scripts.merge.display()
        );
        return Ok(());
    }
    let ids = slurm::submit(&scripts)?;
    println!("array job {}", ids.array);
    println!("merge job {}", ids.merge);
    if args.wait {
        let poll = std::env::var("W2SG_SLURM_POLL_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10.0);
        slurm::wait(&job, &ids, std::time::Duration::from_secs_f64(poll))?;
        eprintln!(
            "all {} task(s) and the merge finished; results in {}",
            job.shards,
            job.out.join("results.csv").display()
        );
    }
    Ok(())
}

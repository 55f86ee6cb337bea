//! `w2sg sweep`: run a plan, merge shards, or re-analyse.
//!
//! - `w2sg sweep PLAN.toml --out DIR`: runs (or resumes) every unit into `DIR/results.sqlite`, then
//!   writes the tables, figures and `DIR/report.html`.
//! - `w2sg sweep PLAN.toml --out DIR --shard I/N`: runs slice I of N into
//!   `DIR/shards/shard-I-of-N.sqlite` and nothing else (for a job array).
//! - `w2sg sweep merge PLAN.toml --out DIR [SHARD.sqlite ...]`: merges shard databases (default: all
//!   of `DIR/shards/`) into `DIR/results.sqlite` and writes the outputs.
//! - `w2sg sweep report PLAN.toml --out DIR`: writes the outputs again from `DIR/results.sqlite`.
//! - `w2sg sweep slurm PLAN.toml --out DIR --shards N [--submit] [--wait] [--sbatch-arg ARG]...`:
//!   writes `DIR/slurm/{array,merge}.sbatch`, optionally submits them and waits (see [`crate::slurm`]).
//!
//! Exit codes: 0 success; 1 some unit failed (recorded with its error; everything else finished and
//! is written) or a file could not be written, or (`slurm --wait`) a task or the merge failed;
//! 2 bad input (plan, flags, task file).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand};

use w2sg_protocol::{RunPolicy, ShardSpec, Store};
use w2sg_report::Report;

use crate::analysis::analyse;
use crate::engine::{resolve, run, store_path, Resolved, RunOptions, RunReport};
use crate::error::{Error, Result};
use crate::outputs::{report_section, write_all, write_atomic};
use crate::plan::Plan;

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
pub fn main(args: SweepArgs) -> u8 {
    let result = match args.command {
        Some(SweepCommand::Merge {
            plan,
            out,
            shards,
            allow_missing,
        }) => merge_command(&plan, &out, shards, allow_missing),
        Some(SweepCommand::Report { plan, out }) => report_command(&plan, &out),
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
                progress: !args.run.quiet,
            };
            run_command(&plan, &out, &opts).map(|_| ())
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

fn load(plan_path: &Path) -> Result<(Plan, Resolved)> {
    let plan = Plan::from_file(plan_path)?;
    let archives = w2sg_data::ArchiveStore::from_env();
    let resolved = resolve(&plan, &archives).map_err(|e| e.in_plan(plan_path))?;
    Ok((plan, resolved))
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Runs a plan (or one shard of it) into `out`; without a shard, also writes the outputs. Returns
/// the run's counts; failed units make this an error after everything else is written.
pub fn run_command(plan_path: &Path, out: &Path, opts: &RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let (plan, resolved) = load(plan_path)?;
    let db = store_path(out, &opts.shard);
    create_dir(db.parent().unwrap_or(out))?;
    let store = Store::open(&db)?;
    let n_ck: usize = resolved.families.iter().map(|(_, c)| c.len()).sum();
    if opts.progress {
        eprintln!(
            "w2sg sweep {}: {} checkpoint(s) in {} family(ies), weak {}, {} task(s) ({} examples), \
             {} seed(s), losses {} → {}",
            plan.name,
            n_ck,
            resolved.families.len(),
            resolved.weak.revision,
            resolved.datasets.len(),
            resolved
                .datasets
                .iter()
                .map(|d| d.len().to_string())
                .collect::<Vec<_>>()
                .join("+"),
            plan.seeds.len(),
            plan.losses.join(","),
            db.display()
        );
    }
    let report = run(&resolved, &store, opts)?;
    write_atomic(
        &out.join(match opts.shard.count {
            1 => "run.json".to_string(),
            _ => format!(
                "shards/run-{}-of-{}.json",
                opts.shard.index, opts.shard.count
            ),
        }),
        &serde_json::to_vec_pretty(&serde_json::json!({
            "plan": plan,
            "report": report,
            "seconds": started.elapsed().as_secs_f64(),
        }))
        .expect("serializes"),
    )?;
    if opts.shard.count == 1 {
        write_outputs(&resolved, &store, out, started.elapsed().as_secs_f64())?;
    }
    if opts.progress {
        eprintln!(
            "{} unit(s) run, {} already finished, {} failed, {} blocked by a failure, in {:.1} s",
            report.units_done,
            report.units_skipped,
            report.units_failed,
            report.units_blocked,
            started.elapsed().as_secs_f64()
        );
    }
    // Also with --quiet: a job array's log must say what failed.
    for (what, err) in report.failures.iter().take(10) {
        eprintln!("  failed: {what}: {err}");
    }
    if report.units_failed_earlier > 0 && !opts.policy.retry_failed {
        return Err(Error::FailedEarlier {
            failed: report.units_failed,
            earlier: report.units_failed_earlier,
        });
    }
    if report.units_failed > 0 {
        return Err(Error::UnitsFailed(report.units_failed));
    }
    Ok(report)
}

/// Shards `shard-I-of-N.sqlite` missing from `shards` for the N their names give; empty when the
/// names follow no such pattern (shards named by the user).
fn missing_shards(shards: &[PathBuf]) -> Option<(usize, Vec<usize>)> {
    let parsed: Vec<(usize, usize)> = shards
        .iter()
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.strip_prefix("shard-")?;
            let (i, n) = stem.split_once("-of-")?;
            Some((i.parse().ok()?, n.parse().ok()?))
        })
        .collect();
    let count = parsed.first()?.1;
    let missing: Vec<usize> = (0..count)
        .filter(|i| !parsed.iter().any(|&(j, n)| j == *i && n == count))
        .collect();
    (!missing.is_empty()).then_some((count, missing))
}

pub fn merge_command(
    plan_path: &Path,
    out: &Path,
    shards: Vec<PathBuf>,
    allow_missing: bool,
) -> Result<()> {
    let shards = if shards.is_empty() {
        let dir = out.join("shards");
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "sqlite"))
            .collect();
        v.sort();
        if v.is_empty() {
            return Err(Error::Input {
                what: dir.display().to_string(),
                problem: "no shard databases (*.sqlite) to merge".into(),
            });
        }
        v
    } else {
        shards
    };
    if let Some((count, missing)) = missing_shards(&shards) {
        let list = missing
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if !allow_missing {
            return Err(Error::MissingShards {
                dir: shards[0].parent().unwrap_or(Path::new(".")).to_path_buf(),
                missing: list,
                count,
            });
        }
        eprintln!(
            "warning: shard(s) {list} of {count} are missing; merging the others (--allow-missing)"
        );
    }
    let (_, resolved) = load(plan_path)?;
    create_dir(out)?;
    let dest = out.join("results.sqlite");
    let m = w2sg_protocol::store::merge(&dest, &shards)?;
    eprintln!(
        "merged {} shard(s) into {}: {} unit(s) added, {} identical, {} failed replaced by done, {} kept",
        shards.len(),
        dest.display(),
        m.added,
        m.identical,
        m.replaced_failed,
        m.kept
    );
    let store = Store::open(&dest)?;
    write_outputs(&resolved, &store, out, f64::NAN)
}

fn slurm_command(args: SlurmArgs) -> Result<()> {
    use crate::slurm;
    // Check the plan here, not in N jobs on the cluster.
    load(&args.plan)?;
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

pub fn report_command(plan_path: &Path, out: &Path) -> Result<()> {
    let (_, resolved) = load(plan_path)?;
    let db = out.join("results.sqlite");
    if !db.is_file() {
        return Err(Error::Input {
            what: db.display().to_string(),
            problem: "no results database here (run the sweep, or merge its shards, first)".into(),
        });
    }
    let store = Store::open(&db)?;
    write_outputs(&resolved, &store, out, f64::NAN)
}

/// Analyses the store and writes tables, figures, units.csv, failures.csv and report.html.
pub fn write_outputs(resolved: &Resolved, store: &Store, out: &Path, seconds: f64) -> Result<()> {
    // One writer of the outputs at a time: two reports at once would interleave their tables.
    create_dir(out)?;
    let _lock = w2sg_fsio::DirLock::acquire(&out.join(".outputs.w2sg-lock"))?;
    let analysis = analyse(resolved, store)?;
    let title = &resolved.plan.name;
    let written = write_all(&analysis, title, out)?;
    w2sg_protocol::export::export_csv(store, None, out.join("units.csv"))?;
    let failures: Vec<Vec<String>> = store
        .records(None)?
        .into_iter()
        .filter(|r| r.status == w2sg_protocol::UnitStatus::Failed)
        .map(|r| {
            vec![
                r.spec.kind.as_str().to_string(),
                r.spec.step.map_or(String::new(), |s| s.to_string()),
                r.spec.seed.map_or(String::new(), |s| s.to_string()),
                r.spec.loss.clone().unwrap_or_default(),
                r.error.unwrap_or_default(),
            ]
        })
        .collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(["kind", "step", "seed", "loss", "error"]);
    for f in &failures {
        let _ = w.write_record(f);
    }
    write_atomic(
        &out.join("failures.csv"),
        &w.into_inner().unwrap_or_default(),
    )?;
    let mut notes = vec![describe(resolved)];
    if seconds.is_finite() {
        notes.push(format!("Wall time of this run: {seconds:.0} s."));
    }
    if !failures.is_empty() {
        notes.push(format!(
            "{} unit(s) failed; see failures.csv. Their checkpoints have status \"failed\" in \
             results.csv.",
            failures.len()
        ));
    }
    let section = report_section(&analysis, title, &notes)?;
    let plan_text = toml::to_string_pretty(&resolved.plan).unwrap_or_default();
    let report = Report::new(format!("w2sg checkpoint sweep: {title}"))
        .section(section)
        .section(w2sg_report::Section::new("Plan").pre(plan_text));
    report.save(out.join("report.html"))?;
    let _ = written;
    Ok(())
}

/// One paragraph saying what was swept.
pub fn describe(resolved: &Resolved) -> String {
    let plan = &resolved.plan;
    let fams: Vec<String> = resolved
        .families
        .iter()
        .map(|(n, c)| format!("{n} ({} checkpoints)", c.len()))
        .collect();
    let tasks: Vec<String> = resolved
        .datasets
        .iter()
        .map(|d| format!("{} ({} examples, {} pooling)", d.name, d.len(), d.pooling))
        .collect();
    format!(
        "Strong: {}. Weak supervisor: {} ({}). Tasks: {}. Split weak/strong/test = {}/{}/{}; seeds {:?}; \
         features: layer {}, truncated at {}; students: L2 logistic probes (λ = {}), losses {}.",
        fams.join(", "),
        resolved.weak.revision,
        resolved.weak.dir.display(),
        tasks.join(", "),
        plan.split.weak,
        plan.split.strong,
        plan.split.test,
        plan.seeds,
        plan.features.layer,
        match plan.features.max_tokens {
            0 => "the model's context".to_string(),
            n => format!("{n} tokens"),
        },
        plan.probe.l2,
        plan.losses.join(", ")
    )
}

//! A sweep session: open a plan once (parse, resolve its checkpoints and tasks), then run it, merge
//! shards into it, or analyse it and write its outputs, without parsing or resolving again.
//!
//! ```text
//! Session::open(plan.toml) ─┬─ run(out, opts)        → units into the store (+ outputs, unsharded)
//!                           ├─ merge(out, shards)    → shards into out/results.sqlite + outputs
//!                           └─ report(out)           → outputs again from out/results.sqlite
//! ```
//! Every path that writes outputs returns the [`Analysis`] it wrote, so a caller that needs the
//! numbers (`w2sg reproduce lm`) does not analyse the store a second time.
//!
//! Failed units are not an `Err` of [`Session::run`]: the run finishes everything else and writes the
//! outputs, and [`RunOutcome::failure`] turns the failures into the error a command exits with.
//! Printing and exit codes belong to the caller (the `w2sg` binary).

use std::path::{Path, PathBuf};
use std::time::Instant;

use w2sg_protocol::{MergeReport, Store};
use w2sg_report::Report;

use crate::analysis::{analyse, Analysis};
use crate::engine::{resolve, run, store_path, Resolved, RunOptions, RunReport};
use crate::error::{Error, Result};
use crate::outputs::{report_section, write_all, write_atomic};
use crate::plan::Plan;

/// A plan, parsed and resolved once.
#[derive(Debug)]
pub struct Session {
    pub plan_path: PathBuf,
    pub resolved: Resolved,
}

/// What [`Session::run`] did.
#[derive(Debug)]
pub struct RunOutcome {
    pub report: RunReport,
    /// The analysis written to the outputs (None for a shard, which writes no outputs).
    pub analysis: Option<Analysis>,
    pub seconds: f64,
    pub store: PathBuf,
}

impl RunOutcome {
    /// The error to exit with when units failed (everything else is written by then).
    pub fn failure(&self, retry_failed: bool) -> Option<Error> {
        let r = &self.report;
        if r.units_failed_earlier > 0 && !retry_failed {
            return Some(Error::FailedEarlier {
                failed: r.units_failed,
                earlier: r.units_failed_earlier,
            });
        }
        (r.units_failed > 0).then_some(Error::UnitsFailed(r.units_failed))
    }
}

/// What [`Session::merge`] did.
#[derive(Debug)]
pub struct MergeOutcome {
    pub shards: Vec<PathBuf>,
    pub dest: PathBuf,
    pub merged: MergeReport,
    /// `(N, missing indices)` when shards named `shard-I-of-N` are missing (merged anyway only with
    /// `allow_missing`).
    pub missing: Option<(usize, Vec<usize>)>,
    pub analysis: Analysis,
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

impl Session {
    /// Parses and resolves the plan (checkpoints listed and checked, tasks loaded).
    pub fn open(plan_path: &Path) -> Result<Session> {
        let plan = Plan::from_file(plan_path)?;
        let archives = w2sg_data::ArchiveStore::from_env();
        let resolved = resolve(&plan, &archives).map_err(|e| e.in_plan(plan_path))?;
        Ok(Session {
            plan_path: plan_path.to_path_buf(),
            resolved,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.resolved.plan
    }

    /// One paragraph saying what is swept.
    pub fn describe(&self) -> String {
        describe(&self.resolved)
    }

    /// Runs the plan (or one shard of it) into `out`; without a shard, also writes the outputs.
    pub fn run(&self, out: &Path, opts: &RunOptions) -> Result<RunOutcome> {
        let started = Instant::now();
        let db = store_path(out, &opts.shard);
        create_dir(db.parent().unwrap_or(out))?;
        let store = Store::open(&db)?;
        let report = run(&self.resolved, &store, opts)?;
        write_atomic(
            &out.join(match opts.shard.count {
                1 => "run.json".to_string(),
                _ => format!(
                    "shards/run-{}-of-{}.json",
                    opts.shard.index, opts.shard.count
                ),
            }),
            &serde_json::to_vec_pretty(&serde_json::json!({
                "plan": self.plan(),
                "report": report,
                "seconds": started.elapsed().as_secs_f64(),
            }))
            .expect("serializes"),
        )?;
        let analysis = if opts.shard.count == 1 {
            Some(self.write_outputs(&store, out, started.elapsed().as_secs_f64())?)
        } else {
            None
        };
        Ok(RunOutcome {
            report,
            analysis,
            seconds: started.elapsed().as_secs_f64(),
            store: db,
        })
    }

    /// Merges shard databases (default: every `*.sqlite` of `out/shards`) into `out/results.sqlite`
    /// and writes the outputs. Missing `shard-I-of-N` files are an error unless `allow_missing`.
    pub fn merge(
        &self,
        out: &Path,
        shards: Vec<PathBuf>,
        allow_missing: bool,
    ) -> Result<MergeOutcome> {
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
        let missing = missing_shards(&shards);
        if let (Some((count, missing)), false) = (&missing, allow_missing) {
            return Err(Error::MissingShards {
                dir: shards[0].parent().unwrap_or(Path::new(".")).to_path_buf(),
                missing: missing
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                count: *count,
            });
        }
        create_dir(out)?;
        let dest = out.join("results.sqlite");
        let merged = w2sg_protocol::store::merge(&dest, &shards)?;
        let store = Store::open(&dest)?;
        let analysis = self.write_outputs(&store, out, f64::NAN)?;
        Ok(MergeOutcome {
            shards,
            dest,
            merged,
            missing,
            analysis,
        })
    }

    /// Writes the outputs again from `out/results.sqlite`.
    pub fn report(&self, out: &Path) -> Result<Analysis> {
        let db = out.join("results.sqlite");
        if !db.is_file() {
            return Err(Error::Input {
                what: db.display().to_string(),
                problem: "no results database here (run the sweep, or merge its shards, first)"
                    .into(),
            });
        }
        let store = Store::open(&db)?;
        self.write_outputs(&store, out, f64::NAN)
    }

    /// Analyses the store and writes tables, figures, units.csv, failures.csv and report.html.
    pub fn write_outputs(&self, store: &Store, out: &Path, seconds: f64) -> Result<Analysis> {
        write_outputs(&self.resolved, store, out, seconds)
    }
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

/// Analyses the store and writes tables, figures, units.csv, failures.csv and report.html.
fn write_outputs(resolved: &Resolved, store: &Store, out: &Path, seconds: f64) -> Result<Analysis> {
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
    Ok(analysis)
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
        "Strong: {}. Weak supervisor: {} ({}), {}. Tasks: {}. Split weak/strong/test = {}/{}/{}; seeds {:?}; \
         features: layer {}, truncated at {}; students: L2 logistic probes (λ = {}), losses {}.",
        fams.join(", "),
        resolved.weak.revision,
        resolved.weak.dir.display(),
        if plan.weak.finetuned() {
            format!(
                "fine-tuned ({}) on split A's labels",
                plan.finetune.mode_name()
            )
        } else {
            "a probe on its features".to_string()
        },
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

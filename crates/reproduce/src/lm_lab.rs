//! The checkpoint-lab reproduction: pre-train (or reuse) a weak and a strong GPT-NeoX family on the
//! default corpus, run the weak-to-strong protocol at every strong checkpoint, and write the figures,
//! tables and report.
//!
//! Layout of the output directory:
//! - `families/weak`, `families/strong`: the families in HF layout (`stepN/`, `family.json`,
//!   `loss.csv`, `loss_curve.png`), resumed if a run was interrupted and reused if complete;
//! - `sweep/`: the plan (`plan.toml`), the results store and every sweep output (results.csv, seeds.csv,
//!   transitions.csv, figures/, the sweep's own report.html);
//! - `report.html`, `summary.json`: this lab's report and headline numbers.
//!
//! Everything is deterministic: the same command gives the same checkpoints and the same results.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use w2sg_lm::pretrain::presets::PretrainConfig;
use w2sg_lm::pretrain::train::{pretrain, RunOptions};
use w2sg_protocol::{RunPolicy, ShardSpec};
use w2sg_report::{Report, Section};
use w2sg_sweep::analysis::Analysis;

use crate::{LabOutcome, ReproError};

/// How to run the checkpoint-lab reproduction.
#[derive(Clone, Debug)]
pub struct LmOptions {
    pub quick: bool,
    pub out: PathBuf,
    /// Progress bars on stderr.
    pub progress: bool,
}

/// The two families and the plan of a mode.
pub struct LmSetup {
    pub weak: PretrainConfig,
    pub strong: PretrainConfig,
    /// Plan text; family paths are relative to `sweep/`.
    pub plan: String,
}

/// Step of the weak family whose checkpoint is the weak supervisor.
pub const WEAK_STEP: u64 = 32;

/// The built-in setup, and why (measured on 2 cores, see the README's checkpoint-lab section):
///
/// - **Families.** Quick: a 4 × 128 strong model pre-trained for 1,200 steps of 16 × 128 tokens with a
///   checkpoint every 40 steps (41 checkpoints, about 4 minutes). Full: the `small` preset (6 × 256,
///   2,400 steps of 16 × 256 tokens, a checkpoint every 100: 35 checkpoints). The weak supervisor is
///   an early checkpoint (step 32) of a 2 × 64 model: at its final step the 2 × 64 model is as good as
///   the strong family on the word-order task, which leaves no gap to recover.
/// - **Held-out text.** Both families hold out 5 % of the corpus's paragraphs (not the presets' 1 %),
///   so the word-order task has about 2,000 sentences no model trained on.
/// - **Tasks.** VADER movie snippets (mean pooling), the task the issue names; at this scale the
///   ceiling is only 2–4 points above the weak supervisor, so its PGR is noisy. And word order
///   (last-token pooling): held-out sentences, half shuffled; a bag of words is at chance, so the
///   knowledge comes from pre-training alone, and the ceiling–weak gap is about 10 points.
pub fn setup(quick: bool) -> Result<LmSetup, ReproError> {
    let cfg = |e: w2sg_lm::pretrain::PretrainError| ReproError::Config(e.to_string());
    let weak = PretrainConfig::from_toml_str(
        "preset = \"weak\"\nsteps = 300\ncheckpoint_every = 100\nvalidation_fraction = 0.05\n",
    )
    .map_err(cfg)?;
    let strong = if quick {
        "preset = \"tiny\"\nsteps = 1200\ncheckpoint_every = 40\nwarmup_steps = 100\n\
         validation_fraction = 0.05\n"
    } else {
        "preset = \"small\"\nvalidation_fraction = 0.05\n"
    };
    let strong = PretrainConfig::from_toml_str(strong).map_err(cfg)?;
    let plan = format!(
        "# Built-in plan of `w2sg reproduce lm{}`.\n\
         name = \"{}\"\n\
         seeds = [0, 1, 2]\n\
         losses = [\"xent\", \"logconf\"]\n\n\
         [[family]]\nname = \"strong\"\npath = \"../families/strong\"\nrevisions = \"all\"\n\n\
         [weak]\nmodel = \"../families/weak@step{WEAK_STEP}\"\n\n\
         [[task]]\nbuiltin = \"vader-movies\"\nmargin = 0.5\npooling = \"mean\"\n\n\
         [[task]]\nbuiltin = \"word-order\"\nvalidation_fraction = 0.05\npooling = \"last\"\n\n\
         [features]\nmax_tokens = 64\n",
        if quick { " --quick" } else { "" },
        if quick {
            "tiny family, quick"
        } else {
            "small family"
        },
    );
    Ok(LmSetup { weak, strong, plan })
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> ReproError {
    ReproError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Runs the checkpoint-lab reproduction into `opts.out`.
pub fn lm_lab(opts: &LmOptions) -> Result<LabOutcome, ReproError> {
    lm_lab_with(&setup(opts.quick)?, opts)
}

/// Runs the checkpoint-lab reproduction of any setup (tests use a micro one).
pub fn lm_lab_with(setup: &LmSetup, opts: &LmOptions) -> Result<LabOutcome, ReproError> {
    let started = Instant::now();
    let families = opts.out.join("families");
    let mut family_rows = Vec::new();
    for (name, config) in [("weak", &setup.weak), ("strong", &setup.strong)] {
        let dir = families.join(name);
        if opts.progress {
            eprintln!("pre-training the {name} family → {}", dir.display());
        }
        let run = RunOptions {
            progress: opts.progress,
            ..RunOptions::default()
        };
        let summary = pretrain(config, &dir, &run).map_err(|e| ReproError::Run(e.to_string()))?;
        // A reused (already finished) family trains nothing now: its last validation loss is in its log.
        let final_val_loss = summary.final_val_loss.or_else(|| {
            w2sg_lm::pretrain::train::read_log(&dir.join("loss.csv"))
                .ok()
                .and_then(|rows| rows.iter().rev().find_map(|r| r.val_loss))
        });
        family_rows.push(json!({
            "name": name,
            "hidden_size": config.model.hidden_size,
            "num_layers": config.model.num_layers,
            "parameters": summary.num_parameters,
            "steps": config.steps,
            "tokens": config.steps as usize * config.batch_size * config.model.context,
            "final_val_loss": final_val_loss,
            "seconds_this_run": summary.wall_seconds,
            "resumed_from": summary.resumed_from,
        }));
    }
    let sweep_dir = opts.out.join("sweep");
    std::fs::create_dir_all(&sweep_dir).map_err(|e| write_err(&sweep_dir, e))?;
    let plan_path = sweep_dir.join("plan.toml");
    std::fs::write(&plan_path, &setup.plan).map_err(|e| write_err(&plan_path, e))?;
    let run_opts = w2sg_sweep::RunOptions {
        shard: ShardSpec::all(),
        policy: RunPolicy::default(),
        progress: opts.progress,
    };
    // One session: the plan is parsed and resolved once, and the analysis written to the sweep's
    // outputs is the one this report shows.
    let session =
        w2sg_sweep::Session::open(&plan_path).map_err(|e| ReproError::Run(e.to_string()))?;
    let outcome = session
        .run(&sweep_dir, &run_opts)
        .map_err(|e| ReproError::Run(e.to_string()))?;
    // The outputs are written; failures are reported after the report.
    let failed = outcome.report.units_failed;
    let analysis = outcome
        .analysis
        .expect("an unsharded run writes its outputs");
    let total = started.elapsed().as_secs_f64();
    let summary = json!({
        "lab": "checkpoint",
        "mode": if opts.quick { "quick" } else { "full" },
        "total_seconds": total,
        "families": family_rows,
        "headline": headline(&analysis),
        "failed_units": failed,
    });
    let summary_path = opts.out.join("summary.json");
    std::fs::write(
        &summary_path,
        serde_json::to_string_pretty(&summary).expect("json"),
    )
    .map_err(|e| write_err(&summary_path, e))?;

    let mut sections = vec![about_section(
        &setup,
        &family_rows,
        &families,
        total,
        opts.quick,
    )];
    sections.push(
        w2sg_sweep::outputs::report_section(
            &analysis,
            &session.plan().name,
            &[session.describe(), findings(&analysis)],
        )
        .map_err(|e| ReproError::Run(e.to_string()))?,
    );
    let mut report = Report::new(
        "w2sg: the blessing of pre-training in weak-to-strong generalization (checkpoint lab)",
    );
    for s in &sections {
        report.push(s.clone());
    }
    report.save(opts.out.join("report.html"))?;
    if failed > 0 {
        return Err(ReproError::Run(format!(
            "{failed} sweep unit(s) failed; see {}",
            sweep_dir.join("failures.csv").display()
        )));
    }
    Ok(LabOutcome { summary, sections })
}

fn about_section(
    setup: &LmSetup,
    family_rows: &[Value],
    families: &Path,
    total: f64,
    quick: bool,
) -> Section {
    let mut s = Section::new("Checkpoint lab: the families").paragraph(format!(
        "{} mode, {total:.0} s of wall time in this invocation. Both families are GPT-NeoX (Pythia \
         style) models pre-trained by w2sg on the default corpus (State of the Union addresses, \
         Shakespeare and Milton, Moby Dick) with checkpoints on a scaled Pythia schedule, saved in HF \
         layout under {}.",
        if quick { "Quick" } else { "Full" },
        families.display()
    ));
    s = s.table(
        [
            "family",
            "layers × width",
            "parameters",
            "steps",
            "training tokens",
            "final validation loss",
        ],
        family_rows
            .iter()
            .map(|r| {
                vec![
                    r["name"].as_str().unwrap_or("").to_string(),
                    format!("{} × {}", r["num_layers"], r["hidden_size"]),
                    r["parameters"].to_string(),
                    r["steps"].to_string(),
                    r["tokens"].to_string(),
                    r["final_val_loss"]
                        .as_f64()
                        .map_or("–".into(), |v| format!("{v:.3}")),
                ]
            })
            .collect::<Vec<_>>(),
    );
    for name in ["strong", "weak"] {
        let png = families.join(name).join("loss_curve.png");
        if let Ok(bytes) = std::fs::read(&png) {
            s = s.png(bytes, format!("Pre-training loss of the {name} family"));
        }
    }
    s.pre(setup.plan.clone())
}

/// Per (task, loss): the last checkpoint's numbers and the transition.
fn headline(a: &Analysis) -> Value {
    let mut out = Vec::new();
    for t in &a.transitions {
        let last = a
            .steps
            .iter()
            .filter(|r| r.family == t.family && r.task == t.task && r.loss == t.loss)
            .rev()
            .find(|r| r.acc_w2s.is_some());
        out.push(json!({
            "family": t.family, "task": t.task, "loss": t.loss,
            "last_revision": last.map(|r| r.revision.clone()),
            "acc_weak": last.and_then(|r| r.acc_weak),
            "acc_w2s": last.and_then(|r| r.acc_w2s),
            "acc_ceiling": last.and_then(|r| r.acc_ceiling),
            "pgr": last.and_then(|r| r.pgr),
            "pgr_interval": last.and_then(|r| r.pgr_lo.zip(r.pgr_hi)),
            "sustained_step": t.sustained_step,
            // The midpoint of the W2S-gain fit only where the data identify it; otherwise why not.
            "gain_midpoint_step": t.identified_fit().map(|s| s.midpoint_step),
            "gain_midpoint_interval": t.identified_fit().and_then(|s| s.midpoint_step_interval),
            "gain_midpoint_not_identified": t.not_identified(),
        }));
    }
    Value::Array(out)
}

/// One paragraph of findings in numbers.
fn findings(a: &Analysis) -> String {
    let mut parts = Vec::new();
    for t in &a.transitions {
        let rows: Vec<_> = a
            .steps
            .iter()
            .filter(|r| r.family == t.family && r.task == t.task && r.loss == t.loss)
            .filter(|r| r.acc_w2s.is_some())
            .collect();
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            continue;
        };
        let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
        let pgr = match (last.pgr, last.pgr_lo, last.pgr_hi) {
            (Some(p), Some(lo), Some(hi)) => format!("PGR {p:.2} [{lo:.2}, {hi:.2}]"),
            (Some(p), _, _) => format!("PGR {p:.2}"),
            _ => "PGR undefined (gap within its SE)".into(),
        };
        parts.push(format!(
            "{} / {}: at {} w2s {} vs weak {} (ceiling {}); at {} w2s {} vs weak {} (ceiling {}), {}; \
             w2s beats weak by > {} SE from {}.",
            t.task,
            t.loss,
            first.revision,
            f(first.acc_w2s),
            f(first.acc_weak),
            f(first.acc_ceiling),
            last.revision,
            f(last.acc_w2s),
            f(last.acc_weak),
            f(last.acc_ceiling),
            pgr,
            t.z,
            t.sustained_step
                .map_or("no step (never sustained)".to_string(), |s| format!("step {s} on"))
        ));
    }
    parts.join(" ")
}

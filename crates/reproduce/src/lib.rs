//! w2sg-reproduce: one command per lab that reproduces the paper's findings with figures and a report,
//! and one for both.
//!
//! - [`theory_lab`] runs the single-index reproduction: seven figures, each made from sweeps whose
//!   config texts are printed in the report, each with the CSV behind it and headline numbers in
//!   `summary.json`.
//! - [`lm_lab::lm_lab`] pre-trains (or reuses) w2sg's own GPT-NeoX families and sweeps the
//!   weak-to-strong protocol over every checkpoint.
//! - [`both_labs`] runs the two into `theory/` and `lm/` and joins their reports into one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use w2sg_progress::Reporter;
use w2sg_report::{Figure, Report, Section};

pub mod figures;
pub mod lm_lab;
pub mod runner;

use runner::Table;

/// What went wrong in a reproduction.
#[derive(Debug, thiserror::Error)]
pub enum ReproError {
    #[error("invalid built-in config: {0}")]
    Config(String),
    #[error("a run failed: {0}")]
    Run(String),
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("figure: {0}")]
    Figure(#[from] w2sg_report::ReportError),
}

/// What a lab's reproduction produced: its headline numbers and its report sections (also saved as
/// the lab's own report.html).
pub struct LabOutcome {
    pub summary: Value,
    pub sections: Vec<Section>,
}

/// How to run a reproduction.
#[derive(Clone, Debug)]
pub struct Options {
    /// Smaller d, fewer seeds: every figure in a few minutes on 2 cores.
    pub quick: bool,
    pub out: PathBuf,
    /// Worker threads (0: all cores). Numbers do not depend on it.
    pub threads: usize,
    /// Only these figures (1-based numbers); empty: all.
    pub only: Vec<usize>,
    /// Where the simulations' progress and each figure's finding are reported (default: nowhere).
    pub progress: Reporter,
}

/// One figure of a reproduction: the plot, the data behind it, the configs that made it, and what it shows.
pub struct FigureOutput {
    /// File stem, e.g. `fig1_start`.
    pub id: &'static str,
    pub title: String,
    /// The paper's claim this figure tests.
    pub claim: String,
    /// What the figure shows, in numbers.
    pub findings: Vec<String>,
    pub figure: Figure,
    pub table: Table,
    /// `(sweep name, config text)`.
    pub configs: Vec<(String, String)>,
    /// Headline numbers for `summary.json`.
    pub headline: Value,
    pub seconds: f64,
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ReproError> {
    std::fs::write(path, bytes).map_err(|e| ReproError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The theory-lab reproduction: writes `figN_*.{png,svg,csv}`, `report.html` and `summary.json` to
/// `opts.out` and returns the summary and the report's sections.
pub fn theory_lab(opts: &Options) -> Result<LabOutcome, ReproError> {
    std::fs::create_dir_all(&opts.out).map_err(|e| ReproError::Write {
        path: opts.out.clone(),
        reason: e.to_string(),
    })?;
    let started = Instant::now();
    runner::take_engine_counts();
    let mut outputs = Vec::new();
    for (i, make) in figures::ALL.iter().enumerate() {
        if !opts.only.is_empty() && !opts.only.contains(&(i + 1)) {
            continue;
        }
        let t0 = Instant::now();
        opts.progress
            .note(&format!("figure {}/{}", i + 1, figures::ALL.len()));
        let mut fig = make(opts)?;
        fig.seconds = t0.elapsed().as_secs_f64();
        fig.figure.save(&opts.out, fig.id)?;
        write(
            &opts.out.join(format!("{}.csv", fig.id)),
            &fig.table.to_csv(),
        )?;
        opts.progress.note(&format!(
            "  {} ({:.1} s): {}",
            fig.id,
            fig.seconds,
            fig.findings.first().map(String::as_str).unwrap_or("")
        ));
        outputs.push(fig);
    }
    let total = started.elapsed().as_secs_f64();
    let (reduced_runs, full_runs) = runner::take_engine_counts();
    let version = format!("w2sg {}", env!("CARGO_PKG_VERSION"));
    let mode = if opts.quick { "quick" } else { "full" };
    let summary = json!({
        "software": version,
        "mode": mode,
        "total_seconds": total,
        "threads": opts.threads,
        "runs": {"reduced_engine": reduced_runs, "full_engine": full_runs},
        "figures": outputs.iter().map(|f| json!({
            "id": f.id, "title": f.title, "seconds": f.seconds, "findings": f.findings, "headline": f.headline,
        })).collect::<Vec<_>>(),
    });
    write(
        &opts.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .expect("json")
            .as_bytes(),
    )?;

    let mut sections = Vec::new();
    sections.push(
        Section::new("Theory lab: about these figures")
            .paragraph(format!(
                "Reproduction of the synthetic findings of arXiv 2605.05710 with {version}, {mode} mode, in {total:.1} s \
                 of wall time. Model and notation: docs/theory.md in the w2sg repository. {reduced_runs} simulated runs used the reduced \
                 engine (the same finite-d process, exact in distribution, O(1) per SGD step) and {full_runs} the full \
                 O(d)-per-step engine. Dashed lines are the d → ∞ theory (BBP overlaps and the overlap ODE) for the \
                 same configs."
            ))
            .table(
                ["figure", "claim", "seconds"],
                outputs.iter().map(|f| vec![f.title.clone(), f.claim.clone(), format!("{:.1}", f.seconds)]).collect::<Vec<_>>(),
            ),
    );
    for f in &outputs {
        let mut section = Section::new(&f.title).paragraph(format!("Claim: {}", f.claim));
        for finding in &f.findings {
            section = section.paragraph(finding.clone());
        }
        section = section.figure_png(&f.figure, format!("{} — data in {}.csv", f.title, f.id))?;
        for (name, text) in &f.configs {
            section = section
                .paragraph(format!("Config `{name}`:"))
                .pre(text.clone());
        }
        sections.push(section);
    }
    let mut report = Report::new(
        "w2sg: the blessing of pre-training in weak-to-strong generalization (theory lab)",
    );
    for s in &sections {
        report.push(s.clone());
    }
    report.save(opts.out.join("report.html"))?;
    Ok(LabOutcome { summary, sections })
}

/// Both labs: the theory reproduction into `out/theory`, the checkpoint lab into `out/lm`, and one
/// `out/report.html` and `out/summary.json` for the two.
pub fn both_labs(
    quick: bool,
    out: &Path,
    threads: usize,
    progress: Reporter,
) -> Result<Value, ReproError> {
    let started = Instant::now();
    std::fs::create_dir_all(out).map_err(|e| ReproError::Write {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    progress.note(&format!("== theory lab → {}", out.join("theory").display()));
    let theory = theory_lab(&Options {
        quick,
        out: out.join("theory"),
        threads,
        only: Vec::new(),
        progress: progress.clone(),
    })?;
    progress.note(&format!("== checkpoint lab → {}", out.join("lm").display()));
    let lm = lm_lab::lm_lab(&lm_lab::LmOptions {
        quick,
        out: out.join("lm"),
        progress,
    })?;
    let total = started.elapsed().as_secs_f64();
    let mode = if quick { "quick" } else { "full" };
    let summary = json!({
        "software": format!("w2sg {}", env!("CARGO_PKG_VERSION")),
        "mode": mode,
        "total_seconds": total,
        "theory": theory.summary,
        "lm": lm.summary,
    });
    write(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .expect("json")
            .as_bytes(),
    )?;
    let mut report =
        Report::new("w2sg: the blessing of pre-training in weak-to-strong generalization");
    report.push(Section::new("About this report").paragraph(format!(
        "Both halves of arXiv 2605.05710, reproduced by w2sg {} in {mode} mode in {total:.0} s of \
         wall time: the theory lab (single-index model, spectral pre-training, online SGD on weak \
         labels, with the d → ∞ theory) and the checkpoint lab (w2sg's own GPT-NeoX families, the \
         weak-to-strong protocol at every checkpoint). Each lab's files are in theory/ and lm/.",
        env!("CARGO_PKG_VERSION")
    )));
    for s in theory.sections.into_iter().chain(lm.sections) {
        report.push(s);
    }
    report.save(out.join("report.html"))?;
    Ok(summary)
}

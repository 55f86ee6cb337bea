//! `w2sg reproduce [--quick]`: both labs into one report; `reproduce theory` and `reproduce lm` run one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

/// `w2sg reproduce`: both labs, or one of them.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReproduceArgs {
    #[command(subcommand)]
    command: Option<ReproduceCommand>,
    /// Output directory: theory/, lm/, report.html (both labs) and summary.json.
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// The quick versions: the theory figures at smaller d, the checkpoint lab on the tiny family
    /// (about 13 minutes in all on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Worker threads for the theory lab (default: all cores). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Subcommand)]
pub enum ReproduceCommand {
    /// The checkpoint lab: pre-train (or reuse) w2sg's own families, sweep every checkpoint.
    Lm {
        /// Output directory: families/, sweep/, report.html, summary.json.
        #[arg(long)]
        out: PathBuf,
        /// The tiny family (41 checkpoints) on VADER movie snippets and word order, with fine-tuned
        /// students at five checkpoints: about 12 minutes on 2 cores.
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
        progress: crate::bars::Bars::reporter(true, true),
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

/// Runs `w2sg reproduce …`.
pub fn run(args: ReproduceArgs) -> ExitCode {
    match args {
        ReproduceArgs {
            command:
                Some(ReproduceCommand::Theory {
                    out,
                    quick,
                    threads,
                    only,
                }),
            ..
        } => reproduce_theory(out, quick, threads, only),
        ReproduceArgs {
            command: Some(ReproduceCommand::Lm { out, quick, quiet }),
            ..
        } => {
            let opts = w2sg_reproduce::lm_lab::LmOptions {
                quick,
                out: out.clone(),
                progress: crate::bars::Bars::reporter(!quiet, !quiet),
            };
            finish_reproduction(
                &out,
                w2sg_reproduce::lm_lab::lm_lab(&opts).map(|o| o.summary),
            )
        }
        ReproduceArgs {
            command: None,
            out,
            quick,
            threads,
        } => {
            let Some(out) = out else {
                eprintln!("error: `w2sg reproduce` needs --out DIR");
                return ExitCode::from(2);
            };
            finish_reproduction(
                &out,
                w2sg_reproduce::both_labs(
                    quick,
                    &out,
                    threads,
                    crate::bars::Bars::reporter(true, true),
                ),
            )
        }
    }
}

//! `w2sg lm pretrain`: train (or resume) a family from a preset or a TOML config file.
//!
//! `w2sg lm pretrain --preset tiny --corpus default --out DIR` or `w2sg lm pretrain --config FILE.toml
//! --out DIR`. Flags given on the command line (`--corpus`, `--steps`, `--seed`) override the preset
//! or file. Re-running the same command on the same `--out` resumes from the latest checkpoint; a
//! different config there is an error. Exit codes: 0 success, 1 a failure while training or writing,
//! 2 bad input.

use std::path::PathBuf;

use clap::Args;

use w2sg_lm::pretrain::presets::PretrainConfig;
use w2sg_lm::pretrain::train::{pretrain, RunOptions};
use w2sg_lm::pretrain::Result;

/// Arguments of `w2sg lm pretrain`.
#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Preset: weak (2×64), tiny (4×128, minutes on 2 cores) or small (6×256, about an hour).
    #[arg(long, conflicts_with = "config")]
    pub preset: Option<String>,
    /// TOML config: `preset = "..."` plus any keys to override (see README.md, "Pre-training a small Pythia-style family").
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `default` (State of the Union, Shakespeare + Milton, Moby Dick) and/or text files or
    /// directories of .txt files; repeatable.
    #[arg(long)]
    pub corpus: Vec<String>,
    /// Output directory (resumes if it holds a run with the same config).
    #[arg(long)]
    pub out: PathBuf,
    /// Override the number of optimizer steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Override the seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the optimizer state in every checkpoint, not just the latest.
    #[arg(long)]
    pub keep_optimizer_states: bool,
    /// Stop after this many steps without saving (simulates a kill; for testing resume).
    #[arg(long, hide = true)]
    pub stop_after: Option<u64>,
}

fn build_config(args: &PretrainArgs) -> Result<PretrainConfig> {
    let mut c = match &args.config {
        Some(path) => PretrainConfig::from_toml_file(path)?,
        None => PretrainConfig::preset(args.preset.as_deref().unwrap_or("tiny"))?,
    };
    if !args.corpus.is_empty() {
        c.corpus = args.corpus.clone();
    }
    if let Some(s) = args.steps {
        c.steps = s;
    }
    if let Some(s) = args.seed {
        c.seed = s;
    }
    c.validate()?;
    Ok(c)
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: PretrainArgs) -> u8 {
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    eprintln!(
        "w2sg lm pretrain: preset {}, {} layers × {} wide, context {}, {} steps of {} sequences, seed {} → {}",
        config.preset,
        config.model.num_layers,
        config.model.hidden_size,
        config.model.context,
        config.steps,
        config.batch_size,
        config.seed,
        args.out.display()
    );
    let opts = RunOptions {
        keep_optimizer_states: args.keep_optimizer_states,
        stop_after: args.stop_after,
        progress: crate::bars::Bars::reporter(true, true),
        ..RunOptions::default()
    };
    match pretrain(&config, &args.out, &opts) {
        Ok(s) => {
            if let Some(r) = s.resumed_from {
                eprintln!("resumed from step {r}");
            }
            eprintln!(
                "{} parameters; {} training / {} validation tokens; step {}; final validation loss {}; \
                 {:.0} training tokens/s; {:.1} s",
                s.num_parameters,
                s.train_tokens,
                s.validation_tokens,
                s.step,
                s.final_val_loss
                    .map_or("-".to_string(), |v| format!("{v:.4}")),
                s.tokens_per_second,
                s.wall_seconds
            );
            eprintln!(
                "wrote {0}/step*/, {0}/family.json, {0}/loss.csv, {0}/loss_curve.png",
                args.out.display()
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

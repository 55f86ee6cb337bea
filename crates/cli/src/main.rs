//! The `w2sg` command-line tool: a thin layer over the lab crates. Every argument, every line printed,
//! every progress bar and every exit code is decided here; the libraries return typed errors.
//!
//! One module per command: [`sim`], [`reproduce`], [`sweep`], [`lm`] (with [`pretrain`]).
//!
//! Exit codes: 0 success; 1 a run failed or results could not be written (everything that finished is
//! still written); 2 bad input (config file, flags).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bars;
mod lm;
mod pretrain;
mod reproduce;
mod sim;
mod sweep;

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
        command: sim::SimCommand,
    },
    /// One-command reproductions of the paper's findings, with figures and an HTML report:
    /// `w2sg reproduce [--quick] --out DIR` runs both labs; `theory` and `lm` run one.
    Reproduce(reproduce::ReproduceArgs),
    /// The weak-to-strong protocol at every checkpoint of a family (resumable, shardable).
    Sweep(sweep::SweepArgs),
    /// Language-model checkpoints (Pythia / GPT-NeoX, OLMo, Llama): inspect, download, extract features, pre-train.
    Lm {
        #[command(subcommand)]
        command: LmCommand,
    },
}

/// `w2sg lm …`: the checkpoint lab's commands plus pre-training.
#[derive(Subcommand)]
enum LmCommand {
    #[command(flatten)]
    Lab(lm::LmCommand),
    /// Pre-train a small GPT-NeoX family on real text, with checkpoints on Pythia's schedule.
    Pretrain(pretrain::PretrainArgs),
}

fn main() -> ExitCode {
    // Before any thread exists (the second sets an environment variable).
    w2sg_lm::host::tune_allocator();
    w2sg_lm::host::serial_candle_elementwise();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Sim { command } => sim::run(command),
        Command::Reproduce(args) => reproduce::run(args),
        Command::Sweep(args) => ExitCode::from(sweep::run(args)),
        Command::Lm {
            command: LmCommand::Lab(command),
        } => ExitCode::from(lm::run(command)),
        Command::Lm {
            command: LmCommand::Pretrain(args),
        } => ExitCode::from(pretrain::run(args)),
    }
}

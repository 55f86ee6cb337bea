//! w2sg-sweep: the weak-to-strong protocol at every checkpoint of a language-model family.
//!
//! Data flows one way: a [`plan`] file → [`engine`] (resolve checkpoints and tasks, run every unit
//! not yet in the results store: features per checkpoint, weak labels per seed, ceiling and w2s
//! students) → the store (crates/protocol: SQLite, content-keyed, resumable, shardable, mergeable) →
//! [`analysis`] (PGR with intervals, the phase transition) → [`outputs`] (tables, figures, the report
//! section). [`session`] opens a plan once and runs, merges or reports it (`w2sg sweep` in crates/cli is a thin layer over it); [`slurm`] runs it as a Slurm job array.
//!
//! Language models come from crates/lm (any family it reads: Pythia, OLMo, w2sg's own), tasks from
//! crates/data, probes and statistics from crates/protocol. This crate only orchestrates.

pub mod analysis;
pub mod compute;
pub mod dataset;
pub mod engine;
pub mod error;
pub mod fault;
pub mod fetch;
pub mod finetune;
pub mod outputs;
pub mod plan;
pub mod resolve;
pub mod session;
pub mod slurm;
pub mod specs;
#[doc(hidden)]
pub mod testing;

pub use analysis::{analyse, Analysis};
pub use engine::{resolve, run, Resolved, RunOptions, RunReport};
pub use error::{Error, Result};
pub use plan::Plan;
pub use session::{MergeOutcome, RunOutcome, Session};

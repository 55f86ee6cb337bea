//! The sweep's error type. Each variant names the file, model or unit involved, so a message is
//! actionable without a backtrace. Errors inside one checkpoint's work are not errors of the sweep:
//! they are recorded as failed units and the sweep goes on.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plan file cannot be read or is invalid.
    #[error("plan {path}: {problem}")]
    Plan { path: PathBuf, problem: String },

    /// Bad input other than the plan: a task, a family, a flag.
    #[error("{what}: {problem}")]
    Input { what: String, problem: String },

    #[error(transparent)]
    Data(#[from] w2sg_data::DataError),

    #[error(transparent)]
    Lm(#[from] w2sg_lm::LmError),

    #[error(transparent)]
    Protocol(#[from] w2sg_protocol::Error),

    #[error(transparent)]
    Report(#[from] w2sg_report::ReportError),

    /// The hub could not be reached or answered with an error (`download = true` families).
    #[error("{what}: {problem}")]
    Download { what: String, problem: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Writing, submitting or waiting for Slurm jobs failed (`w2sg sweep slurm`).
    #[error(transparent)]
    Slurm(#[from] crate::slurm::SlurmError),

    /// Units failed (each is recorded in the store with its error; the rest of the sweep finished).
    #[error("{0} unit(s) failed; their errors are in the results store and in failures.csv")]
    UnitsFailed(usize),

    /// Units failed, some of them in an earlier run (recorded failures are not retried by default).
    #[error(
        "{failed} unit(s) failed, {earlier} of them in an earlier run (recorded failures are not \
         retried); their errors are in failures.csv. If you have repaired their inputs (a checkpoint, \
         a task file), run again with --retry-failed"
    )]
    FailedEarlier { failed: usize, earlier: usize },

    /// A value of the plan that only the resolved inputs show to be wrong (a layer the checkpoints do
    /// not have, a task file that cannot be read); `key` as the user writes it.
    #[error("plan key `{key}`: {problem}")]
    PlanKey { key: String, problem: String },

    /// Another process is writing the same output directory.
    #[error("{0}")]
    Locked(#[from] w2sg_fsio::LockError),

    /// `sweep merge` found fewer shard databases than the shard count their names give.
    #[error(
        "{dir}: shard(s) {missing} of {count} are missing (a job of the array did not finish): run \
         them again with `--shard I/{count}`, or merge what exists with --allow-missing"
    )]
    MissingShards {
        dir: PathBuf,
        missing: String,
        count: usize,
    },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Names the plan file in an error about one of its keys.
    pub fn in_plan(self, path: &std::path::Path) -> Self {
        match self {
            Error::PlanKey { key, problem } => Error::Plan {
                path: path.to_path_buf(),
                problem: format!("key `{key}`: {problem}"),
            },
            e => e,
        }
    }

    /// Process exit code: 2 for bad input, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Plan { .. } | Error::Input { .. } | Error::PlanKey { .. } => 2,
            Error::Data(
                w2sg_data::DataError::Line { .. } | w2sg_data::DataError::Format { .. },
            ) => 2,
            // Models named by the plan that cannot be found or read are bad input.
            Error::Lm(e) => e.exit_code(),
            Error::Slurm(e) => e.exit_code(),
            _ => 1,
        }
    }
}

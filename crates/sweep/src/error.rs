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
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Process exit code: 2 for bad input, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Plan { .. } | Error::Input { .. } => 2,
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

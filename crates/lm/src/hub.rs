//! Where checkpoints live: a checkpoint directory, a family directory of revisions, or the Hugging Face
//! hub cache — and how `PATH[@REV]` / `ORG/NAME[@REV]` picks one.
//!
//! The hub cache is read offline with a small resolver of our own, following the layout `huggingface_hub`
//! writes: `<cache>/models--ORG--NAME/refs/<rev>` holds a commit hash, `snapshots/<commit>/` holds the
//! files (symlinks into `blobs/`, named by the file's sha256 for LFS files). The cache root is
//! `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, as in `huggingface_hub`.
//! A revision is a ref name (`main`, `step1000`, `refs/pr/1`) or a full 40-hex commit.
//!
//! Why not the `hf-hub` crate for reading: its 0.x API ignores `HF_HUB_CACHE` and cannot resolve commit
//! revisions, and its 1.x API pulls in an async HTTP stack; neither is needed to read a directory.
//! Resolving never touches the network: [`crate::download`] (`w2sg lm download`) fills the cache.
//!
//! Resolution of a model spec (see [`resolve`]):
//! 1. an existing directory with `config.json` is the checkpoint;
//! 2. `DIR@REV` where DIR is a family directory (one sub-directory per revision) or a cache repository
//!    directory (`models--ORG--NAME`) picks that revision; without `@REV` such a directory means `main`;
//! 3. `ORG/NAME[@REV]` is looked up in the hub cache (revision `main` by default).

use std::path::{Path, PathBuf};

use crate::error::{LmError, Result};

/// The hub cache root from the environment, as `huggingface_hub` computes it.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(home).join("hub"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// A Hugging Face hub cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCache {
    root: PathBuf,
}

/// Whether `s` is a full commit hash.
fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks an `ORG/NAME` repository id.
pub fn is_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

impl HubCache {
    /// A cache rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HubCache { root: root.into() }
    }

    /// The cache the environment points at (it may not exist).
    pub fn from_env() -> Option<Self> {
        default_cache_dir().map(HubCache::new)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/models--ORG--NAME`.
    pub fn repo_dir(&self, repo_id: &str) -> PathBuf {
        self.root
            .join(format!("models--{}", repo_id.replace('/', "--")))
    }

    /// The ids (`ORG/NAME`) of the model repositories in the cache, sorted.
    pub fn repo_ids(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(LmError::io(&self.root, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| LmError::io(&self.root, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(id) = name.strip_prefix("models--") {
                if is_cache_repo_dir(&path) {
                    ids.push(id.replacen("--", "/", 1));
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// All refs of a cached repository: (ref name, commit), sorted by name.
    pub fn refs(&self, repo_id: &str) -> Result<Vec<(String, String)>> {
        repo_refs(&self.repo_dir(repo_id))
    }

    /// The snapshot directory of `revision` (a ref name or a commit).
    pub fn snapshot(&self, repo_id: &str, revision: &str) -> Result<PathBuf> {
        snapshot_in(
            &self.repo_dir(repo_id),
            revision,
            &format!("{repo_id}@{revision}"),
        )
    }
}

/// An exclusive lock on one blob of a cache repository, held until dropped: the lock file
/// `<cache>/.locks/models--ORG--NAME/<blob>.lock` that huggingface_hub takes too (an `flock`), so
/// shards of a sweep sharing a cache, and Python's HF tools beside them, never write the same blob
/// at once, nor delete one another process is linking.
pub struct BlobLock {
    _file: std::fs::File,
}

/// Waits for and takes the lock of blob `name` of the cache repository directory `repo_dir`.
pub fn lock_blob(repo_dir: &Path, name: &str) -> Result<BlobLock> {
    let root = repo_dir.parent().unwrap_or(Path::new("."));
    let repo = repo_dir.file_name().unwrap_or_default();
    let dir = root.join(".locks").join(repo);
    std::fs::create_dir_all(&dir).map_err(|e| LmError::io(&dir, e))?;
    let path = dir.join(format!("{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LmError::io(&path, e))?;
    flock_exclusive(&file).map_err(|e| LmError::io(&path, e))?;
    Ok(BlobLock { _file: file })
}

#[cfg(unix)]
fn flock_exclusive(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: flock on a file descriptor this File owns for the call's duration.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(not(unix))]
fn flock_exclusive(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

/// Whether `dir` looks like a cache repository directory (`models--ORG--NAME` with refs or snapshots).
pub fn is_cache_repo_dir(dir: &Path) -> bool {
    dir.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("models--"))
        && (dir.join("refs").is_dir() || dir.join("snapshots").is_dir())
}

/// Refs of a cache repository directory: (ref name, commit), sorted by name.
pub fn repo_refs(repo_dir: &Path) -> Result<Vec<(String, String)>> {
    let refs_dir = repo_dir.join("refs");
    let mut out = Vec::new();
    if refs_dir.is_dir() {
        collect_refs(&refs_dir, "", &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn collect_refs(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| LmError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LmError::io(dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let full = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if path.is_dir() {
            // Pull-request refs live in refs/refs/pr/N, named "refs/pr/N".
            collect_refs(&path, &full, out)?;
        } else {
            let commit = std::fs::read_to_string(&path).map_err(|e| LmError::io(&path, e))?;
            let commit = commit.trim().to_string();
            if is_commit(&commit) {
                out.push((full, commit));
            }
        }
    }
    Ok(())
}

/// Resolves `revision` inside a cache repository directory.
fn snapshot_in(repo_dir: &Path, revision: &str, spec: &str) -> Result<PathBuf> {
    if !repo_dir.is_dir() {
        return Err(LmError::NotFound {
            spec: spec.to_string(),
            msg: format!(
                "not in the hub cache ({} does not exist)",
                repo_dir.display()
            ),
        });
    }
    if revision
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(LmError::NotFound {
            spec: spec.to_string(),
            msg: format!("invalid revision `{revision}`"),
        });
    }
    let commit = if is_commit(revision) {
        revision.to_string()
    } else {
        let ref_file = repo_dir.join("refs").join(revision);
        match std::fs::read_to_string(&ref_file) {
            Ok(c) => c.trim().to_string(),
            Err(_) => {
                let refs = repo_refs(repo_dir)?;
                let names: Vec<&str> = refs.iter().map(|(n, _)| n.as_str()).collect();
                return Err(LmError::NotFound {
                    spec: spec.to_string(),
                    msg: format!(
                        "no ref `{revision}` in {} (cached refs: {})",
                        repo_dir.join("refs").display(),
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            abbreviate(&names)
                        }
                    ),
                });
            }
        }
    };
    let snap = repo_dir.join("snapshots").join(&commit);
    if !snap.is_dir() {
        return Err(LmError::NotFound {
            spec: spec.to_string(),
            msg: format!(
                "revision `{revision}` is commit {commit}, but {} is missing",
                snap.display()
            ),
        });
    }
    Ok(snap)
}

/// "a, b, c, … (N in all)" for long lists in messages.
pub(crate) fn abbreviate(names: &[&str]) -> String {
    if names.len() <= 8 {
        names.join(", ")
    } else {
        format!(
            "{}, …, {} ({} in all)",
            names[..6].join(", "),
            names[names.len() - 1],
            names.len()
        )
    }
}

/// Sub-directories of a family directory that are checkpoints (contain `config.json`), by name.
pub fn family_members(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| LmError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LmError::io(dir, e))?;
        let path = entry.path();
        if path.join("config.json").is_file() {
            if let Some(name) = entry.file_name().to_str() {
                out.push((name.to_string(), path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A resolved model spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The checkpoint directory (with `config.json`).
    pub dir: PathBuf,
    /// The spec as given, for messages and provenance.
    pub spec: String,
    /// The revision, when the spec selected one.
    pub revision: Option<String>,
}

/// Resolves `PATH`, `PATH@REV`, `ORG/NAME` or `ORG/NAME@REV` to a checkpoint directory.
pub fn resolve(spec: &str, cache: Option<&HubCache>) -> Result<Resolved> {
    let not_found = |msg: String| LmError::NotFound {
        spec: spec.to_string(),
        msg,
    };
    let whole = Path::new(spec);
    let (base, revision) = if whole.exists() {
        (spec, None)
    } else {
        match spec.rsplit_once('@') {
            Some((b, r)) if !r.is_empty() => (b, Some(r)),
            _ => (spec, None),
        }
    };
    let base_path = Path::new(base);
    if base_path.is_dir() {
        if base_path.join("config.json").is_file() {
            if let Some(rev) = revision {
                if !base_path.join(rev).join("config.json").is_file() {
                    return Err(not_found(format!(
                        "{} is a single checkpoint; it has no revision `{rev}`",
                        base_path.display()
                    )));
                }
                let dir = base_path.join(rev);
                return Ok(Resolved {
                    dir,
                    spec: spec.into(),
                    revision: Some(rev.into()),
                });
            }
            return Ok(Resolved {
                dir: base_path.to_path_buf(),
                spec: spec.into(),
                revision: None,
            });
        }
        let rev = revision.unwrap_or("main");
        if is_cache_repo_dir(base_path) {
            let dir = snapshot_in(base_path, rev, spec)?;
            return Ok(Resolved {
                dir,
                spec: spec.into(),
                revision: Some(rev.into()),
            });
        }
        let members = family_members(base_path)?;
        if members.is_empty() {
            return Err(LmError::MissingConfig {
                dir: base_path.to_path_buf(),
            });
        }
        return match members.iter().find(|(n, _)| n == rev) {
            Some((_, dir)) => Ok(Resolved {
                dir: dir.clone(),
                spec: spec.into(),
                revision: Some(rev.into()),
            }),
            None => {
                let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
                Err(not_found(format!(
                    "{} has no revision `{rev}`{} (revisions: {})",
                    base_path.display(),
                    if revision.is_none() {
                        "; choose one with PATH@REV"
                    } else {
                        ""
                    },
                    abbreviate(&names)
                )))
            }
        };
    }
    if is_repo_id(base) {
        let rev = revision.unwrap_or("main");
        let env_cache;
        let cache = match cache {
            Some(c) => c,
            None => {
                env_cache = HubCache::from_env()
                    .ok_or_else(|| not_found("no hub cache: set HF_HUB_CACHE or HF_HOME".into()))?;
                &env_cache
            }
        };
        return match cache.snapshot(base, rev) {
            Ok(dir) => Ok(Resolved {
                dir,
                spec: spec.into(),
                revision: Some(rev.into()),
            }),
            Err(LmError::NotFound { msg, .. }) => Err(not_found(format!(
                "{msg}; fetch it with `w2sg lm download {base} --revisions {rev}`"
            ))),
            Err(e) => Err(e),
        };
    }
    Err(not_found(
        "no such directory, and not an ORG/NAME repository id".into(),
    ))
}

/// `fnmatch`-style matching as `huggingface_hub`'s `allow_patterns`: `*` matches any run of
/// characters (slashes included), `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

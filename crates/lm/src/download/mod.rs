//! Downloading revisions from a Hugging Face hub into the hub cache, in exactly the layout
//! `huggingface_hub` writes, so that Python's HF tools and w2sg share one cache both ways:
//!
//! ```text
//! <cache>/models--ORG--NAME/blobs/<etag>             file contents (etag = sha256 for LFS files,
//!                                                     the git blob id otherwise)
//! <cache>/models--ORG--NAME/blobs/<etag>.incomplete  a partial download, resumed with a Range request
//! <cache>/models--ORG--NAME/snapshots/<commit>/<path> relative symlink to ../../blobs/<etag>
//! <cache>/models--ORG--NAME/refs/<branch>             the branch's commit hash (no newline)
//! ```
//!
//! The hub is `$HF_ENDPOINT` (default `https://huggingface.co`), authenticated with `$HF_TOKEN` when
//! set (never sent to the other host an LFS download redirects to); `HF_HUB_OFFLINE=1` means no
//! request at all. Endpoints used: `GET /api/models/{repo}/refs` (branches and their commits),
//! `GET /api/models/{repo}/revision/{rev}` (a commit given by hash), `GET
//! /api/models/{repo}/tree/{commit}?recursive=true` (paths, sizes, git and LFS ids, paginated with a
//! `Link: rel="next"` header) and `GET /{repo}/resolve/{commit}/{path}` (the file, possibly through a
//! redirect to another host for LFS files). Every file's size is checked, and LFS files' sha256.
//!
//! Why our own client on `ureq` (blocking, rustls): `hf-hub` 0.5 ignores `HF_HUB_CACHE`, and 1.x is
//! async on tokio; neither resumes `.incomplete` files the way `huggingface_hub` does.

mod client;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use w2sg_fsio::{Digest, Sha256};

use client::{check_status, encode};
#[cfg(test)]
use client::{next_link, origin};
pub use client::{offline_from_env, Hub, RemoteFile, DEFAULT_ENDPOINT};

use crate::hub::{abbreviate, HubCache};
use crate::revisions::{sort_revisions, Revision, RevisionName};

/// Errors of the downloader.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Bad input: a repository id, a `--revisions` value, a revision or file the hub does not have.
    #[error("{0}")]
    Input(String),

    /// `HF_HUB_OFFLINE` is set and something is not in the cache.
    #[error("HF_HUB_OFFLINE is set, so nothing is downloaded: {0}")]
    Offline(String),

    /// The hub could not be reached or answered with an error.
    #[error("{url}: {problem}")]
    Http { url: String, problem: String },

    /// A downloaded file has the wrong size or checksum (the partial file is removed).
    #[error("{repo}@{revision}: {path}: {problem}")]
    Integrity {
        repo: String,
        revision: String,
        path: String,
        problem: String,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DownloadError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        DownloadError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// 2 for bad input (including a revision or file that does not exist), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            DownloadError::Input(_) | DownloadError::Offline(_) => 2,
            _ => 1,
        }
    }
}

pub type Result<T> = std::result::Result<T, DownloadError>;

/// Which revisions to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revisions {
    /// Every branch.
    All,
    /// These branches (or commit hashes).
    Named(Vec<String>),
    /// Every N-th branch with a step number in training order, always including the last (as a
    /// sweep plan's `revisions = { every = N }`).
    Every(usize),
}

impl std::str::FromStr for Revisions {
    type Err = DownloadError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| DownloadError::Input(format!("--revisions `{s}`: {why}"));
        if s == "all" {
            return Ok(Revisions::All);
        }
        if let Some(n) = s.strip_prefix("every=") {
            return match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Revisions::Every(n)),
                _ => Err(bad("every=N needs a positive integer N")),
            };
        }
        let names: Vec<String> = s.split(',').map(|r| r.trim().to_string()).collect();
        if names.iter().any(|n| n.is_empty()) {
            return Err(bad(
                "expected all, every=N, or a comma-separated list of revisions",
            ));
        }
        Ok(Revisions::Named(names))
    }
}

pub use crate::hub::glob_match;

/// The files w2sg needs from a revision: config, tokenizer, and one weights format (safetensors
/// preferred, as `transformers` does; Pythia branches carry both, which would double the download).
pub fn default_selection(files: &[RemoteFile]) -> Vec<&RemoteFile> {
    let has = |p: &str| files.iter().any(|f| f.path == p);
    let st = has("model.safetensors") || has("model.safetensors.index.json");
    files
        .iter()
        .filter(|f| {
            let p = f.path.as_str();
            if p.contains('/') {
                return false;
            }
            matches!(
                p,
                "config.json"
                    | "tokenizer.json"
                    | "tokenizer_config.json"
                    | "special_tokens_map.json"
                    | "generation_config.json"
            ) || if st {
                p == "model.safetensors.index.json"
                    || (p.starts_with("model") && p.ends_with(".safetensors"))
            } else {
                p.starts_with("pytorch_model")
                    && (p.ends_with(".bin") || p.ends_with(".bin.index.json"))
            }
        })
        .collect()
}

/// What [`download`] did for one revision.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub revision: String,
    pub commit: String,
    pub snapshot: PathBuf,
    pub files: usize,
    /// Files already complete in the cache.
    pub cached: usize,
    /// Bytes transferred now.
    pub bytes: u64,
}

/// Options of [`download`].
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub revisions: Revisions,
    /// Glob patterns of files to fetch; empty: [`default_selection`].
    pub include: Vec<String>,
    /// Where a line per revision fetched is reported, as a note (default: nowhere).
    pub progress: w2sg_progress::Reporter,
}

/// Every n-th stepped (branch, commit) in training order, and the last.
fn every_nth(refs: &[(String, String)], n: usize) -> Vec<(String, String)> {
    let mut revs: Vec<Revision> = refs
        .iter()
        .filter_map(|(name, commit)| {
            let parsed = RevisionName::parse(name);
            parsed.step.map(|step| Revision {
                name: name.clone(),
                step: Some(step),
                tokens: parsed.tokens,
                dir: PathBuf::new(),
                commit: Some(commit.clone()),
            })
        })
        .collect();
    sort_revisions(&mut revs);
    let mut out: Vec<&Revision> = revs.iter().step_by(n.max(1)).collect();
    if let Some(last) = revs.last() {
        if out.last().map(|r| &r.name) != Some(&last.name) {
            out.push(last);
        }
    }
    out.into_iter()
        .map(|r| (r.name.clone(), r.commit.clone().unwrap_or_default()))
        .collect()
}

/// Picks (branch, commit) pairs of `refs` per `which`; names not among the branches are looked up
/// through the revision API (tags, commit hashes) and a missing one is an error naming it.
pub fn select_revisions(
    hub: &Hub,
    repo: &str,
    refs: &[(String, String)],
    which: &Revisions,
) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = match which {
        Revisions::All => refs.to_vec(),
        Revisions::Every(n) => every_nth(refs, *n),
        Revisions::Named(names) => {
            let mut v = Vec::new();
            for name in names {
                match refs.iter().find(|(b, _)| b == name) {
                    Some(r) => v.push(r.clone()),
                    None => {
                        let commit = hub.commit(repo, name).map_err(|e| match e {
                            DownloadError::Input(_) => DownloadError::Input(format!(
                                "{repo} has no revision `{name}` (branches: {})",
                                abbreviate(
                                    &refs.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>()
                                )
                            )),
                            e => e,
                        })?;
                        v.push((name.clone(), commit));
                    }
                }
            }
            v
        }
    };
    if out.is_empty() {
        return Err(DownloadError::Input(format!(
            "{repo}: no revision matches --revisions (branches: {})",
            abbreviate(&refs.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>())
        )));
    }
    out.dedup();
    Ok(out)
}

/// Downloads the chosen revisions of `repo` into `cache`. Files already complete in the cache are not
/// fetched again; partial ones resume.
pub fn download(
    hub: &Hub,
    cache: &HubCache,
    repo: &str,
    opts: &DownloadOptions,
) -> Result<Vec<Downloaded>> {
    if !crate::hub::is_repo_id(repo) {
        return Err(DownloadError::Input(format!(
            "`{repo}` is not a repository id (ORG/NAME)"
        )));
    }
    if hub.offline() {
        return offline_check(cache, repo, &opts.revisions);
    }
    let refs = hub.refs(repo)?;
    let chosen = select_revisions(hub, repo, &refs, &opts.revisions)?;
    let mut done = Vec::new();
    for (rev, commit) in chosen {
        let d = download_revision(hub, cache, repo, &rev, &commit, &opts.include)?;
        opts.progress.note(&format!(
            "{repo}@{rev} ({commit}): {} file(s), {} already cached, {:.1} MB downloaded",
            d.files,
            d.cached,
            d.bytes as f64 / 1e6
        ));
        done.push(d);
    }
    Ok(done)
}

/// With `HF_HUB_OFFLINE`: the requested revisions must already be in the cache.
fn offline_check(cache: &HubCache, repo: &str, which: &Revisions) -> Result<Vec<Downloaded>> {
    let cached = cache.refs(repo).unwrap_or_default();
    let names: Vec<String> = match which {
        Revisions::Named(n) => n.clone(),
        _ if cached.is_empty() => {
            return Err(DownloadError::Offline(format!(
                "{repo} has no revisions in {}",
                cache.root().display()
            )))
        }
        Revisions::All => cached.iter().map(|(n, _)| n.clone()).collect(),
        Revisions::Every(n) => every_nth(&cached, *n).into_iter().map(|(r, _)| r).collect(),
    };
    names
        .iter()
        .map(|rev| {
            let snapshot = cache
                .snapshot(repo, rev)
                .map_err(|e| DownloadError::Offline(e.to_string()))?;
            let commit = snapshot
                .file_name()
                .and_then(|c| c.to_str())
                .unwrap_or_default()
                .to_string();
            Ok(Downloaded {
                revision: rev.clone(),
                commit,
                snapshot,
                files: 0,
                cached: 0,
                bytes: 0,
            })
        })
        .collect()
}

/// Downloads one revision (`rev` is the branch, `commit` its commit) and points `refs/<rev>` at it.
pub fn download_revision(
    hub: &Hub,
    cache: &HubCache,
    repo: &str,
    rev: &str,
    commit: &str,
    include: &[String],
) -> Result<Downloaded> {
    let files = hub.tree(repo, commit)?;
    let wanted: Vec<&RemoteFile> = if include.is_empty() {
        default_selection(&files)
    } else {
        files
            .iter()
            .filter(|f| include.iter().any(|g| glob_match(g, &f.path)))
            .collect()
    };
    if include.is_empty() && !wanted.iter().any(|f| f.path == "config.json") {
        return Err(DownloadError::Input(format!(
            "{repo}@{rev}: the revision has no config.json (files: {})",
            abbreviate(&files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>())
        )));
    }
    if wanted.is_empty() {
        return Err(DownloadError::Input(format!(
            "{repo}@{rev}: no file matches --include {} (files: {})",
            include.join(" "),
            abbreviate(&files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>())
        )));
    }
    let mut out = fetch_files(hub, cache, repo, rev, commit, &wanted)?;
    out.files = wanted.len();
    Ok(out)
}

/// Fetches `files` of a revision into the cache (those already complete are not fetched again),
/// links them into its snapshot and points `refs/<rev>` at `commit`.
fn fetch_files(
    hub: &Hub,
    cache: &HubCache,
    repo: &str,
    rev: &str,
    commit: &str,
    files: &[&RemoteFile],
) -> Result<Downloaded> {
    let repo_dir = cache.repo_dir(repo);
    let blobs = repo_dir.join("blobs");
    let snapshot = repo_dir.join("snapshots").join(commit);
    for d in [&blobs, &snapshot] {
        std::fs::create_dir_all(d).map_err(|e| DownloadError::io(d, e))?;
    }
    let mut out = Downloaded {
        revision: rev.to_string(),
        commit: commit.to_string(),
        snapshot: snapshot.clone(),
        files: files.len(),
        cached: 0,
        bytes: 0,
    };
    for f in files {
        if f.path
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(DownloadError::Input(format!(
                "{repo}@{rev}: refusing file path `{}`",
                f.path
            )));
        }
        let blob = blobs.join(&f.etag);
        // Checked, fetched and linked under the blob's lock: another process (a shard sharing the
        // cache, huggingface_hub) may be fetching it, or deleting it (`keep_weights = false`).
        let _lock = crate::hub::lock_blob(&repo_dir, &f.etag)
            .map_err(|e| DownloadError::Input(e.to_string()))?;
        let complete = std::fs::metadata(&blob).is_ok_and(|m| m.len() == f.size);
        if complete {
            out.cached += 1;
        } else {
            out.bytes += fetch_blob(hub, repo, rev, commit, f, &blob)?;
        }
        link(&snapshot, &f.path, &f.etag)?;
    }
    if rev != commit {
        let ref_file = repo_dir.join("refs").join(rev);
        write_atomic(&ref_file, commit.as_bytes())?;
    }
    Ok(out)
}

/// Whether a file of [`default_selection`] holds weights (what [`prefetch`] leaves for later).
fn is_weights(path: &str) -> bool {
    path.ends_with(".safetensors") || path.ends_with(".bin")
}

/// Fetches what identifies a revision without its weights: config, tokenizer and shard index (small,
/// and mostly the same blobs in every revision), plus a weights record ([`crate::released`]) of the
/// weight files the loader would read, with the sha256 the hub lists for them. The revision's
/// [`crate::revisions::fingerprint`] is then the one its full download will have, so a sweep can key
/// its units before fetching the weights ([`download_revision`] later). Weight files the hub lists
/// without an LFS sha256 are fetched now (their sha256 is known only from their bytes).
pub fn prefetch(
    hub: &Hub,
    cache: &HubCache,
    repo: &str,
    rev: &str,
    commit: &str,
) -> Result<Downloaded> {
    let files = hub.tree(repo, commit)?;
    let wanted = default_selection(&files);
    if !wanted.iter().any(|f| f.path == "config.json") {
        return Err(DownloadError::Input(format!(
            "{repo}@{rev}: the revision has no config.json (files: {})",
            abbreviate(&files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>())
        )));
    }
    let light: Vec<&RemoteFile> = wanted
        .iter()
        .copied()
        .filter(|f| !is_weights(&f.path))
        .collect();
    let mut out = fetch_files(hub, cache, repo, rev, commit, &light)?;
    let snapshot = out.snapshot.clone();
    let listed = |p: &Path| {
        p.strip_prefix(&snapshot)
            .ok()
            .and_then(|r| r.to_str())
            .is_some_and(|r| wanted.iter().any(|f| f.path == r))
    };
    let weights = crate::checkpoint::WeightFiles::find_with(&snapshot, &listed)
        .map_err(|e| DownloadError::Input(format!("{repo}@{rev}: {e}")))?;
    let mut entries = Vec::new();
    let mut unhashed = Vec::new();
    for w in &weights.files {
        let name = w
            .strip_prefix(&snapshot)
            .ok()
            .and_then(|r| r.to_str())
            .unwrap_or_default();
        let Some(f) = wanted.iter().find(|f| f.path == name) else {
            continue;
        };
        match &f.sha256 {
            Some(sha) => entries.push((f.path.clone(), sha.clone())),
            None => unhashed.push(*f),
        }
    }
    if unhashed.is_empty() {
        crate::weights_record::write_record(&snapshot, &entries)
            .map_err(|e| DownloadError::Input(format!("{repo}@{rev}: {e}")))?;
    } else {
        let all: Vec<&RemoteFile> = wanted
            .iter()
            .copied()
            .filter(|f| is_weights(&f.path))
            .collect();
        let d = fetch_files(hub, cache, repo, rev, commit, &all)?;
        out.cached += d.cached;
        out.bytes += d.bytes;
        out.files += d.files;
    }
    Ok(out)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DownloadError::io(parent, e))?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.w2sg-tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("ref")
    ));
    std::fs::write(&tmp, bytes).map_err(|e| DownloadError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| DownloadError::io(path, e))
}

/// `snapshot/<path>` → `../../blobs/<etag>` (one more `..` per directory level), replaced atomically.
fn link(snapshot: &Path, path: &str, etag: &str) -> Result<()> {
    let dest = snapshot.join(path);
    let depth = path.split('/').count() - 1;
    let target = format!("{}../../blobs/{etag}", "../".repeat(depth));
    if std::fs::read_link(&dest).is_ok_and(|t| t == Path::new(&target)) {
        return Ok(());
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DownloadError::io(parent, e))?;
    }
    let tmp = dest.with_file_name(format!(
        ".{}.w2sg-tmp",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("link")
    ));
    let _ = std::fs::remove_file(&tmp);
    symlink(&target, &tmp).map_err(|e| DownloadError::io(&tmp, e))?;
    std::fs::rename(&tmp, &dest).map_err(|e| DownloadError::io(&dest, e))
}

#[cfg(unix)]
fn symlink(target: &str, at: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

#[cfg(not(unix))]
fn symlink(_target: &str, _at: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "the hub cache layout needs symbolic links",
    ))
}

/// Fetches one file into `blob` through `blob.incomplete`, resuming a partial one; checks size and
/// sha256, then renames. Returns the bytes transferred.
fn fetch_blob(
    hub: &Hub,
    repo: &str,
    rev: &str,
    commit: &str,
    f: &RemoteFile,
    blob: &Path,
) -> Result<u64> {
    let integrity = |problem: String| DownloadError::Integrity {
        repo: repo.to_string(),
        revision: rev.to_string(),
        path: f.path.clone(),
        problem,
    };
    let partial = PathBuf::from(format!("{}.incomplete", blob.display()));
    let mut have = std::fs::metadata(&partial).map_or(0, |m| m.len());
    if have > f.size {
        std::fs::remove_file(&partial).map_err(|e| DownloadError::io(&partial, e))?;
        have = 0;
    }
    let mut hasher = Sha256::new();
    let url = format!(
        "{}/{repo}/resolve/{commit}/{}",
        hub.endpoint(),
        encode(&f.path, true)
    );
    let mut transferred = 0;
    if have < f.size || f.size == 0 {
        let (mut resp, final_url) = hub.get(&url, have)?;
        let status = resp.status().as_u16();
        check_status(status, &final_url, || {
            format!("{repo}@{rev} has no file `{}`", f.path)
        })?;
        // 206: the server resumes at `have`; 200: it sends the whole file, so start over.
        let resumed = have > 0 && status == 206;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&partial)
            .map_err(|e| DownloadError::io(&partial, e))?;
        if resumed {
            hash_file(&partial, &mut hasher)?;
        } else {
            have = 0;
        }
        let mut reader = resp.body_mut().as_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf).map_err(|e| DownloadError::Http {
                url: final_url.clone(),
                problem: format!("reading {}: {e}", f.path),
            })?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .map_err(|e| DownloadError::io(&partial, e))?;
            hasher.update(&buf[..n]);
            transferred += n as u64;
            have += n as u64;
            if have > f.size {
                break;
            }
        }
        file.sync_all()
            .map_err(|e| DownloadError::io(&partial, e))?;
    } else {
        hash_file(&partial, &mut hasher)?;
    }
    if have != f.size {
        // A short read may resume next time; a long one cannot be right.
        if have > f.size {
            let _ = std::fs::remove_file(&partial);
        }
        return Err(integrity(format!(
            "got {have} bytes, the hub lists {} (run again to resume)",
            f.size
        )));
    }
    if let Some(want) = &f.sha256 {
        let got = w2sg_fsio::hex(&hasher.finalize());
        if &got != want {
            let _ = std::fs::remove_file(&partial);
            return Err(integrity(format!(
                "sha256 {got}, the hub lists {want}; the partial file was removed"
            )));
        }
    }
    std::fs::rename(&partial, blob).map_err(|e| DownloadError::io(blob, e))?;
    Ok(transferred)
}

fn hash_file(path: &Path, hasher: &mut Sha256) -> Result<()> {
    w2sg_fsio::update_sha256(hasher, path)
        .map(|_| ())
        .map_err(|e| DownloadError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_revisions_and_links() {
        assert!(glob_match("*.json", "config.json"));
        assert!(
            glob_match("*.json", "sub/config.json"),
            "fnmatch's * crosses /"
        );
        assert!(glob_match(
            "model-?????-of-*.safetensors",
            "model-00001-of-00002.safetensors"
        ));
        assert!(!glob_match("*.json", "model.safetensors"));
        assert!(glob_match("*", ""));
        assert_eq!("all".parse::<Revisions>().unwrap(), Revisions::All);
        assert_eq!(
            "every=1000".parse::<Revisions>().unwrap(),
            Revisions::Every(1000)
        );
        assert_eq!(
            "step1,step2".parse::<Revisions>().unwrap(),
            Revisions::Named(vec!["step1".into(), "step2".into()])
        );
        let refs: Vec<(String, String)> = [
            "main", "step0", "step1", "step2", "step4", "step8", "step16",
        ]
        .iter()
        .map(|b| (b.to_string(), format!("c-{b}")))
        .collect();
        let names = |v: Vec<(String, String)>| v.into_iter().map(|(b, _)| b).collect::<Vec<_>>();
        assert_eq!(
            names(every_nth(&refs, 2)),
            ["step0", "step2", "step8", "step16"]
        );
        assert_eq!(names(every_nth(&refs, 4)), ["step0", "step8", "step16"]);
        assert_eq!("every=0".parse::<Revisions>().unwrap_err().exit_code(), 2);
        assert!("a,,b".parse::<Revisions>().is_err());
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode("a b/c.json", true), "a%20b/c.json");
        assert_eq!(origin("http://localhost:8080/x/y"), "http://localhost:8080");
        assert_eq!(
            next_link("<https://h/api/x?cursor=2>; rel=\"next\"").as_deref(),
            Some("https://h/api/x?cursor=2")
        );
        let dir = tempfile::tempdir().unwrap();
        link(dir.path(), "a/b.json", "abc").unwrap();
        assert_eq!(
            std::fs::read_link(dir.path().join("a/b.json")).unwrap(),
            Path::new("../../../blobs/abc")
        );
        link(dir.path(), "c.json", "def").unwrap();
        assert_eq!(
            std::fs::read_link(dir.path().join("c.json")).unwrap(),
            Path::new("../../blobs/def")
        );
    }
}

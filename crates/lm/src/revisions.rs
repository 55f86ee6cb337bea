//! Checkpoint families: the revisions of one training run, in training order, and duplicated weights.
//!
//! A family is either a directory with one checkpoint sub-directory per revision, or a repository in
//! the hub cache (its refs). Revision names carry the training position: Pythia `step143000`, OLMo
//! `step1000-tokens4B`, OLMo 2 `stage1-step1000-tokens5B`. [`RevisionName::parse`] reads the step and
//! the token count; [`list_revisions`] orders revisions by (stage prefix, step), then unparsed names
//! such as `main` by name.
//!
//! Some published branches serve identical weights (the final Pythia step and `main`, and a few others).
//! [`fingerprint`] identifies the weights of a revision by the sha256 of its weight files. In the hub
//! cache the LFS blob a snapshot file links to is already named by its sha256, so nothing is read; local
//! files are hashed (streaming). Two revisions with the same fingerprint are reported as duplicates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use w2sg_fsio::{Digest, Sha256};

use crate::checkpoint::WeightFiles;
use crate::error::{LmError, Result};
use crate::hub::{family_members, is_cache_repo_dir, repo_refs, HubCache};

/// Training position parsed from a revision name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevisionName {
    /// Optimizer step (`stepN`).
    pub step: Option<u64>,
    /// Training tokens (`tokensNB` = N·10⁹; `M` and `T` suffixes too).
    pub tokens: Option<u64>,
}

/// `<digits>` at the start of `s`, and the rest.
fn leading_number(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    s[..end].parse().ok().map(|n| (n, &s[end..]))
}

impl RevisionName {
    /// Parses `stepN` and `tokensN[KMBT]` components separated by `-` or `_`.
    pub fn parse(name: &str) -> Self {
        let mut out = RevisionName::default();
        for part in name.split(['-', '_']) {
            if let Some((n, "")) = part.strip_prefix("step").and_then(leading_number) {
                out.step = Some(n);
            } else if let Some((n, unit)) = part.strip_prefix("tokens").and_then(leading_number) {
                let scale: u64 = match unit {
                    "" => 1,
                    "K" | "k" => 1_000,
                    "M" | "m" => 1_000_000,
                    "B" | "b" => 1_000_000_000,
                    "T" | "t" => 1_000_000_000_000,
                    _ => continue,
                };
                out.tokens = n.checked_mul(scale);
            }
        }
        out
    }
}

/// The part of a name before its `stepN` component (`stage1-` in `stage1-step100-tokens1B`).
fn stage_prefix(name: &str) -> &str {
    let mut pos = 0;
    for part in name.split(['-', '_']) {
        if part
            .strip_prefix("step")
            .and_then(leading_number)
            .is_some_and(|(_, r)| r.is_empty())
        {
            return &name[..pos];
        }
        pos += part.len() + 1;
    }
    name
}

/// One revision of a family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// Branch or directory name (`step1000`, `main`).
    pub name: String,
    pub step: Option<u64>,
    pub tokens: Option<u64>,
    /// Checkpoint directory.
    pub dir: PathBuf,
    /// Commit hash, for revisions from the hub cache.
    pub commit: Option<String>,
}

impl Revision {
    pub fn new(name: String, dir: PathBuf, commit: Option<String>) -> Self {
        let parsed = RevisionName::parse(&name);
        Revision {
            name,
            step: parsed.step,
            tokens: parsed.tokens,
            dir,
            commit,
        }
    }
}

/// Sorts revisions in training order: stepped names by (stage prefix, step), then the rest by name.
pub fn sort_revisions(revs: &mut [Revision]) {
    revs.sort_by(|a, b| {
        let key = |r: &Revision| {
            (
                r.step.is_none(),
                stage_prefix(&r.name).to_string(),
                r.step,
                r.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
}

/// What a family path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FamilySource {
    /// A single checkpoint directory (one revision, named after the directory).
    Checkpoint(PathBuf),
    /// A directory of revision sub-directories.
    Directory(PathBuf),
    /// A repository in the hub cache.
    Cache(PathBuf),
}

/// Finds the family behind a path (checkpoint, family or cache-repository directory) or an `ORG/NAME`
/// repository id in the hub cache.
pub fn family_source(spec: &str, cache: Option<&HubCache>) -> Result<FamilySource> {
    let path = Path::new(spec);
    if path.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(FamilySource::Checkpoint(path.to_path_buf()));
        }
        if is_cache_repo_dir(path) {
            return Ok(FamilySource::Cache(path.to_path_buf()));
        }
        return Ok(FamilySource::Directory(path.to_path_buf()));
    }
    if crate::hub::is_repo_id(spec) {
        let env_cache;
        let cache = match cache {
            Some(c) => c,
            None => {
                env_cache = HubCache::from_env().ok_or_else(|| LmError::NotFound {
                    spec: spec.into(),
                    msg: "no hub cache: set HF_HUB_CACHE or HF_HOME".into(),
                })?;
                &env_cache
            }
        };
        let dir = cache.repo_dir(spec);
        if dir.is_dir() {
            return Ok(FamilySource::Cache(dir));
        }
        return Err(LmError::NotFound {
            spec: spec.into(),
            msg: format!("not in the hub cache ({} does not exist)", dir.display()),
        });
    }
    Err(LmError::NotFound {
        spec: spec.into(),
        msg: "no such directory, and not an ORG/NAME repository id".into(),
    })
}

/// The revisions of a family, in training order.
pub fn list_revisions(source: &FamilySource) -> Result<Vec<Revision>> {
    let mut revs = match source {
        FamilySource::Checkpoint(dir) => {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("checkpoint")
                .to_string();
            vec![Revision::new(name, dir.clone(), None)]
        }
        FamilySource::Directory(dir) => {
            let mut members = family_members(dir)?;
            // A stepped sub-directory without config.json is a broken revision, not an absent one:
            // listed, it fails where it is used (its fingerprint names the missing file) instead of
            // silently leaving a gap in the family.
            members.extend(stepped_without_config(dir)?);
            members.sort();
            if members.is_empty() {
                return Err(LmError::MissingConfig { dir: dir.clone() });
            }
            members
                .into_iter()
                .map(|(name, dir)| Revision::new(name, dir, None))
                .collect()
        }
        FamilySource::Cache(repo) => repo_refs(repo)?
            .into_iter()
            .map(|(name, commit)| {
                let dir = repo.join("snapshots").join(&commit);
                Revision::new(name, dir, Some(commit))
            })
            .collect(),
    };
    sort_revisions(&mut revs);
    Ok(revs)
}

/// Sub-directories of a family directory named like a stepped revision (`step40`, `stage1-step8`) that
/// lack config.json.
fn stepped_without_config(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| LmError::io(dir, e))? {
        let path = entry.map_err(|e| LmError::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.is_dir()
            && !path.join("config.json").is_file()
            && RevisionName::parse(name).step.is_some()
        {
            out.push((name.to_string(), path.clone()));
        }
    }
    Ok(out)
}

/// The sha256 of a file, taken from its hub-cache blob name when it is a link to one.
fn file_sha256(path: &Path) -> Result<String> {
    if let Ok(target) = std::fs::read_link(path) {
        if let Some(name) = target.file_name().and_then(|n| n.to_str()) {
            let in_blobs = target
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|p| p == "blobs");
            if in_blobs && name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(name.to_ascii_lowercase());
            }
        }
    }
    w2sg_fsio::file_sha256(path).map_err(|e| LmError::io(path, e))
}

/// The (file name, sha256) pairs of the weight files the loader would read from `dir`, sorted: what
/// [`fingerprint`] hashes, and what a weights record ([`crate::released`]) keeps.
pub fn weight_entries(dir: &Path) -> Result<Vec<(String, String)>> {
    let files = WeightFiles::find(dir)?;
    let mut entries = Vec::with_capacity(files.files.len());
    for f in &files.files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        entries.push((name, file_sha256(f)?));
    }
    entries.sort();
    Ok(entries)
}

/// The fingerprint of (file name, sha256) pairs.
pub fn fingerprint_of(entries: &[(String, String)]) -> String {
    let mut entries = entries.to_vec();
    entries.sort();
    let mut hasher = Sha256::new();
    for (name, sha) in &entries {
        hasher.update(name.as_bytes());
        hasher.update(b"\0");
        hasher.update(sha.as_bytes());
        hasher.update(b"\n");
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Identifies the weights of a checkpoint directory: sha256 over (file name, file sha256) of the
/// weight files the loader would read. A hub-cache snapshot whose weights were released after their
/// features were stored ([`crate::released`]) is identified by its weights record, so its units keep
/// their keys.
pub fn fingerprint(dir: &Path) -> Result<String> {
    // Weights without a config cannot be loaded: not a checkpoint, whatever its weights are.
    if !dir.join("config.json").is_file() {
        return Err(LmError::MissingConfig {
            dir: dir.to_path_buf(),
        });
    }
    match weight_entries(dir) {
        Ok(entries) => Ok(fingerprint_of(&entries)),
        Err(e @ LmError::NoWeights { .. }) => match crate::weights_record::read_record(dir)? {
            Some(entries) => Ok(fingerprint_of(&entries)),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Fingerprints of every revision (an error per revision, e.g. a snapshot without weights, does not
/// stop the others). `progress` is called after each revision.
pub fn fingerprints(revs: &[Revision], progress: &mut dyn FnMut(usize)) -> Vec<Result<String>> {
    let mut by_dir: BTreeMap<&Path, String> = BTreeMap::new();
    let mut out = Vec::with_capacity(revs.len());
    for (i, r) in revs.iter().enumerate() {
        let fp = match by_dir.get(r.dir.as_path()) {
            Some(fp) => Ok(fp.clone()),
            None => fingerprint(&r.dir),
        };
        if let Ok(fp) = &fp {
            by_dir.insert(&r.dir, fp.clone());
        }
        out.push(fp);
        progress(i + 1);
    }
    out
}

/// Groups of revision names (in revision order) that share a fingerprint, for groups of two or more.
pub fn duplicate_groups(
    revs: &[Revision],
    fingerprints: &[Result<String>],
) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (r, fp) in revs.iter().zip(fingerprints) {
        let Ok(fp) = fp else { continue };
        match groups.iter_mut().find(|(f, _)| f == fp) {
            Some((_, names)) => names.push(r.name.clone()),
            None => groups.push((fp.clone(), vec![r.name.clone()])),
        }
    }
    groups.retain(|(_, names)| names.len() > 1);
    groups
}

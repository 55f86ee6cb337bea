//! Checkpoint families: the revisions of one training run, in training order, and duplicated weights.
//!
//! A family is either a directory with one checkpoint sub-directory per revision, or a repository in
//! the hub cache (its refs), or several cache repositories with one checkpoint each
//! ([`FamilySource::Repos`]). Revision names carry the training position: Pythia `step143000`, OLMo
//! `step1000-tokens4B`, OLMo 2 `stage1-step1000-tokens5B`, SmolLM2 `step-125000`, LLM360 `ckpt_042`,
//! TinyLlama repositories `…-step-1431k-3T`. [`RevisionName::parse`] reads the step and the token
//! count; [`list_revisions`] orders revisions by (stage prefix, step), then unparsed names such as
//! `main` by name.
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
    /// Optimizer step (`stepN`, `step-N`, `step-Nk`), or the checkpoint index of `ckpt_N`.
    pub step: Option<u64>,
    /// Training tokens (`tokensNB` = N·10⁹; `K`, `M` and `T` suffixes too, either case, decimals
    /// allowed: `token-2.5T`, and a bare count after the step: `step-1431k-3T`).
    pub tokens: Option<u64>,
    /// The step is a checkpoint index (`ckpt_N`), not an optimizer step: a family can scale it
    /// ([`scale_checkpoint_steps`]).
    pub indexed: bool,
}

/// `<digits>` at the start of `s`, and the rest.
fn leading_number(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    s[..end].parse().ok().map(|n| (n, &s[end..]))
}

/// A count with an optional unit, the whole of `s`: `1431k`, `105b`, `2.5T`, `50000`. A decimal
/// point needs a unit; `require_unit` rejects bare numbers.
fn count(s: &str, require_unit: bool) -> Option<u64> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    if num.is_empty() || !num.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let scale: u64 = match unit {
        "" if require_unit => return None,
        "" => 1,
        "K" | "k" => 1_000,
        "M" | "m" => 1_000_000,
        "B" | "b" => 1_000_000_000,
        "T" | "t" => 1_000_000_000_000,
        _ => return None,
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(scale);
    }
    let x: f64 = num.parse().ok().filter(|_| scale > 1)?;
    let v = (x * scale as f64).round();
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// The `-`/`_`-separated components of `s` with their byte offsets.
fn components(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '-' || c == '_' {
            out.push((start, &s[start..i]));
            start = i + 1;
        }
    }
    out.push((start, &s[start..]));
    out
}

/// Parses a name; also returns the byte offset where its step component starts (the end of its
/// stage prefix).
fn scan(name: &str) -> (RevisionName, Option<usize>) {
    let mut out = RevisionName::default();
    let mut step_at = None;
    // A repository id (TinyLlama's one repository per checkpoint): the name part carries the step.
    let base = name.rfind('/').map_or(0, |i| i + 1);
    let parts = components(&name[base..]);
    let mut i = 0;
    while i < parts.len() {
        let (at, part) = parts[i];
        let next = parts.get(i + 1).map(|(_, p)| *p);
        let lower = part.to_ascii_lowercase();
        let mut used = 1;
        if out.step.is_none() && (lower == "step" || lower == "ckpt") {
            // `step-125000` (SmolLM2), `step-1431k` (TinyLlama), `ckpt_042` (LLM360).
            if let Some(n) = next.and_then(|p| count(p, false)) {
                out.step = Some(n);
                out.indexed = lower == "ckpt";
                step_at = Some(base + at);
                used = 2;
            }
        } else if out.step.is_none() && (lower.starts_with("step") || lower.starts_with("ckpt")) {
            if let Some((n, "")) = leading_number(&part[4..]) {
                out.step = Some(n);
                out.indexed = lower.starts_with("ckpt");
                step_at = Some(base + at);
            }
        } else if lower == "tokens" || lower == "token" {
            if let Some(n) = next.and_then(|p| count(p, false)) {
                out.tokens = Some(n);
                used = 2;
            }
        } else if let Some(rest) = lower.strip_prefix("tokens") {
            if let Some(n) = count(rest, false) {
                out.tokens = Some(n);
            }
        } else if out.step.is_some() && out.tokens.is_none() {
            // A bare count with a unit after the step is the tokens seen (`step-480k-1T`).
            if let Some(n) = count(part, true) {
                out.tokens = Some(n);
            }
        }
        i += used;
    }
    (out, step_at)
}

impl RevisionName {
    /// Parses the training position out of a branch, directory or repository name: Pythia
    /// `step143000`, OLMo `step1000-tokens4B`, OLMo 2 `stage1-step1000-tokens5B`, SmolLM2
    /// `step-125000`, LLM360 `ckpt_042` (an index), TinyLlama
    /// `TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T` (k = thousands of steps, 3T tokens).
    /// Components are separated by `-` or `_`.
    pub fn parse(name: &str) -> Self {
        scan(name).0
    }
}

/// The part of a name before its step component (`stage1-` in `stage1-step100-tokens1B`); the
/// whole name when it has no step.
pub fn stage_prefix(name: &str) -> &str {
    match scan(name).1 {
        Some(at) => &name[..at],
        None => name,
    }
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

/// Turns the checkpoint indices of `ckpt_N` revisions into optimizer steps (`N · steps_per_checkpoint`),
/// for families whose checkpoints are evenly spaced.
pub fn scale_checkpoint_steps(revs: &mut [Revision], steps_per_checkpoint: u64) {
    for r in revs {
        if RevisionName::parse(&r.name).indexed {
            r.step = r.step.and_then(|s| s.checked_mul(steps_per_checkpoint));
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
    /// One hub-cache repository per checkpoint (a glob over the cached ids, as TinyLlama publishes).
    Repos(String),
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
        FamilySource::Repos(glob) => {
            return repo_family(
                &[glob.clone()],
                &BTreeMap::new(),
                HubCache::from_env().as_ref(),
            )
        }
    };
    sort_revisions(&mut revs);
    Ok(revs)
}

/// A family spread over several hub-cache repositories, one checkpoint each (TinyLlama publishes a
/// repository per checkpoint). Each entry of `repos` is `ORG/NAME`, `ORG/NAME@REV` (default `main`),
/// or a glob (`*`, `?`) over the ids of the repositories in the cache, such as
/// `TinyLlama/TinyLlama-1.1B-intermediate-step-*`. A revision is named by its repository id; its step
/// is `steps[id]` when the map lists the repository, else parsed from the id ([`RevisionName`]).
/// Returned in step order. Errors name the entry or key: a glob that matches nothing, a repository
/// that is not cached, a `steps` key that names no listed repository, a repository without a step,
/// two repositories at one step.
pub fn repo_family(
    repos: &[String],
    steps: &BTreeMap<String, u64>,
    cache: Option<&HubCache>,
) -> Result<Vec<Revision>> {
    let env_cache;
    let cache = match cache {
        Some(c) => c,
        None => {
            env_cache = HubCache::from_env().ok_or_else(|| LmError::NotFound {
                spec: repos.join(", "),
                msg: "no hub cache: set HF_HUB_CACHE or HF_HOME".into(),
            })?;
            &env_cache
        }
    };
    // (repository id, revision) in the order given, each once.
    let mut wanted: Vec<(String, Option<String>)> = Vec::new();
    let mut cached: Option<Vec<String>> = None;
    for entry in repos {
        if entry.contains(['*', '?']) {
            let ids = match &cached {
                Some(ids) => ids,
                None => cached.insert(cache.repo_ids()?),
            };
            let hits: Vec<&String> = ids
                .iter()
                .filter(|id| crate::hub::glob_match(entry, id))
                .collect();
            if hits.is_empty() {
                return Err(LmError::NotFound {
                    spec: entry.clone(),
                    msg: format!(
                        "`repos` pattern matches no repository in the hub cache {}",
                        cache.root().display()
                    ),
                });
            }
            wanted.extend(hits.into_iter().map(|id| (id.clone(), None)));
        } else {
            let (id, rev) = match entry.rsplit_once('@') {
                Some((id, rev)) => (id.to_string(), Some(rev.to_string())),
                None => (entry.clone(), None),
            };
            wanted.push((id, rev));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    wanted.retain(|(id, _)| seen.insert(id.clone()));
    if let Some(key) = steps.keys().find(|k| !seen.contains(*k)) {
        return Err(LmError::Input(format!(
            "`steps` names `{key}`, which is not among the family's repositories"
        )));
    }
    let mut revs = Vec::with_capacity(wanted.len());
    for (id, rev) in wanted {
        let spec = match &rev {
            Some(r) => format!("{id}@{r}"),
            None => id.clone(),
        };
        let dir = crate::hub::resolve(&spec, Some(cache))?.dir;
        let parsed = RevisionName::parse(&id);
        let step = steps.get(&id).copied().or(parsed.step).ok_or_else(|| {
            LmError::Input(format!(
                "repository `{id}`: no step in its name; give it in `steps`"
            ))
        })?;
        let commit = dir.file_name().and_then(|n| n.to_str()).map(str::to_string);
        revs.push(Revision {
            name: id,
            step: Some(step),
            tokens: parsed.tokens,
            dir,
            commit,
        });
    }
    // One training run: order by step alone, whatever the names' prefixes.
    revs.sort_by(|a, b| (a.step, &a.name).cmp(&(b.step, &b.name)));
    if let Some(w) = revs.windows(2).find(|w| w[0].step == w[1].step) {
        return Err(LmError::Input(format!(
            "repositories `{}` and `{}` are both at step {}",
            w[0].name,
            w[1].name,
            w[0].step.unwrap_or_default()
        )));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(name: &str) -> (Option<u64>, Option<u64>, bool) {
        let r = RevisionName::parse(name);
        (r.step, r.tokens, r.indexed)
    }

    #[test]
    fn names_of_each_family_give_step_and_tokens() {
        const B: u64 = 1_000_000_000;
        // Pythia, OLMo, OLMo 2.
        assert_eq!(parsed("step143000"), (Some(143_000), None, false));
        assert_eq!(
            parsed("step1000-tokens4B"),
            (Some(1000), Some(4 * B), false)
        );
        assert_eq!(
            parsed("stage1-step1000-tokens5B"),
            (Some(1000), Some(5 * B), false)
        );
        // SmolLM2 branches.
        assert_eq!(parsed("step-125000"), (Some(125_000), None, false));
        // LLM360 Amber branches: an index.
        assert_eq!(parsed("ckpt_000"), (Some(0), None, true));
        assert_eq!(parsed("ckpt_359"), (Some(359), None, true));
        // TinyLlama repositories (k = thousands of steps; tokens with b/T, decimals, `token-`).
        let t = |s: &str| format!("TinyLlama/TinyLlama-1.1B-intermediate-{s}");
        assert_eq!(
            parsed(&t("step-1431k-3T")),
            (Some(1_431_000), Some(3_000 * B), false)
        );
        assert_eq!(
            parsed(&t("step-50K-105b")),
            (Some(50_000), Some(105 * B), false)
        );
        assert_eq!(
            parsed(&t("step-1195k-token-2.5T")),
            (Some(1_195_000), Some(2_500 * B), false)
        );
        // Not training positions: a size before the step, plain names, malformed steps.
        assert_eq!(parsed("TinyLlama-1.1B-chat"), (None, None, false));
        assert_eq!(parsed("main"), (None, None, false));
        assert_eq!(parsed("step1000x"), (None, None, false));
        assert_eq!(parsed("step-"), (None, None, false));
        assert_eq!(parsed("step-12.5"), (None, None, false));
    }

    fn rev(name: &str) -> Revision {
        Revision::new(name.to_string(), PathBuf::from(name), None)
    }

    fn order(names: &[&str]) -> Vec<String> {
        let mut revs: Vec<Revision> = names.iter().map(|n| rev(n)).collect();
        sort_revisions(&mut revs);
        revs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn every_scheme_sorts_in_training_order() {
        assert_eq!(
            order(&["main", "ckpt_100", "ckpt_020", "ckpt_3"]),
            ["ckpt_3", "ckpt_020", "ckpt_100", "main"]
        );
        assert_eq!(
            order(&["step-125000", "step-2000", "main", "step-20000"]),
            ["step-2000", "step-20000", "step-125000", "main"]
        );
        let tiny = [
            "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
            "TinyLlama/TinyLlama-1.1B-intermediate-step-240k-503b",
            "TinyLlama/TinyLlama-1.1B-intermediate-step-955k-token-2T",
            "TinyLlama/TinyLlama-1.1B-intermediate-step-50K-105b",
        ];
        assert_eq!(order(&tiny), [tiny[3], tiny[1], tiny[2], tiny[0]]);
        assert_eq!(
            order(&[
                "stage2-step10-tokens1B",
                "stage1-step200-tokens9B",
                "stage1-step30-tokens1B"
            ]),
            [
                "stage1-step30-tokens1B",
                "stage1-step200-tokens9B",
                "stage2-step10-tokens1B"
            ]
        );
    }

    #[test]
    fn checkpoint_indices_scale_to_steps() {
        let mut revs = vec![rev("ckpt_002"), rev("step30"), rev("main")];
        scale_checkpoint_steps(&mut revs, 500);
        let steps: Vec<Option<u64>> = revs.iter().map(|r| r.step).collect();
        assert_eq!(steps, [Some(1000), Some(30), None]);
    }
}

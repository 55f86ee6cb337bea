//! Families on the hub: `download = true` and `keep_weights = false` of a plan's `[[family]]`.
//!
//! With `download = true` (and `path = "ORG/NAME"`), the revision list comes from the hub's refs
//! (`HF_ENDPOINT`; with `HF_HUB_OFFLINE=1`, from the hub cache alone), so `"all"` and `{ every = N }`
//! need no pre-filled cache. Resolving a plan fetches, for each chosen revision not yet in the cache,
//! only what identifies it: config, tokenizer and a weights record of the sha256 the hub lists for
//! its weight files ([`w2sg_lm::download::prefetch`]). Its fingerprint — the content id of its units
//! — is then the one a full download gives, so every shard keys every checkpoint alike. The weights
//! themselves are fetched by [`ensure_weights`] inside the first unit of this shard that needs them:
//! a shard downloads only its own revisions' weights, and a failed download is that unit's failure
//! (recorded, the sweep goes on, the command exits 1).
//!
//! `[weak] download = true` ([`ensure_weak`]) fetches the weak model's one revision, weights
//! included, while the plan is resolved: every unit of the sweep reads it, so it is needed before the
//! first one. A weak model already in the cache is used as it is, without asking the hub.
//!
//! With `keep_weights = false`, [`release`] deletes a revision's weight links and blobs from the
//! hub cache ([`w2sg_lm::released`]) once every unit of it that reads the weights is stored. Its
//! fingerprint survives in the weights record, so a rerun keys its units identically and runs
//! nothing that is already stored; a unit still missing (a new seed, a new task) fetches the weights
//! again when `download = true`.

use std::path::PathBuf;

use w2sg_lm::download::{
    download, offline_from_env, prefetch, DownloadError, DownloadOptions, Hub, Revisions,
};
use w2sg_lm::hub::HubCache;
use w2sg_lm::revisions::{sort_revisions, Revision};

use crate::error::{Error, Result};
use crate::plan::FamilyPlan;

/// Where a downloadable checkpoint comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct HubRevision {
    pub repo: String,
    /// The branch name.
    pub revision: String,
    pub commit: String,
    pub cache: PathBuf,
}

fn cache() -> Result<HubCache> {
    HubCache::from_env().ok_or_else(|| Error::Input {
        what: "the hub cache".into(),
        problem: "no HF_HUB_CACHE, HF_HOME or HOME to put it in".into(),
    })
}

/// The revisions of a `download = true` family: the hub's branches, or with `HF_HUB_OFFLINE` the
/// cached ones. Each revision's `dir` is its snapshot directory in the cache (it may not exist yet).
pub fn hub_revisions(family: &FamilyPlan, label: &str) -> Result<(Vec<Revision>, HubCache)> {
    let cache = cache()?;
    let repo = &family.path;
    let refs = if offline_from_env() {
        let cached = cache.refs(repo).unwrap_or_default();
        if cached.is_empty() {
            return Err(Error::Input {
                what: format!("family {label} ({repo})"),
                problem: format!(
                    "download = true, but HF_HUB_OFFLINE is set and the hub cache ({}) has no \
                     revision of {repo}: unset HF_HUB_OFFLINE to download them",
                    cache.root().display()
                ),
            });
        }
        cached
    } else {
        Hub::from_env()
            .refs(repo)
            .map_err(|e| download_error(&format!("family {label}"), e))?
    };
    let repo_dir = cache.repo_dir(repo);
    let mut revs: Vec<Revision> = refs
        .into_iter()
        .map(|(name, commit)| {
            let dir = repo_dir.join("snapshots").join(&commit);
            Revision::new(name, dir, Some(commit))
        })
        .collect();
    sort_revisions(&mut revs);
    Ok((revs, cache))
}

/// A hub error about `what`: bad input (a repository or revision the hub does not have, offline
/// with an empty cache) is exit 2, a failed transfer exit 1.
fn download_error(what: &str, e: DownloadError) -> Error {
    let problem = e.to_string();
    let what = what.to_string();
    match e.exit_code() {
        2 => Error::Input { what, problem },
        _ => Error::Download { what, problem },
    }
}

/// `[weak] download = true`: puts `model` (`ORG/NAME@REVISION`, a branch or a commit; `main`
/// without `@`) into the hub cache, weights included, unless the cache already holds it with its
/// weights. With `HF_HUB_OFFLINE` a revision missing from the cache is an input error.
pub fn ensure_weak(model: &str) -> Result<()> {
    let cache = cache()?;
    if let Ok(found) = w2sg_lm::hub::resolve(model, Some(&cache)) {
        if w2sg_lm::checkpoint::WeightFiles::find(&found.dir).is_ok() {
            return Ok(());
        }
    }
    let (repo, revision) = model.rsplit_once('@').unwrap_or((model, "main"));
    let opts = DownloadOptions {
        revisions: Revisions::Named(vec![revision.to_string()]),
        include: Vec::new(),
        progress: Default::default(),
    };
    download(&Hub::from_env(), &cache, repo, &opts)
        .map_err(|e| download_error(&format!("the weak model {model}"), e))?;
    Ok(())
}

/// Fetches what identifies a revision (not its weights) when its fingerprint cannot be taken from
/// the cache; returns the fingerprint, or why there is none (then the revision's units fail).
pub fn identify(hub: &HubRevision) -> std::result::Result<String, String> {
    let snapshot = HubCache::new(&hub.cache)
        .repo_dir(&hub.repo)
        .join("snapshots")
        .join(&hub.commit);
    if let Ok(fp) = w2sg_lm::revisions::fingerprint(&snapshot) {
        return Ok(fp);
    }
    prefetch(
        &Hub::from_env(),
        &HubCache::new(&hub.cache),
        &hub.repo,
        &hub.revision,
        &hub.commit,
    )
    .map_err(|e| format!("downloading {}@{}: {e}", hub.repo, hub.revision))?;
    w2sg_lm::revisions::fingerprint(&snapshot).map_err(|e| e.to_string())
}

/// Downloads a revision's weights if they are not in the cache (called inside the unit that needs
/// them, so a failure is that unit's).
pub fn ensure_weights(hub: &HubRevision, dir: &std::path::Path) -> std::result::Result<(), String> {
    if w2sg_lm::checkpoint::WeightFiles::find(dir).is_ok() {
        return Ok(());
    }
    w2sg_lm::download::download_revision(
        &Hub::from_env(),
        &HubCache::new(&hub.cache),
        &hub.repo,
        &hub.revision,
        &hub.commit,
        &[],
    )
    .map(|_| ())
    .map_err(|e| format!("downloading {}@{}: {e}", hub.repo, hub.revision))
}

/// Deletes a revision's weights from the hub cache (keeping its weights record).
pub fn release(dir: &std::path::Path) -> Result<w2sg_lm::released::Released> {
    Ok(w2sg_lm::released::release_weights(dir)?)
}

//! Weights records: what identified a hub-cache revision's weights, kept after they are deleted.
//!
//! `<cache>/models--ORG--NAME/.w2sg-weights/<commit>.json` lists the (file name, sha256) pairs of
//! the weight files a revision's loader reads — the input of [`crate::revisions::fingerprint`]. It is
//! written by [`crate::released::release_weights`] before it deletes the weights, and by
//! [`crate::download::prefetch`] from the sha256 the hub lists, before they are fetched; the
//! fingerprint of a snapshot without weights is taken from it, so unit keys do not depend on whether
//! the weights are on disk. It sits beside huggingface_hub's own `.no_exist/`, outside `blobs/`,
//! `snapshots/` and `refs/`, where huggingface_hub's cache scan does not look.

use std::path::{Path, PathBuf};

use crate::error::{LmError, Result};
use crate::hub::is_cache_repo_dir;

/// Why a path is not w2sg's to delete weights from.
pub(crate) fn not_cache(snapshot: &Path) -> LmError {
    LmError::weights(
        snapshot,
        "not a hub-cache snapshot (<cache>/models--ORG--NAME/snapshots/<commit>): its weights are \
         not w2sg's to delete",
    )
}

/// The directory, inside a cache repository directory, that holds weights records.
pub const RECORD_DIR: &str = ".w2sg-weights";

/// `(repository directory, commit)` of a hub-cache snapshot directory, or None for any other path.
pub fn cache_snapshot(snapshot: &Path) -> Option<(PathBuf, String)> {
    let commit = snapshot.file_name()?.to_str()?;
    let parent = snapshot.parent()?;
    if parent.file_name()? != "snapshots" {
        return None;
    }
    let repo = parent.parent()?;
    is_cache_repo_dir(repo).then(|| (repo.to_path_buf(), commit.to_string()))
}

/// Where the weights record of a snapshot lives (None outside the hub cache).
pub fn record_path(snapshot: &Path) -> Option<PathBuf> {
    cache_snapshot(snapshot)
        .map(|(repo, commit)| repo.join(RECORD_DIR).join(format!("{commit}.json")))
}

/// Writes the weights record of a snapshot: the (file name, sha256) pairs of its weight files.
pub fn write_record(snapshot: &Path, entries: &[(String, String)]) -> Result<()> {
    let path = record_path(snapshot).ok_or_else(|| not_cache(snapshot))?;
    let files: Vec<serde_json::Value> = entries
        .iter()
        .map(|(name, sha)| serde_json::json!({ "name": name, "sha256": sha }))
        .collect();
    let text = serde_json::to_vec_pretty(&serde_json::json!({ "files": files }))
        .map_err(|e| LmError::weights(&path, e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| LmError::io(dir, e))?;
    }
    w2sg_fsio::write_atomic(&path, &text).map_err(|e| LmError::io(&path, e))
}

/// The weights record of a snapshot, if one was written.
pub fn read_record(snapshot: &Path) -> Result<Option<Vec<(String, String)>>> {
    let Some(path) = record_path(snapshot) else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LmError::io(&path, e)),
    };
    let bad = |why: &str| LmError::weights(&path, format!("not a weights record: {why}"));
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    let files = v["files"]
        .as_array()
        .ok_or_else(|| bad("no `files` list"))?;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let (Some(name), Some(sha)) = (f["name"].as_str(), f["sha256"].as_str()) else {
            return Err(bad("an entry without `name` and `sha256`"));
        };
        out.push((name.to_string(), sha.to_string()));
    }
    if out.is_empty() {
        return Err(bad("empty `files`"));
    }
    Ok(Some(out))
}

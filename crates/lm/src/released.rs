//! Releasing a cached revision's weights, and remembering what they were.
//!
//! A sweep over 150 checkpoints of a billion-parameter family does not fit on a disk if every
//! revision's weights stay in the hub cache. Once a revision's features are stored, its weights are
//! not needed again — but its weight fingerprint is: it keys the revision's units in the results
//! store ([`crate::revisions::fingerprint`]), so a rerun must find the same key without the weights.
//!
//! [`release_weights`] therefore first writes a weights record ([`crate::weights_record`]: the
//! (file name, sha256) pairs the fingerprint is computed from), then removes the weight files'
//! snapshot links and every blob no remaining link of the repository points to. Config, tokenizer
//! and shard index stay (small, and they say what the revision is). A later download of the
//! revision simply puts the links and blobs back.
//!
//! Only the hub-cache layout is ever touched: a snapshot directory must be
//! `<cache>/models--ORG--NAME/snapshots/<commit>`, each weight file a link into that repository's
//! `blobs/`; anything else (a family directory of the user's own, a copied file) is an error and
//! nothing is deleted.

use std::path::Path;

use crate::checkpoint::WeightFiles;
use crate::error::{LmError, Result};
use crate::weights_record::{cache_snapshot, write_record};

/// What [`release_weights`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    /// Snapshot links removed.
    pub links: usize,
    /// Blobs removed (a blob another snapshot still links to stays).
    pub blobs: usize,
    /// Bytes of the removed blobs.
    pub bytes: u64,
}

fn not_cache(snapshot: &Path) -> LmError {
    crate::weights_record::not_cache(snapshot)
}

/// Records the weights of a hub-cache snapshot, then deletes their links and the blobs no other link
/// of the repository needs. A snapshot whose weights are already gone is left as it is.
pub fn release_weights(snapshot: &Path) -> Result<Released> {
    let (repo, _) = cache_snapshot(snapshot).ok_or_else(|| not_cache(snapshot))?;
    let files = match WeightFiles::find(snapshot) {
        Ok(f) => f,
        Err(LmError::NoWeights { .. }) => return Ok(Released::default()),
        Err(e) => return Err(e),
    };
    let blobs_dir = repo.join("blobs");
    // Check every link before deleting anything: all or nothing.
    let mut targets = Vec::with_capacity(files.files.len());
    for f in &files.files {
        let target = std::fs::read_link(f).map_err(|_| {
            LmError::weights(
                f,
                "not a link into the cache's blobs/: not w2sg's to delete",
            )
        })?;
        let blob = f.parent().unwrap_or(snapshot).join(&target);
        let name = blob.file_name().map(|n| n.to_os_string());
        let in_blobs = blob
            .parent()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .is_some_and(|p| std::fs::canonicalize(&blobs_dir).is_ok_and(|b| b == p));
        match name {
            Some(name) if in_blobs => targets.push(blobs_dir.join(name)),
            _ => {
                return Err(LmError::weights(
                    f,
                    format!(
                        "links to {}, outside {}: not w2sg's to delete",
                        target.display(),
                        blobs_dir.display()
                    ),
                ))
            }
        }
    }
    write_record(snapshot, &crate::revisions::weight_entries(snapshot)?)?;
    let mut out = Released::default();
    for f in &files.files {
        std::fs::remove_file(f).map_err(|e| LmError::io(f, e))?;
        out.links += 1;
    }
    for blob in targets {
        let name = blob
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        // Under the blob's lock, as downloads link it: a blob another snapshot links to (or is
        // being linked to right now) stays.
        let _lock = crate::hub::lock_blob(&repo, &name.to_string_lossy())?;
        if linked_blobs(&repo)?.contains(&name) {
            continue;
        }
        if let Ok(meta) = std::fs::metadata(&blob) {
            std::fs::remove_file(&blob).map_err(|e| LmError::io(&blob, e))?;
            out.blobs += 1;
            out.bytes += meta.len();
        }
    }
    Ok(out)
}

/// Names of the blobs that some snapshot file of a repository links to.
fn linked_blobs(repo: &Path) -> Result<std::collections::BTreeSet<std::ffi::OsString>> {
    fn walk(dir: &Path, out: &mut std::collections::BTreeSet<std::ffi::OsString>) -> Result<()> {
        for entry in std::fs::read_dir(dir).map_err(|e| LmError::io(dir, e))? {
            let path = entry.map_err(|e| LmError::io(dir, e))?.path();
            if let Ok(target) = std::fs::read_link(&path) {
                if let Some(name) = target.file_name() {
                    out.insert(name.to_os_string());
                }
            } else if path.is_dir() {
                walk(&path, out)?;
            }
        }
        Ok(())
    }
    let mut out = std::collections::BTreeSet::new();
    let snapshots = repo.join("snapshots");
    if snapshots.is_dir() {
        walk(&snapshots, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(at: &Path, target: &str) {
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, at).unwrap();
    }

    #[test]
    fn release_keeps_shared_blobs_and_the_fingerprint() {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--o--n");
        let blobs = repo.join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        let (w1, w2, cfg) = ("a".repeat(64), "b".repeat(64), "c".repeat(40));
        std::fs::write(blobs.join(&w1), b"weights one").unwrap();
        std::fs::write(blobs.join(&w2), b"weights two").unwrap();
        std::fs::write(blobs.join(&cfg), b"{}").unwrap();
        let (s1, s2, s3) = (
            repo.join("snapshots").join("1".repeat(40)),
            repo.join("snapshots").join("2".repeat(40)),
            repo.join("snapshots").join("3".repeat(40)),
        );
        for (s, w) in [(&s1, &w1), (&s2, &w2), (&s3, &w2)] {
            link(&s.join("model.safetensors"), &format!("../../blobs/{w}"));
            link(&s.join("config.json"), &format!("../../blobs/{cfg}"));
        }
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        let before = crate::revisions::fingerprint(&s2).unwrap();

        let r = release_weights(&s2).unwrap();
        assert_eq!((r.links, r.blobs), (1, 0), "s3 still links weights two");
        assert!(blobs.join(&w2).is_file());
        assert!(!s2.join("model.safetensors").exists() && s2.join("config.json").is_file());
        assert_eq!(crate::revisions::fingerprint(&s2).unwrap(), before);

        let r = release_weights(&s3).unwrap();
        assert_eq!((r.links, r.blobs, r.bytes), (1, 1, 11));
        assert!(!blobs.join(&w2).exists() && blobs.join(&w1).is_file());
        assert_eq!(crate::revisions::fingerprint(&s3).unwrap(), before);
        assert_eq!(release_weights(&s3).unwrap(), Released::default());

        // A family directory of the user's own is never touched.
        let own = cache.path().join("family/step1");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("model.safetensors"), b"mine").unwrap();
        std::fs::write(own.join("config.json"), b"{}").unwrap();
        assert!(release_weights(&own).is_err());
        assert!(own.join("model.safetensors").is_file());
        // Nor a snapshot file that is not a link into blobs/.
        std::fs::remove_file(s1.join("model.safetensors")).unwrap();
        std::fs::write(s1.join("model.safetensors"), b"copied").unwrap();
        assert!(release_weights(&s1).is_err());
        assert!(s1.join("model.safetensors").is_file() && blobs.join(&w1).is_file());
    }
}

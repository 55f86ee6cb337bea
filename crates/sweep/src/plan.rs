//! The plan file: what a sweep measures, read once and validated at the boundary.
//!
//! ```toml
//! name = "tiny-vader"                  # used in titles and file names
//! seeds = [0, 1, 2]                    # each seed: its own split, weak model and students
//! losses = ["xent", "logconf"]         # w2s students; "xent", "logconf", "product"
//!
//! [[family]]                           # one or more strong families
//! name = "tiny"                        # optional; default: the directory name
//! path = "out/family/tiny"             # family directory, hub-cache repo directory, or ORG/NAME
//! revisions = "all"                    # "all", ["step0", "step512"], or { every = 2 }
//! # repos = ["ORG/NAME-step-50k", "ORG/NAME-step-*"]  # instead of path: one cache repo per checkpoint
//! # steps = { "ORG/NAME-final" = 1431000 }           # with repos: steps names do not carry
//! # steps_per_checkpoint = 1000                      # ckpt_N revisions: step = N · this (default 1)
//! download = false                     # ORG/NAME only: fetch each revision from the hub when needed
//! keep_weights = true                  # hub cache only: false deletes a revision's weights once
//!                                      # its features are stored (see crate::fetch)
//!
//! [weak]
//! model = "out/family/weak@step1000"   # PATH, PATH@REVISION, ORG/NAME@REVISION
//! train = "probe"                      # "probe" on its features, or "finetune" it with [finetune]
//! download = false                     # ORG/NAME@REVISION only: true fetches it into the hub cache
//!
//! [[task]]
//! builtin = "vader-movies"             # or "word-order", "spam-assassin", …; or jsonl = "task.jsonl"
//! margin = 0.5                         # VADER: drop snippets with |mean valence| below this
//! balance = false                      # subsample the larger class to the smaller one's size
//! pooling = "last"                     # this task's pooling, if not [features] pooling
//! max_examples = 0                     # 0: all; else a seeded subsample of this many
//!
//! [split]                              # fractions of each task: weak trains on A, students on B
//! weak = 0.4
//! strong = 0.4
//! test = 0.2
//!
//! [features]                           # one feature matrix per (checkpoint, task)
//! layer = -1                           # hidden-state index: 0 embeddings … -1 the last layer
//! pooling = "mean"                     # "mean" or "last"
//! max_tokens = 128
//!
//! [probe]                              # the L-BFGS logistic probe: weak model, ceiling, xent student
//! l2 = 1e-3
//!
//! [train]                              # mini-batch Adam for the logconf and product students
//! mode = "probe"                       # "probe", "finetune", or ["probe", "finetune"]
//! epochs = 10
//!
//! [finetune]                           # fine-tuned students (see crate::finetune): layers, lora_rank, …
//!
//! [logconf]                            # aux_coef, warmup_frac, ramp, window
//! [product]                            # alpha, beta
//! [pgr]                                # bootstrap, level, min_gap_se
//! [transition]                         # z, and the sigmoid fit's model/bootstrap/level
//! ```
//!
//! Every section but `[[family]]`, `[weak]` and `[[task]]` has defaults. Unknown keys are errors naming
//! the file and the key: a typo must never silently run a different sweep. Relative paths are relative
//! to the plan file's directory, so a plan and its data travel together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use w2sg_protocol::{LogconfConfig, PgrConfig, ProbeParams, ProductConfig, SigmoidConfig};

pub mod finetune;

use crate::error::{Error, Result};

/// A whole sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    #[serde(default = "default_losses")]
    pub losses: Vec<String>,
    #[serde(rename = "family")]
    pub families: Vec<FamilyPlan>,
    pub weak: WeakPlan,
    #[serde(rename = "task")]
    pub tasks: Vec<TaskPlan>,
    #[serde(default)]
    pub split: SplitPlan,
    #[serde(default)]
    pub features: FeaturePlan,
    #[serde(default)]
    pub probe: ProbeParams,
    #[serde(default)]
    pub train: TrainPlan,
    #[serde(default)]
    pub finetune: finetune::FinetunePlan,
    #[serde(default)]
    pub logconf: LogconfConfig,
    #[serde(default)]
    pub product: ProductConfig,
    #[serde(default)]
    pub pgr: PgrConfig,
    #[serde(default)]
    pub transition: TransitionPlan,
}

fn default_name() -> String {
    "sweep".into()
}
fn default_seeds() -> Vec<u64> {
    vec![0]
}
fn default_losses() -> Vec<String> {
    vec!["xent".into()]
}

/// The loss names a plan may list.
pub const LOSSES: &[&str] = &["xent", "logconf", "product"];

/// One strong family and which of its revisions to sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyPlan {
    /// Label in results and plots (default: the last path component).
    #[serde(default)]
    pub name: Option<String>,
    /// A family directory (one sub-directory per revision), a hub-cache repository directory, or an
    /// `ORG/NAME` repository in the hub cache. Empty when the family lists `repos`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Instead of `path`: one hub-cache repository per checkpoint, as `ORG/NAME`, `ORG/NAME@REV` or
    /// a glob over the cached repository ids (`ORG/NAME-step-*`); see
    /// [`w2sg_lm::revisions::repo_family`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<String>,
    /// With `repos`: the step of a repository whose name does not carry it (`{ "ORG/X" = 50000 }`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, u64>,
    /// Optimizer steps per checkpoint of index-named revisions (LLM360's `ckpt_N`); without it the
    /// step is the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_per_checkpoint: Option<u64>,
    #[serde(default)]
    pub revisions: Revisions,
    /// Compute dtype: "f32" (default) or "bf16".
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Fetch the revisions from the hub (`HF_ENDPOINT`) into the hub cache, each just before its
    /// first unit needs its weights ([`crate::fetch`]); the revision list comes from the hub's refs.
    /// Only for `path = "ORG/NAME"`.
    #[serde(default)]
    pub download: bool,
    /// `false`: delete a revision's weights from the hub cache once its units that need them are
    /// stored (a rerun finds their keys in a weights record). Only for families in the hub cache,
    /// never for a directory of the user's own.
    #[serde(default = "default_true")]
    pub keep_weights: bool,
}

fn default_true() -> bool {
    true
}

fn default_dtype() -> String {
    "f32".into()
}

/// Which revisions of a family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Revisions {
    /// `"all"`: every revision with a step number (unnumbered branches such as `main` duplicate a
    /// stepped one in published families; list them explicitly to include them).
    All(String),
    /// These revisions, by name.
    List(Vec<String>),
    /// Every n-th of the stepped revisions in training order, always including the last.
    Every { every: usize },
}

impl Default for Revisions {
    fn default() -> Self {
        Revisions::All("all".into())
    }
}

/// The weak supervisor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeakPlan {
    /// `PATH`, `PATH@REVISION` or `ORG/NAME@REVISION`.
    pub model: String,
    /// Feature dtype of the probe supervisor (fine-tuning runs in f32, like the students).
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// How the supervisor is trained on split A's true labels: `"probe"`, the L-BFGS probe on the
    /// weak model's features, or `"finetune"`, the weak model itself fine-tuned with the plan's
    /// `[finetune]` settings (see [`crate::finetune`]).
    #[serde(default = "default_weak_train")]
    pub train: String,
    /// `ORG/NAME@REVISION` only: fetch that revision from the hub into the hub cache (weights
    /// included) when the cache does not hold it, as a family's `download = true` does.
    #[serde(default)]
    pub download: bool,
}

fn default_weak_train() -> String {
    "probe".into()
}

/// The values of `[weak] train`.
pub const WEAK_TRAIN: &[&str] = &["probe", "finetune"];

impl WeakPlan {
    /// Whether the weak supervisor is the fine-tuned weak model (`train = "finetune"`).
    pub fn finetuned(&self) -> bool {
        self.train == "finetune"
    }
}

/// One classification task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskPlan {
    /// A built-in task: `word-order` (held-out sentences of the default corpus, half shuffled),
    /// `vader-movies`, `vader-amazon`, `vader-tweets`, `vader-nyt`, `spam-assassin`.
    #[serde(default)]
    pub builtin: Option<String>,
    /// A JSONL file of `{"txt": ..., "hard_label": 0|1}` lines.
    #[serde(default)]
    pub jsonl: Option<PathBuf>,
    /// Label in results (default: the built-in name or the file stem).
    #[serde(default)]
    pub name: Option<String>,
    /// VADER only: snippets with |mean valence| below this are dropped.
    #[serde(default = "default_margin")]
    pub margin: f64,
    #[serde(default)]
    pub balance: bool,
    /// 0: all examples; otherwise a seeded subsample of this many (after balancing).
    #[serde(default)]
    pub max_examples: usize,
    /// Seed of the balancing and subsampling (fixed per task, so features are shared by all seeds).
    #[serde(default)]
    pub data_seed: u64,
    /// word-order only: the validation fraction the family was pre-trained with (its sentences come
    /// from the paragraphs held out at that fraction, so the model never trained on them).
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
    /// Pooling for this task's features ("mean" or "last"), overriding `[features] pooling`.
    #[serde(default)]
    pub pooling: Option<String>,
}

fn default_validation_fraction() -> f64 {
    0.01
}

fn default_margin() -> f64 {
    0.5
}

/// Fractions of a task for the weak model's training set (A), the students' (B) and the test set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitPlan {
    pub weak: f64,
    pub strong: f64,
    pub test: f64,
}

impl Default for SplitPlan {
    fn default() -> Self {
        SplitPlan {
            weak: 0.4,
            strong: 0.4,
            test: 0.2,
        }
    }
}

/// How a checkpoint turns text into a feature vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturePlan {
    pub layer: i64,
    /// "mean" or "last".
    pub pooling: String,
    /// Truncation length (0: the model's context).
    pub max_tokens: usize,
    /// Sequences per forward pass (speed only; results do not depend on it).
    #[serde(skip_serializing)]
    pub batch_size: usize,
}

impl Default for FeaturePlan {
    fn default() -> Self {
        FeaturePlan {
            layer: -1,
            pooling: "mean".into(),
            max_tokens: 0,
            batch_size: 32,
        }
    }
}

/// Mini-batch Adam settings for the students trained with logconf or product.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainPlan {
    /// Which students: "probe" (linear probes on features), "finetune" ([`crate::finetune`]), or both.
    pub mode: finetune::Modes,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// L2 penalty (default: the probe's).
    pub l2: Option<f64>,
}

impl Default for TrainPlan {
    fn default() -> Self {
        TrainPlan {
            mode: Default::default(),
            epochs: 10,
            batch_size: 32,
            lr: 1e-2,
            l2: None,
        }
    }
}

/// Phase-transition settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransitionPlan {
    /// W2SG "appears" at the first step from which w2s beats weak by more than z standard errors.
    pub z: f64,
    pub sigmoid: SigmoidConfig,
}

impl Default for TransitionPlan {
    fn default() -> Self {
        TransitionPlan {
            z: 2.0,
            sigmoid: SigmoidConfig::default(),
        }
    }
}

impl Plan {
    /// Reads and validates a plan file; relative paths are resolved against its directory.
    pub fn from_file(path: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Plan {
            path: path.to_path_buf(),
            problem: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Plan::from_toml(&text, base).map_err(|problem| Error::Plan {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Parses and validates plan text; `base` resolves relative paths. Errors are messages naming the
    /// key.
    pub fn from_toml(text: &str, base: &Path) -> std::result::Result<Plan, String> {
        let mut plan: Plan = toml::from_str(text).map_err(|e| e.to_string())?;
        plan.resolve_paths(base);
        plan.validate()?;
        Ok(plan)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &str| -> String {
            let path = Path::new(p);
            // ORG/NAME ids (hub cache) stay as they are unless a directory of that name exists here.
            let head = p.rsplit_once('@').map_or(p, |(h, _)| h);
            if path.is_absolute() || (w2sg_lm::hub::is_repo_id(head) && !base.join(head).exists()) {
                p.to_string()
            } else {
                base.join(p).to_string_lossy().into_owned()
            }
        };
        for f in &mut self.families {
            if !f.path.is_empty() {
                f.path = resolve(&f.path);
            }
        }
        self.weak.model = resolve(&self.weak.model);
        for t in &mut self.tasks {
            if let Some(j) = &t.jsonl {
                if j.is_relative() {
                    t.jsonl = Some(base.join(j));
                }
            }
        }
    }

    /// Checks every value that can be checked without reading models or data.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.families.is_empty() {
            return Err("no [[family]]: name at least one strong family".into());
        }
        if self.tasks.is_empty() {
            return Err("no [[task]]: name at least one task".into());
        }
        if self.seeds.is_empty() {
            return Err("`seeds` is empty".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.seeds {
            if !seen.insert(s) {
                return Err(format!("`seeds` lists {s} twice"));
            }
        }
        if self.losses.is_empty() {
            return Err("`losses` is empty".into());
        }
        for l in &self.losses {
            if !LOSSES.contains(&l.as_str()) {
                return Err(format!(
                    "`losses`: unknown loss \"{l}\" (known: {})",
                    LOSSES.join(", ")
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for f in &self.families {
            match (f.path.is_empty(), f.repos.is_empty()) {
                (true, true) => {
                    return Err(
                        "a [[family]] needs `path = \"...\"` or `repos = [\"ORG/NAME\", ...]`"
                            .into(),
                    )
                }
                (false, false) => {
                    return Err(format!(
                        "family `{}`: `path` and `repos` both given: choose one",
                        f.path
                    ))
                }
                _ => {}
            }
            if let Some(bad) = f.repos.iter().find(|r| {
                let head = r.rsplit_once('@').map_or(r.as_str(), |(h, _)| h);
                !w2sg_lm::hub::is_repo_id(&head.replace(['*', '?'], "x"))
            }) {
                return Err(format!(
                    "family `{}`: `repos` entry \"{bad}\" is not ORG/NAME, ORG/NAME@REV or a glob over ORG/NAME ids",
                    self.family_name(f)
                ));
            }
            if !f.steps.is_empty() && f.repos.is_empty() {
                return Err(format!(
                    "family `{}`: `steps` goes with `repos` (a family of one repository per checkpoint)",
                    f.path
                ));
            }
            if f.steps_per_checkpoint == Some(0) {
                return Err(format!(
                    "family `{}`: `steps_per_checkpoint` must be at least 1",
                    self.family_name(f)
                ));
            }
            if let Revisions::All(s) = &f.revisions {
                if s != "all" {
                    return Err(format!(
                        "family `{}`: `revisions` must be \"all\", a list of names or {{ every = N }}, not \"{s}\"",
                        f.path
                    ));
                }
            }
            if let Revisions::Every { every: 0 } = f.revisions {
                return Err(format!(
                    "family `{}`: `revisions.every` must be at least 1",
                    f.path
                ));
            }
            if let Revisions::List(l) = &f.revisions {
                if l.is_empty() {
                    return Err(format!("family `{}`: `revisions` is an empty list", f.path));
                }
            }
            check_dtype(&f.dtype, "family.dtype")?;
            let in_hub = w2sg_lm::hub::is_repo_id(&f.path);
            if (f.download || !f.keep_weights) && !f.repos.is_empty() {
                return Err(format!(
                    "family `{}`: `download` and `keep_weights` are for a family given as                      `path = \"ORG/NAME\"`, not `repos` (download each repository with `w2sg lm download`)",
                    self.family_name(f)
                ));
            }
            if f.download && !in_hub {
                return Err(format!(
                    "family `{}`: `download = true` needs `path = \"ORG/NAME\"`, a hub repository \
                     (this path is a directory)",
                    f.path
                ));
            }
            if !f.keep_weights && !in_hub && !w2sg_lm::hub::is_cache_repo_dir(Path::new(&f.path)) {
                return Err(format!(
                    "family `{}`: `keep_weights = false` deletes weights from the hub cache, and this \
                     path is a directory of your own (w2sg never deletes those): use `path = \"ORG/NAME\"`",
                    f.path
                ));
            }
            if !names.insert(self.family_name(f)) {
                return Err(format!(
                    "two families are named `{}`: give them distinct `name`s",
                    self.family_name(f)
                ));
            }
        }
        check_dtype(&self.weak.dtype, "weak.dtype")?;
        if self.weak.download {
            // `resolve_paths` made a local directory's path absolute, so it is never a repository id.
            let m = &self.weak.model;
            let repo = m.rsplit_once('@').map_or(m.as_str(), |(r, _)| r);
            if !w2sg_lm::hub::is_repo_id(repo) {
                return Err(format!(
                    "weak.download: `download = true` needs `model = \"ORG/NAME@REVISION\"`, a hub \
                     repository (`{m}` is not one)"
                ));
            }
        }
        if !WEAK_TRAIN.contains(&self.weak.train.as_str()) {
            return Err(format!(
                "weak.train: unknown value \"{}\" (known: {})",
                self.weak.train,
                WEAK_TRAIN.join(", ")
            ));
        }
        let mut task_names = std::collections::BTreeSet::new();
        for t in &self.tasks {
            match (&t.builtin, &t.jsonl) {
                (Some(_), Some(_)) => {
                    return Err("a [[task]] has both `builtin` and `jsonl`: choose one".into())
                }
                (None, None) => {
                    return Err("a [[task]] needs `builtin = \"...\"` or `jsonl = \"path\"`".into())
                }
                (Some(b), None) if !BUILTIN_TASKS.contains(&b.as_str()) => {
                    return Err(format!(
                        "task.builtin: unknown task \"{b}\" (known: {})",
                        BUILTIN_TASKS.join(", ")
                    ))
                }
                _ => {}
            }
            if !(t.validation_fraction > 0.0 && t.validation_fraction < 1.0) {
                return Err(format!(
                    "task.validation_fraction: {} is not in (0, 1)",
                    t.validation_fraction
                ));
            }
            if let Some(p) = &t.pooling {
                if !matches!(p.as_str(), "mean" | "last") {
                    return Err(format!("task.pooling: \"{p}\" is not \"mean\" or \"last\""));
                }
            }
            if !(t.margin.is_finite() && t.margin >= 0.0) {
                return Err(format!("task.margin: {} is not ≥ 0", t.margin));
            }
            if !task_names.insert(t.label()) {
                return Err(format!(
                    "two tasks are named `{}`: give them distinct `name`s",
                    t.label()
                ));
            }
        }
        let s = &self.split;
        for (k, v) in [
            ("split.weak", s.weak),
            ("split.strong", s.strong),
            ("split.test", s.test),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1.0) {
                return Err(format!("{k}: {v} is not in (0, 1)"));
            }
        }
        if (s.weak + s.strong + s.test - 1.0).abs() > 1e-9 {
            return Err(format!(
                "split: weak + strong + test = {} must be 1",
                s.weak + s.strong + s.test
            ));
        }
        if !matches!(self.features.pooling.as_str(), "mean" | "last") {
            return Err(format!(
                "features.pooling: \"{}\" is not \"mean\" or \"last\"",
                self.features.pooling
            ));
        }
        if self.features.batch_size == 0 {
            return Err("features.batch_size must be at least 1".into());
        }
        self.probe.check().map_err(|e| e.to_string())?;
        for loss in &self.losses {
            if loss != "xent" {
                self.train_params(loss, 0)
                    .check()
                    .map_err(|e| e.to_string())?;
            }
        }
        let modes = self.train.mode.list();
        if modes.is_empty() {
            return Err("train.mode is an empty list".into());
        }
        let mut seen_modes = std::collections::BTreeSet::new();
        for m in &modes {
            if !matches!(m.as_str(), "probe" | "finetune") {
                return Err(format!(
                    "train.mode: unknown mode \"{m}\" (known: probe, finetune)"
                ));
            }
            if !seen_modes.insert(m) {
                return Err(format!("train.mode lists \"{m}\" twice"));
            }
        }
        self.finetune.validate()?;
        if let Some(seeds) = &self.finetune.seeds {
            if seeds.is_empty() {
                return Err(
                    "finetune.seeds is an empty list (leave it out to fine-tune every seed)".into(),
                );
            }
            if let Some(s) = seeds.iter().find(|s| !self.seeds.contains(s)) {
                return Err(format!(
                    "finetune.seeds: {s} is not one of the plan's seeds {:?}",
                    self.seeds
                ));
            }
        }
        self.pgr.validate().map_err(|e| e.to_string())?;
        if !(self.transition.z.is_finite() && self.transition.z > 0.0) {
            return Err(format!("transition.z: {} is not > 0", self.transition.z));
        }
        Ok(())
    }

    /// Whether linear probes run.
    pub fn probes(&self) -> bool {
        self.train.mode.list().iter().any(|m| m == "probe")
    }

    /// The weak supervisor's mode in tables: `probe`, or the fine-tuning mode (`finetune-all`,
    /// `lora-8`, …) with `[weak] train = "finetune"`.
    pub fn weak_mode(&self) -> String {
        if self.weak.finetuned() {
            self.finetune.mode_name()
        } else {
            "probe".into()
        }
    }

    /// Whether fine-tuned students run.
    pub fn finetunes(&self) -> bool {
        self.train.mode.list().iter().any(|m| m == "finetune")
    }

    /// The label of a family: its `name`, else the last path component, else (`repos`) the first
    /// repository's name up to its step (`TinyLlama-1.1B-intermediate`).
    pub fn family_name(&self, f: &FamilyPlan) -> String {
        if let Some(n) = &f.name {
            return n.clone();
        }
        if f.path.is_empty() {
            let first = f.repos.first().map_or("", |r| r.as_str());
            let name = first.rsplit('/').next().unwrap_or(first);
            // A glob's fixed head, or a name's part before its step.
            let head = name.split(['*', '?']).next().unwrap_or(name);
            let mut label = w2sg_lm::revisions::stage_prefix(head).trim_end_matches(['-', '_']);
            for tail in ["step", "ckpt"] {
                if label.to_ascii_lowercase().ends_with(tail) {
                    label = label[..label.len() - tail.len()].trim_end_matches(['-', '_']);
                }
            }
            return if label.is_empty() { first } else { label }.to_string();
        }
        Path::new(&f.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| f.path.clone())
    }

    /// Mini-batch settings of a student trained with `loss` (not xent, which uses the L-BFGS probe).
    pub fn train_params(&self, loss: &str, seed: u64) -> w2sg_protocol::TrainParams {
        let loss = match loss {
            "logconf" => w2sg_protocol::Loss::Logconf(self.logconf.clone()),
            "product" => w2sg_protocol::Loss::Product(self.product.clone()),
            _ => w2sg_protocol::Loss::Xent,
        };
        w2sg_protocol::TrainParams::default()
            .loss(loss)
            .l2(self.train.l2.unwrap_or(self.probe.l2))
            .epochs(self.train.epochs)
            .batch_size(self.train.batch_size)
            .lr(self.train.lr)
            .seed(seed)
    }
}

fn check_dtype(d: &str, key: &str) -> std::result::Result<(), String> {
    w2sg_lm::device::parse_dtype(d)
        .map(|_| ())
        .map_err(|e| format!("{key}: {e}"))
}

/// Names of the built-in tasks.
pub const BUILTIN_TASKS: &[&str] = &[
    "word-order",
    "vader-movies",
    "vader-amazon",
    "vader-tweets",
    "vader-nyt",
    "spam-assassin",
];

impl TaskPlan {
    /// The task's label in results.
    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match (&self.builtin, &self.jsonl) {
            (Some(b), _) => b.clone(),
            (None, Some(p)) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "jsonl".into()),
            (None, None) => "task".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[family]]
        path = "/fam/tiny"
        [weak]
        model = "/fam/weak@step300"
        [[task]]
        builtin = "vader-movies"
    "#;

    #[test]
    fn a_minimal_plan_gets_the_defaults() {
        let p = Plan::from_toml(MINIMAL, Path::new("/x")).unwrap();
        assert_eq!(p.seeds, vec![0]);
        assert_eq!(p.losses, vec!["xent"]);
        assert_eq!(p.families[0].revisions, Revisions::All("all".into()));
        assert_eq!(p.family_name(&p.families[0]), "tiny");
        assert_eq!(p.split, SplitPlan::default());
        assert_eq!(p.tasks[0].label(), "vader-movies");
    }

    #[test]
    fn revisions_take_three_forms() {
        for (text, want) in [
            ("\"all\"", Revisions::All("all".into())),
            (
                "[\"step0\", \"step8\"]",
                Revisions::List(vec!["step0".into(), "step8".into()]),
            ),
            ("{ every = 3 }", Revisions::Every { every: 3 }),
        ] {
            let t = MINIMAL.replace(
                "path = \"/fam/tiny\"",
                &format!("path = \"/fam/tiny\"\nrevisions = {text}"),
            );
            assert_eq!(
                Plan::from_toml(&t, Path::new("/")).unwrap().families[0].revisions,
                want
            );
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        for (edit, needle) in [
            ("seeds = []\n", "`seeds` is empty"),
            ("seeds = [1, 1]\n", "lists 1 twice"),
            ("losses = [\"hinge\"]\n", "unknown loss \"hinge\""),
            ("colour = 3\n", "unknown field `colour`"),
            ("[split]\nweak = 0.5\n", "must be 1"),
            ("[features]\npooling = \"max\"\n", "features.pooling"),
            ("[probe]\nl2 = -1.0\n", "probe.l2"),
            ("[pgr]\nlevel = 2.0\n", "pgr.level"),
            ("[train]\nepochs = 0\nbatch_size = 4\n", "train.epochs"),
        ] {
            // Top-level keys must come before the tables.
            let text = if edit.starts_with('[') {
                format!("{MINIMAL}\n{edit}")
            } else {
                format!("{edit}{MINIMAL}")
            };
            let text = if edit.contains("epochs") {
                text.replacen("[[family]]", "losses = [\"logconf\"]\n[[family]]", 1)
            } else {
                text
            };
            let err = Plan::from_toml(&text, Path::new("/")).unwrap_err();
            assert!(err.contains(needle), "{edit:?}: {err}");
        }
        let err = Plan::from_toml(
            &MINIMAL.replace("builtin = \"vader-movies\"", "builtin = \"imdb\""),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(err.contains("unknown task \"imdb\""), "{err}");
        let err = Plan::from_toml(
            &MINIMAL.replace(
                "path = \"/fam/tiny\"",
                "path = \"/fam/tiny\"\nrevisions = \"some\"",
            ),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(err.contains("must be \"all\""), "{err}");
    }

    #[test]
    fn the_weak_supervisor_is_a_probe_unless_the_plan_fine_tunes_it() {
        let p = Plan::from_toml(MINIMAL, Path::new("/")).unwrap();
        assert_eq!(p.weak.train, "probe");
        assert!(!p.weak.finetuned());
        let with = |v: &str| MINIMAL.replace("@step300\"", &format!("@step300\"\ntrain = {v}"));
        let p = Plan::from_toml(&with("\"finetune\""), Path::new("/")).unwrap();
        assert!(p.weak.finetuned());
        for bad in ["\"fine-tune\"", "\"\""] {
            let err = Plan::from_toml(&with(bad), Path::new("/")).unwrap_err();
            assert!(err.contains("weak.train: unknown value"), "{bad}: {err}");
            assert!(err.contains("probe, finetune"), "{err}");
        }
        let err = Plan::from_toml(&with("[\"finetune\"]"), Path::new("/")).unwrap_err();
        assert!(err.contains("train"), "{err}");
    }

    #[test]
    fn download_and_keep_weights_are_for_the_hub_cache_only() {
        let hub = MINIMAL.replace(
            "path = \"/fam/tiny\"",
            "path = \"org/tiny\"\ndownload = true\nkeep_weights = false",
        );
        let p = Plan::from_toml(&hub, Path::new("/nonexistent")).unwrap();
        assert!(p.families[0].download && !p.families[0].keep_weights);
        let p = Plan::from_toml(MINIMAL, Path::new("/")).unwrap();
        assert!(!p.families[0].download && p.families[0].keep_weights);
        for (edit, needle) in [
            ("download = true", "`download = true` needs"),
            ("keep_weights = false", "`keep_weights = false` deletes"),
            ("download = \"yes\"", "invalid type"),
            ("keep_weight = false", "unknown field `keep_weight`"),
        ] {
            let text = MINIMAL.replace(
                "path = \"/fam/tiny\"",
                &format!("path = \"/fam/tiny\"\n{edit}"),
            );
            let err = Plan::from_toml(&text, Path::new("/")).unwrap_err();
            assert!(err.contains(needle), "{edit}: {err}");
        }
    }

    #[test]
    fn weak_download_is_for_a_hub_repository_only() {
        let p = Plan::from_toml(MINIMAL, Path::new("/")).unwrap();
        assert!(!p.weak.download, "off unless asked for");
        let hub = MINIMAL.replace(
            "model = \"/fam/weak@step300\"",
            "model = \"org/weak@step300\"\ndownload = true",
        );
        let p = Plan::from_toml(&hub, Path::new("/nonexistent")).unwrap();
        assert!(p.weak.download);
        assert_eq!(p.weak.model, "org/weak@step300");
        for (model, needle) in [
            (
                "/fam/weak@step300",
                "weak.download: `download = true` needs",
            ),
            ("weak", "weak.download: `download = true` needs"),
        ] {
            let text = MINIMAL.replace(
                "model = \"/fam/weak@step300\"",
                &format!("model = \"{model}\"\ndownload = true"),
            );
            let err = Plan::from_toml(&text, Path::new("/")).unwrap_err();
            assert!(err.contains(needle), "{model}: {err}");
        }
        let text = MINIMAL.replace(
            "model = \"/fam/weak@step300\"",
            "model = \"org/weak@step300\"\ndownload = 1",
        );
        let err = Plan::from_toml(&text, Path::new("/")).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_plan_file() {
        let text = MINIMAL
            .replace("/fam/tiny", "families/own/tiny")
            .replace("builtin = \"vader-movies\"", "jsonl = \"t.jsonl\"");
        let p = Plan::from_toml(&text, Path::new("/plans")).unwrap();
        assert_eq!(p.families[0].path, "/plans/families/own/tiny");
        assert_eq!(
            p.tasks[0].jsonl.as_deref(),
            Some(Path::new("/plans/t.jsonl"))
        );
        assert_eq!(p.tasks[0].label(), "t");
    }
}

//! The `[finetune]` section of a plan and `[train] mode` (what the plan says; what a fine-tuned unit
//! computes is [`crate::finetune`]).

use serde::{Deserialize, Serialize};

use w2sg_lm::features::Pooling;
use w2sg_lm::finetune::{FinetuneConfig, Layers};

use super::Revisions;

/// `[train] mode`: one mode or a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Modes {
    One(String),
    Many(Vec<String>),
}

impl Default for Modes {
    fn default() -> Self {
        Modes::One("probe".into())
    }
}

impl Modes {
    pub fn list(&self) -> Vec<String> {
        match self {
            Modes::One(m) => vec![m.clone()],
            Modes::Many(v) => v.clone(),
        }
    }
}

/// `layers = "all"` or a number of blocks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayersPlan {
    Named(String),
    Last(usize),
}

/// The `[finetune]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetunePlan {
    pub layers: LayersPlan,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    pub epochs: usize,
    /// Default: 5e-5, or 2e-4 with LoRA.
    pub lr: Option<f64>,
    pub batch_size: usize,
    pub grad_accumulation: usize,
    pub warmup_frac: f64,
    pub weight_decay: f64,
    pub max_tokens: usize,
    pub revisions: Revisions,
    /// Names of the tasks whose students are also fine-tuned (None: every task).
    pub tasks: Option<Vec<String>>,
    /// The plan's seeds that get fine-tuned students (None: all). Fine-tuning costs far more than a
    /// probe, so a sweep may fine-tune fewer seeds than it probes.
    pub seeds: Option<Vec<u64>>,
    /// An epoch that took at least this many seconds is followed by an epoch checkpoint of its unit
    /// (when more epochs follow), from which a killed sweep resumes; 0: after every such epoch.
    /// Not part of the units' keys: it changes no result.
    pub checkpoint_after_s: f64,
}

impl Default for FinetunePlan {
    fn default() -> Self {
        FinetunePlan {
            layers: LayersPlan::Named("all".into()),
            lora_rank: 0,
            lora_alpha: 16.0,
            epochs: 2,
            lr: None,
            batch_size: 32,
            grad_accumulation: 1,
            warmup_frac: 0.1,
            weight_decay: 0.0,
            max_tokens: 128,
            revisions: Revisions::All("all".into()),
            tasks: None,
            seeds: None,
            checkpoint_after_s: 60.0,
        }
    }
}

impl FinetunePlan {
    /// The lm crate's settings for one student (the seed is the unit's).
    pub fn config(
        &self,
        pooling: Pooling,
        seed: u64,
    ) -> std::result::Result<FinetuneConfig, String> {
        let layers = match &self.layers {
            LayersPlan::Named(s) if s == "all" => Layers::All,
            LayersPlan::Named(s) => {
                return Err(format!(
                    "finetune.layers: \"{s}\" is not \"all\" or a number of blocks"
                ))
            }
            LayersPlan::Last(k) => Layers::Last(*k),
        };
        let c = FinetuneConfig {
            layers,
            lora_rank: self.lora_rank,
            lora_alpha: self.lora_alpha,
            epochs: self.epochs,
            lr: self
                .lr
                .unwrap_or(if self.lora_rank > 0 { 2e-4 } else { 5e-5 }),
            batch_size: self.batch_size,
            grad_accumulation: self.grad_accumulation,
            warmup_frac: self.warmup_frac,
            weight_decay: self.weight_decay,
            max_tokens: self.max_tokens,
            pooling,
            seed,
        };
        c.validate()
            .map_err(|e| e.to_string().replace("finetune: ", "finetune."))?;
        Ok(c)
    }

    /// Checks the section (and the revision selector) without reading models.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.config(Pooling::LastToken, 0)?;
        match &self.revisions {
            Revisions::All(s) if s != "all" => Err(format!(
                "finetune.revisions: must be \"all\", a list or {{ every = N }}, not \"{s}\""
            )),
            Revisions::Every { every: 0 } => {
                Err("finetune.revisions.every must be at least 1".into())
            }
            Revisions::List(l) if l.is_empty() => Err("finetune.revisions is an empty list".into()),
            _ if !(self.checkpoint_after_s.is_finite() && self.checkpoint_after_s >= 0.0) => {
                Err(format!(
                    "finetune.checkpoint_after_s must be a number of seconds ≥ 0, got {}",
                    self.checkpoint_after_s
                ))
            }
            _ if self.tasks.as_ref().is_some_and(|t| t.is_empty()) => Err(
                "finetune.tasks is an empty list (leave it out to fine-tune on every task)".into(),
            ),
            _ => Ok(()),
        }
    }

    /// Whether the task named `task` gets fine-tuned students.
    pub fn covers(&self, task: &str) -> bool {
        self.tasks
            .as_ref()
            .is_none_or(|t| t.iter().any(|n| n == task))
    }

    /// Whether `seed` gets fine-tuned students.
    pub fn covers_seed(&self, seed: u64) -> bool {
        self.seeds.as_ref().is_none_or(|s| s.contains(&seed))
    }

    /// The mode name in tables (`finetune-all`, `lora-8`, …).
    pub fn mode_name(&self) -> String {
        self.config(Pooling::LastToken, 0)
            .map(|c| c.mode_name())
            .unwrap_or_else(|_| "finetune".into())
    }

    /// Whether checkpoint `ck` (at position `i` of the family's `n` swept checkpoints) is fine-tuned.
    pub fn selects(&self, revision: &str, i: usize, n: usize) -> bool {
        match &self.revisions {
            Revisions::All(_) => true,
            Revisions::List(l) => l.iter().any(|r| r == revision),
            Revisions::Every { every } => i % every == 0 || i + 1 == n,
        }
    }
}

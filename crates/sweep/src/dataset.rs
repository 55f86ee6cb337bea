//! A task's examples as the sweep uses them: loaded, optionally balanced and subsampled (once per task,
//! with the task's `data_seed`, so every checkpoint's features cover the same examples), fingerprinted,
//! and split per seed into the weak model's training half A, the students' half B and the test set.
//!
//! The fingerprint is the sha256 of the examples in order (text and label, length-prefixed). It keys
//! the features of a checkpoint on this task; the split fractions and seed enter the probe units' keys
//! through their config, so changing a fraction recomputes probes but not features.

use sha2::{Digest, Sha256};

use w2sg_data::tasks::{self, Example, VaderSet};
use w2sg_data::ArchiveStore;
use w2sg_protocol::rng::Stream;

use crate::error::{Error, Result};
use crate::plan::{SplitPlan, TaskPlan};

/// The examples of one task, ready for the sweep.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The task's label in results.
    pub name: String,
    pub texts: Vec<String>,
    pub labels: Vec<bool>,
    /// sha256 (hex) of the examples.
    pub fingerprint: String,
    /// Examples in the source before balancing and subsampling.
    pub source_examples: usize,
    /// The pooling of this task's features (the task's own, else the plan's).
    pub pooling: String,
}

/// The three index sets of one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Half A: the weak model trains on these with ground truth.
    pub weak: Vec<usize>,
    /// Half B: the weak model labels these; the w2s student and the ceiling train on them.
    pub strong: Vec<usize>,
    pub test: Vec<usize>,
}

impl Dataset {
    /// Loads the task a plan names.
    pub fn load(plan: &TaskPlan, archives: &ArchiveStore) -> Result<Dataset> {
        let task = match (&plan.builtin, &plan.jsonl) {
            (Some(b), _) if b == "spam-assassin" => tasks::spam_assassin(archives)?,
            (Some(b), _) if b == "word-order" => {
                let docs = w2sg_data::corpus::default_corpus(archives)?;
                tasks::word_order(&docs, plan.validation_fraction, 8, 30)
            }
            (Some(b), _) => {
                let set = VaderSet::parse(b).ok_or_else(|| Error::Input {
                    what: "task".into(),
                    problem: format!("unknown built-in task \"{b}\""),
                })?;
                tasks::vader(archives, set, plan.margin)?
            }
            (None, Some(path)) => tasks::jsonl(path)?,
            (None, None) => {
                return Err(Error::Input {
                    what: "task".into(),
                    problem: "neither `builtin` nor `jsonl`".into(),
                })
            }
        };
        Dataset::from_examples(&plan.label(), &task.examples, plan)
    }

    /// The same examples with features pooled as `pooling`.
    pub fn with_pooling(mut self, pooling: &str) -> Dataset {
        self.pooling = pooling.to_string();
        self
    }

    /// Balances and subsamples `examples` as the plan asks, then fingerprints them.
    pub fn from_examples(name: &str, examples: &[Example], plan: &TaskPlan) -> Result<Dataset> {
        let source_examples = examples.len();
        let mut idx: Vec<usize> = (0..examples.len()).collect();
        if plan.balance {
            let pos: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|&i| examples[i].label == 1)
                .collect();
            let neg: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|&i| examples[i].label == 0)
                .collect();
            let n = pos.len().min(neg.len());
            let mut rng = Stream::new(plan.data_seed, "task-balance");
            let mut keep = sample(&pos, n, &mut rng);
            keep.extend(sample(&neg, n, &mut rng));
            keep.sort_unstable();
            idx = keep;
        }
        if plan.max_examples > 0 && plan.max_examples < idx.len() {
            let mut rng = Stream::new(plan.data_seed, "task-subsample");
            let mut keep = sample(&idx, plan.max_examples, &mut rng);
            keep.sort_unstable();
            idx = keep;
        }
        let texts: Vec<String> = idx.iter().map(|&i| examples[i].text.clone()).collect();
        let labels: Vec<bool> = idx.iter().map(|&i| examples[i].label == 1).collect();
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(Error::Input {
                what: format!("task {name}"),
                problem: format!("example {i} has an empty text"),
            });
        }
        let positives = labels.iter().filter(|&&l| l).count();
        if positives == 0 || positives == labels.len() {
            return Err(Error::Input {
                what: format!("task {name}"),
                problem: format!(
                    "all {} examples have the same label: a binary task needs both",
                    labels.len()
                ),
            });
        }
        Ok(Dataset {
            name: name.to_string(),
            fingerprint: fingerprint(&texts, &labels),
            texts,
            labels,
            source_examples,
            pooling: plan.pooling.clone().unwrap_or_else(|| "mean".into()),
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The split of one seed: a seeded permutation cut at the plan's fractions. Every part is
    /// non-empty and holds both labels, or this is an error naming the task.
    pub fn split(&self, plan: &SplitPlan, seed: u64) -> Result<Split> {
        let n = self.len();
        let mut perm: Vec<usize> = (0..n).collect();
        let mut rng = Stream::new(seed, "sweep-split");
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            perm.swap(i, j);
        }
        let n_weak = (plan.weak * n as f64).round() as usize;
        let n_strong = (plan.strong * n as f64).round() as usize;
        let n_weak = n_weak.min(n);
        let n_strong = n_strong.min(n - n_weak);
        let split = Split {
            weak: perm[..n_weak].to_vec(),
            strong: perm[n_weak..n_weak + n_strong].to_vec(),
            test: perm[n_weak + n_strong..].to_vec(),
        };
        for (part, idx) in [
            ("weak (A)", &split.weak),
            ("strong (B)", &split.strong),
            ("test", &split.test),
        ] {
            let pos = idx.iter().filter(|&&i| self.labels[i]).count();
            if idx.len() < 2 || pos == 0 || pos == idx.len() {
                return Err(Error::Input {
                    what: format!("task {}", self.name),
                    problem: format!(
                        "seed {seed}: the {part} part has {} examples ({pos} positive); it needs both \
                         labels: use more examples or other split fractions",
                        idx.len()
                    ),
                });
            }
        }
        Ok(split)
    }

    /// Labels at `idx`.
    pub fn labels_at(&self, idx: &[usize]) -> Vec<bool> {
        idx.iter().map(|&i| self.labels[i]).collect()
    }
}

/// `k` items of `items` without replacement (partial Fisher–Yates), in sampled order.
fn sample(items: &[usize], k: usize, rng: &mut Stream) -> Vec<usize> {
    let mut v = items.to_vec();
    let k = k.min(v.len());
    for i in 0..k {
        let j = i + rng.below((v.len() - i) as u64) as usize;
        v.swap(i, j);
    }
    v.truncate(k);
    v
}

fn fingerprint(texts: &[String], labels: &[bool]) -> String {
    let mut h = Sha256::new();
    h.update(b"w2sg-dataset-v1");
    for (t, &l) in texts.iter().zip(labels) {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
        h.update([l as u8]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples(n: usize, positive_every: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                text: format!("example {i}"),
                label: u8::from(i % positive_every == 0),
            })
            .collect()
    }

    fn plan() -> TaskPlan {
        TaskPlan {
            builtin: None,
            jsonl: None,
            name: None,
            margin: 0.5,
            balance: false,
            max_examples: 0,
            data_seed: 0,
            validation_fraction: 0.01,
            pooling: None,
        }
    }

    #[test]
    fn splits_partition_the_examples_and_depend_on_the_seed() {
        let d = Dataset::from_examples("t", &examples(101, 2), &plan()).unwrap();
        let s = d.split(&SplitPlan::default(), 7).unwrap();
        assert_eq!((s.weak.len(), s.strong.len(), s.test.len()), (40, 40, 21));
        let mut all: Vec<usize> = s
            .weak
            .iter()
            .chain(&s.strong)
            .chain(&s.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..101).collect::<Vec<_>>());
        assert_eq!(s, d.split(&SplitPlan::default(), 7).unwrap());
        assert_ne!(s, d.split(&SplitPlan::default(), 8).unwrap());
    }

    #[test]
    fn balancing_and_subsampling_are_seeded_and_fingerprinted() {
        let ex = examples(100, 4); // 25 positive
        let mut p = plan();
        p.balance = true;
        let d = Dataset::from_examples("t", &ex, &p).unwrap();
        assert_eq!(d.len(), 50);
        assert_eq!(d.labels.iter().filter(|&&l| l).count(), 25);
        p.max_examples = 20;
        let a = Dataset::from_examples("t", &ex, &p).unwrap();
        let b = Dataset::from_examples("t", &ex, &p).unwrap();
        assert_eq!(a.len(), 20);
        assert_eq!(a.fingerprint, b.fingerprint);
        p.data_seed = 1;
        let c = Dataset::from_examples("t", &ex, &p).unwrap();
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_ne!(a.fingerprint, d.fingerprint);
    }

    #[test]
    fn one_label_tasks_and_tiny_parts_are_errors() {
        let err = Dataset::from_examples("t", &examples(10, 1), &plan()).unwrap_err();
        assert!(err.to_string().contains("same label"), "{err}");
        let d = Dataset::from_examples("t", &examples(4, 2), &plan()).unwrap();
        let err = d.split(&SplitPlan::default(), 0).unwrap_err();
        assert!(err.to_string().contains("needs both labels"), "{err}");
    }
}

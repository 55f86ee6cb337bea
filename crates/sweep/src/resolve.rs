//! Resolving a plan: the checkpoints of each family (in training order, with their weight
//! fingerprints), the weak supervisor, and the tasks, checked before anything runs.

use std::path::PathBuf;

use serde::Serialize;

use w2sg_lm::revisions::{
    family_source, fingerprint, list_revisions, repo_family, scale_checkpoint_steps, Revision,
};

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::plan::{FamilyPlan, Plan, Revisions};

/// One checkpoint of the sweep: where it is, where it sits in training, and its weights' identity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckpointRef {
    pub family: String,
    pub revision: String,
    pub step: Option<u64>,
    pub tokens: Option<u64>,
    pub dir: PathBuf,
    pub dtype: String,
    /// The weight fingerprint, or why it could not be taken (then every unit of the checkpoint fails
    /// with that message).
    pub fingerprint: std::result::Result<String, String>,
    /// Where the weights are downloaded from, for a `download = true` family ([`crate::fetch`]).
    #[serde(skip)]
    pub hub: Option<crate::fetch::HubRevision>,
    /// Whether the weights stay in the hub cache after the checkpoint's units are stored.
    #[serde(skip)]
    pub keep_weights: bool,
}

impl CheckpointRef {
    /// The content id used in unit keys: the fingerprint, or a stand-in naming the unreadable path.
    pub fn content_id(&self) -> String {
        match &self.fingerprint {
            Ok(fp) => fp.clone(),
            Err(_) => format!(
                "unreadable:{}",
                w2sg_protocol::key::sha256_hex(self.dir.to_string_lossy().as_bytes())
            ),
        }
    }

    /// `family/revision`, the shard group.
    pub fn group(&self) -> String {
        format!("{}/{}", self.family, self.revision)
    }

    fn of(family: &str, rev: &Revision, dtype: &str) -> Self {
        CheckpointRef {
            family: family.to_string(),
            revision: rev.name.clone(),
            step: rev.step,
            tokens: rev.tokens,
            dir: rev.dir.clone(),
            dtype: dtype.to_string(),
            fingerprint: fingerprint(&rev.dir).map_err(|e| e.to_string()),
            hub: None,
            keep_weights: true,
        }
    }

    /// Makes sure the weights are on disk before a unit reads them (a `download = true` family's
    /// are fetched now; the error is the unit's).
    pub fn ensure_weights(&self) -> std::result::Result<(), String> {
        if let Err(e) = &self.fingerprint {
            return Err(e.clone());
        }
        match &self.hub {
            Some(hub) => crate::fetch::ensure_weights(hub, &self.dir),
            None => Ok(()),
        }
    }
}

/// The selected revisions of a family, in training order.
pub fn family_checkpoints(plan: &Plan, family: &FamilyPlan) -> Result<Vec<CheckpointRef>> {
    let name = plan.family_name(family);
    let (mut revs, cache) = if family.download {
        let (revs, cache) = crate::fetch::hub_revisions(family, &name)?;
        (revs, Some(cache))
    } else if family.repos.is_empty() {
        (list_revisions(&family_source(&family.path, None)?)?, None)
    } else {
        (repo_family(&family.repos, &family.steps, None)?, None)
    };
    if let Some(k) = family.steps_per_checkpoint {
        scale_checkpoint_steps(&mut revs, k);
    }
    let source_label = if family.repos.is_empty() {
        family.path.clone()
    } else {
        family.repos.join(", ")
    };
    let stepped: Vec<&Revision> = revs.iter().filter(|r| r.step.is_some()).collect();
    let chosen: Vec<&Revision> = match &family.revisions {
        Revisions::All(_) => stepped,
        Revisions::Every { every } => {
            let mut v: Vec<&Revision> = stepped.iter().copied().step_by(*every).collect();
            if let Some(last) = stepped.last() {
                if v.last().map(|r| &r.name) != Some(&last.name) {
                    v.push(last);
                }
            }
            v
        }
        Revisions::List(names) => {
            let mut v = Vec::new();
            for n in names {
                match revs.iter().find(|r| &r.name == n) {
                    Some(r) => v.push(r),
                    None => {
                        return Err(Error::Input {
                            what: format!("family {name} ({source_label})"),
                            problem: format!(
                                "no revision `{n}` (it has: {})",
                                preview(revs.iter().map(|r| r.name.as_str()))
                            ),
                        })
                    }
                }
            }
            v
        }
    };
    if chosen.is_empty() {
        return Err(Error::Input {
            what: format!("family {name} ({source_label})"),
            problem: "no revision with a step number (name revisions explicitly to sweep them)"
                .into(),
        });
    }
    Ok(chosen
        .into_iter()
        .map(|r| {
            let mut ck = CheckpointRef::of(&name, r, &family.dtype);
            ck.keep_weights = family.keep_weights;
            if let (Some(cache), Some(commit)) = (&cache, &r.commit) {
                let hub = crate::fetch::HubRevision {
                    repo: family.path.clone(),
                    revision: r.name.clone(),
                    commit: commit.clone(),
                    cache: cache.root().to_path_buf(),
                };
                if ck.fingerprint.is_err() {
                    ck.fingerprint = crate::fetch::identify(&hub);
                }
                ck.hub = Some(hub);
            }
            ck
        })
        .collect())
}

fn preview<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.len() > 8 {
        format!("{}, … ({} in all)", v[..8].join(", "), v.len())
    } else {
        v.join(", ")
    }
}

/// The weak model as a checkpoint.
pub fn weak_checkpoint(plan: &Plan) -> Result<CheckpointRef> {
    if plan.weak.download {
        crate::fetch::ensure_weak(&plan.weak.model)?;
    }
    let resolved = w2sg_lm::hub::resolve(&plan.weak.model, None)?;
    let name = resolved.revision.clone().unwrap_or_else(|| {
        resolved
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "weak".into())
    });
    let parsed = w2sg_lm::revisions::RevisionName::parse(&name);
    Ok(CheckpointRef {
        family: "weak".into(),
        revision: name,
        step: parsed.step,
        tokens: parsed.tokens,
        fingerprint: fingerprint(&resolved.dir).map_err(|e| e.to_string()),
        dir: resolved.dir,
        dtype: plan.weak.dtype.clone(),
        hub: None,
        keep_weights: true,
    })
}

/// Everything resolved before any unit runs.
#[derive(Debug)]
pub struct Resolved {
    pub plan: Plan,
    pub weak: CheckpointRef,
    /// Per family, its checkpoints in training order.
    pub families: Vec<(String, Vec<CheckpointRef>)>,
    pub datasets: Vec<Dataset>,
}

/// Resolves the plan's checkpoints and loads its tasks.
pub fn resolve(plan: &Plan, archives: &w2sg_data::ArchiveStore) -> Result<Resolved> {
    let weak = weak_checkpoint(plan)?;
    let mut families = Vec::new();
    for f in &plan.families {
        families.push((plan.family_name(f), family_checkpoints(plan, f)?));
    }
    check_layer(plan, &weak, &families)?;
    let mut datasets = Vec::new();
    for (i, t) in plan.tasks.iter().enumerate() {
        let pooling = t.pooling.as_deref().unwrap_or(&plan.features.pooling);
        let ds = Dataset::load(t, archives).map_err(|e| match (&t.jsonl, e) {
            // A task file the plan names that cannot be read is bad input of the plan.
            (Some(_), Error::Data(d)) => Error::PlanKey {
                key: "task.jsonl".into(),
                problem: format!("[[task]] {} ({}): {d}", i + 1, t.label()),
            },
            (_, e) => e,
        })?;
        datasets.push(ds.with_pooling(pooling));
    }
    if plan.finetunes() {
        for name in plan.finetune.tasks.iter().flatten() {
            if !datasets.iter().any(|d| &d.name == name) {
                return Err(Error::PlanKey {
                    key: "finetune.tasks".into(),
                    problem: format!(
                        "no task is named \"{name}\" (the plan's tasks: {})",
                        datasets
                            .iter()
                            .map(|d| d.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
    }
    Ok(Resolved {
        plan: plan.clone(),
        weak,
        families,
        datasets,
    })
}

/// `features.layer` against every checkpoint whose config can be read (one that cannot is recorded as
/// failed when its units run): checked here, before anything runs, so a layer no model has is bad
/// input of the plan, not a failed run.
fn check_layer(
    plan: &Plan,
    weak: &CheckpointRef,
    families: &[(String, Vec<CheckpointRef>)],
) -> Result<()> {
    // A fine-tuned weak supervisor has no features, so no layer to check.
    let weak = (!plan.weak.finetuned()).then_some(weak);
    let all = weak
        .into_iter()
        .chain(families.iter().flat_map(|(_, c)| c.iter()));
    for ck in all {
        let Ok(config) = w2sg_lm::config::ModelConfig::from_dir(&ck.dir) else {
            continue;
        };
        if let Err(e) = w2sg_lm::features::resolve_layer(plan.features.layer, config.num_layers()) {
            return Err(Error::PlanKey {
                key: "features.layer".into(),
                problem: format!("{e} (checkpoint {} of {})", ck.revision, ck.family),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Unit specs

/// The checkpoints of `resolved` that get fine-tuned students (by group), per the plan's
/// `[finetune] revisions`.
pub fn finetuned_groups(resolved: &Resolved) -> std::collections::BTreeSet<String> {
    let plan = &resolved.plan;
    let mut out = std::collections::BTreeSet::new();
    if !plan.finetunes() {
        return out;
    }
    for (_, cks) in &resolved.families {
        for (i, ck) in cks.iter().enumerate() {
            if plan.finetune.selects(&ck.revision, i, cks.len()) {
                out.insert(ck.group());
            }
        }
    }
    out
}

//! `--shard I/N`: a deterministic slice of a sweep's units, so that a job array (Slurm
//! `--array=0-(N-1)` with `--shard $SLURM_ARRAY_TASK_ID/N`) spreads a sweep over machines.
//!
//! Units are sliced by **group**, not one by one: the sweep passes the checkpoint as the group, so a
//! shard extracts the features of its checkpoints once and runs every (seed, loss) probe on them, instead
//! of every shard extracting every checkpoint. The distinct groups are sorted and the j-th goes to shard
//! j mod N: every group lands in exactly one shard, shard sizes differ by at most one group, and the
//! assignment depends only on the set of groups (not on the order of the list or on the machine).
//! Units shared by all groups (the weak labels of a seed) are computed by every shard that needs them;
//! they are deterministic, so [`crate::store::merge`] sees identical duplicates and keeps one.
//!
//! I is 0-based (0 ≤ I < N), matching `SLURM_ARRAY_TASK_ID` for `--array=0-(N-1)`.

use std::collections::BTreeSet;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Shard I of N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: usize,
    pub count: usize,
}

impl ShardSpec {
    /// The whole sweep (shard 0 of 1).
    pub fn all() -> Self {
        ShardSpec { index: 0, count: 1 }
    }

    /// Checks 0 ≤ index < count.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        let spec = format!("{index}/{count}");
        if count == 0 {
            return Err(Error::Shard {
                spec,
                problem: "the shard count N must be at least 1".into(),
            });
        }
        if index >= count {
            return Err(Error::Shard {
                spec,
                problem: format!("the shard index I is 0-based and must be below N = {count}"),
            });
        }
        Ok(ShardSpec { index, count })
    }

    /// The items whose group falls in this shard, in their input order.
    pub fn select<'a, T>(&self, items: &'a [T], group: impl Fn(&T) -> String) -> Vec<&'a T> {
        let groups: BTreeSet<String> = items.iter().map(&group).collect();
        let mine: BTreeSet<&String> = groups
            .iter()
            .enumerate()
            .filter(|(j, _)| j % self.count == self.index)
            .map(|(_, g)| g)
            .collect();
        items
            .iter()
            .filter(|it| mine.contains(&group(it)))
            .collect()
    }
}

impl FromStr for ShardSpec {
    type Err = Error;

    /// Parses `I/N`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |problem: &str| Error::Shard {
            spec: s.to_string(),
            problem: problem.to_string(),
        };
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| bad("expected I/N, e.g. 0/4 for the first of four shards"))?;
        let i: usize = i
            .trim()
            .parse()
            .map_err(|_| bad("I is not a non-negative integer"))?;
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| bad("N is not a positive integer"))?;
        ShardSpec::new(i, n).map_err(|e| match e {
            Error::Shard { problem, .. } => bad(&problem),
            other => other,
        })
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_errors() {
        assert_eq!(
            "2/4".parse::<ShardSpec>().unwrap(),
            ShardSpec { index: 2, count: 4 }
        );
        let e = "4/4".parse::<ShardSpec>().unwrap_err().to_string();
        assert!(e.contains("`4/4`") && e.contains("0-based"), "{e}");
        assert!("1/0".parse::<ShardSpec>().is_err());
        assert!("x/3".parse::<ShardSpec>().is_err());
        assert!("3".parse::<ShardSpec>().is_err());
    }

    #[test]
    fn partition_by_group() {
        // 7 checkpoints × 3 seeds; groups sorted c0..c6 → shard j mod 3.
        let items: Vec<(String, u32)> = (0..7)
            .flat_map(|c| (0..3).map(move |s| (format!("c{c}"), s)))
            .collect();
        let mut seen = Vec::new();
        for i in 0..3 {
            let part = ShardSpec::new(i, 3)
                .unwrap()
                .select(&items, |it| it.0.clone());
            let groups: BTreeSet<&String> = part.iter().map(|it| &it.0).collect();
            // Every unit of a group stays together.
            assert_eq!(part.len(), groups.len() * 3);
            seen.extend(part.into_iter().cloned());
        }
        // Shard 0 has c0, c3, c6.
        let s0 = ShardSpec::new(0, 3)
            .unwrap()
            .select(&items, |it| it.0.clone());
        let g0: BTreeSet<&str> = s0.iter().map(|it| it.0.as_str()).collect();
        assert_eq!(g0, ["c0", "c3", "c6"].into_iter().collect());
        seen.sort();
        let mut all = items.clone();
        all.sort();
        assert_eq!(seen, all);
        // Independent of the list order.
        let mut rev = items.clone();
        rev.reverse();
        let r0 = ShardSpec::new(0, 3)
            .unwrap()
            .select(&rev, |it| it.0.clone());
        let rg0: BTreeSet<&str> = r0.iter().map(|it| it.0.as_str()).collect();
        assert_eq!(rg0, g0);
        assert_eq!(ShardSpec::all().select(&items, |it| it.0.clone()).len(), 21);
    }
}

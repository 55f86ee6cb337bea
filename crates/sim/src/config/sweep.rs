//! A config file as a sweep: every list is swept (the cartesian product, last key fastest), except
//! `seeds` and a link's `coefficients`; each point becomes a validated [`SimConfig`]. [`Plan::jobs`]
//! is the list of runs (config, seed) every command that runs a sweep runs.

use std::collections::BTreeMap;
use std::path::Path;

use super::{ConfigError, RawConfig, SimConfig};

/// Most runs (grid points × seeds) one config may describe: beyond this the grid and the result tables
/// alone would take tens of gigabytes; the `resources` module checks the memory of what is allowed.
pub const MAX_RUNS: usize = 10_000_000;

/// One point of a sweep: the validated config and the swept values that define it.
#[derive(Clone, Debug)]
pub struct GridPoint {
    pub config: SimConfig,
    /// `(dotted key, value as written)` for each swept key, in sweep order.
    pub swept: Vec<(String, String)>,
}

/// A parsed config file: the grid of configs and the seeds to run each with.
#[derive(Clone, Debug)]
pub struct Plan {
    pub grid: Vec<GridPoint>,
    pub seeds: Vec<u64>,
    /// Names of the swept keys (the extra columns of the summary).
    pub swept_keys: Vec<String>,
}

impl Plan {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse a config from text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let fail = |key: Option<String>, message: String| ConfigError {
            file: file.to_string(),
            key,
            message,
        };
        let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            fail(None, format!("not valid TOML: {}", e.message().trim()))
        })?;
        let seeds = match doc.remove("seeds") {
            None => vec![0],
            Some(toml::Value::Integer(n)) if n as u64 > MAX_RUNS as u64 => {
                return Err(fail(
                    Some("seeds".into()),
                    format!("{n} seeds: at most {MAX_RUNS} runs per config (split the sweep)"),
                ));
            }
            Some(toml::Value::Integer(n)) if n >= 1 => (0..n as u64).collect(),
            Some(toml::Value::Array(list)) if !list.is_empty() => list
                .iter()
                .map(|v| v.as_integer().filter(|&s| s >= 0).map(|s| s as u64))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    fail(
                        Some("seeds".into()),
                        "a list of seeds must hold non-negative integers".into(),
                    )
                })?,
            Some(other) => {
                return Err(fail(
                    Some("seeds".into()),
                    format!("must be a positive count or a list of seeds (got {other})"),
                ));
            }
        };
        let mut swept = Vec::new();
        collect_sweeps(&toml::Value::Table(doc.clone()), "", &mut swept);
        for (key, values) in &swept {
            if values.is_empty() {
                return Err(fail(
                    Some(key.clone()),
                    "an empty list sweeps nothing".into(),
                ));
            }
        }
        let swept_keys: Vec<String> = swept.iter().map(|(k, _)| k.clone()).collect();
        // Count the runs before expanding anything: a sweep too large to hold is refused by name.
        let total = swept
            .iter()
            .try_fold(1usize, |acc, (_, v)| acc.checked_mul(v.len()))
            .filter(|&t| t.saturating_mul(seeds.len()) <= MAX_RUNS);
        let Some(total) = total else {
            let widest = swept
                .iter()
                .max_by_key(|(_, v)| v.len())
                .map_or("seeds".to_string(), |(k, _)| k.clone());
            let sizes: Vec<String> = swept
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.len()))
                .chain(std::iter::once(format!("seeds: {}", seeds.len())))
                .collect();
            let runs = swept
                .iter()
                .fold(seeds.len() as f64, |acc, (_, v)| acc * v.len() as f64);
            return Err(fail(
                Some(widest),
                format!(
                    "the sweep has {runs:.3e} runs ({}); at most {MAX_RUNS} runs per config \
                     (split the sweep)",
                    sizes.join(" × ")
                ),
            ));
        };
        let mut grid = Vec::with_capacity(total);
        for index in 0..total {
            // Mixed-radix digits, last key fastest.
            let mut rem = index;
            let mut choice = vec![0; swept.len()];
            for (k, (_, values)) in swept.iter().enumerate().rev() {
                choice[k] = rem % values.len();
                rem /= values.len();
            }
            let mut point = toml::Value::Table(doc.clone());
            let mut labels = Vec::new();
            for (k, (key, values)) in swept.iter().enumerate() {
                let v = values[choice[k]].clone();
                labels.push((key.clone(), display_value(&v)));
                set_path(&mut point, key, v);
            }
            let raw: RawConfig = serde_path_to_error::deserialize(point).map_err(|e| {
                let path = e.path().to_string();
                let key = if path == "." || path.is_empty() {
                    None
                } else {
                    Some(path)
                };
                fail(key, e.into_inner().to_string())
            })?;
            let config = SimConfig::from_raw(raw).map_err(|(key, msg)| {
                let at = if labels.is_empty() {
                    String::new()
                } else {
                    format!(" (at sweep point {})", format_labels(&labels))
                };
                fail(Some(key), format!("{msg}{at}"))
            })?;
            grid.push(GridPoint {
                config,
                swept: labels,
            });
        }
        Ok(Plan {
            grid,
            seeds,
            swept_keys,
        })
    }

    /// Number of runs: grid points × seeds.
    pub fn len(&self) -> usize {
        self.grid.len() * self.seeds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every run of the sweep as (config, seed): grid point by grid point, each with every seed. The
    /// one job list `w2sg sim run` and `w2sg reproduce` run ([`crate::engine::simulate_all`]), in
    /// the order of the summary table's rows.
    pub fn jobs(&self) -> Vec<(&SimConfig, u64)> {
        self.grid
            .iter()
            .flat_map(|g| self.seeds.iter().map(move |&s| (&g.config, s)))
            .collect()
    }

    /// Samples all runs of the sweep process together (the length of a progress bar).
    pub fn cost(&self) -> u64 {
        self.jobs().iter().map(|(c, _)| c.cost()).sum()
    }
}

fn format_labels(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Values as a user would write them (strings without quotes).
pub fn display_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Arrays found at any key are sweeps, except `coefficients` (a link's literal list).
fn collect_sweeps(v: &toml::Value, prefix: &str, out: &mut Vec<(String, Vec<toml::Value>)>) {
    if let toml::Value::Table(t) = v {
        let entries: BTreeMap<_, _> = t.iter().collect();
        for (k, child) in entries {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match child {
                toml::Value::Array(items) if k != "coefficients" => out.push((path, items.clone())),
                toml::Value::Table(_) => collect_sweeps(child, &path, out),
                _ => {}
            }
        }
    }
}

fn set_path(root: &mut toml::Value, path: &str, value: toml::Value) {
    let mut node = root;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        node = node
            .as_table_mut()
            .and_then(|t| t.get_mut(*part))
            .expect("path exists");
    }
    node.as_table_mut()
        .expect("table")
        .insert(parts[parts.len() - 1].to_string(), value);
}

/// Keys of the summary tables that every sweep point carries (for documentation).
pub const SUMMARY_COLUMNS: &[&str] = &[
    "run",
    "seed",
    "m0",
    "m_peak",
    "tau_peak",
    "m_final",
    "risk_weak",
    "risk_w2s_final",
    "risk_ceiling_final",
    "pgr_peak",
    "pgr_final",
];

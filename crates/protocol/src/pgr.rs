//! Performance gap recovered, PGR = (acc_w2s − acc_weak)/(acc_ceiling − acc_weak), over one or more
//! seeds, with a seeded percentile-bootstrap interval over test examples and seeds.
//!
//! Inputs are per-example correctness of the weak supervisor, the w2s student and the ceiling on each
//! seed's test set (the three are evaluated on the same examples of a seed, so the resampling is paired).
//!
//! - Point estimate: accuracies averaged over seeds (each seed weighs the same), then the ratio. A ratio
//!   of means, not a mean of ratios, because a per-seed ratio explodes when one seed's gap is small.
//! - Definedness: the gap g = acc_ceiling − acc_weak must exceed `min_gap_se` (default 1) standard
//!   errors; otherwise PGR is `None`, never a made-up number (the ratio of two noises is not a
//!   measurement). The SE of g is conservative: the larger of (a) the test-sampling SE,
//!   √(Σ_s se_s²)/S with se_s the paired SE of the gap on seed s, and (b) for S ≥ 2 seeds, the
//!   seed-to-seed standard deviation of the per-seed gaps over √S ([`mean_and_se`]).
//! - Interval: B resamples; each draws S seeds with replacement, then for every drawn seed n_s of its test
//!   examples with replacement (the same indices for the three models), and computes PGR of the
//!   resample. The interval is the type-7 percentile interval of the resampled PGRs at the configured
//!   level. A resample whose gap is exactly 0 has no PGR and is counted in `bootstrap_undefined`; if more
//!   than (1 − level) of the resamples are undefined, the interval is `None`. Seeded by
//!   [`PgrConfig::seed`], so the interval is reproducible.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::paired_diff_se;
use crate::quantile::quantile_sorted;
use crate::rng::Stream;

/// Correctness of the three models on one seed's test set (the same examples, in the same order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedOutcomes {
    pub seed: u64,
    pub weak: Vec<bool>,
    pub w2s: Vec<bool>,
    pub ceiling: Vec<bool>,
}

impl SeedOutcomes {
    /// Correctness (p > 1/2 against the labels) of the three models' test-set probabilities.
    pub fn from_probs(
        seed: u64,
        labels: &[bool],
        weak: &[f64],
        w2s: &[f64],
        ceiling: &[f64],
    ) -> Result<Self> {
        Ok(SeedOutcomes {
            seed,
            weak: crate::metrics::correct(weak, labels)?,
            w2s: crate::metrics::correct(w2s, labels)?,
            ceiling: crate::metrics::correct(ceiling, labels)?,
        })
    }
}

/// Bootstrap and definedness settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgrConfig {
    /// Number of bootstrap resamples B (0: no interval).
    pub bootstrap: usize,
    /// Coverage of the percentile interval, in (0, 1).
    pub level: f64,
    /// Seed of the bootstrap stream.
    pub seed: u64,
    /// PGR is defined only when the gap exceeds this many of its standard errors.
    pub min_gap_se: f64,
}

impl Default for PgrConfig {
    fn default() -> Self {
        PgrConfig {
            bootstrap: 1000,
            level: 0.95,
            seed: 0,
            min_gap_se: 1.0,
        }
    }
}

impl PgrConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(Error::config(
                "pgr.level",
                format!("{} is not in (0, 1)", self.level),
            ));
        }
        if !(self.min_gap_se.is_finite() && self.min_gap_se >= 0.0) {
            return Err(Error::config(
                "pgr.min_gap_se",
                format!("{} is not ≥ 0", self.min_gap_se),
            ));
        }
        Ok(())
    }
}

/// PGR with everything needed to judge it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PgrEstimate {
    /// Accuracies, averaged over seeds.
    pub acc_weak: f64,
    pub acc_w2s: f64,
    pub acc_ceiling: f64,
    /// acc_ceiling − acc_weak and its standard error.
    pub gap: f64,
    pub gap_se: f64,
    /// `None` when the gap is within `min_gap_se` standard errors.
    pub pgr: Option<f64>,
    /// Percentile bootstrap interval (lower, upper).
    pub interval: Option<(f64, f64)>,
    pub n_seeds: usize,
    /// Test examples summed over seeds.
    pub n_test: usize,
    /// Resamples drawn and how many had no PGR (gap exactly 0).
    pub bootstrap: usize,
    pub bootstrap_undefined: usize,
}

/// (w2s − weak)/(ceiling − weak); `None` when the denominator is 0.
pub fn pgr_value(weak: f64, w2s: f64, ceiling: f64) -> Option<f64> {
    let gap = ceiling - weak;
    (gap != 0.0).then(|| (w2s - weak) / gap)
}

/// Mean over seeds of `values` and its conservative SE: the larger of √(Σ within_se²)/S and, for
/// S ≥ 2, the sample standard deviation of `values` over √S.
pub fn mean_and_se(values: &[f64], within_se: &[f64]) -> (f64, f64) {
    let s = values.len();
    if s == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / s as f64;
    let within = within_se.iter().map(|e| e * e).sum::<f64>().sqrt() / s as f64;
    let between = if s >= 2 {
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (s - 1) as f64;
        (var / s as f64).sqrt()
    } else {
        0.0
    };
    (mean, within.max(between))
}

fn frac(v: &[bool]) -> f64 {
    v.iter().filter(|&&b| b).count() as f64 / v.len() as f64
}

/// PGR over seeds with its bootstrap interval.
pub fn pgr(outcomes: &[SeedOutcomes], cfg: &PgrConfig) -> Result<PgrEstimate> {
    cfg.validate()?;
    if outcomes.is_empty() {
        return Err(Error::input("pgr", "no seeds"));
    }
    for o in outcomes {
        if o.weak.is_empty() || o.weak.len() != o.w2s.len() || o.weak.len() != o.ceiling.len() {
            return Err(Error::input(
                "pgr",
                format!(
                    "seed {}: weak, w2s and ceiling need the same non-empty test set ({}, {}, {} examples)",
                    o.seed,
                    o.weak.len(),
                    o.w2s.len(),
                    o.ceiling.len()
                ),
            ));
        }
    }
    let s = outcomes.len() as f64;
    let acc_weak = outcomes.iter().map(|o| frac(&o.weak)).sum::<f64>() / s;
    let acc_w2s = outcomes.iter().map(|o| frac(&o.w2s)).sum::<f64>() / s;
    let acc_ceiling = outcomes.iter().map(|o| frac(&o.ceiling)).sum::<f64>() / s;
    let gaps: Vec<f64> = outcomes
        .iter()
        .map(|o| frac(&o.ceiling) - frac(&o.weak))
        .collect();
    let gap_ses: Vec<f64> = outcomes
        .iter()
        .map(|o| paired_diff_se(&o.ceiling, &o.weak))
        .collect();
    let (gap, gap_se) = mean_and_se(&gaps, &gap_ses);
    let defined = gap > cfg.min_gap_se * gap_se;
    let point = if defined {
        pgr_value(acc_weak, acc_w2s, acc_ceiling)
    } else {
        None
    };

    // Each example as a 3-bit code (weak, w2s, ceiling) so a resample only counts codes.
    let codes: Vec<Vec<u8>> = outcomes
        .iter()
        .map(|o| {
            (0..o.weak.len())
                .map(|i| o.weak[i] as u8 | (o.w2s[i] as u8) << 1 | (o.ceiling[i] as u8) << 2)
                .collect()
        })
        .collect();
    let mut interval = None;
    let mut undefined = 0usize;
    if point.is_some() && cfg.bootstrap > 0 {
        let mut rng = Stream::new(cfg.seed, "pgr-bootstrap");
        let mut values = Vec::with_capacity(cfg.bootstrap);
        for _ in 0..cfg.bootstrap {
            let (mut w, mut m, mut c) = (0.0, 0.0, 0.0);
            for _ in 0..outcomes.len() {
                let seed_codes = &codes[rng.below(outcomes.len() as u64) as usize];
                let n = seed_codes.len();
                let mut counts = [0u32; 8];
                for _ in 0..n {
                    counts[seed_codes[rng.below(n as u64) as usize] as usize] += 1;
                }
                let count = |bit: u8| -> f64 {
                    (0..8)
                        .filter(|code| code & bit != 0)
                        .map(|code| counts[code as usize] as f64)
                        .sum::<f64>()
                        / n as f64
                };
                w += count(1);
                m += count(2);
                c += count(4);
            }
            match pgr_value(w / s, m / s, c / s) {
                Some(v) => values.push(v),
                None => undefined += 1,
            }
        }
        if (undefined as f64) <= (1.0 - cfg.level) * cfg.bootstrap as f64 && !values.is_empty() {
            values.sort_by(f64::total_cmp);
            let a = (1.0 - cfg.level) / 2.0;
            interval = Some((
                quantile_sorted(&values, a).expect("non-empty"),
                quantile_sorted(&values, 1.0 - a).expect("non-empty"),
            ));
        }
    }
    Ok(PgrEstimate {
        acc_weak,
        acc_w2s,
        acc_ceiling,
        gap,
        gap_se,
        pgr: point,
        interval,
        n_seeds: outcomes.len(),
        n_test: outcomes.iter().map(|o| o.weak.len()).sum(),
        bootstrap: if point.is_some() { cfg.bootstrap } else { 0 },
        bootstrap_undefined: undefined,
    })
}

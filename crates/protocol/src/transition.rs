//! The phase transition across checkpoints: where weak-to-strong generalization appears as pre-training
//! progresses.
//!
//! (a) [`first_sustained_step`]: per step, the mean over seeds of acc_w2s − acc_weak and its SE (the
//! conservative [`crate::pgr::mean_and_se`]: the larger of the test-sampling SE and the seed-to-seed
//! SE); the answer is the first step from which the mean exceeds `z` (default 2) SEs at that step **and
//! at every later step**. `None` when the last step does not. A single early blip above does not count.
//!
//! (b) [`fit_gain_sigmoid`], what the sweep reports: the **W2S gain** acc_w2s − acc_weak (mean over
//! seeds) against x = ln(step), fitted by least squares with gain(x) = L + (U − L) σ((x − m)/w). The
//! midpoint is the step e^m; the width w is in units of ln(step) (the curve goes from 10 % to 90 % of
//! the way over a factor of e^{2 ln 9 · w} ≈ e^{4.39 w} in steps). Why the gain and not PGR: PGR
//! divides by the ceiling–weak gap and is undefined until the ceiling passes the weak supervisor, so a
//! PGR curve is observed only on its tail and its fitted midpoint can land anywhere (the quick
//! reproduction once reported 3·10¹³ and 7·10⁻¹⁹ steps). The gain is defined at every step.
//! Intervals resample the curve, not the parameters: seeds with replacement and, within each drawn
//! seed, its test examples with replacement (the same draw at every step), then a refit; percentile
//! intervals. Validated on synthetic curves with a known midpoint (tests/transition_coverage.rs;
//! coverage in BENCHMARKS.md).
//!
//! [`fit_sigmoid`] fits the same curve to per-seed values of any other per-step quantity, such as
//! PGR, with a bootstrap over seeds only (kept for callers that have no per-example outcomes).
//!
//! Which model: the **four-parameter** curve is the default, because the asymptotes are not known a
//! priori (the gain is negative from a random initialization and settles at a task-dependent level),
//! so fixing L and U would force the curve through plateaus the data do not have and bias m and w.
//! When a sweep sees only one side, L and U trade off against w; then
//! [`SigmoidModel::FixedAsymptotes`] with values from a longer sweep trades that variance for an
//! explicit assumption.
//!
//! **Not identified.** A midpoint outside the observed steps, a fit that did not converge, or an
//! interval that is missing, of zero width, does not cover its estimate or reaches outside the
//! observed steps is reported through [`SigmoidFit::not_identified`] with the reason; callers then
//! report no number (empty cells). A transition sharper than the spacing of the steps around it is
//! located only to within those two steps, so its interval is widened to cover them. With
//! `bootstrap` = 0, Wald intervals from the fit's covariance σ²(JᵀJ)⁻¹, σ² = RSS/(N − p), for m and
//! ln w (so the width's interval is positive and the midpoint step's is e^{m ± z·se}).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pgr::mean_and_se;
use crate::quantile::quantile_sorted;
use crate::rng::Stream;
use crate::sigmoid::{fit_from, invert, model, Fixed, LmResult};

/// acc_w2s − acc_weak at one (step, seed) with its standard error (e.g. the paired SE).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepDiff {
    pub step: u64,
    pub seed: u64,
    pub diff: f64,
    pub se: f64,
}

/// One step's summary over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    pub step: u64,
    pub n_seeds: usize,
    pub mean: f64,
    pub se: f64,
    /// mean > z · se.
    pub beats: bool,
}

/// The answer of (a).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SustainedStep {
    /// First step from which w2s stays above weak by more than z SEs; `None` if it never does.
    pub step: Option<u64>,
    /// Every step's summary, ascending.
    pub steps: Vec<StepSummary>,
}

/// (a): the first step from which w2s beats weak by more than `z` standard errors at every later step.
pub fn first_sustained_step(records: &[StepDiff], z: f64) -> Result<SustainedStep> {
    if !(z.is_finite() && z >= 0.0) {
        return Err(Error::config("transition.z", format!("{z} is not ≥ 0")));
    }
    if let Some(r) = records
        .iter()
        .find(|r| !r.diff.is_finite() || !r.se.is_finite() || r.se < 0.0)
    {
        return Err(Error::input(
            "transition",
            format!(
                "step {} seed {}: difference {} with SE {} is not a finite number with SE ≥ 0",
                r.step, r.seed, r.diff, r.se
            ),
        ));
    }
    let mut by_step: BTreeMap<u64, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    for r in records {
        if by_step
            .entry(r.step)
            .or_default()
            .insert(r.seed, (r.diff, r.se))
            .is_some()
        {
            return Err(Error::input(
                "transition",
                format!("step {} seed {} appears twice", r.step, r.seed),
            ));
        }
    }
    let steps: Vec<StepSummary> = by_step
        .into_iter()
        .map(|(step, seeds)| {
            let d: Vec<f64> = seeds.values().map(|v| v.0).collect();
            let e: Vec<f64> = seeds.values().map(|v| v.1).collect();
            let (mean, se) = mean_and_se(&d, &e);
            StepSummary {
                step,
                n_seeds: d.len(),
                mean,
                se,
                beats: mean > z * se,
            }
        })
        .collect();
    let mut first = None;
    for s in steps.iter().rev() {
        if s.beats {
            first = Some(s.step);
        } else {
            break;
        }
    }
    Ok(SustainedStep { step: first, steps })
}

/// PGR at one (step, seed); `None` where it is undefined.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepPgr {
    pub step: u64,
    pub seed: u64,
    pub pgr: Option<f64>,
}

/// Which curve to fit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SigmoidModel {
    /// L, U, m, w all fitted.
    FourParam,
    /// L and U given; m and w fitted.
    FixedAsymptotes { lower: f64, upper: f64 },
}

/// Sigmoid-fit settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigmoidConfig {
    pub model: SigmoidModel,
    /// Bootstrap resamples of the curve (0: covariance intervals; the PGR fit needs ≥ 2 seeds).
    pub bootstrap: usize,
    /// Interval coverage in (0, 1).
    pub level: f64,
    /// Seed of the bootstrap stream.
    pub seed: u64,
    /// Levenberg–Marquardt iterations per start.
    pub max_iter: usize,
}

impl Default for SigmoidConfig {
    fn default() -> Self {
        SigmoidConfig {
            model: SigmoidModel::FourParam,
            bootstrap: 200,
            level: 0.95,
            seed: 0,
            max_iter: 200,
        }
    }
}

/// The fitted curve with intervals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SigmoidFit {
    /// Lower and upper asymptotes (the given ones for the fixed model).
    pub lower: f64,
    pub upper: f64,
    /// m, the midpoint in ln(step), and e^m.
    pub midpoint_log_step: f64,
    pub midpoint_step: f64,
    /// w, in units of ln(step).
    pub width: f64,
    /// Intervals at `level`.
    pub midpoint_step_interval: Option<(f64, f64)>,
    pub width_interval: Option<(f64, f64)>,
    /// "seed_and_example_bootstrap" (gain), "seed_bootstrap" (PGR) or "covariance".
    pub interval_method: String,
    /// Standard errors of (m, ln w) from the covariance; `None` if JᵀJ is singular.
    pub se_midpoint_log_step: Option<f64>,
    pub se_log_width: Option<f64>,
    /// Root-mean-square residual and the number of (step) points fitted.
    pub rmse: f64,
    pub n_points: usize,
    pub n_seeds: usize,
    /// Whether e^m lies within the fitted steps.
    pub midpoint_in_range: bool,
    pub converged: bool,
    /// Bootstrap resamples that could not be fitted (too few points).
    pub bootstrap_failed: usize,
    /// Why the midpoint is not identified by the data (a midpoint outside the fitted steps, a fit that
    /// did not converge, no interval or a degenerate one); `None` when it is. A caller reports the
    /// midpoint, the width and their intervals only when this is `None`.
    pub not_identified: Option<String>,
}

impl SigmoidFit {
    /// Whether the midpoint (and with it the width) is identified by the data.
    pub fn identified(&self) -> bool {
        self.not_identified.is_none()
    }
}

/// Why a fit's midpoint is not identified, if it is not: the fit did not converge, the midpoint lies
/// outside [x_min, x_max] (the observed ln steps), or the interval is missing, not finite, of zero
/// width, or does not cover the estimate.
fn identification(
    converged: bool,
    m: f64,
    (x_min, x_max): (f64, f64),
    interval: Option<(f64, f64)>,
) -> Option<String> {
    if !converged {
        return Some("the least-squares fit did not converge".into());
    }
    if !(m >= x_min && m <= x_max) {
        return Some(format!(
            "midpoint step {:.4e} lies outside the observed steps [{:.0}, {:.0}]",
            m.exp(),
            x_min.exp(),
            x_max.exp()
        ));
    }
    let Some((lo, hi)) = interval else {
        return Some("no interval (too few resamples could be fitted)".into());
    };
    let (llo, lhi) = (lo.ln(), hi.ln());
    // Zero width relative to the scale of ln(step): a resampling that never moves the midpoint
    // means the data do not inform it (e.g. one point carries the whole fit).
    let degenerate = !(llo.is_finite() && lhi.is_finite())
        || lhi - llo <= 1e-9 * (1.0 + m.abs())
        || !(llo <= m && m <= lhi);
    if degenerate {
        return Some(format!(
            "degenerate interval [{lo:.4e}, {hi:.4e}] for the midpoint step {:.4e}",
            m.exp()
        ));
    }
    // An interval reaching beyond the observed steps says the data do not pin the midpoint down.
    let slack = 1e-9 * (1.0 + x_max.abs());
    (llo < x_min - slack || lhi > x_max + slack).then(|| {
        format!(
            "the interval [{lo:.4e}, {hi:.4e}] of the midpoint step reaches outside the observed \
             steps [{:.0}, {:.0}]",
            x_min.exp(),
            x_max.exp()
        )
    })
}

/// A transition sharper than the spacing of the steps around its midpoint fits equally well with
/// the midpoint anywhere between those two steps: the interval (in steps) is widened to cover them.
/// Sharper means a 10 %–90 % span 2 ln 9 · w shorter than the gap in ln(step).
fn widen_to_gap((lo, hi): (f64, f64), m: f64, w: f64, x: &[f64]) -> (f64, f64) {
    let k = x.partition_point(|&xi| xi <= m);
    if k == 0 || k == x.len() {
        return (lo, hi);
    }
    let (a, b) = (x[k - 1], x[k]);
    if 2.0 * 9f64.ln() * w < b - a {
        (lo.min(a.exp()), hi.max(b.exp()))
    } else {
        (lo, hi)
    }
}

/// Per-step mean PGR over the seeds in `seeds` (with multiplicity), skipping undefined values.
fn step_means(table: &BTreeMap<u64, BTreeMap<u64, f64>>, seeds: &[u64]) -> (Vec<f64>, Vec<f64>) {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (&step, per_seed) in table {
        let vals: Vec<f64> = seeds
            .iter()
            .filter_map(|s| per_seed.get(s).copied())
            .collect();
        if !vals.is_empty() {
            xs.push((step as f64).ln());
            ys.push(vals.iter().sum::<f64>() / vals.len() as f64);
        }
    }
    (xs, ys)
}

fn fixed_of(model: &SigmoidModel) -> Fixed {
    match model {
        SigmoidModel::FourParam => None,
        SigmoidModel::FixedAsymptotes { lower, upper } => Some((*lower, *upper)),
    }
}

/// Multi-start fit: midpoints at 1/6 … 5/6 of the x range, widths of 1/10 and 1/4 of it, asymptotes
/// from the first and last quarters of the points; the smallest residual wins.
fn fit_multistart(x: &[f64], y: &[f64], fixed: Fixed, max_iter: usize) -> LmResult {
    let (xmin, xmax) = (x[0], x[x.len() - 1]);
    let range = (xmax - xmin).max(1e-6);
    let q = (x.len() / 4).max(1);
    let l0 = y[..q].iter().sum::<f64>() / q as f64;
    let u0 = y[y.len() - q..].iter().sum::<f64>() / q as f64;
    let mut best: Option<LmResult> = None;
    for i in 1..=5 {
        for wf in [0.1, 0.25] {
            let m0 = xmin + range * i as f64 / 6.0;
            let s0 = (range * wf).ln();
            let p0 = match fixed {
                None => vec![l0, u0, m0, s0],
                Some(_) => vec![m0, s0],
            };
            let r = fit_from(x, y, fixed, p0, max_iter);
            if best.as_ref().is_none_or(|b| r.rss < b.rss) {
                best = Some(r);
            }
        }
    }
    best.expect("at least one start")
}

fn validate(cfg: &SigmoidConfig) -> Result<()> {
    if !(cfg.level > 0.0 && cfg.level < 1.0) {
        return Err(Error::config(
            "transition.level",
            format!("{} is not in (0, 1)", cfg.level),
        ));
    }
    if cfg.max_iter == 0 {
        return Err(Error::config("transition.max_iter", "must be at least 1"));
    }
    if let SigmoidModel::FixedAsymptotes { lower, upper } = cfg.model {
        if !(lower.is_finite() && upper.is_finite() && lower != upper) {
            return Err(Error::config(
                "transition.model",
                format!("asymptotes {lower} and {upper} must be finite and different"),
            ));
        }
    }
    Ok(())
}

/// (b): the sigmoid fit of PGR against ln(step).
pub fn fit_sigmoid(records: &[StepPgr], cfg: &SigmoidConfig) -> Result<SigmoidFit> {
    validate(cfg)?;
    let mut table: BTreeMap<u64, BTreeMap<u64, f64>> = BTreeMap::new();
    for r in records {
        if let Some(v) = r.pgr {
            if !v.is_finite() {
                return Err(Error::input(
                    "transition",
                    format!("step {} seed {}: PGR {v} is not finite", r.step, r.seed),
                ));
            }
        }
        if r.step == 0 {
            continue;
        }
        if let Some(v) = r.pgr {
            if table.entry(r.step).or_default().insert(r.seed, v).is_some() {
                return Err(Error::input(
                    "transition",
                    format!("step {} seed {} appears twice", r.step, r.seed),
                ));
            }
        }
    }
    let mut seeds: Vec<u64> = table.values().flat_map(|m| m.keys().copied()).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let (x, y) = step_means(&table, &seeds);
    let resample = |rng: &mut Stream| {
        let pick: Vec<u64> = (0..seeds.len())
            .map(|_| seeds[rng.below(seeds.len() as u64) as usize])
            .collect();
        step_means(&table, &pick)
    };
    let boot = (seeds.len() >= 2 && cfg.bootstrap > 0).then_some(Bootstrap {
        stream: "transition-bootstrap",
        method: "seed_bootstrap",
        resample,
    });
    fit_curve(&x, &y, seeds.len(), cfg, "a defined PGR", boot)
}

/// How to resample the curve for the bootstrap.
struct Bootstrap<F> {
    /// Purpose of the random stream.
    stream: &'static str,
    /// `interval_method` of the result.
    method: &'static str,
    /// One resampled curve (x, y).
    resample: F,
}

/// The fit of (x, y) with intervals from `boot` (percentile, refitting from the full fit) or from
/// the covariance when there is no bootstrap.
fn fit_curve<F>(
    x: &[f64],
    y: &[f64],
    n_seeds: usize,
    cfg: &SigmoidConfig,
    what: &str,
    boot: Option<Bootstrap<F>>,
) -> Result<SigmoidFit>
where
    F: FnMut(&mut Stream) -> (Vec<f64>, Vec<f64>),
{
    let fixed = fixed_of(&cfg.model);
    let n_par = if fixed.is_none() { 4 } else { 2 };
    if x.len() <= n_par {
        return Err(Error::input(
            "transition",
            format!(
                "{} steps with {what} (step > 0); the {}-parameter sigmoid needs at least {}",
                x.len(),
                n_par,
                n_par + 1
            ),
        ));
    }
    let fit = fit_multistart(x, y, fixed, cfg.max_iter);
    let (lower, upper, m, s) = match fixed {
        None => (fit.p[0], fit.p[1], fit.p[2], fit.p[3]),
        Some((l, u)) => (l, u, fit.p[0], fit.p[1]),
    };
    let dof = (x.len() - n_par) as f64;
    let sigma2 = fit.rss / dof;
    let cov = invert(&fit.jtj);
    let (im, is) = (n_par - 2, n_par - 1);
    let se_m = cov.as_ref().map(|c| (sigma2 * c[im][im]).max(0.0).sqrt());
    let se_s = cov.as_ref().map(|c| (sigma2 * c[is][is]).max(0.0).sqrt());
    let zq = normal_quantile(0.5 + cfg.level / 2.0);
    let a = (1.0 - cfg.level) / 2.0;

    let mut bootstrap_failed = 0;
    let (mid_iv, width_iv, method) = if let Some(mut b) = boot {
        let mut rng = Stream::new(cfg.seed, b.stream);
        let mut ms = Vec::with_capacity(cfg.bootstrap);
        let mut ws = Vec::with_capacity(cfg.bootstrap);
        for _ in 0..cfg.bootstrap {
            let (bx, by) = (b.resample)(&mut rng);
            if bx.len() <= n_par {
                bootstrap_failed += 1;
                continue;
            }
            let r = fit_from(&bx, &by, fixed, fit.p.clone(), cfg.max_iter);
            ms.push(r.p[im]);
            ws.push(r.p[is].exp());
        }
        if ms.is_empty() {
            (None, None, b.method)
        } else {
            ms.sort_by(f64::total_cmp);
            ws.sort_by(f64::total_cmp);
            let iv = |v: &[f64]| {
                (
                    quantile_sorted(v, a).unwrap(),
                    quantile_sorted(v, 1.0 - a).unwrap(),
                )
            };
            let (mlo, mhi) = iv(&ms);
            (Some((mlo.exp(), mhi.exp())), Some(iv(&ws)), b.method)
        }
    } else {
        (
            se_m.map(|e| ((m - zq * e).exp(), (m + zq * e).exp())),
            se_s.map(|e| ((s - zq * e).exp(), (s + zq * e).exp())),
            "covariance",
        )
    };
    let range = (x[0], x[x.len() - 1]);
    let mid_iv = mid_iv.map(|iv| widen_to_gap(iv, m, s.exp(), x));
    Ok(SigmoidFit {
        lower,
        upper,
        midpoint_log_step: m,
        midpoint_step: m.exp(),
        width: s.exp(),
        midpoint_step_interval: mid_iv,
        width_interval: width_iv,
        interval_method: method.into(),
        se_midpoint_log_step: se_m,
        se_log_width: se_s,
        rmse: (fit.rss / x.len() as f64).sqrt(),
        n_points: x.len(),
        n_seeds,
        midpoint_in_range: m >= range.0 && m <= range.1,
        converged: fit.converged,
        bootstrap_failed,
        not_identified: identification(fit.converged, m, range, mid_iv),
    })
}

/// (c) input: one (step, seed) of the W2S gain: which test examples the w2s student and the weak
/// supervisor got right. Within a seed, every step lists the same test examples in the same order
/// (the seed's test split), which is what lets the bootstrap resample examples across the whole curve.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutcomes {
    pub step: u64,
    pub seed: u64,
    pub w2s: Vec<bool>,
    pub weak: Vec<bool>,
}

/// One seed's gain curve: per observed step (index into the sorted steps) the per-example gains
/// w2s − weak ∈ {−1, 0, 1}.
struct SeedCurve {
    n: usize,
    steps: Vec<usize>,
    gains: Vec<Vec<i8>>,
}

/// (c): the sigmoid fit of the W2S gain (acc_w2s − acc_weak, the mean over seeds) against ln(step).
///
/// Unlike PGR the gain is defined at every step, so the fit sees both plateaus. Intervals: a
/// two-stage percentile bootstrap of the whole curve (draw seeds with replacement; within each drawn
/// seed draw its test examples with replacement, the same draw at every step, since a seed's steps
/// share its test set and weak supervisor; recompute the per-step means; refit). With `bootstrap` =
/// 0, covariance intervals as in [`fit_sigmoid`]. Step 0 is left out (its log is −∞).
pub fn fit_gain_sigmoid(records: &[StepOutcomes], cfg: &SigmoidConfig) -> Result<SigmoidFit> {
    validate(cfg)?;
    let mut by_seed: BTreeMap<u64, BTreeMap<u64, &StepOutcomes>> = BTreeMap::new();
    for r in records {
        if r.w2s.len() != r.weak.len() || r.w2s.is_empty() {
            return Err(Error::input(
                "transition",
                format!(
                    "step {} seed {}: {} w2s and {} weak outcomes (need the same number, ≥ 1)",
                    r.step,
                    r.seed,
                    r.w2s.len(),
                    r.weak.len()
                ),
            ));
        }
        if r.step == 0 {
            continue;
        }
        if by_seed
            .entry(r.seed)
            .or_default()
            .insert(r.step, r)
            .is_some()
        {
            return Err(Error::input(
                "transition",
                format!("step {} seed {} appears twice", r.step, r.seed),
            ));
        }
    }
    let mut steps: Vec<u64> = by_seed.values().flat_map(|m| m.keys().copied()).collect();
    steps.sort_unstable();
    steps.dedup();
    let mut curves = Vec::with_capacity(by_seed.len());
    for (seed, per_step) in &by_seed {
        let n = per_step.values().next().map_or(0, |r| r.w2s.len());
        if let Some(r) = per_step.values().find(|r| r.w2s.len() != n) {
            return Err(Error::input(
                "transition",
                format!(
                    "seed {seed}: step {} has {} test examples, other steps {n} (a seed's steps \
                     must share its test set)",
                    r.step,
                    r.w2s.len()
                ),
            ));
        }
        curves.push(SeedCurve {
            n,
            steps: per_step
                .keys()
                .map(|s| steps.binary_search(s).expect("collected above"))
                .collect(),
            gains: per_step
                .values()
                .map(|r| {
                    r.w2s
                        .iter()
                        .zip(&r.weak)
                        .map(|(&a, &b)| a as i8 - b as i8)
                        .collect()
                })
                .collect(),
        });
    }
    let x_all: Vec<f64> = steps.iter().map(|&s| (s as f64).ln()).collect();
    // Per-step mean over the given (seed, example-count) draws.
    let curve = |draws: &[(usize, Option<&[i32]>)]| {
        let mut sum = vec![0.0; steps.len()];
        let mut cnt = vec![0usize; steps.len()];
        for &(c, counts) in draws {
            let sc = &curves[c];
            for (&t, g) in sc.steps.iter().zip(&sc.gains) {
                let total: i64 = match counts {
                    None => g.iter().map(|&v| v as i64).sum(),
                    Some(k) => g.iter().zip(k).map(|(&v, &w)| (v as i32 * w) as i64).sum(),
                };
                sum[t] += total as f64 / sc.n as f64;
                cnt[t] += 1;
            }
        }
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for t in 0..steps.len() {
            if cnt[t] > 0 {
                xs.push(x_all[t]);
                ys.push(sum[t] / cnt[t] as f64);
            }
        }
        (xs, ys)
    };
    let all: Vec<(usize, Option<&[i32]>)> = (0..curves.len()).map(|c| (c, None)).collect();
    let (x, y) = curve(&all);
    let resample = |rng: &mut Stream| {
        let k = curves.len();
        let counts: Vec<(usize, Vec<i32>)> = (0..k)
            .map(|_| {
                let c = rng.below(k as u64) as usize;
                let n = curves[c].n;
                let mut w = vec![0i32; n];
                for _ in 0..n {
                    w[rng.below(n as u64) as usize] += 1;
                }
                (c, w)
            })
            .collect();
        let draws: Vec<(usize, Option<&[i32]>)> = counts
            .iter()
            .map(|(c, w)| (*c, Some(w.as_slice())))
            .collect();
        curve(&draws)
    };
    let boot = (cfg.bootstrap > 0).then_some(Bootstrap {
        stream: "transition-gain-bootstrap",
        method: "seed_and_example_bootstrap",
        resample,
    });
    fit_curve(&x, &y, curves.len(), cfg, "w2s and weak outcomes", boot)
}

/// The fitted curve's value at `step` (for plotting).
pub fn sigmoid_at(fit: &SigmoidFit, step: f64) -> f64 {
    let p = [fit.lower, fit.upper, fit.midpoint_log_step, fit.width.ln()];
    let mut g = [0.0; 4];
    model(&p, None, step.ln(), &mut g)
}

/// Φ⁻¹(p) by Acklam's rational approximation (relative error < 1.2e-9; plenty for an interval's z).
pub(crate) fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let p_low = 0.02425;
    if p < p_low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - p_low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_values() {
        assert!((normal_quantile(0.975) - 1.959963984540054).abs() < 1e-8);
        assert!(normal_quantile(0.5).abs() < 1e-9);
        assert!((normal_quantile(0.05) + 1.6448536269514729).abs() < 1e-8);
    }
}

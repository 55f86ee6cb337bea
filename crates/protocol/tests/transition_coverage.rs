//! Validation of the transition estimator of the sweep ([`fit_gain_sigmoid`]) on synthetic curves with
//! a known midpoint and noise like the quick checkpoint-lab reproduction's (3 seeds, 790 test examples
//! per seed, weak accuracy 0.662, a gain from −0.08 at initialization to +0.035 late, the quick
//! reproduction's checkpoint steps): over 200 independent replicates the 95 % interval of the
//! midpoint must cover the truth in 90–98 % of them, with every replicate identified (the true
//! midpoint lies well inside the steps), and a curve with its midpoint beyond the last step must be
//! reported as not identified. The measured coverage is in BENCHMARKS.md.
//!
//! Noise model, per replicate and seed: a seed offset of the gain δ ~ N(0, 0.01²) (a seed has its own
//! weak supervisor and split), a (step, seed) training noise e ~ N(0, 0.008²), and per example a
//! latent difficulty u that the weak supervisor and the student each use with probability 0.6 (else a
//! fresh uniform), so the outcomes are correlated between weak and w2s and across steps, as a student
//! trained on its supervisor's labels is.

use w2sg_protocol::rng::Stream;
use w2sg_protocol::{fit_gain_sigmoid, SigmoidConfig, StepOutcomes};

const WEAK: f64 = 0.662;
const LOWER: f64 = -0.08;
const UPPER: f64 = 0.035;
const WIDTH: f64 = 0.5;
const N_TEST: usize = 790;
const SEEDS: u64 = 3;

/// The quick reproduction's checkpoints: 0, 1, 2, 4, …, 512 and every multiple of 40 up to 1200.
fn quick_steps() -> Vec<u64> {
    let mut s: Vec<u64> = std::iter::once(0)
        .chain((0..10).map(|k| 1u64 << k))
        .collect();
    s.extend((1..=30).map(|k| 40 * k));
    s.sort_unstable();
    s.dedup();
    s
}

fn gain(step: u64, midpoint: f64) -> f64 {
    let x = (step.max(1) as f64).ln();
    let z = if step == 0 {
        f64::NEG_INFINITY
    } else {
        (x - midpoint.ln()) / WIDTH
    };
    LOWER + (UPPER - LOWER) / (1.0 + (-z).exp())
}

fn replicate(midpoint: f64, rng: &mut Stream) -> Vec<StepOutcomes> {
    let steps = quick_steps();
    let mut out = Vec::new();
    for seed in 0..SEEDS {
        let u: Vec<f64> = (0..N_TEST).map(|_| rng.uniform()).collect();
        let draw = |ui: f64, rng: &mut Stream| {
            if rng.uniform() < 0.6 {
                ui
            } else {
                rng.uniform()
            }
        };
        let weak: Vec<bool> = u.iter().map(|&ui| draw(ui, rng) < WEAK).collect();
        let delta = 0.01 * rng.normal();
        for &step in &steps {
            let q = WEAK + gain(step, midpoint) + delta + 0.008 * rng.normal();
            let w2s: Vec<bool> = u.iter().map(|&ui| draw(ui, rng) < q).collect();
            out.push(StepOutcomes {
                step,
                seed,
                w2s,
                weak: weak.clone(),
            });
        }
    }
    out
}

#[test]
fn the_95_percent_interval_covers_a_known_midpoint_in_90_to_98_percent_of_replicates() {
    let truth = 70.0;
    let replicates = 200;
    let cfg = SigmoidConfig {
        bootstrap: 200,
        ..SigmoidConfig::default()
    };
    let mut rng = Stream::new(2024, "transition-coverage");
    let (mut covered, mut identified) = (0, 0);
    let mut log_errors = Vec::new();
    for r in 0..replicates {
        let recs = replicate(truth, &mut rng);
        let fit = fit_gain_sigmoid(
            &recs,
            &SigmoidConfig {
                seed: r,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert_eq!(fit.interval_method, "seed_and_example_bootstrap");
        assert_eq!((fit.n_points, fit.n_seeds), (quick_steps().len() - 1, 3));
        if let (None, Some((lo, hi))) = (&fit.not_identified, fit.midpoint_step_interval) {
            identified += 1;
            assert!(lo < hi && lo <= fit.midpoint_step && fit.midpoint_step <= hi);
            if lo <= truth && truth <= hi {
                covered += 1;
            }
            log_errors.push((fit.midpoint_step / truth).ln());
        }
    }
    let coverage = covered as f64 / replicates as f64;
    let n = log_errors.len() as f64;
    let bias = log_errors.iter().sum::<f64>() / n;
    let spread = (log_errors.iter().map(|e| (e - bias).powi(2)).sum::<f64>() / n).sqrt();
    eprintln!(
        "coverage {covered}/{replicates} = {coverage:.3}; identified {identified}; \
         ln(midpoint/truth): mean {bias:.4}, sd {spread:.4}"
    );
    assert_eq!(
        identified, replicates,
        "the true midpoint is well inside the steps"
    );
    assert!((0.90..=0.98).contains(&coverage), "coverage {coverage}");
    // The point estimate is close to unbiased on the log scale (well under its spread).
    assert!(bias.abs() < 0.5 * spread, "bias {bias} vs sd {spread}");
}

#[test]
fn a_midpoint_beyond_the_last_step_is_not_identified() {
    let mut rng = Stream::new(7, "transition-unidentified");
    // Midpoint at step 10⁵, the last step 1200: the data show only the lower plateau and the start
    // of the rise. Whatever the fit does, no midpoint outside [1, 1200] and no degenerate interval may
    // be reported as identified.
    for r in 0..5 {
        let recs = replicate(1e5, &mut rng);
        let fit = fit_gain_sigmoid(
            &recs,
            &SigmoidConfig {
                seed: r,
                ..SigmoidConfig::default()
            },
        )
        .unwrap();
        if fit.identified() {
            let (lo, hi) = fit.midpoint_step_interval.unwrap();
            assert!(
                fit.midpoint_step >= 1.0 && fit.midpoint_step <= 1200.0,
                "{fit:?}"
            );
            assert!(lo < hi, "{fit:?}");
        } else {
            assert!(fit.not_identified.is_some());
        }
    }
    // A flat curve beyond the steps: no information at all about where it rises.
    let mut recs = replicate(1e9, &mut rng);
    for r in &mut recs {
        r.w2s = r.weak.clone();
    }
    let fit = fit_gain_sigmoid(&recs, &SigmoidConfig::default()).unwrap();
    assert!(!fit.identified(), "{fit:?}");
    let why = fit.not_identified.unwrap();
    assert!(
        why.contains("outside the observed steps") || why.contains("degenerate interval"),
        "{why}"
    );
}

#[test]
fn bad_outcomes_are_named() {
    let recs = vec![
        StepOutcomes {
            step: 1,
            seed: 0,
            w2s: vec![true; 3],
            weak: vec![true; 3],
        },
        StepOutcomes {
            step: 2,
            seed: 0,
            w2s: vec![true; 4],
            weak: vec![true; 4],
        },
    ];
    let e = fit_gain_sigmoid(&recs, &SigmoidConfig::default()).unwrap_err();
    assert!(
        e.to_string().contains("seed 0: step 2 has 4 test examples"),
        "{e}"
    );
    let e = fit_gain_sigmoid(&recs[..1], &SigmoidConfig::default()).unwrap_err();
    assert!(
        e.to_string().contains("1 steps with w2s and weak outcomes"),
        "{e}"
    );
}

#[test]
fn a_jump_between_two_steps_is_located_only_to_within_them() {
    // Gain −0.05 up to step 2 and +0.05 from step 4 on: the data say only that the midpoint lies
    // between steps 2 and 4, and the interval must say no more.
    let n = 400;
    let weak: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
    let mut recs = Vec::new();
    for seed in 0..3 {
        for step in [1u64, 2, 4, 8, 16, 32, 64] {
            let extra = if step >= 4 { 1 } else { -1 };
            // w2s right on the weak-right examples, plus (minus) 20 of the others (of them): ±0.05.
            let w2s: Vec<bool> = (0..n)
                .map(|i| {
                    if extra > 0 {
                        i % 2 == 0 || i % 20 == 1
                    } else {
                        i % 2 == 0 && i % 20 != 0
                    }
                })
                .collect();
            recs.push(StepOutcomes {
                step,
                seed,
                w2s,
                weak: weak.clone(),
            });
        }
    }
    let fit = fit_gain_sigmoid(&recs, &SigmoidConfig::default()).unwrap();
    assert!(
        (fit.lower + 0.05).abs() < 1e-6 && (fit.upper - 0.05).abs() < 1e-6,
        "{fit:?}"
    );
    assert!(
        fit.midpoint_step > 2.0 && fit.midpoint_step < 4.0,
        "{fit:?}"
    );
    let (lo, hi) = fit.midpoint_step_interval.unwrap();
    assert!(lo <= 2.0 + 1e-9 && hi >= 4.0 - 1e-9, "[{lo}, {hi}]");
    assert!(fit.identified(), "{:?}", fit.not_identified);
}

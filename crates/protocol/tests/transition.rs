//! The phase transition: the first sustained step on hand-made sequences, and the sigmoid fit on
//! synthetic PGR curves with a known midpoint and width.

use w2sg_protocol::rng::Stream;
use w2sg_protocol::transition::{sigmoid_at, StepSummary};
use w2sg_protocol::{
    first_sustained_step, fit_sigmoid, SigmoidConfig, SigmoidModel, StepDiff, StepPgr,
};

fn diffs(values: &[(u64, f64, f64)]) -> Vec<StepDiff> {
    values
        .iter()
        .map(|&(step, diff, se)| StepDiff {
            step,
            seed: 0,
            diff,
            se,
        })
        .collect()
}

#[test]
fn first_sustained_step_by_hand() {
    // 2 SE = 0.02: beats at 10 (0.03), not at 100 (0.01), then 1000, 2000, 5000 all above.
    let r = first_sustained_step(
        &diffs(&[
            (1, -0.02, 0.01),
            (10, 0.03, 0.01),
            (100, 0.01, 0.01),
            (1000, 0.025, 0.01),
            (2000, 0.05, 0.01),
            (5000, 0.04, 0.01),
        ]),
        2.0,
    )
    .unwrap();
    assert_eq!(r.step, Some(1000));
    assert_eq!(r.steps.iter().filter(|s| s.beats).count(), 4);
    // Exactly 2 SE is not "more than".
    let r = first_sustained_step(&diffs(&[(1, 0.05, 0.01), (2, 0.02, 0.01)]), 2.0).unwrap();
    assert_eq!(r.step, None);
    // Order of the input does not matter.
    let r = first_sustained_step(
        &diffs(&[(5000, 0.04, 0.01), (1, -0.02, 0.01), (2000, 0.05, 0.01)]),
        2.0,
    )
    .unwrap();
    assert_eq!(r.step, Some(2000));
}

#[test]
fn seeds_combine_with_the_conservative_standard_error() {
    // Step 10: seeds 0.04 and 0.00 (SE 0.005 each): mean 0.02, between-seed SE 0.02 > within
    // √(2·0.005²)/2 = 0.0035 → 0.02 is not > 2·0.02. Step 20: 0.05 and 0.05 → SE = within 0.0035.
    let recs = vec![
        StepDiff {
            step: 10,
            seed: 0,
            diff: 0.04,
            se: 0.005,
        },
        StepDiff {
            step: 10,
            seed: 1,
            diff: 0.00,
            se: 0.005,
        },
        StepDiff {
            step: 20,
            seed: 0,
            diff: 0.05,
            se: 0.005,
        },
        StepDiff {
            step: 20,
            seed: 1,
            diff: 0.05,
            se: 0.005,
        },
    ];
    let r = first_sustained_step(&recs, 2.0).unwrap();
    assert_eq!(r.step, Some(20));
    let s10: &StepSummary = &r.steps[0];
    assert!((s10.mean - 0.02).abs() < 1e-15 && (s10.se - 0.02).abs() < 1e-12);
    assert!((r.steps[1].se - (2.0f64 * 0.005 * 0.005).sqrt() / 2.0).abs() < 1e-15);
    let mut dup = recs.clone();
    dup.push(recs[0].clone());
    assert!(first_sustained_step(&dup, 2.0)
        .unwrap_err()
        .to_string()
        .contains("step 10 seed 0 appears twice"));
}

/// PGR(step) = L + (U − L) σ((ln step − ln m)/w) with L = −0.6, U = 0.4, midpoint 2000, w = 0.7,
/// at 40 log-spaced steps from 10 to 10⁶, plus N(0, 0.05²) noise per (step, seed), 6 seeds.
fn synthetic_pgr(seeds: u64, noise: f64) -> Vec<StepPgr> {
    let mut out = Vec::new();
    let mut rng = Stream::new(11, "transition");
    for i in 0..40 {
        let step = (10f64 * 10f64.powf(5.0 * i as f64 / 39.0)).round() as u64;
        let x = (step as f64).ln();
        let clean = -0.6 + 1.0 / (1.0 + (-(x - 2000f64.ln()) / 0.7).exp());
        for seed in 0..seeds {
            out.push(StepPgr {
                step,
                seed,
                pgr: Some(clean + noise * rng.normal()),
            });
        }
    }
    // Step 0 and undefined values are skipped.
    out.push(StepPgr {
        step: 0,
        seed: 0,
        pgr: Some(5.0),
    });
    out.push(StepPgr {
        step: 50,
        seed: 99,
        pgr: None,
    });
    out
}

#[test]
fn sigmoid_fit_recovers_a_known_transition() {
    let recs = synthetic_pgr(6, 0.05);
    let fit = fit_sigmoid(&recs, &SigmoidConfig::default()).unwrap();
    assert!(fit.converged && fit.midpoint_in_range);
    assert_eq!(fit.interval_method, "seed_bootstrap");
    assert_eq!((fit.n_points, fit.n_seeds), (40, 6));
    assert!((fit.midpoint_step / 2000.0 - 1.0).abs() < 0.15, "{fit:?}");
    assert!((fit.width - 0.7).abs() < 0.12, "{fit:?}");
    assert!(
        (fit.lower + 0.6).abs() < 0.05 && (fit.upper - 0.4).abs() < 0.05,
        "{fit:?}"
    );
    let (lo, hi) = fit.midpoint_step_interval.unwrap();
    assert!(lo < 2000.0 && 2000.0 < hi, "{fit:?}");
    let (wl, wh) = fit.width_interval.unwrap();
    assert!(wl < 0.7 && 0.7 < wh, "{fit:?}");
    // Residual close to the per-step noise 0.05/√6.
    assert!(fit.rmse < 0.05, "{}", fit.rmse);
    assert!((sigmoid_at(&fit, fit.midpoint_step) - (fit.lower + fit.upper) / 2.0).abs() < 1e-12);

    // Fixed asymptotes at the true values: two parameters, tighter.
    let cfg = SigmoidConfig {
        model: SigmoidModel::FixedAsymptotes {
            lower: -0.6,
            upper: 0.4,
        },
        ..Default::default()
    };
    let fixed = fit_sigmoid(&recs, &cfg).unwrap();
    assert!(
        (fixed.midpoint_step / 2000.0 - 1.0).abs() < 0.1,
        "{fixed:?}"
    );
    assert!((fixed.width - 0.7).abs() < 0.08, "{fixed:?}");

    // One seed: covariance (Wald) intervals, still covering the truth.
    let one: Vec<StepPgr> = recs.iter().filter(|r| r.seed == 0).cloned().collect();
    let single = fit_sigmoid(&one, &SigmoidConfig::default()).unwrap();
    assert_eq!(single.interval_method, "covariance");
    let (lo, hi) = single.midpoint_step_interval.unwrap();
    assert!(lo < 2000.0 && 2000.0 < hi, "{single:?}");
    assert!(single.se_midpoint_log_step.unwrap() > 0.0);

    // Deterministic.
    assert_eq!(fit_sigmoid(&recs, &SigmoidConfig::default()).unwrap(), fit);
}

#[test]
fn sigmoid_fit_rejects_too_few_points() {
    let recs: Vec<StepPgr> = (1..=4)
        .map(|s| StepPgr {
            step: s * 10,
            seed: 0,
            pgr: Some(s as f64 / 10.0),
        })
        .collect();
    let e = fit_sigmoid(&recs, &SigmoidConfig::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("4 steps") && e.contains("at least 5"), "{e}");
    let cfg = SigmoidConfig {
        model: SigmoidModel::FixedAsymptotes {
            lower: 0.0,
            upper: 0.0,
        },
        ..Default::default()
    };
    assert!(fit_sigmoid(&recs, &cfg).is_err());
}

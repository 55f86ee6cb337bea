//! PGR on hand-computed cases, its undefined case, the seed-level standard error, and the bootstrap
//! interval against the delta method and against a two-seed case whose answer is known.

use w2sg_protocol::pgr::{mean_and_se, pgr, pgr_value, PgrConfig, SeedOutcomes};
use w2sg_protocol::rng::Stream;

fn pattern(n: usize, correct: &[usize]) -> Vec<bool> {
    (0..n).map(|i| correct.contains(&i)).collect()
}

#[test]
fn single_seed_by_hand() {
    // n = 10: weak right on 0..6 (0.6), w2s on 0..7 (0.7), ceiling on 0..9 (0.9).
    let o = SeedOutcomes {
        seed: 0,
        weak: pattern(10, &[0, 1, 2, 3, 4, 5]),
        w2s: pattern(10, &[0, 1, 2, 3, 4, 5, 6]),
        ceiling: pattern(10, &[0, 1, 2, 3, 4, 5, 6, 7, 8]),
    };
    let e = pgr(
        &[o],
        &PgrConfig {
            bootstrap: 0,
            ..Default::default()
        },
    )
    .unwrap();
    assert!((e.acc_weak - 0.6).abs() < 1e-15 && (e.acc_ceiling - 0.9).abs() < 1e-15);
    assert!((e.pgr.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    // d = ceiling − weak = [0 ×6, 1 ×3, 0]: mean 0.3, population variance 0.3 − 0.09 = 0.21.
    assert!((e.gap - 0.3).abs() < 1e-15);
    assert!((e.gap_se - (0.21f64 / 10.0).sqrt()).abs() < 1e-15);
    assert_eq!(e.interval, None);
    assert_eq!(pgr_value(0.6, 0.7, 0.6), None);
}

#[test]
fn undefined_when_the_gap_is_within_its_standard_error() {
    // d = [+1, +1, −1, 0 ×7]: gap 0.1, variance 0.3 − 0.01 = 0.29, SE √0.029 ≈ 0.170 > 0.1.
    let o = SeedOutcomes {
        seed: 0,
        weak: pattern(10, &[2, 3, 4, 5, 6]),
        w2s: pattern(10, &[0, 2, 3, 4, 5, 6]),
        ceiling: pattern(10, &[0, 1, 3, 4, 5, 6]),
    };
    let e = pgr(std::slice::from_ref(&o), &PgrConfig::default()).unwrap();
    assert!((e.gap - 0.1).abs() < 1e-15);
    assert!((e.gap_se - 0.029f64.sqrt()).abs() < 1e-15);
    assert_eq!(e.pgr, None);
    assert_eq!(e.interval, None);
    // With the threshold at 0 standard errors it is defined: (0.6 − 0.5)/(0.6 − 0.5) = 1.
    let e = pgr(
        &[o],
        &PgrConfig {
            min_gap_se: 0.0,
            bootstrap: 0,
            ..Default::default()
        },
    )
    .unwrap();
    assert!((e.pgr.unwrap() - 1.0).abs() < 1e-12);
}

#[test]
fn seed_standard_error_by_hand() {
    // Two seeds with gaps 0.3 and 0.1 and within-seed SEs 0.02 and 0.04: within = √(0.0004 +
    // 0.0016)/2 = 0.02236, between = sd(0.3, 0.1)/√2 = 0.14142/1.41421 = 0.1 → SE 0.1.
    let (m, se) = mean_and_se(&[0.3, 0.1], &[0.02, 0.04]);
    assert!((m - 0.2).abs() < 1e-15 && (se - 0.1).abs() < 1e-12);
    let (m, se) = mean_and_se(&[0.2, 0.2], &[0.02, 0.04]);
    assert!((m - 0.2).abs() < 1e-15 && (se - 0.002f64.sqrt() / 2.0).abs() < 1e-12);
    let (_, se) = mean_and_se(&[0.2], &[0.03]);
    assert!((se - 0.03).abs() < 1e-15);
}

fn simulate(n: usize, seed: u64, p_weak: f64, p_w2s: f64, p_ceil: f64) -> SeedOutcomes {
    // Correlated correctness: a shared difficulty u, each model right when u < its accuracy (plus a
    // little independent noise).
    let mut rng = Stream::new(seed, "simulate");
    let mut o = SeedOutcomes {
        seed,
        weak: vec![],
        w2s: vec![],
        ceiling: vec![],
    };
    for _ in 0..n {
        let u = rng.uniform();
        let flip = |r: &mut Stream, p: f64| {
            if r.uniform() < 0.1 {
                r.uniform() < p
            } else {
                u < p
            }
        };
        o.weak.push(flip(&mut rng, p_weak));
        o.w2s.push(flip(&mut rng, p_w2s));
        o.ceiling.push(flip(&mut rng, p_ceil));
    }
    o
}

#[test]
fn bootstrap_interval_matches_the_delta_method() {
    let o = simulate(4000, 1, 0.65, 0.75, 0.85);
    let cfg = PgrConfig {
        bootstrap: 2000,
        seed: 7,
        ..Default::default()
    };
    let e = pgr(std::slice::from_ref(&o), &cfg).unwrap();
    let r = e.pgr.unwrap();
    // Delta method for R = mean(a)/mean(g), a = w2s − weak, g = ceiling − weak per example.
    let n = o.weak.len() as f64;
    let a: Vec<f64> = (0..o.weak.len())
        .map(|i| o.w2s[i] as i32 as f64 - o.weak[i] as i32 as f64)
        .collect();
    let g: Vec<f64> = (0..o.weak.len())
        .map(|i| o.ceiling[i] as i32 as f64 - o.weak[i] as i32 as f64)
        .collect();
    let (ma, mg) = (a.iter().sum::<f64>() / n, g.iter().sum::<f64>() / n);
    let cov = |x: &[f64], mx: f64, y: &[f64], my: f64| {
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - mx) * (q - my))
            .sum::<f64>()
            / n
    };
    let var_r = (cov(&a, ma, &a, ma) - 2.0 * r * cov(&a, ma, &g, mg) + r * r * cov(&g, mg, &g, mg))
        / (n * mg * mg);
    let half = 1.959964 * var_r.sqrt();
    let (lo, hi) = e.interval.unwrap();
    assert!(lo < r && r < hi);
    let got = (hi - lo) / 2.0;
    assert!(
        (got / half - 1.0).abs() < 0.15,
        "bootstrap half-width {got}, delta method {half}"
    );
    // Reproducible with the same seed, different with another.
    assert_eq!(
        pgr(std::slice::from_ref(&o), &cfg).unwrap().interval,
        e.interval
    );
    let other = pgr(&[o], &PgrConfig { seed: 8, ..cfg }).unwrap();
    assert_ne!(other.interval, e.interval);
}

#[test]
fn bootstrap_resamples_seeds() {
    // Seed A: w2s = weak (PGR 0); seed B: w2s = ceiling (PGR 1); same large test set otherwise.
    // Resampling the two seeds gives PGR ≈ 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4, so the 95 %
    // interval runs from about 0 to about 1; the point estimate is 1/2.
    let base = simulate(3000, 2, 0.6, 0.6, 0.9);
    let a = SeedOutcomes {
        seed: 0,
        w2s: base.weak.clone(),
        ..base.clone()
    };
    let b = SeedOutcomes {
        seed: 1,
        w2s: base.ceiling.clone(),
        ..base.clone()
    };
    let e = pgr(
        &[a, b],
        &PgrConfig {
            bootstrap: 1000,
            ..Default::default()
        },
    )
    .unwrap();
    assert!((e.pgr.unwrap() - 0.5).abs() < 1e-12);
    let (lo, hi) = e.interval.unwrap();
    assert!(lo.abs() < 0.06 && (hi - 1.0).abs() < 0.06, "({lo}, {hi})");
    assert_eq!(e.n_seeds, 2);
    assert_eq!(e.n_test, 6000);
    // Mismatched lengths are an error naming the seed.
    let bad = SeedOutcomes {
        seed: 5,
        weak: vec![true],
        w2s: vec![],
        ceiling: vec![true],
    };
    let err = pgr(&[bad], &PgrConfig::default()).unwrap_err().to_string();
    assert!(err.contains("seed 5"), "{err}");
}

//! Statistical and determinism tests of `SimRng`'s Gaussian sampler.
//!
//! All tests use fixed seeds, so they are deterministic; tolerances are 5 standard errors (or a 0.1%
//! critical value), so a correct sampler passes with overwhelming probability for any seed, and each
//! statistic is shown to reject a slightly wrong distribution (`*_reject_*` tests), so the tests can fail.
//! Run them optimized (`cargo test --release`): they draw ~1.7·10⁸ normals.

use w2sg_sim::rng::{Purpose, SimRng};

/// Draws `n` normals with `fill_normal` in buffers of 1000 (the simulator's pattern), handing each
/// buffer to `visit`.
fn for_each_buffer(seed: u64, n: usize, mut visit: impl FnMut(&[f64])) {
    let mut rng = SimRng::from_seed(seed);
    let mut buf = vec![0.0; 1000];
    for _ in 0..n / 1000 {
        rng.fill_normal(&mut buf);
        visit(&buf);
    }
}

fn fill_draws(seed: u64, n: usize) -> Vec<f64> {
    let mut x = Vec::with_capacity(n);
    for_each_buffer(seed, n, |buf| x.extend_from_slice(buf));
    x
}

fn single_draws(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = SimRng::from_seed(seed);
    (0..n).map(|_| rng.normal()).collect()
}

/// erf(z) for z ≥ 0 from the all-positive series (2/√π)·e^(-z²)·Σ 2ⁿ z^(2n+1) / (1·3···(2n+1)),
/// accurate to ~1e-16 absolute; 1 beyond z = 6.5, where 1 - erf < 1e-19.
fn erf(z: f64) -> f64 {
    if z < 0.0 {
        return -erf(-z);
    }
    if z > 6.5 {
        return 1.0;
    }
    let (mut term, mut sum, mut n) = (z, z, 0.0);
    while term > 1e-17 * sum {
        n += 1.0;
        term *= 2.0 * z * z / (2.0 * n + 1.0);
        sum += term;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt() * (-z * z).exp()
}

/// The standard normal CDF.
fn phi(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// P(|Z| > t).
fn two_sided_tail(t: f64) -> f64 {
    2.0 * (1.0 - phi(t))
}

/// z-scores of the sample moments E[x], E[x²], E[x³], E[x⁴] against N(0, 1)'s 0, 1, 0, 3, using
/// their exact standard errors √(Var(xᵏ)/n) with Var = 1, 2, 15, 96. (These pin down mean, variance,
/// skewness and kurtosis.)
fn moment_z(x: impl IntoIterator<Item = f64>) -> [f64; 4] {
    let (mut s, mut n) = ([0.0; 4], 0.0);
    for v in x {
        n += 1.0;
        let v2 = v * v;
        s[0] += v;
        s[1] += v2;
        s[2] += v2 * v;
        s[3] += v2 * v2;
    }
    let (target, var) = ([0.0, 1.0, 0.0, 3.0], [1.0, 2.0, 15.0, 96.0]);
    std::array::from_fn(|k| (s[k] / n - target[k]) / (var[k] / n).sqrt())
}

/// √n · sup |F_n - Φ| (Kolmogorov–Smirnov).
fn ks_statistic(x: &[f64]) -> f64 {
    let mut x = x.to_vec();
    x.sort_by(f64::total_cmp);
    let n = x.len() as f64;
    let d = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let p = phi(v);
            ((i + 1) as f64 / n - p).max(p - i as f64 / n)
        })
        .fold(0.0, f64::max);
    d * n.sqrt()
}

/// The Kolmogorov distribution's 0.1% critical value: P(√n·D > 1.9495) = 0.001 for large n.
const KS_CRIT_001: f64 = 1.9495;

/// Pearson χ² of a histogram with bins of width 0.05 on [-4, 4] plus the two tails (162 bins, smallest
/// expected count ~130 for n = 2·10⁷), and its 0.1% critical value (Wilson–Hilferty).
fn chi_square(x: impl IntoIterator<Item = f64>) -> (f64, f64) {
    const W: f64 = 0.05;
    const INNER: usize = 160;
    let mut counts = vec![0u64; INNER + 2];
    for v in x {
        let b = if v < -4.0 {
            0
        } else if v >= 4.0 {
            INNER + 1
        } else {
            (((v + 4.0) / W) as usize).min(INNER - 1) + 1
        };
        counts[b] += 1;
    }
    let edge = |b: usize| match b {
        0 => f64::NEG_INFINITY,
        b if b > INNER + 1 => f64::INFINITY,
        b => -4.0 + (b - 1) as f64 * W,
    };
    let cdf = |t: f64| match t {
        t if t == f64::NEG_INFINITY => 0.0,
        t if t == f64::INFINITY => 1.0,
        t => phi(t),
    };
    let n = counts.iter().sum::<u64>() as f64;
    let stat = counts
        .iter()
        .enumerate()
        .map(|(b, &c)| {
            let e = n * (cdf(edge(b + 1)) - cdf(edge(b)));
            (c as f64 - e).powi(2) / e
        })
        .sum();
    let dof = (counts.len() - 1) as f64;
    let z = 3.0902; // standard normal 0.999 quantile
    let crit = dof * (1.0 - 2.0 / (9.0 * dof) + z * (2.0 / (9.0 * dof)).sqrt()).powi(3);
    (stat, crit)
}

/// `count` of |x| > t among `n` draws, minus its expectation, in binomial standard errors.
fn tail_z(count: u64, n: usize, t: f64) -> f64 {
    let (count, n) = (count as f64, n as f64);
    let p = two_sided_tail(t);
    (count - n * p) / (n * p * (1.0 - p)).sqrt()
}

/// Sample correlation of (f(x_i), f(x_{i+lag})), in units of its null standard error 1/√n.
fn lag_corr_z(x: &[f64], lag: usize, f: impl Fn(f64) -> f64) -> f64 {
    let n = (x.len() - lag) as f64;
    let mean = x.iter().map(|&v| f(v)).sum::<f64>() / x.len() as f64;
    let var = x.iter().map(|&v| (f(v) - mean).powi(2)).sum::<f64>() / x.len() as f64;
    let cov = x
        .windows(lag + 1)
        .map(|w| (f(w[0]) - mean) * (f(w[lag]) - mean))
        .sum::<f64>()
        / n;
    cov / var * n.sqrt()
}

#[test]
fn cdf_helper_is_accurate() {
    for (x, expected) in [
        (0.0, 0.5),
        (1.0, 0.841_344_746_068_542_9),
        (-2.0, 0.022_750_131_948_179_195),
        (3.5, 0.999_767_370_920_964_2),
    ] {
        assert!((phi(x) - expected).abs() < 1e-15, "phi({x}) = {}", phi(x));
    }
    assert!((two_sided_tail(4.0) / 6.334_248_366_623_996e-5 - 1.0).abs() < 1e-9);
}

#[test]
fn moments_match_standard_normal() {
    let mut x = Vec::with_capacity(20_000_000);
    for_each_buffer(1, 20_000_000, |buf| x.extend_from_slice(buf));
    let z = moment_z(x.iter().copied());
    assert!(
        z.iter().all(|z| z.abs() < 5.0),
        "fill_normal: moment z-scores {z:?}"
    );
    let z = moment_z(single_draws(2, 10_000_000));
    assert!(
        z.iter().all(|z| z.abs() < 5.0),
        "normal: moment z-scores {z:?}"
    );
    let z = moment_z(x.iter().map(|v| v * 1.003));
    assert!(
        z[1] > 5.0,
        "σ = 1.003 not detected: variance z-score {}",
        z[1]
    );
}

#[test]
fn kolmogorov_smirnov_accepts() {
    for (name, x) in [
        ("fill_normal", fill_draws(3, 1_000_000)),
        ("normal", single_draws(4, 1_000_000)),
    ] {
        let k = ks_statistic(&x);
        assert!(k < KS_CRIT_001, "{name}: √n·D = {k}");
    }
}

#[test]
fn kolmogorov_smirnov_rejects_perturbed_normal() {
    let x = fill_draws(3, 1_000_000);
    let scaled: Vec<f64> = x.iter().map(|v| v * 1.02).collect();
    let shifted: Vec<f64> = x.iter().map(|v| v + 0.01).collect();
    assert!(ks_statistic(&scaled) > KS_CRIT_001, "σ = 1.02 not detected");
    assert!(
        ks_statistic(&shifted) > KS_CRIT_001,
        "μ = 0.01 not detected"
    );
}

#[test]
fn histogram_chi_square() {
    let x = fill_draws(5, 20_000_000);
    let (stat, crit) = chi_square(x.iter().copied());
    assert!(stat < crit, "χ² = {stat}, 0.1% critical value {crit}");
    let (stat, crit) = chi_square(x.iter().map(|v| v * 1.003));
    assert!(
        stat > crit,
        "σ = 1.003 not detected: χ² = {stat}, critical {crit}"
    );
}

/// |z| > 3 and > 4 go mostly through the wedges of the outer layers; > 4.5 and > 5 only through the
/// tail algorithm (the ziggurat's tail starts at 4.04).
#[test]
fn tail_frequencies() {
    const N: usize = 100_000_000;
    let thresholds = [3.0, 4.0, 4.5, 5.0];
    let (mut counts, mut scaled_count) = ([0u64; 4], 0);
    for_each_buffer(6, N, |buf| {
        for &v in buf {
            let a = v.abs();
            for (c, &t) in counts.iter_mut().zip(&thresholds) {
                *c += (a > t) as u64;
            }
            scaled_count += (a * 1.01 > 4.0) as u64;
        }
    });
    for (&c, &t) in counts.iter().zip(&thresholds) {
        let z = tail_z(c, N, t);
        assert!(z.abs() < 5.0, "P(|z| > {t}): {z} standard errors off");
    }
    let z = tail_z(scaled_count, N, 4.0);
    assert!(z > 5.0, "σ = 1.01 not detected in P(|z| > 4): {z}");
}

/// Neighbours in a buffer come from different lanes; lag 8 is the same lane's next word, lag 1000 the same
/// position in the next buffer. Squares catch dependence that leaves signs independent.
#[test]
fn no_serial_correlation() {
    let x = fill_draws(7, 10_000_000);
    for lag in (1..=16).chain([999, 1000, 1001]) {
        let z = lag_corr_z(&x, lag, |v| v);
        let z2 = lag_corr_z(&x, lag, |v| v * v);
        assert!(
            z.abs() < 5.0 && z2.abs() < 5.0,
            "lag {lag}: {z}, squares {z2}"
        );
    }
}

#[test]
fn same_seed_same_sequence() {
    let run = |seed: u64| {
        let mut rng = SimRng::stream(seed, 3, Purpose::Sgd);
        let mut out = Vec::new();
        for len in [1000, 7, 1, 4096, 13] {
            let mut x = vec![0.0; len];
            rng.fill_normal(&mut x);
            out.extend(x);
            out.push(rng.normal());
            out.push(rng.uniform());
        }
        out.iter().map(|v| v.to_bits()).collect::<Vec<u64>>()
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

#[test]
fn streams_are_distinct() {
    let first = |rng: &mut SimRng| {
        let mut x = vec![0.0; 64];
        rng.fill_normal(&mut x);
        x
    };
    let a = first(&mut SimRng::stream(1, 0, Purpose::Sgd));
    assert_ne!(a, first(&mut SimRng::stream(1, 1, Purpose::Sgd)));
    assert_ne!(a, first(&mut SimRng::stream(1, 0, Purpose::TestSet)));
    assert_ne!(a, first(&mut SimRng::stream(2, 0, Purpose::Sgd)));
}

#[test]
fn independent_of_thread_count() {
    let draw = |run: u64| {
        let mut rng = SimRng::stream(5, run, Purpose::Pretrain);
        let mut x = vec![0.0; 10_000];
        rng.fill_normal(&mut x);
        x
    };
    let sequential: Vec<Vec<f64>> = (0..8).map(draw).collect();
    let parallel: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|run| s.spawn(move || draw(run))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sequential, parallel);
}

/// Buffers that are multiples of 8 long split freely (see the consumption note in `rng`'s docs).
#[test]
fn fill_splits_at_multiples_of_eight() {
    let mut a = SimRng::from_seed(8);
    let mut b = a.clone();
    let mut whole = vec![0.0; 4096];
    a.fill_normal(&mut whole);
    let mut parts = vec![0.0; 4096];
    let (p, q) = parts.split_at_mut(1024);
    b.fill_normal(p);
    b.fill_normal(q);
    assert_eq!(whole, parts);
}

#[test]
fn unit_vector_has_unit_norm() {
    let v = SimRng::from_seed(10).unit_vector(3000);
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-12);
}

/// Pins the output sequence, so that a change to seeding, bit layout or tables cannot go unnoticed.
/// These twelve draws take the fast path (no `libm` involved), so they are the same on every platform.
#[test]
fn known_answer() {
    let mut rng = SimRng::from_seed(1);
    let mut x = [0.0; 8];
    rng.fill_normal(&mut x);
    let got: Vec<u64> = x
        .iter()
        .copied()
        .chain((0..4).map(|_| rng.normal()))
        .map(f64::to_bits)
        .collect();
    let expected: [u64; 12] = [
        0xbfdfd52744525165,
        0xbfca265926dab576,
        0x3ffdab1aaf22d174,
        0xbfa839fa7d2d86b6,
        0xbfdcd43cccdcedab,
        0xc000466bc5afaf8b,
        0xbff29faecb57db37,
        0x3fcd6648207bb20a,
        0x3fec686aa0d7edf9,
        0x3fe2beced8150a1c,
        0x3ffd5dc4d15806fa,
        0xbfea9828b96214bf,
    ];
    assert_eq!(got, expected);
}

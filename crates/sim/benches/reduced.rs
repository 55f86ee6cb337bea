//! Benchmark and finite-size study of the reduced engine (`cargo bench -p w2sg-sim --bench reduced`).
//!
//! On one core each (the run-level studies use all cores, one run per core):
//! - SGD steps/s (two students per sample: w2s and ceiling, He3, batch 1) of the reduced engine against
//!   the full engine and the NumPy peer (`benches/peers/sgd_numpy.py`, if numpy is installed), d = 1000
//!   and 4000;
//! - wall time of one run at d = 10⁶, He3, warm start, τ_max = 100 (10⁸ SGD steps for both students),
//!   through the public `simulate` on one thread, and of the reduced spectral initialization at
//!   d = n_pre = 10⁶ (overlap and eigenvalue against BBP);
//! - the convergence study: at d = 10⁴, 10⁵, 10⁶ the mean and the standard deviation over seeds of m at
//!   fixed τ, against the ODE, and the fitted exponent of sd against d (least squares on log–log;
//!   d^−1/2 expected), with its standard error from the sampling error of each sd.
//!
//! It prints Markdown for BENCHMARKS.md and writes it to target/bench-reduced.md. `W2SG_BENCH_QUICK=1`
//! runs a smoke version (smaller d and fewer seeds; its numbers are not the benchmark's).

use std::process::Command;
use std::time::Instant;

use w2sg_sim::config::Plan;
use w2sg_sim::distributions::NormalStream;
use w2sg_sim::engine::{simulate, simulate_all, EngineKind};
use w2sg_sim::link::Link;
use w2sg_sim::model::{target_direction, weak_direction, DataLaw, Labeler};
use w2sg_sim::prediction::predict;
use w2sg_sim::reduced::{Pair, ReducedSgd};
use w2sg_sim::reduced_spectral::spiked_top_eigen;
use w2sg_sim::rng::SimRng;
use w2sg_sim::sgd::{train, SgdSettings, Student};
use w2sg_sim::theory::{bbp_overlap, bbp_top_eigenvalue};

fn labelers() -> (Link, Labeler, Labeler) {
    let link = Link::Hermite(3);
    let weak = Labeler {
        link: link.clone(),
        direction: weak_direction(0.8),
        noise: 0.0,
    };
    let truth = Labeler {
        link: link.clone(),
        direction: target_direction(),
        noise: 0.0,
    };
    (link, weak, truth)
}

const SETTINGS: SgdSettings = SgdSettings {
    lr: 0.003,
    batch: 1,
};

/// Full engine: samples/s and the final m, from m0 = 0.5 (the throughput benchmark's setting).
fn full_steps_per_s(d: usize, samples: u64) -> (f64, f64) {
    let (link, weak, truth) = labelers();
    let mut init = SimRng::from_seed(1).unit_vector(d);
    init[0] = 0.0;
    let n = init.iter().map(|x| x * x).sum::<f64>().sqrt();
    init.iter_mut().for_each(|x| *x *= 0.75f64.sqrt() / n);
    init[0] = 0.5;
    let mut students = [Student::new(init.clone()), Student::new(init)];
    let law = DataLaw::isotropic(d);
    let mut rng = SimRng::from_seed(2);
    let start = Instant::now();
    let mut m = 0.0;
    train(
        &mut students,
        [&weak, &truth],
        &link,
        &law,
        SETTINGS,
        &mut rng,
        &[samples],
        |_, s| m = s[0].overlap(&target_direction()),
    )
    .expect("no divergence");
    (samples as f64 / start.elapsed().as_secs_f64(), m)
}

/// Reduced engine, same process.
fn reduced_steps_per_s(d: usize, samples: u64) -> (f64, f64) {
    let (link, weak, truth) = labelers();
    let law = DataLaw::isotropic(d);
    let sgd = ReducedSgd::new([&weak, &truth], &link, &law, SETTINGS).expect("reduces");
    let mut pair = Pair::same([0.5, 0.0, 0.0], 0.75f64.sqrt());
    let mut draws = NormalStream::new(SimRng::from_seed(2));
    let start = Instant::now();
    let mut m = 0.0;
    sgd.train(&mut pair, &mut draws, &[samples], |_, p| m = p.on_u[0][0])
        .expect("no divergence");
    (samples as f64 / start.elapsed().as_secs_f64(), m)
}

fn numpy_steps_per_s(d: usize, samples: u64) -> Option<f64> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../benches/peers/sgd_numpy.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .args(["--d", &d.to_string(), "--samples", &samples.to_string()])
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "numpy peer failed (pip install numpy?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    json["samples_per_s"].as_f64()
}

fn parse(text: &str) -> Plan {
    Plan::parse(text, "bench").expect("valid bench config")
}

/// Mean and sample standard deviation.
fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Weighted least-squares slope of y on x with standard errors `se` of y: (slope, its standard error).
fn fit_slope(x: &[f64], y: &[f64], se: &[f64]) -> (f64, f64) {
    let w: Vec<f64> = se.iter().map(|s| 1.0 / (s * s)).collect();
    let sw: f64 = w.iter().sum();
    let xm = x.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() / sw;
    let ym = y.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() / sw;
    let sxx: f64 = x.iter().zip(&w).map(|(a, b)| b * (a - xm).powi(2)).sum();
    let sxy: f64 = x
        .iter()
        .zip(y)
        .zip(&w)
        .map(|((a, c), b)| b * (a - xm) * (c - ym))
        .sum();
    (sxy / sxx, (1.0 / sxx).sqrt())
}

fn main() {
    let quick = std::env::var("W2SG_BENCH_QUICK").is_ok();
    let scale = if quick { 20 } else { 1 };
    let mut md = String::new();

    // 1. Steps per second.
    md += "Online SGD steps/s on one core (two students per sample, He3, batch 1):\n\n";
    md += "| d | reduced steps/s | full steps/s | NumPy steps/s | reduced / full | reduced / NumPy |\n|---|---|---|---|---|---|\n";
    for (d, full_samples, peer_samples) in
        [(1000usize, 400_000u64, 20_000u64), (4000, 100_000, 5_000)]
    {
        let (red, m_red) = reduced_steps_per_s(d, 20_000_000 / scale);
        let (full, m_full) = full_steps_per_s(d, full_samples / scale);
        let peer = numpy_steps_per_s(d, peer_samples / scale);
        eprintln!("d = {d}: reduced {red:.0}/s (m {m_red:.3}), full {full:.0}/s (m {m_full:.3}), numpy {peer:?}");
        let na = || "n/a".to_string();
        md += &format!(
            "| {d} | {red:.3e} | {full:.3e} | {} | {:.0}× | {} |\n",
            peer.map(|p| format!("{p:.3e}")).unwrap_or_else(na),
            red / full,
            peer.map(|p| format!("{:.0}×", red / p)).unwrap_or_else(na),
        );
    }

    // 2. The 10⁸-step run and the spectral init at 10⁶, one thread each.
    let d_big = if quick { 100_000 } else { 1_000_000 };
    let run_text = format!(
        "engine = \"reduced\"\nd = {d_big}\nlink = \"he3\"\ninit = \"overlap\"\nm0 = 0.5\n[weak]\nrho = 0.8\n[sgd]\nlr = 0.003\ntau_max = 100.0\n"
    );
    let plan = parse(&run_text);
    let config = &plan.grid[0].config;
    let start = Instant::now();
    let out = simulate(config, 0, &|_| {}).expect("run succeeds");
    let run_s = start.elapsed().as_secs_f64();
    let steps = *config.checkpoints().last().unwrap();
    let ode = predict(config);
    eprintln!("d = {d_big}: {steps} steps in {run_s:.2} s");
    md += &format!(
        "\nOne run at d = {d_big}, He3, warm start (m0 = 0.5), ρ = 0.8, lr = 0.003, τ_max = 100 ({steps} SGD steps, both students; `simulate`, one thread): **{run_s:.2} s** ({:.3e} steps/s). m_final = {:.4} (ODE {:.4}), m_ceiling_final = {:.4} (ODE {:.4}).\n",
        steps as f64 / run_s,
        out.summary.outcome.m_final,
        ode.summary.outcome.m_final,
        out.summary.outcome.m_ceiling_final,
        ode.summary.outcome.m_ceiling_final,
    );
    md += "\nReduced spectral initialization (bidiagonal model + O(m) tridiagonal eigenpair), one core:\n\n| d | n_pre | β | time | overlap with v | BBP | top eigenvalue | BBP |\n|---|---|---|---|---|---|---|---|\n";
    for beta in [2.0, 0.5] {
        let n = d_big;
        let mut draws = NormalStream::new(SimRng::from_seed(7));
        let start = Instant::now();
        let top = spiked_top_eigen(n, d_big, beta, &mut draws);
        let s = start.elapsed().as_secs_f64();
        md += &format!(
            "| {d_big} | {n} | {beta} | {s:.3} s | {:.4} | {:.4} | {:.4} | {:.4} |\n",
            top.spike_overlap,
            bbp_overlap(beta, 1.0, 1.0),
            top.eigenvalue,
            bbp_top_eigenvalue(beta, 1.0),
        );
    }
    let spectral_text = format!(
        "engine = \"reduced\"\nd = {d_big}\nlink = \"he3\"\n[pretrain]\nn_pre = {d_big}\nbeta = 2.0\n[weak]\nrho = 0.8\n[sgd]\ntau_max = 0.001\n[metrics]\npoints = 2\ntau_min = 0.0005\n"
    );
    let plan = parse(&spectral_text);
    let start = Instant::now();
    let out = simulate(&plan.grid[0].config, 0, &|_| {}).expect("run succeeds");
    md += &format!(
        "\nWhole spectral init through `simulate` (bidiagonal model, eigenpair, uniform rest of the eigenvector, sign test on 1000 weak-labelled samples) at d = n_pre = {d_big}, plus {} SGD steps: {:.3} s, m0 = {:.4}.\n",
        plan.grid[0].config.checkpoints().last().unwrap(),
        start.elapsed().as_secs_f64(),
        out.summary.outcome.m0
    );

    // 3. Convergence study.
    let seeds = if quick { 8 } else { 64 };
    let dims: &[usize] = if quick {
        &[1_000, 10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    md += &format!(
        "\nFinite-size convergence (reduced engine): He3, spectral init (n_pre = 2d, β = 1, so γ = 0.5; n_sign = 10⁵, so that a wrong eigenvector sign, a few % of runs with the default 1000 for He3, does not dominate the spread), ρ = 0.8, lr = 0.003, {seeds} seeds per d; m at fixed τ.\n\n| d | τ | mean m | ODE m | mean − ODE | sd of m | sd·√d |\n|---|---|---|---|---|---|---|\n"
    );
    let taus = [1.0, 10.0];
    let mut sds = vec![Vec::new(); taus.len()];
    let mut ses = vec![Vec::new(); taus.len()];
    for &d in dims {
        let text = format!(
            "engine = \"reduced\"\nd = {d}\nlink = \"he3\"\nseeds = {seeds}\n[pretrain]\nn_pre = {}\nbeta = 1.0\nn_sign = 100000\n[weak]\nrho = 0.8\n[sgd]\nlr = 0.003\ntau_max = 10.0\n[metrics]\npoints = 2\ntau_min = 1.0\n",
            2 * d
        );
        let plan = parse(&text);
        let config = &plan.grid[0].config;
        let jobs: Vec<_> = plan.seeds.iter().map(|&s| (config, s)).collect();
        let start = Instant::now();
        let runs: Vec<_> = simulate_all(&jobs, 0, &|_| {})
            .into_iter()
            .map(|r| r.expect("run succeeds"))
            .collect();
        assert!(runs.iter().all(|r| r.summary.engine == EngineKind::Reduced));
        eprintln!(
            "convergence d = {d}: {:.1} s",
            start.elapsed().as_secs_f64()
        );
        let ode = predict(config);
        for (k, &tau) in taus.iter().enumerate() {
            let i = ode
                .trajectory
                .iter()
                .position(|p| (p.tau - tau).abs() < 1e-9)
                .expect("τ on the grid");
            let ms: Vec<f64> = runs.iter().map(|r| r.trajectory[i].m).collect();
            let (mean, sd) = mean_sd(&ms);
            let want = ode.trajectory[i].m;
            md += &format!(
                "| {d} | {tau} | {mean:.5} | {want:.5} | {:+.5} | {sd:.5} | {:.3} |\n",
                mean - want,
                sd * (d as f64).sqrt()
            );
            sds[k].push(sd);
            // Standard error of log(sd) ≈ 1/sqrt(2(n − 1)) for near-normal samples.
            ses[k].push(1.0 / (2.0 * (seeds as f64 - 1.0)).sqrt());
        }
    }
    md += "\nFitted exponent of sd(m) ∝ d^a (weighted least squares on log sd vs log d; expected a = −1/2):\n\n| τ | a | standard error |\n|---|---|---|\n";
    let logd: Vec<f64> = dims.iter().map(|&d| (d as f64).ln()).collect();
    for (k, &tau) in taus.iter().enumerate() {
        let logsd: Vec<f64> = sds[k].iter().map(|s| s.ln()).collect();
        let (a, se) = fit_slope(&logd, &logsd, &ses[k]);
        md += &format!("| {tau} | {a:.3} | {se:.3} |\n");
    }
    println!("{md}");
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_string());
    let _ = std::fs::write(format!("{target}/bench-reduced.md"), &md);
}

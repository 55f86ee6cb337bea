//! Throughput benchmark of the full engine against its NumPy peer, run side by side.
//!
//! `cargo bench -p w2sg-sim --bench throughput` measures, on one core each:
//! - online SGD samples/s (two students per sample: w2s and ceiling, He3, batch 1) for d = 1000, 4000,
//!   for w2sg and for `benches/peers/sgd_numpy.py` (installed numpy; OPENBLAS_NUM_THREADS=1);
//! - ns per sample·dimension against the cost of only drawing the Gaussians (the practical floor);
//! - spectral initialization at d = 2000, n_pre = 4000: w2sg's Lanczos vs `numpy.linalg.eigh`.
//!
//! It prints a Markdown table (copied into BENCHMARKS.md) and writes it to target/bench-throughput.md.
//! Set W2SG_BENCH_QUICK=1 for a short smoke run.

use std::process::Command;
use std::time::Instant;

use w2sg_sim::link::Link;
use w2sg_sim::model::{target_direction, weak_direction, DataLaw, Labeler};
use w2sg_sim::rng::SimRng;
use w2sg_sim::sgd::{train, SgdSettings, Student};
use w2sg_sim::spectral::SampleMatrix;

fn engine_samples_per_s(d: usize, samples: u64) -> (f64, f64) {
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
        SgdSettings {
            lr: 0.003,
            batch: 1,
        },
        &mut rng,
        &[samples],
        |_, s| m = s[0].overlap(&target_direction()),
    )
    .expect("no divergence");
    (samples as f64 / start.elapsed().as_secs_f64(), m)
}

fn rng_ns_per_normal(d: usize, samples: u64) -> f64 {
    let mut rng = SimRng::from_seed(3);
    let mut x = vec![0.0; d];
    let mut sink = 0.0;
    let start = Instant::now();
    for _ in 0..samples {
        rng.fill_normal(&mut x);
        sink += x[d / 2];
    }
    let ns = start.elapsed().as_secs_f64() * 1e9 / (samples as f64 * d as f64);
    std::hint::black_box(sink);
    ns
}

fn spectral_seconds(d: usize, n: usize, beta: f64) -> (f64, f64, f64) {
    let law = DataLaw::spiked(d, beta, target_direction());
    let mut rng = SimRng::from_seed(4);
    let t0 = Instant::now();
    let x = SampleMatrix::from_rows(n, d, |_, row| law.sample(&mut rng, row));
    let t1 = Instant::now();
    let top = x.top_eigen(&mut rng);
    let t2 = Instant::now();
    (
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        top.vector[0].abs(),
    )
}

fn numpy_peer(d: usize, samples: u64, spectral_n: usize) -> Option<serde_json::Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../benches/peers/sgd_numpy.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .args([
            "--d",
            &d.to_string(),
            "--samples",
            &samples.to_string(),
            "--spectral-n",
            &spectral_n.to_string(),
        ])
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
    serde_json::from_slice(&out.stdout).ok()
}

fn main() {
    let quick = std::env::var("W2SG_BENCH_QUICK").is_ok();
    let scale = if quick { 10 } else { 1 };
    let mut table = String::from(
        "| d | w2sg samples/s | NumPy samples/s | ratio | w2sg ns/(sample·dim) | RNG floor ns/normal | w2sg / floor | NumPy RNG ns/normal |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (d, samples, peer_samples) in [(1000usize, 400_000u64, 20_000u64), (4000, 100_000, 5_000)] {
        let (samples, peer_samples) = (samples / scale, peer_samples / scale);
        let (ours, m) = engine_samples_per_s(d, samples);
        let floor = rng_ns_per_normal(d, samples);
        let ns_per = 1e9 / ours / d as f64;
        let peer = numpy_peer(d, peer_samples, 0);
        let peer_rate = peer.as_ref().and_then(|p| p["samples_per_s"].as_f64());
        let peer_rng = peer.as_ref().and_then(|p| p["rng_ns_per_normal"].as_f64());
        let fmt = |v: Option<f64>, digits: usize| {
            v.map(|x| format!("{x:.digits$}"))
                .unwrap_or_else(|| "n/a".into())
        };
        table += &format!(
            "| {d} | {ours:.0} | {} | {} | {ns_per:.2} | {floor:.2} | {:.2} | {} |\n",
            fmt(peer_rate, 0),
            fmt(peer_rate.map(|p| ours / p), 1),
            ns_per / floor,
            fmt(peer_rng, 2),
        );
        eprintln!(
            "d = {d}: w2sg {ours:.0} samples/s (m after run {m:.3}), floor {floor:.2} ns/normal"
        );
    }
    let (d, n) = (2000, 4000);
    let (sample_s, lanczos_s, overlap) = spectral_seconds(d, n, 3.0);
    let peer = numpy_peer(d, 10, n);
    let spec = peer.as_ref().map(|p| p["spectral"].clone());
    let get = |k: &str| spec.as_ref().and_then(|s| s[k].as_f64());
    table += &format!(
        "\nSpectral init, d = {d}, n_pre = {n}, β = 3 (one core):\n\n| | sample X | covariance | eigen-solve | total | overlap |\n|---|---|---|---|---|---|\n| w2sg (Lanczos on Xᵀ(Xv)) | {sample_s:.3} s | — | {lanczos_s:.3} s | {:.3} s | {overlap:.3} |\n| NumPy (XᵀX/n, eigh) | {} s | {} s | {} s | {} s | {} |\n",
        sample_s + lanczos_s,
        get("sample_s").map(|v| format!("{v:.3}")).unwrap_or("n/a".into()),
        get("covariance_s").map(|v| format!("{v:.3}")).unwrap_or("n/a".into()),
        get("eigh_s").map(|v| format!("{v:.3}")).unwrap_or("n/a".into()),
        match (get("sample_s"), get("covariance_s"), get("eigh_s")) {
            (Some(a), Some(b), Some(c)) => format!("{:.3}", a + b + c),
            _ => "n/a".into(),
        },
        get("overlap").map(|v| format!("{v:.3}")).unwrap_or("n/a".into()),
    );
    if let (Some(e), true) = (get("eigh_s"), lanczos_s > 0.0) {
        table += &format!("\nLanczos vs eigh alone: {:.1}× faster; whole init vs NumPy's covariance + eigh: {:.1}×.\n", e / lanczos_s, (get("covariance_s").unwrap_or(0.0) + e) / lanczos_s);
    }
    println!("{table}");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/bench-throughput.md"
    );
    let _ = std::fs::write(path, &table);
}

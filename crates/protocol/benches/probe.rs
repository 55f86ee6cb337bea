//! Probe training throughput: w2sg-protocol's L-BFGS probe against scikit-learn's LogisticRegression
//! (lbfgs) on the same synthetic LM-like features, same objective, same tolerance, one thread each.
//!
//! `cargo bench -p w2sg-protocol --bench probe [-- --quick | -- --sizes 10000x1024,2000x64]`
//!
//! The peer (benches/peers/probe_sklearn.py) needs scikit-learn; the Python is `$W2SG_BENCH_PYTHON`,
//! else /work/venv-protocol/bin/python if it exists, else python3. Without scikit-learn the table has
//! our side only. Features: n × k f32 from a low-rank correlated model with a few large-offset "massive
//! activation" dimensions (the shape of real transformer features), labels from a logistic rule on the
//! latent factors. Prints a Markdown table for BENCHMARKS.md: median fit time (standardization
//! included on both sides), the ratio, iterations, final training objective (the same function on both
//! sides) and test accuracy, plus the agreement of the two probes' test predictions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use w2sg_protocol::rng::Stream;
use w2sg_protocol::{Features, ProbeParams, Targets};

struct Data {
    x: Vec<f32>,
    y: Vec<f64>,
    n: usize,
}

/// n examples of k features: x = offsets + A u + noise with u ~ N(0, I_r), r = k/4, A with a decaying
/// spectrum; 1 % of the dimensions carry offsets of ±100; y ~ Bernoulli(σ(3 β·u)).
fn generate(n: usize, k: usize, seed: u64, a: &[f64], offsets: &[f64], beta: &[f64]) -> Data {
    let r = beta.len();
    let mut rng = Stream::new(seed, "bench-data");
    let mut x = Vec::with_capacity(n * k);
    let mut y = Vec::with_capacity(n);
    let mut u = vec![0.0; r];
    for _ in 0..n {
        for v in u.iter_mut() {
            *v = rng.normal();
        }
        let s: f64 = u.iter().zip(beta).map(|(a, b)| a * b).sum();
        y.push(if rng.uniform() < 1.0 / (1.0 + (-3.0 * s).exp()) {
            1.0
        } else {
            0.0
        });
        for j in 0..k {
            let row = &a[j * r..(j + 1) * r];
            let v: f64 = row.iter().zip(&u).map(|(p, q)| p * q).sum::<f64>() + 0.5 * rng.normal();
            x.push((offsets[j] + v) as f32);
        }
    }
    Data { x, y, n }
}

fn npy_header(descr: &str, shape: &str) -> Vec<u8> {
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h.as_bytes());
    out
}

fn write_npy_f32(path: &Path, v: &[f32], n: usize, k: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&npy_header("<f4", &format!("({n}, {k})")))
        .unwrap();
    for x in v {
        f.write_all(&x.to_le_bytes()).unwrap();
    }
}

fn write_npy_f64(path: &Path, v: &[f64]) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&npy_header("<f8", &format!("({},)", v.len())))
        .unwrap();
    for x in v {
        f.write_all(&x.to_le_bytes()).unwrap();
    }
}

fn read_npy_f64(path: &Path) -> Option<Vec<f64>> {
    let b = std::fs::read(path).ok()?;
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let data = &b[10 + hlen..];
    Some(
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    )
}

fn python() -> String {
    if let Ok(p) = std::env::var("W2SG_BENCH_PYTHON") {
        return p;
    }
    if Path::new("/work/venv-protocol/bin/python").exists() {
        return "/work/venv-protocol/bin/python".into();
    }
    "python3".into()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn json_f64(line: &str, key: &str) -> Option<f64> {
    let i = line.find(&format!("\"{key}\": "))? + key.len() + 4;
    let rest = &line[i..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

fn main() {
    // `--quick`: two small sizes; `--sizes 10000x1024,2000x64`: chosen ones.
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let chosen: Option<Vec<(usize, usize)>> = args.iter().position(|a| a == "--sizes").map(|i| {
        args.get(i + 1)
            .map(|s| {
                s.split(',')
                    .filter_map(|p| p.split_once('x'))
                    .filter_map(|(n, k)| Some((n.parse().ok()?, k.parse().ok()?)))
                    .collect()
            })
            .unwrap_or_default()
    });
    let configs: Vec<(usize, usize)> = match chosen {
        Some(c) => c,
        None if quick => vec![(2000, 64), (4000, 256)],
        None => vec![(2000, 64), (5000, 256), (10000, 256), (10000, 1024)],
    };
    let repeats: usize = std::env::var("W2SG_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (l2, gtol, max_iter) = (1e-3, 1e-5, 2000);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("w2sg-protocol-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let py = python();
    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/peers/probe_sklearn.py");

    println!("probe: λ = {l2}, gtol = {gtol} (max |∂J/∂θ|), max_iter = {max_iter}, one thread each, median of {repeats}");
    println!();
    println!("| n train × k | n test | w2sg L-BFGS (s) | iters | scikit-learn lbfgs (s) | iters | sklearn / w2sg | objective w2sg | objective sklearn | test acc w2sg | test acc sklearn | prediction agreement |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut peer_versions = None;
    for &(n, k) in &configs {
        let r = (k / 4).max(4);
        let mut rng = Stream::new(42 + k as u64, "bench-model");
        // Decaying spectrum: column c of A scaled by 1/√(1 + c).
        let a: Vec<f64> = (0..k * r)
            .map(|i| rng.normal() / (1.0 + (i % r) as f64).sqrt())
            .collect();
        let offsets: Vec<f64> = (0..k)
            .map(|j| {
                if j % 100 == 7 {
                    100.0 * (rng.uniform() - 0.5)
                } else {
                    0.2 * rng.normal()
                }
            })
            .collect();
        let beta: Vec<f64> = {
            let b: Vec<f64> = (0..r).map(|_| rng.normal()).collect();
            let nb = b.iter().map(|v| v * v).sum::<f64>().sqrt();
            b.iter().map(|v| v / nb).collect()
        };
        let n_test = n / 4;
        let train = generate(n, k, 1, &a, &offsets, &beta);
        let test = generate(n_test, k, 2, &a, &offsets, &beta);
        let x = Features::new(&train.x, train.n, k).unwrap();
        let t = Targets::new(&train.y).unwrap();
        let cfg = ProbeParams::default()
            .l2(l2)
            .gtol(gtol)
            .max_iter(max_iter)
            .check()
            .unwrap();
        let mut times = Vec::new();
        let mut fitted = None;
        for _ in 0..repeats {
            let t0 = Instant::now();
            let out = cfg.fit_with_report(&x, &t).unwrap();
            times.push(t0.elapsed().as_secs_f64());
            fitted = Some(out);
        }
        let (probe, rep) = fitted.unwrap();
        let ours = median(times);
        eprintln!(
            "n={n} k={k}: {} iterations, {} evaluations, {:.3} ms per evaluation",
            rep.iterations,
            rep.evaluations,
            1e3 * ours / rep.evaluations as f64
        );
        let xt = Features::new(&test.x, test.n, k).unwrap();
        let p_ours = probe.predict_proba(&xt).unwrap();
        let acc_ours = p_ours
            .iter()
            .zip(&test.y)
            .filter(|(p, y)| (**p > 0.5) == (**y > 0.5))
            .count() as f64
            / test.n as f64;

        write_npy_f32(&dir.join("train_x.npy"), &train.x, n, k);
        write_npy_f64(&dir.join("train_y.npy"), &train.y);
        write_npy_f32(&dir.join("test_x.npy"), &test.x, n_test, k);
        write_npy_f64(&dir.join("test_y.npy"), &test.y);
        let out = Command::new(&py)
            .arg(&peer)
            .args([
                dir.to_str().unwrap(),
                &l2.to_string(),
                &gtol.to_string(),
                &max_iter.to_string(),
                &repeats.to_string(),
                "1",
            ])
            .env("OMP_NUM_THREADS", "1")
            .env("OPENBLAS_NUM_THREADS", "1")
            .env("MKL_NUM_THREADS", "1")
            .output();
        let line = match &out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .last()
                .unwrap_or("")
                .to_string(),
            Ok(o) => {
                eprintln!(
                    "peer failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
                String::new()
            }
            Err(e) => {
                eprintln!("peer not run ({py}): {e}");
                String::new()
            }
        };
        let conv = if rep.converged {
            ""
        } else {
            " (not converged)"
        };
        match (json_f64(&line, "seconds"), read_npy_f64(&dir.join("sklearn_test_proba.npy"))) {
            (Some(theirs), Some(p_theirs)) if !line.is_empty() => {
                let agree = p_ours.iter().zip(&p_theirs).filter(|(a, b)| (**a > 0.5) == (**b > 0.5)).count() as f64 / test.n as f64;
                let sk_conv = if line.contains("\"converged\": false") { " (not converged)" } else { "" };
                println!(
                    "| {n} × {k} | {n_test} | {ours:.3} | {}{conv} | {theirs:.3} | {}{sk_conv} | {:.2}× | {:.8} | {:.8} | {acc_ours:.4} | {:.4} | {agree:.4} |",
                    rep.iterations,
                    json_f64(&line, "iterations").unwrap_or(f64::NAN),
                    theirs / ours,
                    rep.objective,
                    json_f64(&line, "objective").unwrap_or(f64::NAN),
                    json_f64(&line, "test_accuracy").unwrap_or(f64::NAN),
                );
                if let (Some(i), Some(j)) = (line.find("\"sklearn\""), line.find("\"numpy\"")) {
                    peer_versions = Some(format!("{} {}", &line[i..j], &line[j..]));
                }
            }
            _ => println!(
                "| {n} × {k} | {n_test} | {ours:.3} | {}{conv} | — | — | — | {:.8} | — | {acc_ours:.4} | — | — |",
                rep.iterations, rep.objective
            ),
        }
        let _ = std::fs::remove_file(dir.join("sklearn_test_proba.npy"));
    }
    if let Some(v) = peer_versions {
        println!();
        println!("peer: {}", v.trim_end_matches('}'));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

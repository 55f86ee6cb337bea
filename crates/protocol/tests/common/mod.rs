//! Shared test fixtures: synthetic feature matrices with a known linear rule, and a miniature
//! checkpoint sweep (features per checkpoint, weak labels per seed, probe results per
//! (checkpoint, seed, loss)) written through the results store, used by the resume, shard and merge
//! tests and by the kill test's child process.

#![allow(dead_code)]

use std::io::Write;

use serde_json::{json, Map, Value};
use w2sg_protocol::metrics::{agreement, EvalMetrics};
use w2sg_protocol::pgr::{pgr, PgrConfig, SeedOutcomes};
use w2sg_protocol::rng::Stream;
use w2sg_protocol::store::{bytes_to_f32s, bytes_to_f64s, f32s_to_bytes, f64s_to_bytes};
use w2sg_protocol::{
    Features, LogconfConfig, Loss, Outcome, ProbeParams, ProductConfig, RunPolicy, ShardSpec,
    Store, Targets, TrainParams, UnitKind, UnitOutput, UnitSpec,
};

/// A labelled synthetic data set.
pub struct Synthetic {
    pub x: Vec<f32>,
    pub n: usize,
    pub k: usize,
    pub y: Vec<bool>,
    /// P(y = 1 | x) under the generating model.
    pub p_true: Vec<f64>,
}

/// n examples, k anisotropic features with offsets (scales 0.1…10, means up to ±50, like raw LM
/// features), labels y ~ Bernoulli(σ(signal · β·z)) for a random unit direction β on the standardized
/// features z.
pub fn synthetic(n: usize, k: usize, seed: u64, signal: f64) -> Synthetic {
    let mut rng = Stream::new(seed, "synthetic");
    let beta: Vec<f64> = (0..k).map(|_| rng.normal()).collect();
    let norm = beta.iter().map(|b| b * b).sum::<f64>().sqrt();
    let scales: Vec<f64> = (0..k)
        .map(|j| 10f64.powf(-1.0 + 2.0 * j as f64 / k.max(2) as f64))
        .collect();
    let offsets: Vec<f64> = (0..k).map(|_| 50.0 * (rng.uniform() - 0.5)).collect();
    let mut x = Vec::with_capacity(n * k);
    let mut y = Vec::with_capacity(n);
    let mut p_true = Vec::with_capacity(n);
    for _ in 0..n {
        let z: Vec<f64> = (0..k).map(|_| rng.normal()).collect();
        let s: f64 = z.iter().zip(&beta).map(|(a, b)| a * b).sum::<f64>() / norm;
        let p = 1.0 / (1.0 + (-signal * s).exp());
        y.push(rng.uniform() < p);
        p_true.push(p);
        for j in 0..k {
            x.push((offsets[j] + scales[j] * z[j]) as f32);
        }
    }
    Synthetic { x, n, k, y, p_true }
}

/// The miniature sweep's shape.
pub const CHECKPOINTS: [u64; 6] = [1, 10, 100, 1000, 10000, 100000];
pub const CORRUPT_STEP: u64 = 1000;
pub const SEEDS: [u64; 2] = [0, 1];
pub const N: usize = 600;
pub const K: usize = 12;
const LATENT: usize = 8;

fn losses() -> Vec<Loss> {
    vec![
        Loss::Xent,
        Loss::Logconf(LogconfConfig::default()),
        Loss::Product(ProductConfig::default()),
    ]
}

/// Ground truth: a latent u (8 dims) and labels from a linear rule on it.
fn task() -> (Vec<f64>, Vec<bool>) {
    let mut rng = Stream::new(99, "task");
    let mut u = Vec::with_capacity(N * LATENT);
    let mut y = Vec::with_capacity(N);
    for _ in 0..N {
        let row: Vec<f64> = (0..LATENT).map(|_| rng.normal()).collect();
        let s: f64 = row
            .iter()
            .enumerate()
            .map(|(j, v)| v / (1.0 + j as f64))
            .sum();
        y.push(s + 0.3 * rng.normal() > 0.0);
        u.extend(row);
    }
    (u, y)
}

/// Features of "checkpoint" `step`: the latent plus noise that shrinks as the step grows, and 4 pure
/// noise columns.
fn checkpoint_features(step: u64) -> Result<Vec<f32>, String> {
    if step == CORRUPT_STEP {
        return Err(format!(
            "checkpoint step {step}: model.safetensors: header length 18446744073709551615 exceeds the file size (corrupt file)"
        ));
    }
    let (u, _) = task();
    let noise = 3.0 / (1.0 + (step as f64).log10());
    let mut rng = Stream::new(step, "checkpoint");
    let mut x = Vec::with_capacity(N * K);
    for i in 0..N {
        for j in 0..LATENT {
            x.push((u[i * LATENT + j] + noise * rng.normal()) as f32);
        }
        for _ in LATENT..K {
            x.push(rng.normal() as f32);
        }
    }
    Ok(x)
}

pub const A: std::ops::Range<usize> = 0..200;
pub const B: std::ops::Range<usize> = 200..400;
pub const TEST: std::ops::Range<usize> = 400..600;

fn rows(x: &[f32], r: std::ops::Range<usize>, k: usize) -> &[f32] {
    &x[r.start * k..r.end * k]
}

/// Weak supervisor for `seed`: a probe on the first two latent dimensions plus heavy seed-dependent
/// noise, trained on half A; returns its P(y = 1) on B then on the test set.
fn weak_labels(seed: u64) -> Result<Vec<f64>, String> {
    let (u, y) = task();
    let mut rng = Stream::new(seed, "weak");
    let kw = 3;
    let mut x = Vec::with_capacity(N * kw);
    for i in 0..N {
        x.push((u[i * LATENT] + 1.5 * rng.normal()) as f32);
        x.push((u[i * LATENT + 1] + 1.5 * rng.normal()) as f32);
        x.push(rng.normal() as f32);
    }
    let xa = Features::new(rows(&x, A, kw), A.len(), kw).map_err(|e| e.to_string())?;
    let ya: Vec<f64> = y[A].iter().map(|&b| b as i32 as f64).collect();
    let probe = ProbeParams::default()
        .fit(&xa, &Targets::new(&ya).unwrap())
        .map_err(|e| e.to_string())?;
    let rest = Features::new(&x[B.start * kw..], N - B.start, kw).map_err(|e| e.to_string())?;
    probe.predict_proba(&rest).map_err(|e| e.to_string())
}

/// Where the kill test's child pauses (then prints PAUSED and waits to be killed).
#[derive(Clone, Copy, Debug, Default)]
pub struct Pause {
    /// Pause inside the computation of the i-th unit that runs (0-based).
    pub compute_at: Option<usize>,
    /// Pause inside the write transaction of the i-th unit that runs, before its commit.
    pub commit_at: Option<usize>,
}

fn pause_forever() -> ! {
    println!("PAUSED");
    std::io::stdout().flush().ok();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

pub fn feature_spec(step: u64) -> UnitSpec {
    UnitSpec::new(
        UnitKind::Features,
        &format!("weights-{step}"),
        "task-99",
        "pool-mean",
    )
    .step(step)
}

pub fn weak_spec(seed: u64) -> UnitSpec {
    UnitSpec::new(UnitKind::WeakLabels, "weak-model", "task-99", "weak-probe").seed(seed)
}

pub fn probe_spec(step: u64, seed: u64, loss: &Loss) -> UnitSpec {
    let cfg = w2sg_protocol::key::config_hash(loss).unwrap();
    UnitSpec::new(UnitKind::Probe, &format!("weights-{step}"), "task-99", &cfg)
        .step(step)
        .seed(seed)
        .loss(loss.name())
}

fn probe_result(
    step: u64,
    seed: u64,
    loss: &Loss,
    feats: &[f32],
    weak: &[f64],
) -> Result<UnitOutput, String> {
    let (_, y) = task();
    let e = |e: w2sg_protocol::Error| e.to_string();
    let xb = Features::new(rows(feats, B, K), B.len(), K).map_err(e)?;
    let xt = Features::new(rows(feats, TEST, K), TEST.len(), K).map_err(e)?;
    let weak_b = &weak[..B.len()];
    let weak_t = &weak[B.len()..];
    let yb: Vec<f64> = y[B].iter().map(|&b| b as i32 as f64).collect();
    let yt = &y[TEST];
    let w2s = TrainParams::default()
        .loss(loss.clone())
        .epochs(3)
        .seed(seed)
        .fit(&xb, &Targets::new(weak_b).map_err(e)?)
        .map_err(e)?;
    let ceiling = ProbeParams::default()
        .fit(&xb, &Targets::new(&yb).map_err(e)?)
        .map_err(e)?;
    let p_w2s = w2s.predict_proba(&xt).map_err(e)?;
    let p_ceil = ceiling.predict_proba(&xt).map_err(e)?;
    let m_weak = EvalMetrics::compute(weak_t, yt, 10).map_err(e)?;
    let m_w2s = EvalMetrics::compute(&p_w2s, yt, 10).map_err(e)?;
    let m_ceil = EvalMetrics::compute(&p_ceil, yt, 10).map_err(e)?;
    let outcome = SeedOutcomes::from_probs(seed, yt, weak_t, &p_w2s, &p_ceil).map_err(e)?;
    let est = pgr(
        &[outcome],
        &PgrConfig {
            bootstrap: 100,
            seed,
            ..Default::default()
        },
    )
    .map_err(e)?;
    let mut r = Map::new();
    r.insert("step".into(), json!(step));
    r.insert("acc_weak".into(), json!(m_weak.accuracy));
    r.insert("acc_w2s".into(), json!(m_w2s.accuracy));
    r.insert("acc_ceiling".into(), json!(m_ceil.accuracy));
    r.insert("auroc_w2s".into(), json!(m_w2s.auroc));
    r.insert("ece_w2s".into(), json!(m_w2s.ece));
    r.insert(
        "agreement".into(),
        json!(agreement(&p_w2s, weak_t).map_err(e)?),
    );
    r.insert("pgr".into(), json!(est.pgr));
    r.insert("pgr_lo".into(), json!(est.interval.map(|i| i.0)));
    r.insert("pgr_hi".into(), json!(est.interval.map(|i| i.1)));
    r.insert("n_test".into(), Value::from(TEST.len()));
    Ok(UnitOutput {
        result: r,
        blob: None,
    })
}

/// Runs the sweep's units of `shard` into `store`; returns the outcomes in run order.
pub fn sweep(store: &Store, shard: ShardSpec, pause: Pause) -> Vec<Outcome> {
    let policy = RunPolicy::default();
    let counter = std::cell::Cell::new(0usize);
    if let Some(at) = pause.commit_at {
        let seen = std::rc::Rc::new(std::cell::Cell::new(0usize));
        store.set_before_commit(Some(Box::new(move |_key| {
            if seen.get() == at {
                pause_forever();
            }
            seen.set(seen.get() + 1);
        })));
    }
    let maybe_pause = || {
        if pause.compute_at == Some(counter.get()) {
            pause_forever();
        }
        counter.set(counter.get() + 1);
    };
    let mut outcomes = Vec::new();
    let steps: Vec<u64> = shard
        .select(&CHECKPOINTS, |s| format!("weights-{s}"))
        .into_iter()
        .copied()
        .collect();
    for &seed in &SEEDS {
        let o = store
            .run_unit(&weak_spec(seed), policy, || {
                maybe_pause();
                weak_labels(seed).map(|p| UnitOutput {
                    result: Map::from_iter([("n".to_string(), json!(p.len()))]),
                    blob: Some(f64s_to_bytes(&p)),
                })
            })
            .unwrap();
        outcomes.push(o);
    }
    for &step in &steps {
        let o = store
            .run_unit(&feature_spec(step), policy, || {
                maybe_pause();
                checkpoint_features(step).map(|x| UnitOutput {
                    result: Map::from_iter([
                        ("n".to_string(), json!(N)),
                        ("k".to_string(), json!(K)),
                    ]),
                    blob: Some(f32s_to_bytes(&x)),
                })
            })
            .unwrap();
        outcomes.push(o);
        for &seed in &SEEDS {
            for loss in losses() {
                let o = store
                    .run_unit(&probe_spec(step, seed, &loss), policy, || {
                        maybe_pause();
                        let fkey = feature_spec(step).key().unwrap();
                        let feats = match store.blob(&fkey).unwrap() {
                            Some(b) => bytes_to_f32s(&b).unwrap(),
                            None => {
                                let why = store
                                    .get(&fkey)
                                    .unwrap()
                                    .and_then(|r| r.error)
                                    .unwrap_or_else(|| "not computed".into());
                                return Err(format!("features unit {fkey} unavailable: {why}"));
                            }
                        };
                        let weak = bytes_to_f64s(
                            &store
                                .blob(&weak_spec(seed).key().unwrap())
                                .unwrap()
                                .unwrap(),
                        )
                        .unwrap();
                        probe_result(step, seed, &loss, &feats, &weak)
                    })
                    .unwrap();
                outcomes.push(o);
            }
        }
    }
    store.set_before_commit(None);
    outcomes
}

/// Number of units of the whole sweep.
pub fn total_units() -> usize {
    SEEDS.len() + CHECKPOINTS.len() * (1 + SEEDS.len() * 3)
}

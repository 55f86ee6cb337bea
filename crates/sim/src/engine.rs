//! Simulation engines: one run, and many runs in parallel.
//!
//! A run is a validated [`SimConfig`] and a seed. Its random streams are derived from
//! `(seed, config key, purpose)`, so a run's numbers depend only on what it is, never on the thread that
//! ran it or on the other runs of its sweep. Runs are spread over a rayon pool; each run is sequential.
//!
//! Two engines simulate the same process. The full engine here stores the d-dimensional students and
//! pays O(d) per sample. The reduced engine ([`crate::reduced`]) tracks the students in a 5-dimensional
//! frame and pays O(1) per sample, exact in distribution; it is the default wherever it applies
//! (`engine = "auto"`), and [`simulate`] says in each run's summary which engine ran and why it fell
//! back when it did.

use rayon::prelude::*;
use serde::Serialize;

use crate::config::{EngineChoice, FinetuneData, Init, RiskMethod, SimConfig, Weak, Weighting};
use crate::link::Link;
use crate::model::{
    spike_direction, target_direction, weak_direction, DataLaw, Direction, Labeler,
};
use crate::rng::{Purpose, SimRng};
use crate::sgd::{train, Diverged, SgdSettings, Student};
use crate::spectral::SampleMatrix;
use crate::theory::predictor_risk;

/// One point of a run's trajectory (w2s student unless named `_ceiling`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrajectoryPoint {
    pub t: u64,
    pub tau: f64,
    pub m: f64,
    pub r: f64,
    pub s: f64,
    pub m_ceiling: f64,
    pub risk_w2s: f64,
    pub risk_ceiling: f64,
    /// `(R_weak − R_w2s(τ)) / (R_weak − R_ceiling(τ))`; `None` where the denominator is within noise of 0.
    pub pgr: Option<f64>,
}

/// Diagnostics of a spectral initialization.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpectralInfo {
    pub eigenvalue: f64,
    pub lanczos_iterations: usize,
    pub converged: bool,
    /// Whether the weak-label sign test flipped the eigenvector.
    pub sign_flipped: bool,
}

/// What a trajectory says about weak-to-strong generalization: shared by simulation and theory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    pub m0: f64,
    /// `<w0, θ_w>`.
    pub r0: f64,
    /// Overlap of the weak direction with θ* (ρ, or that of the trained weak model).
    pub rho_weak: f64,
    pub m_peak: f64,
    pub tau_peak: f64,
    pub m_final: f64,
    pub m_ceiling_final: f64,
    pub risk_weak: f64,
    pub risk_w2s_min: f64,
    pub tau_risk_min: f64,
    pub risk_w2s_final: f64,
    pub risk_ceiling_final: f64,
    /// `max_τ (R_weak − R_w2s(τ)) / (R_weak − R_ceiling_final)`.
    pub pgr_peak: Option<f64>,
    /// `(R_weak − R_w2s_final) / (R_weak − R_ceiling_final)`.
    pub pgr_final: Option<f64>,
}

impl Outcome {
    /// Peak, best and final values of a (non-empty) trajectory. `final_gap_se` is the standard error of
    /// `R_weak − R_ceiling_final` (0 for exact risk).
    pub fn of(
        trajectory: &[TrajectoryPoint],
        rho_weak: f64,
        risk_weak: f64,
        final_gap_se: f64,
    ) -> Self {
        let start = &trajectory[0];
        let last = trajectory
            .last()
            .expect("a trajectory has at least its τ = 0 point");
        let argmax = |key: &dyn Fn(&TrajectoryPoint) -> f64| {
            (0..trajectory.len()).fold(0, |best, i| {
                if key(&trajectory[i]) > key(&trajectory[best]) {
                    i
                } else {
                    best
                }
            })
        };
        let peak = &trajectory[argmax(&|p| p.m)];
        let best = &trajectory[argmax(&|p| -p.risk_w2s)];
        let pgr_final = pgr(risk_weak, last.risk_w2s, last.risk_ceiling, final_gap_se);
        let pgr_peak =
            pgr_final.map(|_| (risk_weak - best.risk_w2s) / (risk_weak - last.risk_ceiling));
        Outcome {
            m0: start.m,
            r0: start.r,
            rho_weak,
            m_peak: peak.m,
            tau_peak: peak.tau,
            m_final: last.m,
            m_ceiling_final: last.m_ceiling,
            risk_weak,
            risk_w2s_min: best.risk_w2s,
            tau_risk_min: best.tau,
            risk_w2s_final: last.risk_w2s,
            risk_ceiling_final: last.risk_ceiling,
            pgr_peak,
            pgr_final,
        }
    }
}

/// Which engine simulated a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// O(1) per sample, exact in distribution ([`crate::reduced`]).
    Reduced,
    /// O(d) per sample: the students as d-dimensional vectors.
    Full,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Reduced => "reduced",
            EngineKind::Full => "full",
        }
    }
}

/// Per-run results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSummary {
    #[serde(flatten)]
    pub outcome: Outcome,
    pub spectral: Option<SpectralInfo>,
    pub engine: EngineKind,
    /// Why `engine = "auto"` ran the full engine (None when the reduced engine ran or `full` was asked).
    pub fallback_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunOutput {
    pub summary: RunSummary,
    pub trajectory: Vec<TrajectoryPoint>,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("{which}: {source}")]
    Diverged {
        which: &'static str,
        source: Diverged,
    },
}

impl SimError {
    /// The error of the w2s/ceiling pair's training (student 0 is w2s, 1 the ceiling).
    pub(crate) fn of_students(source: Diverged) -> Self {
        let which = if source.student == 0 {
            "w2s student"
        } else {
            "ceiling student"
        };
        SimError::Diverged { which, source }
    }
}

/// Risk of predictors against the clean target, exact or on a fixed test sample.
enum RiskMeter {
    Exact { beta: f64, eta: f64 },
    MonteCarlo { test: SampleMatrix },
}

/// A risk value with its standard error (0 when exact).
#[derive(Clone, Copy, Debug)]
struct Risk {
    value: f64,
    /// Per-example losses are kept to form paired standard errors of differences.
    index: usize,
}

struct RiskBook {
    losses: Vec<Vec<f64>>,
}

impl RiskBook {
    fn new() -> Self {
        Self { losses: Vec::new() }
    }

    fn exact(&mut self, value: f64) -> Risk {
        self.losses.push(Vec::new());
        Risk {
            value,
            index: self.losses.len() - 1,
        }
    }

    fn sampled(&mut self, losses: Vec<f64>, noise: f64) -> Risk {
        let value = losses.iter().sum::<f64>() / losses.len() as f64 + 0.5 * noise;
        self.losses.push(losses);
        Risk {
            value,
            index: self.losses.len() - 1,
        }
    }

    /// Standard error of `a − b` (paired over the test sample; 0 when exact).
    fn diff_se(&self, a: Risk, b: Risk) -> f64 {
        let (la, lb) = (&self.losses[a.index], &self.losses[b.index]);
        if la.is_empty() || lb.is_empty() {
            return 0.0;
        }
        let n = la.len() as f64;
        let diffs: Vec<f64> = la.iter().zip(lb).map(|(x, y)| x - y).collect();
        let mean = diffs.iter().sum::<f64>() / n;
        let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (var / n).sqrt()
    }
}

/// PGR, or `None` when the ceiling is not better than weak by more than the noise (2 standard errors
/// for Monte Carlo risk; 1e-3 relative for exact risk, which only guards against 0/0).
pub fn pgr(risk_weak: f64, risk_w2s: f64, risk_ceiling: f64, gap_se: f64) -> Option<f64> {
    let gap = risk_weak - risk_ceiling;
    let threshold = if gap_se > 0.0 {
        2.0 * gap_se
    } else {
        1e-9 + 1e-3 * risk_weak.abs()
    };
    (gap > threshold).then(|| (risk_weak - risk_w2s) / gap)
}

/// The weak supervisor's labeler, and how its weak model was built.
fn weak_labeler(
    config: &SimConfig,
    seed: u64,
    key: u64,
    law: &DataLaw,
    progress: &dyn Fn(u64),
) -> Result<Labeler, SimError> {
    match &config.weak {
        Weak::Direction { rho, link, noise } => Ok(Labeler {
            link: link.clone(),
            direction: weak_direction(*rho),
            noise: *noise,
        }),
        Weak::Trained { n_train, lr, noise } => {
            let mut init = SimRng::stream(seed, key, Purpose::WeakDirection);
            let mut students = [Student::new(init.unit_vector(config.d))];
            let truth = Labeler {
                link: config.link.clone(),
                direction: target_direction(),
                noise: config.noise,
            };
            let mut rng = SimRng::stream(seed, key, Purpose::WeakTraining);
            let settings = SgdSettings {
                lr: *lr,
                batch: config.batch,
            };
            train(
                &mut students,
                [&truth],
                &config.link,
                law,
                settings,
                &mut rng,
                &[*n_train as u64],
                |_, _| {},
            )
            .map_err(|source| SimError::Diverged {
                which: "training the weak model",
                source,
            })?;
            progress(*n_train as u64);
            Ok(Labeler {
                link: config.link.clone(),
                direction: Direction::Dense(students[0].weights()),
                noise: *noise,
            })
        }
    }
}

/// The initial student and, for spectral init, its diagnostics.
fn initial_weights(
    config: &SimConfig,
    seed: u64,
    key: u64,
    weak: &Labeler,
    finetune: &DataLaw,
) -> (Vec<f64>, Option<SpectralInfo>) {
    let d = config.d;
    let mut rng = SimRng::stream(seed, key, Purpose::Init);
    match &config.init {
        Init::Random => (rng.unit_vector(d), None),
        Init::Overlap { m0 } => {
            let mut xi = rng.unit_vector(d);
            xi[0] = 0.0;
            let norm = xi.iter().map(|x| x * x).sum::<f64>().sqrt();
            let scale = (1.0 - m0 * m0).max(0.0).sqrt() / norm;
            xi.iter_mut().for_each(|x| *x *= scale);
            xi[0] = *m0;
            (xi, None)
        }
        Init::Spectral {
            n_pre,
            beta,
            eta,
            n_sign,
            weighting,
            clip,
        } => {
            let law = DataLaw::spiked(d, *beta, spike_direction(*eta));
            let mut data_rng = SimRng::stream(seed, key, Purpose::Pretrain);
            let mut labels = Vec::new();
            let matrix = SampleMatrix::from_rows(*n_pre, d, |_, row| {
                law.sample(&mut data_rng, row);
                if *weighting != Weighting::None {
                    labels.push(weak.label(weak.direction.dot(row), &mut data_rng));
                }
            });
            let matrix = match weighting {
                Weighting::None => matrix,
                Weighting::Tanh => matrix.with_weights(labels.iter().map(|y| y.tanh()).collect()),
                Weighting::Clip => {
                    matrix.with_weights(labels.iter().map(|y| y.clamp(-clip, *clip)).collect())
                }
            };
            let top = matrix.top_eigen(&mut rng);
            drop(matrix);
            let mut w = top.vector;
            // Sign from weak-labelled fine-tuning samples: Σ y_i σ(w·x_i) has the sign of <w, θ_w> for
            // odd links (for even links it carries no sign information, and the sign does not matter).
            let mut sign_rng = SimRng::stream(seed, key, Purpose::SignFix);
            let mut x = vec![0.0; d];
            let mut stat = 0.0;
            for _ in 0..*n_sign {
                finetune.sample(&mut sign_rng, &mut x);
                let y = weak.label(weak.direction.dot(&x), &mut sign_rng);
                let z: f64 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
                stat += y * config.link.eval(z);
            }
            let flip = stat < 0.0;
            if flip {
                w.iter_mut().for_each(|v| *v = -*v);
            }
            let info = SpectralInfo {
                eigenvalue: top.value,
                lanczos_iterations: top.iterations,
                converged: top.converged,
                sign_flipped: flip,
            };
            (w, Some(info))
        }
    }
}

/// The law of fine-tuning (and test) covariates.
pub fn finetune_law(config: &SimConfig) -> DataLaw {
    match config.finetune_data {
        FinetuneData::Isotropic => DataLaw::isotropic(config.d),
        FinetuneData::Spiked => {
            DataLaw::spiked(config.d, config.spike.0, spike_direction(config.spike.1))
        }
    }
}

/// Simulates one run on the engine the config asks for (`auto`: reduced where it applies).
/// `progress(n)` is called with numbers of samples processed as they are.
pub fn simulate(
    config: &SimConfig,
    seed: u64,
    progress: &dyn Fn(u64),
) -> Result<RunOutput, SimError> {
    match engine_for(config) {
        (EngineKind::Reduced, _) => crate::reduced::simulate_reduced(config, seed, progress),
        (EngineKind::Full, reason) => {
            let mut out = simulate_full(config, seed, progress)?;
            out.summary.fallback_reason = reason;
            Ok(out)
        }
    }
}

/// The engine [`simulate`] runs `config` on, and why `auto` fell back to the full engine if it did.
/// (Validation rejects `engine = "reduced"` on configs that do not reduce.)
pub fn engine_for(config: &SimConfig) -> (EngineKind, Option<String>) {
    match config.engine {
        EngineChoice::Full => (EngineKind::Full, None),
        EngineChoice::Reduced => (EngineKind::Reduced, None),
        EngineChoice::Auto => match crate::reduced::obstacle(config) {
            None => (EngineKind::Reduced, None),
            Some(reason) => (EngineKind::Full, Some(reason)),
        },
    }
}

/// For an even link, w and −w are the same predictor: report each student's overlaps for the sign that
/// ends with m ≥ 0 (a random start can escape towards either ±θ*, so the start's sign says nothing).
pub(crate) fn orient_even_link(config: &SimConfig, trajectory: &mut [TrajectoryPoint]) {
    if !config.link.is_even() {
        return;
    }
    let last = trajectory.last().expect("a trajectory has its τ = 0 point");
    if last.m < 0.0 {
        for p in trajectory.iter_mut() {
            p.m = -p.m;
            p.r = -p.r;
            p.s = -p.s;
        }
    }
    if trajectory.last().expect("non-empty").m_ceiling < 0.0 {
        for p in trajectory.iter_mut() {
            p.m_ceiling = -p.m_ceiling;
        }
    }
}

/// Simulates one run on the full engine, whatever `config.engine` says.
pub fn simulate_full(
    config: &SimConfig,
    seed: u64,
    progress: &dyn Fn(u64),
) -> Result<RunOutput, SimError> {
    let d = config.d;
    let key = config.stream_key();
    let law = finetune_law(config);
    let weak = weak_labeler(config, seed, key, &law, progress)?;
    let truth = Labeler {
        link: config.link.clone(),
        direction: target_direction(),
        noise: config.noise,
    };
    let (w0, spectral) = initial_weights(config, seed, key, &weak, &law);
    let theta = target_direction();
    let spike = spike_direction(config.spike.1);
    let eta = config.spike.1;
    let rho_weak = weak.direction.dot_direction(&theta);

    let meter = match config.risk {
        RiskMethod::Exact => RiskMeter::Exact {
            beta: law.beta(),
            eta,
        },
        RiskMethod::MonteCarlo => {
            let mut rng = SimRng::stream(seed, key, Purpose::TestSet);
            RiskMeter::MonteCarlo {
                test: SampleMatrix::from_rows(config.n_test, d, |_, row| law.sample(&mut rng, row)),
            }
        }
    };
    let mut book = RiskBook::new();
    let risk_of =
        |book: &mut RiskBook, predictor: &Link, dir: &Direction, w: Option<&[f64]>| -> Risk {
            match &meter {
                RiskMeter::Exact { beta, eta } => {
                    let (m, s) = (dir.dot_direction(&theta), dir.dot_direction(&spike));
                    book.exact(predictor_risk(
                        predictor,
                        &config.link,
                        config.noise,
                        m,
                        s,
                        *eta,
                        *beta,
                    ))
                }
                RiskMeter::MonteCarlo { test } => {
                    let dense;
                    let p: &[f64] = match (w, dir) {
                        (Some(w), _) => w,
                        (None, Direction::Dense(v)) => v,
                        (None, sparse) => {
                            dense = sparse.to_dense(d);
                            &dense
                        }
                    };
                    let losses = (0..test.n)
                        .map(|i| {
                            let row = test.row(i);
                            let a: f64 = row.iter().zip(p).map(|(x, w)| *x as f64 * w).sum();
                            0.5 * (predictor.eval(a) - config.link.eval(row[0] as f64)).powi(2)
                        })
                        .collect();
                    book.sampled(losses, config.noise)
                }
            }
        };
    let risk_weak = risk_of(&mut book, &weak.link, &weak.direction, None);

    let checkpoints = config.checkpoints();
    let mut students = [Student::new(w0.clone()), Student::new(w0)];
    let mut trajectory = Vec::with_capacity(checkpoints.len());
    let mut risks = Vec::with_capacity(checkpoints.len());
    let mut last_t = 0;
    let mut sgd_rng = SimRng::stream(seed, key, Purpose::Sgd);
    let settings = SgdSettings {
        lr: config.lr,
        batch: config.batch,
    };
    let observe = |t: u64, s: &[Student; 2]| {
        progress(t - last_t);
        last_t = t;
        let (w2s, ceiling) = (s[0].weights(), s[1].weights());
        let r_w2s = risk_of(
            &mut book,
            &config.link,
            &Direction::Dense(w2s.clone()),
            Some(&w2s),
        );
        let r_ceil = risk_of(
            &mut book,
            &config.link,
            &Direction::Dense(ceiling.clone()),
            Some(&ceiling),
        );
        let se = book.diff_se(risk_weak, r_ceil);
        trajectory.push(TrajectoryPoint {
            t,
            tau: t as f64 / d as f64,
            m: s[0].overlap(&theta),
            r: s[0].overlap(&weak.direction),
            s: s[0].overlap(&spike),
            m_ceiling: s[1].overlap(&theta),
            risk_w2s: r_w2s.value,
            risk_ceiling: r_ceil.value,
            pgr: pgr(risk_weak.value, r_w2s.value, r_ceil.value, se),
        });
        risks.push((r_w2s, r_ceil));
    };
    train(
        &mut students,
        [&weak, &truth],
        &config.link,
        &law,
        settings,
        &mut sgd_rng,
        &checkpoints,
        observe,
    )
    .map_err(SimError::of_students)?;

    orient_even_link(config, &mut trajectory);
    let (_, final_ceil) = *risks.last().expect("risks recorded");
    let final_se = book.diff_se(risk_weak, final_ceil);
    let summary = RunSummary {
        outcome: Outcome::of(&trajectory, rho_weak, risk_weak.value, final_se),
        spectral,
        engine: EngineKind::Full,
        fallback_reason: None,
    };
    Ok(RunOutput {
        summary,
        trajectory,
    })
}

/// Samples a run processes (for progress bars).
pub fn run_cost(config: &SimConfig) -> u64 {
    let weak = match config.weak {
        Weak::Trained { n_train, .. } => n_train as u64,
        Weak::Direction { .. } => 0,
    };
    *config.checkpoints().last().expect("non-empty") + weak
}

/// Runs `jobs` (config, seed) on `threads` threads (0: all cores). Results come back in job order and are
/// identical for every thread count. `progress(n)` is called from worker threads.
pub fn simulate_all(
    jobs: &[(&SimConfig, u64)],
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Vec<Result<RunOutput, SimError>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    pool.install(|| {
        jobs.par_iter()
            .map(|(config, seed)| simulate(config, *seed, progress))
            .collect()
    })
}

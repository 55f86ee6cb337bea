//! The full engine: the d-dimensional students, O(d) per sample. It runs every config (the reduced
//! engine, [`crate::reduced`], only those [`SimConfig::reduction_obstacle`] lets through) and is
//! the reference the reduced engine is tested against. [`crate::engine::simulate`] picks the engine.

use crate::config::{Init, RiskMethod, SimConfig, Weak, Weighting};
use crate::link::Link;
use crate::model::{
    finetune_law, spike_direction, target_direction, weak_direction, DataLaw, Direction, Labeler,
};
use crate::outcome::{
    orient_even_link, pgr, EngineKind, Outcome, RunOutput, RunSummary, SimError, SpectralInfo,
    TrajectoryPoint,
};
use crate::rng::{Purpose, SimRng};
use crate::sgd::{train, SgdSettings, Student};
use crate::spectral::SampleMatrix;
use crate::theory::predictor_risk;

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

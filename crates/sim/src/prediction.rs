//! Theory for a config: what the d → ∞ limit predicts for the quantities a simulation reports.
//!
//! The initial overlaps are the limits of each init: BBP for spectral (sign taken correct), `m0` for the
//! oracle init, and the typical `d^−1/2` for a random start (the ODE's unstable fixed point at 0 is
//! otherwise never left, which is the d → ∞ statement of "a random start does not learn"). A trained weak
//! model's overlap ρ comes from the same ODE run on ground truth for `n_train/d` time.

use serde::Serialize;

use crate::config::{FinetuneData, Init, SimConfig, Weak};
use crate::link::Link;
use crate::outcome::{pgr, Outcome, TrajectoryPoint};
use crate::theory::{
    bbp_overlap, bbp_top_eigenvalue, escape_samples_scale, geodesic_peak, predictor_risk, Geometry,
    OverlapOde,
};

/// Theory summary: the simulation's summary columns plus the limits they come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TheorySummary {
    #[serde(flatten)]
    pub outcome: Outcome,
    /// BBP limit of the spectral overlap with θ* (None unless init = spectral).
    pub bbp_overlap: Option<f64>,
    pub bbp_eigenvalue: Option<f64>,
    pub above_bbp: Option<bool>,
    /// Geodesic (lr → 0) peak overlap from this start.
    pub geodesic_peak: f64,
    pub information_exponent: Option<usize>,
    /// Order of samples to escape a random start (d, d log d, d^(k−1)).
    pub escape_samples: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TheoryOutput {
    pub summary: TheorySummary,
    pub trajectory: Vec<TrajectoryPoint>,
}

/// The d → ∞ predictions for `config`, on the same τ grid as its simulation.
pub fn predict(config: &SimConfig) -> TheoryOutput {
    let d = config.d as f64;
    let (beta_pre, eta) = config.spike;
    let beta_ft = match config.finetune_data {
        FinetuneData::Isotropic => 0.0,
        FinetuneData::Spiked => beta_pre,
    };
    // A random start has overlaps of order d^-1/2 with random sign. With information exponent 1 the drift
    // at 0 is non-zero and the mean path starts at 0; otherwise 0 is a fixed point and the typical
    // magnitude d^-1/2 is what sets the escape.
    let typical = if config.link.information_exponent() == Some(1) {
        0.0
    } else {
        1.0 / d.sqrt()
    };
    // Training on ground truth (the ceiling, and a trained weak model with its own lr).
    let ground_truth = OverlapOde {
        student: config.link.clone(),
        label_link: config.link.clone(),
        label_noise: config.noise,
        geometry: Geometry {
            label_target_overlap: 1.0,
            label_spike_overlap: eta,
            eta,
            beta: beta_ft,
        },
        lr: config.lr,
    };
    // The weak supervisor: (ρ, κ = θ_w·v, link, label noise).
    let (rho, kappa, weak_link, weak_noise) = match &config.weak {
        Weak::Direction { rho, link, noise } => (*rho, rho * eta, link.clone(), *noise),
        Weak::Trained { n_train, lr, noise } => {
            let ode = OverlapOde {
                lr: *lr,
                ..ground_truth.clone()
            };
            let start = [typical, typical, typical * (eta + (1.0 - eta * eta).sqrt())];
            let [m, _, s] = ode.solve(start, &[*n_train as f64 / d])[0];
            (m, s, config.link.clone(), *noise)
        }
    };
    let (start, bbp) = match &config.init {
        Init::Random => {
            let b = (1.0 - rho * rho).max(0.0).sqrt();
            let u = (1.0 - eta * eta).max(0.0).sqrt();
            ([typical, typical * (rho + b), typical * (eta + u)], None)
        }
        Init::Overlap { m0 } => ([*m0, rho * m0, eta * m0], None),
        Init::Spectral { n_pre, beta, .. } => {
            let gamma = d / *n_pre as f64;
            // BBP limit of the overlap with the spike v. At finite d the rest of the eigenvector adds an
            // O(d^-1/2) overlap: start the ODE at the root-mean-square value, so that below the threshold it
            // starts like a random start (0 is a fixed point the finite-d process does leave).
            let limit = bbp_overlap(*beta, gamma, 1.0);
            let o = (limit * limit + (1.0 - limit * limit) / d).sqrt();
            (
                [eta * o, kappa * o, o],
                Some((
                    eta * limit,
                    bbp_top_eigenvalue(*beta, gamma),
                    beta * beta > gamma,
                )),
            )
        }
    };
    let checkpoints = config.checkpoints();
    let taus: Vec<f64> = checkpoints.iter().map(|&t| t as f64 / d).collect();
    let w2s = OverlapOde {
        student: config.link.clone(),
        label_link: weak_link.clone(),
        label_noise: weak_noise,
        geometry: Geometry {
            label_target_overlap: rho,
            label_spike_overlap: kappa,
            eta,
            beta: beta_ft,
        },
        lr: config.lr,
    };
    let ceiling = ground_truth;
    let path_w2s = w2s.solve(start, &taus);
    let path_ceiling = ceiling.solve([start[0], start[0], start[2]], &taus);
    let risk = |link: &Link, m: f64, s: f64| {
        predictor_risk(link, &config.link, config.noise, m, s, eta, beta_ft)
    };
    let risk_weak = risk(&weak_link, rho, kappa);
    let trajectory: Vec<TrajectoryPoint> = checkpoints
        .iter()
        .zip(&taus)
        .zip(path_w2s.iter().zip(&path_ceiling))
        .map(|((&t, &tau), (w, c))| {
            let (rw, rc) = (
                risk(&config.link, w[0], w[2]),
                risk(&config.link, c[0], c[2]),
            );
            TrajectoryPoint {
                t,
                tau,
                m: w[0],
                r: w[1],
                s: w[2],
                m_ceiling: c[0],
                risk_w2s: rw,
                risk_ceiling: rc,
                pgr: pgr(risk_weak, rw, rc, 0.0),
            }
        })
        .collect();
    let k = config.link.information_exponent();
    let summary = TheorySummary {
        outcome: Outcome::of(&trajectory, rho, risk_weak, 0.0),
        bbp_overlap: bbp.map(|b| b.0),
        bbp_eigenvalue: bbp.map(|b| b.1),
        above_bbp: bbp.map(|b| b.2),
        geodesic_peak: geodesic_peak(rho, start[0], start[1]),
        information_exponent: k,
        escape_samples: k.map(|k| escape_samples_scale(k, config.d)),
    };
    TheoryOutput {
        summary,
        trajectory,
    }
}

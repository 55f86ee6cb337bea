//! What a run produces, whichever engine ran it: the trajectory, the summary and its outcome, the
//! engine's name, and why a run failed; with the two computations both engines apply to their
//! results (PGR, and the sign convention of an even link).

use serde::Serialize;

use crate::config::SimConfig;
use crate::sgd::Diverged;

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

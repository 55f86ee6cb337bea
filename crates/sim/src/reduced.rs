//! The reduced engine: the same finite-d process as the full engine, exact in distribution, at a cost
//! per SGD step that does not depend on d.
//!
//! ## Why the process reduces
//! Let U = span(e₀, e₁, e₂) ⊇ span(θ*, θ_w, v) (k = 3; see [`crate::model`]) and split every covariate
//! as `x = x_U + x_⊥`. For isotropic or spiked data (the spike lies in U), `x_⊥ ~ N(0, I)` on U^⊥,
//! independent of `x_U`, and every label depends on `x_U` only. The law of the data is therefore
//! invariant under every rotation R of U^⊥ (R fixes U), and so is the SGD update:
//! `step(Rw, Rx) = R step(w, x)`. Consequently the joint law of the future of both students, given the
//! past, depends on their weights only through quantities that such rotations leave unchanged: their
//! U-coordinates and the Gram matrix of their U^⊥-parts.
//!
//! ## The state
//! The w2s and ceiling students see the same samples (common random numbers), so their U^⊥-parts
//! `o_w` and `o_c` are different vectors whose inner product matters. Both lie in a 2-dimensional
//! subspace with an orthonormal frame (f₁, f₂) of U^⊥ chosen as their Gram–Schmidt frame:
//! `o_w = a f₁`, `o_c = b f₁ + c f₂` with a, c ≥ 0. The state is
//! `(w_U, a)` for the w2s student and `(w_U, b, c)` for the ceiling: 9 numbers, `|w| = 1` each.
//!
//! ## One batch of B samples
//! Given the past, the frame is a fixed orthonormal pair in U^⊥, so for each sample
//! - `x_U`: 3 standard normals, modified by the spike exactly as [`crate::model::DataLaw::sample`] does;
//! - `ξ = (f₁·x_⊥, f₂·x_⊥)`: 2 standard normals, independent of x_U;
//! - the rest, `r = x_⊥ − ξ₁ f₁ − ξ₂ f₂`: standard Gaussian on the (n = d − 5)-dimensional space
//!   W = (U ⊕ span(f₁, f₂))^⊥, independent of everything else.
//!
//! Each student's pre-activation is `z = w_U·x_U + o·ξ` (o = (a, 0) or (b, c) in the frame), the label
//! comes from x_U, and the per-sample factor is `G = (σ(z) − y) σ'(z)`. The spherical step
//! `w' ∝ (1 + c Σ G z) w − c Σ G x` (c = lr/d) gives
//! - U-part: `(1 + c Σ G z) w_U − c Σ G x_U`;
//! - frame part: `(1 + c Σ G z) o − c Σ G ξ`;
//! - W-part: `−c y` with `y = Σ_i G_i r_i`.
//!
//! Only the two vectors `y_w = R Gʷ`, `y_c = R Gᶜ` enter (R = [r₁ … r_B], n × B with i.i.d. N(0,1)
//! entries in any orthonormal basis of W, independent of the G's). Conditionally on the G's, the n rows
//! of `Y = [y_w y_c] = R A` (A = [Gʷ Gᶜ], B × 2) are i.i.d. `N(0, M)` with `M = AᵀA` (2 × 2). Write
//! `M = L Lᵀ` (Cholesky, L lower triangular, rank-deficient M allowed) and `Y = Z Lᵀ` with Z n × 2
//! standard Gaussian; the Bartlett decomposition `Z = Q T` has Q Haar-distributed with orthonormal
//! columns (g₁, g₂) independent of `T = [[χ_n, N(0,1)], [0, χ_{n−1}]]`. So in the orthonormal basis
//! (g₁, g₂) of W, `y_w = (T₁₁ L₁₁, 0)` and `y_c = (T₁₁ L₂₁ + T₁₂ L₂₂, T₂₂ L₂₂)`: 3 draws per batch,
//! whatever B and d are (a 2 × 2 Wishart with n degrees of freedom and scale M). For B = 1, M has rank
//! one and `y = χ_n (Gʷ, Gᶜ)` along g₁: one χ draw.
//!
//! The new U^⊥-parts now lie in span(f₁, f₂, g₁, g₂) with known coordinates; after normalizing each
//! student, the Gram–Schmidt frame of the two new parts (a', b', c' by the Lagrange identity
//! `|p|²|q|² = (p·q)² + |p ∧ q|²`, accurate when the parts are nearly parallel) is the next frame. That
//! the next frame is a function of the past and of (g₁, g₂), whose own law never enters again, is
//! exactly where rotation invariance is used: the next batch is fresh data, and its coordinates in any
//! orthonormal frame measurable with respect to the past are again standard Gaussian.
//!
//! Per sample: 5 normals (+1 per noisy label) and per batch one χ² (Marsaglia–Tsang: one normal and
//! one uniform), plus O(1) arithmetic. χ² with n ≈ 10⁶ degrees of freedom is drawn exactly, never by a
//! normal approximation ([`crate::distributions`]).
//!
//! ## Initializations
//! - random: `w = g/|g|` with `g_U` 3 normals and `|g_⊥|² ~ χ²(d − 3)`;
//! - overlap: `w = m₀ e₀ + sqrt(1−m₀²) ζ`, ζ uniform on e₀^⊥: 2 normals and a χ²(d − 3);
//! - spectral: the top eigenvector w of the pre-training covariance has `|<w, v>|` and the eigenvalue
//!   from the spiked bidiagonal model ([`crate::reduced_spectral`]); by invariance under rotations fixing
//!   v, its part orthogonal to v is uniform on v^⊥ (coordinates along e₁ and `v' = sqrt(1−η²) e₀ − η e₂`
//!   are 2 normals, the rest a χ²(d − 3)), and its sign is a fair coin, like Lanczos's. The sign test
//!   on n_sign weak-labelled samples needs only `w·x = w_U·x_U + a ξ`: 4 normals per sample.
//!
//! Both students start from the same w, so the initial frame is (f₁ = o/|o|, any f₂) with c = 0.
//!
//! ## What does not reduce (the full engine runs instead; see [`obstacle`])
//! A trained weak model (a dense direction outside U), Monte Carlo risk (a d-dimensional test set), the
//! label-weighted spectral init (its covariance is not a spiked Wishart matrix), and d < 5 (no room for
//! the 2-dimensional frame). Exact risk needs only the overlaps m and s, so it is computed as in the
//! full engine.
//!
//! Divergence is reported at the exact batch whose step overflows (its squared norm is not a finite
//! positive number: learning rates so large that |c G| ≳ 10¹⁵⁰).

use crate::config::{Init, SimConfig, Weak};
use crate::distributions::{ChiSquare, Draws, NormalStream};
use crate::link::Link;
use crate::model::finetune_law;
use crate::model::{
    spike_direction, target_direction, weak_direction, DataLaw, Direction, Labeler,
};
use crate::outcome::{
    orient_even_link, pgr, EngineKind, Outcome, RunOutput, RunSummary, SimError, SpectralInfo,
    TrajectoryPoint,
};
use crate::reduced_spectral::spiked_top_eigen;
use crate::rng::{Purpose, SimRng};
use crate::sgd::{Diverged, SgdSettings};
use crate::theory::predictor_risk;

/// Why `config` cannot run on the reduced engine, naming the key; `None` when it can (the question
/// is the config's: [`SimConfig::reduction_obstacle`]).
pub fn obstacle(config: &SimConfig) -> Option<String> {
    config.reduction_obstacle()
}

/// Both students of a run in the common frame (see the module docs): w2s is student 0, ceiling 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pair {
    /// Coordinates on U = span(e₀, e₁, e₂).
    pub on_u: [[f64; 3]; 2],
    /// U^⊥-parts in the frame (f₁, f₂): w2s `(a, 0)`, ceiling `(b, c)`.
    pub perp: [[f64; 2]; 2],
}

impl Pair {
    /// Both students at the same unit vector `(on_u, a f₁)`.
    pub fn same(on_u: [f64; 3], a: f64) -> Self {
        Self {
            on_u: [on_u; 2],
            perp: [[a, 0.0]; 2],
        }
    }

    /// `<w_student, direction>` for a direction in U.
    pub fn overlap(&self, student: usize, direction: &[f64; 3]) -> f64 {
        dot3(&self.on_u[student], direction)
    }
}

#[inline]
fn dot3(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// A direction's coordinates on U, if it lies in U.
pub fn in_u(direction: &Direction) -> Option<[f64; 3]> {
    match direction {
        Direction::Sparse(entries) => {
            let mut out = [0.0; 3];
            for &(i, a) in entries {
                *out.get_mut(i)? += a;
            }
            Some(out)
        }
        Direction::Dense(_) => None,
    }
}

/// What one batch contributes to the update, besides its residual part: for each student,
/// `Σ G z`, `Σ G x_U` and `Σ G ξ`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchSums {
    pub gz: [f64; 2],
    pub gx_u: [[f64; 3]; 2],
    pub gxi: [[f64; 2]; 2],
}

/// The spherical step of both students from the batch sums and the coordinates of `Σ_i G_i r_i` in an
/// orthonormal basis (g₁, g₂) of the residual space; returns the next state in its new frame, or the
/// index of a student whose step overflowed.
///
/// Normalization and the next Gram–Schmidt frame come from the same unnormalized vectors, so their
/// square roots and divisions are independent of each other: the steps of a run are sequential, and
/// this keeps the dependency chain of one step short.
#[inline]
pub fn update(
    pair: &Pair,
    c: f64,
    sums: &BatchSums,
    residual: &[[f64; 2]; 2],
) -> Result<Pair, usize> {
    let mut u = [[0.0; 3]; 2];
    let mut p = [[0.0; 4]; 2];
    for s in 0..2 {
        let k = 1.0 + c * sums.gz[s];
        u[s] = std::array::from_fn(|j| k * pair.on_u[s][j] - c * sums.gx_u[s][j]);
        p[s] = [
            k * pair.perp[s][0] - c * sums.gxi[s][0],
            k * pair.perp[s][1] - c * sums.gxi[s][1],
            -c * residual[s][0],
            -c * residual[s][1],
        ];
    }
    let dot4 = |a: &[f64; 4], b: &[f64; 4]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3];
    let (pp, pq, qq) = (dot4(&p[0], &p[0]), dot4(&p[0], &p[1]), dot4(&p[1], &p[1]));
    let norm2 = [dot3(&u[0], &u[0]) + pp, dot3(&u[1], &u[1]) + qq];
    for (s, n) in norm2.iter().enumerate() {
        // Divergence: the unnormalized step overflowed (or is NaN). Only absurd learning rates get
        // there (|c G| ≳ 10¹⁵⁰), where the full engine's weights overflow too.
        if !(n.is_finite() && *n > 0.0) {
            return Err(s);
        }
    }
    // |p ∧ q|², the left side of the Lagrange identity |p|²|q|² = (p·q)² + |p ∧ q|²: accurate when the
    // two parts are nearly parallel, where |q|² − (p·q)²/|p|² would cancel.
    let mut wedge2 = 0.0;
    for i in 0..4 {
        for j in i + 1..4 {
            let w = p[0][i] * p[1][j] - p[0][j] * p[1][i];
            wedge2 += w * w;
        }
    }
    let scale = [1.0 / norm2[0].sqrt(), 1.0 / norm2[1].sqrt()];
    let on_u = [u[0].map(|v| v * scale[0]), u[1].map(|v| v * scale[1])];
    let len_p = pp.sqrt();
    let perp = if len_p > 0.0 {
        // Coordinates [(a, 0), (b, c)] of the normalized parts in their Gram–Schmidt frame (a, c ≥ 0).
        let inv = 1.0 / len_p;
        [
            [len_p * scale[0], 0.0],
            [pq * inv * scale[1], wedge2.sqrt() * inv * scale[1]],
        ]
    } else {
        // The w2s part vanished (probability zero): the ceiling's part alone defines f₁.
        [[0.0, 0.0], [qq.sqrt() * scale[1], 0.0]]
    };
    Ok(Pair { on_u, perp })
}

/// Coordinates of `y_w = Σ G^w_i r_i` and `y_c = Σ G^c_i r_i` in an orthonormal basis of their span,
/// given `gram = (Σ G^w², Σ G^w G^c, Σ G^c²)`, by the 2 × 2 Bartlett decomposition (module docs).
pub fn residual_coordinates(
    gram: [f64; 3],
    chi_n: &ChiSquare,
    chi_n_minus_1: &ChiSquare,
    draws: &mut impl Draws,
) -> [[f64; 2]; 2] {
    let [p, q, r] = gram;
    let l11 = p.max(0.0).sqrt();
    let l21 = if l11 > 0.0 { q / l11 } else { 0.0 };
    let l22 = (r - l21 * l21).max(0.0).sqrt();
    let t11 = chi_n.sample(draws).sqrt();
    let t12 = draws.normal();
    let t22 = chi_n_minus_1.sample(draws).sqrt();
    [[t11 * l11, 0.0], [t11 * l21 + t12 * l22, t22 * l22]]
}

/// One label source in U: `link(direction·x_U) + noise_sd ε`.
#[derive(Clone, Debug)]
struct Source {
    link: Link,
    direction: [f64; 3],
    noise_sd: f64,
}

/// Online spherical SGD of a w2s/ceiling pair on data whose law is invariant under rotations of U^⊥.
#[derive(Clone, Debug)]
pub struct ReducedSgd {
    d: usize,
    link: Link,
    sources: [Source; 2],
    /// `(v, sqrt(1+β) − 1)` for spiked data.
    spike: Option<([f64; 3], f64)>,
    /// `lr / d`.
    c: f64,
    batch: usize,
    /// χ²(d − 5) and χ²(d − 6) (the residual space and the Bartlett decomposition's second column).
    chi_n: ChiSquare,
    chi_n_minus_1: ChiSquare,
    /// d = 5: the residual space is empty, no residual part and no draw.
    has_residual: bool,
}

impl ReducedSgd {
    /// Student j learns from `labelers[j]`, with student link `link`, on data from `law`. `None` unless
    /// every direction lies in U = span(e₀, e₁, e₂) and d ≥ 5.
    pub fn new(
        labelers: [&Labeler; 2],
        link: &Link,
        law: &DataLaw,
        settings: SgdSettings,
    ) -> Option<Self> {
        let d = law.d;
        if d < 5 {
            return None;
        }
        let source = |l: &Labeler| -> Option<Source> {
            Some(Source {
                link: l.link.clone(),
                direction: in_u(&l.direction)?,
                noise_sd: l.noise.sqrt(),
            })
        };
        let spike = match &law.spike {
            Some((beta, v)) => Some((in_u(v)?, (1.0 + beta).sqrt() - 1.0)),
            None => None,
        };
        let n = (d - 5) as f64;
        Some(Self {
            d,
            link: link.clone(),
            sources: [source(labelers[0])?, source(labelers[1])?],
            spike,
            c: settings.lr / d as f64,
            batch: settings.batch.max(1),
            chi_n: ChiSquare::new(n),
            chi_n_minus_1: ChiSquare::new((n - 1.0).max(0.0)),
            has_residual: d > 5,
        })
    }

    /// One batch: draws its samples and returns the next state (or the diverging student).
    #[inline]
    fn step(&self, pair: &Pair, draws: &mut NormalStream) -> Result<Pair, usize> {
        let mut sums = BatchSums::default();
        let mut gram = [0.0; 3];
        let mut g = [0.0; 2];
        for _ in 0..self.batch {
            let mut x = [draws.normal(), draws.normal(), draws.normal()];
            if let Some((v, k)) = &self.spike {
                let proj = k * dot3(v, &x);
                x.iter_mut().zip(v).for_each(|(xj, vj)| *xj += proj * vj);
            }
            let xi = [draws.normal(), draws.normal()];
            for (s, source) in self.sources.iter().enumerate() {
                let mut y = source.link.eval(dot3(&source.direction, &x));
                if source.noise_sd > 0.0 {
                    y += source.noise_sd * draws.normal();
                }
                let z = dot3(&pair.on_u[s], &x) + pair.perp[s][0] * xi[0] + pair.perp[s][1] * xi[1];
                let (f, df) = self.link.eval_and_deriv(z);
                let gs = (f - y) * df;
                g[s] = gs;
                sums.gz[s] += gs * z;
                sums.gx_u[s]
                    .iter_mut()
                    .zip(&x)
                    .for_each(|(acc, xj)| *acc += gs * xj);
                sums.gxi[s][0] += gs * xi[0];
                sums.gxi[s][1] += gs * xi[1];
            }
            gram[0] += g[0] * g[0];
            gram[1] += g[0] * g[1];
            gram[2] += g[1] * g[1];
        }
        let residual = if !self.has_residual {
            [[0.0; 2]; 2]
        } else if self.batch == 1 {
            // Rank one: y = χ_n (G^w, G^c) along g₁.
            let chi = self.chi_n.sample(draws).sqrt();
            [[chi * g[0], 0.0], [chi * g[1], 0.0]]
        } else {
            residual_coordinates(gram, &self.chi_n, &self.chi_n_minus_1, draws)
        };
        update(pair, self.c, &sums, &residual)
    }

    /// Trains the pair on fresh samples, calling `observe(samples_seen, pair)` at each entry of
    /// `checkpoints` (sorted sample counts; 0 allowed; rounded up to whole batches), like
    /// [`crate::sgd::train`].
    pub fn train(
        &self,
        pair: &mut Pair,
        draws: &mut NormalStream,
        checkpoints: &[u64],
        mut observe: impl FnMut(u64, &Pair),
    ) -> Result<(), Diverged> {
        let batch = self.batch as u64;
        let mut t: u64 = 0;
        for &checkpoint in checkpoints {
            while t < checkpoint {
                *pair = self.step(pair, draws).map_err(|student| Diverged {
                    student,
                    sample: t + batch,
                    tau: (t + batch) as f64 / self.d as f64,
                })?;
                t += batch;
            }
            observe(t, pair);
        }
        Ok(())
    }
}

/// A unit vector `(w_U, a)` as `w_U = scale · g / N`, `a = scale · sqrt(χ²) / N`, `N = sqrt(|g|² + χ²)`:
/// the U-coordinates and U^⊥-norm of `scale` times a uniform unit vector whose U-part is g.
fn spread(g: [f64; 3], chi2: f64, scale: f64) -> ([f64; 3], f64) {
    let norm = (dot3(&g, &g) + chi2).sqrt();
    if norm == 0.0 {
        // Probability zero (d ≥ 5 puts χ²(d−3) > 0 a.s.); any unit vector is then as good.
        return ([0.0, 0.0, 0.0], scale);
    }
    (g.map(|x| scale * x / norm), scale * chi2.sqrt() / norm)
}

/// The initial pair and, for a spectral start, its diagnostics.
fn initial_pair(
    config: &SimConfig,
    seed: u64,
    key: u64,
    weak: &Labeler,
    finetune: &DataLaw,
) -> (Pair, Option<SpectralInfo>) {
    let d = config.d;
    let mut draws = NormalStream::new(SimRng::stream(seed, key, Purpose::Init));
    let rest = ChiSquare::new((d - 3) as f64);
    match &config.init {
        Init::Random => {
            let g = [draws.normal(), draws.normal(), draws.normal()];
            let chi2 = rest.sample(&mut draws);
            let (on_u, a) = spread(g, chi2, 1.0);
            (Pair::same(on_u, a), None)
        }
        Init::Overlap { m0 } => {
            let g = [0.0, draws.normal(), draws.normal()];
            let chi2 = rest.sample(&mut draws);
            let (mut on_u, a) = spread(g, chi2, (1.0 - m0 * m0).max(0.0).sqrt());
            on_u[0] = *m0;
            (Pair::same(on_u, a), None)
        }
        Init::Spectral {
            n_pre,
            beta,
            eta,
            n_sign,
            ..
        } => {
            let mut pre = NormalStream::new(SimRng::stream(seed, key, Purpose::Pretrain));
            let top = spiked_top_eigen(*n_pre, d, *beta, &mut pre);
            let o = top.spike_overlap;
            // w = o v + sqrt(1 − o²) ζ, ζ uniform on v^⊥; v^⊥ ∩ U is spanned by e₁ and v'.
            let u = (1.0 - eta * eta).max(0.0).sqrt();
            let v = [*eta, 0.0, u];
            let v_perp = [u, 0.0, -eta];
            let (g_v, g_1) = (draws.normal(), draws.normal());
            let chi2 = rest.sample(&mut draws);
            let (zeta, a) = spread([g_v, g_1, 0.0], chi2, (1.0 - o * o).max(0.0).sqrt());
            let mut on_u: [f64; 3] = std::array::from_fn(|j| {
                o * v[j] + zeta[0] * v_perp[j] + if j == 1 { zeta[1] } else { 0.0 }
            });
            // The eigenvector's sign is arbitrary: a fair coin, as Lanczos's sign is.
            if draws.uniform() < 0.5 {
                on_u = on_u.map(|x| -x);
            }
            // Sign from weak-labelled fine-tuning samples: Σ y σ(w·x), w·x = w_U·x_U + a ξ.
            let mut sign = NormalStream::new(SimRng::stream(seed, key, Purpose::SignFix));
            let spike = finetune
                .spike
                .as_ref()
                .and_then(|(b, v)| Some((in_u(v)?, (1.0 + b).sqrt() - 1.0)));
            let weak_dir = in_u(&weak.direction).expect("a reducible weak direction lies in U");
            let noise_sd = weak.noise.sqrt();
            let mut stat = 0.0;
            for _ in 0..*n_sign {
                let mut x = [sign.normal(), sign.normal(), sign.normal()];
                if let Some((v, k)) = &spike {
                    let proj = k * dot3(v, &x);
                    x.iter_mut().zip(v).for_each(|(xi, vi)| *xi += proj * vi);
                }
                let xi = sign.normal();
                let mut y = weak.link.eval(dot3(&weak_dir, &x));
                if noise_sd > 0.0 {
                    y += noise_sd * sign.normal();
                }
                stat += y * config.link.eval(dot3(&on_u, &x) + a * xi);
            }
            let flip = stat < 0.0;
            if flip {
                on_u = on_u.map(|x| -x);
            }
            let info = SpectralInfo {
                eigenvalue: top.eigenvalue,
                lanczos_iterations: 0,
                converged: top.residual <= 1e-10 * top.eigenvalue.abs(),
                sign_flipped: flip,
            };
            (Pair::same(on_u, a), Some(info))
        }
    }
}

/// Simulates one run on the reduced engine. The caller checks [`obstacle`] first; a config that does
/// not reduce is a programming error here.
pub fn simulate_reduced(
    config: &SimConfig,
    seed: u64,
    progress: &dyn Fn(u64),
) -> Result<RunOutput, SimError> {
    debug_assert!(obstacle(config).is_none());
    let d = config.d;
    let key = config.stream_key();
    let law = finetune_law(config);
    let Weak::Direction { rho, link, noise } = &config.weak else {
        unreachable!("obstacle() sends trained weak models to the full engine")
    };
    let weak = Labeler {
        link: link.clone(),
        direction: weak_direction(*rho),
        noise: *noise,
    };
    let truth = Labeler {
        link: config.link.clone(),
        direction: target_direction(),
        noise: config.noise,
    };
    let (mut pair, spectral) = initial_pair(config, seed, key, &weak, &law);
    let eta = config.spike.1;
    let beta = law.beta();
    let theta_w = in_u(&weak.direction).expect("weak direction in U");
    let spike = in_u(&spike_direction(eta)).expect("spike in U");
    let risk = |predictor: &Link, m: f64, s: f64| {
        predictor_risk(predictor, &config.link, config.noise, m, s, eta, beta)
    };
    let risk_weak = risk(&weak.link, *rho, dot3(&theta_w, &spike));

    let settings = SgdSettings {
        lr: config.lr,
        batch: config.batch,
    };
    let sgd = ReducedSgd::new([&weak, &truth], &config.link, &law, settings)
        .expect("reducible configs have directions in U and d ≥ 5");
    let checkpoints = config.checkpoints();
    let mut trajectory = Vec::with_capacity(checkpoints.len());
    let mut last_t = 0;
    let mut draws = NormalStream::new(SimRng::stream(seed, key, Purpose::Sgd));
    let e0 = [1.0, 0.0, 0.0];
    sgd.train(&mut pair, &mut draws, &checkpoints, |t, p| {
        progress(t - last_t);
        last_t = t;
        let (m, s) = (p.overlap(0, &e0), p.overlap(0, &spike));
        let (mc, sc) = (p.overlap(1, &e0), p.overlap(1, &spike));
        let (rw, rc) = (risk(&config.link, m, s), risk(&config.link, mc, sc));
        trajectory.push(TrajectoryPoint {
            t,
            tau: t as f64 / d as f64,
            m,
            r: p.overlap(0, &theta_w),
            s,
            m_ceiling: mc,
            risk_w2s: rw,
            risk_ceiling: rc,
            pgr: pgr(risk_weak, rw, rc, 0.0),
        });
    })
    .map_err(SimError::of_students)?;
    orient_even_link(config, &mut trajectory);
    Ok(RunOutput {
        summary: RunSummary {
            outcome: Outcome::of(&trajectory, *rho, risk_weak, 0.0),
            spectral,
            engine: EngineKind::Reduced,
            fallback_reason: None,
        },
        trajectory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels;

    /// A dense random orthonormal pair (f₁, f₂) in U^⊥ of R^d.
    fn frame(d: usize, rng: &mut SimRng) -> (Vec<f64>, Vec<f64>) {
        let mut f1 = rng.unit_vector(d);
        f1[..3].iter_mut().for_each(|x| *x = 0.0);
        let n1 = kernels::norm_squared(&f1).sqrt();
        f1.iter_mut().for_each(|x| *x /= n1);
        let mut f2 = rng.unit_vector(d);
        f2[..3].iter_mut().for_each(|x| *x = 0.0);
        let c = kernels::dot(&f1, &f2);
        f2.iter_mut().zip(&f1).for_each(|(x, y)| *x -= c * y);
        let n2 = kernels::norm_squared(&f2).sqrt();
        f2.iter_mut().for_each(|x| *x /= n2);
        (f1, f2)
    }

    fn dense(pair: &Pair, s: usize, f1: &[f64], f2: &[f64]) -> Vec<f64> {
        let mut w: Vec<f64> = f1
            .iter()
            .zip(f2)
            .map(|(a, b)| pair.perp[s][0] * a + pair.perp[s][1] * b)
            .collect();
        w[..3].copy_from_slice(&pair.on_u[s]);
        w
    }

    /// The reduced update, fed the exact coordinates of a dense batch, reproduces the dense spherical
    /// step: U-coordinates, norms and the inner product of the new U^⊥-parts, to rounding.
    #[test]
    fn update_reproduces_the_dense_step() {
        let d = 23;
        let mut rng = SimRng::from_seed(31);
        let (f1, f2) = frame(d, &mut rng);
        let link = Link::Hermite(3);
        let weak = [0.6, 0.8, 0.0];
        for batch in [1usize, 2, 5] {
            for spiked in [false, true] {
                let pair = Pair {
                    on_u: [[0.3, -0.2, 0.1], [0.5, 0.1, -0.3]],
                    perp: [
                        [(1.0f64 - 0.14).sqrt(), 0.0],
                        [0.4, (1.0f64 - 0.35 - 0.16).sqrt()],
                    ],
                };
                let w: Vec<Vec<f64>> = (0..2).map(|s| dense(&pair, s, &f1, &f2)).collect();
                let law = if spiked {
                    DataLaw::spiked(d, 2.0, spike_direction(0.6))
                } else {
                    DataLaw::isotropic(d)
                };
                let c = 0.7 / d as f64;
                let mut sums = BatchSums::default();
                let mut dense_steps = vec![vec![0.0; d]; 2];
                let mut gz = [0.0; 2];
                let mut y_res = vec![vec![0.0; d]; 2];
                for _ in 0..batch {
                    let mut x = vec![0.0; d];
                    law.sample(&mut rng, &mut x);
                    let x_u = [x[0], x[1], x[2]];
                    let xi = [kernels::dot(&f1, &x), kernels::dot(&f2, &x)];
                    let mut r = x.clone();
                    r[..3].iter_mut().for_each(|v| *v = 0.0);
                    r.iter_mut()
                        .zip(f1.iter().zip(&f2))
                        .for_each(|(v, (a, b))| *v -= xi[0] * a + xi[1] * b);
                    let labels = [link.eval(dot3(&weak, &x_u)), link.eval(x[0])];
                    for s in 0..2 {
                        let z = kernels::dot(&w[s], &x);
                        let (f, df) = link.eval_and_deriv(z);
                        let g = (f - labels[s]) * df;
                        gz[s] += g * z;
                        dense_steps[s]
                            .iter_mut()
                            .zip(&x)
                            .for_each(|(a, b)| *a += g * b);
                        y_res[s].iter_mut().zip(&r).for_each(|(a, b)| *a += g * b);
                        sums.gz[s] += g * z;
                        sums.gx_u[s]
                            .iter_mut()
                            .zip(&x_u)
                            .for_each(|(acc, xj)| *acc += g * xj);
                        sums.gxi[s][0] += g * xi[0];
                        sums.gxi[s][1] += g * xi[1];
                    }
                }
                // Coordinates of y_w, y_c in their own Gram–Schmidt basis of W (the remainder of y_c
                // formed explicitly: for batch 1 it is exactly 0, up to rounding).
                let nw = kernels::norm_squared(&y_res[0]).sqrt();
                let proj = kernels::dot(&y_res[0], &y_res[1]) / nw;
                let remainder: Vec<f64> = y_res[1]
                    .iter()
                    .zip(&y_res[0])
                    .map(|(yc, yw)| yc - proj * yw / nw)
                    .collect();
                let residual = [[nw, 0.0], [proj, kernels::norm_squared(&remainder).sqrt()]];
                let next = update(&pair, c, &sums, &residual).unwrap();
                // Dense step and normalization.
                let new: Vec<Vec<f64>> = (0..2)
                    .map(|s| {
                        let mut v: Vec<f64> = w[s]
                            .iter()
                            .zip(&dense_steps[s])
                            .map(|(a, b)| (1.0 + c * gz[s]) * a - c * b)
                            .collect();
                        let n = kernels::norm_squared(&v).sqrt();
                        v.iter_mut().for_each(|x| *x /= n);
                        v
                    })
                    .collect();
                let perp_part = |v: &[f64]| -> Vec<f64> {
                    let mut p = v.to_vec();
                    p[..3].iter_mut().for_each(|x| *x = 0.0);
                    p
                };
                let (pw, pc) = (perp_part(&new[0]), perp_part(&new[1]));
                let a = kernels::norm_squared(&pw).sqrt();
                let b = kernels::dot(&pw, &pc) / a;
                let cc = (kernels::norm_squared(&pc) - b * b).sqrt();
                for (reduced, dense) in next.on_u.iter().zip(&new) {
                    for (a, b) in reduced.iter().zip(dense) {
                        assert!((a - b).abs() < 1e-13, "batch {batch}");
                    }
                }
                assert!((next.perp[0][0] - a).abs() < 1e-13);
                assert_eq!(next.perp[0][1], 0.0);
                assert!((next.perp[1][0] - b).abs() < 1e-13);
                assert!(
                    (next.perp[1][1] - cc).abs() < 1e-10,
                    "{} vs {cc}",
                    next.perp[1][1]
                );
            }
        }
    }

    #[test]
    fn residual_coordinates_have_the_wishart_law() {
        // y_w, y_c have Gram matrix Wishart₂(n, M): mean n M, Var(entry ij) = n (M_ij² + M_ii M_jj).
        let gram = [2.0, -0.7, 0.5];
        let n = 40.0;
        let (chi_n, chi_n1) = (ChiSquare::new(n), ChiSquare::new(n - 1.0));
        let mut draws = NormalStream::new(SimRng::from_seed(12));
        let reps = 100_000;
        let m = [[gram[0], gram[1]], [gram[1], gram[2]]];
        let mut sum = [[0.0; 2]; 2];
        let mut sum2 = [[0.0; 2]; 2];
        for _ in 0..reps {
            let y = residual_coordinates(gram, &chi_n, &chi_n1, &mut draws);
            for i in 0..2 {
                for j in 0..2 {
                    let g = y[i][0] * y[j][0] + y[i][1] * y[j][1];
                    sum[i][j] += g;
                    sum2[i][j] += g * g;
                }
            }
        }
        for i in 0..2 {
            for j in 0..2 {
                let mean = sum[i][j] / reps as f64;
                let var = sum2[i][j] / reps as f64 - mean * mean;
                let want_var = n * (m[i][j] * m[i][j] + m[i][i] * m[j][j]);
                let se = (want_var / reps as f64).sqrt();
                assert!(
                    (mean - n * m[i][j]).abs() < 5.0 * se,
                    "E[Y'Y]_{i}{j} = {mean}"
                );
                assert!(
                    (var / want_var - 1.0).abs() < 0.05,
                    "Var[Y'Y]_{i}{j} = {var} vs {want_var}"
                );
            }
        }
    }

    #[test]
    fn frame_of_parallel_and_zero_parts() {
        // Both students on the same vector: the ceiling's part is parallel (c = 0). A zero w2s part
        // puts the ceiling's part on f₁. Orthogonal parts: b = 0, c = |q|.
        let perp = |pair: &Pair| {
            update(pair, 0.0, &BatchSums::default(), &[[0.0; 2]; 2])
                .unwrap()
                .perp
        };
        let close = |a: [[f64; 2]; 2], b: [[f64; 2]; 2]| {
            (0..2).all(|i| (0..2).all(|j| (a[i][j] - b[i][j]).abs() < 1e-15))
        };
        let same = Pair::same([0.6, 0.0, 0.0], 0.8);
        assert!(close(perp(&same), [[0.8, 0.0], [0.8, 0.0]]));
        let pair = Pair {
            on_u: [[1.0, 0.0, 0.0], [0.0, 0.6, 0.0]],
            perp: [[0.0, 0.0], [0.0, 0.8]],
        };
        assert!(close(perp(&pair), [[0.0, 0.0], [0.8, 0.0]]));
        let pair = Pair {
            on_u: [[0.0; 3]; 2],
            perp: [[1.0, 0.0], [0.0, 1.0]],
        };
        assert!(close(perp(&pair), [[1.0, 0.0], [0.0, 1.0]]));
    }
}

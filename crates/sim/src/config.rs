//! Simulation configs: the TOML file format, sweeps, and validation at the boundary.
//!
//! A config file describes one run; any value written as a list is swept (the cartesian product of all
//! lists), except `seeds` (a count, or a list of seed values) and a link's `coefficients`. Each expanded
//! point is deserialized strictly (unknown keys and wrong types are errors naming the key) and validated
//! once into a [`SimConfig`] that the engine can trust.
//!
//! This module is one run's config; its child [`sweep`] reads a config *file*: the sweep's grid,
//! its seeds, and the jobs (config, seed) that `w2sg sim run` and `w2sg reproduce` both run.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::link::{Link, LinkSpec};

pub mod sweep;
pub use sweep::{display_value, GridPoint, Plan, MAX_RUNS, SUMMARY_COLUMNS};

/// A config error: the file, the key (dotted path) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: String,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: key `{}`: {}", self.file, key, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The file format of one run, as written (after sweep expansion).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub d: usize,
    #[serde(default = "default_link")]
    pub link: LinkSpec,
    /// Variance Δ of the target's label noise.
    #[serde(default)]
    pub noise: f64,
    #[serde(default)]
    pub init: InitKind,
    /// Initial overlap for `init = "overlap"`.
    pub m0: Option<f64>,
    #[serde(default)]
    pub finetune_data: FinetuneData,
    #[serde(default)]
    pub pretrain: RawPretrain,
    #[serde(default)]
    pub weak: RawWeak,
    #[serde(default)]
    pub sgd: RawSgd,
    #[serde(default)]
    pub metrics: RawMetrics,
    /// Which engine simulates the run. Not part of the process (left out of the stream key), and
    /// omitted from the written config when it is the default.
    #[serde(default, skip_serializing_if = "EngineChoice::is_auto")]
    pub engine: EngineChoice,
}

/// The `engine` key: which simulator runs a config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// The reduced engine where the config reduces, else the full engine (the run records why).
    #[default]
    Auto,
    /// The O(1)-per-sample reduced engine; a config error where it does not apply.
    Reduced,
    /// The O(d)-per-sample engine with d-dimensional students.
    Full,
}

impl EngineChoice {
    pub fn is_auto(&self) -> bool {
        *self == EngineChoice::Auto
    }
}

fn default_link() -> LinkSpec {
    LinkSpec::Name("he3".into())
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitKind {
    /// Pre-trained: top eigenvector of the pre-training sample covariance.
    #[default]
    Spectral,
    /// No pre-training: uniform on the sphere.
    Random,
    /// Oracle: `w0 = m0 θ* + sqrt(1 − m0²) ξ`, ξ uniform on θ*⊥.
    Overlap,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinetuneData {
    #[default]
    Isotropic,
    Spiked,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Plain sample covariance (unlabeled pre-training).
    #[default]
    None,
    /// `T(y) = tanh(y)`.
    Tanh,
    /// `T(y) = clamp(y, −c, c)`.
    Clip,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPretrain {
    /// Number of unlabeled pre-training samples (default 4·d).
    pub n_pre: Option<usize>,
    #[serde(default = "default_beta")]
    pub beta: f64,
    #[serde(default = "one")]
    pub eta: f64,
    /// Weak-labelled samples used to fix the sign of the eigenvector.
    #[serde(default = "default_n_sign")]
    pub n_sign: usize,
    #[serde(default)]
    pub weighting: Weighting,
    #[serde(default = "one")]
    pub clip: f64,
}

impl Default for RawPretrain {
    fn default() -> Self {
        Self {
            n_pre: None,
            beta: default_beta(),
            eta: 1.0,
            n_sign: default_n_sign(),
            weighting: Weighting::None,
            clip: 1.0,
        }
    }
}

fn default_beta() -> f64 {
    4.0
}
fn one() -> f64 {
    1.0
}
fn default_n_sign() -> usize {
    1000
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeak {
    /// Overlap ρ of the weak direction with θ* (default 0.8 unless `n_train` is given).
    pub rho: Option<f64>,
    /// The weak supervisor's link (default: the target's link).
    pub link: Option<LinkSpec>,
    /// Variance of Gaussian noise added to weak labels.
    #[serde(default)]
    pub noise: f64,
    /// Train the weak model (student class, random start) on this many ground-truth samples instead.
    pub n_train: Option<usize>,
    /// Learning rate of that training (default: sgd.lr).
    pub lr: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSgd {
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_tau_max")]
    pub tau_max: f64,
    #[serde(default = "one_usize")]
    pub batch: usize,
}

impl Default for RawSgd {
    fn default() -> Self {
        Self {
            lr: default_lr(),
            tau_max: default_tau_max(),
            batch: 1,
        }
    }
}

fn default_lr() -> f64 {
    0.01
}
fn default_tau_max() -> f64 {
    100.0
}
fn one_usize() -> usize {
    1
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskMethod {
    /// Bivariate Gaussian quadrature: exact for every supported law.
    #[default]
    Exact,
    /// Average over a fixed test sample (with its standard error).
    MonteCarlo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Points of the log-spaced τ grid (plus τ = 0).
    #[serde(default = "default_points")]
    pub points: usize,
    /// Smallest positive τ of the grid.
    #[serde(default = "default_tau_min")]
    pub tau_min: f64,
    #[serde(default)]
    pub risk: RiskMethod,
    #[serde(default = "default_n_test")]
    pub n_test: usize,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            points: default_points(),
            tau_min: default_tau_min(),
            risk: RiskMethod::Exact,
            n_test: default_n_test(),
        }
    }
}

fn default_points() -> usize {
    40
}
fn default_tau_min() -> f64 {
    0.01
}
fn default_n_test() -> usize {
    10_000
}

/// How the student is initialized.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    Random,
    Overlap {
        m0: f64,
    },
    Spectral {
        n_pre: usize,
        beta: f64,
        eta: f64,
        n_sign: usize,
        weighting: Weighting,
        clip: f64,
    },
}

/// The weak supervisor.
#[derive(Clone, Debug, PartialEq)]
pub enum Weak {
    /// `y_w = link(θ_w·x) + sqrt(noise) ε` with `θ_w·θ* = rho`.
    Direction { rho: f64, link: Link, noise: f64 },
    /// The student class trained from a random start on `n_train` ground-truth samples.
    Trained { n_train: usize, lr: f64, noise: f64 },
}

/// A validated configuration of one run (without its seed).
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub d: usize,
    pub link: Link,
    pub noise: f64,
    pub init: Init,
    pub finetune_data: FinetuneData,
    /// Spike of the data laws: `(β, η)`; used by pre-training and by spiked fine-tuning.
    pub spike: (f64, f64),
    pub weak: Weak,
    pub lr: f64,
    pub tau_max: f64,
    pub batch: usize,
    pub points: usize,
    pub tau_min: f64,
    pub risk: RiskMethod,
    pub n_test: usize,
    pub engine: EngineChoice,
    /// The config as written (after expansion), for reports and for the run's random-stream key.
    pub raw: RawConfig,
}

impl SimConfig {
    /// Validate one expanded config; errors name the key.
    pub fn from_raw(raw: RawConfig) -> Result<Self, (String, String)> {
        let err = |key: &str, msg: String| Err((key.to_string(), msg));
        if raw.d < 4 {
            return err("d", format!("must be at least 4 (got {})", raw.d));
        }
        let link = Link::from_spec(&raw.link).map_err(|m| ("link".to_string(), m))?;
        check_nonnegative("noise", raw.noise)?;
        let p = &raw.pretrain;
        check_range("pretrain.eta", p.eta, -1.0, 1.0)?;
        if !(p.beta.is_finite() && p.beta > -1.0) {
            return err(
                "pretrain.beta",
                format!("must be finite and > -1 (got {})", p.beta),
            );
        }
        let init = match raw.init {
            InitKind::Random => Init::Random,
            InitKind::Overlap => {
                let Some(m0) = raw.m0 else {
                    return err(
                        "m0",
                        "init = \"overlap\" needs m0 (the initial overlap with θ*)".into(),
                    );
                };
                // An overlap with θ* is measured for the sign that ends positive; a negative m0 is
                // the same start as −m0 with the labels' sign flipped, so it is refused, not guessed.
                check_range("m0", m0, 0.0, 1.0)?;
                Init::Overlap { m0 }
            }
            InitKind::Spectral => {
                let n_pre = p.n_pre.unwrap_or(4 * raw.d);
                if n_pre == 0 {
                    return err("pretrain.n_pre", "must be at least 1".into());
                }
                if p.weighting == Weighting::Clip && !(p.clip.is_finite() && p.clip > 0.0) {
                    return err(
                        "pretrain.clip",
                        format!("must be positive (got {})", p.clip),
                    );
                }
                Init::Spectral {
                    n_pre,
                    beta: p.beta,
                    eta: p.eta,
                    n_sign: p.n_sign,
                    weighting: p.weighting,
                    clip: p.clip,
                }
            }
        };
        if raw.init != InitKind::Overlap && raw.m0.is_some() {
            return err("m0", "only used with init = \"overlap\"".into());
        }
        let w = &raw.weak;
        check_nonnegative("weak.noise", w.noise)?;
        let weak = match (w.n_train, w.rho) {
            (Some(_), Some(_)) => return err("weak", "give either weak.rho (a weak direction) or weak.n_train (a trained weak model), not both".into()),
            (Some(n_train), None) => {
                if n_train == 0 {
                    return err("weak.n_train", "must be at least 1".into());
                }
                if w.link.is_some() {
                    return err("weak.link", "a trained weak model uses the student's link; remove weak.link".into());
                }
                let lr = w.lr.unwrap_or(raw.sgd.lr);
                check_positive("weak.lr", lr)?;
                Weak::Trained { n_train, lr, noise: w.noise }
            }
            (None, rho) => {
                let rho = rho.unwrap_or(0.8);
                check_range("weak.rho", rho, -1.0, 1.0)?;
                if w.lr.is_some() {
                    return err("weak.lr", "only used with weak.n_train".into());
                }
                let wlink = match &w.link {
                    Some(spec) => Link::from_spec(spec).map_err(|m| ("weak.link".to_string(), m))?,
                    None => link.clone(),
                };
                Weak::Direction { rho, link: wlink, noise: w.noise }
            }
        };
        let s = &raw.sgd;
        check_positive("sgd.lr", s.lr)?;
        check_positive("sgd.tau_max", s.tau_max)?;
        if s.batch == 0 {
            return err("sgd.batch", "must be at least 1".into());
        }
        if s.batch > raw.d {
            return err(
                "sgd.batch",
                format!("must not exceed d = {} (the ODE needs B ≪ d)", raw.d),
            );
        }
        let m = &raw.metrics;
        if m.points < 2 {
            return err("metrics.points", "must be at least 2".into());
        }
        check_positive("metrics.tau_min", m.tau_min)?;
        if m.tau_min >= s.tau_max {
            return err(
                "metrics.tau_min",
                format!("must be below sgd.tau_max = {}", s.tau_max),
            );
        }
        if m.risk == RiskMethod::MonteCarlo && m.n_test < 2 {
            return err("metrics.n_test", "must be at least 2".into());
        }
        let config = SimConfig {
            d: raw.d,
            link,
            noise: raw.noise,
            init,
            finetune_data: raw.finetune_data,
            spike: (p.beta, p.eta),
            weak,
            lr: s.lr,
            tau_max: s.tau_max,
            batch: s.batch,
            points: m.points,
            tau_min: m.tau_min,
            risk: m.risk,
            n_test: m.n_test,
            engine: raw.engine,
            raw,
        };
        if config.engine == EngineChoice::Reduced {
            if let Some(reason) = config.reduction_obstacle() {
                return err(
                    "engine",
                    format!("\"reduced\" does not apply to this config: {reason}; use \"auto\" (falls back to the full engine) or \"full\""),
                );
            }
        }
        Ok(config)
    }

    /// Why this config cannot run on the reduced engine ([`crate::reduced`]), naming the key; `None`
    /// when it can. Asked by validation (`engine = "reduced"`) and by the engine choice (`auto`).
    pub fn reduction_obstacle(&self) -> Option<String> {
        if self.d < 5 {
            return Some(format!(
                "d = {} < 5 leaves no room for the students' 2-dimensional frame outside span(θ*, θ_w, v)",
                self.d
            ));
        }
        if let Weak::Trained { .. } = self.weak {
            return Some(
                "weak.n_train: a trained weak model is a dense direction outside span(θ*, θ_w, v)"
                    .into(),
            );
        }
        if self.risk == RiskMethod::MonteCarlo {
            return Some(
                "metrics.risk = \"monte_carlo\" needs a d-dimensional test set (exact risk reduces)"
                    .into(),
            );
        }
        if let Init::Spectral { weighting, .. } = self.init {
            if weighting != Weighting::None {
                return Some(
                    "pretrain.weighting: a label-weighted covariance is not a spiked Wishart matrix"
                        .into(),
                );
            }
        }
        None
    }

    /// Samples a run of this config processes (the unit of progress bars): its last checkpoint,
    /// plus the weak model's training set when it is trained.
    pub fn cost(&self) -> u64 {
        let weak = match self.weak {
            Weak::Trained { n_train, .. } => n_train as u64,
            Weak::Direction { .. } => 0,
        };
        *self.checkpoints().last().expect("non-empty") + weak
    }

    /// The sample counts at which metrics are recorded: 0, then `points` log-spaced τ in
    /// `[tau_min, tau_max]`, rounded to whole batches and deduplicated.
    pub fn checkpoints(&self) -> Vec<u64> {
        let d = self.d as f64;
        let b = self.batch as u64;
        let (lo, hi) = (self.tau_min.ln(), self.tau_max.ln());
        let mut out = vec![0u64];
        for i in 0..self.points {
            let tau = (lo + (hi - lo) * i as f64 / (self.points - 1) as f64).exp();
            let t = ((tau * d).round() as u64).max(1);
            let t = t.div_ceil(b) * b;
            if t > *out.last().unwrap() {
                out.push(t);
            }
        }
        out
    }

    /// A stable 64-bit key of this config (FNV-1a of its canonical JSON), so a run's random streams depend
    /// on what it is, not on where it sits in a sweep. What is only observed — the metrics settings and
    /// how long to run — is left out: a longer run extends a shorter one sample for sample, and changing
    /// how risk is measured changes no student.
    pub fn stream_key(&self) -> u64 {
        let mut process = self.raw.clone();
        process.metrics = RawMetrics::default();
        process.sgd.tau_max = 0.0;
        // Both engines simulate the same process: the same seed names the same run on either.
        process.engine = EngineChoice::Auto;
        let text = serde_json::to_string(&process).expect("configs serialize");
        text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
}

fn check_range(key: &str, v: f64, lo: f64, hi: f64) -> Result<(), (String, String)> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err((key.into(), format!("must lie in [{lo}, {hi}] (got {v})")))
    }
}

fn check_positive(key: &str, v: f64) -> Result<(), (String, String)> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err((key.into(), format!("must be positive and finite (got {v})")))
    }
}

fn check_nonnegative(key: &str, v: f64) -> Result<(), (String, String)> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err((
            key.into(),
            format!("must be non-negative and finite (got {v})"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_swept_as_a_cartesian_product() {
        let plan = Plan::parse(
            "d = 100\nseeds = 3\n[weak]\nrho = [0.2, 0.5]\n[sgd]\nlr = [0.1, 0.2, 0.3]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(plan.grid.len(), 6);
        assert_eq!(plan.seeds, vec![0, 1, 2]);
        assert_eq!(plan.len(), 18);
        assert_eq!(plan.swept_keys, vec!["sgd.lr", "weak.rho"]);
        assert_eq!(
            plan.grid[1].swept,
            vec![
                ("sgd.lr".into(), "0.1".into()),
                ("weak.rho".into(), "0.5".into())
            ]
        );
        assert_eq!(plan.grid[5].config.lr, 0.3);
    }

    #[test]
    fn coefficient_lists_are_links_not_sweeps() {
        let plan = Plan::parse(
            "d = 10\nlink = { coefficients = [0.0, 1.0, 0.5] }\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(plan.grid.len(), 1);
        assert_eq!(
            plan.grid[0].config.link,
            Link::Coefficients(vec![0.0, 1.0, 0.5])
        );
    }

    fn error_of(text: &str) -> ConfigError {
        Plan::parse(text, "bad.toml").unwrap_err()
    }

    #[test]
    fn bad_configs_name_file_and_key() {
        let cases = [
            ("d = 100\nfoo = 1\n", "foo"),
            ("d = 100\n[sgd]\nlr = \"fast\"\n", "sgd.lr"),
            ("d = 0\n", "d"),
            ("d = 100\n[weak]\nrho = 1.5\n", "weak.rho"),
            ("d = 100\n[sgd]\nlr = 0.0\n", "sgd.lr"),
            ("d = 100\n[sgd]\nlr = -1.0\n", "sgd.lr"),
            ("d = 100\nlink = \"he9\"\n", "link"),
            ("d = 100\n[weak]\nlink = \"cosh\"\n", "weak.link"),
            ("d = 100\ninit = \"overlap\"\n", "m0"),
            ("d = 100\n[weak]\nrho = [0.5, 2.0]\n", "weak.rho"),
            ("d = 100\nseeds = 0\n", "seeds"),
            ("d = 100\n[sgd]\nbatch = 0\n", "sgd.batch"),
            ("d = 100\n[pretrain]\nbetta = 2.0\n", "betta"),
            ("d = 100\nengine = \"fast\"\n", "engine"),
            (
                "d = 100\nengine = \"reduced\"\n[weak]\nn_train = 50\n",
                "engine",
            ),
            (
                "d = 100\nengine = \"reduced\"\n[metrics]\nrisk = \"monte_carlo\"\n",
                "engine",
            ),
            (
                "d = 100\nengine = \"reduced\"\n[pretrain]\nweighting = \"tanh\"\n",
                "engine",
            ),
            ("d = 4\nengine = \"reduced\"\n", "engine"),
        ];
        for (text, key) in cases {
            let e = error_of(text);
            let shown = e.to_string();
            assert!(shown.starts_with("bad.toml"), "{shown}");
            assert!(shown.contains(key), "expected key `{key}` in: {shown}");
        }
        assert!(error_of("d = [").message.contains("TOML"));
    }

    #[test]
    fn checkpoints_are_log_spaced_and_batch_aligned() {
        let plan = Plan::parse(
            "d = 1000\n[sgd]\ntau_max = 10.0\nbatch = 8\n[metrics]\npoints = 5\ntau_min = 0.01\n",
            "t",
        )
        .unwrap();
        let c = plan.grid[0].config.checkpoints();
        assert_eq!(c[0], 0);
        assert_eq!(*c.last().unwrap(), 10_000);
        assert!(c.iter().all(|t| t % 8 == 0));
        assert!(c.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn engine_key_defaults_to_auto_and_is_not_part_of_the_stream_key() {
        let auto = Plan::parse("d = 100\n", "a").unwrap();
        assert_eq!(auto.grid[0].config.engine, EngineChoice::Auto);
        let full = Plan::parse("d = 100\nengine = \"full\"\n", "f").unwrap();
        let reduced = Plan::parse("d = 100\nengine = \"reduced\"\n", "r").unwrap();
        assert_eq!(full.grid[0].config.engine, EngineChoice::Full);
        let key = auto.grid[0].config.stream_key();
        assert_eq!(full.grid[0].config.stream_key(), key);
        assert_eq!(reduced.grid[0].config.stream_key(), key);
        // The reason names the key that blocks the reduction.
        let e = error_of("d = 100\nengine = \"reduced\"\n[weak]\nn_train = 50\n").to_string();
        assert!(e.contains("weak.n_train"), "{e}");
        // A swept engine is a column like any other swept key.
        let swept = Plan::parse("d = 100\nengine = [\"full\", \"reduced\"]\n", "s").unwrap();
        assert_eq!(swept.swept_keys, vec!["engine"]);
    }

    #[test]
    fn stream_key_depends_on_config_only() {
        let a = Plan::parse("d = 100\n[weak]\nrho = [0.2, 0.5]\n", "a").unwrap();
        let b = Plan::parse("d = 100\n[weak]\nrho = 0.5\n", "b").unwrap();
        assert_eq!(a.grid[1].config.stream_key(), b.grid[0].config.stream_key());
        assert_ne!(a.grid[0].config.stream_key(), a.grid[1].config.stream_key());
    }
}

//! w2sg-protocol: the weak-to-strong protocol of Burns et al. (2023) on feature matrices, without
//! language models.
//!
//! The checkpoint sweep computes features per checkpoint (crates/lm) and calls this crate for
//! everything after that:
//!
//! - [`probe`]: L2-regularized logistic-regression probes on f32 features (hard or soft labels),
//!   standardized on the training set, trained to convergence by full-batch L-BFGS (the default
//!   training mode);
//! - [`loss`] and [`train`]: the Burns et al. losses (xent on soft labels, logconf with a linear ramp
//!   and a running-quantile hardening threshold, product) and the deterministic mini-batch Adam loop
//!   that trains the same probe model with them;
//! - [`metrics`] and [`mod@pgr`]: accuracy (with its binomial standard error), AUROC with ties, ECE,
//!   agreement, and the performance gap recovered with a seeded percentile bootstrap over test examples
//!   and seeds;
//! - [`transition`]: where W2SG appears across checkpoints: the first step from which w2s stays above
//!   weak by more than two standard errors, and a sigmoid fit of the W2S gain against log(step);
//! - [`store`], [`key`], [`shard`] and [`export`]: the content-keyed SQLite results store that makes a
//!   sweep resumable after a kill, shardable over a job array and mergeable, with CSV (and, behind the
//!   `parquet` feature, Parquet) export.
//!
//! Every computation is sequential and deterministic: the same inputs give the same bits whatever the
//! thread count (parallelise across units, as the rest of w2sg does across runs).

pub mod error;
pub mod export;
pub mod features;
mod kernels;
pub mod key;
mod lbfgs;
pub mod loss;
pub mod metrics;
pub mod pgr;
pub mod probe;
pub mod quantile;
pub mod rng;
pub mod shard;
mod sigmoid;
pub mod standardize;
pub mod store;
pub mod train;
pub mod transition;

pub use error::{Error, Result};
pub use features::{Features, Targets};
pub use key::{UnitKey, UnitKind, UnitSpec};
pub use loss::{LogconfConfig, Loss, LossState, ProductConfig, Ramp};
pub use metrics::{accuracy, agreement, auroc, binomial_se, ece, EvalMetrics};
pub use pgr::{pgr, PgrConfig, PgrEstimate, SeedOutcomes};
pub use probe::{FitReport, Probe, ProbeConfig, ProbeParams};
pub use shard::ShardSpec;
pub use store::{MergeReport, Outcome, RunPolicy, Store, UnitOutput, UnitRecord, UnitStatus};
pub use train::{Schedule, TrainConfig, TrainParams, TrainReport};
pub use transition::{
    first_sustained_step, fit_gain_sigmoid, fit_sigmoid, SigmoidConfig, SigmoidFit, SigmoidModel,
    StepDiff, StepOutcomes, StepPgr,
};

//! w2sg-sim: the single-index weak-to-strong lab.
//!
//! The model, notation and theory are described in `docs/theory.md` at the repository root. Data flows
//! config → engine → results: see [`config`] for what a run is, [`engine`] for how it is simulated and
//! [`theory`] for the d → ∞ predictions set beside it. Two engines simulate the same process: the full
//! one with d-dimensional students, and [`reduced`], exact in distribution at O(1) cost per sample
//! ([`reduced_spectral`] for its spectral initialization, [`distributions`] for its exact χ² draws);
//! [`stats`] holds the Kolmogorov–Smirnov tests that compare them.

pub mod config;
pub mod distributions;
pub mod engine;
pub mod full;
pub mod kernels;
pub mod link;
pub mod model;
pub mod outcome;
pub mod outdir;
pub mod output;
pub mod prediction;
pub mod quadrature;
pub mod reduced;
pub mod reduced_spectral;
pub mod resources;
pub mod rng;
pub mod sgd;
pub mod spectral;
pub mod stats;
pub mod theory;
pub mod tridiagonal;

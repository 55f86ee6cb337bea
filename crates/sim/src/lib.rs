//! w2sg-sim: the single-index weak-to-strong lab.
//!
//! The model, notation and theory follow `shared/conventions.md`. Data flows
//! config → engine → results: see [`config`] for what a run is, [`engine`] for how it is simulated and
//! [`theory`] for the d → ∞ predictions set beside it.

pub mod config;
pub mod engine;
pub mod kernels;
pub mod link;
pub mod model;
pub mod output;
pub mod prediction;
pub mod quadrature;
pub mod rng;
pub mod sgd;
pub mod spectral;
pub mod theory;
pub mod tridiagonal;

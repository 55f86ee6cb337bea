//! w2sg-sim: the single-index weak-to-strong lab.
//!
//! The model, notation and theory follow `shared/conventions.md`. Data flows
//! config → engine → results: see [`config`] for what a run is, [`engine`] for how it is simulated and
//! [`theory`] for the d → ∞ predictions set beside it.

pub mod rng;
pub mod link;
pub mod quadrature;
pub mod tridiagonal;
pub mod kernels;
pub mod model;
pub mod spectral;
pub mod sgd;
pub mod theory;

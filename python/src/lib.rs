//! `w2sg._w2sg`: the Rust side of the `w2sg` Python package.
//!
//! Thin bindings over the library crates: configs are parsed by `w2sg_sim::config::Plan` (the parser
//! of `w2sg sim run`), runs go through `w2sg_sim::engine::simulate_all`, features through
//! `w2sg_lm::features::extract`. Engine work runs with the GIL released and stays interruptible
//! ([`interrupt`]); result columns are handed to numpy without copies ([`columns`]). The pure-Python
//! package `w2sg` (python/w2sg/__init__.py) turns the tables into DataFrames.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

mod columns;
mod features;
mod interrupt;
mod sim;

create_exception!(
    _w2sg,
    ConfigError,
    PyValueError,
    "A bad config or argument; the message names the file (or `<dict>`) and the key, as the CLI does."
);

#[pymodule]
fn _w2sg(m: &Bound<'_, PyModule>) -> PyResult<()> {
    w2sg_lm::host::tune_allocator();
    m.add("ConfigError", m.py().get_type::<ConfigError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(sim::simulate, m)?)?;
    m.add_function(wrap_pyfunction!(sim::theory, m)?)?;
    m.add_function(wrap_pyfunction!(sim::check_config, m)?)?;
    m.add_function(wrap_pyfunction!(sim::bbp, m)?)?;
    m.add_function(wrap_pyfunction!(sim::ode, m)?)?;
    m.add_function(wrap_pyfunction!(sim::hermite_coefficients, m)?)?;
    m.add_function(wrap_pyfunction!(features::features, m)?)?;
    Ok(())
}

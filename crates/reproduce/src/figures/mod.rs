//! The figures of the theory-lab reproduction, one module each, in the order of the report.
//!
//! Each figure function runs its sweeps (sizes from [`Size`]), and returns the plot, the data table, the
//! configs and its findings in numbers. The quick sizes are chosen so that all six finish in a few
//! minutes on 2 cores while still showing each effect clearly.

use crate::{FigureOutput, Options, ReproError};

pub mod effective_region;
pub mod exponent;
pub mod finite_size;
pub mod phase_diagram;
pub mod saturation;
pub mod start;
pub mod transition;

/// A figure-making function.
pub type MakeFigure = fn(&Options) -> Result<FigureOutput, ReproError>;

/// All figures, in report order.
pub const ALL: [MakeFigure; 7] = [
    start::figure,
    transition::figure,
    saturation::figure,
    effective_region::figure,
    exponent::figure,
    phase_diagram::figure,
    finite_size::figure,
];

/// Quick or full sizes.
pub struct Size {
    pub quick: bool,
}

impl Size {
    pub fn of(opts: &Options) -> Self {
        Size { quick: opts.quick }
    }

    /// `quick` in quick mode, else `full`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// A TOML list of numbers.
pub fn toml_list(values: &[f64]) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[{}]", parts.join(", "))
}

/// A TOML list of integers (values are rounded).
pub fn int_list(values: &[f64]) -> String {
    let parts: Vec<String> = values
        .iter()
        .map(|v| format!("{}", v.round() as i64))
        .collect();
    format!("[{}]", parts.join(", "))
}

//! Result tables as columns: each numeric column is a Rust `Vec` handed to numpy without a copy
//! (`into_pyarray` takes ownership of the buffer); text and optional-boolean columns become lists.

use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// One column of a table.
pub enum Column {
    F64(Vec<f64>),
    I64(Vec<i64>),
    /// Values as written in the config (the pure-Python layer types them as a CSV reader would).
    Text(Vec<String>),
    /// `None` where undefined (an empty cell in CSV).
    OptBool(Vec<Option<bool>>),
}

/// Columns in order, as `sim run` / `sim theory` write them.
#[derive(Default)]
pub struct Table {
    pub names: Vec<String>,
    pub columns: Vec<Column>,
    /// The swept config keys (their columns follow `run, grid, seed`).
    pub swept: Vec<String>,
}

impl Table {
    pub fn push(&mut self, name: &str, column: Column) {
        self.names.push(name.to_string());
        self.columns.push(column);
    }

    /// `{"columns": [names...], "data": [array or list, ...], "swept": [keys...]}`. Data is a list
    /// parallel to the names, since a swept key may share its name with an outcome column (`m0`).
    pub fn into_py(self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let data = PyList::empty(py);
        for column in self.columns {
            let value: Bound<'_, PyAny> = match column {
                Column::F64(v) => v.into_pyarray(py).into_any(),
                Column::I64(v) => v.into_pyarray(py).into_any(),
                Column::Text(v) => PyList::new(py, v)?.into_any(),
                Column::OptBool(v) => PyList::new(py, v)?.into_any(),
            };
            data.append(value)?;
        }
        let out = PyDict::new(py);
        out.set_item("columns", PyList::new(py, &self.names)?)?;
        out.set_item("data", data)?;
        out.set_item("swept", PyList::new(py, &self.swept)?)?;
        Ok(out.unbind())
    }
}

/// A number, or NaN where the value is undefined (the empty CSV cell).
pub fn or_nan(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

//! The theory lab from Python: configs (TOML text, a file, or a dict), `simulate`, `theory`, and the
//! closed forms (BBP, the overlap ODE, Hermite coefficients).
//!
//! Every config goes through `Plan::parse`, the parser of `w2sg sim run`, so a bad config is refused
//! with the CLI's message, naming the file (or `<dict>` / `<string>`) and the key.

use indicatif::{ProgressBar, ProgressStyle};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyString, PyTuple};

use w2sg_sim::config::Plan;
use w2sg_sim::engine::{run_cost, simulate_all, RunOutput, SimError, TrajectoryPoint};
use w2sg_sim::link::{Link, LinkSpec};
use w2sg_sim::output::{RUN_FIELDS, SUMMARY_FIELDS, THEORY_FIELDS, TRAJECTORY_HEADER};
use w2sg_sim::prediction::{predict, TheoryOutput};
use w2sg_sim::theory::{bbp_overlap, bbp_top_eigenvalue, Geometry, OverlapOde};

use crate::columns::{or_nan, Column, Table};
use crate::{interrupt, ConfigError};

/// Name of a config given as a dict or as TOML text, in error messages.
const DICT_NAME: &str = "<dict>";
const TEXT_NAME: &str = "<string>";

/// Parses a config given as `kind` = "path" (a file, read as the CLI reads it), "text" (TOML) or
/// "dict" (a Python mapping, written as TOML first).
fn plan_from(kind: &str, value: &Bound<'_, PyAny>) -> PyResult<Plan> {
    let (text, name) = match kind {
        "path" => {
            let path: std::path::PathBuf = value.extract()?;
            let name = path.display().to_string();
            // The CLI's message for an unreadable file.
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new_err(format!("{name}: cannot read: {e}")))?;
            (text, name)
        }
        "text" => (value.extract::<String>()?, TEXT_NAME.to_string()),
        "dict" => {
            let table = toml_table(value.cast::<PyDict>()?, "")?;
            (
                toml::to_string(&table).map_err(|e| {
                    ConfigError::new_err(format!("{DICT_NAME}: cannot be written as TOML: {e}"))
                })?,
                DICT_NAME.to_string(),
            )
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown config kind {other}"
            )))
        }
    };
    Plan::parse(&text, &name).map_err(|e| ConfigError::new_err(e.to_string()))
}

fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn toml_table(dict: &Bound<'_, PyDict>, prefix: &str) -> PyResult<toml::Table> {
    let mut table = toml::Table::new();
    for (k, v) in dict.iter() {
        let key: String = k.extract().map_err(|_| {
            ConfigError::new_err(format!(
                "{DICT_NAME}: key `{}`: keys must be strings (got {})",
                join_key(prefix, &k.to_string()),
                type_name(&k)
            ))
        })?;
        let path = join_key(prefix, &key);
        table.insert(key, toml_value(&v, &path)?);
    }
    Ok(table)
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A Python value as TOML; `path` (the dotted key) names it in errors.
fn toml_value(v: &Bound<'_, PyAny>, path: &str) -> PyResult<toml::Value> {
    if v.is_instance_of::<PyBool>() {
        return Ok(toml::Value::Boolean(v.extract()?));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(toml::Value::Float(v.extract()?));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(toml::Value::String(v.extract()?));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        return Ok(toml::Value::Table(toml_table(d, path)?));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let items = v
            .try_iter()?
            .enumerate()
            .map(|(i, item)| toml_value(&item?, &format!("{path}[{i}]")))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(toml::Value::Array(items));
    }
    // Python ints and integer-like scalars (numpy.int64) have __index__; other numbers (numpy.float32)
    // convert to float.
    if v.hasattr("__index__")? {
        if let Ok(i) = v.extract::<i64>() {
            return Ok(toml::Value::Integer(i));
        }
    }
    if let Ok(x) = v.extract::<f64>() {
        return Ok(toml::Value::Float(x));
    }
    Err(ConfigError::new_err(format!(
        "{DICT_NAME}: key `{path}`: a {} cannot be a config value (use numbers, strings, booleans, lists \
         or dicts)",
        type_name(v)
    )))
}

/// NaN where the CSV has an empty cell (undefined or non-finite values).
fn cell(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        f64::NAN
    }
}

fn summary_number(summary: &serde_json::Value, field: &str) -> f64 {
    cell(or_nan(
        summary.get(field).and_then(serde_json::Value::as_f64),
    ))
}

/// The leading columns of a summary: run, grid, seed and the swept keys (values as written).
fn leading_columns(table: &mut Table, plan: &Plan, rows: &[(usize, usize, Option<u64>)]) {
    table.push(
        "run",
        Column::I64(rows.iter().map(|r| r.0 as i64).collect()),
    );
    table.push(
        "grid",
        Column::I64(rows.iter().map(|r| r.1 as i64).collect()),
    );
    match rows.iter().all(|r| r.2.is_some()) {
        true => table.push(
            "seed",
            Column::I64(rows.iter().map(|r| r.2.unwrap_or(0) as i64).collect()),
        ),
        // Theory has no seed: the CSV's empty cells.
        false => table.push("seed", Column::F64(vec![f64::NAN; rows.len()])),
    }
    // Named as the CLI names them (a swept key that is also an outcome column gets `config.`).
    for (k, name) in w2sg_sim::output::swept_columns(plan).iter().enumerate() {
        let values = rows
            .iter()
            .map(|r| plan.grid[r.1].swept[k].1.clone())
            .collect();
        table.push(name, Column::Text(values));
        table.swept.push(plan.swept_keys[k].clone());
    }
}

fn trajectory_table(runs: Vec<(usize, Option<u64>, &[TrajectoryPoint])>) -> Table {
    let n: usize = runs.iter().map(|r| r.2.len()).sum();
    let mut run = Vec::with_capacity(n);
    let mut seed = Vec::with_capacity(n);
    let mut values: Vec<Vec<f64>> = (0..8).map(|_| Vec::with_capacity(n)).collect();
    let mut t = Vec::with_capacity(n);
    for (r, s, points) in &runs {
        for p in points.iter() {
            run.push(*r as i64);
            seed.push(s.map_or(f64::NAN, |s| s as f64));
            t.push(p.t as i64);
            let row = [
                p.tau,
                p.m,
                p.r,
                p.s,
                p.m_ceiling,
                p.risk_w2s,
                p.risk_ceiling,
                or_nan(p.pgr),
            ];
            for (col, v) in values.iter_mut().zip(row) {
                col.push(cell(v));
            }
        }
    }
    let mut table = Table::default();
    table.push(TRAJECTORY_HEADER[0], Column::I64(run));
    if runs.iter().all(|r| r.1.is_some()) {
        table.push(
            TRAJECTORY_HEADER[1],
            Column::I64(seed.into_iter().map(|s| s as i64).collect()),
        );
    } else {
        table.push(TRAJECTORY_HEADER[1], Column::F64(seed));
    }
    table.push(TRAJECTORY_HEADER[2], Column::I64(t));
    for (name, col) in TRAJECTORY_HEADER[3..].iter().zip(values) {
        table.push(name, Column::F64(col));
    }
    table
}

fn simulation_summary(plan: &Plan, results: &[Result<RunOutput, SimError>]) -> Table {
    let seeds = plan.seeds.len();
    let rows: Vec<_> = (0..results.len())
        .map(|i| (i, i / seeds, Some(plan.seeds[i % seeds])))
        .collect();
    let mut table = Table::default();
    leading_columns(&mut table, plan, &rows);
    let summaries: Vec<Option<serde_json::Value>> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .ok()
                .map(|o| serde_json::to_value(&o.summary).expect("a summary serializes"))
        })
        .collect();
    for field in SUMMARY_FIELDS {
        let col = summaries
            .iter()
            .map(|s| s.as_ref().map_or(f64::NAN, |s| summary_number(s, field)))
            .collect();
        table.push(field, Column::F64(col));
    }
    let spectral = |f: &dyn Fn(&w2sg_sim::engine::SpectralInfo) -> f64| -> Vec<f64> {
        results
            .iter()
            .map(|r| {
                r.as_ref()
                    .ok()
                    .and_then(|o| o.summary.spectral.as_ref())
                    .map_or(f64::NAN, |s| cell(f(s)))
            })
            .collect()
    };
    let [eig, lanczos, flipped, engine, fallback, error] = RUN_FIELDS;
    table.push(eig, Column::F64(spectral(&|s| s.eigenvalue)));
    table.push(
        lanczos,
        Column::F64(spectral(&|s| s.lanczos_iterations as f64)),
    );
    table.push(
        flipped,
        Column::OptBool(
            results
                .iter()
                .map(|r| {
                    r.as_ref()
                        .ok()
                        .and_then(|o| o.summary.spectral.as_ref())
                        .map(|s| s.sign_flipped)
                })
                .collect(),
        ),
    );
    let (engines, reasons): (Vec<String>, Vec<String>) = results
        .iter()
        .enumerate()
        .map(|(i, r)| match r {
            Ok(o) => (
                o.summary.engine.as_str().to_string(),
                o.summary.fallback_reason.clone().unwrap_or_default(),
            ),
            Err(_) => {
                let (e, why) = w2sg_sim::engine::engine_for(&plan.grid[i / seeds].config);
                (e.as_str().to_string(), why.unwrap_or_default())
            }
        })
        .unzip();
    table.push(engine, Column::Text(engines));
    table.push(fallback, Column::Text(reasons));
    table.push(
        error,
        Column::Text(
            results
                .iter()
                .map(|r| r.as_ref().err().map(|e| e.to_string()).unwrap_or_default())
                .collect(),
        ),
    );
    table
}

/// Simulates every run of a config, like `w2sg sim run`, and returns its two tables.
#[pyfunction]
#[pyo3(signature = (kind, config, threads=0, progress=false))]
pub fn simulate(
    py: Python<'_>,
    kind: &str,
    config: &Bound<'_, PyAny>,
    threads: usize,
    progress: bool,
) -> PyResult<Py<PyDict>> {
    let plan = plan_from(kind, config)?;
    let jobs: Vec<_> = plan
        .grid
        .iter()
        .flat_map(|g| plan.seeds.iter().map(move |&s| (&g.config, s)))
        .collect();
    let bar = if progress {
        let total: u64 = jobs.iter().map(|(c, _)| run_cost(c)).sum();
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {percent:>3}% samples {human_pos}/{human_len} ({per_sec}, eta {eta})",
            )
            .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let results = interrupt::run(py, |cancel| {
        simulate_all(&jobs, threads, &|n| {
            cancel.check();
            bar.inc(n);
        })
    })?;
    bar.finish_and_clear();
    let summary = simulation_summary(&plan, &results);
    let trajectory = trajectory_table(
        results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.as_ref().ok().map(|o| {
                    (
                        i,
                        Some(plan.seeds[i % plan.seeds.len()]),
                        o.trajectory.as_slice(),
                    )
                })
            })
            .collect(),
    );
    tables(py, summary, trajectory)
}

fn tables(py: Python<'_>, summary: Table, trajectory: Table) -> PyResult<Py<PyDict>> {
    let out = PyDict::new(py);
    out.set_item("summary", summary.into_py(py)?)?;
    out.set_item("trajectory", trajectory.into_py(py)?)?;
    Ok(out.unbind())
}

/// The d → ∞ theory of every grid point of a config, like `w2sg sim theory`.
#[pyfunction]
pub fn theory(py: Python<'_>, kind: &str, config: &Bound<'_, PyAny>) -> PyResult<Py<PyDict>> {
    let plan = plan_from(kind, config)?;
    let results: Vec<TheoryOutput> = interrupt::run(py, |cancel| {
        plan.grid
            .iter()
            .map(|g| {
                cancel.check();
                predict(&g.config)
            })
            .collect()
    })?;
    let rows: Vec<_> = (0..results.len()).map(|g| (g, g, None)).collect();
    let mut summary = Table::default();
    leading_columns(&mut summary, &plan, &rows);
    let docs: Vec<serde_json::Value> = results
        .iter()
        .map(|r| serde_json::to_value(&r.summary).expect("a summary serializes"))
        .collect();
    for field in SUMMARY_FIELDS {
        let col = docs.iter().map(|s| summary_number(s, field)).collect();
        summary.push(field, Column::F64(col));
    }
    for field in THEORY_FIELDS {
        let column = if field == "above_bbp" {
            Column::OptBool(
                docs.iter()
                    .map(|s| s.get(field).and_then(|v| v.as_bool()))
                    .collect(),
            )
        } else {
            Column::F64(docs.iter().map(|s| summary_number(s, field)).collect())
        };
        summary.push(field, column);
    }
    let trajectory = trajectory_table(
        results
            .iter()
            .enumerate()
            .map(|(g, r)| (g, None, r.trajectory.as_slice()))
            .collect(),
    );
    tables(py, summary, trajectory)
}

/// Parses a link given as a name ("he3", "relu") or as `{"coefficients": [...]}`.
fn link_from(spec: &Bound<'_, PyAny>, what: &str) -> PyResult<Link> {
    let value = toml_value(spec, what)?;
    let parsed: LinkSpec = value.try_into().map_err(|e: toml::de::Error| {
        ConfigError::new_err(format!("{what}: {}", e.message().trim()))
    })?;
    Link::from_spec(&parsed).map_err(|e| ConfigError::new_err(format!("{what}: {e}")))
}

fn check_finite(name: &str, v: f64) -> PyResult<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(ConfigError::new_err(format!(
            "{name} must be finite (got {v})"
        )))
    }
}

/// BBP limit of the spectral overlap `|<v̂, θ*>|` and of the top sample-covariance eigenvalue.
#[pyfunction]
#[pyo3(signature = (beta, gamma, eta=1.0))]
pub fn bbp(beta: f64, gamma: f64, eta: f64) -> PyResult<(f64, f64)> {
    for (n, v) in [("beta", beta), ("gamma", gamma), ("eta", eta)] {
        check_finite(n, v)?;
    }
    if beta < 0.0 || gamma <= 0.0 {
        return Err(ConfigError::new_err(format!(
            "beta must be >= 0 and gamma > 0 (got beta = {beta}, gamma = {gamma})"
        )));
    }
    Ok((
        bbp_overlap(beta, gamma, eta),
        bbp_top_eigenvalue(beta, gamma),
    ))
}

/// The overlap ODE of online SGD on isotropic data, labels from a weak direction with overlap `rho`:
/// `(m, r, s)` at each τ in `taus`, as a (len(taus), 3) array.
#[pyfunction]
#[pyo3(signature = (link, rho, m0, lr, taus, r0=None, weak_link=None, noise=0.0))]
#[allow(clippy::too_many_arguments)]
pub fn ode<'py>(
    py: Python<'py>,
    link: &Bound<'py, PyAny>,
    rho: f64,
    m0: f64,
    lr: f64,
    taus: Vec<f64>,
    r0: Option<f64>,
    weak_link: Option<&Bound<'py, PyAny>>,
    noise: f64,
) -> PyResult<Bound<'py, numpy::PyArray2<f64>>> {
    use numpy::IntoPyArray;
    let student = link_from(link, "link")?;
    let label_link = match weak_link {
        Some(w) => link_from(w, "weak_link")?,
        None => student.clone(),
    };
    for (n, v) in [("rho", rho), ("m0", m0), ("lr", lr), ("noise", noise)] {
        check_finite(n, v)?;
    }
    if rho.abs() > 1.0 || m0.abs() > 1.0 {
        return Err(ConfigError::new_err(format!(
            "rho and m0 are overlaps of unit vectors: |rho|, |m0| <= 1 (got rho = {rho}, m0 = {m0})"
        )));
    }
    if lr <= 0.0 || noise < 0.0 {
        return Err(ConfigError::new_err(format!(
            "lr must be > 0 and noise >= 0 (got lr = {lr}, noise = {noise})"
        )));
    }
    if let Some(i) = taus.iter().position(|t| !t.is_finite() || *t < 0.0) {
        return Err(ConfigError::new_err(format!(
            "taus[{i}] = {} is not a finite time >= 0",
            taus[i]
        )));
    }
    if taus.windows(2).any(|w| w[1] < w[0]) {
        return Err(ConfigError::new_err("taus must be sorted"));
    }
    let ode = OverlapOde {
        student,
        label_link,
        label_noise: noise,
        geometry: Geometry {
            label_target_overlap: rho,
            label_spike_overlap: rho,
            eta: 1.0,
            beta: 0.0,
        },
        lr,
    };
    // The oracle init's start (conventions: w0 = m0 θ* + sqrt(1 − m0²) ξ with ξ ⊥ θ*, so r0 = ρ m0).
    let start = [m0, r0.unwrap_or(rho * m0), m0];
    let path = interrupt::run(py, |_| ode.solve(start, &taus))?;
    let flat: Vec<f64> = path.into_iter().flatten().collect();
    let n = flat.len() / 3;
    let array =
        numpy::ndarray::Array2::from_shape_vec((n, 3), flat).expect("three overlaps per time");
    Ok(array.into_pyarray(py))
}

/// Normalized Hermite coefficients `a_0 ..= a_k` of a link.
#[pyfunction]
#[pyo3(signature = (link, k=8))]
pub fn hermite_coefficients<'py>(
    py: Python<'py>,
    link: &Bound<'py, PyAny>,
    k: usize,
) -> PyResult<Bound<'py, numpy::PyArray1<f64>>> {
    use numpy::IntoPyArray;
    let link = link_from(link, "link")?;
    if k > 20 {
        return Err(ConfigError::new_err(format!("k must be <= 20 (got {k})")));
    }
    Ok(link.hermite_coefficients(k).into_pyarray(py))
}

/// Parses a config and returns the number of runs (for the pure-Python layer's checks and repr).
#[pyfunction]
pub fn check_config(kind: &str, config: &Bound<'_, PyAny>) -> PyResult<(usize, usize)> {
    let plan = plan_from(kind, config)?;
    Ok((plan.grid.len(), plan.seeds.len()))
}

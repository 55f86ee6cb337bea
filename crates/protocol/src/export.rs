//! Export of a results store to a table: one row per unit, the spec's fields and then the result's
//! fields as columns (CSV always; Parquet with the `parquet` cargo feature).
//!
//! Columns: `key, kind, status, error, checkpoint, dataset, config, step, seed, loss`, then the `extra`
//! fields of the specs (sorted by name), then the union of the result objects' keys (sorted). A result
//! key that collides with a spec column is prefixed `result.`. Undefined values (JSON null, a missing
//! field, no seed) are empty cells, never a made-up number; nested JSON values are written as JSON
//! text. Rows are in key order, and provenance (timings) is left out, so two stores with the same
//! results export the same bytes.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::key::{canonical_json, UnitKind};
use crate::store::{Store, UnitRecord, UnitStatus};

/// The Parquet backend (a child: it writes this module's [`Table`]).
#[cfg(feature = "parquet")]
mod parquet;

/// A cell: a number (kept apart for typed Parquet columns), text, or nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Empty,
    Int(i64),
    Float(f64),
    Text(String),
}

impl Cell {
    fn to_csv(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) => {
                if f.is_finite() {
                    format!("{f}")
                } else {
                    String::new()
                }
            }
            Cell::Text(s) => s.clone(),
        }
    }
}

/// The exported table.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

const SPEC_COLUMNS: [&str; 10] = [
    "key",
    "kind",
    "status",
    "error",
    "checkpoint",
    "dataset",
    "config",
    "step",
    "seed",
    "loss",
];

fn json_cell(v: Option<&Value>) -> Cell {
    match v {
        None | Some(Value::Null) => Cell::Empty,
        Some(Value::Bool(b)) => Cell::Text(b.to_string()),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Cell::Int(i),
            None => n.as_f64().map(Cell::Float).unwrap_or(Cell::Empty),
        },
        Some(Value::String(s)) => Cell::Text(s.clone()),
        Some(other) => Cell::Text(canonical_json(other)),
    }
}

/// Builds the table of the records.
pub fn table(records: &[UnitRecord]) -> Table {
    let extras: BTreeSet<&String> = records.iter().flat_map(|r| r.spec.extra.keys()).collect();
    let results: BTreeSet<&String> = records
        .iter()
        .filter_map(|r| r.result.as_ref())
        .flat_map(|m| m.keys())
        .collect();
    let mut columns: Vec<String> = SPEC_COLUMNS.iter().map(|s| s.to_string()).collect();
    let mut taken: BTreeSet<String> = columns.iter().cloned().collect();
    let mut extra_names = Vec::new();
    for e in &extras {
        let name = if taken.contains(*e) {
            format!("extra.{e}")
        } else {
            (*e).clone()
        };
        taken.insert(name.clone());
        extra_names.push(name);
    }
    columns.extend(extra_names);
    let mut result_names = Vec::new();
    for k in &results {
        let name = if taken.contains(*k) {
            format!("result.{k}")
        } else {
            (*k).clone()
        };
        taken.insert(name.clone());
        result_names.push(name);
    }
    columns.extend(result_names);
    let rows = records
        .iter()
        .map(|r| {
            let mut row = vec![
                Cell::Text(r.key.0.clone()),
                Cell::Text(r.spec.kind.as_str().into()),
                Cell::Text(
                    match r.status {
                        UnitStatus::Done => "done",
                        UnitStatus::Failed => "failed",
                    }
                    .into(),
                ),
                r.error.clone().map(Cell::Text).unwrap_or(Cell::Empty),
                Cell::Text(r.spec.checkpoint.clone()),
                Cell::Text(r.spec.dataset.clone()),
                Cell::Text(r.spec.config.clone()),
                r.spec
                    .step
                    .map(|s| Cell::Int(s as i64))
                    .unwrap_or(Cell::Empty),
                r.spec
                    .seed
                    .map(|s| Cell::Int(s as i64))
                    .unwrap_or(Cell::Empty),
                r.spec.loss.clone().map(Cell::Text).unwrap_or(Cell::Empty),
            ];
            for e in &extras {
                row.push(
                    r.spec
                        .extra
                        .get(*e)
                        .cloned()
                        .map(Cell::Text)
                        .unwrap_or(Cell::Empty),
                );
            }
            for k in &results {
                row.push(json_cell(r.result.as_ref().and_then(|m| m.get(*k))));
            }
            row
        })
        .collect();
    Table { columns, rows }
}

/// Writes the units of `kind` (or all) to a CSV file.
pub fn export_csv(store: &Store, kind: Option<UnitKind>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let t = table(&store.records(kind)?);
    let bad = |e: &dyn std::fmt::Display| Error::Export {
        path: path.to_path_buf(),
        problem: e.to_string(),
    };
    let mut w = csv::Writer::from_path(path).map_err(|e| bad(&e))?;
    w.write_record(&t.columns).map_err(|e| bad(&e))?;
    for row in &t.rows {
        w.write_record(row.iter().map(Cell::to_csv))
            .map_err(|e| bad(&e))?;
    }
    w.flush().map_err(|e| bad(&e))
}

/// A table of JSON objects (e.g. serialized result rows): one column per key (sorted), one row per
/// object; absent keys and nulls are empty cells.
pub fn table_from_json(objects: &[Value]) -> Table {
    let mut columns: Vec<String> = Vec::new();
    for o in objects {
        if let Value::Object(m) = o {
            for k in m.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    columns.sort();
    let rows = objects
        .iter()
        .map(|o| columns.iter().map(|c| json_cell(o.get(c))).collect())
        .collect();
    Table { columns, rows }
}

/// Writes a table to a Parquet file (types as in [`export_parquet`]).
#[cfg(feature = "parquet")]
pub fn write_parquet(t: &Table, path: impl AsRef<Path>) -> Result<()> {
    parquet::write(t, path.as_ref())
}

/// Writes the units of `kind` (or all) to a Parquet file: integer columns as Int64, numeric ones as
/// Float64, everything else as UTF-8, all nullable.
#[cfg(feature = "parquet")]
pub fn export_parquet(store: &Store, kind: Option<UnitKind>, path: impl AsRef<Path>) -> Result<()> {
    let t = table(&store.records(kind)?);
    parquet::write(&t, path.as_ref())
}

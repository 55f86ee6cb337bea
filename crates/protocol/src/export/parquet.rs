//! Parquet writer for [`super::Table`] (behind the `parquet` cargo feature: arrow and parquet
//! add minutes to a cold build, so the default build leaves them out).
//!
//! Column types: a column whose non-empty cells are all integers is Int64; all numbers, Float64;
//! anything else UTF-8 (cells as in the CSV). Every column is nullable and an empty cell is null.
//! Uncompressed (no codec features are compiled in), one row group.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

use super::{Cell, Table};
use crate::error::{Error, Result};

pub(crate) fn write(t: &Table, path: &Path) -> Result<()> {
    let bad = |e: &dyn std::fmt::Display| Error::Export {
        path: path.to_path_buf(),
        problem: e.to_string(),
    };
    let mut fields = Vec::with_capacity(t.columns.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(t.columns.len());
    for (c, name) in t.columns.iter().enumerate() {
        let cells: Vec<&Cell> = t.rows.iter().map(|r| &r[c]).collect();
        let non_empty = || cells.iter().filter(|x| !matches!(x, Cell::Empty));
        let all_int = non_empty().all(|x| matches!(x, Cell::Int(_)));
        let all_num = non_empty().all(|x| matches!(x, Cell::Int(_) | Cell::Float(_)));
        let has_any = non_empty().next().is_some();
        let (dtype, array): (DataType, ArrayRef) = if has_any && all_int {
            let v: Int64Array = cells
                .iter()
                .map(|x| match x {
                    Cell::Int(i) => Some(*i),
                    _ => None,
                })
                .collect();
            (DataType::Int64, Arc::new(v))
        } else if has_any && all_num {
            let v: Float64Array = cells
                .iter()
                .map(|x| match x {
                    Cell::Int(i) => Some(*i as f64),
                    Cell::Float(f) if f.is_finite() => Some(*f),
                    _ => None,
                })
                .collect();
            (DataType::Float64, Arc::new(v))
        } else {
            let v: StringArray = cells
                .iter()
                .map(|x| match x {
                    Cell::Empty => None,
                    Cell::Int(i) => Some(i.to_string()),
                    Cell::Float(f) => Some(f.to_string()),
                    Cell::Text(s) => Some(s.clone()),
                })
                .collect();
            (DataType::Utf8, Arc::new(v))
        };
        fields.push(Field::new(name, dtype, true));
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| bad(&e))?;
    let file = std::fs::File::create(path).map_err(|e| bad(&e))?;
    let mut writer = ArrowWriter::try_new(file, schema, None).map_err(|e| bad(&e))?;
    writer.write(&batch).map_err(|e| bad(&e))?;
    writer.close().map_err(|e| bad(&e))?;
    Ok(())
}

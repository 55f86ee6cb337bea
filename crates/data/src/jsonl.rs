//! The one JSONL reader: a file of one JSON object per line, blank lines skipped.
//!
//! Every consumer (task files, `w2sg lm features --data`) reads through [`records`], so they agree on
//! the edge cases a user meets: a file that is not UTF-8 names the first bad line and column instead
//! of failing on "stream did not contain valid UTF-8"; *every* malformed line is counted and the
//! first ten are listed, not just the first one, so a user can fix a file in one pass; line numbers
//! are 1-based file lines (blank lines count), so they match an editor; an empty file is an error,
//! not an empty data set.

use std::path::Path;

use crate::DataError;

/// Parses each non-blank line with `parse`, returning `(1-based line, value)` pairs.
///
/// `parse` gets the line's JSON value and returns why it is unusable (e.g. "missing string field
/// `txt`"); lines that are not JSON are reported without calling it.
pub fn records<T>(
    path: &Path,
    parse: impl Fn(&serde_json::Value) -> Result<T, String>,
) -> Result<Vec<(usize, T)>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| not_utf8(path, &e))?;
    let mut out = Vec::new();
    let mut bad: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<serde_json::Value>(line)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|v| parse(&v));
        match parsed {
            Ok(v) => out.push((i + 1, v)),
            Err(reason) => bad.push((i + 1, reason)),
        }
    }
    if let Some((line, reason)) = bad.first().cloned() {
        let more = if bad.len() > 1 {
            let others: Vec<String> = bad[1..]
                .iter()
                .take(10)
                .map(|(l, _)| l.to_string())
                .collect();
            format!(
                " ({} more malformed lines: {}{})",
                bad.len() - 1,
                others.join(", "),
                if bad.len() > 11 { ", …" } else { "" }
            )
        } else {
            String::new()
        };
        return Err(DataError::Line {
            path: path.to_path_buf(),
            line,
            reason: format!("{reason}{more}"),
        });
    }
    if out.is_empty() {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: "no records".into(),
        });
    }
    Ok(out)
}

/// The string field `field` of every record.
pub fn texts(path: &Path, field: &str) -> Result<Vec<(usize, String)>, DataError> {
    records(path, |v| match v.get(field) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field `{field}` is not a string")),
        None => Err(format!("no field `{field}`")),
    })
}

/// Names the first line that is not UTF-8 (a Latin-1 export, a binary file).
fn not_utf8(path: &Path, e: &std::string::FromUtf8Error) -> DataError {
    let at = e.utf8_error().valid_up_to();
    let bytes = e.as_bytes();
    let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    let column = at
        - bytes[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    DataError::Line {
        path: path.to_path_buf(),
        line,
        reason: format!(
            "not UTF-8 text (invalid byte 0x{:02x} at column {column})",
            bytes[at]
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn line_numbers_count_blank_lines_and_every_bad_line_is_named() {
        let f = file(b"{\"t\":\"a\"}\n\n{\"t\":1}\n{\"t\":\"b\"}\nnope\n");
        let err = texts(f.path(), "t").unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("not a string"), "{err}");
        assert!(err.contains("1 more malformed lines: 5"), "{err}");
        let f = file(b"{\"t\":\"a\"}\n\n{\"t\":\"b\"}\n");
        assert_eq!(
            texts(f.path(), "t").unwrap(),
            vec![(1, "a".to_string()), (3, "b".to_string())]
        );
    }

    #[test]
    fn non_utf8_names_line_and_column_and_empty_is_an_error() {
        let f = file(b"{\"t\":\"a\"}\n{\"t\":\"\xe9\"}\n");
        let err = texts(f.path(), "t").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("column 7"), "{err}");
        let f = file(b"\n  \n");
        assert!(texts(f.path(), "t")
            .unwrap_err()
            .to_string()
            .contains("no records"));
    }
}

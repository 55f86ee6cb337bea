//! Validated views of the inputs: a row-major f32 feature matrix (n examples × k features) and
//! training targets in [0, 1].
//!
//! Why views: the sweep's features are large (10⁴ × 1024 f32 is 40 MB) and are read, not copied, by
//! every probe. Validation happens once, here: a wrong length, an empty matrix and a non-finite value
//! (NaN features from a broken checkpoint) are errors naming the row and column, never a panic or a NaN
//! probe later.

use crate::error::{Error, Result};

/// A borrowed row-major feature matrix with n ≥ 1 rows, k ≥ 1 columns and finite values.
#[derive(Clone, Copy, Debug)]
pub struct Features<'a> {
    data: &'a [f32],
    n: usize,
    k: usize,
}

impl<'a> Features<'a> {
    /// Checks the shape and that every value is finite.
    pub fn new(data: &'a [f32], n: usize, k: usize) -> Result<Self> {
        if n == 0 || k == 0 {
            return Err(Error::input(
                "features",
                format!("empty matrix ({n} rows × {k} columns)"),
            ));
        }
        let expected = n.checked_mul(k).ok_or_else(|| {
            Error::input("features", format!("{n} × {k} overflows the address space"))
        })?;
        if data.len() != expected {
            return Err(Error::input(
                "features",
                format!("expected {n} × {k} = {expected} values, got {}", data.len()),
            ));
        }
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::input(
                "features",
                format!(
                    "non-finite value {} at row {}, column {}",
                    data[pos],
                    pos / k,
                    pos % k
                ),
            ));
        }
        Ok(Features { data, n, k })
    }

    /// Number of examples.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Number of features.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// The row-major values.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Example `i`'s features.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.k..(i + 1) * self.k]
    }
}

/// Training targets: P(y = 1) per example, in [0, 1] (hard labels are 0.0 and 1.0).
#[derive(Clone, Copy, Debug)]
pub struct Targets<'a> {
    values: &'a [f64],
}

impl<'a> Targets<'a> {
    /// Checks that every target is a number in [0, 1].
    pub fn new(values: &'a [f64]) -> Result<Self> {
        if let Some((i, v)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| !(0.0..=1.0).contains(*v))
        {
            return Err(Error::input(
                "targets",
                format!("target {v} of example {i} is not a probability in [0, 1]"),
            ));
        }
        Ok(Targets { values })
    }

    /// The targets.
    pub fn values(&self) -> &'a [f64] {
        self.values
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are no targets.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Hard labels as targets (true → 1.0).
pub fn hard_targets(labels: &[bool]) -> Vec<f64> {
    labels.iter().map(|&y| if y { 1.0 } else { 0.0 }).collect()
}

/// Checks that the features and targets describe the same examples.
pub(crate) fn check_same_rows(x: &Features<'_>, t: &Targets<'_>) -> Result<()> {
    if x.rows() != t.len() {
        return Err(Error::input(
            "targets",
            format!("{} targets for {} feature rows", t.len(), x.rows()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_values_are_checked() {
        let data = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let x = Features::new(&data, 2, 3).unwrap();
        assert_eq!(x.row(1), &[4.0, 5.0, 6.0]);
        let err = Features::new(&data, 3, 3).unwrap_err().to_string();
        assert!(err.contains("expected 3 × 3 = 9 values, got 6"), "{err}");
        assert!(Features::new(&[], 0, 3).is_err());
        let bad = [1.0f32, f32::NAN, 3.0, 4.0];
        let err = Features::new(&bad, 2, 2).unwrap_err().to_string();
        assert!(err.contains("row 0, column 1"), "{err}");
        let err = Targets::new(&[0.0, 1.5]).unwrap_err().to_string();
        assert!(err.contains("example 1"), "{err}");
        assert!(Targets::new(&[f64::NAN]).is_err());
        assert_eq!(hard_targets(&[true, false]), vec![1.0, 0.0]);
    }
}

//! What can be drawn on a plot: lines (with markers and shaded bands),
//! scatter points, and horizontal or vertical reference lines.
//!
//! These are plain descriptions; [`crate::Plot`] and [`crate::HeatMap`] decide
//! colours and draw them. Points that cannot be drawn (NaN, ±inf, or
//! non-positive on a log axis) are skipped: a line is broken there, a scatter
//! point or band section is left out. An empty label keeps a series out of the
//! legend.

use crate::color::Rgb;
use crate::error::{ReportError, Result};

/// Marker shapes for line and scatter series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// A filled circle.
    Circle,
    /// A filled square.
    Square,
    /// A filled upward triangle.
    Triangle,
    /// An ×-shaped cross.
    Cross,
}

/// How a line is stroked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineStyle {
    /// A continuous line.
    #[default]
    Solid,
    /// A dashed line.
    Dashed,
}

/// A shaded region between a lower and an upper curve, sharing the line's x values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Band {
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
}

/// A line through points in the given order, optionally with markers and a band.
///
/// ```
/// use w2sg_report::{LineSeries, Marker};
/// let mean = [0.30, 0.22, 0.18];
/// let sd = [0.03, 0.02, 0.02];
/// let line = LineSeries::from_xy("weak-to-strong", &[1e2, 1e3, 1e4], &mean)
///     .marker(Marker::Circle)
///     .band_sd(&sd);
/// # let _ = line;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LineSeries {
    pub(crate) label: String,
    pub(crate) points: Vec<(f64, f64)>,
    pub(crate) color: Option<Rgb>,
    pub(crate) width: u32,
    pub(crate) style: LineStyle,
    pub(crate) marker: Option<Marker>,
    pub(crate) marker_size: u32,
    pub(crate) band: Option<Band>,
    /// An input mistake found by a builder method, reported when rendering.
    pub(crate) problem: Option<String>,
}

impl LineSeries {
    /// A solid line through `points` (x, y).
    pub fn new(label: impl Into<String>, points: impl IntoIterator<Item = (f64, f64)>) -> Self {
        LineSeries {
            label: label.into(),
            points: points.into_iter().collect(),
            color: None,
            width: 2,
            style: LineStyle::Solid,
            marker: None,
            marker_size: 4,
            band: None,
            problem: None,
        }
    }

    /// A line from separate x and y slices (rendering fails if their lengths differ).
    pub fn from_xy(label: impl Into<String>, xs: &[f64], ys: &[f64]) -> Self {
        let mut s = Self::new(label, xs.iter().copied().zip(ys.iter().copied()));
        if xs.len() != ys.len() {
            s.problem = Some(format!("{} x values but {} y values", xs.len(), ys.len()));
        }
        s
    }

    /// Sets the colour (default: next colour of the palette).
    pub fn color(mut self, color: Rgb) -> Self {
        self.color = Some(color);
        self
    }

    /// Sets the stroke width in pixels (default 2).
    pub fn width(mut self, width: u32) -> Self {
        self.width = width.max(1);
        self
    }

    /// Draws the line dashed.
    pub fn dashed(mut self) -> Self {
        self.style = LineStyle::Dashed;
        self
    }

    /// Sets the stroke style.
    pub fn style(mut self, style: LineStyle) -> Self {
        self.style = style;
        self
    }

    /// Adds a marker at every point.
    pub fn marker(mut self, marker: Marker) -> Self {
        self.marker = Some(marker);
        self
    }

    /// Sets the marker radius in pixels (default 4).
    pub fn marker_size(mut self, size: u32) -> Self {
        self.marker_size = size;
        self
    }

    /// Shades the region between `lower[i]` and `upper[i]` at each point's x,
    /// in the line's colour (e.g. mean ± sd over seeds, or a min–max range).
    pub fn band(
        mut self,
        lower: impl IntoIterator<Item = f64>,
        upper: impl IntoIterator<Item = f64>,
    ) -> Self {
        self.band = Some(Band {
            lower: lower.into_iter().collect(),
            upper: upper.into_iter().collect(),
        });
        self
    }

    /// Shades `y ± sd[i]` around each point.
    pub fn band_sd(self, sd: &[f64]) -> Self {
        let lower: Vec<f64> = self.points.iter().zip(sd).map(|(p, s)| p.1 - s).collect();
        let upper: Vec<f64> = self.points.iter().zip(sd).map(|(p, s)| p.1 + s).collect();
        let n = self.points.len();
        let mut s = self.band(lower, upper);
        if sd.len() != n && s.problem.is_none() {
            s.problem = Some(format!("{n} points but {} standard deviations", sd.len()));
        }
        s
    }

    /// Reports the first input mistake, naming the series.
    pub(crate) fn validate(&self) -> Result<()> {
        let name = &self.label;
        if let Some(p) = &self.problem {
            return Err(ReportError::invalid(format!("line series '{name}': {p}")));
        }
        if let Some(b) = &self.band {
            let n = self.points.len();
            if b.lower.len() != n || b.upper.len() != n {
                return Err(ReportError::invalid(format!(
                    "line series '{name}': band has {} lower and {} upper values for {n} points",
                    b.lower.len(),
                    b.upper.len()
                )));
            }
        }
        Ok(())
    }
}

/// Unconnected points, e.g. one per seed.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterSeries {
    pub(crate) label: String,
    pub(crate) points: Vec<(f64, f64)>,
    pub(crate) color: Option<Rgb>,
    pub(crate) marker: Marker,
    pub(crate) size: u32,
    pub(crate) problem: Option<String>,
}

impl ScatterSeries {
    /// Circles at `points` (x, y).
    pub fn new(label: impl Into<String>, points: impl IntoIterator<Item = (f64, f64)>) -> Self {
        ScatterSeries {
            label: label.into(),
            points: points.into_iter().collect(),
            color: None,
            marker: Marker::Circle,
            size: 4,
            problem: None,
        }
    }

    /// Points from separate x and y slices (rendering fails if their lengths differ).
    pub fn from_xy(label: impl Into<String>, xs: &[f64], ys: &[f64]) -> Self {
        let mut s = Self::new(label, xs.iter().copied().zip(ys.iter().copied()));
        if xs.len() != ys.len() {
            s.problem = Some(format!("{} x values but {} y values", xs.len(), ys.len()));
        }
        s
    }

    /// Sets the colour (default: next colour of the palette).
    pub fn color(mut self, color: Rgb) -> Self {
        self.color = Some(color);
        self
    }

    /// Sets the marker shape (default circle).
    pub fn marker(mut self, marker: Marker) -> Self {
        self.marker = marker;
        self
    }

    /// Sets the marker radius in pixels (default 4).
    pub fn size(mut self, size: u32) -> Self {
        self.size = size;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match &self.problem {
            Some(p) => Err(ReportError::invalid(format!(
                "scatter series '{}': {p}",
                self.label
            ))),
            None => Ok(()),
        }
    }
}

/// A horizontal or vertical line across the whole plot at one value,
/// e.g. the weak supervisor's risk or a theoretical threshold. Dashed by default.
#[derive(Debug, Clone, PartialEq)]
pub struct RefLine {
    pub(crate) label: String,
    pub(crate) value: f64,
    pub(crate) color: Option<Rgb>,
    pub(crate) width: u32,
    pub(crate) style: LineStyle,
}

impl RefLine {
    /// A dashed reference line at `value`.
    pub fn new(label: impl Into<String>, value: f64) -> Self {
        RefLine {
            label: label.into(),
            value,
            color: None,
            width: 2,
            style: LineStyle::Dashed,
        }
    }

    /// Sets the colour (default: a palette colour not used by the series).
    pub fn color(mut self, color: Rgb) -> Self {
        self.color = Some(color);
        self
    }

    /// Sets the stroke width in pixels (default 2).
    pub fn width(mut self, width: u32) -> Self {
        self.width = width.max(1);
        self
    }

    /// Draws the line solid instead of dashed.
    pub fn solid(mut self) -> Self {
        self.style = LineStyle::Solid;
        self
    }
}

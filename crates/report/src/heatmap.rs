//! A heat map: values on a grid of (x, y) points, coloured by a viridis scale
//! with a colour bar, optionally with lines drawn on top.
//!
//! Typical use: risk (or the weak-to-strong gain) over a grid of two
//! parameters, with the theoretical threshold curve overlaid. Each grid value
//! is drawn as a cell centred on its (x, y); cell edges lie halfway between
//! neighbours in transformed coordinates, so cells of a log axis are evenly
//! sized. Cells without a value (NaN, ±inf, or `<= 0` on a log colour scale)
//! are drawn grey.

use plotters::coord::Shift;
use plotters::prelude::{ChartBuilder, Color, DrawingArea, DrawingBackend, Rectangle};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

use crate::axis::{Axis, ResolvedAxis, Scale};
use crate::chart::{self, Frame, FrameStyle, TickedRange};
use crate::color::{viridis, Rgb, FRAME, MISSING, OVERLAY_PALETTE};
use crate::error::{ReportError, Result};
use crate::font;
use crate::legend::{self, Legend};
use crate::series::LineSeries;

/// Width of the colour bar itself, in pixels.
const BAR_WIDTH: u32 = 22;
/// Room for the colour bar's rotated label, in pixels.
const LABEL_WIDTH: u32 = 28;
/// Number of colour steps drawn in the colour bar.
const BAR_STEPS: usize = 128;

/// A heat map with a colour bar.
///
/// `z[j][i]` is the value at `(xs[i], ys[j])`: one row per y value.
///
/// ```
/// use w2sg_report::{Axis, Figure, HeatMap, LineSeries};
/// let xs = [1.0, 10.0, 100.0];
/// let ys = [0.1, 0.2];
/// let map = HeatMap::from_fn("gain", &xs, &ys, |x, y| x.ln() * y)
///     .x_axis(Axis::new("n").log())
///     .color_axis(Axis::new("gain"))
///     .line(LineSeries::new("threshold", [(1.0, 0.1), (100.0, 0.2)]));
/// assert!(Figure::from(map).to_png_bytes().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HeatMap {
    title: String,
    x: Axis,
    y: Axis,
    color: Axis,
    xs: Vec<f64>,
    ys: Vec<f64>,
    z: Vec<Vec<f64>>,
    lines: Vec<LineSeries>,
    legend: Legend,
}

impl HeatMap {
    /// A heat map of `z[j][i]` at `(xs[i], ys[j])`, with linear axes.
    pub fn new(title: impl Into<String>, xs: &[f64], ys: &[f64], z: Vec<Vec<f64>>) -> HeatMap {
        HeatMap {
            title: title.into(),
            x: Axis::default(),
            y: Axis::default(),
            color: Axis::default(),
            xs: xs.to_vec(),
            ys: ys.to_vec(),
            z,
            lines: Vec::new(),
            legend: Legend::default(),
        }
    }

    /// A heat map of `f(x, y)` over the grid `xs × ys`.
    pub fn from_fn(
        title: impl Into<String>,
        xs: &[f64],
        ys: &[f64],
        f: impl Fn(f64, f64) -> f64,
    ) -> HeatMap {
        let z = ys
            .iter()
            .map(|&y| xs.iter().map(|&x| f(x, y)).collect())
            .collect();
        HeatMap::new(title, xs, ys, z)
    }

    /// Sets the x axis (label, scale, range; the default range spans all cells).
    pub fn x_axis(mut self, axis: Axis) -> HeatMap {
        self.x = axis;
        self
    }

    /// Sets the y axis (label, scale, range).
    pub fn y_axis(mut self, axis: Axis) -> HeatMap {
        self.y = axis;
        self
    }

    /// Sets the colour scale: its label (shown by the colour bar), linear or log,
    /// and an optional fixed range (values outside get the end colours).
    pub fn color_axis(mut self, axis: Axis) -> HeatMap {
        self.color = axis;
        self
    }

    /// Draws a line over the heat map (e.g. a theoretical threshold).
    pub fn line(mut self, line: LineSeries) -> HeatMap {
        self.lines.push(line);
        self
    }

    /// Sets where the legend of the overlaid lines goes.
    pub fn legend(mut self, legend: Legend) -> HeatMap {
        self.legend = legend;
        self
    }

    /// The title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// Checks the grid's shape and that its coordinates can be drawn.
    fn validate(&self) -> Result<()> {
        let t = &self.title;
        for (name, values, axis) in [("x", &self.xs, &self.x), ("y", &self.ys, &self.y)] {
            if values.is_empty() {
                return Err(ReportError::invalid(format!(
                    "heat map '{t}' has no {name} values"
                )));
            }
            if let Some(v) = values
                .iter()
                .find(|&&v| axis.get_scale().forward(v).is_none())
            {
                return Err(ReportError::invalid(format!(
                    "heat map '{t}': {name} value {v} cannot be drawn on a {:?} axis",
                    axis.get_scale()
                )));
            }
            if values.windows(2).any(|w| w[0] >= w[1]) {
                return Err(ReportError::invalid(format!(
                    "heat map '{t}': {name} values must be strictly increasing"
                )));
            }
        }
        if self.z.len() != self.ys.len() {
            return Err(ReportError::invalid(format!(
                "heat map '{t}': {} rows of z for {} y values",
                self.z.len(),
                self.ys.len()
            )));
        }
        if let Some((j, row)) = self
            .z
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != self.xs.len())
        {
            return Err(ReportError::invalid(format!(
                "heat map '{t}': z row {j} has {} values for {} x values",
                row.len(),
                self.xs.len()
            )));
        }
        for l in &self.lines {
            l.validate()?;
        }
        Ok(())
    }

    /// Draws the heat map, its colour bar and overlays into `area`.
    pub(crate) fn draw_on<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        self.validate()?;
        let x_edges = cell_edges(&self.xs, self.x.get_scale());
        let y_edges = cell_edges(&self.ys, self.y.get_scale());
        let frame = Frame {
            x: self.x.resolve(
                "x",
                x_edges.iter().map(|&t| self.x.get_scale().inverse(t)),
                false,
            )?,
            y: self.y.resolve(
                "y",
                y_edges.iter().map(|&t| self.y.get_scale().inverse(t)),
                false,
            )?,
        };
        let colors = self
            .color
            .resolve("colour", self.z.iter().flatten().copied(), false)?;

        let area = chart::titled(area, &self.title)?;
        let ticks_only = ResolvedAxis {
            label: String::new(),
            ..colors.clone()
        };
        let label = if colors.label.is_empty() {
            0
        } else {
            LABEL_WIDTH
        };
        let bar_width = BAR_WIDTH + 12 + chart::y_label_area_size(&area, &ticks_only)? + label;
        let (width, _) = area.dim_in_pixel();
        let (main, bar) = area.split_horizontally(width.saturating_sub(bar_width));

        let style = FrameStyle {
            grid: false,
            margin_right: 16,
        };
        let mut chart = chart::build(&main, &frame, style)?;
        let rect = frame.rect();
        let mut cells = Vec::with_capacity(self.xs.len() * self.ys.len());
        for (j, row) in self.z.iter().enumerate() {
            let (y0, y1) = (y_edges[j].max(rect.y0), y_edges[j + 1].min(rect.y1));
            for (i, &z) in row.iter().enumerate() {
                let (x0, x1) = (x_edges[i].max(rect.x0), x_edges[i + 1].min(rect.x1));
                if x0 >= x1 || y0 >= y1 {
                    continue;
                }
                let fill = color_of(z, &colors).rgb().filled();
                cells.push(Rectangle::new([(x0, y1), (x1, y0)], fill));
            }
        }
        chart.draw_series(cells).map_err(ReportError::render)?;

        for (k, l) in self.lines.iter().enumerate() {
            let color = l
                .color
                .unwrap_or(OVERLAY_PALETTE[k % OVERLAY_PALETTE.len()]);
            chart::draw_band(&mut chart, &frame, l, color)?;
            chart::draw_line(&mut chart, &frame, l, color)?;
        }
        chart::draw_box(&mut chart, &frame)?;
        if self.lines.iter().any(|l| !l.label.is_empty()) {
            legend::draw(&mut chart, self.legend)?;
        }
        draw_color_bar(&bar, &colors, chart::x_label_area_size(&frame.x))
    }
}

/// Colour of one cell value under the resolved colour scale.
fn color_of(z: f64, scale: &ResolvedAxis) -> Rgb {
    match scale.forward(z) {
        Some(t) => viridis((t - scale.lo) / (scale.hi - scale.lo)),
        None => MISSING,
    }
}

/// Cell edges (transformed coordinates) around increasing, drawable cell centres.
fn cell_edges(values: &[f64], scale: Scale) -> Vec<f64> {
    let c: Vec<f64> = values.iter().filter_map(|&v| scale.forward(v)).collect();
    if c.len() == 1 {
        let half = match scale {
            Scale::Log => 0.5,
            Scale::Linear if c[0] == 0.0 => 0.5,
            Scale::Linear => 0.1 * c[0].abs(),
        };
        return vec![c[0] - half, c[0] + half];
    }
    let n = c.len();
    let mut edges = Vec::with_capacity(n + 1);
    edges.push(c[0] - (c[1] - c[0]) / 2.0);
    edges.extend(c.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    edges.push(c[n - 1] + (c[n - 1] - c[n - 2]) / 2.0);
    edges
}

/// Draws the vertical colour bar with ticks and, on its right, its label
/// (rotated to read bottom to top, like the y axis label).
fn draw_color_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    colors: &ResolvedAxis,
    bottom: u32,
) -> Result<()> {
    let ticks_only = ResolvedAxis {
        label: String::new(),
        ..colors.clone()
    };
    let mut chart = ChartBuilder::on(area)
        .margin_top(chart::MARGIN_TOP)
        .margin_bottom(chart::MARGIN_BOTTOM)
        .margin_left(4)
        .margin_right(if colors.label.is_empty() {
            0
        } else {
            LABEL_WIDTH
        })
        .x_label_area_size(bottom)
        .right_y_label_area_size(chart::y_label_area_size(area, &ticks_only)?)
        .build_cartesian_2d(TickedRange::bare(0.0, 1.0), TickedRange::new(colors))
        .map_err(ReportError::render)?;
    let fmt = |t: &f64| colors.label_at(*t);
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_label_formatter(&fmt)
        .label_style(font::text(font::TICK_SIZE))
        .axis_style(FRAME.rgb())
        .set_all_tick_mark_size(5)
        .draw()
        .map_err(ReportError::render)?;
    let step = (colors.hi - colors.lo) / BAR_STEPS as f64;
    let steps = (0..BAR_STEPS).map(|k| {
        let (a, b) = (
            colors.lo + k as f64 * step,
            colors.lo + (k + 1) as f64 * step,
        );
        let fill = viridis((k as f64 + 0.5) / BAR_STEPS as f64).rgb().filled();
        Rectangle::new([(0.0, b), (1.0, a)], fill)
    });
    chart.draw_series(steps).map_err(ReportError::render)?;
    chart
        .plotting_area()
        .draw(&Rectangle::new(
            [(0.0, colors.hi), (1.0, colors.lo)],
            FRAME.rgb().stroke_width(1),
        ))
        .map_err(ReportError::render)?;

    if !colors.label.is_empty() {
        let (_, bar_rows) = chart.plotting_area().get_pixel_range();
        let (_, top) = area.get_base_pixel();
        let (width, _) = area.dim_in_pixel();
        let style = font::text(font::AXIS_LABEL_SIZE)
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Center, VPos::Top));
        let x = width as i32 - LABEL_WIDTH as i32 + 4;
        let y = (bar_rows.start + bar_rows.end) / 2 - top;
        area.draw_text(&colors.label, &style, (x, y))
            .map_err(ReportError::render)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_midpoints() {
        assert_eq!(
            cell_edges(&[0.0, 1.0, 3.0], Scale::Linear),
            [-0.5, 0.5, 2.0, 4.0]
        );
        assert_eq!(cell_edges(&[1.0, 100.0], Scale::Log), [-1.0, 1.0, 3.0]);
        assert_eq!(cell_edges(&[5.0], Scale::Linear), [4.5, 5.5]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let m = HeatMap::new("m", &[1.0, 2.0], &[1.0], vec![vec![1.0]]);
        assert!(m.validate().unwrap_err().to_string().contains("row 0"));
        let m = HeatMap::new("m", &[2.0, 1.0], &[1.0], vec![vec![1.0, 2.0]]);
        assert!(m.validate().is_err());
        let m = HeatMap::new("m", &[0.0, 1.0], &[1.0], vec![vec![1.0, 2.0]])
            .x_axis(Axis::new("").log());
        assert!(m.validate().is_err());
    }
}

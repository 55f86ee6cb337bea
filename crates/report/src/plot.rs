//! An x–y plot: line and scatter series, shaded bands and reference lines.
//!
//! This is the workhorse figure of the report (risk against sample size, risk
//! against a hyper-parameter, ...). A [`Plot`] is a description only; wrap it
//! in a [`crate::Figure`] (or use `Figure::from(plot)`) to render or save it.

use plotters::coord::Shift;
use plotters::prelude::{DrawingArea, DrawingBackend};
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::axis::Axis;
use crate::chart::{self, Frame, FrameStyle};
use crate::color::{palette, Rgb};
use crate::error::{ReportError, Result};
use crate::font;
use crate::legend::{self, Legend};
use crate::series::{LineSeries, RefLine, ScatterSeries};

/// A series of a plot, in the order it was added (which sets its default colour).
#[derive(Debug, Clone, PartialEq)]
enum Series {
    Line(LineSeries),
    Scatter(ScatterSeries),
}

/// An x–y plot.
///
/// ```
/// use w2sg_report::{Axis, Figure, LineSeries, Plot, RefLine};
/// let plot = Plot::new("Weak-to-strong risk")
///     .x_axis(Axis::new("n").log())
///     .y_axis(Axis::new("risk").min(0.0))
///     .line(LineSeries::new("strong student", [(1e2, 0.4), (1e3, 0.25), (1e4, 0.2)]))
///     .hline(RefLine::new("weak supervisor", 0.3));
/// let svg = Figure::from(plot).to_svg_string().unwrap();
/// assert!(svg.contains("Weak-to-strong risk"));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plot {
    title: String,
    x: Axis,
    y: Axis,
    series: Vec<Series>,
    hlines: Vec<RefLine>,
    vlines: Vec<RefLine>,
    legend: Legend,
}

impl Plot {
    /// An empty plot with the given title and unlabelled linear axes.
    pub fn new(title: impl Into<String>) -> Plot {
        Plot {
            title: title.into(),
            ..Plot::default()
        }
    }

    /// Sets the x axis (label, scale, range).
    pub fn x_axis(mut self, axis: Axis) -> Plot {
        self.x = axis;
        self
    }

    /// Sets the y axis (label, scale, range).
    pub fn y_axis(mut self, axis: Axis) -> Plot {
        self.y = axis;
        self
    }

    /// Adds a line series.
    pub fn line(mut self, line: LineSeries) -> Plot {
        self.series.push(Series::Line(line));
        self
    }

    /// Adds a scatter series.
    pub fn scatter(mut self, scatter: ScatterSeries) -> Plot {
        self.series.push(Series::Scatter(scatter));
        self
    }

    /// Adds a horizontal reference line at `line.value` on the y axis.
    pub fn hline(mut self, line: RefLine) -> Plot {
        self.hlines.push(line);
        self
    }

    /// Adds a vertical reference line at `line.value` on the x axis.
    pub fn vline(mut self, line: RefLine) -> Plot {
        self.vlines.push(line);
        self
    }

    /// Sets where the legend goes (default upper right; [`Legend::Hidden`] for none).
    pub fn legend(mut self, legend: Legend) -> Plot {
        self.legend = legend;
        self
    }

    /// The title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// Colour of the `i`-th series: its own, or the palette's.
    fn color(&self, i: usize) -> Rgb {
        let own = match &self.series[i] {
            Series::Line(s) => s.color,
            Series::Scatter(s) => s.color,
        };
        own.unwrap_or_else(|| palette(i))
    }

    /// Chooses the axes: x from all x values, y from the points visible in that x range.
    fn frame(&self) -> Result<Frame> {
        let mut xs: Vec<f64> = self.vlines.iter().map(|r| r.value).collect();
        for s in &self.series {
            match s {
                Series::Line(l) => xs.extend(l.points.iter().map(|p| p.0)),
                Series::Scatter(sc) => xs.extend(sc.points.iter().map(|p| p.0)),
            }
        }
        let x = self.x.resolve("x", xs, true)?;

        let visible = |px: f64| x.forward(px).is_some_and(|t| t >= x.lo && t <= x.hi);
        let mut ys: Vec<f64> = self.hlines.iter().map(|r| r.value).collect();
        for s in &self.series {
            match s {
                Series::Line(l) => {
                    for (i, &(px, py)) in l.points.iter().enumerate() {
                        if !visible(px) {
                            continue;
                        }
                        ys.push(py);
                        if let Some(b) = &l.band {
                            ys.extend(b.lower.get(i).copied());
                            ys.extend(b.upper.get(i).copied());
                        }
                    }
                }
                Series::Scatter(sc) => {
                    ys.extend(sc.points.iter().filter(|p| visible(p.0)).map(|p| p.1))
                }
            }
        }
        let y = self.y.resolve("y", ys, true)?;
        Ok(Frame { x, y })
    }

    /// Whether anything at all can be drawn.
    fn has_data(&self, frame: &Frame) -> bool {
        let any = |pts: &[(f64, f64)]| pts.iter().any(|&p| frame.map(p).is_some());
        self.series.iter().any(|s| match s {
            Series::Line(l) => any(&l.points),
            Series::Scatter(sc) => any(&sc.points),
        }) || self
            .hlines
            .iter()
            .any(|r| frame.y.forward(r.value).is_some())
            || self
                .vlines
                .iter()
                .any(|r| frame.x.forward(r.value).is_some())
    }

    /// Draws the plot into `area` (one panel of a figure).
    pub(crate) fn draw_on<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        for s in &self.series {
            match s {
                Series::Line(l) => l.validate()?,
                Series::Scatter(sc) => sc.validate()?,
            }
        }
        let frame = self.frame()?;
        let area = chart::titled(area, &self.title)?;
        let style = FrameStyle {
            grid: true,
            margin_right: 18,
        };
        let mut chart = chart::build(&area, &frame, style)?;

        for (i, s) in self.series.iter().enumerate() {
            if let Series::Line(l) = s {
                chart::draw_band(&mut chart, &frame, l, self.color(i))?;
            }
        }
        for (i, s) in self.series.iter().enumerate() {
            match s {
                Series::Line(l) => chart::draw_line(&mut chart, &frame, l, self.color(i))?,
                Series::Scatter(sc) => chart::draw_scatter(&mut chart, &frame, sc, self.color(i))?,
            }
        }
        // Reference lines last: on top of the data, and listed after it in the legend.
        let n = self.series.len();
        for (j, r) in self.hlines.iter().enumerate() {
            let color = r.color.unwrap_or_else(|| palette(n + j));
            chart::draw_ref_line(&mut chart, &frame, r, true, color)?;
        }
        for (j, r) in self.vlines.iter().enumerate() {
            let color = r
                .color
                .unwrap_or_else(|| palette(n + self.hlines.len() + j));
            chart::draw_ref_line(&mut chart, &frame, r, false, color)?;
        }
        chart::draw_box(&mut chart, &frame)?;

        if !self.has_data(&frame) {
            let plotting = chart.plotting_area();
            let (w, h) = plotting.dim_in_pixel();
            let style = font::text(font::AXIS_LABEL_SIZE).pos(Pos::new(HPos::Center, VPos::Center));
            plotting
                .strip_coord_spec()
                .draw_text("no data", &style, ((w / 2) as i32, (h / 2) as i32))
                .map_err(ReportError::render)?;
        }
        let labelled = self.series.iter().any(|s| match s {
            Series::Line(l) => !l.label.is_empty(),
            Series::Scatter(sc) => !sc.label.is_empty(),
        }) || self
            .hlines
            .iter()
            .chain(&self.vlines)
            .any(|r| !r.label.is_empty());
        if labelled {
            legend::draw(&mut chart, self.legend)?;
        }
        Ok(())
    }
}

//! The chart frame shared by plots and heat maps, and the drawing of series on it.
//!
//! A chart is a plotters Cartesian chart over *transformed* coordinates (see
//! `crate::axis`) whose tick positions are the ones chosen by [`crate::Axis`].
//! Everything drawn on it goes through [`Frame::map`] (skipping undrawable
//! points) and is clipped to the visible rectangle, because plotters does not
//! clip elements to the plotting area.

use std::ops::Range;

use plotters::chart::SeriesAnno;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::element::{DashedPathElement, PathElement, Polygon};
use plotters::prelude::{
    Cartesian2d, ChartBuilder, ChartContext, Color, DrawingArea, DrawingBackend, Rectangle,
};

use crate::axis::ResolvedAxis;
use crate::clip::{clip_polygon, clip_polyline, runs, Pt, Rect};
use crate::color::{Rgb, FRAME, GRID_MAJOR, GRID_MINOR};
use crate::error::{ReportError, Result};
use crate::font;
use crate::legend::Glyph;
use crate::marker::MarkerElement;
use crate::series::{LineSeries, LineStyle, RefLine, ScatterSeries};

/// One axis of the plotters chart: a linear range in transformed coordinates
/// whose bold (labelled) and light grid positions are ours.
#[derive(Debug, Clone)]
pub(crate) struct TickedRange {
    lo: f64,
    hi: f64,
    major: Vec<f64>,
    minor: Vec<f64>,
}

impl TickedRange {
    pub fn new(ax: &ResolvedAxis) -> TickedRange {
        TickedRange {
            lo: ax.lo,
            hi: ax.hi,
            major: ax.major.iter().map(|(t, _)| *t).collect(),
            minor: ax.minor.clone(),
        }
    }

    /// A range without ticks (the colour bar's horizontal axis).
    pub fn bare(lo: f64, hi: f64) -> TickedRange {
        TickedRange {
            lo,
            hi,
            major: Vec::new(),
            minor: Vec::new(),
        }
    }
}

impl Ranged for TickedRange {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = (value - self.lo) / (self.hi - self.lo);
        let pixel = limit.0 as f64 + f * (limit.1 - limit.0) as f64;
        // Clipping keeps data inside; the clamp only guards against overflow.
        pixel.round().clamp(-1e6, 1e6) as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.major.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// The chart type every panel draws on.
pub(crate) type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<TickedRange, TickedRange>>;

/// The two resolved axes of a panel.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub x: ResolvedAxis,
    pub y: ResolvedAxis,
}

impl Frame {
    /// The visible rectangle in transformed coordinates.
    pub fn rect(&self) -> Rect {
        Rect {
            x0: self.x.lo,
            x1: self.x.hi,
            y0: self.y.lo,
            y1: self.y.hi,
        }
    }

    /// Transformed coordinates of a data point, or `None` if it cannot be drawn.
    pub fn map(&self, (x, y): (f64, f64)) -> Option<Pt> {
        Some((self.x.forward(x)?, self.y.forward(y)?))
    }
}

/// Layout options of the frame.
pub(crate) struct FrameStyle {
    /// Light and bold grid lines inside the plotting area.
    pub grid: bool,
    /// Empty space right of the plotting area, in pixels.
    pub margin_right: u32,
}

/// Space above and below the plotting area, shared with the colour bar of a heat map.
pub(crate) const MARGIN_TOP: u32 = 8;
pub(crate) const MARGIN_BOTTOM: u32 = 6;

/// Draws `title` centred at the top of `area` and returns the area below it.
pub(crate) fn titled<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>> {
    if title.is_empty() {
        return Ok(area.clone());
    }
    area.titled(title, font::text(font::TITLE_SIZE))
        .map_err(ReportError::render)
}

/// Height of the area below the plot holding x tick labels and the x axis label.
pub(crate) fn x_label_area_size(x: &ResolvedAxis) -> u32 {
    30 + if x.label.is_empty() { 0 } else { 26 }
}

/// Width needed for tick labels plus, if present, the rotated axis label.
pub(crate) fn y_label_area_size<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    y: &ResolvedAxis,
) -> Result<u32> {
    let tick_font = font::text(font::TICK_SIZE);
    let mut widest = 0;
    for (_, label) in &y.major {
        let (w, _) = area
            .estimate_text_size(label, &tick_font)
            .map_err(ReportError::render)?;
        widest = widest.max(w);
    }
    Ok(widest + 14 + if y.label.is_empty() { 0 } else { 28 })
}

/// Builds the chart on `area`: tick labels, axis labels and grid (the title is
/// drawn separately by [`titled`]).
pub(crate) fn build<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    frame: &Frame,
    style: FrameStyle,
) -> Result<Chart<'a, DB>> {
    let tick_font = font::text(font::TICK_SIZE);
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_top(MARGIN_TOP)
        .margin_right(style.margin_right)
        .margin_left(6)
        .margin_bottom(MARGIN_BOTTOM)
        .x_label_area_size(x_label_area_size(&frame.x))
        .y_label_area_size(y_label_area_size(area, &frame.y)?);
    let mut chart = builder
        .build_cartesian_2d(TickedRange::new(&frame.x), TickedRange::new(&frame.y))
        .map_err(ReportError::render)?;

    let x_fmt = |t: &f64| frame.x.label_at(*t);
    let y_fmt = |t: &f64| frame.y.label_at(*t);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(frame.x.label.as_str())
        .y_desc(frame.y.label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(tick_font.clone())
        .axis_desc_style(font::text(font::AXIS_LABEL_SIZE))
        .bold_line_style(GRID_MAJOR.rgb().stroke_width(1))
        .light_line_style(GRID_MINOR.rgb().stroke_width(1))
        .axis_style(FRAME.rgb().stroke_width(1))
        .set_all_tick_mark_size(5);
    if !style.grid {
        mesh.disable_mesh();
    }
    mesh.draw().map_err(ReportError::render)?;
    Ok(chart)
}

/// Draws the box around the plotting area (after the data, so it stays on top).
pub(crate) fn draw_box<DB: DrawingBackend>(chart: &mut Chart<'_, DB>, frame: &Frame) -> Result<()> {
    let r = frame.rect();
    chart
        .plotting_area()
        .draw(&Rectangle::new(
            [(r.x0, r.y1), (r.x1, r.y0)],
            FRAME.rgb().stroke_width(1),
        ))
        .map_err(ReportError::render)
}

/// Draws solid or dashed paths in data coordinates; returns the series'
/// annotation so a legend entry can be attached.
fn draw_paths<'c, 'a: 'c, DB: DrawingBackend + 'a>(
    chart: &'c mut Chart<'a, DB>,
    pieces: Vec<Vec<Pt>>,
    color: Rgb,
    width: u32,
    style: LineStyle,
) -> Result<&'c mut SeriesAnno<'a, DB>> {
    let stroke = color.rgb().stroke_width(width);
    match style {
        LineStyle::Solid => {
            chart.draw_series(pieces.into_iter().map(|p| PathElement::new(p, stroke)))
        }
        LineStyle::Dashed => {
            let dash = 4 * width.max(2) as i32;
            chart.draw_series(
                pieces
                    .into_iter()
                    .map(|p| DashedPathElement::new(p, dash, dash * 2 / 3, stroke)),
            )
        }
    }
    .map_err(ReportError::render)
}

/// Attaches a legend entry, unless the label is empty.
fn add_legend<'a, DB: DrawingBackend + 'a>(
    anno: &mut SeriesAnno<'a, DB>,
    label: &str,
    glyph: Glyph,
) {
    if !label.is_empty() {
        anno.label(label).legend(move |at| glyph.at(at));
    }
}

/// Shades the band of a line series (drawn first so lines stay on top).
pub(crate) fn draw_band<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    frame: &Frame,
    s: &LineSeries,
    color: Rgb,
) -> Result<()> {
    let Some(band) = &s.band else { return Ok(()) };
    let rect = frame.rect();
    let columns =
        s.points
            .iter()
            .zip(band.lower.iter().zip(&band.upper))
            .map(|(&(x, _), (&lo, &hi))| {
                Some((
                    frame.x.forward(x)?,
                    frame.y.forward(lo)?,
                    frame.y.forward(hi)?,
                ))
            });
    let mut polygons = Vec::new();
    let mut error_bars = Vec::new();
    for run in runs(columns) {
        if run.len() == 1 {
            // A lone point: an error bar instead of an area.
            let (x, lo, hi) = run[0];
            error_bars.extend(clip_polyline(&[(x, lo), (x, hi)], &rect));
            continue;
        }
        let mut poly: Vec<Pt> = run.iter().map(|&(x, lo, _)| (x, lo)).collect();
        poly.extend(run.iter().rev().map(|&(x, _, hi)| (x, hi)));
        let poly = clip_polygon(&poly, &rect);
        if poly.len() >= 3 {
            polygons.push(poly);
        }
    }
    let fill = color.rgb().mix(0.22).filled();
    chart
        .draw_series(polygons.into_iter().map(|p| Polygon::new(p, fill)))
        .map_err(ReportError::render)?;
    let bar = color.rgb().mix(0.6).stroke_width(2);
    chart
        .draw_series(error_bars.into_iter().map(|p| PathElement::new(p, bar)))
        .map_err(ReportError::render)?;
    Ok(())
}

/// Draws a line series (pieces between undrawable points, then markers) with its legend entry.
pub(crate) fn draw_line<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    frame: &Frame,
    s: &LineSeries,
    color: Rgb,
) -> Result<()> {
    let rect = frame.rect();
    let mapped: Vec<Option<Pt>> = s.points.iter().map(|&p| frame.map(p)).collect();
    let mut pieces = Vec::new();
    for run in runs(mapped.iter().copied()) {
        pieces.extend(
            clip_polyline(&run, &rect)
                .into_iter()
                .filter(|p| p.len() >= 2),
        );
    }
    let anno = draw_paths(chart, pieces, color, s.width, s.style)?;
    let glyph = Glyph {
        color,
        line: Some((s.width, s.style)),
        marker: s.marker.map(|m| (m, s.marker_size)),
        band: s.band.is_some(),
    };
    add_legend(anno, &s.label, glyph);
    if let Some(marker) = s.marker {
        let markers = mapped
            .into_iter()
            .flatten()
            .filter(|&p| rect.contains(p))
            .map(|at| MarkerElement {
                at,
                marker,
                size: s.marker_size,
                color,
            });
        chart.draw_series(markers).map_err(ReportError::render)?;
    }
    Ok(())
}

/// Draws a scatter series with its legend entry.
pub(crate) fn draw_scatter<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    frame: &Frame,
    s: &ScatterSeries,
    color: Rgb,
) -> Result<()> {
    let rect = frame.rect();
    let markers = s
        .points
        .iter()
        .filter_map(|&p| frame.map(p))
        .filter(|&p| rect.contains(p))
        .map(|at| MarkerElement {
            at,
            marker: s.marker,
            size: s.size,
            color,
        });
    let anno = chart.draw_series(markers).map_err(ReportError::render)?;
    let glyph = Glyph {
        color,
        line: None,
        marker: Some((s.marker, s.size)),
        band: false,
    };
    add_legend(anno, &s.label, glyph);
    Ok(())
}

/// Draws a horizontal (`horizontal == true`) or vertical reference line across the frame.
pub(crate) fn draw_ref_line<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    frame: &Frame,
    r: &RefLine,
    horizontal: bool,
    color: Rgb,
) -> Result<()> {
    let rect = frame.rect();
    let t = if horizontal {
        frame.y.forward(r.value)
    } else {
        frame.x.forward(r.value)
    };
    let pieces = match t {
        Some(t) if horizontal && t >= rect.y0 && t <= rect.y1 => {
            vec![vec![(rect.x0, t), (rect.x1, t)]]
        }
        Some(t) if !horizontal && t >= rect.x0 && t <= rect.x1 => {
            vec![vec![(t, rect.y0), (t, rect.y1)]]
        }
        _ => vec![],
    };
    let anno = draw_paths(chart, pieces, color, r.width, r.style)?;
    let glyph = Glyph {
        color,
        line: Some((r.width, r.style)),
        marker: None,
        band: false,
    };
    add_legend(anno, &r.label, glyph);
    Ok(())
}

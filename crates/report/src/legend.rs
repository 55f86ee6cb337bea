//! The legend: where it goes and the small sample ("glyph") drawn per entry.

use plotters::chart::SeriesLabelPosition;
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::{ChartContext, Color, CoordTranslate, DrawingBackend};
use plotters::style::WHITE;
use plotters_backend::{BackendCoord, DrawingErrorKind};

use crate::color::{Rgb, GRID_MAJOR};
use crate::error::{ReportError, Result};
use crate::font;
use crate::marker::draw_marker;
use crate::series::{LineStyle, Marker};

/// Where the legend box is placed inside the plotting area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Legend {
    /// Top right corner (default).
    #[default]
    UpperRight,
    /// Top left corner.
    UpperLeft,
    /// Bottom right corner.
    LowerRight,
    /// Bottom left corner.
    LowerLeft,
    /// No legend.
    Hidden,
}

/// Width of the glyph in pixels; the legend reserves a bit more.
const GLYPH_W: i32 = 28;

/// What one legend entry shows: a line sample, a marker, a shaded band, or several.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Glyph {
    pub color: Rgb,
    pub line: Option<(u32, LineStyle)>,
    pub marker: Option<(Marker, u32)>,
    pub band: bool,
}

impl Glyph {
    /// The glyph as an element anchored at the left middle of its legend entry.
    pub fn at(self, at: BackendCoord) -> GlyphElement {
        GlyphElement { at, glyph: self }
    }
}

/// A [`Glyph`] placed in the legend (pixel coordinates).
pub(crate) struct GlyphElement {
    at: BackendCoord,
    glyph: Glyph,
}

impl<'a> PointCollection<'a, BackendCoord> for &'a GlyphElement {
    type Point = &'a BackendCoord;
    type IntoIter = std::iter::Once<&'a BackendCoord>;

    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<DB: DrawingBackend> Drawable<DB> for GlyphElement {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut pos: I,
        backend: &mut DB,
        _parent_dim: (u32, u32),
    ) -> std::result::Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = pos.next() else {
            return Ok(());
        };
        let g = self.glyph;
        let c = g.color.rgb();
        if g.band {
            backend.draw_rect(
                (x, y - 7),
                (x + GLYPH_W, y + 7),
                &c.mix(0.25).filled(),
                true,
            )?;
        }
        match g.line {
            Some((w, LineStyle::Solid)) => {
                backend.draw_path([(x, y), (x + GLYPH_W, y)], &c.stroke_width(w))?;
            }
            Some((w, LineStyle::Dashed)) => {
                for x0 in [x, x + 11, x + 22] {
                    backend.draw_path([(x0, y), (x0 + 6, y)], &c.stroke_width(w))?;
                }
            }
            None => {}
        }
        if let Some((m, size)) = g.marker {
            draw_marker(backend, (x + GLYPH_W / 2, y), m, size, g.color)?;
        }
        Ok(())
    }
}

/// Draws the legend box for all labelled series drawn so far on `chart`.
pub(crate) fn draw<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: Legend,
) -> Result<()> {
    let position = match position {
        Legend::Hidden => return Ok(()),
        Legend::UpperRight => SeriesLabelPosition::UpperRight,
        Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
        Legend::LowerRight => SeriesLabelPosition::LowerRight,
        Legend::LowerLeft => SeriesLabelPosition::LowerLeft,
    };
    chart
        .configure_series_labels()
        .position(position)
        .legend_area_size(GLYPH_W as u32 + 10)
        .margin(8)
        .label_font(font::text(font::LEGEND_SIZE))
        .background_style(WHITE.mix(0.85))
        .border_style(GRID_MAJOR.rgb())
        .draw()
        .map_err(ReportError::render)
}

//! Marker shapes as plotters elements, drawn with backend primitives.
//!
//! A marker is centred on one point (data coordinates in a chart, pixel
//! coordinates in a legend) and has a size in pixels. Implementing the element
//! ourselves keeps one concrete type for all shapes, which plotters' series
//! and legend APIs need.

use plotters::element::{Drawable, PointCollection};
use plotters::prelude::{Color, DrawingBackend};
use plotters_backend::{BackendCoord, DrawingErrorKind};

use crate::color::Rgb;
use crate::series::Marker;

/// A marker at one point.
#[derive(Debug, Clone)]
pub(crate) struct MarkerElement<C> {
    pub at: C,
    pub marker: Marker,
    /// Radius in pixels.
    pub size: u32,
    pub color: Rgb,
}

impl<'a, C: 'a> PointCollection<'a, C> for &'a MarkerElement<C> {
    type Point = &'a C;
    type IntoIter = std::iter::Once<&'a C>;

    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<C, DB: DrawingBackend> Drawable<DB> for MarkerElement<C> {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut pos: I,
        backend: &mut DB,
        _parent_dim: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        match pos.next() {
            Some(p) => draw_marker(backend, p, self.marker, self.size, self.color),
            None => Ok(()),
        }
    }
}

/// Draws one marker centred at pixel `(x, y)`.
pub(crate) fn draw_marker<DB: DrawingBackend>(
    backend: &mut DB,
    (x, y): BackendCoord,
    marker: Marker,
    size: u32,
    color: Rgb,
) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
    let fill = color.rgb().filled();
    let s = size as i32;
    match marker {
        Marker::Circle => backend.draw_circle((x, y), size, &fill, true),
        Marker::Square => backend.draw_rect((x - s, y - s), (x + s, y + s), &fill, true),
        Marker::Triangle => {
            // Equilateral, circumradius a bit larger than `size` so it looks as big as a circle.
            let r = size as f64 * 1.3;
            let (dx, dy) = ((r * 0.866).round() as i32, (r * 0.5).round() as i32);
            let top = (x, y - r.round() as i32);
            backend.fill_polygon([top, (x - dx, y + dy), (x + dx, y + dy)], &fill)
        }
        Marker::Cross => {
            let stroke = color.rgb().stroke_width(2);
            backend.draw_path([(x - s, y - s), (x + s, y + s)], &stroke)?;
            backend.draw_path([(x - s, y + s), (x + s, y - s)], &stroke)
        }
    }
}

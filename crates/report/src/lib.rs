//! # w2sg-report: figures and the HTML report
//!
//! A small plotting layer shared by the simulation and language-model labs of
//! w2sg, so every figure of the reproduction report looks the same. It is a
//! thin, documented layer over [`plotters`]:
//!
//! * [`Plot`]: x–y plots of [`LineSeries`] (optional markers, dashes, shaded
//!   bands such as mean ± sd over seeds), [`ScatterSeries`] and horizontal or
//!   vertical [`RefLine`]s, on linear or log [`Axis`]es with fixed or automatic
//!   ranges, and a [`Legend`].
//! * [`HeatMap`]: a grid of values coloured with viridis, with a colour bar and
//!   optional overlaid lines (e.g. a theoretical threshold).
//! * [`Figure`]: one or more panels in a grid, rendered to PNG and SVG
//!   ([`Figure::save`], [`Figure::to_svg_string`], [`Figure::to_png_bytes`]).
//! * [`Report`] / [`Section`]: one self-contained HTML file with headings,
//!   text, figures, configuration dumps and tables.
//!
//! Text is drawn with DejaVu Sans, bundled in the crate, so rendering never
//! depends on system fonts. Bad input (NaN, ±inf, non-positive values on a log
//! axis) is skipped when drawing; inconsistent descriptions (mismatched
//! lengths, empty fixed ranges) and I/O failures are returned as
//! [`ReportError`]s. Nothing here panics on user data.
//!
//! ```
//! use w2sg_report::{Axis, Figure, LineSeries, Marker, Plot, RefLine};
//! let n = [1e2, 1e3, 1e4];
//! let plot = Plot::new("Strong student trained on weak labels")
//!     .x_axis(Axis::new("samples n").log())
//!     .y_axis(Axis::new("test risk"))
//!     .line(LineSeries::from_xy("student", &n, &[0.40, 0.28, 0.21])
//!         .marker(Marker::Circle)
//!         .band_sd(&[0.04, 0.03, 0.02]))
//!     .hline(RefLine::new("weak supervisor", 0.30));
//! let svg = Figure::from(plot).to_svg_string()?;
//! assert!(svg.starts_with("<svg"));
//! # Ok::<(), w2sg_report::ReportError>(())
//! ```

mod axis;
mod chart;
mod clip;
mod color;
mod error;
mod figure;
mod font;
mod heatmap;
mod html;
mod legend;
mod marker;
mod plot;
mod raster_text;
mod series;

pub use axis::{Axis, Scale};
pub use color::{palette, viridis, Rgb, MISSING, PALETTE};
pub use error::{ReportError, Result};
pub use figure::{Figure, Panel, SavedFigure};
pub use heatmap::HeatMap;
pub use html::{base64, escape, Report, Section};
pub use legend::Legend;
pub use plot::Plot;
pub use series::{LineSeries, LineStyle, Marker, RefLine, ScatterSeries};

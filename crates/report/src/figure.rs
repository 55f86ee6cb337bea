//! A figure: one or more panels in a grid, rendered to PNG or SVG.
//!
//! Rendering is separate from description so the same figure can be saved as
//! files (`save` writes `name.png` and `name.svg`) and inlined into the HTML
//! report (`to_svg_string`, `to_png_bytes`). Both formats are drawn by
//! plotters from the same description with the bundled font, so they agree.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::{BitMapBackend, DrawingArea, DrawingBackend, IntoDrawingArea, SVGBackend};
use plotters::style::WHITE;

use crate::error::{ReportError, Result};
use crate::font;
use crate::heatmap::HeatMap;
use crate::plot::Plot;
use crate::raster_text::SharpText;

/// One panel of a figure.
#[derive(Debug, Clone, PartialEq)]
pub enum Panel {
    /// An x–y plot.
    Plot(Plot),
    /// A heat map with its colour bar.
    HeatMap(HeatMap),
    /// An empty cell of the grid.
    Empty,
}

impl From<Plot> for Panel {
    fn from(p: Plot) -> Panel {
        Panel::Plot(p)
    }
}

impl From<HeatMap> for Panel {
    fn from(h: HeatMap) -> Panel {
        Panel::HeatMap(h)
    }
}

/// Default pixel size of one panel.
const PANEL_W: u32 = 800;
const PANEL_H: u32 = 560;

/// A figure of `rows × cols` panels, filled row by row.
///
/// ```no_run
/// use w2sg_report::{Figure, Plot};
/// let fig = Figure::grid(1, 2, vec![Plot::new("a").into(), Plot::new("b").into()])
///     .title("Two panels");
/// fig.save("out/figures", "two_panels")?; // writes two_panels.png and two_panels.svg
/// # Ok::<(), w2sg_report::ReportError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    title: String,
    panels: Vec<Panel>,
    rows: usize,
    cols: usize,
    size: (u32, u32),
}

/// The files written by [`Figure::save`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedFigure {
    /// Path of the PNG file.
    pub png: PathBuf,
    /// Path of the SVG file.
    pub svg: PathBuf,
}

impl From<Plot> for Figure {
    fn from(plot: Plot) -> Figure {
        Figure::new(plot)
    }
}

impl From<HeatMap> for Figure {
    fn from(map: HeatMap) -> Figure {
        Figure::new(map)
    }
}

impl Figure {
    /// A single-panel figure.
    pub fn new(panel: impl Into<Panel>) -> Figure {
        Figure::grid(1, 1, vec![panel.into()])
    }

    /// `rows × cols` panels, filled row by row (use [`Panel::Empty`] to skip a cell).
    /// The default size is 800 × 560 pixels per panel, scaled down for grids.
    pub fn grid(rows: usize, cols: usize, panels: Vec<Panel>) -> Figure {
        let (r, c) = (rows.max(1) as u32, cols.max(1) as u32);
        let scale = if r * c == 1 { 1.0 } else { 0.8 };
        let size = (
            (PANEL_W as f64 * scale) as u32 * c,
            (PANEL_H as f64 * scale) as u32 * r,
        );
        Figure {
            title: String::new(),
            panels,
            rows,
            cols,
            size,
        }
    }

    /// A title above all panels (each panel keeps its own title).
    pub fn title(mut self, title: impl Into<String>) -> Figure {
        self.title = title.into();
        self
    }

    /// The image size in pixels (width, height).
    pub fn size(mut self, width: u32, height: u32) -> Figure {
        self.size = (width, height);
        self
    }

    /// The image size in pixels (width, height).
    pub fn dimensions(&self) -> (u32, u32) {
        self.size
    }

    fn check(&self) -> Result<()> {
        let (w, h) = self.size;
        if !(100..=20_000).contains(&w) || !(100..=20_000).contains(&h) {
            return Err(ReportError::invalid(format!(
                "figure size {w}×{h} is outside 100..=20000 pixels"
            )));
        }
        if self.rows == 0 || self.cols == 0 {
            return Err(ReportError::invalid(
                "a figure needs at least one row and column",
            ));
        }
        if self.panels.len() > self.rows * self.cols {
            return Err(ReportError::invalid(format!(
                "{} panels do not fit a {}×{} grid",
                self.panels.len(),
                self.rows,
                self.cols
            )));
        }
        Ok(())
    }

    /// Draws every panel on a backend's root area.
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()> {
        font::ensure_registered()?;
        root.fill(&WHITE).map_err(ReportError::render)?;
        let body = if self.title.is_empty() {
            root.clone()
        } else {
            root.titled(&self.title, font::text(font::TITLE_SIZE + 4.0))
                .map_err(ReportError::render)?
        };
        let cells = body.split_evenly((self.rows, self.cols));
        for (panel, cell) in self.panels.iter().zip(&cells) {
            match panel {
                Panel::Plot(p) => p.draw_on(cell)?,
                Panel::HeatMap(h) => h.draw_on(cell)?,
                Panel::Empty => {}
            }
        }
        root.present().map_err(ReportError::render)
    }

    /// Renders the figure as an SVG document.
    pub fn to_svg_string(&self) -> Result<String> {
        self.check()?;
        let mut svg = String::new();
        self.draw(SVGBackend::with_string(&mut svg, self.size).into_drawing_area())?;
        Ok(svg)
    }

    /// Renders the figure as PNG file contents.
    pub fn to_png_bytes(&self) -> Result<Vec<u8>> {
        self.check()?;
        let (w, h) = self.size;
        let mut rgb = vec![0u8; w as usize * h as usize * 3];
        let backend = SharpText(BitMapBackend::with_buffer(&mut rgb, self.size));
        self.draw(backend.into_drawing_area())?;
        let image = image::RgbImage::from_raw(w, h, rgb)
            .ok_or_else(|| ReportError::render("pixel buffer has the wrong size"))?;
        let mut png = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut png, image::ImageOutputFormat::Png)
            .map_err(ReportError::render)?;
        Ok(png.into_inner())
    }

    /// Writes `dir/name.png` and `dir/name.svg`. The folder must exist; nothing
    /// is written unless both renderings succeed.
    pub fn save(&self, dir: impl AsRef<Path>, name: &str) -> Result<SavedFigure> {
        let dir = dir.as_ref();
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(ReportError::invalid(format!(
                "figure name '{name}' must be a plain file name without extension"
            )));
        }
        if !dir.is_dir() {
            return Err(ReportError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            ));
        }
        let (png, svg) = (self.to_png_bytes()?, self.to_svg_string()?);
        let saved = SavedFigure {
            png: dir.join(format!("{name}.png")),
            svg: dir.join(format!("{name}.svg")),
        };
        std::fs::write(&saved.png, png).map_err(|e| ReportError::io(&saved.png, e))?;
        std::fs::write(&saved.svg, svg).map_err(|e| ReportError::io(&saved.svg, e))?;
        Ok(saved)
    }
}

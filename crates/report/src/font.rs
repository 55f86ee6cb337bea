//! The bundled font and the text styles built on it.
//!
//! Plots must render identically on a laptop, in CI and on a headless cluster
//! node, none of which can be assumed to have system fonts. We therefore ship
//! DejaVu Sans (`assets/DejaVuSans.ttf`, Bitstream Vera licence in
//! `assets/DejaVuSans-LICENSE.txt`) inside the binary and register it with
//! plotters' `ab_glyph` text renderer, which measures all text. PNG text is
//! rasterised from it (by `crate::raster_text`); SVG text
//! names the family `DejaVu Sans, sans-serif` so viewers use it when installed
//! and an ordinary sans-serif face otherwise (layout was measured with DejaVu
//! metrics, which most sans-serif faces approximate).

use std::sync::OnceLock;

use plotters::style::{register_font, FontFamily, FontStyle, IntoFont, RGBColor, TextStyle};

use crate::error::{ReportError, Result};

/// The family name every text element of this crate uses.
pub(crate) const FAMILY: &str = "DejaVu Sans, sans-serif";

/// DejaVu Sans Book, version shipped by Debian's `fonts-dejavu-core`.
pub(crate) static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Text sizes in pixels (plotters' size unit), in one place so that panels look alike.
pub(crate) const TITLE_SIZE: f64 = 22.0;
pub(crate) const AXIS_LABEL_SIZE: f64 = 17.0;
pub(crate) const TICK_SIZE: f64 = 14.0;
pub(crate) const LEGEND_SIZE: f64 = 14.0;

/// Registers the bundled font once per process; cheap to call before every render.
pub(crate) fn ensure_registered() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // Also under "sans-serif": plotters falls back to that family for any
            // text we do not style explicitly.
            for name in [FAMILY, "sans-serif"] {
                register_font(name, FontStyle::Normal, DEJAVU_SANS)
                    .map_err(|_| "DejaVuSans.ttf is not a valid TrueType font".to_string())?;
            }
            Ok(())
        })
        .clone()
        .map_err(ReportError::Font)
}

/// A text style in the bundled font, black.
pub(crate) fn text(size: f64) -> TextStyle<'static> {
    text_colored(size, RGBColor(0, 0, 0))
}

/// A text style in the bundled font and the given colour.
pub(crate) fn text_colored(size: f64, color: RGBColor) -> TextStyle<'static> {
    (FontFamily::Name(FAMILY), size).into_font().color(&color)
}

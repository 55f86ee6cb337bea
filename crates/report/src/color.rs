//! Colours: the series palette, the heat-map colour map and a few fixed greys.
//!
//! Series colours cycle through the Okabe–Ito palette (Okabe & Ito 2008), which
//! stays distinguishable under the common forms of colour blindness and in
//! greyscale print. Its yellow is moved to the end because it is hard to see
//! on white. Heat maps use a viridis approximation (perceptually uniform,
//! colour-blind friendly, monotone in lightness) interpolated from eleven
//! anchor colours of matplotlib's viridis.

use plotters::style::RGBColor;

/// An sRGB colour, independent of the plotting backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// Parses `#RRGGBB` or `RRGGBB`; returns `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Rgb> {
        let h = hex.strip_prefix('#').unwrap_or(hex);
        if h.len() != 6 || !h.is_ascii() {
            return None;
        }
        let byte = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).ok();
        Some(Rgb(byte(0)?, byte(2)?, byte(4)?))
    }

    /// `#RRGGBB`, upper case (the form plotters writes into SVG).
    pub fn to_hex(self) -> String {
        format!("#{:02X}{:02X}{:02X}", self.0, self.1, self.2)
    }

    pub(crate) fn rgb(self) -> RGBColor {
        RGBColor(self.0, self.1, self.2)
    }
}

/// The Okabe–Ito colours, in the order series receive them.
pub const PALETTE: [Rgb; 8] = [
    Rgb(0x00, 0x72, 0xB2), // blue
    Rgb(0xD5, 0x5E, 0x00), // vermillion
    Rgb(0x00, 0x9E, 0x73), // bluish green
    Rgb(0xE6, 0x9F, 0x00), // orange
    Rgb(0xCC, 0x79, 0xA7), // reddish purple
    Rgb(0x56, 0xB4, 0xE9), // sky blue
    Rgb(0x00, 0x00, 0x00), // black
    Rgb(0xF0, 0xE4, 0x42), // yellow
];

/// The `i`-th palette colour, wrapping around after eight series.
pub fn palette(i: usize) -> Rgb {
    PALETTE[i % PALETTE.len()]
}

/// Default colours of lines drawn over a heat map: visible on both ends of viridis.
pub(crate) const OVERLAY_PALETTE: [Rgb; 4] = [
    Rgb(0xD5, 0x5E, 0x00), // vermillion
    Rgb(0xFF, 0xFF, 0xFF), // white
    Rgb(0x00, 0x00, 0x00), // black
    Rgb(0xCC, 0x79, 0xA7), // reddish purple
];

/// Colour of heat-map cells without a value (NaN, or non-positive on a log colour scale).
pub const MISSING: Rgb = Rgb(0xBD, 0xBD, 0xBD);

/// Grid and frame greys.
pub(crate) const GRID_MAJOR: Rgb = Rgb(0xD0, 0xD0, 0xD0);
pub(crate) const GRID_MINOR: Rgb = Rgb(0xEE, 0xEE, 0xEE);
pub(crate) const FRAME: Rgb = Rgb(0x33, 0x33, 0x33);

/// Viridis at 0, 0.1, ..., 1.
const VIRIDIS: [Rgb; 11] = [
    Rgb(68, 1, 84),
    Rgb(72, 36, 117),
    Rgb(65, 68, 135),
    Rgb(53, 95, 141),
    Rgb(42, 120, 142),
    Rgb(33, 145, 140),
    Rgb(34, 168, 132),
    Rgb(68, 191, 112),
    Rgb(122, 209, 81),
    Rgb(189, 223, 38),
    Rgb(253, 231, 37),
];

/// Viridis colour for `t` in `[0, 1]` (clamped); NaN gives [`MISSING`].
pub fn viridis(t: f64) -> Rgb {
    if t.is_nan() {
        return MISSING;
    }
    let t = t.clamp(0.0, 1.0) * (VIRIDIS.len() - 1) as f64;
    let i = (t.floor() as usize).min(VIRIDIS.len() - 2);
    let f = t - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * f).round() as u8;
    Rgb(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        assert_eq!(Rgb::from_hex("#0072B2"), Some(PALETTE[0]));
        assert_eq!(PALETTE[1].to_hex(), "#D55E00");
        assert_eq!(Rgb::from_hex("12345"), None);
        assert_eq!(Rgb::from_hex("zz0000"), None);
    }

    #[test]
    fn viridis_ends_and_nan() {
        assert_eq!(viridis(0.0), VIRIDIS[0]);
        assert_eq!(viridis(1.0), VIRIDIS[10]);
        assert_eq!(viridis(7.0), VIRIDIS[10]);
        assert_eq!(viridis(f64::NAN), MISSING);
        assert_eq!(palette(8), palette(0));
    }
}

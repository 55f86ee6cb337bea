//! Axes: linear or logarithmic scale, fixed or automatic range, and ticks.
//!
//! All drawing happens in *transformed* coordinates: the identity for a linear
//! axis and `log10` for a log axis. A value that has no transformed coordinate
//! (NaN, ±inf, or `<= 0` on a log axis) is simply not drawn. Ticks are chosen
//! here rather than by plotters so that log axes get proper decade ticks
//! (`10⁻³, 10⁻², ...` with light grid lines at 2..9 × each decade) and linear
//! axes get "nice" steps (1, 2 or 5 × 10ᵏ) with consistent decimals.

use crate::error::{ReportError, Result};

/// How an axis maps values to positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Evenly spaced values.
    #[default]
    Linear,
    /// Evenly spaced decades (base 10); non-positive values are not drawn.
    Log,
}

impl Scale {
    /// The transformed coordinate of `v`, or `None` if it cannot be drawn.
    pub(crate) fn forward(self, v: f64) -> Option<f64> {
        match self {
            Scale::Linear if v.is_finite() => Some(v),
            Scale::Log if v.is_finite() && v > 0.0 => Some(v.log10()),
            _ => None,
        }
    }

    /// The value at transformed coordinate `t`.
    pub(crate) fn inverse(self, t: f64) -> f64 {
        match self {
            Scale::Linear => t,
            Scale::Log => 10f64.powf(t),
        }
    }
}

/// One axis of a plot or heat map (or the value axis of a colour bar).
///
/// ```
/// use w2sg_report::Axis;
/// let n = Axis::new("number of samples n").log();
/// let risk = Axis::new("risk").min(0.0);
/// # let _ = (n, risk);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Axis {
    label: String,
    scale: Scale,
    min: Option<f64>,
    max: Option<f64>,
}

impl Axis {
    /// A linear axis with the given label and an automatic range.
    pub fn new(label: impl Into<String>) -> Axis {
        Axis {
            label: label.into(),
            ..Axis::default()
        }
    }

    /// Switches to a logarithmic (base 10) scale.
    pub fn log(self) -> Axis {
        self.scale(Scale::Log)
    }

    /// Sets the scale.
    pub fn scale(mut self, scale: Scale) -> Axis {
        self.scale = scale;
        self
    }

    /// Fixes both ends of the range; data outside it is clipped.
    pub fn range(self, min: f64, max: f64) -> Axis {
        self.min(min).max(max)
    }

    /// Fixes the lower end only (the upper end stays automatic).
    pub fn min(mut self, min: f64) -> Axis {
        self.min = Some(min);
        self
    }

    /// Fixes the upper end only (the lower end stays automatic).
    pub fn max(mut self, max: f64) -> Axis {
        self.max = Some(max);
        self
    }

    /// The axis label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The axis scale.
    pub fn get_scale(&self) -> Scale {
        self.scale
    }

    /// Chooses the drawn range and the ticks.
    ///
    /// `name` ("x", "y", "colour") is used in error messages. `data` are the raw
    /// values the range must cover; `pad` adds 5% on each side (plots) or
    /// not (heat maps, whose cells should touch the frame).
    pub(crate) fn resolve(
        &self,
        name: &str,
        data: impl IntoIterator<Item = f64>,
        pad: bool,
    ) -> Result<ResolvedAxis> {
        let scale = self.scale;
        let fixed = |end: Option<f64>, which: &str| -> Result<Option<f64>> {
            match end {
                None => Ok(None),
                Some(v) => scale.forward(v).map(Some).ok_or_else(|| {
                    ReportError::invalid(match scale {
                        Scale::Log => format!(
                            "{name} axis {which} {v} must be finite and positive on a log axis"
                        ),
                        Scale::Linear => format!("{name} axis {which} {v} must be finite"),
                    })
                }),
            }
        };
        let (fmin, fmax) = (fixed(self.min, "minimum")?, fixed(self.max, "maximum")?);

        // Automatic range in transformed coordinates.
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for t in data.into_iter().filter_map(|v| scale.forward(v)) {
            lo = lo.min(t);
            hi = hi.max(t);
        }
        let (auto_lo, auto_hi) = if lo > hi {
            // No drawable data: a unit range (0..1, or 1..10 on a log axis).
            (0.0, 1.0)
        } else if lo == hi {
            let half = match scale {
                Scale::Log => 0.5,
                Scale::Linear if lo == 0.0 => 1.0,
                Scale::Linear => 0.1 * lo.abs(),
            };
            (lo - half, hi + half)
        } else {
            let margin = if pad { 0.05 * (hi - lo) } else { 0.0 };
            (lo - margin, hi + margin)
        };

        let span = auto_hi - auto_lo;
        let (lo, hi) = match (fmin, fmax) {
            (Some(a), Some(b)) if a >= b => {
                return Err(ReportError::invalid(format!(
                    "{name} axis range [{}, {}] is empty",
                    self.min.unwrap_or(f64::NAN),
                    self.max.unwrap_or(f64::NAN)
                )))
            }
            (Some(a), Some(b)) => (a, b),
            (Some(a), None) => (a, if auto_hi > a { auto_hi } else { a + span }),
            (None, Some(b)) => (if auto_lo < b { auto_lo } else { b - span }, b),
            (None, None) => (auto_lo, auto_hi),
        };

        let (major, minor) = match scale {
            Scale::Linear => linear_ticks(lo, hi),
            Scale::Log => log_ticks(lo, hi),
        };
        Ok(ResolvedAxis {
            label: self.label.clone(),
            scale,
            lo,
            hi,
            major,
            minor,
        })
    }
}

/// An axis ready to draw: range and ticks in transformed coordinates.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedAxis {
    pub label: String,
    pub scale: Scale,
    pub lo: f64,
    pub hi: f64,
    /// Labelled ticks: position and text.
    pub major: Vec<(f64, String)>,
    /// Unlabelled light grid lines.
    pub minor: Vec<f64>,
}

impl ResolvedAxis {
    /// The label of the major tick nearest to `t` (plotters asks by position).
    pub fn label_at(&self, t: f64) -> String {
        self.major
            .iter()
            .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()))
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }

    /// Transformed coordinate of a raw value.
    pub fn forward(&self, v: f64) -> Option<f64> {
        self.scale.forward(v)
    }
}

const EPS: f64 = 1e-9;

/// Nice linear ticks: steps of 1, 2 or 5 × 10ᵏ, about six labels.
fn linear_ticks(lo: f64, hi: f64) -> (Vec<(f64, String)>, Vec<f64>) {
    let raw = (hi - lo) / 6.0;
    let mut e = raw.log10().floor() as i32;
    let mut m = [1i64, 2, 5, 10]
        .into_iter()
        .find(|&m| m as f64 * 10f64.powi(e) >= raw * (1.0 - EPS))
        .unwrap_or(10);
    if m == 10 {
        m = 1;
        e += 1;
    }
    let step = m as f64 * 10f64.powi(e);
    let max_abs = lo.abs().max(hi.abs());
    let scientific = !(1e-3..1e5).contains(&max_abs);

    let (k0, k1) = ((lo / step - EPS).ceil(), (hi / step + EPS).floor());
    let mut major = Vec::new();
    if k1 - k0 <= 1000.0 {
        for k in (k0 as i64)..=(k1 as i64) {
            major.push((k as f64 * step, format_scaled(k * m, e, scientific)));
        }
    }

    let sub = if m == 2 { 4 } else { 5 };
    let minor_step = step / sub as f64;
    let (j0, j1) = ((lo / minor_step).ceil(), (hi / minor_step).floor());
    let mut minor = Vec::new();
    if j1 - j0 <= 5000.0 {
        for j in (j0 as i64)..=(j1 as i64) {
            if j % sub != 0 {
                minor.push(j as f64 * minor_step);
            }
        }
    }
    (major, minor)
}

/// Decade ticks for a log axis whose transformed range is `lo..hi`.
fn log_ticks(lo: f64, hi: f64) -> (Vec<(f64, String)>, Vec<f64>) {
    let d0 = (lo - EPS).ceil() as i32;
    let d1 = (hi + EPS).floor() as i32;
    let inside = |t: f64| t >= lo - EPS && t <= hi + EPS;
    let mantissas = |m_range: std::ops::RangeInclusive<i64>| {
        let mut v = Vec::new();
        for d in (lo.floor() as i32)..=(hi.floor() as i32) {
            for m in m_range.clone() {
                let t = d as f64 + (m as f64).log10();
                if inside(t) {
                    v.push((t, m, d));
                }
            }
        }
        v
    };

    if d1 - d0 + 1 >= 2 {
        // At least two decades visible: label decades (every `stride`-th if many).
        let stride = (((d1 - d0 + 1) as f64) / 8.0).ceil().max(1.0) as i32;
        let major = (d0..=d1)
            .filter(|d| d.rem_euclid(stride) == 0)
            .map(|d| (d as f64, power_of_ten(d)))
            .collect();
        let minor = if stride == 1 {
            mantissas(2..=9).into_iter().map(|(t, _, _)| t).collect()
        } else {
            (d0..=d1)
                .filter(|d| d.rem_euclid(stride) != 0)
                .map(|d| d as f64)
                .collect()
        };
        return (major, minor);
    }

    // Less than two decades: label 1, 2, 5 × 10ᵏ, or every mantissa if that is too few.
    let all = mantissas(1..=9);
    let mut labelled: Vec<_> = all
        .iter()
        .filter(|(_, m, _)| matches!(m, 1 | 2 | 5))
        .copied()
        .collect();
    if labelled.len() < 3 {
        labelled = all.clone();
    }
    if labelled.len() < 2 {
        // A very narrow range: linear ticks on the raw values.
        let (major, minor) = linear_ticks(10f64.powf(lo), 10f64.powf(hi));
        let to_log = |v: f64| (v > 0.0).then(|| v.log10());
        return (
            major
                .into_iter()
                .filter_map(|(v, s)| to_log(v).map(|t| (t, s)))
                .collect(),
            minor.into_iter().filter_map(to_log).collect(),
        );
    }
    let minor = all
        .iter()
        .filter(|x| !labelled.contains(x))
        .map(|(t, _, _)| *t)
        .collect();
    let major = labelled
        .into_iter()
        .map(|(t, m, d)| {
            let text = if (-3..=4).contains(&d) {
                format_scaled(m, d, false)
            } else {
                format!("{m}×{}", power_of_ten(d))
            };
            (t, text)
        })
        .collect();
    (major, minor)
}

/// `10` followed by the exponent in superscript digits, e.g. `10⁻³`.
fn power_of_ten(d: i32) -> String {
    let sup: String = d
        .to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            _ => '⁹',
        })
        .collect();
    format!("10{sup}")
}

/// Formats `n × 10^e` exactly: plain decimals, or `1.5e-4` style when `scientific`.
fn format_scaled(n: i64, e: i32, scientific: bool) -> String {
    if n == 0 && (scientific || e >= 0) {
        return "0".to_string();
    }
    if scientific {
        let v = n as f64 * 10f64.powi(e);
        let exp_v = (v.abs().log10() + EPS).floor() as i32;
        let prec = (exp_v - e).clamp(0, 15) as usize;
        return format!("{v:.prec$e}");
    }
    let sign = if n < 0 { "-" } else { "" };
    let digits = n.unsigned_abs().to_string();
    if e >= 0 {
        return format!("{sign}{digits}{}", "0".repeat(e as usize));
    }
    let decimals = (-e) as usize;
    let padded = format!("{digits:0>width$}", width = decimals + 1);
    let (int, frac) = padded.split_at(padded.len() - decimals);
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(ax: &ResolvedAxis) -> Vec<&str> {
        ax.major.iter().map(|(_, s)| s.as_str()).collect()
    }

    #[test]
    fn linear_ticks_are_nice() {
        let ax = Axis::new("x")
            .range(0.0, 1.0)
            .resolve("x", [], true)
            .unwrap();
        assert_eq!(labels(&ax), ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let ax = Axis::new("x")
            .range(-30.0, 30.0)
            .resolve("x", [], true)
            .unwrap();
        assert_eq!(labels(&ax), ["-30", "-20", "-10", "0", "10", "20", "30"]);
        let ax = Axis::new("x")
            .range(0.0, 4e5)
            .resolve("x", [], true)
            .unwrap();
        assert_eq!(labels(&ax), ["0", "1e5", "2e5", "3e5", "4e5"]);
        let ax = Axis::new("x")
            .range(-0.1, 0.1)
            .resolve("x", [], true)
            .unwrap();
        assert_eq!(labels(&ax)[..3], ["-0.10", "-0.05", "0.00"]);
        let ax = Axis::new("x")
            .range(1e-4, 2e-4)
            .resolve("x", [], true)
            .unwrap();
        assert_eq!(labels(&ax)[..2], ["1.0e-4", "1.2e-4"]);
    }

    #[test]
    fn log_ticks_are_decades() {
        let ax = Axis::new("x")
            .log()
            .resolve("x", [1e-3, 1e3], true)
            .unwrap();
        assert_eq!(
            labels(&ax),
            ["10⁻³", "10⁻²", "10⁻¹", "10⁰", "10¹", "10²", "10³"]
        );
        assert!(ax.minor.len() >= 6 * 8);
        let ax = Axis::new("x")
            .log()
            .resolve("x", [1e-30, 1e30], true)
            .unwrap();
        assert!(ax.major.len() <= 9, "{:?}", labels(&ax));
        let ax = Axis::new("x")
            .log()
            .range(2.0, 30.0)
            .resolve("x", [], true)
            .unwrap();
        assert_eq!(labels(&ax), ["2", "5", "10", "20"]);
        let ax = Axis::new("x")
            .log()
            .range(100.0, 110.0)
            .resolve("x", [], true)
            .unwrap();
        assert!(ax.major.len() >= 2, "{:?}", labels(&ax));
    }

    #[test]
    fn auto_range_handles_degenerate_data() {
        let ax = Axis::new("y")
            .resolve("y", [3.0, 3.0, f64::NAN], true)
            .unwrap();
        assert!(ax.lo < 3.0 && ax.hi > 3.0);
        let ax = Axis::new("y").resolve("y", [0.0], true).unwrap();
        assert!(ax.lo < 0.0 && ax.hi > 0.0);
        let ax = Axis::new("y").resolve("y", [f64::INFINITY], true).unwrap();
        assert_eq!((ax.lo, ax.hi), (0.0, 1.0));
        let ax = Axis::new("y")
            .log()
            .resolve("y", [-1.0, 0.0], true)
            .unwrap();
        assert_eq!((ax.lo, ax.hi), (0.0, 1.0));
        let ax = Axis::new("y")
            .min(0.0)
            .resolve("y", [-5.0, -4.0], true)
            .unwrap();
        assert!(ax.lo == 0.0 && ax.hi > 0.0);
    }

    #[test]
    fn bad_fixed_ranges_are_errors() {
        assert!(Axis::new("x")
            .range(1.0, 1.0)
            .resolve("x", [], true)
            .is_err());
        let err = Axis::new("x")
            .log()
            .min(0.0)
            .resolve("x", [], true)
            .unwrap_err();
        assert!(err.to_string().contains("log"), "{err}");
        assert!(Axis::new("x").max(f64::NAN).resolve("x", [], true).is_err());
    }

    #[test]
    fn decimal_formatting() {
        assert_eq!(format_scaled(5, -3, false), "0.005");
        assert_eq!(format_scaled(-15, -1, false), "-1.5");
        assert_eq!(format_scaled(2, 3, false), "2000");
        assert_eq!(format_scaled(12, -5, true), "1.2e-4");
    }
}

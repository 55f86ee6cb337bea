//! Writes one figure of each kind, plus an HTML report inlining them, into a
//! folder: `cargo run -p w2sg-report --example gallery -- out/gallery`.
//!
//! The data are synthetic stand-ins shaped like the labs' results.

use std::error::Error;
use std::path::PathBuf;

use w2sg_report::{
    Axis, Figure, HeatMap, Legend, LineSeries, Marker, Panel, Plot, RefLine, Report, ScatterSeries,
    Section,
};

/// A tiny deterministic noise source, so the gallery needs no RNG crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }
}

/// Risk against sample size: mean ± sd over seeds, per-seed points, references.
fn risk_curves() -> Plot {
    let ns: Vec<f64> = (0..9).map(|k| 10f64.powf(1.0 + 0.5 * k as f64)).collect();
    let mut rng = Lcg(7);
    let strong: Vec<f64> = ns.iter().map(|n| 0.12 + 0.9 / n.sqrt()).collect();
    let w2s: Vec<f64> = ns.iter().map(|n| 0.20 + 0.7 / n.sqrt()).collect();
    let sd: Vec<f64> = ns.iter().map(|n| 0.25 / n.powf(0.3)).collect();
    let seeds: Vec<(f64, f64)> = ns
        .iter()
        .zip(&w2s)
        .flat_map(|(&n, &m)| {
            let noise: Vec<f64> = (0..5).map(|_| rng.next()).collect();
            noise
                .into_iter()
                .map(move |e| (n, m + 0.15 * e / n.powf(0.25)))
        })
        .collect();
    Plot::new("Risk against sample size")
        .x_axis(Axis::new("training samples n").log())
        .y_axis(Axis::new("test risk").min(0.0))
        .line(
            LineSeries::from_xy("strong ceiling", &ns, &strong)
                .marker(Marker::Square)
                .band_sd(&sd),
        )
        .line(
            LineSeries::from_xy("weak-to-strong (mean ± sd)", &ns, &w2s)
                .marker(Marker::Circle)
                .band_sd(&sd),
        )
        .scatter(ScatterSeries::new("w2s, single seeds", seeds).size(2))
        .line(
            LineSeries::from_xy(
                "theory",
                &ns,
                &ns.iter().map(|n| 0.19 + 0.8 / n.sqrt()).collect::<Vec<_>>(),
            )
            .dashed(),
        )
        .hline(RefLine::new("weak supervisor", 0.31))
        .vline(RefLine::new("threshold n*", 300.0))
}

/// Values spanning 1e-3..1e3 on log–log axes, with a NaN gap and a dashed line.
fn power_laws() -> Plot {
    let xs: Vec<f64> = (0..=60)
        .map(|k| 10f64.powf(-3.0 + 0.1 * k as f64))
        .collect();
    let mut gapped: Vec<f64> = xs.iter().map(|x| 0.5 * x.powf(0.5)).collect();
    for v in &mut gapped[25..30] {
        *v = f64::NAN;
    }
    Plot::new("Power laws (log–log, NaN gap in the middle)")
        .x_axis(Axis::new("x").log())
        .y_axis(Axis::new("f(x)").log())
        .line(LineSeries::from_xy("x", &xs, &xs))
        .line(LineSeries::from_xy("0.5·√x with NaNs", &xs, &gapped).marker(Marker::Triangle))
        .line(
            LineSeries::from_xy("1/x", &xs, &xs.iter().map(|x| 1.0 / x).collect::<Vec<_>>())
                .dashed(),
        )
        .legend(Legend::LowerRight)
}

/// Gain over (n, noise) with missing cells and an overlaid threshold curve.
fn gain_map() -> HeatMap {
    let ns: Vec<f64> = (0..25)
        .map(|k| 10f64.powf(1.0 + 0.125 * k as f64))
        .collect();
    let noise: Vec<f64> = (0..20).map(|k| 0.02 * k as f64 + 0.01).collect();
    let threshold = |n: f64| 0.05 + 0.1 * n.log10();
    let map = HeatMap::from_fn("Weak-to-strong gain", &ns, &noise, |n, eta| {
        if (0.2..0.26).contains(&eta) && n > 3e2 && n < 2e3 {
            f64::NAN // runs that failed
        } else {
            (threshold(n) - eta) * n.log10()
        }
    });
    let curve: Vec<(f64, f64)> = ns.iter().map(|&n| (n, threshold(n))).collect();
    map.x_axis(Axis::new("training samples n").log())
        .y_axis(Axis::new("label noise η"))
        .color_axis(Axis::new("gain (risk reduction)"))
        .line(LineSeries::new("threshold η*(n)", curve).width(3))
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "gallery".into()));
    std::fs::create_dir_all(&dir)?;

    let lines = Figure::from(risk_curves());
    let logs = Figure::from(power_laws());
    let heat = Figure::from(gain_map());
    let panels = Figure::grid(
        2,
        2,
        vec![
            Panel::from(risk_curves().legend(Legend::Hidden)),
            Panel::from(gain_map()),
            Panel::from(power_laws().legend(Legend::Hidden)),
            Panel::from(Plot::new("Empty series").line(LineSeries::new("nothing yet", []))),
        ],
    )
    .title("Four panels");

    for (fig, name) in [
        (&lines, "lines"),
        (&logs, "log_log"),
        (&heat, "heatmap"),
        (&panels, "panels"),
    ] {
        let saved = fig.save(&dir, name)?;
        println!("wrote {} and {}", saved.png.display(), saved.svg.display());
    }

    let report = Report::new("w2sg gallery")
        .section(
            Section::new("Risk curves")
                .paragraph("Mean ± sd over 5 seeds; <script>alert(1)</script> stays text.")
                .figure(&lines, "Inline SVG")?
                .figure_png(&heat, "Embedded PNG")?,
        )
        .section(
            Section::new("Configuration")
                .pre("[run]\nseed = 7\nn = [10, 100, 1000]\n")
                .table(
                    ["n", "risk", "sd"],
                    vec![
                        vec!["100".into(), "0.27".into(), "0.03".into()],
                        vec!["1000".into(), "0.22".into(), "0.02".into()],
                    ],
                ),
        );
    let html = dir.join("report.html");
    report.save(&html)?;
    println!("wrote {}", html.display());
    Ok(())
}

//! Figure 7 — finite-size scaling of the pre-training transition: PGR at the w2s peak against n_pre/d for
//! d from 10³ up (to 10⁶ in the full run), beside the d → ∞ theory. Only the reduced engine (O(1) per
//! SGD step, exact in distribution) makes the largest d affordable.

use serde_json::json;
use w2sg_report::{palette, Axis, Figure, Legend, LineSeries, Marker, Panel, Plot, RefLine};
use w2sg_sim::config::Plan;
use w2sg_sim::prediction::predict;
use w2sg_sim::theory::bbp_overlap;

use super::{int_list, Size};
use crate::runner::{cell, mean_sd, Sweep, Table};
use crate::{FigureOutput, Options, ReproError};

const BETA: f64 = 1.0;
const RATIOS: [f64; 9] = [0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0];

fn config(d: usize, seeds: usize, n_pres: &[f64]) -> String {
    format!(
        "# Figure 7 (d = {d}): finite-size scaling of the pre-training transition\n\
         d = {d}\nlink = \"he2\"\ninit = \"spectral\"\nseeds = {seeds}\n\n[pretrain]\nn_pre = {}\nbeta = {BETA}\nn_sign = 0\n\n[weak]\nrho = 0.8\n\n\
         [sgd]\nlr = 0.02\ntau_max = 200.0\n\n[metrics]\npoints = 30\n",
        int_list(n_pres)
    )
}

pub fn figure(opts: &Options) -> Result<FigureOutput, ReproError> {
    let size = Size::of(opts);
    let ds: Vec<usize> = size.pick(
        vec![1_000, 10_000, 100_000],
        vec![1_000, 10_000, 100_000, 1_000_000],
    );
    let seeds = size.pick(3, 6);
    let mut overlap = Plot::new("spectral overlap at init")
        .x_axis(Axis::new("n_pre / d").log())
        .y_axis(Axis::new("|m0|").range(0.0, 1.0));
    let mut plot = Plot::new("PGR at the w2s peak")
        .x_axis(Axis::new("n_pre / d").log())
        .y_axis(Axis::new("PGR"));
    let mut table = Table::new(&[
        "d",
        "n_pre_over_d",
        "pgr_peak_mean",
        "pgr_peak_sd",
        "m0_mean",
        "theory_pgr_peak",
    ]);
    let mut configs = Vec::new();
    let mut widths = Vec::new();
    let mut by_d = Vec::new();
    for (di, &d) in ds.iter().enumerate() {
        let n_pres: Vec<f64> = RATIOS.iter().map(|r| r * d as f64).collect();
        let text = config(d, seeds, &n_pres);
        let sweep = Sweep::run(&format!("fig7 d={d}"), &text, opts, false)?;
        configs.push((format!("fig7_d{d}"), text));
        let (mut means, mut sds, mut m0s) = (vec![], vec![], vec![]);
        for (g, &ratio) in RATIOS.iter().enumerate() {
            let runs = sweep.runs_of(g);
            let (mean, sd) = mean_sd(
                runs.iter()
                    .map(|r| r.summary.outcome.pgr_peak.unwrap_or(f64::NAN)),
            );
            let (m0, _) = mean_sd(runs.iter().map(|r| r.summary.outcome.m0.abs()));
            table.push(vec![
                d.to_string(),
                cell(ratio),
                cell(mean),
                cell(sd),
                cell(m0),
                String::new(),
            ]);
            means.push(mean);
            sds.push(sd);
            m0s.push(m0);
        }
        overlap = overlap.line(
            LineSeries::from_xy(format!("d = {d}"), &RATIOS, &m0s)
                .color(palette(di))
                .marker(Marker::Circle),
        );
        // Finite-size rounding: the overlap just below the threshold (n_pre = 0.85 d), 0 in the limit.
        widths.push(m0s[2]);
        plot = plot.line(
            LineSeries::from_xy(format!("d = {d}"), &RATIOS, &means)
                .color(palette(di))
                .marker(Marker::Circle)
                .band_sd(&sds),
        );
        by_d.push(json!({"d": d, "pgr_peak": means, "pgr_peak_sd": sds, "m0": m0s}));
    }
    // d → ∞: the ODE started at the BBP overlap (the 1/d correction of the start vanishes).
    let limit: Vec<f64> = RATIOS
        .iter()
        .map(|r| {
            let d = 1_000_000_000usize;
            let text = config(d, 1, &[r * d as f64]);
            let plan = Plan::parse(&text, "fig7 theory").expect("valid built-in config");
            predict(&plan.grid[0].config)
                .summary
                .outcome
                .pgr_peak
                .unwrap_or(f64::NAN)
        })
        .collect();
    for (i, r) in RATIOS.iter().enumerate() {
        table.push(vec![
            "inf".into(),
            cell(*r),
            String::new(),
            String::new(),
            String::new(),
            cell(limit[i]),
        ]);
    }
    let dense: Vec<f64> = (0..200)
        .map(|i| 0.5 * 10f64.powf(i as f64 / 199.0))
        .collect();
    let bbp: Vec<f64> = dense
        .iter()
        .map(|r| bbp_overlap(BETA, 1.0 / r, 1.0))
        .collect();
    overlap = overlap
        .line(
            LineSeries::from_xy("BBP limit (d → ∞)", &dense, &bbp)
                .color(palette(7))
                .dashed()
                .width(3),
        )
        .vline(RefLine::new("BBP threshold", 1.0 / (BETA * BETA)))
        .legend(Legend::UpperLeft);
    plot = plot
        .line(
            LineSeries::from_xy("d → ∞ (BBP + ODE)", &RATIOS, &limit)
                .color(palette(7))
                .dashed()
                .width(3),
        )
        .vline(RefLine::new("BBP threshold", 1.0 / (BETA * BETA)))
        .hline(RefLine::new("PGR = 0", 0.0))
        .legend(Legend::UpperLeft);
    let findings = vec![format!(
        "Just below the threshold (n_pre = 0.85 d) the spectral overlap is {} for d = {}: the finite-size rounding of the \
         transition shrinks as d grows (BBP: 0 there; PGR at the peak {:.3} in the limit). Above it (n_pre = 5 d) PGR at the \
         peak is ≈ {:.3} at the largest d (theory {:.3}).",
        widths.iter().map(|w| format!("{w:.3}")).collect::<Vec<_>>().join(", "),
        ds.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
        limit[2],
        by_d.last().and_then(|b| b["pgr_peak"][RATIOS.len() - 1].as_f64()).unwrap_or(f64::NAN),
        limit[RATIOS.len() - 1],
    )];
    let headline = json!({"d": ds, "n_pre_over_d": RATIOS, "m0_below_threshold": widths, "theory": limit, "by_d": by_d});
    Ok(FigureOutput {
        id: "fig7_finite_size",
        title: "Figure 7: finite-size scaling of the transition".into(),
        claim: "The pre-training transition is sharp in the d → ∞ limit; at finite d it is rounded, and the rounding shrinks as d grows.".into(),
        findings,
        figure: Figure::grid(1, 2, vec![Panel::from(overlap), Panel::from(plot)]).title("Figure 7: finite-size scaling of the pre-training transition").size(1700, 650),
        table,
        configs,
        headline,
        seconds: 0.0,
    })
}

//! Figure 3 — saturation by the weak supervisor's bias: from a fixed pre-trained start, the w2s student
//! ends at overlap ρ (the weak direction's) and at the weak supervisor's risk, whatever ρ is; its best
//! risk along the way is below the weak one, and PGR at the peak shrinks as ρ → 1.

use serde_json::json;
use w2sg_report::{palette, Axis, Figure, Legend, LineSeries, Marker, Panel, Plot};

use super::{toml_list, Size};
use crate::runner::{cell, mean_sd, Sweep, Table};
use crate::{FigureOutput, Options, ReproError};

pub fn figure(opts: &Options) -> Result<FigureOutput, ReproError> {
    let size = Size::of(opts);
    let d = size.pick(2000, 10_000);
    let rhos = [0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.95];
    let text = format!(
        "# Figure 3: saturation at the weak supervisor's bias rho, from a fixed pre-trained start\n\
         d = {d}\nlink = \"he2\"\ninit = \"spectral\"\nseeds = {}\n\n[pretrain]\nn_pre = {}\nbeta = 1.5\n\n[weak]\nrho = {}\n\n\
         [sgd]\nlr = 0.01\ntau_max = 200.0\n\n[metrics]\npoints = 30\n",
        size.pick(4, 8),
        2 * d,
        toml_list(&rhos)
    );
    let sweep = Sweep::run("fig3 saturation", &text, opts, true)?;
    let mut table = Table::new(&[
        "rho",
        "m0_mean",
        "m_peak_mean",
        "m_final_mean",
        "m_final_sd",
        "risk_w2s_final",
        "risk_w2s_best",
        "risk_weak",
        "risk_ceiling_final",
        "pgr_peak",
        "pgr_final",
        "ode_m_final",
        "ode_risk_w2s_final",
        "ode_risk_w2s_best",
        "ode_pgr_peak",
    ]);
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); 13];
    let mut max_dev_rho = 0.0f64;
    for (g, &rho) in rhos.iter().enumerate() {
        let runs = sweep.runs_of(g);
        let o = |f: fn(&w2sg_sim::engine::Outcome) -> f64| {
            mean_sd(runs.iter().map(|r| f(&r.summary.outcome)))
        };
        let m0 = o(|s| s.m0.abs()).0;
        let m_peak = o(|s| s.m_peak).0;
        let (m_final, m_final_sd) = o(|s| s.m_final);
        let r_final = o(|s| s.risk_w2s_final).0;
        let r_best = o(|s| s.risk_w2s_min).0;
        let r_weak = o(|s| s.risk_weak).0;
        let r_ceil = o(|s| s.risk_ceiling_final).0;
        let pgr_peak = o(|s| s.pgr_peak.unwrap_or(f64::NAN)).0;
        let pgr_final = o(|s| s.pgr_final.unwrap_or(f64::NAN)).0;
        let th = &sweep.theory[g].summary.outcome;
        max_dev_rho = max_dev_rho.max((m_final - rho).abs());
        let row = [
            rho,
            m0,
            m_peak,
            m_final,
            m_final_sd,
            r_final,
            r_best,
            r_weak,
            r_ceil,
            pgr_peak,
            pgr_final,
            th.m_final,
            th.risk_w2s_final,
            th.risk_w2s_min,
            th.pgr_peak.unwrap_or(f64::NAN),
        ];
        table.push(row.iter().map(|v| cell(*v)).collect());
        for (c, v) in cols.iter_mut().zip([
            rho,
            m_final,
            m_final_sd,
            r_final,
            r_best,
            r_weak,
            r_ceil,
            pgr_peak,
            pgr_final,
            th.risk_w2s_final,
            th.risk_w2s_min,
            th.pgr_peak.unwrap_or(f64::NAN),
            m_peak,
        ]) {
            c.push(v);
        }
    }
    let [rho_x, m_final, m_final_sd, r_final, r_best, r_weak, r_ceil, pgr_peak, pgr_final, ode_final, ode_best, ode_pgr, m_peak] =
        cols.try_into().expect("13 columns");
    let risks = Plot::new("risk at the end and at the best point")
        .x_axis(Axis::new("weak bias ρ"))
        .y_axis(Axis::new("risk").min(0.0))
        .line(
            LineSeries::from_xy("weak supervisor", &rho_x, &r_weak)
                .color(palette(5))
                .marker(Marker::Square)
                .width(6),
        )
        .line(
            LineSeries::from_xy("w2s, final", &rho_x, &r_final)
                .color(palette(0))
                .marker(Marker::Circle),
        )
        .line(
            LineSeries::from_xy("w2s, final (ODE)", &rho_x, &ode_final)
                .color(palette(0))
                .dashed(),
        )
        .line(
            LineSeries::from_xy("w2s, best along the way", &rho_x, &r_best)
                .color(palette(1))
                .marker(Marker::Triangle),
        )
        .line(
            LineSeries::from_xy("w2s, best (ODE)", &rho_x, &ode_best)
                .color(palette(1))
                .dashed(),
        )
        .line(
            LineSeries::from_xy("ceiling, final", &rho_x, &r_ceil)
                .color(palette(2))
                .marker(Marker::Cross),
        )
        .legend(Legend::UpperRight);
    let identity: Vec<f64> = rho_x.clone();
    let overlaps = Plot::new("overlap with θ*")
        .x_axis(Axis::new("weak bias ρ"))
        .y_axis(Axis::new("m").range(0.0, 1.05))
        .line(
            LineSeries::from_xy("m = ρ", &rho_x, &identity)
                .color(palette(7))
                .dashed(),
        )
        .line(
            LineSeries::from_xy("w2s m_final (mean ± sd)", &rho_x, &m_final)
                .color(palette(0))
                .marker(Marker::Circle)
                .band_sd(&m_final_sd),
        )
        .line(
            LineSeries::from_xy("w2s m_peak", &rho_x, &m_peak)
                .color(palette(1))
                .marker(Marker::Triangle),
        )
        .legend(Legend::LowerRight);
    let pgr = Plot::new("performance gap recovered")
        .x_axis(Axis::new("weak bias ρ"))
        .y_axis(Axis::new("PGR"))
        .line(
            LineSeries::from_xy("PGR at the w2s peak", &rho_x, &pgr_peak)
                .color(palette(1))
                .marker(Marker::Triangle),
        )
        .line(
            LineSeries::from_xy("PGR at the peak (ODE)", &rho_x, &ode_pgr)
                .color(palette(1))
                .dashed(),
        )
        .line(
            LineSeries::from_xy("PGR at the end", &rho_x, &pgr_final)
                .color(palette(0))
                .marker(Marker::Circle),
        )
        .legend(Legend::UpperRight);
    let worst_gap = r_final
        .iter()
        .zip(&r_weak)
        .map(|(a, b)| (a - b).abs() / b.max(1e-12))
        .fold(0.0, f64::max);
    let findings = vec![
        format!(
            "d = {d}: for every ρ in {rhos:?} the w2s student ends at m within {max_dev_rho:.3} of ρ and at a risk within {:.1}% of \
             the weak supervisor's: saturation at the weak bias.",
            100.0 * worst_gap
        ),
        format!(
            "On the way it does better than its supervisor: PGR at the peak is {:.3} at ρ = {} and {:.3} at ρ = {} (ODE: {:.3}, {:.3}).",
            pgr_peak[0], rho_x[0], pgr_peak[pgr_peak.len() - 1], rho_x[rho_x.len() - 1], ode_pgr[0], ode_pgr[ode_pgr.len() - 1]
        ),
    ];
    let headline = json!({"rho": rho_x, "m_final": m_final, "max_abs_m_final_minus_rho": max_dev_rho, "max_rel_gap_final_vs_weak_risk": worst_gap, "pgr_peak": pgr_peak, "pgr_final": pgr_final, "ode_pgr_peak": ode_pgr});
    let figure = Figure::grid(
        1,
        3,
        vec![Panel::from(risks), Panel::from(overlaps), Panel::from(pgr)],
    )
    .title("Figure 3: saturation by the weak supervisor's bias")
    .size(1800, 560);
    Ok(FigureOutput {
        id: "fig3_saturation",
        title: "Figure 3: saturation by weak bias".into(),
        claim: "Fine-tuned from a pre-trained start, the strong student saturates at a level set by the weak supervisor's bias ρ.".into(),
        findings,
        figure,
        table,
        configs: vec![("fig3_saturation".into(), text)],
        headline,
        seconds: 0.0,
    })
}

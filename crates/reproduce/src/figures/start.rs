//! Figure 1 — random vs pre-trained start: a random start does not learn, a spectral (pre-trained)
//! start improves past its initial overlap and saturates at the weak supervisor's bias ρ.

use serde_json::json;
use w2sg_report::{palette, Axis, Figure, Legend, LineSeries, Panel, Plot, RefLine};

use super::Size;
use crate::runner::{cell, trajectory_band, Sweep, Table};
use crate::{FigureOutput, Options, ReproError};

const RHO: f64 = 0.8;

fn config(link: &str, d: usize, seeds: usize, lr: f64, tau_max: f64) -> String {
    format!(
        "# Figure 1 ({link}): spectral (pre-trained) vs random start, weak supervisor with bias rho\n\
         d = {d}\nlink = \"{link}\"\ninit = [\"spectral\", \"random\"]\nseeds = {seeds}\n\n\
         [pretrain]\nn_pre = {n_pre}\nbeta = 1.0\nn_sign = 4000\n\n[weak]\nrho = {RHO}\n\n\
         [sgd]\nlr = {lr}\ntau_max = {tau_max:?}\n\n[metrics]\npoints = 30\n",
        n_pre = 2 * d
    )
}

pub fn figure(opts: &Options) -> Result<FigureOutput, ReproError> {
    let size = Size::of(opts);
    let d = size.pick(2000, 20000);
    let seeds = size.pick(6, 16);
    let specs = [("he3", 0.001, 1000.0), ("he2", 0.01, 300.0)];
    let mut panels = Vec::new();
    let mut table = Table::new(&[
        "link",
        "init",
        "student",
        "tau",
        "m_mean",
        "m_sd",
        "risk_mean",
        "risk_sd",
        "ode_m",
        "ode_risk",
    ]);
    let mut findings = Vec::new();
    let mut headline = serde_json::Map::new();
    let mut configs = Vec::new();
    for (link, lr, tau_max) in specs {
        let text = config(link, d, seeds, lr, tau_max);
        let sweep = Sweep::run(&format!("fig1 {link}"), &text, opts, true)?;
        configs.push((format!("fig1_{link}"), text));
        let mut m_plot = Plot::new(format!("{link}: overlap with θ*"))
            .x_axis(Axis::new("τ = samples / d").log())
            .y_axis(Axis::new("m = ⟨w, θ*⟩").range(-0.1, 1.05));
        let mut r_plot = Plot::new(format!("{link}: risk"))
            .x_axis(Axis::new("τ = samples / d").log())
            .y_axis(Axis::new("risk").min(0.0));
        let mut color = 0;
        let mut link_json = serde_json::Map::new();
        for init in ["spectral", "random"] {
            let g = sweep.select(&[("init", init)])[0];
            let runs = sweep.runs_of(g);
            let theory = &sweep.theory[g];
            for (student, is_ceiling) in [("w2s", false), ("ceiling", true)] {
                let (taus, m, m_sd) =
                    trajectory_band(runs, |p| if is_ceiling { p.m_ceiling } else { p.m });
                let (_, risk, risk_sd) = trajectory_band(runs, |p| {
                    if is_ceiling {
                        p.risk_ceiling
                    } else {
                        p.risk_w2s
                    }
                });
                let ode_m: Vec<f64> = theory
                    .trajectory
                    .iter()
                    .map(|p| if is_ceiling { p.m_ceiling } else { p.m })
                    .collect();
                let ode_r: Vec<f64> = theory
                    .trajectory
                    .iter()
                    .map(|p| {
                        if is_ceiling {
                            p.risk_ceiling
                        } else {
                            p.risk_w2s
                        }
                    })
                    .collect();
                for i in 0..taus.len() {
                    table.push(vec![
                        link.into(),
                        init.into(),
                        student.into(),
                        cell(taus[i]),
                        cell(m[i]),
                        cell(m_sd[i]),
                        cell(risk[i]),
                        cell(risk_sd[i]),
                        cell(ode_m[i]),
                        cell(ode_r[i]),
                    ]);
                }
                let c = palette(color);
                color += 1;
                let label = format!("{student}, {init} start");
                m_plot = m_plot
                    .line(
                        LineSeries::from_xy(format!("{label} (mean ± sd)"), &taus, &m)
                            .color(c)
                            .band_sd(&m_sd),
                    )
                    .line(
                        LineSeries::from_xy(format!("{label}, ODE"), &taus, &ode_m)
                            .color(c)
                            .dashed(),
                    );
                r_plot = r_plot
                    .line(
                        LineSeries::from_xy(format!("{label} (mean ± sd)"), &taus, &risk)
                            .color(c)
                            .band_sd(&risk_sd),
                    )
                    .line(
                        LineSeries::from_xy(format!("{label}, ODE"), &taus, &ode_r)
                            .color(c)
                            .dashed(),
                    );
                let max_dev = m
                    .iter()
                    .zip(&ode_m)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                let n = m.len() - 1;
                let peak = m.iter().copied().fold(f64::MIN, f64::max);
                link_json.insert(
                    format!("{init}_{student}"),
                    json!({"m0": m[0], "m_peak": peak, "m_final": m[n], "risk_final": risk[n], "ode_m_final": ode_m[n], "ode_m_peak": ode_m.iter().copied().fold(f64::MIN, f64::max), "max_abs_dev_from_ode": max_dev}),
                );
            }
        }
        let risk_weak = sweep.runs[0].summary.outcome.risk_weak;
        m_plot = m_plot
            .hline(RefLine::new(format!("weak bias ρ = {RHO}"), RHO))
            .legend(Legend::Hidden);
        r_plot = r_plot
            .hline(RefLine::new(
                format!("weak supervisor risk {risk_weak:.2}"),
                risk_weak,
            ))
            .legend(if link == "he3" {
                Legend::LowerLeft
            } else {
                Legend::Hidden
            });
        panels.push(Panel::from(m_plot));
        panels.push(Panel::from(r_plot));
        let s = &link_json["spectral_w2s"];
        let r = &link_json["random_w2s"];
        findings.push(format!(
            "{link}, d = {d}, {seeds} seeds: from the spectral start w2s goes from m0 = {:.3} to a peak of {:.3} and ends at {:.3} \
             (ρ = {RHO}; ODE: peak {:.3}, final {:.3}; largest |sim − ODE| on the mean path {:.3}). From a random start it ends at \
             m = {:.3} with risk {:.2} (weak supervisor: {risk_weak:.2}).",
            s["m0"].as_f64().unwrap_or(f64::NAN), s["m_peak"].as_f64().unwrap_or(f64::NAN), s["m_final"].as_f64().unwrap_or(f64::NAN),
            s["ode_m_peak"].as_f64().unwrap_or(f64::NAN), s["ode_m_final"].as_f64().unwrap_or(f64::NAN), s["max_abs_dev_from_ode"].as_f64().unwrap_or(f64::NAN),
            r["m_final"].as_f64().unwrap_or(f64::NAN), r["risk_final"].as_f64().unwrap_or(f64::NAN),
        ));
        link_json.insert("risk_weak".into(), json!(risk_weak));
        headline.insert(link.to_string(), serde_json::Value::Object(link_json));
    }
    let figure = Figure::grid(2, 2, panels)
        .title("Figure 1: random vs pre-trained (spectral) start")
        .size(1400, 1000);
    Ok(FigureOutput {
        id: "fig1_start",
        title: "Figure 1: random vs pre-trained start".into(),
        claim: "From a random start the strong student does not learn; from a pre-trained (spectral) start it improves, then saturates at a level set by the weak supervisor's bias.".into(),
        findings,
        figure,
        table,
        configs,
        headline: serde_json::Value::Object(headline),
        seconds: 0.0,
    })
}

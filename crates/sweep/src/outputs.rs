//! The sweep's files: tables (results.csv, seeds.csv, transitions.csv, results.json, and
//! results.parquet with the `parquet` feature), figures (accuracy and PGR against pre-training step per
//! family and task, PNG and SVG), and the sweep's section of the HTML report.
//!
//! Files are written to a temporary name and renamed, so a kill while writing leaves the previous
//! version, never half a table.
//!
//! The step axis is logarithmic, like Pythia's checkpoint schedule. Step 0 (the random
//! initialization) has no logarithm; it is drawn at x = 0.5 and said so in the axis label.

use std::path::{Path, PathBuf};

use w2sg_report::{palette, Axis, Figure, Legend, LineSeries, Marker, Plot, RefLine, Section};

use crate::analysis::{Analysis, StepRow, Transition};
use crate::error::{Error, Result};

/// Where step 0 is drawn on the log axis.
const STEP0_X: f64 = 0.5;

fn step_x(step: u64) -> f64 {
    if step == 0 {
        STEP0_X
    } else {
        step as f64
    }
}

/// Writes `bytes` to `path` atomically ([`w2sg_fsio::write_atomic`]: a temporary name unique to this
/// process, then a rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    w2sg_fsio::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

fn csv_bytes<T: serde::Serialize>(rows: &[T]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| Error::Input {
            what: "csv".into(),
            problem: e.to_string(),
        })?;
    }
    w.into_inner().map_err(|e| Error::Input {
        what: "csv".into(),
        problem: e.to_string(),
    })
}

/// A flat row of transitions.csv: the midpoint, width, plateaus and intervals of the W2S-gain fit
/// only where the data identify the midpoint; otherwise empty cells and the reason.
#[derive(serde::Serialize)]
struct TransitionCsv<'a> {
    family: &'a str,
    task: &'a str,
    mode: &'a str,
    loss: &'a str,
    sustained_step: Option<u64>,
    z: f64,
    midpoint_step: Option<f64>,
    midpoint_lo: Option<f64>,
    midpoint_hi: Option<f64>,
    width: Option<f64>,
    width_lo: Option<f64>,
    width_hi: Option<f64>,
    gain_lower: Option<f64>,
    gain_upper: Option<f64>,
    identified: bool,
    not_identified_reason: Option<String>,
}

fn transition_csv(t: &Transition) -> TransitionCsv<'_> {
    let s = t.identified_fit();
    TransitionCsv {
        family: &t.family,
        task: &t.task,
        mode: &t.mode,
        loss: &t.loss,
        sustained_step: t.sustained_step,
        z: t.z,
        midpoint_step: s.map(|s| s.midpoint_step),
        midpoint_lo: s.and_then(|s| s.midpoint_step_interval.map(|i| i.0)),
        midpoint_hi: s.and_then(|s| s.midpoint_step_interval.map(|i| i.1)),
        width: s.map(|s| s.width),
        width_lo: s.and_then(|s| s.width_interval.map(|i| i.0)),
        width_hi: s.and_then(|s| s.width_interval.map(|i| i.1)),
        gain_lower: s.map(|s| s.lower),
        gain_upper: s.map(|s| s.upper),
        identified: s.is_some(),
        not_identified_reason: t.not_identified(),
    }
}

/// The files written.
#[derive(Clone, Debug, Default)]
pub struct Written {
    pub tables: Vec<PathBuf>,
    pub figures: Vec<PathBuf>,
}

/// Writes the tables and figures of an analysis into `out`.
pub fn write_all(analysis: &Analysis, title: &str, out: &Path) -> Result<Written> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut written = Written::default();
    let mut table = |name: &str, bytes: Vec<u8>| -> Result<()> {
        let p = out.join(name);
        write_atomic(&p, &bytes)?;
        written.tables.push(p);
        Ok(())
    };
    table("results.csv", csv_bytes(&analysis.steps)?)?;
    table("seeds.csv", csv_bytes(&analysis.seeds)?)?;
    let trans: Vec<TransitionCsv> = analysis.transitions.iter().map(transition_csv).collect();
    table("transitions.csv", csv_bytes(&trans)?)?;
    let json = serde_json::to_vec_pretty(analysis).expect("analysis serializes");
    table("results.json", json)?;
    #[cfg(feature = "parquet")]
    {
        let p = out.join("results.parquet");
        let values: Vec<serde_json::Value> = analysis
            .steps
            .iter()
            .map(|r| serde_json::to_value(r).expect("a row serializes"))
            .collect();
        w2sg_protocol::export::write_parquet(&w2sg_protocol::export::table_from_json(&values), &p)?;
        written.tables.push(p);
    }
    let figdir = out.join("figures");
    std::fs::create_dir_all(&figdir).map_err(|e| Error::io(&figdir, e))?;
    for (family, task) in panels(analysis) {
        let fig = figure(analysis, &family, &task, title);
        let name = format!("sweep_{}_{}", slug(&family), slug(&task));
        let saved = fig.save(&figdir, &name)?;
        written.figures.push(saved.png);
        written.figures.push(saved.svg);
    }
    Ok(written)
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The distinct (family, task) pairs, in order of appearance.
fn panels(analysis: &Analysis) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for r in &analysis.steps {
        let k = (r.family.clone(), r.task.clone());
        if !v.contains(&k) {
            v.push(k);
        }
    }
    v
}

/// The label of a student series: the loss for probes, "mode loss" for fine-tuned students.
fn series(mode: &str, loss: &str) -> String {
    if mode == "probe" {
        loss.to_string()
    } else {
        format!("{mode} {loss}")
    }
}

fn rows_of<'a>(analysis: &'a Analysis, family: &str, task: &str, label: &str) -> Vec<&'a StepRow> {
    analysis
        .steps
        .iter()
        .filter(|r| {
            r.family == family
                && r.task == task
                && series(&r.mode, &r.loss) == label
                && r.step.is_some()
        })
        .collect()
}

/// The student series of a panel, probes first.
fn losses(analysis: &Analysis, family: &str, task: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in &analysis.steps {
        let l = series(&r.mode, &r.loss);
        if r.family == family && r.task == task && !v.contains(&l) {
            v.push(l);
        }
    }
    v
}

/// Accuracy (weak, ceiling, w2s per loss, the fitted gain curve) and PGR against step for one family
/// and task.
pub fn figure(analysis: &Analysis, family: &str, task: &str, title: &str) -> Figure {
    let x_axis = || Axis::new("pre-training step (log; step 0 at 0.5)").log();
    let mut acc = Plot::new(format!("Accuracy on the test set: {family}, {task}"))
        .x_axis(x_axis())
        .y_axis(Axis::new("test accuracy"))
        // Accuracy and PGR grow with the step: the upper left is where the curves are not.
        .legend(Legend::UpperLeft);
    let mut pgr_plot = Plot::new(format!(
        "PGR = (w2s − weak)/(ceiling − weak): {family}, {task}"
    ))
    .x_axis(x_axis())
    .y_axis(Axis::new("PGR (95% bootstrap interval)"))
    .hline(RefLine::new("PGR = 0", 0.0).color(palette(7)));
    let losses = losses(analysis, family, task);
    // The weak supervisor is one model: its accuracy is the same at every step (mean over the steps
    // in case seeds are missing at some).
    let weak_accs: Vec<f64> = analysis
        .steps
        .iter()
        .filter(|r| r.family == family && r.task == task && r.step.is_some())
        .filter_map(|r| r.acc_weak)
        .filter(|v| v.is_finite())
        .collect();
    let weak_level =
        (!weak_accs.is_empty()).then(|| weak_accs.iter().sum::<f64>() / weak_accs.len() as f64);
    let mut weak_done = false;
    let mut ceilings_done: Vec<String> = Vec::new();
    for (li, loss) in losses.iter().enumerate() {
        let rows: Vec<&StepRow> = rows_of(analysis, family, task, loss)
            .into_iter()
            .filter(|r| r.acc_w2s.is_some())
            .collect();
        if rows.is_empty() {
            continue;
        }
        let xs: Vec<f64> = rows.iter().map(|r| step_x(r.step.unwrap_or(0))).collect();
        let get = |f: fn(&StepRow) -> Option<f64>| -> Vec<f64> {
            rows.iter().map(|r| f(r).unwrap_or(f64::NAN)).collect()
        };
        if !weak_done {
            weak_done = true;
            let weak = get(|r| r.acc_weak);
            let w = weak.iter().copied().filter(|v| v.is_finite()).sum::<f64>()
                / weak.iter().filter(|v| v.is_finite()).count().max(1) as f64;
            let label = match rows[0].weak_mode.as_str() {
                "probe" => "weak supervisor".to_string(),
                m => format!("weak supervisor ({m})"),
            };
            acc = acc.hline(RefLine::new(label, w).color(palette(3)));
        }
        // One ceiling per training mode: the probe's, and the fine-tuned model's.
        let mode = rows[0].mode.clone();
        if !ceilings_done.contains(&mode) {
            let (label, marker) = if mode == "probe" {
                ("ceiling (ground truth)".to_string(), Marker::Square)
            } else {
                (format!("ceiling ({mode})"), Marker::Triangle)
            };
            acc = acc.line(
                LineSeries::from_xy(label, &xs, &get(|r| r.acc_ceiling))
                    .color(palette(if ceilings_done.is_empty() { 2 } else { 6 }))
                    .marker(marker)
                    .band_sd(&get(|r| r.acc_ceiling_se)),
            );
            ceilings_done.push(mode);
        }
        // Weak and ceiling take palette colours 3 and 2; the losses take the others.
        let color = palette([0, 1, 4, 5][li % 4]);
        acc = acc.line(
            LineSeries::from_xy(format!("w2s ({loss})"), &xs, &get(|r| r.acc_w2s))
                .color(color)
                .marker(Marker::Circle)
                .band_sd(&get(|r| r.acc_w2s_se)),
        );
        let pts: Vec<&StepRow> = rows.iter().copied().filter(|r| r.pgr.is_some()).collect();
        if !pts.is_empty() {
            let px: Vec<f64> = pts.iter().map(|r| step_x(r.step.unwrap_or(0))).collect();
            let py: Vec<f64> = pts.iter().map(|r| r.pgr.unwrap()).collect();
            let lo: Vec<f64> = pts.iter().map(|r| r.pgr_lo.unwrap_or(f64::NAN)).collect();
            let hi: Vec<f64> = pts.iter().map(|r| r.pgr_hi.unwrap_or(f64::NAN)).collect();
            pgr_plot = pgr_plot.line(
                LineSeries::from_xy(format!("PGR ({loss})"), &px, &py)
                    .color(color)
                    .marker(Marker::Circle)
                    .band(lo, hi),
            );
        }
        if let Some(t) = analysis
            .transitions
            .iter()
            .find(|t| t.family == family && t.task == task && &series(&t.mode, &t.loss) == loss)
        {
            if let Some(s) = t.sustained_step {
                let line = RefLine::new(format!("w2s > weak from step {s} ({loss})"), step_x(s))
                    .color(color)
                    .solid();
                acc = acc.vline(line.clone());
                pgr_plot = pgr_plot.vline(line);
            }
            // The fitted gain curve, drawn as weak + gain on the accuracy panel over the observed
            // steps, only when its midpoint is identified (otherwise the fit is not a finding).
            let observed: Vec<f64> = rows
                .iter()
                .filter_map(|r| r.step)
                .filter(|&s| s > 0)
                .map(|s| s as f64)
                .collect();
            if let (Some(fit), Some(w)) = (t.identified_fit(), weak_level) {
                let x0 = observed.iter().copied().fold(f64::INFINITY, f64::min);
                let x1 = observed.iter().copied().fold(0.0, f64::max);
                if x0.is_finite() && x1 > x0 {
                    let n = 60;
                    let curve: Vec<(f64, f64)> = (0..=n)
                        .map(|i| {
                            let x = x0 * (x1 / x0).powf(i as f64 / n as f64);
                            (x, w + w2sg_protocol::transition::sigmoid_at(fit, x))
                        })
                        .collect();
                    let (lo, hi) = fit.midpoint_step_interval.unwrap_or((f64::NAN, f64::NAN));
                    acc = acc.line(
                        LineSeries::new(
                            format!(
                                "weak + fitted gain, midpoint step {:.0} [{lo:.0}, {hi:.0}] ({loss})",
                                fit.midpoint_step
                            ),
                            curve,
                        )
                        .color(color)
                        .dashed(),
                    );
                }
            }
        }
    }
    // Where the gap is barely defined the interval spans tens of units and would flatten the rest:
    // the axis shows the point estimates (and at least [-0.25, 1]) within [-2, 2].
    let points: Vec<f64> = analysis
        .steps
        .iter()
        .filter(|r| r.family == family && r.task == task)
        .filter_map(|r| r.pgr)
        .collect();
    let lo = points.iter().copied().fold(-0.25, f64::min).max(-2.0);
    let hi = points.iter().copied().fold(1.0, f64::max).min(2.0);
    let pad = 0.05 * (hi - lo);
    pgr_plot = pgr_plot.y_axis(
        Axis::new("PGR (95% bootstrap interval; axis within [-2, 2])").range(lo - pad, hi + pad),
    );
    Figure::grid(1, 2, vec![acc.into(), pgr_plot.into()])
        .title(format!("{title}: weak-to-strong across pre-training"))
}

/// The sweep's section of an HTML report: per (family, task) the figure, then the transition table.
pub fn report_section(analysis: &Analysis, title: &str, notes: &[String]) -> Result<Section> {
    let mut s = Section::new(format!("Checkpoint sweep: {title}"));
    for n in notes {
        s = s.paragraph(n.clone());
    }
    for (family, task) in panels(analysis) {
        let fig = figure(analysis, &family, &task, title);
        s = s.figure_png(
            &fig,
            format!(
                "{family} on {task}. Left: test accuracy of the weak supervisor (dashed), the \
                 ceiling (trained on ground truth) and the w2s student (trained on the weak \
                 supervisor's labels), bands ± 1 SE over seeds. Right: PGR with its 95% bootstrap \
                 interval over test examples and seeds; vertical lines mark the first step from which \
                 w2s stays above weak by more than 2 SE. Dashed in a loss's colour on the left: the sigmoid fitted to the \
                 W2S gain (w2s − weak) against log step, drawn where its midpoint is identified."
            ),
        )?;
    }
    let fmt = |v: f64| format!("{v:.0}");
    let rows: Vec<Vec<String>> = analysis
        .transitions
        .iter()
        .map(|t| {
            // Only a midpoint the data identify is a number; otherwise the reason.
            let s = t.identified_fit();
            vec![
                t.family.clone(),
                t.task.clone(),
                series(&t.mode, &t.loss),
                t.sustained_step.map_or("never".into(), |s| s.to_string()),
                match s {
                    Some(s) => fmt(s.midpoint_step),
                    None => format!("not identified: {}", t.not_identified().unwrap_or_default()),
                },
                s.and_then(|s| s.midpoint_step_interval)
                    .map_or("–".into(), |(a, b)| format!("[{}, {}]", fmt(a), fmt(b))),
                s.map_or("–".into(), |s| format!("{:.2}", s.width)),
                s.map_or("–".into(), |s| {
                    format!("{:+.3} → {:+.3}", s.lower, s.upper)
                }),
            ]
        })
        .collect();
    s = s.table(
        [
            "family",
            "task",
            "student",
            "w2s > weak from step",
            "midpoint of the W2S gain (step)",
            "95% interval",
            "width (ln step)",
            "gain plateaus",
        ],
        rows,
    );
    let last: Vec<Vec<String>> = panels(analysis)
        .iter()
        .flat_map(|(f, t)| {
            losses(analysis, f, t).into_iter().filter_map(move |l| {
                rows_of(analysis, f, t, &l)
                    .into_iter()
                    .rev()
                    .find(|r| r.acc_w2s.is_some())
                    .cloned()
            })
        })
        .map(|r| {
            let p = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.3}", v));
            vec![
                r.family.clone(),
                r.task.clone(),
                series(&r.mode, &r.loss),
                r.revision.clone(),
                p(r.acc_weak),
                p(r.acc_w2s),
                p(r.acc_ceiling),
                match (r.pgr, r.pgr_lo, r.pgr_hi) {
                    (Some(v), Some(a), Some(b)) => format!("{v:.2} [{a:.2}, {b:.2}]"),
                    (Some(v), _, _) => format!("{v:.2}"),
                    _ => "undefined".into(),
                },
                r.n_test.to_string(),
            ]
        })
        .collect();
    s = s.table(
        [
            "family",
            "task",
            "student",
            "last checkpoint",
            "weak",
            "w2s",
            "ceiling",
            "PGR [95%]",
            "test examples (all seeds)",
        ],
        last,
    );
    Ok(s)
}

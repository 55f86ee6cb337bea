//! What the user sees of a long run on stderr: indicatif bars for the libraries' progress phases,
//! and their notes as lines. The libraries only report (crates/progress); drawing is decided here.
//!
//! Bars are hidden when stderr is not a terminal (indicatif's default: a job array's log gets the
//! notes, not a thousand redraws) and under `--quiet`; notes go wherever stderr goes, printed above
//! a bar in progress so that neither tears the other.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use w2sg_progress::{Progress, Reporter};

/// A bar of `len` units named `unit`; hidden unless `visible`. An empty `unit` shows a percentage
/// (for work counted in units nobody reads, such as simulation cost).
pub fn bar(visible: bool, len: u64, unit: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(len);
    let template = if unit.is_empty() {
        "  {msg:<28} {bar:30} {percent:>3}% ({elapsed}, eta {eta})".to_string()
    } else {
        format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} (eta {{eta}}) {{msg}}")
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The binary's reporter: a bar per phase (when `bars`), notes as lines (when `notes`).
pub struct Bars {
    bars: bool,
    notes: bool,
    current: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub fn reporter(bars: bool, notes: bool) -> Reporter {
        Reporter::new(Bars {
            bars,
            notes,
            current: Mutex::new(None),
        })
    }

    fn with(&self, f: impl FnOnce(&ProgressBar)) {
        if let Ok(current) = self.current.lock() {
            if let Some(bar) = current.as_ref() {
                f(bar)
            }
        }
    }
}

/// A phase a failed library call left open is cleared when the command drops its options, before it
/// prints the error, so the error line is not drawn over by a stale bar.
impl Drop for Bars {
    fn drop(&mut self) {
        if let Ok(current) = self.current.get_mut() {
            if let Some(bar) = current.take() {
                bar.finish_and_clear();
            }
        }
    }
}

impl Progress for Bars {
    fn phase(&self, len: u64, done: u64, unit: &str) {
        let b = bar(self.bars, len, unit);
        b.set_position(done);
        if let Ok(mut current) = self.current.lock() {
            if let Some(old) = current.replace(b) {
                old.finish_and_clear();
            }
        }
    }

    fn advance(&self, n: u64) {
        self.with(|b| b.inc(n));
    }

    fn position(&self, done: u64) {
        self.with(|b| b.set_position(done));
    }

    fn status(&self, text: &str) {
        self.with(|b| b.set_message(text.to_string()));
    }

    fn end_phase(&self) {
        if let Ok(mut current) = self.current.lock() {
            if let Some(old) = current.take() {
                old.finish_and_clear();
            }
        }
    }

    fn note(&self, line: &str) {
        if !self.notes {
            return;
        }
        let shown = self.current.lock().ok().and_then(|c| c.clone());
        match shown {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

//! Running engine work with the GIL released while staying interruptible.
//!
//! The work runs on a scoped thread; the calling (Python) thread waits for it and polls Python's signal
//! handlers every 50 ms, so Ctrl-C raises `KeyboardInterrupt` promptly. On a signal the work is told to
//! stop through [`Cancel`]: the engines' progress callbacks call [`Cancel::check`], which unwinds out of
//! the engine (with `resume_unwind`, which prints nothing). The engines write no files, so an
//! interrupted call leaves nothing behind.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// How often the waiting thread runs Python's signal handlers.
const POLL: Duration = Duration::from_millis(50);

/// Set when the caller was interrupted; the work polls it from its progress callbacks.
#[derive(Default)]
pub struct Cancel(AtomicBool);

/// The unwind payload of a cancelled run (distinguishes it from a real panic).
struct Cancelled;

impl Cancel {
    /// Unwinds out of the running engine if the caller was interrupted.
    pub fn check(&self) {
        if self.0.load(Ordering::Relaxed) {
            resume_unwind(Box::new(Cancelled));
        }
    }
}

/// Runs `work` without the GIL and returns its value; a pending Python signal (KeyboardInterrupt)
/// cancels it and is raised instead.
pub fn run<T: Send>(py: Python<'_>, work: impl FnOnce(&Cancel) -> T + Send) -> PyResult<T> {
    let cancel = Cancel::default();
    let mut interrupt: Option<PyErr> = None;
    let outcome = py.detach(|| {
        std::thread::scope(|s| {
            let (done, finished) = mpsc::channel::<()>();
            let cancel = &cancel;
            let handle = s.spawn(move || {
                let out = catch_unwind(AssertUnwindSafe(|| work(cancel)));
                let _ = done.send(());
                out
            });
            while let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(POLL) {
                if interrupt.is_none() {
                    if let Err(e) = Python::attach(|py| py.check_signals()) {
                        interrupt = Some(e);
                        cancel.0.store(true, Ordering::Relaxed);
                    }
                }
            }
            handle.join()
        })
    });
    if let Some(e) = interrupt {
        return Err(e);
    }
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(payload)) | Err(payload) => Err(PyRuntimeError::new_err(format!(
            "w2sg engine panicked: {}",
            panic_message(&payload)
        ))),
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if payload.is::<Cancelled>() {
        "cancelled".into()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

//! How a long library call tells its caller how far it got, without drawing anything.
//!
//! The libraries (lm, sweep, reproduce) compute; what a user sees is the front end's choice: the
//! `w2sg` binary draws bars and prints lines on stderr (and nothing but the lines under `--quiet`),
//! tests and library users see nothing unless they ask. So a library never draws a bar or prints:
//! it reports to a [`Reporter`] in its options, and the binary decides (as ripgrep's libraries
//! report to a sink).
//!
//! What is reported:
//! - a **phase**: `len` units of one kind of work (`"units"`, `"steps"`), some maybe done already
//!   (a resumed run starts its bar where it stopped); then [`Progress::advance`] or
//!   [`Progress::position`] as they finish, a one-line [`Progress::status`] of the item at hand, and
//!   [`Progress::end_phase`]. One phase at a time per reporter;
//! - a **note**: a line worth keeping in the user's log ("pre-training the weak family → DIR", a
//!   figure's finding). Notes are not progress: a front end that hides bars still shows them.
//!
//! Edge cases: rayon workers report too (hence `Send + Sync`), so a reporter synchronizes itself;
//! reports must never fail or panic (a broken terminal must not stop a run), which is why the
//! methods return nothing. Every method defaults to ignoring its report, so [`Silent`] is empty and
//! a reporter implements only what it shows.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Receives a library call's progress reports (see the crate docs).
pub trait Progress: Send + Sync {
    /// A phase of `len` units of `unit` begins, `done` of them already done.
    fn phase(&self, _len: u64, _done: u64, _unit: &str) {}
    /// `n` more units of the current phase are done.
    fn advance(&self, _n: u64) {}
    /// `done` units of the current phase are done in all.
    fn position(&self, _done: u64) {}
    /// What the current phase works on now, replacing the previous status.
    fn status(&self, _text: &str) {}
    /// The current phase is over.
    fn end_phase(&self) {}
    /// A line for the user's log.
    fn note(&self, _line: &str) {}
}

/// Shows nothing: the default of every library's options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}

/// A shared reporter, as options structs hold it (cheap to clone; `Default` is [`Silent`]).
#[derive(Clone)]
pub struct Reporter(Arc<dyn Progress>);

impl Reporter {
    pub fn new(progress: impl Progress + 'static) -> Self {
        Reporter(Arc::new(progress))
    }

    pub fn silent() -> Self {
        Reporter::new(Silent)
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter::silent()
    }
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reporter")
    }
}

impl Deref for Reporter {
    type Target = dyn Progress;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// A reporter that records every report, for tests of what a library reports.
#[derive(Debug, Default)]
pub struct Recorder {
    events: std::sync::Mutex<Vec<Event>>,
}

/// One report, as [`Recorder`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Phase { len: u64, done: u64, unit: String },
    Advance(u64),
    Position(u64),
    Status(String),
    EndPhase,
    Note(String),
}

impl Recorder {
    /// The reports so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn push(&self, e: Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(e);
        }
    }
}

impl Progress for Recorder {
    fn phase(&self, len: u64, done: u64, unit: &str) {
        self.push(Event::Phase {
            len,
            done,
            unit: unit.to_string(),
        });
    }
    fn advance(&self, n: u64) {
        self.push(Event::Advance(n));
    }
    fn position(&self, done: u64) {
        self.push(Event::Position(done));
    }
    fn status(&self, text: &str) {
        self.push(Event::Status(text.to_string()));
    }
    fn end_phase(&self) {
        self.push(Event::EndPhase);
    }
    fn note(&self, line: &str) {
        self.push(Event::Note(line.to_string()));
    }
}

/// A shared reporter reports through what it shares: a test keeps one `Arc` of a [`Recorder`] and
/// gives the library another.
impl<P: Progress + ?Sized> Progress for Arc<P> {
    fn phase(&self, len: u64, done: u64, unit: &str) {
        (**self).phase(len, done, unit)
    }
    fn advance(&self, n: u64) {
        (**self).advance(n)
    }
    fn position(&self, done: u64) {
        (**self).position(done)
    }
    fn status(&self, text: &str) {
        (**self).status(text)
    }
    fn end_phase(&self) {
        (**self).end_phase()
    }
    fn note(&self, line: &str) {
        (**self).note(line)
    }
}

//! Test-only fault injection: `W2SG_TEST_ABORT_AT=<point>:<N>` makes the process `abort()` (as
//! abrupt as a kill: no destructors, no flushing) the N-th time (1-based) it reaches a point:
//! - `sweep-features`: inside a feature extraction, after its first batch;
//! - `sweep-train`: a student trained, its result not yet handed to the store;
//! - `sweep-commit`: inside the store's write transaction, before `COMMIT`.
//!
//! Unset in normal use; never set it outside tests.
use std::sync::atomic::{AtomicU64, Ordering};

static FEATURES: AtomicU64 = AtomicU64::new(0);
static TRAIN: AtomicU64 = AtomicU64::new(0);
static COMMIT: AtomicU64 = AtomicU64::new(0);
static FINETUNE: AtomicU64 = AtomicU64::new(0);

/// Counts a visit to `point` and aborts if it is the configured one.
pub fn visit(point: &str) {
    if !armed() {
        return;
    }
    let counter = match point {
        "sweep-features" => &FEATURES,
        "sweep-train" => &TRAIN,
        "sweep-commit" => &COMMIT,
        "sweep-finetune-step" => &FINETUNE,
        _ => return,
    };
    let count = counter.fetch_add(1, Ordering::SeqCst) + 1;
    w2sg_fsio::test_abort_if(point, count);
}

/// Whether any fault is configured (so the store hook is installed only then).
pub fn armed() -> bool {
    std::env::var_os(w2sg_fsio::TEST_ABORT_ENV).is_some()
}

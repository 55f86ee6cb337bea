//! Process-wide settings for CPU compute: glibc's allocator tuned for tensors, and candle's own
//! element-wise thread pool turned off.
//!
//! A training step allocates and frees the same few hundred megabytes every step (candle's backward
//! pass gives every gradient a zeroed buffer and a sum, every op a fresh output). glibc serves each
//! block above its mmap threshold (dynamic, from 128 KiB) with a fresh mapping and gives it back on
//! free, and trims the heap top above 128 KiB, so every step faults the same pages in again, each
//! zeroed by the kernel: on Pythia-70m's shape that was 10⁵ page faults per LoRA step and a fifth of
//! its CPU time. Raising the mmap threshold to its maximum (32 MiB) and the trim threshold to
//! 256 MiB lets freed blocks be reused from the heap; peak memory is unchanged (measured: LoRA
//! with recomputation 373 → 375 MiB), since the steps reuse what the previous step freed.
//!
//! The binaries (the CLI, the Python module, the benchmarks) call [`tune_allocator`] once at start,
//! and the CLI and the training benchmarks [`serial_candle_elementwise`]; a library does not change
//! process-wide settings behind its caller's back. Elsewhere than glibc [`tune_allocator`] does
//! nothing.

/// Sets glibc's mmap and trim thresholds for tensor workloads (see the module docs). Idempotent.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Makes candle run its own element-wise ops on the calling thread, unless `CANDLE_NUM_THREADS` is
/// already set. Call at the start of a process, before any other thread exists and before the first
/// candle op (it sets an environment variable; later calls have no effect on candle).
///
/// Why: candle 0.11 runs element-wise ops on ≥ 64K elements on a pool of spin-waiting threads,
/// separate from rayon's. In a training step the only such ops left are the gradient store's sums
/// (every other op is one of [`crate::ops`]' kernels, which use rayon), and on a
/// machine with no idle core the main thread spins in that pool's barrier waiting for a descheduled
/// worker: with 2 threads on 2 shared cores that cost about 30 % of a pre-training step. The sums are
/// memory-bound, so running them serially loses little when cores are idle (measured on an idle
/// machine: a LoRA fine-tuning step 0.92–0.96 s serial against 0.97 s with the pool; feature
/// extraction the same either way).
pub fn serial_candle_elementwise() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

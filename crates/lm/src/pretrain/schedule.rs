//! Learning-rate schedule (linear warmup, cosine decay) and the checkpoint schedule.
//!
//! Pythia saves step 0, then 1, 2, 4, …, 512 (log-spaced), then every 1000 steps to 143000. The scaled
//! schedule here is the union of the log-spaced head (capped at the run's length), every multiple of
//! `every`, and the last step. With `every` = 1000 that is exactly Pythia's; with a smaller `every` a
//! short run gets evenly spaced checkpoints inside the log-spaced range too, so it still has an early,
//! dense history, enough checkpoints to locate a transition, and a final model.

/// Learning rate at update `step` (0-based: the rate used to go from `step` to `step + 1`).
///
/// Linear warmup from `peak / warmup` to `peak` over `warmup` updates, then cosine decay to
/// `peak · min_ratio` at `total`. A zero warmup starts at the peak.
pub fn learning_rate(step: u64, total: u64, warmup: u64, peak: f64, min_ratio: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    let min = peak * min_ratio;
    min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Checkpoint steps of a run of `total` updates: 0, 1, 2, 4, …, 512 (≤ total), the multiples of
/// `every` (0: none), and `total`. Sorted, without duplicates.
pub fn checkpoint_steps(total: u64, every: u64) -> Vec<u64> {
    let mut steps = vec![0u64];
    let mut s = 1u64;
    while s <= 512 && s <= total {
        steps.push(s);
        s *= 2;
    }
    if every > 0 {
        let mut k = every;
        while k <= total {
            steps.push(k);
            k += every;
        }
    }
    steps.push(total);
    steps.sort_unstable();
    steps.dedup();
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_pythia_like() {
        assert_eq!(
            checkpoint_steps(2500, 1000),
            vec![0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 2500]
        );
        assert_eq!(
            checkpoint_steps(130, 20),
            vec![0, 1, 2, 4, 8, 16, 20, 32, 40, 60, 64, 80, 100, 120, 128, 130]
        );
        assert_eq!(checkpoint_steps(5, 100), vec![0, 1, 2, 4, 5]);
        assert_eq!(checkpoint_steps(0, 100), vec![0]);
    }

    #[test]
    fn warmup_then_cosine() {
        let lr = |s| learning_rate(s, 100, 10, 1.0, 0.1);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(100) - 0.1).abs() < 1e-12);
        assert!(lr(50) < lr(20) && lr(50) > lr(90));
    }
}

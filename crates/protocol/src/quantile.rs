//! Quantiles: the linear-interpolation sample quantile (Hyndman & Fan type 7, the default of numpy and
//! `torch.quantile`, which Burns et al. call) and a running quantile over a sliding window of the most
//! recent values, used for the logconf loss's hardening threshold.
//!
//! Why a window: see [`crate::loss`]. The window keeps the last `capacity` values pushed (a ring
//! buffer); its quantile is exact over those values, computed by selection in O(capacity) without
//! sorting. Values must be finite (the trainer checks logits before pushing them).

/// Type-7 quantile of `values` at level `q` ∈ [0, 1]: with h = (n − 1) q, the order statistics at
/// ⌊h⌋ and ⌈h⌉ interpolated linearly. Reorders `values`. `None` when empty.
pub fn quantile_type7(values: &mut [f64], q: f64) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    let h = (n - 1) as f64 * q;
    let lo = (h.floor() as usize).min(n - 1);
    let frac = h - lo as f64;
    let (_, x_lo, right) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let x_lo = *x_lo;
    if frac == 0.0 || right.is_empty() {
        return Some(x_lo);
    }
    // The next order statistic is the smallest value right of the selected one.
    let x_hi = right.iter().copied().fold(f64::INFINITY, f64::min);
    Some(x_lo + frac * (x_hi - x_lo))
}

/// Type-7 quantile of an ascending slice (no reordering). `None` when empty.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = (h.floor() as usize).min(n - 1);
    let hi = (lo + 1).min(n - 1);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// The exact quantile of the last `capacity` values pushed.
#[derive(Clone, Debug)]
pub struct RunningQuantile {
    ring: Vec<f64>,
    capacity: usize,
    next: usize,
    scratch: Vec<f64>,
}

impl RunningQuantile {
    /// A window of `capacity` ≥ 1 values (a capacity of 0 is treated as 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        RunningQuantile {
            ring: Vec::with_capacity(capacity),
            capacity,
            next: 0,
            scratch: Vec::with_capacity(capacity),
        }
    }

    /// Adds a value, evicting the oldest when the window is full.
    pub fn push(&mut self, v: f64) {
        if self.ring.len() < self.capacity {
            self.ring.push(v);
        } else {
            self.ring[self.next] = v;
        }
        self.next = (self.next + 1) % self.capacity;
    }

    /// Number of values in the window.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True before the first push.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The window's state: its capacity, its values in ring order and the ring's next slot (what
    /// [`RunningQuantile::from_parts`] restores exactly).
    pub(crate) fn parts(&self) -> (usize, &[f64], usize) {
        (self.capacity, &self.ring, self.next)
    }

    /// A window from [`RunningQuantile::parts`]; `None` when they are inconsistent.
    pub(crate) fn from_parts(capacity: usize, ring: Vec<f64>, next: usize) -> Option<Self> {
        let consistent = capacity >= 1
            && ring.len() <= capacity
            && next < capacity
            && (ring.len() == capacity || next == ring.len() % capacity);
        consistent.then(|| RunningQuantile {
            scratch: Vec::with_capacity(capacity),
            ring,
            capacity,
            next,
        })
    }

    /// Type-7 quantile of the window at level `q`; `None` when empty.
    pub fn quantile(&mut self, q: f64) -> Option<f64> {
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.ring);
        quantile_type7(&mut self.scratch, q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type7_hand_values() {
        // numpy.quantile([1, 2, 3, 4], 0.25) = 1.75; at 0.5 → 2.5; at 1 → 4; at 0 → 1.
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile_type7(&mut v, 0.25), Some(1.75));
        assert_eq!(quantile_type7(&mut v, 0.5), Some(2.5));
        assert_eq!(quantile_type7(&mut v, 1.0), Some(4.0));
        assert_eq!(quantile_type7(&mut v, 0.0), Some(1.0));
        // Ties: [1, 1, 1, 5] at 0.5 → h = 1.5 → 1 + 0.5·(1 − 1) = 1.
        let mut v = vec![1.0, 5.0, 1.0, 1.0];
        assert_eq!(quantile_type7(&mut v, 0.5), Some(1.0));
        assert_eq!(quantile_type7(&mut [], 0.5), None);
        assert_eq!(quantile_sorted(&[1.0, 2.0, 3.0, 4.0], 0.25), Some(1.75));
        assert_eq!(quantile_sorted(&[7.0], 0.3), Some(7.0));
    }

    #[test]
    fn window_keeps_the_latest_values() {
        let mut r = RunningQuantile::new(3);
        assert_eq!(r.quantile(0.5), None);
        r.push(10.0);
        assert_eq!(r.quantile(0.5), Some(10.0));
        r.push(0.0);
        r.push(5.0);
        assert_eq!(r.quantile(0.5), Some(5.0));
        // Evicts 10: window {0, 5, 1} → median 1.
        r.push(1.0);
        assert_eq!(r.len(), 3);
        assert_eq!(r.quantile(0.5), Some(1.0));
        assert_eq!(r.quantile(1.0), Some(5.0));
    }
}

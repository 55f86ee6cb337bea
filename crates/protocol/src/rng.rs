//! Seeded random streams for shuffling and bootstrapping: xoshiro256++ (`rand_xoshiro`) seeded from a
//! user seed and a stream name, so that the mini-batch order, the PGR bootstrap and the transition
//! bootstrap never share numbers and each is reproducible from (seed, purpose) alone.
//!
//! Bounded integers use Lemire's multiply-and-reject method (unbiased, and independent of any library's
//! sampling algorithm, so the streams stay fixed across dependency upgrades).

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A deterministic random stream.
#[derive(Clone, Debug)]
pub struct Stream(Xoshiro256PlusPlus);

impl Stream {
    /// The stream for `seed` and `purpose` (e.g. "shuffle", "pgr-bootstrap").
    pub fn new(seed: u64, purpose: &str) -> Self {
        // FNV-1a of the purpose, mixed into the seed; `seed_from_u64` then expands it by SplitMix64.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in purpose.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Stream(Xoshiro256PlusPlus::seed_from_u64(
            seed ^ h.rotate_left(17).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ))
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform integer in [0, n); `n` must be ≥ 1.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal by the Box–Muller transform (synthetic data for tests and benchmarks; not
    /// a fast sampler).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_unbiased_and_separate_streams() {
        let a: Vec<u64> = (0..5)
            .map(|_| 0)
            .scan(Stream::new(7, "x"), |s, _| Some(s.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .map(|_| 0)
            .scan(Stream::new(7, "x"), |s, _| Some(s.next_u64()))
            .collect();
        let c: Vec<u64> = (0..5)
            .map(|_| 0)
            .scan(Stream::new(7, "y"), |s, _| Some(s.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // 60 000 draws below 3: each count within 5 sd (sd = √(60000·(1/3)(2/3)) ≈ 115) of 20 000.
        let mut s = Stream::new(1, "below");
        let mut counts = [0usize; 3];
        for _ in 0..60_000 {
            counts[s.below(3) as usize] += 1;
        }
        for c in counts {
            assert!((c as i64 - 20_000).abs() < 580, "{counts:?}");
        }
        let mut v: Vec<usize> = (0..10).collect();
        s.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
}

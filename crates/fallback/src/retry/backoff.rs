//! The delay between two tries on the same link: exponential with full
//! jitter, seedable, as an `Iterator` of delays.

use std::time::Duration;

use crate::error::BuildError;
use crate::rand::{random_seed, SplitMix64};

/// Default first delay.
pub(crate) const DEFAULT_BASE: Duration = Duration::from_millis(50);
/// Default cap on any delay.
pub(crate) const DEFAULT_CAP: Duration = Duration::from_secs(2);
/// Default growth factor.
pub(crate) const DEFAULT_FACTOR: f64 = 2.0;

/// Backoff between tries on the same link: exponential, with full jitter.
///
/// A backoff is just an `Iterator<Item = Duration>`. The n-th delay (from 0)
/// is drawn uniformly from `[0, min(cap, base × factorⁿ)]` ("full jitter",
/// which spreads retries of many callers best). The randomness is a small
/// seedable generator, so a seeded schedule is the same on every run.
///
/// | setting | default |
/// | --- | --- |
/// | [`base`](ExponentialBackoff::base) | 50 ms |
/// | [`factor`](ExponentialBackoff::factor) | 2.0 |
/// | [`cap`](ExponentialBackoff::cap) | 2 s |
/// | [`jitter`](ExponentialBackoff::jitter) | on (full jitter) |
/// | [`seed`](ExponentialBackoff::seed) | random per call |
///
/// ```
/// use std::time::Duration;
/// use fallback_chain::ExponentialBackoff;
///
/// let plain: Vec<_> = ExponentialBackoff::new()
///     .base(Duration::from_millis(100))
///     .cap(Duration::from_millis(500))
///     .jitter(false)
///     .take(5)
///     .collect();
/// let ms = |n| Duration::from_millis(n);
/// assert_eq!(plain, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
///
/// // Seeded jitter is reproducible, and never above the un-jittered delay.
/// let a: Vec<_> = ExponentialBackoff::new().seed(7).take(4).collect();
/// let b: Vec<_> = ExponentialBackoff::new().seed(7).take(4).collect();
/// assert_eq!(a, b);
/// ```
///
/// Exponential backoff with full jitter.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct ExponentialBackoff {
    base: Duration,
    cap: Duration,
    factor: f64,
    jitter: bool,
    seed: Option<u64>,
    // Iteration state.
    n: u32,
    rng: SplitMix64,
}

impl Default for ExponentialBackoff {
    fn default() -> Self {
        ExponentialBackoff {
            base: DEFAULT_BASE,
            cap: DEFAULT_CAP,
            factor: DEFAULT_FACTOR,
            jitter: true,
            seed: None,
            n: 0,
            rng: SplitMix64::new(random_seed()),
        }
    }
}

impl ExponentialBackoff {
    /// The defaults above.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first delay (before jitter).
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// The largest delay.
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// How much each delay grows over the previous one (at least 1).
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Full jitter on (`true`, the default) or off.
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Seeds the jitter, for reproducible schedules.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self.rng = SplitMix64::new(seed);
        self
    }

    /// Checks the settings: a factor below 1 (or not finite), or a base
    /// above the cap, is an error.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |reason: String| BuildError::Setting {
            setting: "backoff",
            reason,
        };
        if !self.factor.is_finite() || self.factor < 1.0 {
            return Err(bad(format!(
                "factor {} must be a finite number of at least 1",
                self.factor
            )));
        }
        if self.base > self.cap {
            return Err(bad(format!(
                "base {:?} is above the cap {:?}",
                self.base, self.cap
            )));
        }
        Ok(())
    }

    /// A fresh schedule for one stream of tries (one link of one call):
    /// restarted, with jitter drawn from the seed (or this instance's random
    /// one) mixed with `stream`, so every call and link jitters differently
    /// and a seeded chain is reproducible.
    pub(crate) fn start(&self, stream: u64) -> ExponentialBackoff {
        let base = self.seed.unwrap_or(self.rng.0);
        let mut mix = SplitMix64::new(base ^ stream.wrapping_mul(0xA24B_AED4_963E_E407));
        ExponentialBackoff {
            n: 0,
            rng: SplitMix64::new(mix.next_u64()),
            ..self.clone()
        }
    }

    /// The n-th delay before jitter: `min(cap, base × factorⁿ)`, without
    /// overflow for any n.
    pub fn ceiling(&self, n: u32) -> Duration {
        let cap = self.cap.as_secs_f64();
        let raw = self.base.as_secs_f64() * self.factor.powi(n.min(i32::MAX as u32) as i32);
        if raw.is_finite() && raw < cap {
            Duration::try_from_secs_f64(raw).unwrap_or(self.cap)
        } else {
            self.cap
        }
    }
}

impl Iterator for ExponentialBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let ceiling = self.ceiling(self.n);
        self.n = self.n.saturating_add(1);
        if !self.jitter {
            return Some(ceiling);
        }
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        Some(Duration::from_nanos(self.rng.below_inclusive(nanos)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validation() {
        assert!(ExponentialBackoff::new().validate().is_ok());
        assert!(ExponentialBackoff::new().factor(0.5).validate().is_err());
        assert!(ExponentialBackoff::new()
            .factor(f64::NAN)
            .validate()
            .is_err());
        assert!(ExponentialBackoff::new()
            .factor(f64::INFINITY)
            .validate()
            .is_err());
        let e = ExponentialBackoff::new()
            .base(Duration::from_secs(3))
            .cap(Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("above the cap"), "{e}");
    }

    #[test]
    fn factor_one_is_constant() {
        let d: Vec<_> = ExponentialBackoff::new()
            .factor(1.0)
            .jitter(false)
            .take(3)
            .collect();
        assert_eq!(d, [DEFAULT_BASE; 3]);
    }

    #[test]
    fn different_calls_draw_different_jitter() {
        let b = ExponentialBackoff::new().seed(1);
        let x: Vec<_> = b.start(10).take(8).collect();
        let y: Vec<_> = b.start(11).take(8).collect();
        assert_ne!(x, y);
        assert_eq!(x, b.start(10).take(8).collect::<Vec<_>>());
    }

    proptest! {
        #[test]
        fn jittered_delays_stay_within_their_ceiling(
            base_ms in 0u64..10_000,
            extra_ms in 0u64..100_000,
            factor in 1.0f64..10.0,
            seed: u64,
        ) {
            let b = ExponentialBackoff::new()
                .base(Duration::from_millis(base_ms))
                .cap(Duration::from_millis(base_ms + extra_ms))
                .factor(factor)
                .seed(seed);
            prop_assert!(b.validate().is_ok());
            for (n, d) in b.clone().take(100).enumerate() {
                let ceiling = b.ceiling(n as u32);
                prop_assert!(d <= ceiling, "delay {:?} above ceiling {:?}", d, ceiling);
                prop_assert!(ceiling <= Duration::from_millis(base_ms + extra_ms));
            }
        }

        #[test]
        fn ceilings_never_shrink(base_ms in 1u64..1000, factor in 1.0f64..4.0, n in 0u32..10_000) {
            let b = ExponentialBackoff::new()
                .base(Duration::from_millis(base_ms))
                .cap(Duration::from_secs(60))
                .factor(factor);
            prop_assert!(b.ceiling(n) <= b.ceiling(n + 1));
            prop_assert!(b.ceiling(u32::MAX) == Duration::from_secs(60) || factor == 1.0);
        }

        #[test]
        fn full_jitter_is_roughly_uniform(seed: u64) {
            let mut r = SplitMix64::new(seed);
            let mean = (0..4000).map(|_| r.below_inclusive(1000) as f64).sum::<f64>() / 4000.0;
            prop_assert!((mean - 500.0).abs() < 40.0, "mean {}", mean);
        }
    }
}

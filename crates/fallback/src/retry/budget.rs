//! The retry budget: the bound on the extra load that retries and hedges
//! add, over a sliding window shared by every call through a chain.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::BuildError;
use crate::window::{Window, MIN_WINDOW};

const PPM: u128 = 1_000_000;

/// The retry budget: a cap on the extra load that retries and hedges add.
///
/// One budget is shared by every call through a chain and by its clones.
/// Each call deposits one request; each extra try on the *same* link (and
/// each hedge) withdraws one retry. A withdrawal is allowed while, over the
/// sliding window,
///
/// ```text
/// retries ≤ ratio × requests + min_per_sec × window
/// ```
///
/// Moving to the *next* link never draws from the budget: failing over is
/// what the chain is for; hammering a dead link is not.
///
/// | setting | default | from |
/// | --- | --- | --- |
/// | [`ratio`](RetryBudget::ratio) | 0.2 (20 % extra load) | Finagle, Envoy |
/// | [`window`](RetryBudget::window) | 10 s | Finagle |
/// | [`min_per_sec`](RetryBudget::min_per_sec) | 10 retries per second | Finagle |
///
/// The ratio is kept in parts per million and compared without division, so
/// a ratio of 0.6 allows 60 % (tower's TPS budget truncates `1 / ratio` and
/// lets 0.6 through as 100 %, its issue 857).
///
/// ```
/// use std::time::Duration;
/// use fallback_chain::RetryBudget;
///
/// let budget = RetryBudget::new().ratio(0.5).min_per_sec(0.0);
/// for _ in 0..10 {
///     budget.deposit();
/// }
/// let allowed = (0..100).filter(|_| budget.try_withdraw()).count();
/// assert_eq!(allowed, 5);
/// ```
///
/// A retry budget shared by every clone.
#[derive(Clone)]
#[must_use]
pub struct RetryBudget {
    ratio: f64,
    window: Duration,
    min_per_sec: f64,
    state: Arc<Mutex<Counts>>,
    epoch: Instant,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("window", &self.window)
            .field("min_per_sec", &self.min_per_sec)
            .finish()
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::with_settings(0.2, Duration::from_secs(10), 10.0)
    }
}

impl RetryBudget {
    /// The defaults above.
    pub fn new() -> Self {
        Self::default()
    }

    /// No limit at all: every retry and hedge is allowed.
    pub fn unlimited() -> Self {
        Self::with_settings(f64::INFINITY, Duration::from_secs(10), 0.0)
    }

    fn with_settings(ratio: f64, window: Duration, min_per_sec: f64) -> Self {
        RetryBudget {
            ratio,
            window,
            min_per_sec,
            state: Arc::new(Mutex::new(Counts::new(ratio, window, min_per_sec))),
            epoch: Instant::now(),
        }
    }

    /// Retries allowed per request, over the window (0.2 = 20 % extra load).
    /// A fresh, unshared budget is returned.
    pub fn ratio(self, ratio: f64) -> Self {
        Self::with_settings(ratio, self.window, self.min_per_sec)
    }

    /// The sliding window over which requests and retries are counted.
    pub fn window(self, window: Duration) -> Self {
        Self::with_settings(self.ratio, window, self.min_per_sec)
    }

    /// Retries allowed per second whatever the traffic, so a quiet chain can
    /// still retry.
    pub fn min_per_sec(self, min_per_sec: f64) -> Self {
        Self::with_settings(self.ratio, self.window, min_per_sec)
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |reason: String| BuildError::Setting {
            setting: "retry budget",
            reason,
        };
        if self.ratio.is_nan() || self.ratio < 0.0 {
            return Err(bad(format!("ratio {} must be 0 or more", self.ratio)));
        }
        if !self.min_per_sec.is_finite() || self.min_per_sec < 0.0 {
            return Err(bad(format!(
                "min_per_sec {} must be a finite number of 0 or more",
                self.min_per_sec
            )));
        }
        if self.window < MIN_WINDOW {
            return Err(bad(format!(
                "window {:?} must be at least 10ms",
                self.window
            )));
        }
        Ok(())
    }

    /// Records one request (a call through the chain).
    pub fn deposit(&self) {
        self.deposit_at(self.epoch.elapsed());
    }

    /// Takes one retry if the budget allows it.
    pub fn try_withdraw(&self) -> bool {
        self.try_withdraw_at(self.epoch.elapsed())
    }

    pub(crate) fn deposit_at(&self, now: Duration) {
        lock(&self.state).deposit(now);
    }

    pub(crate) fn try_withdraw_at(&self, now: Duration) -> bool {
        lock(&self.state).try_withdraw(now)
    }
}

fn lock(m: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    // The window holds plain counters: a panic elsewhere cannot break them.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The budget's arithmetic: requests (a) and retries (b) over the window.
#[derive(Debug)]
struct Counts {
    unlimited: bool,
    ratio_ppm: u128,
    reserve: u128,
    window: Window,
}

impl Counts {
    fn new(ratio: f64, window: Duration, min_per_sec: f64) -> Counts {
        let unlimited = ratio.is_infinite();
        let ratio_ppm = if unlimited || ratio.is_nan() || ratio < 0.0 {
            0
        } else {
            // Floor: the budget may round down, never up.
            (ratio * PPM as f64).floor() as u128
        };
        let reserve = if min_per_sec.is_finite() && min_per_sec > 0.0 {
            (min_per_sec * window.as_secs_f64()).floor() as u128
        } else {
            0
        };
        Counts {
            unlimited,
            ratio_ppm,
            reserve,
            window: Window::new(window),
        }
    }

    fn deposit(&mut self, now: Duration) {
        self.window.add_a(now);
    }

    fn try_withdraw(&mut self, now: Duration) -> bool {
        if self.unlimited {
            return true;
        }
        let (deposits, withdrawals) = self.window.totals(now);
        // (withdrawals + 1) ≤ reserve + ratio × deposits, in ppm.
        if (withdrawals as u128 + 1) * PPM <= self.reserve * PPM + self.ratio_ppm * deposits as u128
        {
            self.window.add_b(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn budget(ratio: f64, min_per_sec: f64) -> RetryBudget {
        RetryBudget::new().ratio(ratio).min_per_sec(min_per_sec)
    }

    #[test]
    fn ratio_0_6_allows_60_percent_not_100() {
        let b = budget(0.6, 0.0);
        let t = Duration::from_secs(1);
        for _ in 0..1000 {
            b.deposit_at(t);
        }
        let allowed = (0..2000).filter(|_| b.try_withdraw_at(t)).count();
        assert_eq!(allowed, 600);
    }

    #[test]
    fn the_floor_allows_retries_without_traffic() {
        let b = budget(0.2, 10.0);
        let t = Duration::from_secs(1);
        let allowed = (0..1000).filter(|_| b.try_withdraw_at(t)).count();
        assert_eq!(allowed, 100, "10 per second over a 10 s window");
    }

    #[test]
    fn deposits_expire_after_the_window() {
        let b = budget(1.0, 0.0);
        for _ in 0..10 {
            b.deposit_at(Duration::ZERO);
        }
        assert!(b.try_withdraw_at(Duration::from_secs(9)));
        // Eleven seconds later, the deposits have left the window, while the
        // withdrawal made at 9 s still counts.
        assert!(!b.try_withdraw_at(Duration::from_secs(11)));
        b.deposit_at(Duration::from_secs(11));
        assert!(!b.try_withdraw_at(Duration::from_secs(11)));
        b.deposit_at(Duration::from_secs(11));
        assert!(b.try_withdraw_at(Duration::from_secs(11)));
        assert!(!b.try_withdraw_at(Duration::from_secs(11)));
        // Once it has left too, a fresh deposit buys a fresh retry.
        b.deposit_at(Duration::from_secs(20));
        assert!(b.try_withdraw_at(Duration::from_secs(20)));
    }

    #[test]
    fn clones_share_one_budget() {
        let a = budget(1.0, 0.0);
        let b = a.clone();
        a.deposit_at(Duration::ZERO);
        assert!(b.try_withdraw_at(Duration::ZERO));
        assert!(!a.try_withdraw_at(Duration::ZERO));
    }

    #[test]
    fn unlimited_and_zero() {
        let u = RetryBudget::unlimited();
        assert!((0..1000).all(|_| u.try_withdraw_at(Duration::ZERO)));
        let z = budget(0.0, 0.0);
        z.deposit_at(Duration::ZERO);
        assert!(!z.try_withdraw_at(Duration::ZERO));
    }

    #[test]
    fn validation() {
        assert!(RetryBudget::new().validate().is_ok());
        assert!(budget(-0.1, 1.0).validate().is_err());
        assert!(budget(f64::NAN, 1.0).validate().is_err());
        assert!(budget(0.2, -1.0).validate().is_err());
        assert!(RetryBudget::new()
            .window(Duration::ZERO)
            .validate()
            .is_err());
    }

    proptest! {
        /// Over any run, retries never exceed ratio × requests plus the
        /// floor's allowance for each window the run spans.
        #[test]
        fn never_more_than_its_ratio(
            ratio in 0.0f64..2.0,
            min_per_sec in 0.0f64..5.0,
            events in proptest::collection::vec((0u64..3_000, any::<bool>()), 1..2_000),
        ) {
            let window = Duration::from_secs(10);
            let b = budget(ratio, min_per_sec).window(window);
            let mut now = Duration::ZERO;
            let (mut deposits, mut retries) = (0u64, 0u64);
            for (step_ms, is_request) in events {
                now += Duration::from_millis(step_ms);
                if is_request {
                    b.deposit_at(now);
                    deposits += 1;
                } else if b.try_withdraw_at(now) {
                    retries += 1;
                }
            }
            let windows = (now.as_secs_f64() / window.as_secs_f64()).floor() + 2.0;
            let reserve = (min_per_sec * window.as_secs_f64()).floor();
            let bound = ratio * deposits as f64 + reserve * windows;
            prop_assert!(retries as f64 <= bound + 1e-9, "{} retries > bound {}", retries, bound);
        }

        /// Within one instant (one window), the count is exact: the floor of
        /// ratio × requests, plus the reserve.
        #[test]
        fn exact_within_a_window(ratio in 0.0f64..3.0, requests in 0u64..500) {
            let b = budget(ratio, 0.0);
            let t = Duration::from_secs(5);
            for _ in 0..requests {
                b.deposit_at(t);
            }
            let allowed = (0..2_000).filter(|_| b.try_withdraw_at(t)).count() as u64;
            let ppm = (ratio * 1e6).floor() as u128;
            prop_assert_eq!(allowed as u128, ppm * requests as u128 / 1_000_000);
            prop_assert!(allowed as f64 <= ratio * requests as f64);
        }
    }
}

//! The breakers' settings: [`BreakerConfig`], one breaker per link, and
//! [`AllOpen`], what a call does when every link is open.

use std::time::Duration;

use crate::error::BuildError;
use crate::window::MIN_WINDOW;

/// Circuit breakers: one per link, shared by every call through a chain,
/// so a dead link is skipped instead of making every call pay for it.
///
/// - **Closed → open.** A link opens when, over a sliding window, its
///   failure ratio reaches the threshold (given a minimum number of calls),
///   or after a run of consecutive failures, which lets a chain with little
///   traffic learn that a link is dead.
/// - **Open.** The link is skipped without spending an attempt or a
///   timeout, and reported `skipped`.
/// - **Half-open.** After the break, one probe call is let through. A
///   success closes the link; a failure reopens it for a longer, jittered
///   break, up to a cap.
/// - **All links open.** By default the call fails at once
///   ([`ErrorKind::AllOpen`](crate::ErrorKind::AllOpen)), except that each
///   link lets one call through as a probe per second, so load on servers
///   that are all down stays bounded and a link that comes back is found
///   within about a second. [`AllOpen::try_soonest`] restores Envoy's
///   "panic mode": every call tries the link whose break ends first.
///
/// What counts as a failure: no connection, a timeout, a broken connection,
/// a body that is too large or does not decode, and the statuses 408, 429
/// and 5xx. Other 4xx answers show a live server and count as successes.
///
/// | setting | default | why |
/// | --- | --- | --- |
/// | [`failure_ratio`](BreakerConfig::failure_ratio) | 0.5 | a backup is at hand, so a link failing half its calls is better skipped; Polly's 0.1 suits a lone endpoint with nowhere else to go |
/// | [`window`](BreakerConfig::window) | 10 s | long enough to smooth bursts, short enough to react within seconds |
/// | [`min_calls`](BreakerConfig::min_calls) | 20 | a ratio over fewer calls is noise (Polly asks 100, for a 30 s window) |
/// | [`consecutive_failures`](BreakerConfig::consecutive_failures) | 5 | Envoy's outlier detection and Finagle's failure accrual |
/// | [`break_duration`](BreakerConfig::break_duration) | 5 s | Polly's and Finagle's first break |
/// | [`max_break_duration`](BreakerConfig::max_break_duration) | 60 s | breaks double on each failed probe; a cap keeps recovery found within a minute |
///
/// Breakers are on by default; [`ChainBuilder::breaker`] sets them, and
/// `ChainBuilder::breaker(None)` turns them off.
///
/// ```
/// use std::time::Duration;
/// use fallback_chain::{BreakerConfig, BreakerState, Chain, Link, Outcome};
/// use fallback_chain_testserver::{Behavior, Server};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dead = Server::refused();
/// let backup = Server::start(Behavior::ok("fine"));
/// let chain = Chain::builder()
///     .breaker(BreakerConfig::new().consecutive_failures(2))
///     .link(Link::get(dead.url("/")).name("primary"))
///     .link(Link::get(backup.url("/")).name("backup"))
///     .build()?;
/// for _ in 0..2 {
///     chain.call().await?; // the primary fails twice: its breaker opens
/// }
/// let resp = chain.call().await?;
/// assert_eq!(resp.report().attempts()[0].outcome(), Outcome::Skipped);
/// assert_eq!(chain.health()[0].state(), BreakerState::Open);
/// # Ok(()) }
/// ```
///
/// [`ChainBuilder::breaker`]: crate::ChainBuilder::breaker
///
/// The settings of the per-link breakers.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct BreakerConfig {
    pub(super) failure_ratio: f64,
    pub(super) window: Duration,
    pub(super) min_calls: u32,
    pub(super) consecutive_failures: u32,
    pub(super) break_duration: Duration,
    pub(super) max_break: Duration,
    pub(super) seed: Option<u64>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_ratio: 0.5,
            window: Duration::from_secs(10),
            min_calls: 20,
            consecutive_failures: 5,
            break_duration: Duration::from_secs(5),
            max_break: Duration::from_secs(60),
            seed: None,
        }
    }
}

impl BreakerConfig {
    /// The defaults above.
    pub fn new() -> Self {
        Self::default()
    }

    /// The failure ratio, in (0, 1], at which a link opens. Above 1 turns
    /// the ratio trigger off.
    pub fn failure_ratio(mut self, ratio: f64) -> Self {
        self.failure_ratio = ratio;
        self
    }

    /// The sliding window over which the ratio is counted.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The fewest calls in the window for the ratio to count.
    pub fn min_calls(mut self, min_calls: u32) -> Self {
        self.min_calls = min_calls;
        self
    }

    /// Consecutive failures that open a link (0 turns this trigger off).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// The first break.
    pub fn break_duration(mut self, d: Duration) -> Self {
        self.break_duration = d;
        self
    }

    /// The longest break.
    pub fn max_break_duration(mut self, d: Duration) -> Self {
        self.max_break = d;
        self
    }

    /// Seeds the jitter of the breaks, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |reason: String| BuildError::Setting {
            setting: "breaker",
            reason,
        };
        if self.failure_ratio.is_nan() || self.failure_ratio <= 0.0 {
            return Err(bad(format!(
                "failure ratio {} must be above 0",
                self.failure_ratio
            )));
        }
        if self.window < MIN_WINDOW {
            return Err(bad(format!(
                "window {:?} must be at least 10ms",
                self.window
            )));
        }
        if self.break_duration.is_zero() {
            return Err(bad("the break must be longer than zero".into()));
        }
        if self.break_duration > self.max_break {
            return Err(bad(format!(
                "break {:?} is above the max break {:?}",
                self.break_duration, self.max_break
            )));
        }
        Ok(())
    }
}

/// What a call does when every link's breaker is open: set with
/// [`ChainBuilder::all_open`](crate::ChainBuilder::all_open).
///
/// | choice | when every link is open | load on the dead servers | finds a recovered link |
/// | --- | --- | --- | --- |
/// | [`fail_fast`](Self::fail_fast) (default) | the call fails at once with [`ErrorKind::AllOpen`](crate::ErrorKind::AllOpen), unless it is a link's probe | one probe per link per [`probe_interval`](Self::probe_interval) (1 s) | within the interval |
/// | [`try_soonest`](Self::try_soonest) | every call tries the link whose break ends first (Envoy's panic mode) | about one request per call | at once |
///
/// ```
/// use std::time::Duration;
/// use fallback_chain::{AllOpen, Chain, Link};
/// let chain = Chain::builder()
///     .all_open(AllOpen::fail_fast().probe_interval(Duration::from_millis(500)))
///     .link(Link::get("http://127.0.0.1:8080/"))
///     .build()?;
/// # let _ = chain;
/// # Ok::<(), fallback_chain::BuildError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct AllOpen {
    pub(crate) try_soonest: bool,
    pub(crate) probe_interval: Duration,
}

impl Default for AllOpen {
    fn default() -> Self {
        AllOpen::fail_fast()
    }
}

impl AllOpen {
    /// Fail fast, with one probe per link per interval (the default).
    pub fn fail_fast() -> AllOpen {
        AllOpen {
            try_soonest: false,
            probe_interval: Duration::from_secs(1),
        }
    }

    /// Envoy's panic mode: try the link whose break ends first.
    pub fn try_soonest() -> AllOpen {
        AllOpen {
            try_soonest: true,
            ..AllOpen::fail_fast()
        }
    }

    /// With [`fail_fast`](Self::fail_fast), how often each link lets one
    /// call through as a probe while every link is open. Default: 1 s.
    pub fn probe_interval(mut self, interval: Duration) -> AllOpen {
        self.probe_interval = interval;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if self.probe_interval.is_zero() {
            return Err(BuildError::Setting {
                setting: "all_open",
                reason: "the probe interval must be greater than zero".into(),
            });
        }
        Ok(())
    }
}

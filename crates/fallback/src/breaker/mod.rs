//! Circuit breakers: a link's state (closed, open, half-open) over a
//! sliding window of outcomes, the rule for what counts as a
//! failure, what a call does when every link is open ([`AllOpen`]), and
//! the guard that settles a probe.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use crate::error::BuildError;
use crate::rand::{random_seed, SplitMix64};
use crate::report::Outcome;
use crate::window::{Window, MIN_WINDOW};

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
    failure_ratio: f64,
    window: Duration,
    min_calls: u32,
    consecutive_failures: u32,
    break_duration: Duration,
    max_break: Duration,
    seed: Option<u64>,
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

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls skip the link until the break ends.
    Open,
    /// The break has ended: one probe call decides.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One link's health, as [`Chain::health`](crate::Chain::health) reports it.
#[derive(Clone, Debug)]
pub struct LinkHealth {
    pub(crate) link: usize,
    pub(crate) name: String,
    pub(crate) state: BreakerState,
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    pub(crate) consecutive_failures: u32,
    pub(crate) opened: u64,
    pub(crate) failed_probes: u64,
    pub(crate) open_for: Option<Duration>,
}

impl LinkHealth {
    /// The link's index.
    pub fn link(&self) -> usize {
        self.link
    }
    /// The link's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The breaker's state.
    pub fn state(&self) -> BreakerState {
        self.state
    }
    /// Successes in the current window.
    pub fn successes(&self) -> u64 {
        self.successes
    }
    /// Failures in the current window.
    pub fn failures(&self) -> u64 {
        self.failures
    }
    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
    /// How many times the breaker has opened from closed: the outages it
    /// has seen. A failed probe, which keeps it open, does not count.
    pub fn times_opened(&self) -> u64 {
        self.opened
    }
    /// How many probes failed, each keeping the breaker open for a longer
    /// break.
    pub fn failed_probes(&self) -> u64 {
        self.failed_probes
    }
    /// For an open breaker, the time left in its break.
    pub fn open_for(&self) -> Option<Duration> {
        self.open_for
    }
}

/// One breaker shared by links of several chains: a link given
/// [`Link::breaker`](crate::Link::breaker) uses it instead of a breaker of
/// its own, so every chain that reaches the same server learns, and
/// skips, the same outage.
///
/// A proxy with routes is the case in point: two routes that both use the
/// primary open one breaker, not two, and a probe sent by either closes it
/// for both. Clones share the state.
///
/// The [`BreakerConfig`] is checked when a chain using the breaker is
/// built. A chain with a shared breaker on any link has breakers on: its
/// other links get the chain's [`ChainBuilder::breaker`] settings, or the
/// defaults when it turned them off.
///
/// ```
/// use fallback_chain::{BreakerConfig, BreakerState, Chain, Link, SharedBreaker};
/// use fallback_chain_testserver::{Behavior, Server};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dead = Server::refused();
/// let backup = Server::start(Behavior::ok("fine"));
/// let primary = SharedBreaker::new(BreakerConfig::new().consecutive_failures(1));
/// let orders = Chain::builder()
///     .link(Link::get(dead.url("/orders")).breaker(primary.clone()))
///     .link(Link::get(backup.url("/orders")))
///     .build()?;
/// let users = Chain::builder()
///     .link(Link::get(dead.url("/users")).breaker(primary.clone()))
///     .link(Link::get(backup.url("/users")))
///     .build()?;
/// orders.call().await?; // the primary fails once: the shared breaker opens
/// assert_eq!(primary.state(), BreakerState::Open);
/// assert_eq!(users.health()[0].state(), BreakerState::Open);
/// # Ok(()) }
/// ```
///
/// [`ChainBuilder::breaker`]: crate::ChainBuilder::breaker
#[derive(Clone)]
pub struct SharedBreaker {
    pub(crate) breaker: Arc<Breaker>,
    pub(crate) config: BreakerConfig,
}

impl SharedBreaker {
    /// A closed breaker with these settings.
    pub fn new(config: BreakerConfig) -> SharedBreaker {
        SharedBreaker {
            breaker: Arc::new(Breaker::new(&config, Instant::now(), 0)),
            config,
        }
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        self.breaker.health(Instant::now(), 0, "").state
    }

    /// Whether `self` and `other` are the same breaker.
    pub fn same(&self, other: &SharedBreaker) -> bool {
        Arc::ptr_eq(&self.breaker, &other.breaker)
    }
}

impl Default for SharedBreaker {
    /// A breaker with [`BreakerConfig::default`].
    fn default() -> Self {
        SharedBreaker::new(BreakerConfig::default())
    }
}

impl fmt::Debug for SharedBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBreaker")
            .field("state", &self.state())
            .field("config", &self.config)
            .finish()
    }
}

/// Whether a call may use a link now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Closed: go.
    Go,
    /// The break is over: this call is the probe.
    Probe,
    /// Open (or a probe is in flight) until then.
    Skip(Instant),
}

/// One link's breaker. Time is passed in, so tests drive it without waiting.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<State>,
    /// True while the state is not Closed: lets a closed link admit calls
    /// without taking the lock.
    tripped: AtomicBool,
}

#[derive(Debug)]
struct State {
    cfg: BreakerConfig,
    kind: BreakerState,
    epoch: Instant,
    /// Successes (a) and failures (b) over the window.
    window: Window,
    consecutive: u32,
    opened: u64,
    failed_probes: u64,
    break_len: Duration,
    until: Instant,
    probing: bool,
    /// When an all-open probe last went through this link.
    last_all_open_probe: Option<Instant>,
    rng: SplitMix64,
}

impl Breaker {
    pub(crate) fn new(cfg: &BreakerConfig, epoch: Instant, link: usize) -> Breaker {
        let seed = cfg.seed.unwrap_or_else(random_seed) ^ (link as u64).wrapping_mul(0x9E37_79B9);
        Breaker {
            tripped: AtomicBool::new(false),
            state: Mutex::new(State {
                window: Window::new(cfg.window),
                cfg: cfg.clone(),
                kind: BreakerState::Closed,
                epoch,
                consecutive: 0,
                opened: 0,
                failed_probes: 0,
                break_len: cfg.break_duration,
                until: epoch,
                probing: false,
                last_all_open_probe: None,
                rng: SplitMix64::new(seed),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain counters: a panic elsewhere cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn admit(&self, now: Instant) -> Admit {
        if !self.tripped.load(Ordering::Acquire) {
            return Admit::Go;
        }
        let mut s = self.lock();
        match s.kind {
            BreakerState::Closed => Admit::Go,
            BreakerState::Open if now < s.until => Admit::Skip(s.until),
            BreakerState::Open | BreakerState::HalfOpen if !s.probing => {
                s.kind = BreakerState::HalfOpen;
                s.probing = true;
                Admit::Probe
            }
            _ => Admit::Skip(s.until.max(now)),
        }
    }

    /// Lets a call through whatever the state (panic mode): it is a probe.
    pub(crate) fn force_probe(&self) {
        let mut s = self.lock();
        s.kind = BreakerState::HalfOpen;
        s.probing = true;
        self.tripped.store(true, Ordering::Release);
    }

    /// While every link is open: claims this link's probe for the calling
    /// call if no probe is in flight and none went through within
    /// `interval`. The probe itself starts when the call reaches the link
    /// ([`force_probe`](Self::force_probe)); a call that ends before that
    /// leaves no probe marked in flight.
    pub(crate) fn claim_all_open_probe(&self, now: Instant, interval: Duration) -> bool {
        let mut s = self.lock();
        if s.probing
            || s.last_all_open_probe
                .is_some_and(|t| now < crate::timeout::later(t, interval))
        {
            return false;
        }
        s.last_all_open_probe = Some(now);
        true
    }

    /// When an open link's break ends; `None` when calls may use it now.
    pub(crate) fn blocked_until(&self, now: Instant) -> Option<Instant> {
        if !self.tripped.load(Ordering::Acquire) {
            return None;
        }
        let s = self.lock();
        match s.kind {
            BreakerState::Closed => None,
            BreakerState::Open if now < s.until => Some(s.until),
            BreakerState::HalfOpen if s.probing => Some(s.until.max(now)),
            _ => None,
        }
    }

    /// Records an attempt's verdict; returns the new state if it changed.
    pub(crate) fn record(&self, now: Instant, ok: bool, probe: bool) -> Option<BreakerState> {
        let mut s = self.lock();
        let before = s.kind;
        let since = now.saturating_duration_since(s.epoch);
        if ok {
            s.window.add_a(since);
            s.consecutive = 0;
        } else {
            s.window.add_b(since);
            s.consecutive = s.consecutive.saturating_add(1);
        }
        if probe && s.kind == BreakerState::HalfOpen {
            s.probing = false;
            if ok {
                s.close();
            } else {
                let grown = s.grown_break();
                s.open(now, grown);
                s.failed_probes += 1;
            }
        } else if s.kind == BreakerState::Closed && !ok && s.should_open(since) {
            let first = s.cfg.break_duration;
            s.open(now, first);
            s.opened += 1;
        }
        // Written under the lock, so it never disagrees with the state for long.
        self.tripped
            .store(s.kind != BreakerState::Closed, Ordering::Release);
        (s.kind != before).then_some(s.kind)
    }

    /// A probe that ended without a verdict (cancelled or dropped): the next
    /// call probes instead.
    pub(crate) fn release_probe(&self) {
        let mut s = self.lock();
        if s.kind == BreakerState::HalfOpen {
            s.probing = false;
        }
    }

    pub(crate) fn health(&self, now: Instant, link: usize, name: &str) -> LinkHealth {
        let mut s = self.lock();
        let since = now.saturating_duration_since(s.epoch);
        let (successes, failures) = s.window.totals(since);
        let state = match s.kind {
            BreakerState::Open if now >= s.until => BreakerState::HalfOpen,
            k => k,
        };
        LinkHealth {
            link,
            name: name.to_owned(),
            state,
            successes,
            failures,
            consecutive_failures: s.consecutive,
            opened: s.opened,
            failed_probes: s.failed_probes,
            open_for: (state == BreakerState::Open).then(|| s.until - now),
        }
    }
}

impl State {
    fn should_open(&mut self, since: std::time::Duration) -> bool {
        let c = self.cfg.consecutive_failures;
        if c > 0 && self.consecutive >= c {
            return true;
        }
        let (ok, bad) = self.window.totals(since);
        let calls = bad + ok;
        calls >= self.cfg.min_calls as u64
            && calls > 0
            && bad as f64 >= self.cfg.failure_ratio * calls as f64
    }

    fn open(&mut self, now: Instant, len: Duration) {
        self.kind = BreakerState::Open;
        self.break_len = len;
        self.until = crate::timeout::later(now, len);
    }

    fn close(&mut self) {
        self.last_all_open_probe = None;
        self.kind = BreakerState::Closed;
        self.break_len = self.cfg.break_duration;
        self.consecutive = 0;
        self.window.clear();
    }

    /// Double the last break, cap it, then jitter it into [80 %, 100 %]: the
    /// next break is longer than the last, yet callers do not probe in step.
    fn grown_break(&mut self) -> Duration {
        let nominal = self.break_len.saturating_mul(2).min(self.cfg.max_break);
        let jitter = 0.8 + 0.2 * (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        nominal.mul_f64(jitter).max(self.cfg.break_duration)
    }
}

/// Envoy's panic mode: when every breaker is open, the link whose break
/// ends first is tried anyway. `None` while any link may be used.
pub(crate) fn panic_link(breakers: &[Arc<Breaker>], now: Instant) -> Option<usize> {
    let mut soonest: Option<(usize, Instant)> = None;
    for (i, b) in breakers.iter().enumerate() {
        let until = b.blocked_until(now)?;
        if soonest.is_none_or(|(_, u)| until < u) {
            soonest = Some((i, until));
        }
    }
    soonest.map(|(i, _)| i)
}

/// Whether a lost attempt counts against its link's health. Other 4xx
/// answers show a live server; a skipped, cancelled, stale or redirected
/// line says nothing about it.
pub(crate) fn counts_as_failure(outcome: Outcome, status: Option<StatusCode>) -> bool {
    match outcome {
        Outcome::Status => status.is_none_or(crate::Classifier::is_server_failure),
        Outcome::Skipped
        | Outcome::Cancelled
        | Outcome::Ok
        | Outcome::Stale
        | Outcome::Redirect => false,
        _ => true,
    }
}

/// Feeds one attempt's verdict to its link's breaker. Dropped without one
/// (the call was cancelled), a probe frees the way for the next probe.
pub(crate) struct ProbeGuard<'a> {
    breaker: Option<&'a Breaker>,
    probe: bool,
}

impl<'a> ProbeGuard<'a> {
    /// No breaker: settling does nothing.
    pub(crate) fn none() -> Self {
        ProbeGuard {
            breaker: None,
            probe: false,
        }
    }

    pub(crate) fn new(breaker: &'a Breaker, probe: bool) -> Self {
        ProbeGuard {
            breaker: Some(breaker),
            probe,
        }
    }

    /// Hands the verdict over to be recorded later: returns whether this
    /// attempt is a probe, or `None` when there is no breaker.
    pub(crate) fn defer(&mut self) -> Option<bool> {
        self.breaker.take().map(|_| self.probe)
    }

    /// `Some(ok)` records a verdict; `None` (the call was stopped by the
    /// caller's own failure) records nothing. Returns the breaker's new
    /// state if it changed.
    pub(crate) fn settle(&mut self, verdict: Option<bool>, now: Instant) -> Option<BreakerState> {
        let b = self.breaker.take()?;
        match verdict {
            Some(ok) => b.record(now, ok, self.probe),
            None => {
                if self.probe {
                    b.release_probe();
                }
                None
            }
        }
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if let (Some(b), true) = (self.breaker, self.probe) {
            b.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig::new()
            .failure_ratio(0.5)
            .min_calls(10)
            .consecutive_failures(0)
            .break_duration(Duration::from_secs(5))
            .max_break_duration(Duration::from_secs(40))
            .seed(1)
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn opens_at_exactly_the_ratio_threshold() {
        let t0 = Instant::now();
        let b = Breaker::new(&cfg(), t0, 0);
        // 4 failures and 5 successes: 9 calls, under the minimum.
        for i in 0..9 {
            b.record(at(t0, 1), i % 2 == 1, false);
        }
        assert_eq!(b.admit(at(t0, 2)), Admit::Go);
        // The 10th call makes 5 failures of 10: exactly 0.5.
        b.record(at(t0, 3), false, false);
        assert_eq!(b.admit(at(t0, 4)), Admit::Skip(at(t0, 5003)));
    }

    #[test]
    fn below_the_threshold_stays_closed() {
        let t0 = Instant::now();
        let b = Breaker::new(&cfg(), t0, 0);
        // 4 failures in 10: 0.4.
        for i in 0..10 {
            b.record(at(t0, 1), i >= 4, false);
        }
        assert_eq!(b.admit(at(t0, 2)), Admit::Go);
    }

    #[test]
    fn consecutive_failures_open_with_little_traffic() {
        let t0 = Instant::now();
        let b = Breaker::new(&cfg().consecutive_failures(3), t0, 0);
        b.record(at(t0, 0), false, false);
        b.record(at(t0, 0), false, false);
        b.record(at(t0, 0), true, false);
        b.record(at(t0, 0), false, false);
        b.record(at(t0, 0), false, false);
        assert_eq!(b.admit(at(t0, 1)), Admit::Go);
        b.record(at(t0, 2), false, false);
        assert!(matches!(b.admit(at(t0, 3)), Admit::Skip(_)));
    }

    #[test]
    fn failures_leave_the_window() {
        let t0 = Instant::now();
        let b = Breaker::new(&cfg(), t0, 0);
        for _ in 0..9 {
            b.record(at(t0, 0), false, false);
        }
        // Eleven seconds later those nine failures are gone.
        b.record(at(t0, 11_000), false, false);
        assert_eq!(b.admit(at(t0, 11_001)), Admit::Go);
    }

    #[test]
    fn half_open_probe_closes_or_reopens_longer() {
        let t0 = Instant::now();
        let b = Breaker::new(&cfg().consecutive_failures(1), t0, 0);
        b.record(t0, false, false);
        assert_eq!(b.admit(at(t0, 4_999)), Admit::Skip(at(t0, 5_000)));
        // The break is over: one probe, and only one.
        assert_eq!(b.admit(at(t0, 5_000)), Admit::Probe);
        assert!(matches!(b.admit(at(t0, 5_001)), Admit::Skip(_)));
        // The probe fails: open again, for longer (2 × 5 s, jittered ≥ 80 %).
        b.record(at(t0, 5_010), false, true);
        let Admit::Skip(until) = b.admit(at(t0, 5_011)) else {
            panic!("open")
        };
        let second = until - at(t0, 5_010);
        assert!(
            second >= Duration::from_secs(8) && second <= Duration::from_secs(10),
            "{second:?}"
        );
        // The next probe succeeds: closed, counts reset.
        assert_eq!(b.admit(until), Admit::Probe);
        b.record(until, true, true);
        assert_eq!(b.admit(until), Admit::Go);
        let h = b.health(until, 0, "x");
        // One outage, one failed probe within it.
        assert_eq!(
            (h.state(), h.failures(), h.times_opened(), h.failed_probes()),
            (BreakerState::Closed, 0, 1, 1)
        );
    }

    #[test]
    fn breaks_grow_up_to_the_cap() {
        let t0 = Instant::now();
        let b = Breaker::new(&cfg().consecutive_failures(1), t0, 0);
        b.record(t0, false, false);
        let mut now = t0;
        let mut breaks = Vec::new();
        for _ in 0..8 {
            let Admit::Skip(until) = b.admit(now) else {
                panic!("open")
            };
            breaks.push(until - now);
            now = until;
            assert_eq!(b.admit(now), Admit::Probe);
            b.record(now, false, true);
        }
        assert_eq!(breaks[0], Duration::from_secs(5));
        for w in breaks.windows(2) {
            assert!(
                w[1] >= w[0] || w[1] >= Duration::from_secs(32),
                "{breaks:?}"
            );
        }
        assert!(
            breaks.iter().all(|b| *b <= Duration::from_secs(40)),
            "{breaks:?}"
        );
        assert!(
            breaks[7] >= Duration::from_secs(32),
            "capped at 40 s, jittered: {breaks:?}"
        );
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let t0 = Instant::now();
        let b = Breaker::new(&cfg().consecutive_failures(1), t0, 0);
        b.record(t0, false, false);
        assert_eq!(b.admit(at(t0, 6_000)), Admit::Probe);
        b.release_probe();
        assert_eq!(b.admit(at(t0, 6_001)), Admit::Probe);
    }

    #[test]
    fn validation() {
        assert!(BreakerConfig::new().validate().is_ok());
        assert!(BreakerConfig::new().failure_ratio(0.0).validate().is_err());
        assert!(BreakerConfig::new()
            .break_duration(Duration::ZERO)
            .validate()
            .is_err());
        assert!(BreakerConfig::new()
            .break_duration(Duration::from_secs(90))
            .validate()
            .is_err());
    }

    proptest! {
        /// Whatever the sequence, a closed breaker with N failures out of M
        /// calls in one window is open exactly when the rule says so.
        #[test]
        fn ratio_rule_holds(outcomes in proptest::collection::vec(any::<bool>(), 0..200), ratio in 0.05f64..1.0, min in 1u32..50) {
            let t0 = Instant::now();
            let b = Breaker::new(&cfg().failure_ratio(ratio).min_calls(min), t0, 0);
            let (mut ok, mut bad) = (0u64, 0u64);
            for o in outcomes {
                if b.admit(t0) != Admit::Go {
                    break;
                }
                b.record(t0, o, false);
                if o { ok += 1 } else { bad += 1 }
                let calls = ok + bad;
                let should = !o && calls >= min as u64 && bad as f64 >= ratio * calls as f64;
                prop_assert_eq!(b.admit(t0) != Admit::Go, should, "ok {} bad {}", ok, bad);
            }
        }
    }
}

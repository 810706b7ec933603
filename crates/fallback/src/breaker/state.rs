//! A link's breaker as a state machine (closed, open, half-open) over a
//! sliding window of outcomes, with time passed in; the health it reports
//! and the breaker several chains share.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::rand::{random_seed, SplitMix64};
use crate::window::Window;

use super::config::BreakerConfig;

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

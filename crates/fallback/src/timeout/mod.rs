//! Time limits of a call: the per-attempt timeout and the deadline, on
//! shared alarms, with the phase that expired; and the idle timeout of
//! streamed bodies (`idle.rs`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

mod idle;

pub use idle::IdleTimeout;
pub(crate) use idle::{Idle, DEFAULT_IDLE_TIMEOUT};

/// Default per-attempt timeout.
pub(crate) const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default connect timeout.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Time limits: the per-attempt timeout, the connect timeout and the
/// overall deadline.
///
/// | limit | set with | default | covers |
/// | --- | --- | --- | --- |
/// | per attempt | [`ChainBuilder::timeout`], [`Link::timeout`] | 10 s | connect, sending, the response head and the whole body |
/// | connect | [`ChainBuilder::connect_timeout`] | 2 s | the TCP (and TLS) connect; nothing was sent, so any request may fail over |
/// | deadline | [`ChainBuilder::deadline`] | none | the whole call: every attempt and every wait |
/// | idle | [`ChainBuilder::idle_timeout`], [`Link::idle_timeout`] | 60 s | between two reads of a body that streams ([`Chain::send_streaming`], [`Chain::call_into`]): once a streamed answer is committed, the per-attempt timeout no longer applies to it, and this bounds a server that stalls mid-body |
///
/// Each attempt's timeout is cut to the time left before the deadline, and
/// a timeout reports the [`Phase`] that expired.
///
/// Registering a tokio timer costs about 1.4 µs here (measured), more than
/// the rest of the chain's per-call work. So attempts whose deadlines fall
/// in the same short window share one timer: the window is a hundredth of
/// the timeout, rounded down to a power of ten, and at least 1 ms (a 10 s
/// timeout fires within 100 ms of its time, a 1 s one within 10 ms, a
/// 300 ms one within 1 ms). Each window's timer wakes once, so under load
/// a chain wakes at most a thousand times a second for its timers, and
/// about a hundred times for a 1 s timeout.
///
/// [`ChainBuilder::timeout`]: crate::ChainBuilder::timeout
/// [`ChainBuilder::connect_timeout`]: crate::ChainBuilder::connect_timeout
/// [`ChainBuilder::deadline`]: crate::ChainBuilder::deadline
/// [`Link::timeout`]: crate::Link::timeout
/// [`ChainBuilder::idle_timeout`]: crate::ChainBuilder::idle_timeout
/// [`Link::idle_timeout`]: crate::Link::idle_timeout
/// [`Chain::send_streaming`]: crate::Chain::send_streaming
/// [`Chain::call_into`]: crate::Chain::call_into
///
/// The phase of an attempt in which a time limit expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Establishing the connection: nothing was sent.
    Connect,
    /// Sending the request or waiting for the response head.
    Head,
    /// Reading the response body.
    Body,
}

impl Phase {
    /// `connect`, `head` or `body`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Head => "head",
            Phase::Body => "body",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// `t + d`, or a far future instead of overflowing (a caller may well ask
/// for `Duration::MAX`).
pub(crate) fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(30 * 365 * 86_400)))
        .unwrap_or(t)
}

/// When an attempt must end: its own timeout, cut to the call's deadline.
///
/// Returns `None` when the deadline has already passed.
pub(crate) fn attempt_deadline(
    now: Instant,
    attempt_timeout: Duration,
    call_deadline: Option<Instant>,
) -> Option<Instant> {
    let own = later(now, attempt_timeout);
    match call_deadline {
        Some(d) if d <= now => None,
        Some(d) => Some(own.min(d)),
        None => Some(own),
    }
}

/// Shared alarms: attempts whose deadlines round to the same instant wait
/// on one timer.
#[derive(Debug)]
pub(crate) struct Alarms {
    epoch: Instant,
    recent: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    slots: [Option<(u64, Arc<Alarm>)>; 8],
    next: usize,
}

/// Fires once, at its instant, for every attempt waiting on it.
#[derive(Debug)]
pub(crate) struct Alarm {
    at: Instant,
    fired: AtomicBool,
    /// Set when the timer task is gone without firing (its runtime shut
    /// down): waiters then keep time themselves.
    orphaned: AtomicBool,
    notify: Notify,
}

impl Alarms {
    pub(crate) fn new() -> Alarms {
        Alarms {
            epoch: Instant::now(),
            recent: Mutex::default(),
        }
    }

    /// An alarm at `until` or up to a hundredth of the span later.
    pub(crate) fn alarm(&self, begun: Instant, until: Instant) -> Arc<Alarm> {
        let span = micros(until.saturating_duration_since(begun)).max(1);
        let width = resolution_us(span);
        let at_us = micros(until.saturating_duration_since(self.epoch));
        let key = at_us.div_ceil(width).saturating_mul(width);
        let at = later(self.epoch, Duration::from_micros(key));
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        for (k, alarm) in recent.slots.iter().flatten() {
            if *k == key
                && !alarm.fired.load(Ordering::Acquire)
                && !alarm.orphaned.load(Ordering::Acquire)
            {
                return alarm.clone();
            }
        }
        let alarm = Arc::new(Alarm {
            at,
            fired: AtomicBool::new(false),
            orphaned: AtomicBool::new(false),
            notify: Notify::new(),
        });
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                // Made before the task is spawned: a task dropped unpolled
                // (its runtime shut down) still orphans the alarm.
                let timer = Timer(alarm.clone());
                handle.spawn(async move {
                    tokio::time::sleep_until(timer.0.at).await;
                    timer.0.fired.store(true, Ordering::Release);
                    timer.0.notify.notify_waiters();
                });
            }
            // No runtime to run a timer task on: waiters keep their own time.
            Err(_) => alarm.orphaned.store(true, Ordering::Release),
        }
        let i = recent.next;
        recent.slots[i] = Some((key, alarm.clone()));
        recent.next = (i + 1) % recent.slots.len();
        alarm
    }
}

/// An alarm's timer task's hold on it: dropped before the alarm fired (the
/// runtime shut down), it marks the alarm orphaned, and its waiters keep
/// their own time.
struct Timer(Arc<Alarm>);

impl Drop for Timer {
    fn drop(&mut self) {
        if !self.0.fired.load(Ordering::Acquire) {
            self.0.orphaned.store(true, Ordering::Release);
            self.0.notify.notify_waiters();
        }
    }
}

impl Alarm {
    /// Resolves when the alarm fires.
    pub(crate) fn wait(&self) -> Wait<'_> {
        Wait {
            alarm: self,
            notified: self.notify.notified(),
            enabled: false,
            sleep: None,
        }
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }
}

pin_project_lite::pin_project! {
    /// [`Alarm::wait`]'s future, written out by hand: an `async fn` would
    /// hold the (cold) fallback timer inline, and every attempt's state
    /// would carry it.
    pub(crate) struct Wait<'a> {
        alarm: &'a Alarm,
        #[pin]
        notified: tokio::sync::futures::Notified<'a>,
        enabled: bool,
        // Only once the timer task is gone without firing.
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if this.sleep.is_none() {
            if !*this.enabled {
                // Registered before the flags are read: a firing between
                // the two still wakes this waiter.
                this.notified.as_mut().enable();
                *this.enabled = true;
            }
            if this.alarm.fired() {
                return Poll::Ready(());
            }
            if !this.alarm.orphaned.load(Ordering::Acquire) && this.notified.poll(cx).is_pending() {
                return Poll::Pending;
            }
            if this.alarm.fired() {
                return Poll::Ready(());
            }
            *this.sleep = Some(Box::pin(tokio::time::sleep_until(this.alarm.at)));
        }
        match this.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => unreachable!("the fallback timer is set above"),
        }
    }
}

pin_project_lite::pin_project! {
    /// `fut`'s output, or `None` once the alarm fires: `fut` is polled
    /// first. Written out by hand, it holds `fut` once (an `async fn`
    /// with `select!` held it twice: as its argument and in the select).
    pub(crate) struct Within<'a, F> {
        #[pin]
        fut: F,
        #[pin]
        wait: Wait<'a>,
    }
}

/// `fut`'s output, or `None` if the alarm fires first.
pub(crate) fn within<F: Future>(fut: F, alarm: &Alarm) -> Within<'_, F> {
    Within {
        fut,
        wait: alarm.wait(),
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // No yield when tokio's budget is spent (as `select!` would): work
        // that says `Pending` only for want of budget then loses to an
        // alarm that has already fired, which is what `tokio::time::timeout`
        // does too: the deadline has passed. The yield cost 1,400 to 2,200
        // instructions per call (callgrind).
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Some(out));
        }
        this.wait.poll(cx).map(|()| None)
    }
}

/// Whole microseconds, in u64 arithmetic (cheaper than `as_micros`' u128).
fn micros(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

/// A hundredth of the span, rounded down to a power of ten microseconds,
/// at least 1 ms. Never capped above: then at most about a hundred timer
/// tasks are alive per timeout value, however long the timeout.
fn resolution_us(span_us: u64) -> u64 {
    let target = (span_us / 100).max(1_000);
    let mut w: u64 = 1_000;
    while w <= u64::MAX / 10 && w * 10 <= target {
        w *= 10;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_is_a_hundredth_rounded_down() {
        assert_eq!(resolution_us(10_000_000), 100_000);
        assert_eq!(resolution_us(5_000_000), 10_000);
        assert_eq!(resolution_us(1_000_000), 10_000);
        assert_eq!(resolution_us(300_000), 1_000);
        assert_eq!(resolution_us(10_000), 1_000);
        assert_eq!(resolution_us(86_400_000_000), 100_000_000);
        assert!(resolution_us(u64::MAX) <= u64::MAX / 100 + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_in_one_window_share_an_alarm_that_fires_on_time() {
        let alarms = Alarms::new();
        let t0 = Instant::now();
        let a = alarms.alarm(t0, t0 + Duration::from_secs(5));
        // Due 500 µs earlier, in the same 10 ms window: it shares a's alarm.
        let b = alarms.alarm(
            t0 + Duration::from_micros(300),
            t0 + Duration::from_micros(4_999_500),
        );
        assert!(Arc::ptr_eq(&a, &b), "same 10 ms window");
        let c = alarms.alarm(t0, t0 + Duration::from_secs(6));
        assert!(!Arc::ptr_eq(&a, &c));
        a.wait().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        b.wait().await;
        c.wait().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn within_favours_the_work_and_otherwise_ends_at_the_alarm() {
        let alarms = Alarms::new();
        let t0 = Instant::now();
        let a = alarms.alarm(t0, t0 + Duration::from_secs(1));
        // Done before the alarm: its output.
        let quick = tokio::time::sleep(Duration::from_millis(10));
        assert_eq!(
            within(
                async {
                    quick.await;
                    7
                },
                &a
            )
            .await,
            Some(7)
        );
        // Not done by the alarm: nothing, on time.
        assert_eq!(within(std::future::pending::<u8>(), &a).await, None);
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        // The alarm has fired, but work that is ready still wins.
        assert_eq!(within(async { 8 }, &a).await, Some(8));
        assert_eq!(within(std::future::pending::<u8>(), &a).await, None);
    }

    /// A runtime with a timer, for the tests that start outside one.
    fn timer_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn without_a_runtime_an_alarm_keeps_its_own_time() {
        let alarms = Alarms::new();
        let t0 = Instant::now();
        let a = alarms.alarm(t0, t0 + Duration::from_millis(20));
        let rt = timer_runtime();
        rt.block_on(a.wait());
        assert!(t0.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn an_alarm_whose_runtime_ends_before_its_timer_starts_is_orphaned() {
        let alarms = Alarms::new();
        let t0 = Instant::now();
        let rt = timer_runtime();
        // The timer task is spawned, never polled, and dropped with rt.
        let a = rt.block_on(async { alarms.alarm(t0, t0 + Duration::from_millis(20)) });
        drop(rt);
        assert!(a.orphaned.load(Ordering::Acquire));
        // A waiter on another runtime keeps time itself.
        let other = timer_runtime();
        other.block_on(a.wait());
        assert!(t0.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let now = Instant::now();
        assert!(attempt_deadline(now, Duration::MAX, None).unwrap() > now);
        let alarms = Alarms::new();
        let a = alarms.alarm(now, later(now, Duration::MAX));
        assert!(a.at > now);
    }

    #[test]
    fn attempt_timeout_is_cut_to_the_deadline() {
        let now = Instant::now();
        let d = Duration::from_secs;
        assert_eq!(attempt_deadline(now, d(10), None), Some(now + d(10)));
        assert_eq!(
            attempt_deadline(now, d(10), Some(now + d(3))),
            Some(now + d(3))
        );
        assert_eq!(
            attempt_deadline(now, d(1), Some(now + d(3))),
            Some(now + d(1))
        );
        assert_eq!(attempt_deadline(now, d(1), Some(now)), None);
    }
}

//! Hedging: when the current link is slow, the next one starts too and
//! the first whole answer wins. The delay (fixed, or a percentile of the
//! link's recent latencies) is here; the race is in `chain/hedged.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::BuildError;

const WINDOW: usize = 1000;
const MIN_SAMPLES: usize = 20;
const RECOMPUTE_EVERY: u64 = 32;

/// Hedged requests: when the current link has not answered within the
/// hedge delay, the next link is started too, and the first acceptable
/// answer wins.
///
/// - **Answered** means the head *and* the whole body, read and valid (for
///   a typed call, decoded). A hedged call never mixes bytes of two
///   attempts.
/// - **Losers** are cancelled (their connections dropped) and reported
///   `cancelled`. The winner's body is never cancelled: it has already
///   been read whole when it wins.
/// - **At most** [`max_in_flight`](Hedge::max_in_flight) attempts
///   run at once (default 2).
/// - **Only idempotent requests hedge**: a link is started as a hedge only
///   when it and every attempt in flight may be re-sent (see
///   [the re-send rule](crate#when-is-a-request-re-sent)). A POST is never hedged unless marked idempotent.
/// - **Budget.** Every hedge draws from the [retry budget](crate::RetryBudget),
///   so a broad slowdown cannot double the load. A spent budget stops new
///   hedges; it never cancels one in flight.
/// - **Delay.** Fixed, or adaptive: a percentile (default p95) of the
///   link's recent latencies, never below a floor.
///
/// A failed attempt still fails over at once, as without hedging; hedged
/// calls do not retry on the same link (the hedge is the retry). Streaming
/// calls ([`Chain::call_into`](crate::Chain::call_into)) hedge too: each
/// attempt in flight buffers its body, and only the winner's bytes reach
/// the sink.
///
/// | setting | default |
/// | --- | --- |
/// | delay | [`Hedge::fixed`]: as given; [`Hedge::adaptive`]: p95 of the last 1000 successes |
/// | [`floor`](Hedge::floor) (adaptive) | 5 ms |
/// | [`percentile`](Hedge::percentile) (adaptive) | 0.95 |
/// | [`max_in_flight`](Hedge::max_in_flight) | 2 |
///
/// ```
/// use std::time::Duration;
/// use fallback_chain::{Chain, Hedge, Link, Outcome};
/// use fallback_chain_testserver::{Behavior, Reply, Server};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let slow = Server::start(Reply::new(200).body("slow").delay(Duration::from_secs(3)));
/// let fast = Server::start(Behavior::ok("fast"));
/// let chain = Chain::builder()
///     .hedge(Hedge::fixed(Duration::from_millis(50)))
///     .link(Link::get(slow.url("/")))
///     .link(Link::get(fast.url("/")))
///     .build()?;
/// let resp = chain.call().await?;
/// assert_eq!(resp.body().as_ref(), b"fast");
/// let outcomes: Vec<_> = resp.report().attempts().iter().map(|a| a.outcome()).collect();
/// assert_eq!(outcomes, [Outcome::Ok, Outcome::Cancelled]);
/// # Ok(()) }
/// ```
///
/// Hedging settings.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Hedge {
    fixed: Option<Duration>,
    percentile: f64,
    floor: Duration,
    max_in_flight: usize,
}

impl Hedge {
    /// Hedge after a fixed delay.
    pub fn fixed(delay: Duration) -> Hedge {
        Hedge {
            fixed: Some(delay),
            percentile: 0.95,
            floor: delay,
            max_in_flight: 2,
        }
    }

    /// Hedge after a percentile of the link's recent latencies (p95 by
    /// default), never below the floor (5 ms by default). Until a link has
    /// 20 successes on record, its delay is the floor.
    pub fn adaptive() -> Hedge {
        Hedge {
            fixed: None,
            percentile: 0.95,
            floor: Duration::from_millis(5),
            max_in_flight: 2,
        }
    }

    /// The percentile, in (0, 1], for an adaptive delay.
    pub fn percentile(mut self, p: f64) -> Hedge {
        self.percentile = p;
        self
    }

    /// The shortest adaptive delay.
    pub fn floor(mut self, floor: Duration) -> Hedge {
        self.floor = floor;
        self
    }

    /// The most attempts in flight at once (at least 2).
    pub fn max_in_flight(mut self, n: usize) -> Hedge {
        self.max_in_flight = n;
        self
    }

    pub(crate) fn in_flight_limit(&self) -> usize {
        self.max_in_flight
    }

    pub(crate) fn target_percentile(&self) -> f64 {
        self.percentile
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |reason: String| BuildError::Setting {
            setting: "hedge",
            reason,
        };
        if !(self.percentile > 0.0 && self.percentile <= 1.0) {
            return Err(bad(format!(
                "percentile {} must be in (0, 1]",
                self.percentile
            )));
        }
        if self.max_in_flight < 2 {
            return Err(bad(format!(
                "max in flight {} must be at least 2 for a hedge to run",
                self.max_in_flight
            )));
        }
        Ok(())
    }

    /// The delay before hedging past a link with these latencies.
    pub(crate) fn delay(&self, latencies: &Latencies) -> Duration {
        match self.fixed {
            Some(d) => d,
            None => latencies.percentile(self.percentile).max(self.floor),
        }
    }
}

/// A link's recent successful latencies, and a cached percentile.
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    ring: Mutex<Ring>,
    cached_nanos: AtomicU64,
}

#[derive(Debug, Default)]
struct Ring {
    samples: Vec<u64>,
    next: usize,
    seen: u64,
}

impl Latencies {
    pub(crate) fn record(&self, d: Duration, percentile: f64) {
        let nanos = d.as_nanos().min(u64::MAX as u128) as u64;
        let mut r = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if r.samples.len() < WINDOW {
            r.samples.push(nanos);
        } else {
            let i = r.next;
            r.samples[i] = nanos;
        }
        r.next = (r.next + 1) % WINDOW;
        r.seen += 1;
        // Sorting on every call would cost more than the request: refresh
        // the cached percentile now and then.
        if r.samples.len() >= MIN_SAMPLES
            && (r.seen % RECOMPUTE_EVERY == 0 || r.samples.len() == MIN_SAMPLES)
        {
            let p = percentile_of(&r.samples, percentile);
            self.cached_nanos.store(p, Ordering::Relaxed);
        }
    }

    /// The cached percentile; zero until there are enough samples.
    fn percentile(&self, _p: f64) -> Duration {
        Duration::from_nanos(self.cached_nanos.load(Ordering::Relaxed))
    }
}

/// The nearest-rank percentile.
fn percentile_of(samples: &[u64], p: f64) -> u64 {
    let mut v = samples.to_vec();
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    let (_, nth, _) = v.select_nth_unstable(rank - 1);
    *nth
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fixed_and_adaptive_delays() {
        let l = Latencies::default();
        assert_eq!(
            Hedge::fixed(Duration::from_millis(30)).delay(&l),
            Duration::from_millis(30)
        );
        let h = Hedge::adaptive().floor(Duration::from_millis(2));
        assert_eq!(
            h.delay(&l),
            Duration::from_millis(2),
            "the floor until there are samples"
        );
        // 96 fast answers (1 ms) and 4 slow ones (250 ms): p95 is fast.
        for i in 0..100 {
            let ms = if i % 25 == 0 { 250 } else { 1 };
            l.record(Duration::from_millis(ms), 0.95);
        }
        let d = h.delay(&l);
        assert_eq!(
            d,
            Duration::from_millis(2),
            "p95 = 1 ms, raised to the floor"
        );
        let l99 = Latencies::default();
        for i in 0..128 {
            let ms = if i % 10 == 0 { 250 } else { 1 };
            l99.record(Duration::from_millis(ms), 0.95);
        }
        assert_eq!(Hedge::adaptive().delay(&l99), Duration::from_millis(250));
    }

    #[test]
    fn validation() {
        assert!(Hedge::adaptive().validate().is_ok());
        assert!(Hedge::adaptive().percentile(0.0).validate().is_err());
        assert!(Hedge::adaptive().percentile(1.5).validate().is_err());
        assert!(Hedge::fixed(Duration::from_millis(1))
            .max_in_flight(1)
            .validate()
            .is_err());
    }

    proptest! {
        #[test]
        fn nearest_rank_percentile(mut v in proptest::collection::vec(0u64..1_000_000, 1..500), p in 0.01f64..1.0) {
            let got = percentile_of(&v, p);
            v.sort_unstable();
            let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
            prop_assert_eq!(got, v[rank - 1]);
            // At least p of the samples are at or below it.
            let below = v.iter().filter(|&&x| x <= got).count();
            prop_assert!(below as f64 >= p * v.len() as f64 - 1e-9);
        }
    }
}

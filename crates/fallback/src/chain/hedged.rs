//! The hedged scheduler: the next link starts when the current one is
//! slow, and the first whole, valid answer wins; losers are cancelled.

use std::future::Future;
use std::pin::Pin;

use tokio::time::Instant;
use tracing::Instrument;

use crate::breaker::ProbeGuard;
use crate::error::{Error, ErrorKind};
use crate::hedge::Hedge;
use crate::report::{ErrorText, Outcome};
use crate::response::Response;
use crate::timeout::{attempt_deadline, later};

use super::attempt::{line, mark_insecure, stop_kind, Ended, Hop, Lost, Won};
use super::call::Call;
use super::consume::Consume;
use super::links::Links;
use super::{attempt_span, Chain};
impl Chain {
    /// Hedged: the next link starts when the current one is slow, and the
    /// first whole, valid answer wins. Losers are cancelled.
    pub(super) async fn run_hedged<C: Consume>(
        &self,
        proto: C,
        hedge: &Hedge,
        eps: &Links<'_>,
    ) -> Result<Response<C::Output>, Error> {
        let inner = &*self.inner;
        let mut call = Call::start(self, Instant::now(), eps);
        inner.settings.budget.deposit();
        let mut race = Race {
            chain: self,
            eps,
            proto,
            next: 0,
            flights: Vec::with_capacity(hedge.in_flight_limit()),
        };
        let n = eps.len();
        let mut may_hedge = true;
        let mut last_launch = call.started;

        loop {
            // Fail over at once when nothing is in flight, or when a
            // failure left room and the next request is safe to overlap.
            let overlap_ok = race.flights.iter().all(|f| eps[f.index].idempotent)
                && eps.get(race.next).is_some_and(|e| e.idempotent);
            if race.flights.is_empty()
                || (race.flights.len() < hedge.in_flight_limit()
                    && overlap_ok
                    && race.flights.iter().all(|f| f.failed_over))
            {
                match race.launch(&mut call, false) {
                    Launch::Started => {
                        last_launch = Instant::now();
                        continue;
                    }
                    Launch::Deadline if race.flights.is_empty() => {
                        return Err(call.fail(self, ErrorKind::Deadline))
                    }
                    Launch::NoneLeft if race.flights.is_empty() => {
                        call.cooperate().await;
                        return Err(call.fail(self, ErrorKind::Exhausted));
                    }
                    // Nothing more can start: wait for what is in flight.
                    _ => race.next = n,
                }
            }
            let newest = race.flights.last().map_or(0, |f| f.index);
            let can_hedge = may_hedge
                && race.next < n
                && race.flights.len() < hedge.in_flight_limit()
                && overlap_ok;
            let hedge_at = later(last_launch, hedge.delay(&inner.latencies[newest]));
            let done = tokio::select! {
                biased;
                d = first_done(&mut race.flights) => Some(d),
                _ = tokio::time::sleep_until(hedge_at), if can_hedge => None,
            };
            let Some((i, (guard, ended, hops))) = done else {
                // The hedge delay passed: the next link starts too, if the
                // budget allows; a spent budget stops new hedges, and those
                // in flight run on.
                match race.hedge(&mut call) {
                    Some(true) => last_launch = Instant::now(),
                    Some(false) => race.next = n,
                    None => may_hedge = false,
                }
                continue;
            };
            match race.finish(&mut call, i, guard, ended, hops, hedge) {
                Finished::Racing => {}
                Finished::Won(won) => return Ok(call.finish(won)),
                Finished::Stop(kind, index, lost) => {
                    return Err(call.stop(self, kind, &eps[index], &lost))
                }
            }
        }
    }
}

/// How a flight that ended leaves the race.
enum Finished<O> {
    /// Lost; the others race on.
    Racing,
    Won(Won<O>),
    /// Lost, and the call stops: why, at which link, with what failure.
    Stop(ErrorKind, usize, Box<Lost>),
}

/// The attempts of one hedged call: those in flight, and where the next
/// one starts.
struct Race<'a, C: Consume> {
    chain: &'a Chain,
    eps: &'a Links<'a>,
    /// Forks a consumer for each attempt.
    proto: C,
    next: usize,
    flights: Vec<Flight<'a, C::Output>>,
}

impl<'a, C: Consume + 'a> Race<'a, C> {
    /// A flight that ended: settled with its breaker and recorded; a win
    /// ends the call (the others cancelled), and so does a loss that must
    /// stop it.
    fn finish(
        &mut self,
        call: &mut Call,
        i: usize,
        mut guard: ProbeGuard<'a>,
        ended: Ended<C::Output>,
        hops: Vec<Hop>,
        hedge: &Hedge,
    ) -> Finished<C::Output> {
        let chain = self.chain;
        let flight = self.flights.remove(i);
        let ep = &self.eps[flight.index];
        let commits = self.proto.commits_at_head();
        let ended = chain.settle_or_defer::<C>(
            &mut guard,
            ep,
            flight.index,
            ended,
            commits,
            Instant::now(),
        );
        call.note_hops(chain, hops, flight.index, ep, 1);
        let elapsed = flight.begun.elapsed();
        let attempt = line(flight.index, ep, 1, Outcome::Ok, elapsed);
        match ended {
            Ended::Won(won) => {
                chain.inner.latencies[flight.index].record(elapsed, hedge.target_percentile());
                call.record_win(chain, attempt.with_status(won.status));
                self.cancel_all(call);
                Finished::Won(won)
            }
            Ended::Lost(mut lost) => {
                mark_insecure(ep, &mut lost);
                let stop = stop_kind(ep, &lost, call.deadline);
                call.lost(chain, attempt, &mut lost);
                if let Some(kind) = stop {
                    self.cancel_all(call);
                    return Finished::Stop(kind, flight.index, lost);
                }
                // What is still in flight may now fail over at once.
                for f in &mut self.flights {
                    f.failed_over = true;
                }
                Finished::Racing
            }
        }
    }

    /// A hedge: the next link, drawn from the retry budget. `None` when
    /// the budget is spent; else whether a link started.
    fn hedge(&mut self, call: &mut Call) -> Option<bool> {
        if !self.chain.inner.settings.budget.try_withdraw() {
            #[cfg(feature = "metrics")]
            crate::metrics::budget_denied();
            return None;
        }
        Some(matches!(self.launch(call, true), Launch::Started))
    }

    /// Starts the next admissible link, recording the skipped ones.
    fn launch(&mut self, call: &mut Call, hedged: bool) -> Launch {
        let chain = self.chain;
        let inner = &*chain.inner;
        while self.next < self.eps.len() {
            let index = self.next;
            let ep = &self.eps[index];
            let begun = Instant::now();
            let guard = match chain.admit(index, ep, begun, call.forced) {
                Ok(g) => g,
                Err(until) => {
                    self.next += 1;
                    call.skipped(chain, index, ep, 1, until, begun);
                    continue;
                }
            };
            let Some(until) = attempt_deadline(
                begun,
                ep.timeout.unwrap_or(inner.settings.timeout),
                call.deadline,
            ) else {
                return Launch::Deadline;
            };
            let Some(mut consumer) = self.proto.fork() else {
                return Launch::NoneLeft;
            };
            self.next += 1;
            if hedged {
                tracing::debug!(link = %ep.name, "hedging");
            }
            let span = attempt_span(ep, 1);
            let fut = async move {
                let mut hops = Vec::new();
                let ended = chain
                    .attempt(ep, &mut consumer, begun, until, &mut hops)
                    .await;
                (guard, ended, hops)
            }
            .instrument(span);
            self.flights.push(Flight {
                index,
                begun,
                failed_over: false,
                fut: Box::pin(fut),
            });
            return Launch::Started;
        }
        Launch::NoneLeft
    }

    /// Cancels every attempt in flight and reports each as `cancelled`.
    fn cancel_all(&mut self, call: &mut Call) {
        for f in self.flights.drain(..) {
            let why = ErrorText::fixed("lost the hedge race; cancelled");
            let ep = &self.eps[f.index];
            let cancelled = line(f.index, ep, 1, Outcome::Cancelled, f.begun.elapsed());
            call.note(self.chain, cancelled.with_error(why));
            // Dropping the future drops its connection and frees any probe.
            drop(f);
        }
    }
}

type FlightFuture<'a, O> =
    Pin<Box<dyn Future<Output = (ProbeGuard<'a>, Ended<O>, Vec<Hop>)> + Send + 'a>>;

/// One attempt in flight in a hedged call.
struct Flight<'a, O> {
    index: usize,
    begun: Instant,
    /// Set once another attempt has failed: this one no longer holds back
    /// the failover to the next link.
    failed_over: bool,
    fut: FlightFuture<'a, O>,
}

enum Launch {
    Started,
    NoneLeft,
    Deadline,
}

/// The first attempt in flight to finish, and its position.
fn first_done<'f, 'a, O>(
    flights: &'f mut [Flight<'a, O>],
) -> impl Future<Output = (usize, (ProbeGuard<'a>, Ended<O>, Vec<Hop>))> + 'f {
    std::future::poll_fn(move |cx| {
        for (i, f) in flights.iter_mut().enumerate() {
            if let std::task::Poll::Ready(out) = f.fut.as_mut().poll(cx) {
                return std::task::Poll::Ready((i, out));
            }
        }
        std::task::Poll::Pending
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::testing::{ok, Script, Step, NOW};
    use crate::{Chain, Hedge, Link, Outcome, RetryBudget};
    use tokio::time::Instant;

    fn lines(r: &crate::Report) -> Vec<(usize, Outcome)> {
        r.attempts()
            .iter()
            .map(|a| (a.link(), a.outcome()))
            .collect()
    }

    fn hedged(s: &Arc<Script>, links: Vec<Link>) -> crate::ChainBuilder {
        Chain::builder()
            .transport(s.clone())
            .breaker(None)
            .hedge(Hedge::fixed(Duration::from_millis(100)))
            .links(links)
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_link_starts_after_the_delay_and_the_loser_is_cancelled() {
        let s = Arc::new(Script::new(&[
            ("slow", &[Step::Answer(200, Duration::from_secs(2))]),
            ("fast", &[Step::Answer(200, Duration::from_millis(30))]),
        ]));
        let c = hedged(
            &s,
            vec![Link::get("http://slow/"), Link::get("http://fast/")],
        );
        let t = Instant::now();
        let resp = c.build().unwrap().call().await.unwrap();
        assert_eq!(t.elapsed(), Duration::from_millis(130));
        assert_eq!(
            lines(resp.report()),
            [(1, Outcome::Ok), (0, Outcome::Cancelled)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_fails_over_at_once_without_waiting_for_the_delay() {
        let s = Arc::new(Script::new(&[("down", &[Step::Refuse]), ("up", &[ok()])]));
        let c = hedged(&s, vec![Link::get("http://down/"), Link::get("http://up/")]);
        let t = Instant::now();
        let resp = c.build().unwrap().call().await.unwrap();
        assert_eq!(t.elapsed(), NOW);
        assert_eq!(
            lines(resp.report()),
            [(0, Outcome::Connect), (1, Outcome::Ok)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_never_overlaps_and_a_spent_budget_stops_hedging() {
        let s = Arc::new(Script::new(&[
            ("slow", &[Step::Answer(200, Duration::from_secs(1))]),
            ("fast", &[ok()]),
        ]));
        let c = hedged(
            &s,
            vec![Link::post("http://slow/"), Link::post("http://fast/")],
        );
        let resp = c.build().unwrap().call().await.unwrap();
        assert_eq!(resp.winner(), 0, "a POST waits for its answer");
        assert_eq!(s.seen(), ["slow"]);

        let c = hedged(
            &s,
            vec![Link::get("http://slow/"), Link::get("http://fast/")],
        )
        .retry_budget(RetryBudget::new().ratio(0.0).min_per_sec(0.0));
        let resp = c.build().unwrap().call().await.unwrap();
        assert_eq!(resp.winner(), 0, "no budget, no hedge");
        assert_eq!(lines(resp.report()), [(0, Outcome::Ok)]);
    }
}

//! The sequential scheduler: links one after another, with retries on the
//! same link.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{Error, ErrorKind};
use crate::link::Endpoint;
use crate::report::{ErrorText, Outcome};
use crate::response::Response;
use crate::retry;
use crate::retry::backoff::ExponentialBackoff;
use crate::retry::{worth_retrying, Next};
use crate::timeout::attempt_deadline;

use super::attempt::{line, mark_insecure, stop_kind, Ended, Lost};
use super::call::Call;
use super::consume::Consume;
use super::links::Links;
use super::{attempt_span, Chain};

impl Chain {
    /// Links one after another: the original package's behaviour, with
    /// breakers, retries and time limits.
    pub(super) async fn run_sequential<C: Consume>(
        &self,
        consumer: &mut C,
        eps: &Links<'_>,
    ) -> Result<Response<C::Output>, Error> {
        let inner = &*self.inner;
        let mut call = Call::start(self, Instant::now(), eps);
        let call_no = self.count_call();
        // Clock reads cost: the first attempt starts when the call does.
        let mut next_begin = Some(call.started);

        'links: for (index, ep) in eps.iter().enumerate() {
            let tries = 1 + ep.retries.unwrap_or(inner.settings.retries);
            let timeout = ep.timeout.unwrap_or(inner.settings.timeout);
            let mut backoff = None;
            let mut try_number = 1;
            loop {
                let begun = next_begin.take().unwrap_or_else(Instant::now);
                let mut probe = match self.admit(index, ep, begun, call.forced) {
                    Ok(probe) => probe,
                    Err(until) => {
                        call.skipped(self, index, ep, try_number, until, begun);
                        continue 'links;
                    }
                };
                let Some(until) = attempt_deadline(begun, timeout, call.deadline) else {
                    return Err(call.fail(self, ErrorKind::Deadline));
                };
                let span = attempt_span(ep, try_number);
                let mut hops = Vec::new();
                let ended = self
                    .attempt(ep, consumer, begun, until, &mut hops)
                    .instrument(span.clone())
                    .await;
                span.in_scope(|| call.note_hops(self, hops, index, ep, try_number));
                let ended_at = Instant::now();
                let commits = consumer.commits_at_head();
                let ended =
                    self.settle_or_defer::<C>(&mut probe, ep, index, ended, commits, ended_at);
                let attempt = line(index, ep, try_number, Outcome::Ok, ended_at - begun);
                let mut lost = match ended {
                    Ended::Won(won) => {
                        let attempt = attempt.with_status(won.status);
                        return Ok(span.in_scope(|| call.won(self, attempt, won)));
                    }
                    Ended::Lost(lost) => lost,
                };

                let stop = stop_kind(ep, &lost, call.deadline);
                let plan = (stop.is_none()
                    && try_number < tries
                    && worth_retrying(lost.outcome, lost.status))
                .then(|| {
                    // Boxed: made only for a retry, it would otherwise sit
                    // in every call's future.
                    let b = backoff.get_or_insert_with(|| {
                        Box::new(inner.settings.backoff.start(call_no << 16 ^ index as u64))
                    });
                    self.next_try(&lost, b, call.deadline)
                });
                if let Some(Next::FailOver(why)) = plan {
                    lost.error = format!("{}; {}", lost.error.as_str(), why.describe()).into();
                }
                mark_insecure(ep, &mut lost);
                span.in_scope(|| call.lost(self, attempt, &mut lost));
                if let Some(kind) = stop {
                    return Err(call.stop(self, kind, ep, &lost));
                }
                let Some(Next::RetryAfter(wait)) = plan else {
                    break;
                };
                try_number += 1;
                if !self.withdraw_retry(&mut call, index, ep, try_number) {
                    break;
                }
                tokio::time::sleep(wait).await;
            }
        }
        call.cooperate().await;
        Err(call.fail(self, ErrorKind::Exhausted))
    }

    /// Deposits the call in the retry budget and numbers it (the number
    /// seeds its backoff); only chains that can retry pay for this.
    fn count_call(&self) -> u64 {
        let inner = &*self.inner;
        if !inner.retries_possible {
            return 0;
        }
        inner.settings.budget.deposit();
        inner.calls.fetch_add(1, Ordering::Relaxed)
    }

    /// When the next try on the same link goes: the server's `Retry-After`
    /// (capped) or the next backoff delay, within the deadline; or why
    /// the call moves on instead.
    fn next_try(
        &self,
        lost: &Lost,
        backoff: &mut ExponentialBackoff,
        deadline: Option<Instant>,
    ) -> Next {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        retry::next(
            lost.retry_after,
            backoff.next().unwrap_or_default(),
            self.inner.settings.retry_after_cap,
            remaining,
        )
    }

    /// Draws a retry from the budget; when it is spent, the report says
    /// so and the call moves on to the next link.
    fn withdraw_retry(
        &self,
        call: &mut Call,
        index: usize,
        ep: &Endpoint,
        try_number: u32,
    ) -> bool {
        if self.inner.settings.budget.try_withdraw() {
            return true;
        }
        #[cfg(feature = "metrics")]
        crate::metrics::budget_denied();
        let why = ErrorText::fixed("retry budget spent; moved on");
        let skipped = line(index, ep, try_number, Outcome::Skipped, Duration::ZERO);
        call.note(self, skipped.with_error(why));
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::testing::{ok, Script, Step, NOW};
    use crate::{BreakerConfig, Chain, ErrorKind, ExponentialBackoff, Link, Outcome, RetryBudget};

    fn lines(r: &crate::Report) -> Vec<(usize, u32, Outcome)> {
        r.attempts()
            .iter()
            .map(|a| (a.link(), a.try_number(), a.outcome()))
            .collect()
    }

    fn chain(s: &Arc<Script>, hosts: &[&str]) -> crate::ChainBuilder {
        Chain::builder()
            .transport(s.clone())
            .breaker(None)
            .links(hosts.iter().map(|h| Link::get(format!("http://{h}/"))))
    }

    #[tokio::test(start_paused = true)]
    async fn links_in_order_until_one_succeeds() {
        let s = Arc::new(Script::new(&[
            ("a", &[Step::Refuse]),
            ("b", &[Step::Answer(503, NOW)]),
            ("c", &[ok()]),
            ("d", &[ok()]),
        ]));
        let resp = chain(&s, &["a", "b", "c", "d"])
            .build()
            .unwrap()
            .call()
            .await
            .unwrap();
        assert_eq!(resp.winner(), 2);
        assert_eq!(
            lines(resp.report()),
            [
                (0, 1, Outcome::Connect),
                (1, 1, Outcome::Status),
                (2, 1, Outcome::Ok)
            ]
        );
        assert_eq!(s.seen(), ["a", "b", "c"], "d is never asked");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stay_on_the_link_then_an_empty_budget_moves_on() {
        let s = Arc::new(Script::new(&[
            ("a", &[Step::Answer(503, NOW)]),
            ("b", &[ok()]),
        ]));
        let c = chain(&s, &["a", "b"])
            .retries(2)
            .backoff(
                ExponentialBackoff::new()
                    .jitter(false)
                    .base(Duration::from_millis(10)),
            )
            .retry_budget(RetryBudget::unlimited());
        let resp = c.build().unwrap().call().await.unwrap();
        assert_eq!(
            lines(resp.report()),
            [
                (0, 1, Outcome::Status),
                (0, 2, Outcome::Status),
                (0, 3, Outcome::Status),
                (1, 1, Outcome::Ok)
            ]
        );
        let c = chain(&s, &["a", "b"])
            .retries(2)
            .retry_budget(RetryBudget::new().ratio(0.0).min_per_sec(0.0));
        let resp = c.build().unwrap().call().await.unwrap();
        assert_eq!(
            lines(resp.report()),
            [
                (0, 1, Outcome::Status),
                (0, 2, Outcome::Skipped),
                (1, 1, Outcome::Ok)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_status_and_the_deadline_end_the_call() {
        let s = Arc::new(Script::new(&[
            ("a", &[Step::Answer(404, NOW)]),
            ("slow", &[Step::Answer(200, Duration::from_secs(5))]),
            ("b", &[ok()]),
        ]));
        let c = chain(&s, &["a", "b"]).classifier(crate::Classifier::server_errors());
        let e = c.build().unwrap().call().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FinalStatus);
        assert_eq!(s.seen(), ["a"]);

        let c = chain(&s, &["slow", "b"]).deadline(Duration::from_secs(1));
        let e = c.build().unwrap().call().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Deadline);
        assert_eq!(lines(e.report()), [(0, 1, Outcome::Timeout)]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_is_skipped_and_panic_mode_tries_one_anyway() {
        let s = Arc::new(Script::new(&[
            ("a", &[Step::Refuse]),
            ("b", &[Step::Refuse]),
        ]));
        let c = Chain::builder()
            .transport(s.clone())
            .breaker(BreakerConfig::new().consecutive_failures(1))
            .all_open(crate::AllOpen::try_soonest())
            .link(Link::get("http://a/"))
            .link(Link::get("http://b/"))
            .build()
            .unwrap();
        // Both fail once: both breakers open.
        let first = c.call().await.unwrap_err();
        assert_eq!(
            lines(first.report()),
            [(0, 1, Outcome::Connect), (1, 1, Outcome::Connect)]
        );
        // Every breaker open: panic mode sends the call to the link whose
        // break ends first, and skips the other.
        let second = c.call().await.unwrap_err();
        let outcomes: Vec<_> = lines(second.report()).iter().map(|l| l.2).collect();
        assert_eq!(
            outcomes.iter().filter(|o| **o == Outcome::Connect).count(),
            1,
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes.iter().filter(|o| **o == Outcome::Skipped).count(),
            1,
            "{outcomes:?}"
        );
    }
}

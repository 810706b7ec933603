//! The sequential scheduler: links one after another, with retries on the
//! same link.

use super::*;

impl Chain {
    /// Links one after another: the original package's behaviour, with
    /// breakers, retries and time limits.
    pub(super) async fn run_sequential<C: Consume>(
        &self,
        consumer: &mut C,
        eps: &[Endpoint],
    ) -> Result<Response<C::Output>, Error> {
        let inner = &*self.inner;
        let mut call = Call::start(self, Instant::now());
        // Only chains that can retry pay for the budget's bookkeeping.
        let call_no = if inner.retries_possible {
            inner.budget.deposit();
            inner.calls.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        // Clock reads cost: the first attempt starts when the call does.
        let mut next_begin = Some(call.started);

        'links: for (index, ep) in eps.iter().enumerate() {
            let tries = 1 + ep.retries.unwrap_or(inner.retries);
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
                let Some(until) =
                    attempt_deadline(begun, ep.timeout.unwrap_or(inner.timeout), call.deadline)
                else {
                    return Err(call.fail(self, ErrorKind::Deadline));
                };
                let span = attempt_span(ep, try_number);
                let mut hops = Vec::new();
                let ended = self
                    .attempt(ep, consumer, begun, until, &mut hops)
                    .instrument(span.clone())
                    .await;
                for hop in hops {
                    span.in_scope(|| call.note(self, hop.attempt(index, ep, try_number)));
                }
                let ended_at = Instant::now();
                self.settle(&mut probe, ep, &ended, ended_at);
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
                    let b = backoff
                        .get_or_insert_with(|| inner.backoff.start(call_no << 16 ^ index as u64));
                    let remaining = call
                        .deadline
                        .map(|d| d.saturating_duration_since(Instant::now()));
                    retry::next(
                        lost.retry_after,
                        b.next().unwrap_or_default(),
                        inner.retry_after_cap,
                        remaining,
                    )
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
                if !inner.budget.try_withdraw() {
                    #[cfg(feature = "metrics")]
                    crate::metrics::budget_denied();
                    let why = ErrorText::fixed("retry budget spent; moved on");
                    let skipped = line(index, ep, try_number, Outcome::Skipped, Duration::ZERO);
                    call.note(self, skipped.with_error(why));
                    break;
                }
                tokio::time::sleep(wait).await;
            }
        }
        Err(call.fail(self, ErrorKind::Exhausted))
    }
}

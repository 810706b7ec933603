//! The sequential scheduler: links one after another, with retries.

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
        let started = Instant::now();
        let deadline = inner.deadline.map(|d| later(started, d));
        let mut report = Report {
            attempts: Vec::with_capacity(1),
            ..Report::default()
        };
        let mut last: Option<LastResponse> = None;
        let fail = |kind, report, last| self.failure(kind, report, last, started);
        // Only chains that can retry pay for the budget's bookkeeping.
        let call_no = if inner.retries_possible {
            inner.budget.deposit();
            inner.calls.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };

        let forced = self.panic_link(started);
        // Clock reads cost: the first attempt starts when the call does.
        let mut next_begin = Some(started);

        'links: for (index, ep) in eps.iter().enumerate() {
            let tries = 1 + ep.retries.unwrap_or(inner.retries);
            let mut backoff = None;
            let mut try_number = 1;
            loop {
                let begun = next_begin.take().unwrap_or_else(Instant::now);
                let mut probe = match self.admit(index, ep, begun, forced) {
                    Ok(probe) => probe,
                    Err(until) => {
                        let why = skip_reason(until, begun);
                        let attempt = unanswered(
                            index,
                            ep,
                            try_number,
                            Outcome::Skipped,
                            Duration::ZERO,
                            why,
                        );
                        self.note(&mut report, attempt);
                        continue 'links;
                    }
                };
                let Some(until) =
                    attempt_deadline(begun, ep.timeout.unwrap_or(inner.timeout), deadline)
                else {
                    return Err(fail(ErrorKind::Deadline, report, last));
                };
                let span = attempt_span(ep, try_number);
                let mut hops = Vec::new();
                let ended = self
                    .attempt(ep, consumer, begun, until, &mut hops)
                    .instrument(span.clone())
                    .await;
                for hop in hops {
                    let attempt = hop.attempt(index, ep, try_number);
                    span.in_scope(|| self.note(&mut report, attempt));
                }
                let ended_at = Instant::now();
                let elapsed = ended_at - begun;
                self.settle(&mut probe, ep, &ended, ended_at);
                let record = move |outcome, phase, status, error| Attempt {
                    link: index,
                    name: ep.name.clone(),
                    url: ep.url.clone(),
                    try_number,
                    outcome,
                    phase,
                    status,
                    elapsed,
                    error,
                    insecure: ep.insecure,
                };
                let mut lost = match ended {
                    Ended::Won {
                        status,
                        version,
                        headers,
                        output,
                    } => {
                        let attempt = record(Outcome::Ok, None, Some(status), None);
                        span.in_scope(|| self.observe(&attempt));
                        report.attempts.push(attempt);
                        report.winner = Some(index);
                        report.elapsed = ended_at - started;
                        return Ok(Response {
                            status,
                            version,
                            headers,
                            body: output,
                            winner: index,
                            report,
                        });
                    }
                    Ended::Lost(lost) => lost,
                };

                let stop = stop_kind(ep, &lost, deadline);
                let plan = (stop.is_none()
                    && try_number < tries
                    && worth_retrying(lost.outcome, lost.status))
                .then(|| {
                    let b = backoff
                        .get_or_insert_with(|| inner.backoff.start(call_no << 16 ^ index as u64));
                    let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
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

                let attempt = record(
                    lost.outcome,
                    lost.phase,
                    lost.status,
                    Some(lost.error.clone()),
                );
                span.in_scope(|| self.observe(&attempt));
                report.attempts.push(attempt);
                if let Some(r) = lost.response.take() {
                    last = Some(r);
                }
                if let Some(kind) = stop {
                    let detail = stop_detail(kind, ep, &lost, &report);
                    let e = fail(kind, report, last);
                    return Err(match detail {
                        Some(d) => e.with_detail(d),
                        None => e,
                    });
                }
                let Some(Next::RetryAfter(wait)) = plan else {
                    break;
                };
                try_number += 1;
                if !inner.budget.try_withdraw() {
                    #[cfg(feature = "metrics")]
                    crate::metrics::budget_denied();
                    let why = ErrorText::fixed("retry budget spent; moved on");
                    let attempt =
                        unanswered(index, ep, try_number, Outcome::Skipped, Duration::ZERO, why);
                    self.note(&mut report, attempt);
                    break;
                }
                tokio::time::sleep(wait).await;
            }
        }
        Err(fail(ErrorKind::Exhausted, report, last))
    }
}

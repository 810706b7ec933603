//! The hedged scheduler: the next link starts when the current one is
//! slow, and the first whole, valid answer wins.

use super::*;

impl Chain {
    /// Hedged: the next link starts when the current one is slow, and the
    /// first whole, valid answer wins. Losers are cancelled.
    pub(super) async fn run_hedged<C: Consume>(
        &self,
        proto: C,
        hedge: &Hedge,
        eps: &[Endpoint],
    ) -> Result<Response<C::Output>, Error> {
        let inner = &*self.inner;
        let started = Instant::now();
        let deadline = inner.deadline.map(|d| later(started, d));
        let mut report = Report::default();
        let mut last: Option<LastResponse> = None;
        let fail = |kind, report, last| self.failure(kind, report, last, started);
        inner.budget.deposit();
        let forced = self.panic_link(started);
        let n = eps.len();
        let mut next = 0usize;
        let mut flights: Vec<Flight<'_, C::Output>> = Vec::with_capacity(hedge.in_flight_limit());
        let mut may_hedge = true;
        let mut last_launch = started;

        loop {
            // Fail over at once when nothing is in flight, or when a
            // failure left room and the next request is safe to overlap.
            let overlap_ok = flights.iter().all(|f| eps[f.index].idempotent)
                && eps.get(next).is_some_and(|e| e.idempotent);
            if flights.is_empty()
                || (flights.len() < hedge.in_flight_limit()
                    && overlap_ok
                    && flights.iter().all(|f| f.failed_over))
            {
                match self.launch(
                    &mut next,
                    &mut flights,
                    &mut report,
                    &proto,
                    forced,
                    deadline,
                    false,
                    eps,
                ) {
                    Launch::Started => {
                        last_launch = Instant::now();
                        continue;
                    }
                    Launch::Deadline if flights.is_empty() => {
                        return Err(fail(ErrorKind::Deadline, report, last))
                    }
                    Launch::NoneLeft if flights.is_empty() => {
                        return Err(fail(ErrorKind::Exhausted, report, last))
                    }
                    // Nothing more can start: wait for what is in flight.
                    _ => next = n,
                }
            }
            let newest = flights.last().map_or(0, |f| f.index);
            let can_hedge =
                may_hedge && next < n && flights.len() < hedge.in_flight_limit() && overlap_ok;
            let hedge_at = later(last_launch, hedge.delay(&inner.latencies[newest]));
            let done = tokio::select! {
                biased;
                d = first_done(&mut flights) => Some(d),
                _ = tokio::time::sleep_until(hedge_at), if can_hedge => None,
            };
            let Some((i, (mut guard, ended, hops))) = done else {
                if inner.budget.try_withdraw() {
                    match self.launch(
                        &mut next,
                        &mut flights,
                        &mut report,
                        &proto,
                        forced,
                        deadline,
                        true,
                        eps,
                    ) {
                        Launch::Started => last_launch = Instant::now(),
                        _ => next = n,
                    }
                } else {
                    #[cfg(feature = "metrics")]
                    crate::metrics::budget_denied();
                    // A spent budget stops new hedges; those in flight run on.
                    may_hedge = false;
                }
                continue;
            };
            let flight = flights.remove(i);
            let ep = &eps[flight.index];
            self.settle(&mut guard, ep, &ended, Instant::now());
            for hop in hops {
                self.note(&mut report, hop.attempt(flight.index, ep, 1));
            }
            let elapsed = flight.begun.elapsed();
            let mut attempt = Attempt {
                link: flight.index,
                name: ep.name.clone(),
                url: ep.url.clone(),
                try_number: 1,
                outcome: Outcome::Ok,
                phase: None,
                status: None,
                elapsed,
                error: None,
                insecure: ep.insecure,
            };
            match ended {
                Ended::Won {
                    status,
                    version,
                    headers,
                    output,
                } => {
                    inner.latencies[flight.index].record(elapsed, hedge.target_percentile());
                    attempt.status = Some(status);
                    self.observe(&attempt);
                    report.attempts.push(attempt);
                    self.cancel_all(&mut flights, &mut report, eps);
                    report.winner = Some(flight.index);
                    report.elapsed = started.elapsed();
                    return Ok(Response {
                        status,
                        version,
                        headers,
                        body: output,
                        winner: flight.index,
                        report,
                    });
                }
                Ended::Lost(mut lost) => {
                    mark_insecure(ep, &mut lost);
                    let stop = stop_kind(ep, &lost, deadline);
                    attempt.outcome = lost.outcome;
                    attempt.phase = lost.phase;
                    attempt.status = lost.status;
                    attempt.error = Some(lost.error.clone());
                    self.observe(&attempt);
                    report.attempts.push(attempt);
                    if let Some(r) = lost.response.take() {
                        last = Some(r);
                    }
                    if let Some(kind) = stop {
                        self.cancel_all(&mut flights, &mut report, eps);
                        let detail = stop_detail(kind, ep, &lost, &report);
                        let e = fail(kind, report, last);
                        return Err(match detail {
                            Some(d) => e.with_detail(d),
                            None => e,
                        });
                    }
                    // What is still in flight may now fail over at once.
                    for f in &mut flights {
                        f.failed_over = true;
                    }
                }
            }
        }
    }

    /// Starts the next admissible link from `next`, recording skipped ones.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch<'a, C: Consume + 'a>(
        &'a self,
        next: &mut usize,
        flights: &mut Vec<Flight<'a, C::Output>>,
        report: &mut Report,
        proto: &C,
        forced: Option<usize>,
        deadline: Option<Instant>,
        hedged: bool,
        eps: &'a [Endpoint],
    ) -> Launch {
        let inner = &*self.inner;
        while *next < eps.len() {
            let index = *next;
            let ep = &eps[index];
            let begun = Instant::now();
            let guard = match self.admit(index, ep, begun, forced) {
                Ok(g) => g,
                Err(until) => {
                    *next += 1;
                    let why = skip_reason(until, begun);
                    self.note(
                        report,
                        unanswered(index, ep, 1, Outcome::Skipped, Duration::ZERO, why),
                    );
                    continue;
                }
            };
            let Some(until) =
                attempt_deadline(begun, ep.timeout.unwrap_or(inner.timeout), deadline)
            else {
                return Launch::Deadline;
            };
            let Some(mut consumer) = proto.fork() else {
                return Launch::NoneLeft;
            };
            *next += 1;
            if hedged {
                tracing::debug!(link = %ep.name, "hedging");
            }
            let span = attempt_span(ep, 1);
            let fut = async move {
                let mut hops = Vec::new();
                let ended = self
                    .attempt(ep, &mut consumer, begun, until, &mut hops)
                    .await;
                (guard, ended, hops)
            }
            .instrument(span);
            flights.push(Flight {
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
    pub(super) fn cancel_all<O>(
        &self,
        flights: &mut Vec<Flight<'_, O>>,
        report: &mut Report,
        eps: &[Endpoint],
    ) {
        for f in flights.drain(..) {
            let why = ErrorText::fixed("lost the hedge race; cancelled");
            let elapsed = f.begun.elapsed();
            self.note(
                report,
                unanswered(f.index, &eps[f.index], 1, Outcome::Cancelled, elapsed, why),
            );
            // Dropping the future drops its connection and frees any probe.
            drop(f);
        }
    }
}

pub(super) type FlightFuture<'a, O> =
    Pin<Box<dyn Future<Output = (ProbeGuard<'a>, Ended<O>, Vec<Hop>)> + Send + 'a>>;

/// One attempt in flight in a hedged call.
pub(super) struct Flight<'a, O> {
    pub(super) index: usize,
    pub(super) begun: Instant,
    /// Set once another attempt has failed: this one no longer holds back
    /// the failover to the next link.
    pub(super) failed_over: bool,
    pub(super) fut: FlightFuture<'a, O>,
}

pub(super) enum Launch {
    Started,
    NoneLeft,
    Deadline,
}

/// The first attempt in flight to finish, and its position.
pub(super) fn first_done<'f, 'a, O>(
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

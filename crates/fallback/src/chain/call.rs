//! One call's state, carried from attempt to attempt by both schedulers:
//! when it started, its deadline, the link panic mode forces, the report
//! so far and the last answer.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, ErrorKind, LastResponse};
use crate::link::Endpoint;
use crate::report::{Attempt, ErrorText, Outcome, Report};
use crate::response::Response;
use crate::timeout::later;

use super::attempt::{line, stop_detail, Hop, Lost, Won};
use super::links::Links;
use super::Chain;

pub(super) struct Call {
    pub(super) started: Instant,
    pub(super) deadline: Option<Instant>,
    /// The link sent to whatever its breaker says, when every link is open.
    pub(super) forced: Option<usize>,
    /// Every link was open and this call is no link's probe: it fails fast.
    all_open: bool,
    report: Report,
    /// Boxed: only a failed attempt leaves one, and the call's state
    /// lives in its future.
    last: Option<Box<LastResponse>>,
}

impl Call {
    pub(super) fn start(chain: &Chain, started: Instant, eps: &Links<'_>) -> Call {
        let (forced, all_open) = match chain.all_open_link(started) {
            Ok(forced) => (forced, false),
            Err(()) => (None, true),
        };
        Call {
            started,
            deadline: match eps.first().and_then(|e| e.deadline) {
                // A gRPC call's own, which takes the chain's into account.
                Some(grpc) => Some(grpc),
                None => chain.inner.settings.deadline.map(|d| later(started, d)),
            },
            forced,
            all_open,
            report: Report {
                // A line per link is the common worst case: a skipped or
                // failed primary, then the winner.
                attempts: Vec::with_capacity(chain.inner.endpoints.len().clamp(1, 4)),
                ..Report::default()
            },
            last: None,
        }
    }

    /// Observes a line and adds it to the report.
    pub(super) fn note(&mut self, chain: &Chain, attempt: Attempt) {
        chain.observe(&attempt);
        self.report.attempts.push(attempt);
    }

    /// The requests that went out within a try before its last one.
    pub(super) fn note_hops(
        &mut self,
        chain: &Chain,
        hops: Vec<Hop>,
        index: usize,
        ep: &Endpoint,
        try_number: u32,
    ) {
        for hop in hops {
            self.note(chain, hop.attempt(index, ep, try_number));
        }
    }

    /// A link that could not be tried: its breaker is open.
    pub(super) fn skipped(
        &mut self,
        chain: &Chain,
        index: usize,
        ep: &Endpoint,
        try_number: u32,
        until: Instant,
        now: Instant,
    ) {
        let why = if until > now {
            ErrorText::breaker_open(until - now)
        } else {
            ErrorText::fixed("breaker half-open: a probe is in flight")
        };
        self.note(
            chain,
            line(index, ep, try_number, Outcome::Skipped, Duration::ZERO).with_error(why),
        );
    }

    /// A lost attempt's line; its answer becomes the last response.
    pub(super) fn lost(&mut self, chain: &Chain, attempt: Attempt, lost: &mut Lost) {
        let attempt = Attempt {
            outcome: lost.outcome,
            phase: lost.phase,
            status: lost.status,
            error: Some(lost.error.clone()),
            grpc: lost.grpc.take(),
            ..attempt
        };
        self.note(chain, attempt);
        if let Some(r) = lost.response.take() {
            self.last = Some(Box::new(r));
        }
    }

    /// The winning line, and the call's response.
    pub(super) fn won<O>(mut self, chain: &Chain, attempt: Attempt, won: Won<O>) -> Response<O> {
        self.record_win(chain, attempt);
        self.finish(won)
    }

    /// The winning line (other lines, such as cancelled hedges, may follow).
    pub(super) fn record_win(&mut self, chain: &Chain, attempt: Attempt) {
        self.report.winner = Some(attempt.link);
        self.note(chain, attempt);
    }

    /// The call's response, once its winner is recorded.
    pub(super) fn finish<O>(mut self, won: Won<O>) -> Response<O> {
        self.report.elapsed = self.started.elapsed();
        Response {
            status: won.status,
            version: won.version,
            headers: won.headers,
            body: won.output,
            winner: self.report.winner.unwrap_or_default(),
            report: self.report,
        }
    }

    /// A call that failed fast touched no socket or timer, so tokio's
    /// cooperative budget never made it yield: a caller retrying in a loop
    /// would starve every other task, the probes' among them. This yields
    /// when the task's budget is spent.
    pub(super) async fn cooperate(&self) {
        if self.all_open {
            tokio::task::coop::consume_budget().await;
        }
    }

    /// Ends the call with `kind`.
    pub(super) fn fail(mut self, chain: &Chain, kind: ErrorKind) -> Error {
        self.report.elapsed = self.started.elapsed();
        let skipped_all = || {
            self.report
                .attempts
                .iter()
                .all(|a| a.outcome == Outcome::Skipped)
        };
        if self.all_open && kind == ErrorKind::Exhausted && skipped_all() {
            let every = chain.inner.settings.all_open.probe_interval;
            return Error::new(ErrorKind::AllOpen, self.report, self.last.map(|l| *l)).with_detail(
                format!("each link is probed at most once every {every:?} until one answers"),
            );
        }
        let e = Error::new(kind, self.report, self.last.map(|l| *l));
        match chain.inner.settings.deadline {
            Some(d) if kind == ErrorKind::Deadline => e.with_deadline(d),
            _ => e,
        }
    }

    /// Ends the call with `kind`, because of `lost` at `ep`.
    pub(super) fn stop(self, chain: &Chain, kind: ErrorKind, ep: &Endpoint, lost: &Lost) -> Error {
        let detail = stop_detail(kind, ep, lost, &self.report);
        let e = self.fail(chain, kind);
        match detail {
            Some(d) => e.with_detail(d),
            None => e,
        }
    }
}

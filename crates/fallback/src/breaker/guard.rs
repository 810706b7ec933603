//! An attempt's verdict for its link's breaker: what counts as a failure,
//! and the guard that records it (or frees a probe when the call is
//! dropped).

use http::StatusCode;
use tokio::time::Instant;

use crate::report::Outcome;

use super::state::{Breaker, BreakerState};

/// Whether a lost attempt counts against its link's health. Other 4xx
/// answers show a live server; a skipped, cancelled, stale or redirected
/// line says nothing about it.
pub(crate) fn counts_as_failure(outcome: Outcome, status: Option<StatusCode>) -> bool {
    match outcome {
        Outcome::Status => status.is_none_or(crate::Classifier::is_server_failure),
        Outcome::Grpc => true,
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

//! The chain's side of the breakers: admission, probes, panic mode.

use super::*;

impl Chain {
    /// Envoy's panic mode: when every link's breaker is open, the link whose
    /// break ends first is tried anyway.
    pub(super) fn panic_link(&self, now: Instant) -> Option<usize> {
        let breakers = self.inner.breakers.as_ref()?;
        let mut soonest: Option<(usize, Instant)> = None;
        for (i, b) in breakers.iter().enumerate() {
            let until = b.blocked_until(now)?;
            if soonest.is_none_or(|(_, u)| until < u) {
                soonest = Some((i, until));
            }
        }
        soonest.map(|(i, _)| i)
    }

    /// Asks link `index`'s breaker; `Err` is when the break ends.
    pub(super) fn admit(
        &self,
        index: usize,
        ep: &Endpoint,
        now: Instant,
        forced: Option<usize>,
    ) -> Result<ProbeGuard<'_>, Instant> {
        let Some(breakers) = &self.inner.breakers else {
            return Ok(ProbeGuard::none());
        };
        let b = &breakers[index];
        if forced == Some(index) {
            b.force_probe();
            return Ok(ProbeGuard::new(b, true));
        }
        match b.admit(now) {
            Admit::Go => Ok(ProbeGuard::new(b, false)),
            Admit::Probe if self.inner.sticky && ep.idempotent && self.spawn_probe(index) => {
                Err(now)
            }
            Admit::Probe => Ok(ProbeGuard::new(b, true)),
            Admit::Skip(until) => Err(until),
        }
    }

    /// Probes a link in the background, off every caller's path. Returns
    /// false when there is no tokio runtime to run it on.
    pub(super) fn spawn_probe(&self, index: usize) -> bool {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let chain = self.clone();
        handle.spawn(async move {
            let inner = &*chain.inner;
            let (Some(breakers), Some(ep)) = (&inner.breakers, inner.endpoints.get(index)) else {
                return;
            };
            let begun = Instant::now();
            let mut guard = ProbeGuard::new(&breakers[index], true);
            let until = later(begun, ep.timeout.unwrap_or(inner.timeout));
            let ended = chain
                .attempt(ep, &mut Buffered, begun, until, &mut Vec::new())
                .await;
            tracing::debug!(link = %ep.name, ok = matches!(ended, Ended::Won { .. }), "background probe");
            guard.settle(&ended, Instant::now());
        });
        true
    }
}

/// Feeds one attempt's result to its link's breaker. Dropped without a
/// result (the call was cancelled), a probe frees the way for the next one.
pub(super) struct ProbeGuard<'a> {
    pub(super) breaker: Option<&'a Breaker>,
    pub(super) probe: bool,
}

impl<'a> ProbeGuard<'a> {
    pub(super) fn none() -> Self {
        ProbeGuard {
            breaker: None,
            probe: false,
        }
    }

    pub(super) fn new(breaker: &'a Breaker, probe: bool) -> Self {
        ProbeGuard {
            breaker: Some(breaker),
            probe,
        }
    }

    pub(super) fn settle<O>(&mut self, ended: &Ended<O>, now: Instant) {
        let Some(b) = self.breaker.take() else { return };
        let verdict = match ended {
            Ended::Won { .. } => Some(true),
            Ended::Lost(l) if l.stop.is_some() => None,
            Ended::Lost(l) => Some(!counts_as_failure(l.outcome, l.status)),
        };
        match verdict {
            Some(ok) => b.record(now, ok, self.probe),
            None if self.probe => b.release_probe(),
            None => {}
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

/// Whether a lost attempt counts against its link's health. Other 4xx
/// answers show a live server.
pub(super) fn counts_as_failure(outcome: Outcome, status: Option<StatusCode>) -> bool {
    match outcome {
        Outcome::Status => status.is_none_or(|s| {
            s.is_server_error()
                || s == StatusCode::REQUEST_TIMEOUT
                || s == StatusCode::TOO_MANY_REQUESTS
        }),
        Outcome::Skipped
        | Outcome::Cancelled
        | Outcome::Ok
        | Outcome::Stale
        | Outcome::Redirect => false,
        _ => true,
    }
}

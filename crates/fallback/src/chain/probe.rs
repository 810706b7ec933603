//! The chain's side of the breakers: admission, probes, panic mode.

use super::*;

impl Chain {
    /// Envoy's panic mode: when every link's breaker is open, the link whose
    /// break ends first is tried anyway.
    pub(super) fn panic_link(&self, now: Instant) -> Option<usize> {
        breaker::panic_link(self.inner.breakers.as_ref()?, now)
    }

    /// Settles an attempt with its link's breaker, and reports the
    /// breaker's new state, if it changed, to the metrics.
    pub(super) fn settle<O>(
        &self,
        guard: &mut ProbeGuard<'_>,
        ep: &Endpoint,
        ended: &Ended<O>,
        now: Instant,
    ) {
        let changed = guard.settle(ended.breaker_verdict(), now);
        #[cfg(feature = "metrics")]
        if let Some(state) = changed {
            crate::metrics::breaker_state(&ep.name, state);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (changed, ep);
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
            Admit::Probe => {
                #[cfg(feature = "metrics")]
                crate::metrics::breaker_state(&ep.name, crate::breaker::BreakerState::HalfOpen);
                Ok(ProbeGuard::new(b, true))
            }
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
            tracing::debug!(link = %ep.name, ok = matches!(ended, Ended::Won(_)), "background probe");
            chain.settle(&mut guard, ep, &ended, Instant::now());
        });
        true
    }
}

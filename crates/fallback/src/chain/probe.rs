//! The chain's side of the breakers: admission, probes, panic mode.

use tokio::time::Instant;

use crate::breaker;
use crate::breaker::{Admit, ProbeGuard};
use crate::link::{Endpoint, Probe};
use crate::report::{ErrorText, Outcome};
use crate::safety::Delivery;
use crate::timeout::later;

use super::attempt::{Ended, Lost, Won};
use super::consume::{Buffered, Consume};
use super::deferred::Pending;
use super::Chain;

impl Chain {
    /// When every link's breaker is open: the link this call must try
    /// anyway (`Ok(Some)`), or `Err(())` when it is to fail fast. `Ok(None)`
    /// while any link may be used.
    pub(super) fn all_open_link(&self, now: Instant) -> Result<Option<usize>, ()> {
        let Some(breakers) = self.inner.breakers.as_ref() else {
            return Ok(None);
        };
        let Some(soonest) = breaker::panic_link(breakers, now) else {
            return Ok(None);
        };
        let all_open = &self.inner.settings.all_open;
        if all_open.try_soonest {
            return Ok(Some(soonest));
        }
        // One probe per link per interval, in the links' order; the rest of
        // the calls fail fast.
        breakers
            .iter()
            .position(|b| b.claim_all_open_probe(now, all_open.probe_interval))
            .map(Some)
            .ok_or(())
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

    /// Settles an attempt as [`settle`](Self::settle) does, except a win
    /// of a consumer that commits at the head: its verdict waits for the
    /// end of the body, which now carries it.
    pub(super) fn settle_or_defer<C: Consume>(
        &self,
        guard: &mut ProbeGuard<'_>,
        ep: &Endpoint,
        index: usize,
        ended: Ended<C::Output>,
        commits: bool,
        now: Instant,
    ) -> Ended<C::Output> {
        match ended {
            Ended::Won(won) if commits => {
                let probe = guard.defer();
                let pending = Pending {
                    chain: self.clone(),
                    index,
                    probe: probe.unwrap_or(false),
                    armed: probe.is_some(),
                };
                Ended::Won(Won {
                    output: C::attach(won.output, pending),
                    ..won
                })
            }
            ended => {
                self.settle(guard, ep, &ended, now);
                ended
            }
        }
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
            // The background probe sends the link's own request (or its
            // probe URL), not this call's: that one must be safe to send.
            Admit::Probe
                if self.inner.settings.sticky
                    && self.probes_safely(index)
                    && self.spawn_probe(index) =>
            {
                Err(now)
            }
            Admit::Probe => {
                #[cfg(feature = "metrics")]
                crate::metrics::breaker_state(&ep.name, crate::breaker::BreakerState::HalfOpen);
                #[cfg(not(feature = "metrics"))]
                let _ = ep;
                Ok(ProbeGuard::new(b, true))
            }
            Admit::Skip(until) => Err(until),
        }
    }

    /// Whether link `index` can be probed without a caller: it has a probe
    /// URL, or its own request is idempotent.
    fn probes_safely(&self, index: usize) -> bool {
        let inner = &*self.inner;
        matches!(inner.probes.get(index), Some(Some(_)))
            || inner.endpoints.get(index).is_some_and(|e| e.idempotent)
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
            let until = later(begun, ep.timeout.unwrap_or(inner.settings.timeout));
            let ended = match inner.probes.get(index) {
                Some(Some(Probe::Get(uri))) => {
                    let probe = ep.probe(uri);
                    chain
                        .attempt(&probe, &mut Buffered, begun, until, &mut Vec::new())
                        .await
                }
                Some(Some(Probe::GrpcHealth(service))) => {
                    let probe = ep.grpc_health_probe(service);
                    let ended = chain
                        .attempt(&probe, &mut Buffered, begun, until, &mut Vec::new())
                        .await;
                    match ended {
                        Ended::Won(won) if !crate::grpc::health_serving(&won.output) => {
                            Ended::Lost(Box::new(Lost::new(
                                Outcome::Grpc,
                                Delivery::Processed,
                                ErrorText::fixed("the health check did not answer SERVING"),
                            )))
                        }
                        ended => ended,
                    }
                }
                _ => {
                    chain
                        .attempt(ep, &mut Buffered, begun, until, &mut Vec::new())
                        .await
                }
            };
            tracing::debug!(link = %ep.name, ok = matches!(ended, Ended::Won(_)), "background probe");
            chain.settle(&mut guard, ep, &ended, Instant::now());
        });
        true
    }
}

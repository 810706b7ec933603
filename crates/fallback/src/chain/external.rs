//! Attempts the chain does not send itself (a proxy's protocol upgrade,
//! which is a connection and not a request the chain can replay): admitted
//! by the link's breaker, judged by the chain's classifier, and recorded in
//! the breaker like the chain's own attempts.

use http::{HeaderMap, Method, StatusCode};
use tokio::time::Instant;

use crate::breaker::{self, ProbeGuard};
use crate::classify::{Answer, Verdict};
use crate::report::Outcome;

use super::Chain;

/// One attempt at a link made by the caller, not by the chain: see
/// [`Chain::external_attempt`].
///
/// Settle it with [`answered`](Self::answered) or
/// [`failed`](Self::failed); dropped unsettled (the caller gave up), it
/// records nothing.
#[must_use = "an attempt records its outcome only when settled"]
pub struct ExternalAttempt<'a> {
    chain: &'a Chain,
    index: usize,
    guard: ProbeGuard<'a>,
}

impl std::fmt::Debug for ExternalAttempt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalAttempt")
            .field("link", &self.index)
            .finish_non_exhaustive()
    }
}

impl Chain {
    /// Asks link `index`'s breaker for an attempt that the caller sends by
    /// its own means; `None` when the link is to be skipped (its breaker is
    /// open) or there is no such link.
    ///
    /// The attempt obeys what the chain's own attempts obey: the breaker
    /// admits it (as a probe when its break is over), the chain's
    /// classifier judges its answer, and its outcome counts in the
    /// breaker.
    ///
    /// ```
    /// use fallback_chain::{Chain, Classifier, Link, Verdict};
    /// use http::{HeaderMap, Method, StatusCode};
    ///
    /// let chain = Chain::builder()
    ///     .classifier(Classifier::server_errors())
    ///     .link(Link::get("http://127.0.0.1:9/"))
    ///     .build()?;
    /// let attempt = chain.external_attempt(0).expect("a closed breaker admits it");
    /// let status = StatusCode::SERVICE_UNAVAILABLE;
    /// let verdict = attempt.classify(&Method::GET, status, &HeaderMap::new());
    /// assert_eq!(verdict, Verdict::Fallback);
    /// attempt.answered(status); // a failure, for the breaker
    /// assert_eq!(chain.health()[0].failures(), 1);
    /// # Ok::<(), fallback_chain::BuildError>(())
    /// ```
    pub fn external_attempt(&self, index: usize) -> Option<ExternalAttempt<'_>> {
        let ep = self.inner.endpoints.get(index)?;
        let guard = self.admit(index, ep, Instant::now(), None).ok()?;
        Some(ExternalAttempt {
            chain: self,
            index,
            guard,
        })
    }
}

impl ExternalAttempt<'_> {
    /// The link's index in the chain.
    pub fn link(&self) -> usize {
        self.index
    }

    /// What the chain's classifier makes of this link's answer.
    pub fn classify(&self, method: &Method, status: StatusCode, headers: &HeaderMap) -> Verdict {
        let name = &self.chain.inner.endpoints[self.index].name;
        let grpc = crate::grpc::is_grpc(headers);
        let answer = Answer::of(status, headers, method, self.index, name, grpc);
        self.chain.inner.settings.classifier.classify(&answer)
    }

    /// The link answered with `status`: a failure for its breaker when the
    /// status is one (5xx, 408, 429), as for the chain's own attempts; a
    /// success otherwise.
    pub fn answered(self, status: StatusCode) {
        let ok = !breaker::counts_as_failure(Outcome::Status, Some(status));
        self.settle(ok);
    }

    /// The link gave no answer (refused, reset, timed out): a failure.
    pub fn failed(self) {
        self.settle(false);
    }

    fn settle(mut self, ok: bool) {
        let changed = self.guard.settle(Some(ok), Instant::now());
        #[cfg(feature = "metrics")]
        if let Some(state) = changed {
            let name = &self.chain.inner.endpoints[self.index].name;
            crate::metrics::breaker_state(name, state);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = changed;
    }
}

//! [`Policy`]: the chain settings that configuration layers set, each
//! optional, and the one rule that lays a layer over another.

use std::time::Duration;

use crate::classify::Classifier;
use crate::grpc::Code;
use crate::hedge::Hedge;

use super::ChainBuilder;

/// The chain settings a layer of configuration may set (a config file, a
/// command line, a proxy's route), each left unset unless given.
///
/// Layers combine with one rule, [`overlaid`](Self::overlaid): the upper
/// layer's settings win where it sets them. The result goes to a builder
/// with [`ChainBuilder::policy`], which changes only what the policy sets;
/// everything unset keeps the builder's value (its documented default, or
/// what was set before).
///
/// ```
/// use std::time::Duration;
/// use fallback_chain::{Chain, Classifier, Link, Policy};
///
/// let file = Policy::new().timeout(Duration::from_secs(2)).retries(1);
/// let command_line = Policy::new().retries(0);
/// let route = Policy::new().fail_on(Classifier::server_errors());
/// let policy = file.overlaid(&command_line).overlaid(&route);
/// assert_eq!(policy.timeout, Some(Duration::from_secs(2)));
/// assert_eq!(policy.retries, Some(0));
///
/// let chain = Chain::builder()
///     .policy(&policy)
///     .link(Link::get("http://127.0.0.1:9/"))
///     .build()?;
/// assert_eq!(chain.links()[0].timeout(), None); // the chain-wide 2 s applies
/// # Ok::<(), fallback_chain::BuildError>(())
/// ```
///
/// The fields are public to read a layer; new settings may be added in a
/// minor release, so build one with [`Policy::new`] and the setters.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
#[must_use]
pub struct Policy {
    /// [`ChainBuilder::timeout`].
    pub timeout: Option<Duration>,
    /// [`ChainBuilder::deadline`].
    pub deadline: Option<Duration>,
    /// [`ChainBuilder::idle_timeout`].
    pub idle_timeout: Option<Duration>,
    /// [`ChainBuilder::retries`].
    pub retries: Option<u32>,
    /// [`ChainBuilder::hedge`], as [`Hedge::fixed`] of this delay.
    pub hedge: Option<Duration>,
    /// [`ChainBuilder::classifier`].
    pub fail_on: Option<Classifier>,
    /// [`Classifier::grpc`] of the classifier: the gRPC codes that fall
    /// back.
    pub grpc_fail_on: Option<Vec<Code>>,
    /// `Some(true)`: [`ChainBuilder::idempotent`], every link without a
    /// mark of its own may be re-sent when its outcome is unknown.
    /// `Some(false)` (a layer that takes an earlier `true` back) and `None`
    /// leave that to each link's method and headers.
    pub idempotent: Option<bool>,
}

impl Policy {
    /// A policy that sets nothing.
    pub fn new() -> Policy {
        Policy::default()
    }

    /// [`ChainBuilder::timeout`]: the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// [`ChainBuilder::deadline`]: the bound on a whole call.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// [`ChainBuilder::idle_timeout`]: the bound between two reads of a
    /// streamed body.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// [`ChainBuilder::retries`]: extra tries on each link.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// [`ChainBuilder::hedge`] with [`Hedge::fixed`]: the delay before the
    /// next link starts.
    pub fn hedge(mut self, delay: Duration) -> Self {
        self.hedge = Some(delay);
        self
    }

    /// [`ChainBuilder::classifier`]: which answers fall back.
    pub fn fail_on(mut self, classifier: Classifier) -> Self {
        self.fail_on = Some(classifier);
        self
    }

    /// [`Classifier::grpc`]: the gRPC codes that fall back (default
    /// `UNAVAILABLE`).
    pub fn grpc_fail_on(mut self, codes: impl IntoIterator<Item = Code>) -> Self {
        self.grpc_fail_on = Some(codes.into_iter().collect());
        self
    }

    /// Whether every link may be re-sent when its outcome is unknown; see
    /// the field [`idempotent`](Self#structfield.idempotent).
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// `self`, with `over`'s settings wherever `over` sets them: the one
    /// rule by which a route wins over a command line, and a command line
    /// over a config file.
    pub fn overlaid(&self, over: &Policy) -> Policy {
        Policy {
            timeout: over.timeout.or(self.timeout),
            deadline: over.deadline.or(self.deadline),
            idle_timeout: over.idle_timeout.or(self.idle_timeout),
            retries: over.retries.or(self.retries),
            hedge: over.hedge.or(self.hedge),
            fail_on: over.fail_on.clone().or_else(|| self.fail_on.clone()),
            grpc_fail_on: over
                .grpc_fail_on
                .clone()
                .or_else(|| self.grpc_fail_on.clone()),
            idempotent: over.idempotent.or(self.idempotent),
        }
    }
}

impl ChainBuilder {
    /// Applies every setting `policy` sets, through the setter of the same
    /// name; what it leaves unset keeps this builder's value. See
    /// [`Policy`].
    pub fn policy(mut self, policy: &Policy) -> Self {
        if let Some(t) = policy.timeout {
            self = self.timeout(t);
        }
        if let Some(d) = policy.deadline {
            self = self.deadline(d);
        }
        if let Some(d) = policy.idle_timeout {
            self = self.idle_timeout(d);
        }
        if let Some(r) = policy.retries {
            self = self.retries(r);
        }
        if let Some(h) = policy.hedge {
            self = self.hedge(Hedge::fixed(h));
        }
        if let Some(c) = &policy.fail_on {
            self = self.classifier(c.clone());
        }
        if let Some(codes) = &policy.grpc_fail_on {
            let c = self.settings.classifier.clone().grpc(codes.iter().copied());
            self = self.classifier(c);
        }
        if policy.idempotent == Some(true) {
            self = self.idempotent(true);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upper_layer_wins_where_it_sets_a_value() {
        let low = Policy::new()
            .timeout(Duration::from_secs(1))
            .retries(2)
            .idempotent(true);
        let high = Policy::new()
            .retries(0)
            .idempotent(false)
            .fail_on(Classifier::server_errors());
        let both = low.overlaid(&high);
        assert_eq!(both.timeout, Some(Duration::from_secs(1)));
        assert_eq!(both.retries, Some(0));
        assert_eq!(both.idempotent, Some(false));
        assert!(both.fail_on.is_some());
        assert_eq!(both.deadline, None);
        // Nothing over nothing is nothing.
        assert_eq!(Policy::new().overlaid(&Policy::new()).hedge, None);
    }

    #[test]
    fn a_chain_wide_idempotent_mark_reaches_every_unmarked_link() {
        let chain = ChainBuilder::new()
            .policy(&Policy::new().idempotent(true))
            .link(crate::Link::post("http://127.0.0.1:9/").body("x"))
            .link(
                crate::Link::post("http://127.0.0.1:9/")
                    .body("x")
                    .idempotent(false),
            )
            .build()
            .unwrap();
        let links = chain.links();
        assert!(links[0].idempotent());
        assert!(!links[1].idempotent());
    }
}

//! The chain: links tried in order until one succeeds.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::Instrument;

use crate::breaker::{AllOpen, Breaker, BreakerConfig, LinkHealth, SharedBreaker};
use crate::classify::Classifier;
use crate::error::{Error, ErrorKind};
use crate::hedge::{Hedge, Latencies};
use crate::link::{Endpoint, LinkInfo, Probe};
use crate::observer::{Observer, RequestHead};
use crate::report::{Attempt, Outcome};
use crate::response::{BodySink, Response};
use crate::retry::backoff::ExponentialBackoff;
use crate::retry::budget::RetryBudget;
use crate::retry::DEFAULT_RETRY_AFTER_CAP;
use crate::timeout::{Alarms, DEFAULT_ATTEMPT_TIMEOUT};
use crate::transport::{ResponseBody, Transport};
use attempt::RESENT;
use consume::{Buffered, Commit, Consume, ToSink, Typed};
use links::Links;

/// Default limit on a response body: 16 MiB.
pub(crate) const DEFAULT_MAX_BODY: u64 = 16 * 1024 * 1024;

/// An ordered chain of links. Calls try them in order and return the first
/// success.
///
/// A chain is cheap to clone (one `Arc`) and `Send + Sync`: build it once
/// and share it between tasks. Clones share the connection pool.
#[derive(Clone)]
pub struct Chain {
    inner: Arc<Inner>,
}

/// The chain-wide settings, as the builder was given them: held once, here,
/// by the builder while it is built and by the chain after.
#[derive(Clone)]
pub(super) struct Settings {
    pub(super) classifier: Classifier,
    pub(super) max_body: u64,
    pub(super) timeout: Duration,
    pub(super) deadline: Option<Duration>,
    pub(super) observer: Option<Arc<dyn Observer>>,
    pub(super) retries: u32,
    pub(super) follow_redirects: u32,
    /// Decode compressed answers (feature `compression`).
    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    pub(super) decompress: bool,
    pub(super) backoff: ExponentialBackoff,
    pub(super) retry_after_cap: Duration,
    pub(super) budget: RetryBudget,
    /// Each link's own breaker, when on.
    pub(super) breaker: Option<BreakerConfig>,
    pub(super) all_open: AllOpen,
    pub(super) sticky: bool,
    pub(super) hedge: Option<Hedge>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            classifier: Classifier::default(),
            max_body: DEFAULT_MAX_BODY,
            timeout: DEFAULT_ATTEMPT_TIMEOUT,
            deadline: None,
            observer: None,
            retries: 0,
            follow_redirects: 0,
            decompress: false,
            backoff: ExponentialBackoff::default(),
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
            budget: RetryBudget::default(),
            breaker: Some(BreakerConfig::default()),
            all_open: AllOpen::default(),
            sticky: false,
            hedge: None,
        }
    }
}

/// A built chain: its settings, its links, and their state.
struct Inner {
    settings: Settings,
    endpoints: Box<[Endpoint]>,
    transport: Arc<dyn Transport>,
    retries_possible: bool,
    calls: AtomicU64,
    alarms: Alarms,
    /// One per link, when breakers are on.
    breakers: Option<Box<[Arc<Breaker>]>>,
    /// The links' shared breakers, which outlive a re-assembly.
    shared: Box<[Option<SharedBreaker>]>,
    /// The links' probe URLs (sticky failover's background GETs).
    probes: Box<[Option<Probe>]>,
    latencies: Box<[Latencies]>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let links: Vec<_> = self
            .inner
            .endpoints
            .iter()
            .map(|e| format!("{} {} ({})", e.method, e.url, e.name))
            .collect();
        f.debug_struct("Chain")
            .field("links", &links)
            .field("classifier", &self.inner.settings.classifier)
            .field("max_body", &self.inner.settings.max_body)
            .field("timeout", &self.inner.settings.timeout)
            .field("deadline", &self.inner.settings.deadline)
            .field("retries", &self.inner.settings.retries)
            .field("backoff", &self.inner.settings.backoff)
            .field("retry_after_cap", &self.inner.settings.retry_after_cap)
            .field("budget", &self.inner.settings.budget)
            .finish()
    }
}

mod attempt;
mod builder;
mod call;
mod consume;
mod deferred;
mod external;
mod hedged;
mod links;
mod policy;
mod probe;
mod sequential;
#[cfg(test)]
mod testing;

pub use builder::ChainBuilder;
pub use external::ExternalAttempt;
pub use policy::Policy;

impl Chain {
    /// Gives `inner` fresh per-link state (breakers, latencies).
    fn assemble(mut inner: Inner) -> Chain {
        let epoch = Instant::now();
        let any_shared = inner.shared.iter().any(Option::is_some);
        if inner.settings.breaker.is_some() || any_shared {
            let cfg = inner.settings.breaker.clone().unwrap_or_default();
            inner.breakers = Some(
                (0..inner.endpoints.len())
                    .map(|i| match inner.shared.get(i) {
                        Some(Some(shared)) => shared.breaker.clone(),
                        _ => Arc::new(Breaker::new(&cfg, epoch, i)),
                    })
                    .collect(),
            );
        }
        inner.latencies = inner
            .endpoints
            .iter()
            .map(|_| Latencies::default())
            .collect();
        Chain {
            inner: Arc::new(inner),
        }
    }

    /// The same chain over another transport, with breakers and latency
    /// records of its own (the retry budget and any
    /// [`SharedBreaker`](crate::SharedBreaker) stay shared). Links with a
    /// transport of their own keep it. Used by the tower layer.
    pub fn with_transport(&self, transport: impl Transport) -> Chain {
        let i = &*self.inner;
        Chain::assemble(Inner {
            settings: i.settings.clone(),
            endpoints: i.endpoints.clone(),
            transport: Arc::new(transport),
            retries_possible: i.retries_possible,
            calls: AtomicU64::new(0),
            alarms: Alarms::new(),
            breakers: None,
            shared: i.shared.clone(),
            probes: i.probes.clone(),
            latencies: Box::default(),
        })
    }
}

impl Chain {
    /// A builder for a chain.
    pub fn builder() -> ChainBuilder {
        ChainBuilder::new()
    }

    /// The number of links.
    pub fn len(&self) -> usize {
        self.inner.endpoints.len()
    }

    /// Whether the chain has no links (never true for a built chain).
    pub fn is_empty(&self) -> bool {
        self.inner.endpoints.is_empty()
    }

    /// Sends `request` along the chain: its method, headers, body, path and
    /// query go to every link, whose URL gives the scheme, host and path
    /// prefix (`http://b/api` + `/orders?x=1` = `http://b/api/orders?x=1`).
    /// The idempotency rules follow the request's method and headers.
    ///
    /// The body is [`Bytes`] or any [`Body`](crate::Body). A one-shot
    /// stream ([`Body::once`](crate::Body::once)) goes to the first link
    /// that reads it and no further: see there.
    pub async fn send<B: Into<crate::Body>>(
        &self,
        request: http::Request<B>,
    ) -> Result<Response<Bytes>, Error> {
        let eps = self.for_request(request);
        let result = self.run(&mut Buffered, &eps).await;
        settle(&eps);
        result
    }

    /// The links, each carrying `request`, built when tried.
    fn for_request<B: Into<crate::Body>>(&self, request: http::Request<B>) -> Links<'_> {
        let (parts, body) = request.into_parts();
        Links::over(&self.inner.endpoints, parts, body.into(), |h| {
            self.grpc_deadline(h)
        })
    }

    /// A gRPC call's deadline: its `grpc-timeout`, or the chain's
    /// deadline when that is shorter.
    fn grpc_deadline(&self, headers: &http::HeaderMap) -> Option<Instant> {
        let asked = headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::grpc::parse_timeout);
        let limit = match (asked, self.inner.settings.deadline) {
            (Some(a), Some(d)) => Some(a.min(d)),
            (a, d) => a.or(d),
        };
        limit.map(|d| crate::timeout::later(Instant::now(), d))
    }

    /// Sends `request` along the chain as [`send`](Self::send) does, but
    /// commits at the head: the first link whose answer the classifier
    /// calls a success wins as soon as its head arrives, and its body
    /// streams to you unread, however large (`max_body` does not apply).
    ///
    /// After the commit there is no failover: a body that breaks mid-way
    /// yields an error from the body (so a proxy aborts its client's
    /// response rather than end it short), and counts as a failure of the
    /// link for its breaker; one that ends cleanly counts as a success.
    /// This is nginx's and pingora's rule too.
    ///
    /// ```
    /// use http_body_util::BodyExt;
    /// use fallback_chain::{Chain, Link};
    /// use fallback_chain_testserver::{Behavior, Server};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let down = Server::start(Behavior::status(503));
    /// let up = Server::start(Behavior::ok("streamed"));
    /// let chain = Chain::builder()
    ///     .link(Link::get(down.url("/")))
    ///     .link(Link::get(up.url("/")))
    ///     .build()?;
    /// let resp = chain.send_streaming(http::Request::new(bytes::Bytes::new())).await?;
    /// assert_eq!(resp.winner(), 1);
    /// let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    /// assert_eq!(&body[..], b"streamed");
    /// # Ok(()) }
    /// ```
    pub async fn send_streaming<B: Into<crate::Body>>(
        &self,
        request: http::Request<B>,
    ) -> Result<Response<ResponseBody>, Error> {
        let eps = self.for_request(request);
        let result = self.run(&mut Commit, &eps).await;
        settle(&eps);
        result
    }

    /// The links' own requests, committing at the head: see
    /// [`send_streaming`](Self::send_streaming).
    pub async fn call_streaming(&self) -> Result<Response<ResponseBody>, Error> {
        self.run(&mut Commit, &Links::own(&self.inner.endpoints))
            .await
    }

    /// The largest response body accepted, in bytes.
    pub fn max_body(&self) -> u64 {
        self.inner.settings.max_body
    }

    /// The links, in order, as built (secrets redacted).
    pub fn links(&self) -> Vec<LinkInfo> {
        self.inner
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| e.info(i))
            .collect()
    }

    /// Each link's breaker state and counts, in chain order (empty when
    /// breakers are off).
    pub fn health(&self) -> Vec<LinkHealth> {
        let now = Instant::now();
        let Some(breakers) = &self.inner.breakers else {
            return Vec::new();
        };
        breakers
            .iter()
            .zip(self.inner.endpoints.iter())
            .enumerate()
            .map(|(i, (b, ep))| b.health(now, i, &ep.name))
            .collect()
    }

    /// Sends along the chain and returns the first success, its body as
    /// bytes.
    pub async fn call(&self) -> Result<Response<Bytes>, Error> {
        self.run(&mut Buffered, &Links::own(&self.inner.endpoints))
            .await
    }

    /// Sends along the chain and decodes the first success as `T`. A 2xx
    /// body that does not decode is a failed link (`decode`) and falls
    /// back. On total failure, [`Error::json`] decodes the last failure's
    /// body as the type of your choice.
    ///
    /// ```no_run
    /// # async fn demo(chain: fallback_chain::Chain) {
    /// #[derive(serde::Deserialize)]
    /// struct Order { id: u64 }
    /// #[derive(serde::Deserialize, Debug)]
    /// struct ApiError { message: String }
    ///
    /// match chain.call_json::<Order>().await {
    ///     Ok(resp) => println!("order {}", resp.body().id),
    ///     Err(err) => println!("{:?}: {:?}", err.status(), err.json::<ApiError>()),
    /// }
    /// # }
    /// ```
    pub async fn call_json<T>(&self) -> Result<Response<T>, Error>
    where
        T: DeserializeOwned + Send,
    {
        self.run(&mut Typed::<T>::new(), &Links::own(&self.inner.endpoints))
            .await
    }

    /// Sends along the chain and streams the first success's body into
    /// `sink`. If a body breaks mid-way the sink is reset before the chain
    /// moves on, so it only ever holds the winner's bytes.
    ///
    /// With [hedging](ChainBuilder::hedge), attempts race, and a sink
    /// cannot take two bodies at once: each attempt in flight buffers its
    /// body (up to [`max_body`](ChainBuilder::max_body)), and the winner's
    /// bytes go to the sink once it has won. A loser's bytes never reach it.
    pub async fn call_into<S: BodySink>(&self, sink: &mut S) -> Result<Response<()>, Error> {
        self.run(&mut ToSink(sink), &Links::own(&self.inner.endpoints))
            .await
    }

    async fn run<C: Consume>(
        &self,
        consumer: &mut C,
        eps: &Links<'_>,
    ) -> Result<Response<C::Output>, Error> {
        let span = tracing::debug_span!("fallback.call", links = eps.len());
        // A one-shot body can go to one attempt at a time: no hedging.
        let once = eps.first().is_some_and(|e| e.body.is_once());
        if let Some(hedge) = self.inner.settings.hedge.as_ref().filter(|_| !once) {
            // Boxed, so calls that do not hedge do not carry its state.
            return match consumer.fork() {
                Some(proto) => {
                    Box::pin(self.run_hedged(proto, hedge, eps))
                        .instrument(span)
                        .await
                }
                None => {
                    let won = Box::pin(self.run_hedged(Buffered, hedge, eps))
                        .instrument(span)
                        .await?;
                    self.deliver(consumer, won).await
                }
            };
        }
        self.run_sequential(consumer, eps).instrument(span).await
    }

    /// Hands a hedged call's buffered winner to a consumer that could not
    /// race (a caller's sink).
    async fn deliver<C: Consume>(
        &self,
        consumer: &mut C,
        won: Response<Bytes>,
    ) -> Result<Response<C::Output>, Error> {
        let Response {
            status,
            version,
            headers,
            body,
            winner,
            report,
        } = won;
        match consumer.take(body).await {
            Ok(output) => Ok(Response {
                status,
                version,
                headers,
                body: output,
                winner,
                report,
            }),
            Err(e) => {
                let _ = consumer.reset().await;
                Err(Error::new(ErrorKind::Sink, report, None).with_detail(e.to_string()))
            }
        }
    }

    /// Shows a request to the observer, if there is one.
    fn show_request(&self, ep: &Endpoint, request: &http::Request<crate::transport::RequestBody>) {
        if let Some(o) = &self.inner.settings.observer {
            o.on_request(&RequestHead {
                link: ep.index,
                name: &ep.name,
                method: request.method(),
                uri: request.uri(),
                version: request.version(),
                headers: request.headers(),
            });
        }
    }

    fn observe(&self, attempt: &Attempt) {
        let status = attempt.status.map(|s| s.as_u16());
        let elapsed_ms = attempt.elapsed.as_secs_f64() * 1e3;
        let span = tracing::Span::current();
        if !span.is_disabled() {
            span.record("outcome", attempt.outcome.as_str());
            span.record("status", status);
            span.record("elapsed_ms", elapsed_ms);
        }
        #[cfg(feature = "metrics")]
        crate::metrics::attempt(attempt);
        if attempt.is_ok() {
            if attempt.link == 0 && attempt.try_number == 1 {
                tracing::debug!(link = %attempt.name, try_number = attempt.try_number, status, elapsed_ms, "link succeeded");
            } else {
                tracing::info!(link = %attempt.name, try_number = attempt.try_number, status, elapsed_ms, "link succeeded after failover");
            }
        } else if attempt.outcome == Outcome::Stale {
            tracing::debug!(link = %attempt.name, try_number = attempt.try_number, "stale pooled connection; re-sent");
        } else if attempt.outcome == Outcome::RefusedStream
            && attempt.error().is_some_and(|e| e.ends_with(RESENT))
        {
            tracing::debug!(link = %attempt.name, try_number = attempt.try_number, "stream refused unprocessed; re-sent");
        } else {
            tracing::warn!(
                link = %attempt.name,
                try_number = attempt.try_number,
                outcome = attempt.outcome.as_str(),
                status,
                elapsed_ms,
                error = attempt.error().unwrap_or(""),
                "link failed"
            );
        }
        if let Some(o) = &self.inner.settings.observer {
            o.on_attempt(attempt);
        }
    }
}

/// A call's attempts are over: its request body need not be kept for
/// another (the winner may still be streaming it).
fn settle(eps: &Links<'_>) {
    if let Some(ep) = eps.first() {
        ep.body.settle();
    }
}

/// The span of one attempt; its outcome, status and time are recorded when
/// it ends. The URL carries no userinfo and no secret query values.
fn attempt_span(ep: &Endpoint, try_number: u32) -> tracing::Span {
    tracing::debug_span!(
        "fallback.attempt",
        link = %ep.name,
        url = %ep.url,
        try_number,
        insecure = ep.insecure,
        outcome = tracing::field::Empty,
        status = tracing::field::Empty,
        elapsed_ms = tracing::field::Empty,
    )
}

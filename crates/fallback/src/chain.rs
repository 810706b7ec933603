//! The chain: links tried in order until one succeeds.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::Instrument;

use crate::backoff::ExponentialBackoff;
use crate::breaker::{Admit, Breaker, BreakerConfig, LinkHealth};
use crate::budget::RetryBudget;
use crate::classify::{Answer, Classifier, Verdict};
use crate::conv::{Given, IntoHeaderName, IntoHeaderValue};
use crate::error::{BuildError, Error, ErrorKind, LastResponse};
use crate::hedge::{Hedge, Latencies};
use crate::link::{checked_header, Endpoint, Link, LinkInfo};
use crate::observer::{Observer, RequestHead, ResponseHead};
use crate::redact;
use crate::redirect;
use crate::report::{Attempt, ErrorText, Outcome, Report};
use crate::response::{
    collect, BodySink, Buffered, Consume, ConsumeError, Response, ToSink, Typed,
};
use crate::retry::{self, worth_retrying, Next, DEFAULT_RETRY_AFTER_CAP};
use crate::safety::{may_resend, Delivery};
use crate::timeout::{attempt_deadline, later, Alarm, Alarms, Phase, DEFAULT_ATTEMPT_TIMEOUT};
use crate::transport::{
    error_chain, FreshConnection, Handoff, HyperTransportBuilder, Transport, TransportErrorKind,
};

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

struct Inner {
    endpoints: Box<[Endpoint]>,
    transport: Arc<dyn Transport>,
    classifier: Classifier,
    max_body: u64,
    timeout: Duration,
    deadline: Option<Duration>,
    observer: Option<Arc<dyn Observer>>,
    retries: u32,
    retries_possible: bool,
    max_redirects: u32,
    /// Decode compressed answers (feature `compression`).
    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    decompress: bool,
    backoff: ExponentialBackoff,
    retry_after_cap: Duration,
    budget: RetryBudget,
    calls: AtomicU64,
    alarms: Alarms,
    /// One per link, when breakers are on.
    breakers: Option<Box<[Breaker]>>,
    breaker_cfg: Option<BreakerConfig>,
    sticky: bool,
    hedge: Option<Hedge>,
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
            .field("classifier", &self.inner.classifier)
            .field("max_body", &self.inner.max_body)
            .field("timeout", &self.inner.timeout)
            .field("deadline", &self.inner.deadline)
            .field("retries", &self.inner.retries)
            .field("backoff", &self.inner.backoff)
            .field("retry_after_cap", &self.inner.retry_after_cap)
            .field("budget", &self.inner.budget)
            .finish()
    }
}

/// Builds a [`Chain`]. Setters never fail; [`build`](Self::build) checks
/// everything.
///
/// | setting | default |
/// | --- | --- |
/// | [`classifier`](Self::classifier) | [`Classifier::non_2xx`]: every non-2xx status falls back |
/// | [`max_body`](Self::max_body) | 16 MiB |
/// | [`timeout`](Self::timeout) (per attempt) | 10 s |
/// | [`connect_timeout`](Self::connect_timeout) | 2 s |
/// | [`transport_options`](Self::transport_options) | [`HyperTransportBuilder::default`]: the system's trust store, proxies from the environment |
/// | [`http2_prior_knowledge`](Self::http2_prior_knowledge) | off |
/// | [`follow_redirects`](Self::follow_redirects) | 0: a 3xx falls back |
/// | `decompress` (feature `compression`) | off |
/// | [`deadline`](Self::deadline) (whole call) | none |
/// | [`retries`](Self::retries) (extra tries per link) | 0 |
/// | [`backoff`](Self::backoff) | exponential, full jitter, 50 ms × 2ⁿ up to 2 s |
/// | [`retry_after_cap`](Self::retry_after_cap) | 30 s |
/// | [`retry_budget`](Self::retry_budget) | 20 % over 10 s, plus 10 retries per second |
/// | [`breaker`](Self::breaker) | on, with [`BreakerConfig::default`] |
/// | [`sticky`](Self::sticky) | off |
/// | [`hedge`](Self::hedge) | off |
/// | [`transport`](Self::transport) | [`HyperTransport`](crate::transport::HyperTransport) |
#[must_use]
pub struct ChainBuilder {
    links: Vec<Link>,
    headers: Vec<(Given<HeaderName>, Given<HeaderValue>)>,
    classifier: Classifier,
    max_body: u64,
    timeout: Duration,
    connect_timeout: Option<Duration>,
    transport_options: Option<HyperTransportBuilder>,
    http2_prior_knowledge: bool,
    follow_redirects: u32,
    decompress: bool,
    deadline: Option<Duration>,
    observer: Option<Arc<dyn Observer>>,
    transport: Option<Arc<dyn Transport>>,
    retries: u32,
    backoff: ExponentialBackoff,
    retry_after_cap: Duration,
    budget: RetryBudget,
    breaker: Option<BreakerConfig>,
    sticky: bool,
    hedge: Option<Hedge>,
    secret_headers: Vec<String>,
}

impl fmt::Debug for ChainBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Links<'a>(&'a [Link], &'a [String]);
        impl fmt::Debug for Links<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                struct One<'a>(&'a Link, &'a [String]);
                impl fmt::Debug for One<'_> {
                    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        self.0.fmt_with(f, self.1)
                    }
                }
                f.debug_list()
                    .entries(self.0.iter().map(|l| One(l, self.1)))
                    .finish()
            }
        }
        let headers: Vec<_> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let n = n.as_str();
                let secret = redact::is_secret_header(n)
                    || matches!(v, Given::Typed(v) if v.is_sensitive())
                    || self
                        .secret_headers
                        .iter()
                        .any(|m| m.trim().eq_ignore_ascii_case(n.trim()));
                (n, if secret { redact::REDACTED } else { v.as_str() })
            })
            .collect();
        f.debug_struct("ChainBuilder")
            .field("links", &Links(&self.links, &self.secret_headers))
            .field("headers", &headers)
            .field("classifier", &self.classifier)
            .field("max_body", &self.max_body)
            .field("timeout", &self.timeout)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Default for ChainBuilder {
    fn default() -> Self {
        ChainBuilder {
            links: Vec::new(),
            headers: Vec::new(),
            classifier: Classifier::default(),
            max_body: DEFAULT_MAX_BODY,
            timeout: DEFAULT_ATTEMPT_TIMEOUT,
            connect_timeout: None,
            transport_options: None,
            http2_prior_knowledge: false,
            follow_redirects: 0,
            decompress: false,
            deadline: None,
            observer: None,
            transport: None,
            retries: 0,
            backoff: ExponentialBackoff::default(),
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
            budget: RetryBudget::default(),
            breaker: Some(BreakerConfig::default()),
            sticky: false,
            hedge: None,
            secret_headers: Vec::new(),
        }
    }
}

impl ChainBuilder {
    /// An empty builder with the defaults above.
    pub fn new() -> ChainBuilder {
        ChainBuilder::default()
    }

    /// Appends a link; links are tried in the order they are added.
    pub fn link(mut self, link: Link) -> Self {
        self.links.push(link);
        self
    }

    /// Appends several links, in order.
    pub fn links(mut self, links: impl IntoIterator<Item = Link>) -> Self {
        self.links.extend(links);
        self
    }

    /// A default header for every link. A link's own header of the same name
    /// replaces it.
    pub fn header(mut self, name: impl IntoHeaderName, value: impl IntoHeaderValue) -> Self {
        self.headers
            .push((name.into_header_name(), value.into_header_value()));
        self
    }

    /// Basic credentials in `Authorization` for every link that does not
    /// set its own (a secret: never printed).
    pub fn basic_auth(self, user: &str, password: Option<&str>) -> Self {
        let pair = format!("{user}:{}", password.unwrap_or(""));
        self.header(
            "Authorization",
            format!("Basic {}", crate::link::base64(pair.as_bytes())),
        )
    }

    /// Treats header `name` as a secret on every link and in every
    /// response, beyond the built-in rule of [`crate::redact`]: its value
    /// never appears in `Debug`, reports, errors, tracing or
    /// [`Chain::links`], and is marked sensitive in the headers of responses.
    pub fn secret_header(mut self, name: impl Into<String>) -> Self {
        self.secret_headers.push(name.into());
        self
    }

    /// Which statuses succeed, fall back, or are final.
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// The largest response body accepted, in bytes. A larger success body
    /// is a failed attempt (`too_large`) that falls back.
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.max_body = bytes;
        self
    }

    /// The per-attempt timeout: connect, send, response head and the whole
    /// body. A link's own [`Link::timeout`] overrides it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connect timeout of the default transport. A transport passed to
    /// [`transport`](Self::transport) keeps its own.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Options of the default transport: trusted roots, a client
    /// certificate, proxies, the pool. [`build`](Self::build) builds it and
    /// reports its errors. A transport passed to
    /// [`transport`](Self::transport) replaces it.
    ///
    /// ```
    /// use fallback_chain::transport::HyperTransport;
    /// # fn main() -> Result<(), fallback_chain::BuildError> {
    /// # let ca_pem = fallback_chain_testserver::tls::TestCa::new().cert_pem();
    /// let chain = fallback_chain::Chain::builder()
    ///     .transport_options(HyperTransport::builder().add_root_certificate_pem(ca_pem))
    ///     .link(fallback_chain::Link::get("https://orders.internal/api"))
    ///     .build()?;
    /// # let _ = chain; Ok(()) }
    /// ```
    pub fn transport_options(mut self, options: HyperTransportBuilder) -> Self {
        self.transport_options = Some(options);
        self
    }

    /// Following redirects within a link (opt-in).
    ///
    /// Off by default: as in the original package, a 3xx answer is a non-2xx
    /// status and the chain falls back. With
    /// [`ChainBuilder::follow_redirects`](crate::ChainBuilder::follow_redirects)
    /// a link follows `301`, `302`, `303`, `307` and `308` answers that carry a
    /// `Location`, up to a bound on hops, all within the attempt's timeout:
    ///
    /// - `303` becomes a `GET` (a `HEAD` stays a `HEAD`), and so do `301` and
    ///   `302` after a `POST`, as curl and browsers do; the body and its
    ///   `Content-*` headers are dropped. `307` and `308` keep the method and
    ///   re-send the body.
    /// - When the origin (scheme, host, port) changes from the link's own,
    ///   `Authorization`, `Proxy-Authorization`, cookies and every other secret
    ///   header ([`crate::redact`]) are dropped.
    /// - Each hop is a `redirect` line in the report, with the status and the
    ///   next URL.
    /// - More hops than the bound, a loop, or a `Location` that is not an
    ///   `http(s)` URL make the link fail (outcome `status`) with its own
    ///   error text, and the chain moves on.
    /// - Once a `POST` has been turned into a `GET`, the server has answered
    ///   it: whatever happens next, the `POST` is not re-sent to another link
    ///   unless it is idempotent.
    ///
    /// Follows up to `max_hops` redirects within each link (0, the
    /// default, follows none: a 3xx falls back like any non-2xx status).
    /// See [`ChainBuilder::follow_redirects`](crate::ChainBuilder::follow_redirects).
    pub fn follow_redirects(mut self, max_hops: u32) -> Self {
        self.follow_redirects = max_hops;
        self
    }

    /// Compressed answers (feature `compression`, then
    /// [`ChainBuilder::decompress`](crate::ChainBuilder::decompress)).
    ///
    /// The chain asks for `gzip`, `deflate`, `br` and `zstd` with
    /// `Accept-Encoding` (unless a link sets its own) and decodes the body of
    /// an answer whose `Content-Encoding` is one of them, success or failure,
    /// as it streams in; the `Content-Encoding` and `Content-Length` headers
    /// are removed from what the caller sees. The decoders are
    /// `async-compression`'s.
    ///
    /// [`ChainBuilder::max_body`](crate::ChainBuilder::max_body) bounds the
    /// *decoded* size, so a decompression bomb ends as `too_large`, having
    /// used no more memory than the limit; a body that does not decompress is
    /// a failed link (`io`).
    ///
    /// Asks for compressed answers and decodes them (gzip, deflate, br,
    /// zstd); [`max_body`](Self::max_body) then bounds the decoded size.
    /// Default: off. See the crate docs.
    #[cfg(feature = "compression")]
    pub fn decompress(mut self, on: bool) -> Self {
        self.decompress = on;
        self
    }

    /// Sends `http://` links as HTTP/2 without upgrade (h2c, "prior
    /// knowledge"), unless a link says otherwise with
    /// [`Link::http2_prior_knowledge`]. `https://` links negotiate the
    /// version by ALPN either way.
    pub fn http2_prior_knowledge(mut self, on: bool) -> Self {
        self.http2_prior_knowledge = on;
        self
    }

    /// A bound on the whole call (`None`: no bound). When it expires the
    /// call fails at once, with the trail so far.
    pub fn deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.deadline = deadline.into();
        self
    }

    /// Called for each failed attempt and for the success.
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Sends through `transport` instead of the default [`HyperTransport`](crate::transport::HyperTransport).
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Retries on the same link: how many, which failures, and when.
    ///
    /// A link may be tried again before the chain moves on
    /// ([`ChainBuilder::retries`], per link [`Link::retries`]; default 0). Which
    /// failures are worth another try *on the same link* is decided apart from
    /// when to try:
    ///
    /// - **Which.** A connect failure, a timeout, a broken connection, and the
    ///   statuses 408, 429 and 5xx. A body over the size limit, a body that does
    ///   not decode, and other statuses would fail the same way again, so the
    ///   chain moves on at once. The re-send rule of [the re-send rule](crate#when-is-a-request-re-sent) applies
    ///   first: a request that must not be re-sent is never retried.
    /// - **When.** After a delay from the [backoff](crate::ExponentialBackoff), or after
    ///   the server's `Retry-After` on 429 and 503 (seconds or an HTTP date).
    ///   A `Retry-After` longer than its cap (default 30 s) or than the time
    ///   left before the deadline is not waited for: the chain moves to the next
    ///   link at once.
    /// - **Budget.** Every extra try draws from the [retry budget](crate::RetryBudget).
    ///   When it is spent the try is reported `skipped` and the chain moves on.
    ///
    /// [`ChainBuilder::retries`]: crate::ChainBuilder::retries
    /// [`Link::retries`]: crate::Link::retries
    ///
    /// Extra tries on each link before moving to the next (a link's own
    /// [`Link::retries`] overrides it). See [`ChainBuilder::retries`](crate::ChainBuilder::retries).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The delays between tries on the same link.
    pub fn backoff(mut self, backoff: ExponentialBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest `Retry-After` the chain waits for; a longer one moves
    /// the call to the next link at once.
    pub fn retry_after_cap(mut self, cap: Duration) -> Self {
        self.retry_after_cap = cap;
        self
    }

    /// The budget that extra tries draw from. It is shared by every call
    /// through the chain and its clones, and by any chain given a clone of
    /// the same budget.
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// The per-link circuit breakers (`None` turns them off). See
    /// [`BreakerConfig`](crate::BreakerConfig).
    pub fn breaker(mut self, config: impl Into<Option<BreakerConfig>>) -> Self {
        self.breaker = config.into();
        self
    }

    /// Sticky failover: while a link's breaker is open, calls start at the
    /// first healthy link, and the link's recovery is probed in the
    /// background (for idempotent links) instead of on a caller's request.
    /// Once a probe succeeds, calls return to the link: the order of the
    /// links stays the priority order.
    pub fn sticky(mut self, sticky: bool) -> Self {
        self.sticky = sticky;
        self
    }

    /// Hedged requests: start the next link when the current one has not
    /// answered within the hedge delay. See [`Hedge`](crate::Hedge).
    pub fn hedge(mut self, hedge: impl Into<Option<Hedge>>) -> Self {
        self.hedge = hedge.into();
        self
    }

    /// Checks every link and setting and builds the chain. Nothing is sent.
    pub fn build(self) -> Result<Chain, BuildError> {
        if self.links.is_empty() {
            return Err(BuildError::NoLinks);
        }
        let nonzero = |setting, d: Duration| {
            if d.is_zero() {
                Err(BuildError::Setting {
                    setting,
                    reason: "must be greater than zero".into(),
                })
            } else {
                Ok(())
            }
        };
        nonzero("timeout", self.timeout)?;
        if let Some(t) = self.connect_timeout {
            nonzero("connect_timeout", t)?;
        }
        if let Some(d) = self.deadline {
            nonzero("deadline", d)?;
        }
        self.backoff.validate()?;
        self.budget.validate()?;
        if let Some(b) = &self.breaker {
            b.validate()?;
        }
        if let Some(h) = &self.hedge {
            h.validate()?;
        }
        let secrets = self
            .secret_headers
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.trim().as_bytes()).map_err(|_| BuildError::Setting {
                    setting: "secret_header",
                    reason: format!("{n:?} is not a valid header name"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut defaults = HeaderMap::new();
        for (n, v) in &self.headers {
            let (name, value) = checked_header(n, v).map_err(BuildError::DefaultHeader)?;
            defaults.append(name, value);
        }
        let endpoints = self
            .links
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                if let Some(t) = l.timeout {
                    nonzero("link timeout", t)?;
                }
                l.validate(i, &defaults, &secrets, self.http2_prior_knowledge)
            })
            .collect::<Result<Box<[_]>, _>>()?;
        let transport: Arc<dyn Transport> = match self.transport {
            Some(t) => t,
            None => {
                let mut options = self.transport_options.unwrap_or_default();
                if let Some(t) = self.connect_timeout {
                    options = options.connect_timeout(Some(t));
                }
                Arc::new(options.build()?)
            }
        };
        let mut endpoints = endpoints;
        for ep in endpoints.iter_mut() {
            #[cfg(feature = "compression")]
            if self.decompress {
                ep.headers
                    .entry(http::header::ACCEPT_ENCODING)
                    .or_insert(crate::decompress::ACCEPT);
            }
            let t = ep.transport.as_ref().unwrap_or(&transport);
            ep.insecure = ep.uri.scheme() == Some(&http::uri::Scheme::HTTPS)
                && t.danger_accepts_invalid_certs();
            if ep.insecure {
                tracing::warn!(link = %ep.name, "TLS certificate verification is off for this link");
            }
        }
        let retries_possible = endpoints
            .iter()
            .any(|e| e.retries.unwrap_or(self.retries) > 0);
        Ok(Chain::assemble(Inner {
            latencies: Box::default(),
            hedge: self.hedge,
            breakers: None,
            breaker_cfg: self.breaker,
            sticky: self.sticky,
            retries: self.retries,
            retries_possible,
            max_redirects: self.follow_redirects,
            decompress: self.decompress,
            backoff: self.backoff,
            retry_after_cap: self.retry_after_cap,
            budget: self.budget,
            calls: AtomicU64::new(0),
            alarms: Alarms::new(),
            endpoints,
            transport,
            classifier: self.classifier,
            max_body: self.max_body,
            timeout: self.timeout,
            deadline: self.deadline,
            observer: self.observer,
        }))
    }
}

impl Chain {
    /// Gives `inner` fresh per-link state (breakers, latencies).
    fn assemble(mut inner: Inner) -> Chain {
        let epoch = Instant::now();
        inner.breakers = inner.breaker_cfg.as_ref().map(|cfg| {
            inner
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| Breaker::new(cfg, epoch, i, e.name.clone()))
                .collect()
        });
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
    /// records of its own (the retry budget stays shared). Links with a
    /// transport of their own keep it. Used by the tower layer.
    pub fn with_transport(&self, transport: impl Transport) -> Chain {
        let i = &*self.inner;
        Chain::assemble(Inner {
            endpoints: i.endpoints.clone(),
            transport: Arc::new(transport),
            classifier: i.classifier.clone(),
            max_body: i.max_body,
            timeout: i.timeout,
            deadline: i.deadline,
            observer: i.observer.clone(),
            retries: i.retries,
            retries_possible: i.retries_possible,
            max_redirects: i.max_redirects,
            decompress: i.decompress,
            backoff: i.backoff.clone(),
            retry_after_cap: i.retry_after_cap,
            budget: i.budget.clone(),
            calls: AtomicU64::new(0),
            alarms: Alarms::new(),
            breakers: None,
            breaker_cfg: i.breaker_cfg.clone(),
            sticky: i.sticky,
            hedge: i.hedge.clone(),
            latencies: Box::default(),
        })
    }
}

/// How one attempt ended, before it is recorded.
enum Ended<O> {
    Won {
        status: StatusCode,
        version: http::Version,
        headers: HeaderMap,
        output: O,
    },
    // Boxed: failures are rare, and a small enum is cheap to move.
    Lost(Box<Lost>),
}

/// A request that went out within an attempt before its last one: a
/// re-send after a stale pooled connection, or a followed redirect. Each
/// becomes a line of the report.
struct Hop {
    outcome: Outcome,
    status: Option<StatusCode>,
    url: Arc<str>,
    elapsed: Duration,
    error: ErrorText,
}

/// The request for one hop of an attempt: the link's own, or where a
/// redirect led.
async fn hop_request(
    ep: &Endpoint,
    follow: Option<&redirect::Follow>,
) -> std::io::Result<http::Request<crate::transport::RequestBody>> {
    let Some(f) = follow else {
        return ep.request().await;
    };
    let mut request = if f.to_get {
        let mut r = http::Request::new(crate::transport::RequestBody::empty());
        *r.method_mut() = if ep.method == http::Method::HEAD {
            http::Method::HEAD
        } else {
            http::Method::GET
        };
        *r.version_mut() = ep.version;
        *r.headers_mut() = ep.headers.clone();
        r
    } else {
        ep.request().await?
    };
    let cross_origin = !redirect::same_origin(&ep.uri, &f.uri);
    redirect::headers(request.headers_mut(), f.to_get, cross_origin, &ep.secrets);
    *request.uri_mut() = f.uri.clone();
    Ok(request)
}

fn hop_url(ep: &Endpoint, follow: Option<&redirect::Follow>) -> Arc<str> {
    match follow {
        Some(f) => redirect::shown(&f.uri).into(),
        None => ep.url.clone(),
    }
}

/// A transport error, as a lost attempt.
fn transport_lost(e: crate::transport::TransportError) -> Lost {
    match e.kind() {
        // Rendered only if someone reads it.
        TransportErrorKind::Connect => {
            Lost::new(Outcome::Connect, Delivery::NotSent, ErrorText::error(e))
        }
        TransportErrorKind::ConnectTimeout => Lost {
            phase: Some(Phase::Connect),
            ..Lost::new(Outcome::Timeout, Delivery::NotSent, ErrorText::error(e))
        },
        TransportErrorKind::StaleConnection => Lost::new(
            Outcome::Io,
            Delivery::Unknown,
            format!(
                "{e}: a reused connection failed before any answer \
                 (the server may have closed it while idle)"
            ),
        ),
        _ => Lost::new(Outcome::Io, Delivery::Unknown, ErrorText::error(e)),
    }
}

/// The attempt's timer fired before a response head arrived.
fn timer_lost(handoff: &Handoff, begun: Instant, until: Instant) -> Lost {
    let limit = until.duration_since(begun);
    if handoff.never_left() {
        // Before the transport handed the request to a connection: nothing
        // was sent.
        Lost {
            phase: Some(Phase::Connect),
            ..Lost::new(
                Outcome::Timeout,
                Delivery::NotSent,
                format!("no connection within {limit:?}"),
            )
        }
    } else {
        Lost {
            phase: Some(Phase::Head),
            ..Lost::new(
                Outcome::Timeout,
                Delivery::Unknown,
                format!("no response head within {limit:?}"),
            )
        }
    }
}

/// A redirect that is not followed (a loop, too many hops, a bad
/// `Location`): the link failed with that answer.
async fn redirect_lost(
    resp: http::Response<crate::transport::ResponseBody>,
    why: String,
    alarm: &Alarm,
    limit: u64,
) -> Lost {
    let (parts, body) = resp.into_parts();
    let body = match within(collect(body, limit, None), alarm).await {
        Some(Ok(b)) => Some(b),
        _ => None,
    };
    Lost {
        status: Some(parts.status),
        response: Some(LastResponse {
            version: parts.version,
            status: parts.status,
            headers: parts.headers,
            body,
        }),
        ..Lost::new(Outcome::Status, Delivery::Rejected, why)
    }
}

struct Lost {
    outcome: Outcome,
    phase: Option<Phase>,
    status: Option<StatusCode>,
    error: ErrorText,
    delivery: Delivery,
    verdict: Verdict,
    response: Option<LastResponse>,
    retry_after: Option<Duration>,
    /// Ends the call at once (the sink or the request body failed).
    stop: Option<ErrorKind>,
}

impl Lost {
    fn new(outcome: Outcome, delivery: Delivery, error: impl Into<ErrorText>) -> Lost {
        Lost {
            outcome,
            phase: None,
            status: None,
            error: error.into(),
            delivery,
            verdict: Verdict::Fallback,
            response: None,
            retry_after: None,
            stop: None,
        }
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
    pub async fn send(&self, request: http::Request<Bytes>) -> Result<Response<Bytes>, Error> {
        let eps: Vec<Endpoint> = self
            .inner
            .endpoints
            .iter()
            .map(|e| e.with_request(&request))
            .collect();
        self.run(&mut Buffered, &eps).await
    }

    /// The largest response body accepted, in bytes.
    pub fn max_body(&self) -> u64 {
        self.inner.max_body
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
        self.run(&mut Buffered, &self.inner.endpoints).await
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
        self.run(&mut Typed::<T>::new(), &self.inner.endpoints)
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
        self.run(&mut ToSink(sink), &self.inner.endpoints).await
    }

    async fn run<C: Consume>(
        &self,
        consumer: &mut C,
        eps: &[Endpoint],
    ) -> Result<Response<C::Output>, Error> {
        let span = tracing::debug_span!("fallback.call", links = eps.len());
        if let Some(hedge) = &self.inner.hedge {
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

    /// Links one after another: the original package's behaviour, with
    /// breakers, retries and time limits.
    async fn run_sequential<C: Consume>(
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
                probe.settle(&ended, ended_at);
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

    /// Hedged: the next link starts when the current one is slow, and the
    /// first whole, valid answer wins. Losers are cancelled.
    async fn run_hedged<C: Consume>(
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
            guard.settle(&ended, Instant::now());
            let ep = &eps[flight.index];
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
    fn launch<'a, C: Consume + 'a>(
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
    fn cancel_all<O>(
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

    /// Envoy's panic mode: when every link's breaker is open, the link whose
    /// break ends first is tried anyway.
    fn panic_link(&self, now: Instant) -> Option<usize> {
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
    fn admit(
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
    fn spawn_probe(&self, index: usize) -> bool {
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

    /// The error ending a call that started at `started`.
    fn failure(
        &self,
        kind: ErrorKind,
        mut report: Report,
        last: Option<LastResponse>,
        started: Instant,
    ) -> Error {
        report.elapsed = started.elapsed();
        let e = Error::new(kind, report, last);
        match self.inner.deadline {
            Some(d) if kind == ErrorKind::Deadline => e.with_deadline(d),
            _ => e,
        }
    }

    /// Observes an attempt and adds it to the report.
    fn note(&self, report: &mut Report, attempt: Attempt) {
        self.observe(&attempt);
        report.attempts.push(attempt);
    }

    /// Shows a request to the observer, if there is one.
    fn show_request(&self, ep: &Endpoint, request: &http::Request<crate::transport::RequestBody>) {
        if let Some(o) = &self.inner.observer {
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
        if let Some(o) = &self.inner.observer {
            o.on_attempt(attempt);
        }
    }

    /// One attempt at one link, bounded by `until`: connect, send, head
    /// and the whole body, under one timer.
    ///
    /// `hops` gets a line for each request that went out before the last
    /// one: a re-send after a stale pooled connection, a followed redirect.
    async fn attempt<C: Consume>(
        &self,
        ep: &Endpoint,
        consumer: &mut C,
        begun: Instant,
        until: Instant,
        hops: &mut Vec<Hop>,
    ) -> Ended<C::Output> {
        let mut converted = false;
        let mut ended = self
            .attempt_hops(ep, consumer, begun, until, hops, &mut converted)
            .await;
        // A POST turned into a GET by a redirect was answered: whatever
        // happened after, it is not re-sent.
        if let (true, Ended::Lost(l)) = (converted, &mut ended) {
            l.delivery = Delivery::Processed;
        }
        ended
    }

    async fn attempt_hops<C: Consume>(
        &self,
        ep: &Endpoint,
        consumer: &mut C,
        begun: Instant,
        until: Instant,
        hops: &mut Vec<Hop>,
        converted: &mut bool,
    ) -> Ended<C::Output> {
        let inner = &*self.inner;
        let limit = inner.max_body;
        let lost = |l: Lost| Ended::Lost(Box::new(l));
        let body_failed = |e: std::io::Error| {
            lost(Lost {
                stop: Some(ErrorKind::Body),
                ..Lost::new(Outcome::Io, Delivery::NotSent, format!("request body: {e}"))
            })
        };
        // One (shared) alarm for every phase and hop.
        let alarm = inner.alarms.alarm(begun, until);
        let transport = ep.transport.as_ref().unwrap_or(&inner.transport);
        let mut follow: Option<redirect::Follow> = None;
        let mut visited: Vec<Uri> = Vec::new();
        let mut stale_resent = false;
        let resp = loop {
            let mut request = match hop_request(ep, follow.as_ref()).await {
                Ok(r) => r,
                Err(e) => return body_failed(e),
            };
            let mut handoff = Handoff::new();
            request.body_mut().set_handoff(handoff.clone());
            self.show_request(ep, &request);
            let resp = match within(transport.send(request), &alarm).await {
                Some(Ok(resp)) => resp,
                Some(Err(e))
                    if e.kind() == TransportErrorKind::StaleConnection
                        && ep.idempotent
                        && !stale_resent =>
                {
                    // Go's net/http rule: the server closed a pooled
                    // connection under the request; send it once more, on
                    // a new connection, as the same try.
                    stale_resent = true;
                    hops.push(Hop {
                        outcome: Outcome::Stale,
                        status: None,
                        url: hop_url(ep, follow.as_ref()),
                        elapsed: begun.elapsed(),
                        error: format!(
                            "{e}: the pooled connection had been closed by the server; \
                             re-sent at once on a new connection"
                        )
                        .into(),
                    });
                    let mut request = match hop_request(ep, follow.as_ref()).await {
                        Ok(r) => r,
                        Err(e) => return body_failed(e),
                    };
                    handoff = Handoff::new();
                    request.body_mut().set_handoff(handoff.clone());
                    request.extensions_mut().insert(FreshConnection);
                    self.show_request(ep, &request);
                    match within(transport.send(request), &alarm).await {
                        Some(Ok(resp)) => resp,
                        Some(Err(e)) => return lost(transport_lost(e)),
                        None => return lost(timer_lost(&handoff, begun, until)),
                    }
                }
                Some(Err(e)) => return lost(transport_lost(e)),
                None => return lost(timer_lost(&handoff, begun, until)),
            };
            if let Some(o) = &inner.observer {
                o.on_response(&ResponseHead {
                    link: ep.index,
                    name: &ep.name,
                    status: resp.status(),
                    version: resp.version(),
                    headers: resp.headers(),
                });
            }
            if inner.max_redirects == 0 {
                break resp;
            }
            let current = follow.as_ref().map_or(&ep.uri, |f| &f.uri);
            let method = if follow.as_ref().is_some_and(|f| f.to_get) {
                &http::Method::GET
            } else {
                &ep.method
            };
            let next = match redirect::follow(resp.status(), resp.headers(), current, method) {
                None => break resp,
                Some(Ok(next)) => next,
                Some(Err(why)) => return lost(redirect_lost(resp, why, &alarm, limit).await),
            };
            if visited.len() as u32 >= inner.max_redirects {
                let why = format!(
                    "too many redirects: more than {} (the next to {})",
                    inner.max_redirects,
                    redirect::shown(&next.uri)
                );
                return lost(redirect_lost(resp, why, &alarm, limit).await);
            }
            if next.uri == ep.uri || visited.contains(&next.uri) {
                let why = format!("redirect loop: back to {}", redirect::shown(&next.uri));
                return lost(redirect_lost(resp, why, &alarm, limit).await);
            }
            hops.push(Hop {
                outcome: Outcome::Redirect,
                status: Some(resp.status()),
                url: hop_url(ep, follow.as_ref()),
                elapsed: begun.elapsed(),
                error: format!("redirected to {}", redirect::shown(&next.uri)).into(),
            });
            // Drained, so the connection goes back to the pool.
            let _ = within(collect(resp.into_body(), limit, None), &alarm).await;
            *converted |= next.to_get && !ep.idempotent;
            visited.push(next.uri.clone());
            let to_get = next.to_get || follow.as_ref().is_some_and(|f| f.to_get);
            follow = Some(redirect::Follow { to_get, ..next });
        };
        let (mut parts, body) = resp.into_parts();
        let head_request =
            ep.method == http::Method::HEAD && follow.as_ref().is_none_or(|f| !f.to_get);
        if !ep.secrets.is_empty() {
            redact::mark(&mut parts.headers, &ep.secrets);
        }
        let status = parts.status;
        // A HEAD answer's Content-Length describes a body that never comes.
        let bodiless =
            head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        #[cfg(feature = "compression")]
        let body = if inner.decompress && !bodiless {
            crate::decompress::decode(&mut parts.headers, body)
        } else {
            body
        };
        let len = parts
            .headers
            .get(CONTENT_LENGTH)
            .filter(|_| !bodiless)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let method = if follow.as_ref().is_some_and(|f| f.to_get) {
            &http::Method::GET
        } else {
            &ep.method
        };
        let verdict = inner.classifier.classify(&Answer::of(
            status,
            &parts.headers,
            method,
            ep.index,
            &ep.name,
        ));
        if verdict == Verdict::Success {
            let failed = match within(consumer.consume(body, limit, len), &alarm).await {
                Some(Ok(output)) => {
                    return Ended::Won {
                        status,
                        version: parts.version,
                        headers: parts.headers,
                        output,
                    }
                }
                Some(Err(ConsumeError::TooLarge(limit))) => Lost::new(
                    Outcome::TooLarge,
                    Delivery::Processed,
                    format!("body larger than the limit of {limit} bytes"),
                ),
                Some(Err(ConsumeError::Body(e))) => Lost::new(
                    Outcome::Io,
                    Delivery::Processed,
                    format!("body could not be read whole: {}", error_chain(&*e)),
                ),
                Some(Err(ConsumeError::Decode(e, bytes))) => Lost {
                    response: Some(LastResponse {
                        version: parts.version,
                        status,
                        headers: parts.headers.clone(),
                        body: Some(bytes),
                    }),
                    ..Lost::new(
                        Outcome::Decode,
                        Delivery::Processed,
                        format!("body does not decode: {e}"),
                    )
                },
                Some(Err(ConsumeError::Sink(e))) => Lost {
                    stop: Some(ErrorKind::Sink),
                    ..Lost::new(
                        Outcome::Io,
                        Delivery::Processed,
                        format!("sink failed: {e}"),
                    )
                },
                None => Lost {
                    phase: Some(Phase::Body),
                    ..Lost::new(
                        Outcome::Timeout,
                        Delivery::Processed,
                        format!(
                            "body not read whole within {:?}",
                            until.duration_since(begun)
                        ),
                    )
                },
            };
            // No byte of a failed attempt may stay with the caller.
            if let Err(e) = consumer.reset().await {
                return lost(Lost {
                    stop: Some(ErrorKind::Sink),
                    status: Some(status),
                    ..Lost::new(
                        Outcome::Io,
                        Delivery::Processed,
                        format!("sink reset failed: {e}"),
                    )
                });
            }
            return lost(Lost {
                status: Some(status),
                response: failed.response.or(Some(LastResponse {
                    version: parts.version,
                    status,
                    headers: parts.headers,
                    body: None,
                })),
                ..failed
            });
        }
        // Read the failure's body: it may be the caller's error body, and a
        // drained connection goes back to the pool.
        let body = match within(collect(body, limit, len), &alarm).await {
            Some(Ok(b)) => Some(b),
            _ => None,
        };
        lost(Lost {
            status: Some(status),
            verdict,
            retry_after: retry::retry_after(status, &parts.headers, SystemTime::now()),
            response: Some(LastResponse {
                version: parts.version,
                status,
                headers: parts.headers,
                body,
            }),
            ..Lost::new(
                Outcome::Status,
                Delivery::Rejected,
                format!("{} returned HTTP Error: {}", ep.name, status.as_u16()),
            )
        })
    }
}

/// Says in a failed attempt's error text that its certificate was not
/// verified.
fn mark_insecure(ep: &Endpoint, lost: &mut Lost) {
    if ep.insecure {
        lost.error = format!(
            "{} (TLS certificate verification was off)",
            lost.error.as_str()
        )
        .into();
    }
}

fn not_resent_kind(delivery: Delivery) -> ErrorKind {
    if delivery == Delivery::Processed {
        ErrorKind::Processed
    } else {
        ErrorKind::MaybeProcessed
    }
}

/// The message for a request that must not be re-sent.
fn not_resent(
    ep: &Endpoint,
    delivery: Delivery,
    status: Option<StatusCode>,
    attempt: Option<&Attempt>,
) -> String {
    let why = attempt.and_then(|a| a.error()).unwrap_or("unknown failure");
    let m = &ep.method;
    if delivery == Delivery::Processed {
        let s = status.map_or(0, |s| s.as_u16());
        format!(
            "accepted the {m} with {s}, but the answer could not be used ({why}); \
             it was not re-sent because the request was processed"
        )
    } else {
        format!(
            "the {m} may have been processed ({why}); it was not re-sent because {m} is not idempotent. \
             Mark the link idempotent or send an Idempotency-Key header to allow re-sending"
        )
    }
}

/// Feeds one attempt's result to its link's breaker. Dropped without a
/// result (the call was cancelled), a probe frees the way for the next one.
struct ProbeGuard<'a> {
    breaker: Option<&'a Breaker>,
    probe: bool,
}

impl<'a> ProbeGuard<'a> {
    fn none() -> Self {
        ProbeGuard {
            breaker: None,
            probe: false,
        }
    }

    fn new(breaker: &'a Breaker, probe: bool) -> Self {
        ProbeGuard {
            breaker: Some(breaker),
            probe,
        }
    }

    fn settle<O>(&mut self, ended: &Ended<O>, now: Instant) {
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
fn counts_as_failure(outcome: Outcome, status: Option<StatusCode>) -> bool {
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

type FlightFuture<'a, O> =
    Pin<Box<dyn Future<Output = (ProbeGuard<'a>, Ended<O>, Vec<Hop>)> + Send + 'a>>;

/// One attempt in flight in a hedged call.
struct Flight<'a, O> {
    index: usize,
    begun: Instant,
    /// Set once another attempt has failed: this one no longer holds back
    /// the failover to the next link.
    failed_over: bool,
    fut: FlightFuture<'a, O>,
}

enum Launch {
    Started,
    NoneLeft,
    Deadline,
}

/// The first attempt in flight to finish, and its position.
fn first_done<'f, 'a, O>(
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

impl Hop {
    fn attempt(self, link: usize, ep: &Endpoint, try_number: u32) -> Attempt {
        Attempt {
            link,
            name: ep.name.clone(),
            url: self.url,
            try_number,
            outcome: self.outcome,
            phase: None,
            status: self.status,
            elapsed: self.elapsed,
            error: Some(self.error),
            insecure: ep.insecure,
        }
    }
}

/// An attempt that got no answer: skipped, or cancelled as a hedge loser.
fn unanswered(
    index: usize,
    ep: &Endpoint,
    try_number: u32,
    outcome: Outcome,
    elapsed: Duration,
    why: ErrorText,
) -> Attempt {
    Attempt {
        link: index,
        name: ep.name.clone(),
        url: ep.url.clone(),
        try_number,
        outcome,
        phase: None,
        status: None,
        elapsed,
        error: Some(why),
        insecure: ep.insecure,
    }
}

fn skip_reason(until: Instant, now: Instant) -> ErrorText {
    if until > now {
        ErrorText::breaker_open(until - now)
    } else {
        ErrorText::fixed("breaker half-open: a probe is in flight")
    }
}

/// `fut`'s output, or `None` if the alarm fires first.
async fn within<F: Future>(fut: F, alarm: &Alarm) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = fut => Some(out),
        _ = alarm.wait() => None,
    }
}

/// Whether a lost attempt ends the call, and why.
fn stop_kind(ep: &Endpoint, lost: &Lost, deadline: Option<Instant>) -> Option<ErrorKind> {
    if lost.stop.is_some() {
        lost.stop
    } else if lost.verdict == Verdict::Final {
        Some(ErrorKind::FinalStatus)
    } else if !may_resend(ep.idempotent, lost.delivery) {
        Some(not_resent_kind(lost.delivery))
    } else if deadline.is_some_and(|d| Instant::now() >= d) {
        Some(ErrorKind::Deadline)
    } else {
        None
    }
}

fn stop_detail(kind: ErrorKind, ep: &Endpoint, lost: &Lost, report: &Report) -> Option<String> {
    match kind {
        ErrorKind::MaybeProcessed | ErrorKind::Processed => {
            Some(not_resent(ep, lost.delivery, lost.status, report.last()))
        }
        ErrorKind::Sink | ErrorKind::Body => {
            report.last().and_then(|a| a.error()).map(str::to_owned)
        }
        _ => None,
    }
}

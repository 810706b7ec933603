//! The builder: settings, their defaults, and the checks of `build`.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::breaker::{AllOpen, BreakerConfig};
use crate::classify::Classifier;
use crate::conv::{Given, IntoHeaderName, IntoHeaderValue};
use crate::error::BuildError;
use crate::hedge::Hedge;
use crate::link::{checked_header, Endpoint, Link};
use crate::observer::Observer;
use crate::redact;
use crate::retry::backoff::ExponentialBackoff;
use crate::retry::budget::RetryBudget;
use crate::timeout::Alarms;
use crate::transport::{HyperTransportBuilder, Transport};

use super::{Chain, Inner, Settings};
/// Builds a [`Chain`]. Setters never fail; [`build`](Self::build) checks
/// everything.
///
/// | setting | default |
/// | --- | --- |
/// | [`classifier`](Self::classifier) | [`Classifier::non_2xx`]: every non-2xx status falls back |
/// | [`max_body`](Self::max_body) | 16 MiB |
/// | [`timeout`](Self::timeout) (per attempt) | 10 s |
/// | [`connect_timeout`](Self::connect_timeout) | 2 s |
/// | [`idle_timeout`](Self::idle_timeout) (between reads of a streamed body) | 60 s |
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
/// | [`all_open`](Self::all_open) | [`AllOpen::fail_fast`](crate::AllOpen::fail_fast), a probe per link per second |
/// | [`sticky`](Self::sticky) | off |
/// | [`hedge`](Self::hedge) | off |
/// | [`idempotent`](Self::idempotent) (links without a mark of their own) | unset: the method and headers decide |
/// | [`policy`](Self::policy) | sets any of the above that a [`Policy`](crate::Policy) sets |
/// | [`transport`](Self::transport) | [`HyperTransport`](crate::transport::HyperTransport) |
#[must_use]
pub struct ChainBuilder {
    /// What the chain keeps.
    pub(super) settings: Settings,
    // What is spent on building it.
    links: Vec<Link>,
    headers: Vec<(Given<HeaderName>, Given<HeaderValue>)>,
    connect_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    transport_options: Option<HyperTransportBuilder>,
    http2_prior_knowledge: bool,
    transport: Option<Arc<dyn Transport>>,
    secret_headers: Vec<String>,
    idempotent: Option<bool>,
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
            .field("classifier", &self.settings.classifier)
            .field("max_body", &self.settings.max_body)
            .field("timeout", &self.settings.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("deadline", &self.settings.deadline)
            .finish_non_exhaustive()
    }
}

impl Default for ChainBuilder {
    fn default() -> Self {
        ChainBuilder {
            settings: Settings::default(),
            links: Vec::new(),
            headers: Vec::new(),
            connect_timeout: None,
            idle_timeout: Some(crate::timeout::DEFAULT_IDLE_TIMEOUT),
            transport_options: None,
            http2_prior_knowledge: false,
            transport: None,
            secret_headers: Vec::new(),
            idempotent: None,
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
        self.settings.classifier = classifier;
        self
    }

    /// The largest response body accepted, in bytes. A larger success body
    /// is a failed attempt (`too_large`) that falls back.
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.settings.max_body = bytes;
        self
    }

    /// The per-attempt timeout: connect, send, response head and the whole
    /// body. A link's own [`Link::timeout`] overrides it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// The bound between two reads of a body that streams after the call
    /// has committed to it ([`Chain::send_streaming`],
    /// [`Chain::call_streaming`], [`Chain::call_into`]); `None` leaves it
    /// unbounded. A link's own [`Link::idle_timeout`] overrides it.
    /// Default: 60 s (nginx's `proxy_read_timeout`).
    ///
    /// A streamed answer is committed at its head, so the per-attempt
    /// timeout ends there and a server that then stalls would hold the
    /// caller forever. When the bound is reached the body ends with an
    /// error whose source is [`IdleTimeout`](crate::IdleTimeout) (a proxy
    /// then aborts its client's response instead of ending it short), and
    /// the link's breaker counts a failure. Buffered calls
    /// ([`Chain::call`], [`Chain::call_json`]) read the whole body within
    /// the per-attempt timeout instead.
    pub fn idle_timeout(mut self, idle: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = idle.into();
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
        self.settings.follow_redirects = max_hops;
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
        self.settings.decompress = on;
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
        self.settings.deadline = deadline.into();
        self
    }

    /// Called for each failed attempt and for the success.
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.settings.observer = Some(Arc::new(observer));
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
        self.settings.retries = retries;
        self
    }

    /// The delays between tries on the same link.
    pub fn backoff(mut self, backoff: ExponentialBackoff) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// The longest `Retry-After` the chain waits for; a longer one moves
    /// the call to the next link at once.
    pub fn retry_after_cap(mut self, cap: Duration) -> Self {
        self.settings.retry_after_cap = cap;
        self
    }

    /// The budget that extra tries draw from. It is shared by every call
    /// through the chain and its clones, and by any chain given a clone of
    /// the same budget.
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.settings.budget = budget;
        self
    }

    /// The per-link circuit breakers (`None` turns them off). See
    /// [`BreakerConfig`](crate::BreakerConfig).
    pub fn breaker(mut self, config: impl Into<Option<BreakerConfig>>) -> Self {
        self.settings.breaker = config.into();
        self
    }

    /// What a call does when every link's breaker is open: fail fast with
    /// one probe per link per second (the default), or try the link whose
    /// break ends first. See [`AllOpen`](crate::AllOpen).
    pub fn all_open(mut self, all_open: AllOpen) -> Self {
        self.settings.all_open = all_open;
        self
    }

    /// Sticky failover: while a link's breaker is open, calls start at the
    /// first healthy link, and the link's recovery is probed in the
    /// background (for idempotent links) instead of on a caller's request.
    /// Once a probe succeeds, calls return to the link: the order of the
    /// links stays the priority order.
    pub fn sticky(mut self, sticky: bool) -> Self {
        self.settings.sticky = sticky;
        self
    }

    /// Hedged requests: start the next link when the current one has not
    /// answered within the hedge delay. See [`Hedge`](crate::Hedge).
    pub fn hedge(mut self, hedge: impl Into<Option<Hedge>>) -> Self {
        self.settings.hedge = hedge.into();
        self
    }

    /// Marks every link that has no mark of its own ([`Link::idempotent`])
    /// as idempotent (`true`) or not (`false`), so that a request whose
    /// outcome is unknown may, or may not, be re-sent. Default: unset, so
    /// each link's method and headers decide.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Checks every link and setting and builds the chain. Nothing is sent.
    pub fn build(mut self) -> Result<Chain, BuildError> {
        self.check_settings()?;
        let secrets = self.secret_names()?;
        let mut defaults = HeaderMap::new();
        for (n, v) in &self.headers {
            let (name, value) = checked_header(n, v).map_err(BuildError::DefaultHeader)?;
            defaults.append(name, value);
        }
        let mut links = std::mem::take(&mut self.links);
        for l in links.iter_mut() {
            l.idempotent = l.idempotent.or(self.idempotent);
        }
        let mut shared = Vec::with_capacity(links.len());
        let mut probes = Vec::with_capacity(links.len());
        for (i, l) in links.iter().enumerate() {
            if let Some(b) = &l.breaker {
                b.config.validate()?;
            }
            shared.push(l.breaker.clone());
            probes.push(l.probe_target(i)?);
        }
        let mut endpoints = links
            .into_iter()
            .enumerate()
            .map(|(i, l)| l.validate(i, &defaults, &secrets, self.http2_prior_knowledge))
            .collect::<Result<Box<[_]>, _>>()?;
        let transport = self.take_transport()?;
        for ep in endpoints.iter_mut() {
            self.settle_endpoint(ep, &transport)?;
        }
        let retries_possible = endpoints
            .iter()
            .any(|e| e.retries.unwrap_or(self.settings.retries) > 0);
        Ok(Chain::assemble(Inner {
            settings: self.settings,
            endpoints,
            transport,
            retries_possible,
            calls: AtomicU64::new(0),
            alarms: Alarms::new(),
            breakers: None,
            shared: shared.into(),
            probes: probes.into(),
            latencies: Box::default(),
        }))
    }

    /// The chain-wide settings and the links' own bounds, before any link
    /// is parsed.
    fn check_settings(&self) -> Result<(), BuildError> {
        if self.links.is_empty() {
            return Err(BuildError::NoLinks);
        }
        use crate::limits::{MAX_LINKS, MAX_RETRIES};
        if self.links.len() > MAX_LINKS {
            return Err(BuildError::Setting {
                setting: "links",
                reason: format!("{} links; the limit is {MAX_LINKS}", self.links.len()),
            });
        }
        if let Some(r) = std::iter::once(self.settings.retries)
            .chain(self.links.iter().filter_map(|l| l.retries))
            .find(|&r| r > MAX_RETRIES)
        {
            return Err(BuildError::Setting {
                setting: "retries",
                reason: format!("{r} extra tries; the limit is {MAX_RETRIES}"),
            });
        }
        let durations = [
            ("timeout", Some(self.settings.timeout)),
            ("connect_timeout", self.connect_timeout),
            ("deadline", self.settings.deadline),
            ("idle_timeout", self.idle_timeout),
        ];
        let links = self.links.iter().flat_map(|l| {
            [
                ("link timeout", l.timeout),
                ("link idle_timeout", l.idle_timeout),
            ]
        });
        for (setting, d) in durations.into_iter().chain(links) {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(BuildError::Setting {
                    setting,
                    reason: "must be greater than zero".into(),
                });
            }
        }
        self.settings.backoff.validate()?;
        self.settings.budget.validate()?;
        if let Some(b) = &self.settings.breaker {
            b.validate()?;
        }
        self.settings.all_open.validate()?;
        if let Some(h) = &self.settings.hedge {
            h.validate()?;
        }
        Ok(())
    }

    /// The header names marked secret, checked.
    fn secret_names(&self) -> Result<Vec<HeaderName>, BuildError> {
        self.secret_headers
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.trim().as_bytes()).map_err(|_| BuildError::Setting {
                    setting: "secret_header",
                    reason: format!("{n:?} is not a valid header name"),
                })
            })
            .collect()
    }

    /// The chain's transport: the one given, or the default one built
    /// with the chain's connect timeout.
    fn take_transport(&mut self) -> Result<Arc<dyn Transport>, BuildError> {
        if let Some(t) = self.transport.take() {
            return Ok(t);
        }
        let mut options = self.transport_options.take().unwrap_or_default();
        if let Some(t) = self.connect_timeout {
            options = options.connect_timeout(Some(t));
        }
        Ok(Arc::new(options.build()?))
    }

    /// What a link takes from the chain once both are built: the idle
    /// timeout, `Accept-Encoding`, and whether its TLS is unverified.
    fn settle_endpoint(
        &self,
        ep: &mut Endpoint,
        transport: &Arc<dyn Transport>,
    ) -> Result<(), BuildError> {
        ep.idle_timeout = ep.idle_timeout.or(self.idle_timeout);
        #[cfg(feature = "compression")]
        if self.settings.decompress {
            ep.headers
                .entry(http::header::ACCEPT_ENCODING)
                .or_insert(crate::decompress::ACCEPT);
        }
        let t = ep.transport.as_ref().unwrap_or(transport);
        ep.insecure =
            ep.uri.scheme() == Some(&http::uri::Scheme::HTTPS) && t.danger_accepts_invalid_certs();
        if ep.insecure {
            tracing::warn!(link = %ep.name, "TLS certificate verification is off for this link");
        }
        match &ep.unix {
            Some(path) if !t.supports_unix_sockets() => Err(BuildError::Link {
                index: ep.index,
                name: ep.name.to_string(),
                problem: crate::error::LinkProblem::UnixSocket {
                    path: path.display().to_string(),
                    reason: "the link's transport does not connect to Unix sockets".into(),
                },
            }),
            _ => Ok(()),
        }
    }
}

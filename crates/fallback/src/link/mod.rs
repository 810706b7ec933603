//! A link: one full request of the chain (name, method, URL, headers,
//! body), checked when the chain is built; what it becomes once built
//! ([`Endpoint`], `endpoint.rs`); and the parsing of what a caller writes
//! for it (`parse.rs`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Uri};

use crate::body::Body;
use crate::conv::{Given, IntoHeaderName, IntoHeaderValue, IntoMethod, IntoUrl};
use crate::error::{BuildError, LinkProblem};
use crate::redact;
use crate::safety;
use crate::transport::Transport;

mod endpoint;
mod parse;

pub(crate) use endpoint::Endpoint;
use parse::parse_method;
pub(crate) use parse::{base64, checked_header};
use parse::{check_header_sizes, default_name, parse_url, take_userinfo};

/// One link of a chain: a complete request of its own.
///
/// Setters never fail; everything is checked when the chain is built, and a
/// bad link is a [`BuildError`] that names it and the culprit.
///
/// ```
/// use fallback_chain::Link;
/// let primary = Link::get("http://127.0.0.1:8080/orders").name("primary");
/// let backup = Link::post("http://127.0.0.1:8081/orders")
///     .header("X-Api-Key", "k")
///     .json(&serde_json::json!({"Name": "Random", "Amount": 100}));
/// # let _ = (primary, backup);
/// ```
#[derive(Clone)]
#[must_use]
pub struct Link {
    pub(crate) name: Option<String>,
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<(Given<HeaderName>, Given<HeaderValue>)>,
    pub(crate) body: Body,
    pub(crate) idempotent: Option<bool>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) retries: Option<u32>,
    pub(crate) transport: Option<Arc<dyn Transport>>,
    pub(crate) secret_headers: Vec<String>,
    pub(crate) http2_prior_knowledge: Option<bool>,
    pub(crate) breaker: Option<crate::breaker::SharedBreaker>,
    pub(crate) probe: Option<String>,
    /// The gRPC service whose health the background probe asks.
    pub(crate) grpc_health: Option<String>,
    /// Where connections go instead of the URL's host and port.
    pub(crate) unix_socket: Option<std::path::PathBuf>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_with(f, &[])
    }
}

impl Link {
    /// `Debug`, hiding the values of the built-in secret headers, of this
    /// link's marked ones and of `marked` (the chain's).
    pub(crate) fn fmt_with(&self, f: &mut fmt::Formatter<'_>, marked: &[String]) -> fmt::Result {
        let secret = |n: &str| {
            redact::is_secret_header(n)
                || self
                    .secret_headers
                    .iter()
                    .chain(marked)
                    .any(|m| m.trim().eq_ignore_ascii_case(n.trim()))
        };
        let headers: Vec<_> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let n = n.as_str();
                let secret = secret(n) || matches!(v, Given::Typed(v) if v.is_sensitive());
                (n, if secret { redact::REDACTED } else { v.as_str() })
            })
            .collect();
        f.debug_struct("Link")
            .field("name", &self.name)
            .field("method", &self.method)
            .field("url", &redact::raw_url(&self.url))
            .field("headers", &headers)
            .field("body", &self.body)
            .field("idempotent", &self.idempotent)
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("retries", &self.retries)
            .field("own_transport", &self.transport.is_some())
            .field("shared_breaker", &self.breaker.is_some())
            .field("probe", &self.probe.as_deref().map(redact::raw_url))
            .field("unix_socket", &self.unix_socket)
            .finish()
    }
}

impl Link {
    /// A link sending `method` to `url`: an [`http::Method`] or a string,
    /// and an [`http::Uri`] or a string. Both are checked when the chain is
    /// built.
    pub fn new(method: impl IntoMethod, url: impl IntoUrl) -> Link {
        Link {
            name: None,
            method: method.into_method(),
            url: url.into_url(),
            headers: Vec::new(),
            body: Body::empty(),
            idempotent: None,
            timeout: None,
            idle_timeout: None,
            retries: None,
            transport: None,
            secret_headers: Vec::new(),
            http2_prior_knowledge: None,
            breaker: None,
            probe: None,
            grpc_health: None,
            unix_socket: None,
        }
    }

    /// A `GET` link.
    pub fn get(url: impl IntoUrl) -> Link {
        Link::new("GET", url)
    }

    /// A `POST` link.
    pub fn post(url: impl IntoUrl) -> Link {
        Link::new("POST", url)
    }

    /// A `PUT` link.
    pub fn put(url: impl IntoUrl) -> Link {
        Link::new("PUT", url)
    }

    /// A `PATCH` link.
    pub fn patch(url: impl IntoUrl) -> Link {
        Link::new("PATCH", url)
    }

    /// A `DELETE` link.
    pub fn delete(url: impl IntoUrl) -> Link {
        Link::new("DELETE", url)
    }

    /// A `HEAD` link.
    pub fn head(url: impl IntoUrl) -> Link {
        Link::new("HEAD", url)
    }

    /// The name used in reports and errors. Default: the URL's host and port.
    pub fn name(mut self, name: impl Into<String>) -> Link {
        self.name = Some(name.into());
        self
    }

    /// Sets the method (case-insensitive for the standard methods).
    pub fn method(mut self, method: impl IntoMethod) -> Link {
        self.method = method.into_method();
        self
    }

    /// Adds a header. A link's headers replace chain-wide defaults of the
    /// same name; several values of one name are all sent.
    pub fn header(mut self, name: impl IntoHeaderName, value: impl IntoHeaderValue) -> Link {
        self.headers
            .push((name.into_header_name(), value.into_header_value()));
        self
    }

    /// Sends Basic credentials in `Authorization` (a secret: never
    /// printed).
    pub fn basic_auth(self, user: &str, password: Option<&str>) -> Link {
        let pair = format!("{user}:{}", password.unwrap_or(""));
        self.header(
            "Authorization",
            format!("Basic {}", base64(pair.as_bytes())),
        )
    }

    /// Treats header `name` as a secret on this link, beyond the built-in
    /// rule of [`crate::redact`]: its value never appears in `Debug`,
    /// reports, errors, tracing or [`Chain::links`](crate::Chain::links).
    pub fn secret_header(mut self, name: impl Into<String>) -> Link {
        self.secret_headers.push(name.into());
        self
    }

    /// Sends this link as HTTP/2 without upgrade (h2c) when its URL is
    /// `http://`, overriding [`ChainBuilder::http2_prior_knowledge`]. An
    /// `https://` link negotiates the version by ALPN either way.
    ///
    /// [`ChainBuilder::http2_prior_knowledge`]: crate::ChainBuilder::http2_prior_knowledge
    pub fn http2_prior_knowledge(mut self, on: bool) -> Link {
        self.http2_prior_knowledge = Some(on);
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Body>) -> Link {
        self.body = body.into();
        self
    }

    /// Sets a JSON body: any `Serialize` value, with
    /// `Content-Type: application/json` unless a header sets another.
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Link {
        self.body(Body::json(value))
    }

    /// Marks the request idempotent (`true`), so it may be re-sent after an
    /// unknown outcome, or not (`false`), even for GET. Default: by method,
    /// or `true` when an `Idempotency-Key` header is set. See
    /// [the re-send rule](crate#when-is-a-request-re-sent).
    pub fn idempotent(mut self, idempotent: bool) -> Link {
        self.idempotent = Some(idempotent);
        self
    }

    /// This link's per-attempt timeout, overriding the chain's.
    pub fn timeout(mut self, timeout: Duration) -> Link {
        self.timeout = Some(timeout);
        self
    }

    /// This link's bound between two reads of a streamed body, overriding
    /// the chain's [`idle_timeout`](crate::ChainBuilder::idle_timeout).
    pub fn idle_timeout(mut self, idle: Duration) -> Link {
        self.idle_timeout = Some(idle);
        self
    }

    /// Extra tries on this link before moving on, overriding the chain's
    /// [`retries`](crate::ChainBuilder::retries). See [`ChainBuilder::retries`](crate::ChainBuilder::retries).
    pub fn retries(mut self, retries: u32) -> Link {
        self.retries = Some(retries);
        self
    }

    /// Sends this link through its own transport (another client, a tower
    /// service, …) instead of the chain's.
    pub fn transport(mut self, transport: impl Transport) -> Link {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Uses `breaker`, shared with links of other chains, instead of a
    /// breaker of this link's own. See [`SharedBreaker`].
    ///
    /// [`SharedBreaker`]: crate::SharedBreaker
    pub fn breaker(mut self, breaker: crate::breaker::SharedBreaker) -> Link {
        self.breaker = Some(breaker);
        self
    }

    /// The URL of this link's health probe: with sticky failover on
    /// ([`ChainBuilder::sticky`]), an open link's recovery is checked by a
    /// background `GET` of this URL instead of the link's own request.
    /// Checked when the chain is built. Default: the link's own request.
    ///
    /// ```
    /// use fallback_chain::Link;
    /// let primary = Link::post("http://127.0.0.1:8080/orders")
    ///     .probe("http://127.0.0.1:8080/healthz");
    /// # let _ = primary;
    /// ```
    ///
    /// [`ChainBuilder::sticky`]: crate::ChainBuilder::sticky
    pub fn probe(mut self, url: impl Into<String>) -> Link {
        self.probe = Some(url.into());
        self
    }

    /// With sticky failover on ([`ChainBuilder::sticky`]), an open link's
    /// recovery is checked with the standard gRPC health-checking protocol
    /// instead of the link's own request: a `grpc.health.v1.Health/Check`
    /// of `service` (empty: the server as a whole) at the link's URL, and
    /// only `SERVING` re-admits it. Over [`probe`](Self::probe).
    ///
    /// ```
    /// use fallback_chain::Link;
    /// let primary = Link::post("http://127.0.0.1:50051")
    ///     .http2_prior_knowledge(true)
    ///     .grpc_health_probe("orders.v1.Orders");
    /// # let _ = primary;
    /// ```
    ///
    /// [`ChainBuilder::sticky`]: crate::ChainBuilder::sticky
    pub fn grpc_health_probe(mut self, service: impl Into<String>) -> Link {
        self.grpc_health = Some(service.into());
        self
    }

    /// The link's probe, checked; `None` when the link has none.
    /// Connects to the Unix socket at `path` instead of the URL's host
    /// and port, as curl's `--unix-socket` does: the URL still gives the
    /// `Host` header, the path and the query. `http://` URLs only (TLS over
    /// a Unix socket is refused when the chain is built), on a transport
    /// that supports it ([`Transport::supports_unix_sockets`]; the default
    /// one does). Default: none.
    ///
    /// ```
    /// use fallback_chain::Link;
    /// let link = Link::get("http://orders.internal/orders/42")
    ///     .unix_socket("/run/orders/http.sock");
    /// ```
    ///
    /// [`Transport::supports_unix_sockets`]: crate::transport::Transport::supports_unix_sockets
    pub fn unix_socket(mut self, path: impl Into<std::path::PathBuf>) -> Link {
        self.unix_socket = Some(path.into());
        self
    }

    pub(crate) fn probe_target(&self, index: usize) -> Result<Option<Probe>, BuildError> {
        if let Some(service) = &self.grpc_health {
            return Ok(Some(Probe::GrpcHealth(service.clone())));
        }
        Ok(self.probe_uri(index)?.map(Probe::Get))
    }

    /// The probe URL, checked; `None` when the link has none.
    fn probe_uri(&self, index: usize) -> Result<Option<Uri>, BuildError> {
        let Some(url) = &self.probe else {
            return Ok(None);
        };
        let fail = |problem: LinkProblem| BuildError::Link {
            index,
            name: self
                .name
                .clone()
                .unwrap_or_else(|| redact::raw_url(&self.url)),
            problem,
        };
        let uri = parse_url(url).map_err(|p| match p {
            LinkProblem::Url { url, reason } => fail(LinkProblem::Url {
                url,
                reason: format!("probe: {reason}"),
            }),
            p => fail(LinkProblem::Url {
                url: redact::raw_url(url),
                reason: format!("probe: {p}"),
            }),
        })?;
        match take_userinfo(uri) {
            (uri, None) => Ok(Some(uri)),
            (_, Some(_)) => Err(fail(LinkProblem::Url {
                url: redact::raw_url(url),
                reason: "probe: credentials belong in the link's headers, not the probe URL".into(),
            })),
        }
    }

    /// Checks everything and freezes the link.
    pub(crate) fn validate(
        self,
        index: usize,
        defaults: &HeaderMap,
        chain_secrets: &[HeaderName],
        chain_h2c: bool,
    ) -> Result<Endpoint, BuildError> {
        let fail = |name: &Option<String>, problem: LinkProblem| BuildError::Link {
            index,
            name: name.clone().unwrap_or_else(|| redact::raw_url(&self.url)),
            problem,
        };
        let uri = parse_url(&self.url).map_err(|p| fail(&self.name, p))?;
        // Credentials in the URL become a Basic Authorization header, and
        // leave the URI, so no client log or pool key ever shows them.
        let (uri, basic) = take_userinfo(uri);
        let method = parse_method(&self.method).map_err(|p| fail(&self.name, p))?;
        let mut headers = HeaderMap::new();
        for (n, v) in &self.headers {
            let (name, value) = checked_header(n, v).map_err(|p| fail(&self.name, p))?;
            headers.append(name, value);
        }
        let mut secrets = chain_secrets.to_vec();
        for n in &self.secret_headers {
            let name = HeaderName::from_bytes(n.trim().as_bytes())
                .map_err(|_| fail(&self.name, LinkProblem::HeaderName { name: n.clone() }))?;
            secrets.push(name);
        }
        self.body.check().map_err(|p| fail(&self.name, p))?;
        let unix = match &self.unix_socket {
            Some(path) => Some(unix_socket(path, &uri).map_err(|p| fail(&self.name, p))?),
            None => None,
        };
        for (name, value) in defaults {
            if !headers.contains_key(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(basic) = basic {
            if !headers.contains_key(http::header::AUTHORIZATION) {
                headers.insert(http::header::AUTHORIZATION, basic);
            }
        }
        check_header_sizes(&headers).map_err(|p| fail(&self.name, p))?;
        if self.body.is_json() && !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        redact::mark(&mut headers, &secrets);
        let name = self.name.unwrap_or_else(|| default_name(&uri));
        let idempotent = safety::is_idempotent(&method, &headers, self.idempotent);
        let h2c = self.http2_prior_knowledge.unwrap_or(chain_h2c)
            && uri.scheme() == Some(&http::uri::Scheme::HTTP);

        Ok(Endpoint {
            index,
            version: if h2c {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            },
            insecure: false,
            grpc: crate::grpc::is_grpc(&headers),
            deadline: None,
            name: name.into(),
            url: redact::uri(&uri).into(),
            method,
            uri,
            headers,
            body: self.body,
            idempotent,
            marked: self.idempotent,
            timeout: self.timeout,
            idle_timeout: self.idle_timeout,
            retries: self.retries,
            transport: self.transport,
            secrets: secrets.into(),
            unix,
        })
    }
}

/// The longest path a Unix socket address holds (Linux's `sun_path`, less
/// its terminating NUL).
const MAX_UNIX_PATH: usize = 107;

/// A link's Unix socket, checked: a plain `http://` URL, a path that fits
/// a socket address.
fn unix_socket(path: &std::path::Path, uri: &Uri) -> Result<Arc<std::path::Path>, LinkProblem> {
    let problem = |reason: &str| LinkProblem::UnixSocket {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    };
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return Err(problem("only http:// URLs go over a Unix socket"));
    }
    let len = path.as_os_str().len();
    if len == 0 {
        return Err(problem("the path is empty"));
    }
    if len > MAX_UNIX_PATH {
        return Err(problem(&format!(
            "{len} bytes; a Unix socket's path holds at most {MAX_UNIX_PATH}"
        )));
    }
    Ok(Arc::from(path))
}

/// What a link's background probe sends.
#[derive(Clone, Debug)]
pub(crate) enum Probe {
    /// A `GET` of this URL.
    Get(Uri),
    /// A gRPC health check of this service.
    GrpcHealth(String),
}

/// A read-only view of a built chain's link, from [`Chain::links`].
///
/// Secrets stay hidden: the URL has no userinfo or secret query values,
/// and the values of secret headers are redacted (see [`crate::redact`]).
///
/// [`Chain::links`]: crate::Chain::links
#[derive(Clone, Debug)]
pub struct LinkInfo {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
    pub(crate) idempotent: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) retries: Option<u32>,
}

impl LinkInfo {
    /// The link's index, from 0.
    pub fn index(&self) -> usize {
        self.index
    }
    /// The link's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }
    /// The URL, without userinfo.
    pub fn url(&self) -> &str {
        &self.url
    }
    /// The headers sent (chain-wide defaults merged), secrets redacted.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }
    /// A short description of the body, e.g. `json, 31 bytes`.
    pub fn body(&self) -> &str {
        &self.body
    }
    /// Whether the request may be re-sent after an unknown outcome.
    pub fn idempotent(&self) -> bool {
        self.idempotent
    }
    /// This link's own timeout, if it overrides the chain's.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    /// This link's bound between two reads of a streamed body: its own,
    /// else the chain's (`None`: unbounded).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }
    /// This link's own retries, if they override the chain's.
    pub fn retries(&self) -> Option<u32> {
        self.retries
    }
}

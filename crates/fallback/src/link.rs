//! A link: one full request of the chain (name, method, URL, headers, body).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Uri};

use crate::body::Body;
use crate::conv::{Given, IntoHeaderName, IntoHeaderValue, IntoMethod, IntoUrl};
use crate::error::{BuildError, LinkProblem};
use crate::redact;
use crate::safety;
use crate::transport::{RequestBody, Transport};

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

    /// The probe URL, checked; `None` when the link has none.
    pub(crate) fn probe_uri(&self, index: usize) -> Result<Option<Uri>, BuildError> {
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
        })
    }
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

/// A validated link, ready to send.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// Its position in the chain.
    pub(crate) index: usize,
    pub(crate) name: Arc<str>,
    pub(crate) url: Arc<str>,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Body,
    pub(crate) idempotent: bool,
    /// The caller's own idempotency marking, if any.
    pub(crate) marked: Option<bool>,
    pub(crate) timeout: Option<Duration>,
    /// Between two reads of a streamed body: the link's, else the chain's.
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) retries: Option<u32>,
    pub(crate) transport: Option<Arc<dyn Transport>>,
    /// Header names marked secret (the chain's and the link's own).
    pub(crate) secrets: Arc<[HeaderName]>,
    /// HTTP/2 for h2c links, else HTTP/1.1 (TLS links negotiate).
    pub(crate) version: http::Version,
    /// TLS without certificate verification.
    pub(crate) insecure: bool,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("method", &self.method)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The link's health probe: a bodiless `GET` of `uri`, with the link's
    /// headers.
    pub(crate) fn probe(&self, uri: &Uri) -> Endpoint {
        let mut probe = Endpoint {
            url: redact::uri(uri).into(),
            method: Method::GET,
            uri: uri.clone(),
            body: Body::empty(),
            idempotent: true,
            ..self.clone()
        };
        probe.headers.remove(CONTENT_TYPE);
        probe.headers.remove(http::header::CONTENT_LENGTH);
        probe
    }

    /// This link, sending `req`'s method, headers, body, path and query
    /// instead of its own; its URL gives the scheme, host and path prefix.
    pub(crate) fn with_request(&self, req: &http::request::Parts, body: &Body) -> Endpoint {
        let mut headers = self.headers.clone();
        for name in req.headers.keys() {
            headers.remove(name);
        }
        for (name, value) in &req.headers {
            if name != http::header::HOST {
                headers.append(name.clone(), value.clone());
            }
        }
        redact::mark(&mut headers, &self.secrets);
        let uri = join_uri(&self.uri, &req.uri);
        let method = req.method.clone();
        Endpoint {
            index: self.index,
            name: self.name.clone(),
            url: redact::uri(&uri).into(),
            idempotent: safety::is_idempotent(&method, &headers, self.marked),
            method,
            uri,
            headers,
            body: body.clone(),
            marked: self.marked,
            timeout: self.timeout,
            idle_timeout: self.idle_timeout,
            retries: self.retries,
            transport: self.transport.clone(),
            secrets: self.secrets.clone(),
            version: self.version,
            insecure: self.insecure,
        }
    }
    pub(crate) fn info(&self, index: usize) -> LinkInfo {
        let body = format!("{:?}", self.body);
        LinkInfo {
            index,
            name: self.name.to_string(),
            method: self.method.to_string(),
            url: self.url.to_string(),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| {
                    let shown = if v.is_sensitive() {
                        redact::REDACTED
                    } else {
                        let v = v.to_str().unwrap_or("<binary>");
                        redact::header_value(n.as_str(), v, &self.secrets)
                    };
                    (n.to_string(), shown.to_owned())
                })
                .collect(),
            body: body
                .strip_prefix("Body(")
                .and_then(|b| b.strip_suffix(')'))
                .unwrap_or(&body)
                .to_owned(),
            idempotent: self.idempotent,
            timeout: self.timeout,
            idle_timeout: self.idle_timeout,
            retries: self.retries,
        }
    }

    /// A fresh request for one attempt.
    pub(crate) async fn request(&self) -> std::io::Result<http::Request<RequestBody>> {
        let body = match self.body.ready() {
            Some(b) => b,
            None => self.body.open().await?,
        };
        let mut req = http::Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.version_mut() = self.version;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        Ok(req)
    }
}

/// Refuses header values and header sets beyond [`crate::limits`], naming
/// the header (never its value).
fn check_header_sizes(headers: &HeaderMap) -> Result<(), LinkProblem> {
    use crate::limits::{MAX_HEADERS_BYTES, MAX_HEADER_VALUE_BYTES};
    let mut total = 0;
    for (name, value) in headers {
        if value.len() > MAX_HEADER_VALUE_BYTES {
            return Err(LinkProblem::HeadersTooLarge {
                what: format!("the value of header {:?}", name.as_str()),
                size: value.len(),
                limit: MAX_HEADER_VALUE_BYTES,
            });
        }
        total += name.as_str().len() + value.len() + 4;
    }
    if total > MAX_HEADERS_BYTES {
        return Err(LinkProblem::HeadersTooLarge {
            what: "the link's headers together".into(),
            size: total,
            limit: MAX_HEADERS_BYTES,
        });
    }
    Ok(())
}

fn parse_url(url: &str) -> Result<Uri, LinkProblem> {
    let problem = |reason: &str| LinkProblem::Url {
        url: redact::raw_url(url),
        reason: reason.to_owned(),
    };
    let url_t = url.trim();
    // Name a foreign scheme even when the rest would not parse (file:///x).
    if let Some((scheme, _)) = url_t.split_once(':') {
        let looks_like_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if looks_like_scheme
            && !scheme.eq_ignore_ascii_case("http")
            && !scheme.eq_ignore_ascii_case("https")
        {
            return Err(LinkProblem::Scheme {
                url: redact::raw_url(url),
            });
        }
    }
    let uri: Uri = url_t
        .parse()
        .map_err(|e: http::uri::InvalidUri| problem(&e.to_string()))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        Some(_) => {
            return Err(LinkProblem::Scheme {
                url: redact::raw_url(url),
            })
        }
        None => return Err(problem("missing scheme: expected http:// or https://")),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => {}
        _ => return Err(problem("missing host")),
    }
    // `Uri` keeps a port that does not fit in 16 bits, and clients then
    // quietly use the scheme's default port instead.
    if let Some(port) = uri.authority().and_then(|a| raw_port(a.as_str())) {
        match port.parse::<u32>() {
            Ok(1..=65535) => {}
            _ => {
                return Err(problem(&format!(
                    "port {port} is out of range: ports are 1 to 65535"
                )))
            }
        }
    }
    Ok(uri)
}

/// The port as written in an authority (`user@host:port`, `[::1]:port`),
/// if there is a non-empty one.
fn raw_port(authority: &str) -> Option<&str> {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = match host_port.rfind(']') {
        Some(i) => &host_port[i + 1..],
        None => host_port,
    };
    after_host
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

pub(crate) fn parse_method(method: &str) -> Result<Method, LinkProblem> {
    let upper = method.to_ascii_uppercase();
    let m = if [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ]
    .contains(&upper.as_str())
    {
        upper.as_str()
    } else {
        method
    };
    match Method::from_bytes(m.as_bytes()) {
        Ok(m) if m != Method::CONNECT => Ok(m),
        _ => Err(LinkProblem::Method {
            method: method.to_owned(),
        }),
    }
}

/// A header as given, checked: typed parts as they are, text parsed.
pub(crate) fn checked_header(
    name: &Given<HeaderName>,
    value: &Given<HeaderValue>,
) -> Result<(HeaderName, HeaderValue), LinkProblem> {
    match (name, value) {
        (Given::Typed(n), Given::Typed(v)) => Ok((n.clone(), v.clone())),
        (Given::Typed(n), Given::Text(v)) => parse_header(n.as_str(), v),
        (Given::Text(n), Given::Typed(v)) => Ok((parse_header(n, "")?.0, v.clone())),
        (Given::Text(n), Given::Text(v)) => parse_header(n, v),
    }
}

pub(crate) fn parse_header(
    name: &str,
    value: &str,
) -> Result<(HeaderName, HeaderValue), LinkProblem> {
    let hname =
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| LinkProblem::HeaderName {
            name: name.to_owned(),
        })?;
    let reason = if value.contains(['\r', '\n']) {
        Some("contains CR or LF")
    } else if value.bytes().any(|b| b == 0) {
        Some("contains a NUL byte")
    } else {
        None
    };
    let hvalue = match reason {
        Some(r) => Err(r),
        None => HeaderValue::from_str(value.trim()).map_err(|_| "contains a control character"),
    }
    .map_err(|reason| LinkProblem::HeaderValue {
        name: name.to_owned(),
        reason,
    })?;
    Ok((hname, hvalue))
}

/// Removes `user:password@` from the URI, returning it as a Basic
/// `Authorization` value (marked sensitive).
fn take_userinfo(uri: Uri) -> (Uri, Option<HeaderValue>) {
    let Some(auth) = uri.authority() else {
        return (uri, None);
    };
    let Some((userinfo, host)) = auth.as_str().rsplit_once('@') else {
        return (uri, None);
    };
    let decoded = percent_decode(userinfo);
    let mut value = HeaderValue::from_str(&format!("Basic {}", base64(&decoded))).ok();
    if let Some(v) = &mut value {
        v.set_sensitive(true);
    }
    let mut parts = uri.clone().into_parts();
    parts.authority = host.parse().ok();
    match Uri::from_parts(parts) {
        Ok(clean) => (clean, value),
        Err(_) => (uri, None),
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

pub(crate) fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (c as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `base`'s scheme and authority, `base`'s path followed by `req`'s path,
/// and `req`'s query (or else `base`'s).
fn join_uri(base: &Uri, req: &Uri) -> Uri {
    let prefix = base.path().trim_end_matches('/');
    let path = match req.path() {
        "" | "/" if !prefix.is_empty() => prefix.to_owned(),
        p => format!("{prefix}{p}"),
    };
    let pq = match req.query().or(base.query()) {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = base.clone().into_parts();
    parts.path_and_query = pq.parse().ok().or(parts.path_and_query);
    Uri::from_parts(parts).unwrap_or_else(|_| base.clone())
}

fn default_name(uri: &Uri) -> String {
    let host = uri.host().unwrap_or("");
    match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_becomes_basic_auth() {
        let (uri, auth) = take_userinfo("http://Aladdin:open%20sesame@h:8/x".parse().unwrap());
        assert_eq!(uri.to_string(), "http://h:8/x");
        assert_eq!(auth.unwrap(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        let (uri, auth) = take_userinfo("http://h/x".parse().unwrap());
        assert_eq!((uri.to_string(), auth), ("http://h/x".to_owned(), None));
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn ports_as_written() {
        assert_eq!(raw_port("h:8080"), Some("8080"));
        assert_eq!(raw_port("u:p@h:99999"), Some("99999"));
        assert_eq!(raw_port("[::1]:65536"), Some("65536"));
        assert_eq!(raw_port("[::1]"), None);
        assert_eq!(raw_port("u:p@h"), None);
        assert_eq!(raw_port("h:"), None);
        for url in [
            "http://h:99999/",
            "http://h:65536/",
            "http://h:0/",
            "http://[::1]:70000/",
        ] {
            let e = parse_url(url).unwrap_err().to_string();
            assert!(e.contains("out of range"), "{url}: {e}");
        }
        for url in [
            "http://h:1/",
            "http://h:65535/",
            "http://[::1]:8080/",
            "http://h/",
        ] {
            assert!(parse_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn methods() {
        assert_eq!(parse_method("post").unwrap(), Method::POST);
        assert_eq!(parse_method("PURGE").unwrap().as_str(), "PURGE");
        assert!(parse_method("GE T").is_err());
        assert!(parse_method("").is_err());
        assert!(parse_method("CONNECT").is_err());
    }
}

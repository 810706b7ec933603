//! A built link: the request as it goes out, its own settings, and how a
//! request given to `Chain::send` is laid over it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Uri};
use tokio::time::Instant;

use super::parse::join_uri;
use super::LinkInfo;
use crate::body::Body;
use crate::redact;
use crate::safety;
use crate::transport::{RequestBody, Transport};

static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

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
    /// The request is gRPC (its `content-type`): its answers are read in
    /// gRPC's terms.
    pub(crate) grpc: bool,
    /// A gRPC call's deadline, sent to each attempt as the `grpc-timeout`
    /// left.
    pub(crate) deadline: Option<Instant>,
    /// The Unix socket connections go to, instead of the URL's host.
    pub(crate) unix: Option<Arc<std::path::Path>>,
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
            grpc: false,
            deadline: None,
            ..self.clone()
        };
        probe.headers.remove(CONTENT_TYPE);
        probe.headers.remove(http::header::CONTENT_LENGTH);
        probe
    }

    /// The link's gRPC health probe: a `grpc.health.v1.Health/Check` of
    /// `service`, at the link's URL, with the link's headers.
    pub(crate) fn grpc_health_probe(&self, service: &str) -> Endpoint {
        let uri = join_uri(&self.uri, &Uri::from_static(crate::grpc::HEALTH_CHECK));
        let mut headers = self.headers.clone();
        headers.remove(http::header::CONTENT_LENGTH);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        Endpoint {
            url: redact::uri(&uri).into(),
            method: Method::POST,
            uri,
            headers,
            body: Body::from(crate::grpc::health_request(service)),
            idempotent: true,
            grpc: true,
            deadline: None,
            ..self.clone()
        }
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
        let grpc = crate::grpc::is_grpc(&headers);
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
            grpc,
            deadline: None,
            unix: self.unix.clone(),
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
        Ok(self.request_with(body))
    }

    /// A fresh request for one attempt, if its body needs no opening (a
    /// file's does): the common path, which awaits nothing.
    pub(crate) fn request_now(&self) -> Option<http::Request<RequestBody>> {
        self.body.ready().map(|body| self.request_with(body))
    }

    fn request_with(&self, body: RequestBody) -> http::Request<RequestBody> {
        let mut req = http::Request::new(body);
        if let Some(path) = &self.unix {
            req.extensions_mut()
                .insert(crate::transport::UnixSocket(path.clone()));
        }
        *req.method_mut() = self.method.clone();
        *req.version_mut() = self.version;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if let (true, Some(deadline)) = (self.grpc, self.deadline) {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = crate::grpc::format_timeout(left);
            if let Ok(v) = HeaderValue::from_str(&value) {
                req.headers_mut().insert(&GRPC_TIMEOUT, v);
            }
        }
        req
    }
}

//! The default transport's request path: a connection from the pool or a
//! new one, the request in the form its connection needs, and what a
//! failure means for the chain (sent or not, stale, refused).

use std::sync::Arc;

use http::header::{HOST, PROXY_AUTHORIZATION};
use http::uri::{Parts, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::connector::{Connected, Connector};
use super::pool::{Checkin, Gate, H2Checkout, Key, Pool, Stream, H1, H2};
use super::proxy::{self, Proxies};
use super::{
    BoxError, FreshConnection, Handoff, RequestBody, ResponseBody, TransportError,
    TransportErrorKind,
};

type Answer = Result<Response<ResponseBody>, TransportError>;

/// Connections, the pool they go back to, and hyper's settings for each
/// protocol.
pub(crate) struct Client {
    connector: Connector,
    pool: Pool,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

/// How a request fared on one connection.
enum Sent {
    Answered(Response<ResponseBody>),
    Failed(TransportError),
    /// The connection closed before it took the request, which comes back
    /// untouched.
    Unsent(Request<RequestBody>, hyper::Error),
}

impl Client {
    pub(crate) fn new(connector: Connector, pool: Pool, h1: http1::Builder) -> Client {
        Client {
            connector,
            pool,
            h1,
            h2: http2::Builder::new(TokioExecutor::new()),
        }
    }

    pub(crate) fn proxies(&self) -> Option<&Proxies> {
        self.connector.proxies.as_deref()
    }

    /// Sends `req` (absolute URI) on a pooled connection if the origin has
    /// one that is open, else on a new one.
    pub(crate) async fn send(self: Arc<Self>, mut req: Request<RequestBody>) -> Answer {
        let uri = req.uri();
        let Some(authority) = uri.authority().cloned() else {
            return Err(TransportError::new(
                TransportErrorKind::Connect,
                "the request's URI has no host",
            ));
        };
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let unix = req
            .extensions()
            .get::<super::UnixSocket>()
            .map(|u| u.0.clone());
        let proxied = !https && unix.is_none() && self.proxy_auth(&mut req);
        let key = Key {
            authority,
            https,
            h2c: !https && req.version() == Version::HTTP_2,
            unix,
        };
        // The body marks the handover when hyper first looks at it, which
        // it does when it takes the request onto a connection.
        if let Some(h) = Handoff::of(&req) {
            h.connecting();
        }
        let fresh = req.extensions().get::<FreshConnection>().is_some();
        // Opening a connection is the cold path: its futures (the connect,
        // TLS, the handshakes) are boxed apart, so the common path, a
        // pooled connection, carries a small future.
        if !fresh && self.pool.enabled() {
            if let Some((tx, stream)) = self.pool.h2(&key) {
                return self.pooled_h2(tx, stream, req, key).await;
            }
            if key.h2c {
                return Box::pin(self.send_h2c(req, key)).await;
            }
            req = match self.pooled_h1(req, &key, proxied).await {
                Ok(answer) => return answer,
                Err(req) => req,
            };
        }
        Box::pin(self.connect_and_send(req, key, proxied, fresh, None)).await
    }

    /// An h2c request: on a connection of the origin with room for its
    /// stream; a new one is opened by one call while the others wait for
    /// it.
    async fn send_h2c(&self, req: Request<RequestBody>, key: Key) -> Answer {
        let gate = loop {
            match self.pool.h2_checkout(&key) {
                H2Checkout::Ready(tx, stream) => {
                    return self.pooled_h2(tx, stream, req, key).await;
                }
                H2Checkout::Wait(mut opened) => {
                    let _ = opened.changed().await;
                    if !*opened.borrow() {
                        // The opening call failed: each waiter tries on
                        // its own rather than one after another.
                        break None;
                    }
                    // Opened: there may be room on it, or it may be full
                    // already and another is needed.
                }
                H2Checkout::Open(gate) => break Some(gate),
            }
        };
        self.connect_and_send(req, key, false, false, gate).await
    }

    async fn pooled_h2(
        &self,
        tx: H2,
        stream: Stream,
        req: Request<RequestBody>,
        key: Key,
    ) -> Answer {
        match self.on_h2(tx, stream, req, Some(&key)).await {
            Sent::Answered(r) => Ok(r),
            Sent::Failed(e) => Err(e),
            // The connection went away (a GOAWAY): a new one.
            Sent::Unsent(req, _) => {
                Box::pin(self.connect_and_send(req, key, false, true, None)).await
            }
        }
    }

    /// `req` on an idle HTTP/1 connection of the origin, or back if there
    /// is none ready. One still busy (sending an earlier request's body
    /// the server answered before reading) is not waited for: it goes back
    /// to the pool, with its idle time, for a later call.
    async fn pooled_h1(
        &self,
        mut req: Request<RequestBody>,
        key: &Key,
        proxied: bool,
    ) -> Result<Answer, Request<RequestBody>> {
        let mut busy = Vec::new();
        let taken = loop {
            let Some(mut idle) = self.pool.h1(key) else {
                break Err(req);
            };
            match ready_soon(&mut idle.tx).await {
                Readiness::Ready => {}
                Readiness::Busy => {
                    busy.push(idle);
                    continue;
                }
                Readiness::Closed => continue,
            }
            match self
                .on_h1(idle.tx, idle.born, req, Some(key), proxied, true)
                .await
            {
                Sent::Answered(r) => break Ok(Ok(r)),
                Sent::Failed(e) => break Ok(Err(e)),
                Sent::Unsent(r, _) => req = r,
            }
        };
        self.pool.put_back(key, busy);
        taken
    }

    /// Adds the proxy's credentials to a plain request a proxy will carry;
    /// whether one will (the request then goes in absolute form).
    fn proxy_auth(&self, req: &mut Request<RequestBody>) -> bool {
        let Some(p) = self.proxies().and_then(|p| p.intercept(req.uri())) else {
            return false;
        };
        if let Some(auth) = proxy::auth(&p) {
            req.headers_mut().entry(PROXY_AUTHORIZATION).or_insert(auth);
        }
        true
    }

    async fn connect_and_send(
        &self,
        req: Request<RequestBody>,
        key: Key,
        proxied: bool,
        fresh: bool,
        gate: Option<Gate>,
    ) -> Answer {
        let connected = match &key.unix {
            #[cfg(unix)]
            Some(path) => self.connector.connect_unix(path).await,
            #[cfg(not(unix))]
            Some(_) => Err("Unix sockets need a Unix system".into()),
            None => self.connector.connect(req.uri()).await,
        };
        let Connected { io, h2, .. } = match connected {
            Ok(c) => c,
            Err(e) => return Err(connect_error(e)),
        };
        let io = TokioIo::new(io);
        let sent = if h2 || key.h2c {
            let (tx, conn) = match self.h2.handshake(io).await {
                Ok(parts) => parts,
                Err(e) => return Err(TransportError::new(TransportErrorKind::Connect, e)),
            };
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "HTTP/2 connection closed");
                }
            });
            // It joins the origin's others; one that failed (a re-send
            // asks for a new one after a GOAWAY or a lost connection) has
            // left the pool already.
            let stream = self.pool.put_h2(key, tx.clone());
            if let Some(gate) = gate {
                gate.opened();
            }
            self.on_h2(tx, stream, req, None).await
        } else {
            let (tx, conn) = match self.h1.handshake(io).await {
                Ok(parts) => parts,
                Err(e) => return Err(TransportError::new(TransportErrorKind::Connect, e)),
            };
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "HTTP/1 connection closed");
                }
            });
            // A re-send's connection is not kept: the pool's others may be
            // as stale as the one it replaces.
            let keep = (!fresh).then_some(&key);
            self.on_h1(tx, tokio::time::Instant::now(), req, keep, proxied, false)
                .await
        };
        match sent {
            Sent::Answered(r) => Ok(r),
            Sent::Failed(e) => Err(e),
            // A new connection that closed before taking the request: it
            // never left.
            Sent::Unsent(_, e) => Err(TransportError::new(TransportErrorKind::Connect, e)),
        }
    }

    /// Sends on an HTTP/2 connection, as the stream `stream` holds a place
    /// for; a pooled connection (`pooled`: its origin) that hands the
    /// request back unsent leaves the pool.
    async fn on_h2(
        &self,
        mut tx: H2,
        stream: Stream,
        mut req: Request<RequestBody>,
        pooled: Option<&Key>,
    ) -> Sent {
        *req.version_mut() = Version::HTTP_2;
        match tx.try_send_request(req).await {
            Ok(resp) if resp.body().is_end_stream() => {
                Sent::Answered(resp.map(ResponseBody::hyper))
            }
            Ok(resp) => Sent::Answered(resp.map(|b| ResponseBody::pooled(b, Checkin::H2(stream)))),
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    if let Some(key) = pooled {
                        self.pool.forget_h2(key, &stream);
                    }
                    Sent::Unsent(req, e.into_error())
                }
                None => Sent::Failed(send_error(e.into_error(), true, true)),
            },
        }
    }

    /// Sends on an HTTP/1 connection; `reused` says whether it served an
    /// earlier request, and `keep` where it goes afterwards (`None`: not
    /// kept).
    async fn on_h1(
        &self,
        mut tx: H1,
        born: tokio::time::Instant,
        mut req: Request<RequestBody>,
        keep: Option<&Key>,
        proxied: bool,
        reused: bool,
    ) -> Sent {
        let absolute = to_h1(&mut req, proxied);
        match tx.try_send_request(req).await {
            Ok(resp) => Sent::Answered(self.answered_h1(resp, tx, born, keep)),
            Err(mut e) => match e.take_message() {
                Some(mut req) => {
                    if let Some(uri) = absolute {
                        *req.uri_mut() = uri;
                    }
                    Sent::Unsent(req, e.into_error())
                }
                None => Sent::Failed(send_error(e.into_error(), reused, false)),
            },
        }
    }

    /// The answer, whose body gives the connection back at its end.
    fn answered_h1(
        &self,
        resp: Response<Incoming>,
        tx: H1,
        born: tokio::time::Instant,
        keep: Option<&Key>,
    ) -> Response<ResponseBody> {
        // An upgraded connection belongs to whoever took the upgrade.
        let Some(key) = keep.filter(|_| resp.status() != StatusCode::SWITCHING_PROTOCOLS) else {
            return resp.map(ResponseBody::hyper);
        };
        if resp.body().is_end_stream() {
            self.pool.put_h1(key.clone(), tx, born);
            return resp.map(ResponseBody::hyper);
        }
        let back = Checkin::H1 {
            pool: self.pool.clone(),
            key: key.clone(),
            tx,
            born,
        };
        resp.map(|b| ResponseBody::pooled(b, back))
    }
}

enum Readiness {
    Ready,
    Busy,
    Closed,
}

/// Whether a pooled connection is ready, or becomes so within a few turns
/// of the runtime: one whose last answer has just been read is, once its
/// task has run.
async fn ready_soon(tx: &mut H1) -> Readiness {
    for _ in 0..3 {
        match std::future::poll_fn(|cx| std::task::Poll::Ready(tx.poll_ready(cx))).await {
            std::task::Poll::Ready(Ok(())) => return Readiness::Ready,
            std::task::Poll::Ready(Err(_)) => return Readiness::Closed,
            std::task::Poll::Pending => tokio::task::yield_now().await,
        }
    }
    Readiness::Busy
}

/// The request in HTTP/1's form: a `Host` header, and the path alone
/// unless it goes to a proxy. Gives back the absolute URI it replaced, for
/// a re-send on another connection.
fn to_h1(req: &mut Request<RequestBody>, proxied: bool) -> Option<Uri> {
    if req.version() == Version::HTTP_2 {
        // Over TLS, ALPN chose HTTP/1.1.
        *req.version_mut() = Version::HTTP_11;
    }
    if !req.headers().contains_key(HOST) {
        if let Some(host) = host_header(req.uri()) {
            req.headers_mut().insert(HOST, host);
        }
    }
    if proxied || req.method() == Method::CONNECT {
        return None;
    }
    let origin = match req.uri().path_and_query() {
        Some(pq) if pq.as_str() != "/" => {
            let mut parts = Parts::default();
            parts.path_and_query = Some(pq.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    };
    Some(std::mem::replace(req.uri_mut(), origin))
}

/// `host[:port]` of `uri`, without user information or a default port.
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let authority = uri.authority()?;
    let default_port = matches!(
        (uri.scheme_str(), authority.port_u16()),
        (Some("http"), Some(80)) | (Some("https"), Some(443))
    );
    let host = if default_port {
        authority.host()
    } else {
        let a = authority.as_str();
        a.rsplit_once('@').map_or(a, |(_, host)| host)
    };
    HeaderValue::from_str(host).ok()
}

fn connect_error(e: BoxError) -> TransportError {
    let kind = if timed_out(&*e) {
        TransportErrorKind::ConnectTimeout
    } else {
        TransportErrorKind::Connect
    };
    TransportError::new(kind, e)
}

/// What a failure after the request was handed to a connection means.
fn send_error(e: hyper::Error, reused: bool, h2: bool) -> TransportError {
    let kind = if refused_unprocessed(&e) {
        TransportErrorKind::RefusedStream
    } else if tls_refused(&e) {
        TransportErrorKind::Connect
    } else if (h2 && connection_lost(&e)) || (!h2 && reused && closed_under(&e)) {
        TransportErrorKind::StaleConnection
    } else {
        TransportErrorKind::Other
    };
    TransportError::new(kind, e)
}

/// An HTTP/2 stream the server refused without processing it: reset with
/// `REFUSED_STREAM`, or failed by the server's `GOAWAY` (h2 gives that
/// error only to streams above its last stream id and to streams started
/// after it; streams the server took go on, and fail otherwise if the
/// connection then breaks).
fn refused_unprocessed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && (h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        cur = err.source();
    }
    false
}

/// A TLS alert by which the server refused the session (for TLS 1.3
/// client certificates, after the client's side of the handshake was
/// done): it never took application data.
fn tls_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    first_io(e).is_some_and(super::connector::refusal_alert)
}

/// The first I/O error in `e`'s chain of sources.
fn first_io<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    first_io(e).is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
}

/// An HTTP/2 connection that closed under the request, as when a server
/// closes it after a `GOAWAY` (tonic's and nginx's connection age) while
/// the request was going out: h2 reports the end of the socket as a
/// broken pipe of the stream. The stream's fate is unknown, as for a
/// stale HTTP/1 connection, so the same rule applies: an idempotent
/// request goes once more, on a new connection.
fn connection_lost(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    first_io(e)
        .is_some_and(|io| matches!(io.kind(), BrokenPipe | ConnectionReset | ConnectionAborted))
}

/// A reused HTTP/1 connection that failed the way one the server closed
/// while it sat idle fails, before the answer's head arrived.
fn closed_under(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return true;
    }
    use std::io::ErrorKind::*;
    first_io(e).is_some_and(|io| {
        matches!(
            io.kind(),
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(uri: &str) -> Option<HeaderValue> {
        host_header(&uri.parse().unwrap())
    }

    #[test]
    fn the_host_header_leaves_out_credentials_and_default_ports() {
        assert_eq!(host("http://a.test/x").unwrap(), "a.test");
        assert_eq!(host("http://a.test:80/x").unwrap(), "a.test");
        assert_eq!(host("https://a.test:443/").unwrap(), "a.test");
        assert_eq!(host("http://a.test:8080/").unwrap(), "a.test:8080");
        assert_eq!(host("https://a.test:80/").unwrap(), "a.test:80");
        assert_eq!(host("http://u:p@a.test:81/").unwrap(), "a.test:81");
        assert_eq!(host("http://u:p@a.test/").unwrap(), "a.test");
        assert_eq!(host("http://[::1]:9/").unwrap(), "[::1]:9");
        assert!(host("/relative").is_none());
    }

    #[test]
    fn an_http1_request_goes_in_origin_form_unless_to_a_proxy() {
        let mut req = Request::new(RequestBody::empty());
        *req.uri_mut() = "http://a.test:8080/p?q=1".parse().unwrap();
        *req.version_mut() = Version::HTTP_2;
        let absolute = to_h1(&mut req, false).unwrap();
        assert_eq!(req.uri(), "/p?q=1");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()[HOST], "a.test:8080");
        assert_eq!(absolute, "http://a.test:8080/p?q=1");

        let mut req = Request::new(RequestBody::empty());
        *req.uri_mut() = "http://a.test/".parse().unwrap();
        req.headers_mut()
            .insert(HOST, HeaderValue::from_static("kept"));
        assert!(to_h1(&mut req, true).is_none());
        assert_eq!(req.uri(), "http://a.test/", "absolute form to a proxy");
        assert_eq!(req.headers()[HOST], "kept");
    }
}

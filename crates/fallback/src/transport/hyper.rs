//! The default transport: hyper-util's pooled client over rustls.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http_body_util::BodyExt;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{
    BoxError, FreshConnection, Handoff, RequestBody, SendFuture, Transport, TransportError,
    TransportErrorKind,
};

/// Default idle timeout of pooled connections: 4 s.
const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// hyper 1.x with hyper-util's pooled client, rustls (ring) and the webpki
/// root certificates; HTTP/1.1 and HTTP/2 (by ALPN).
///
/// One pool serves every link of a chain and every clone of it, so
/// keep-alive connections are reused across calls. Cloning a
/// `HyperTransport` shares its pool, so several chains can share one too.
///
/// It tells the chain what it needs to fail over safely:
/// - whether a request was handed to a connection (a [`Handoff`]), so a
///   timer that fires while still connecting counts as "nothing sent";
/// - when a pooled connection turned out to be stale
///   ([`TransportErrorKind::StaleConnection`]): an HTTP/1 connection that
///   had served earlier requests failed before any byte of the response
///   came back. It honours [`FreshConnection`] for the re-send.
#[derive(Clone, Debug)]
pub struct HyperTransport {
    pooled: Client<Tracking, RequestBody>,
    /// Keeps no idle connections, so every request gets a new one.
    fresh: Client<Tracking, RequestBody>,
}

impl Default for HyperTransport {
    fn default() -> Self {
        HyperTransport::builder().build()
    }
}

impl HyperTransport {
    /// A transport with the defaults of [`HyperTransportBuilder`].
    pub fn new() -> HyperTransport {
        HyperTransport::default()
    }

    /// Options for the transport.
    pub fn builder() -> HyperTransportBuilder {
        HyperTransportBuilder::default()
    }
}

/// Options of a [`HyperTransport`].
///
/// | option | default |
/// | --- | --- |
/// | [`connect_timeout`](Self::connect_timeout) | 2 s |
/// | [`pool_idle_timeout`](Self::pool_idle_timeout) | 4 s |
/// | [`pool_max_idle_per_host`](Self::pool_max_idle_per_host) | unbounded |
///
/// Why 4 s for idle connections: servers close keep-alive connections
/// that sit idle, gunicorn after 2 s, Node.js and Apache httpd after 5 s,
/// nginx after 75 s. A request sent on a connection at the moment the
/// server closes it is lost; an idempotent one is re-sent at once on a new
/// connection, but a `POST`'s outcome becomes unknown. Dropping idle
/// connections before the common 5 s keeps that race rare, and a
/// connection busy at least every 4 s is still reused. (reqwest and Go use
/// 90 s, longer than most servers keep a connection.)
#[derive(Clone, Debug)]
#[must_use]
pub struct HyperTransportBuilder {
    connect_timeout: Option<Duration>,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
}

impl Default for HyperTransportBuilder {
    fn default() -> Self {
        HyperTransportBuilder {
            connect_timeout: Some(Duration::from_secs(2)),
            pool_idle_timeout: Some(DEFAULT_POOL_IDLE_TIMEOUT),
            pool_max_idle_per_host: usize::MAX,
        }
    }
}

impl HyperTransportBuilder {
    /// Bound on establishing a TCP connection (`None`: no bound of its own).
    /// A connect that times out sent nothing, so any request may fail over.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept (`None`: until the server
    /// closes it).
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// The most idle connections kept per host (0 turns pooling off).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Builds the transport. It needs a tokio runtime only when used.
    pub fn build(self) -> HyperTransport {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(self.connect_timeout);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        // ring supports every default version, so this cannot fail.
        .expect("ring supports the default TLS versions")
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let connector = Tracking { inner: https };
        let client = |max_idle: usize| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(self.pool_idle_timeout)
                .pool_max_idle_per_host(max_idle)
                .build(connector.clone())
        };
        HyperTransport {
            pooled: client(self.pool_max_idle_per_host),
            fresh: client(0),
        }
    }
}

impl Transport for HyperTransport {
    fn send(&self, request: http::Request<RequestBody>) -> SendFuture {
        let client = if request.extensions().get::<FreshConnection>().is_some() {
            &self.fresh
        } else {
            &self.pooled
        };
        // hyper first looks at the body (which marks the handoff) when it
        // takes the request onto a connection, before writing a byte of it.
        if let Some(h) = Handoff::of(&request) {
            h.connecting();
        }
        let fut = client.request(request);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync())),
                Err(e) => {
                    let kind = if e.is_connect() {
                        if timed_out(&e) {
                            TransportErrorKind::ConnectTimeout
                        } else {
                            TransportErrorKind::Connect
                        }
                    } else if is_stale(&e) {
                        TransportErrorKind::StaleConnection
                    } else {
                        TransportErrorKind::Other
                    };
                    Err(TransportError::new(kind, e))
                }
            }
        })
    }
}

fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// Whether a failed send went out on a pooled HTTP/1 connection that had
/// already served a request, and failed the way a connection closed by the
/// server fails, before any byte of the answer arrived.
fn is_stale(e: &hyper_util::client::legacy::Error) -> bool {
    let Some(connected) = e.connect_info() else {
        return false;
    };
    if connected.is_negotiated_h2() {
        return false;
    }
    let mut extras = http::Extensions::new();
    connected.get_extras(&mut extras);
    let Some(usage) = extras.get::<Usage>() else {
        return false;
    };
    if !usage.0.reused_without_answer() {
        return false;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            );
        }
        cur = err.source();
    }
    false
}

/// How a connection has been used, seen from its plaintext bytes.
///
/// hyper writes a request and then reads its answer, never pipelining on
/// HTTP/1, so a write that follows a read starts the next exchange.
#[derive(Debug)]
struct UsageState {
    exchanges: AtomicU32,
    /// Bytes read since the current exchange's first write.
    answered: AtomicU64,
    /// The last operation was a read (true before the first write).
    reading: AtomicBool,
}

#[derive(Clone, Debug)]
struct Usage(Arc<UsageState>);

impl UsageState {
    fn on_write(&self) {
        if self.reading.swap(false, Ordering::Relaxed) {
            self.exchanges.fetch_add(1, Ordering::Relaxed);
            self.answered.store(0, Ordering::Relaxed);
        }
    }

    fn on_read(&self, n: usize) {
        if n > 0 {
            self.answered.fetch_add(n as u64, Ordering::Relaxed);
            self.reading.store(true, Ordering::Relaxed);
        }
    }

    /// The connection served an earlier exchange, and nothing of the
    /// current one's answer has arrived.
    fn reused_without_answer(&self) -> bool {
        self.exchanges.load(Ordering::Relaxed) >= 2 && self.answered.load(Ordering::Relaxed) == 0
    }
}

type Inner = HttpsConnector<HttpConnector>;
type InnerIo = TokioIo<MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>>;

/// The connector: hyper-rustls over hyper-util's `HttpConnector`, each
/// connection wrapped to record its [`Usage`] (above TLS, so handshakes do
/// not count).
#[derive(Clone, Debug)]
struct Tracking {
    inner: Inner,
}

impl tower_service::Service<Uri> for Tracking {
    type Response = TokioIo<Tracked>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<Tracked>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = tower_service::Service::call(&mut self.inner, dst);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(TokioIo::new(Tracked {
                io: TokioIo::new(io),
                usage: Usage(Arc::new(UsageState {
                    exchanges: AtomicU32::new(0),
                    answered: AtomicU64::new(0),
                    reading: AtomicBool::new(true),
                })),
            }))
        })
    }
}

/// A connection that records its [`Usage`].
#[derive(Debug)]
struct Tracked {
    io: InnerIo,
    usage: Usage,
}

impl Connection for Tracked {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.usage.clone())
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.usage.0.on_read(buf.filled().len() - before);
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.usage.0.on_write();
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.usage.0.on_write();
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> UsageState {
        UsageState {
            exchanges: AtomicU32::new(0),
            answered: AtomicU64::new(0),
            reading: AtomicBool::new(true),
        }
    }

    #[test]
    fn a_fresh_connection_is_never_stale() {
        let u = state();
        u.on_write();
        u.on_write();
        assert!(!u.reused_without_answer(), "first exchange");
    }

    #[test]
    fn a_reused_connection_without_an_answer_is_stale() {
        let u = state();
        u.on_write();
        u.on_read(100);
        u.on_read(0); // EOF counts as nothing
        u.on_write();
        assert!(u.reused_without_answer());
        u.on_read(1);
        assert!(!u.reused_without_answer(), "part of an answer arrived");
    }
}

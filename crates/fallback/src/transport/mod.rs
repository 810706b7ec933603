//! The one seam between the chain and the network.
//!
//! A [`Transport`] sends one `http::Request` and returns the response head
//! with a streaming body. The chain does everything else (timeouts, body
//! limits, classification, failover) on top of it, so any HTTP client can
//! be plugged in by implementing a single method.
//!
//! - [`HyperTransport`] is the default: hyper 1.x connections in a pool of
//!   our own, rustls, the system's trust store, proxies from the
//!   environment, HTTP/2 by ALPN and h2c.
//! - `ReqwestTransport` (feature `reqwest-0_13`) wraps a caller-configured
//!   `reqwest::Client`, with its proxies, cookies and whatever else.

mod client;
mod connector;
mod hyper;
mod pool;
mod proxy;
#[cfg(feature = "reqwest-0_13")]
mod reqwest;
#[cfg(feature = "rustls")]
mod tls;

pub use self::hyper::{HyperTransport, HyperTransportBuilder};
#[cfg(feature = "reqwest-0_13")]
pub use self::reqwest::ReqwestTransport;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};

/// A boxed error, as carried through bodies and transports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The streaming body of a response: what a [`Transport`] hands back, and
/// what the chain's tower service answers with.
///
/// Any [`http_body::Body`] of [`Bytes`] becomes one with
/// [`ResponseBody::new`]; [`ResponseBody::full`] holds bytes already read.
pub struct ResponseBody {
    inner: RespInner,
}

enum RespInner {
    /// hyper's own body, polled as it is: no box, no error mapping.
    Hyper(::hyper::body::Incoming),
    /// hyper's body on a pooled connection: an HTTP/1 connection goes
    /// back to the pool when the body has been read to the end, an HTTP/2
    /// stream frees its place.
    Pooled(::hyper::body::Incoming, Option<Box<pool::Checkin>>),
    /// Bytes already read, polled without a box.
    Full(Option<Bytes>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl ResponseBody {
    /// Wraps any body of `Bytes` chunks.
    pub fn new<B>(body: B) -> ResponseBody
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        ResponseBody {
            inner: RespInner::Boxed(body.map_err(Into::into).boxed_unsync()),
        }
    }

    /// hyper's body, without boxing it.
    pub(crate) fn hyper(body: ::hyper::body::Incoming) -> ResponseBody {
        ResponseBody {
            inner: RespInner::Hyper(body),
        }
    }

    /// hyper's body, handing its connection (or stream's place) back to
    /// the pool at its end.
    pub(crate) fn pooled(body: ::hyper::body::Incoming, back: pool::Checkin) -> ResponseBody {
        ResponseBody {
            inner: RespInner::Pooled(body, Some(Box::new(back))),
        }
    }

    /// A body of the given bytes.
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let bytes = bytes.into();
        ResponseBody {
            inner: RespInner::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// An empty body.
    pub fn empty() -> ResponseBody {
        ResponseBody {
            inner: RespInner::Full(None),
        }
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseBody")
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.inner {
            RespInner::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RespInner::Pooled(b, back) => {
                let polled = Pin::new(&mut *b).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => back.take().map_or((), |c| c.done()),
                    Poll::Ready(Some(Ok(_))) if b.is_end_stream() => {
                        back.take().map_or((), |c| c.done())
                    }
                    // The connection is not reused after a broken body.
                    Poll::Ready(Some(Err(_))) => drop(back.take()),
                    _ => {}
                }
                polled.map_err(Into::into)
            }
            RespInner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespInner::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            RespInner::Hyper(b) | RespInner::Pooled(b, _) => b.is_end_stream(),
            RespInner::Full(b) => b.is_none(),
            RespInner::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            RespInner::Hyper(b) | RespInner::Pooled(b, _) => b.size_hint(),
            RespInner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespInner::Boxed(b) => b.size_hint(),
        }
    }
}

/// The future returned by [`Transport::send`].
pub type SendFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<ResponseBody>, TransportError>> + Send>>;

/// Sends one HTTP request and yields the response head and streaming body.
///
/// Implementations must report failures to connect as
/// [`TransportErrorKind::Connect`] (or [`TransportErrorKind::ConnectTimeout`]):
/// the chain relies on that to know a request never left, which is what
/// makes re-sending a `POST` safe.
///
/// ```
/// use fallback_chain::transport::{ResponseBody, SendFuture, Transport, RequestBody};
///
/// /// Answers every request with 200 and "pong", without a network.
/// struct Pong;
///
/// impl Transport for Pong {
///     fn send(&self, _req: http::Request<RequestBody>) -> SendFuture {
///         Box::pin(async {
///             Ok(http::Response::new(ResponseBody::full("pong")))
///         })
///     }
/// }
/// ```
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` (its URI is absolute) and resolves once the response
    /// head has arrived.
    fn send(&self, request: http::Request<RequestBody>) -> SendFuture;

    /// Whether this transport accepts any server certificate
    /// ([`HyperTransportBuilder::danger_accept_invalid_certs`]). The chain
    /// marks every HTTPS attempt made through such a transport in its
    /// report and in tracing. Default: `false`.
    fn danger_accepts_invalid_certs(&self) -> bool {
        false
    }

    /// Whether this transport connects to a request's [`UnixSocket`]
    /// (an extension the chain puts on requests of a link with
    /// [`Link::unix_socket`](crate::Link::unix_socket)). A chain with such
    /// a link on a transport without it is refused when it is built.
    /// Default: `false`.
    fn supports_unix_sockets(&self) -> bool {
        false
    }
}

/// A request extension: connect to this Unix socket instead of the URL's
/// host and port (the URL still gives `Host`, path and query).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnixSocket(pub(crate) Arc<std::path::Path>);

impl UnixSocket {
    /// The socket at `path`.
    pub fn new(path: impl AsRef<std::path::Path>) -> UnixSocket {
        UnixSocket(Arc::from(path.as_ref()))
    }

    /// The socket's path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    fn send(&self, request: http::Request<RequestBody>) -> SendFuture {
        (**self).send(request)
    }

    fn danger_accepts_invalid_certs(&self) -> bool {
        (**self).danger_accepts_invalid_certs()
    }

    fn supports_unix_sockets(&self) -> bool {
        (**self).supports_unix_sockets()
    }
}

/// Whether a request was handed to a connection: what the chain needs to
/// know when its timer cuts an attempt short.
///
/// The chain attaches a `Handoff` to the [`RequestBody`] of every request it
/// gives a transport. A transport that can tell when a request goes onto a
/// connection calls [`connecting`](Handoff::connecting) before it starts,
/// and the request is *handed over* once it is given to a connection. If the
/// attempt's timeout or the call's deadline then fires while the handoff is
/// still *connecting*, nothing was sent: the attempt is a `timeout` in the
/// `connect` phase and even a `POST` fails over.
///
/// The body marks the handover itself: the first time anything asks it
/// about its content (`is_end_stream`, `size_hint`, a frame, or
/// [`RequestBody::as_bytes`]). An HTTP client has to ask before it can frame
/// the request head, and hyper asks only once the request is on a
/// connection. A transport may also call [`handed_over`](Handoff::handed_over)
/// itself.
///
/// A transport that never calls `connecting` leaves the chain to assume the
/// worst: a request cut short may have reached the server. [`HyperTransport`]
/// reports handoffs; `ReqwestTransport` and tower services do not.
///
/// ```
/// use fallback_chain::transport::Handoff;
///
/// let handoff = Handoff::new();
/// let seen_by_the_chain = handoff.clone(); // clones share their state
/// assert!(!seen_by_the_chain.never_left()); // untracked: assume the worst
/// handoff.connecting();
/// assert!(seen_by_the_chain.never_left());
/// handoff.handed_over();
/// assert!(!seen_by_the_chain.never_left());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Handoff {
    state: Arc<AtomicU8>,
}

const UNTRACKED: u8 = 0;
const CONNECTING: u8 = 1;
const HANDED_OVER: u8 = 2;

impl Handoff {
    /// A handoff nobody has reported on yet.
    pub fn new() -> Handoff {
        Handoff::default()
    }

    /// The handoff of `request`'s body, if the chain attached one.
    pub fn of(request: &http::Request<RequestBody>) -> Option<&Handoff> {
        request.body().handoff.as_ref()
    }

    /// The transport is finding a connection for the request; nothing of
    /// it has been written. Has no effect once the request was handed over.
    pub fn connecting(&self) {
        let _ = self.state.compare_exchange(
            UNTRACKED,
            CONNECTING,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// The request was given to a connection: from now on it may reach the
    /// server.
    pub fn handed_over(&self) {
        if self.state.load(Ordering::Relaxed) != HANDED_OVER {
            self.state.store(HANDED_OVER, Ordering::Release);
        }
    }

    /// Whether the request certainly never left: the transport said it was
    /// connecting and never that it handed the request over.
    pub fn never_left(&self) -> bool {
        self.state.load(Ordering::Acquire) == CONNECTING
    }
}

/// Asks a transport to send a request on a new connection rather than a
/// pooled one.
///
/// The chain sets it in a request's extensions when it re-sends an
/// idempotent request whose pooled connection turned out to be stale
/// ([`TransportErrorKind::StaleConnection`]). [`HyperTransport`] honours
/// it; a transport without a pool may ignore it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FreshConnection;

/// Why a transport could not produce a response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The request never left: no connection was made (refused, DNS, TLS
    /// handshake), or the request could not be handed to the client.
    Connect,
    /// Connecting took longer than the connect timeout: nothing was sent.
    ConnectTimeout,
    /// A keep-alive connection taken from the pool failed before any byte
    /// of the response arrived: most likely the server closed it while it
    /// sat idle, as servers do after a few seconds. The request may have
    /// reached the server, but usually did not; the chain re-sends an
    /// idempotent request once, at once, on a fresh connection.
    StaleConnection,
    /// The server refused the request without processing it (RFC 9113,
    /// section 8.7): an HTTP/2 stream reset with `REFUSED_STREAM`, or a
    /// stream above the last stream id of the server's `GOAWAY` (or started
    /// on a connection after it). The request reached the server but was
    /// not acted on, so it is safe to send again on a new connection,
    /// whatever its method; the chain does so at once.
    RefusedStream,
    /// Anything else. The request may or may not have reached the server.
    Other,
}

/// An error and its causes, joined with ": ": what a log line needs of a
/// body's or a transport's error, whose top level is often terse.
///
/// ```
/// use fallback_chain::transport::error_chain;
/// let io = std::io::Error::other("connection reset");
/// let e = std::io::Error::new(std::io::ErrorKind::Other, io);
/// assert_eq!(error_chain(&e), "connection reset");
/// ```
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// A failure of [`Transport::send`].
pub struct TransportError {
    kind: TransportErrorKind,
    source: BoxError,
}

impl TransportError {
    /// A new error of `kind` caused by `source`.
    pub fn new(kind: TransportErrorKind, source: impl Into<BoxError>) -> TransportError {
        TransportError {
            kind,
            source: source.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// Whether the request certainly never reached the server.
    pub fn is_not_sent(&self) -> bool {
        matches!(
            self.kind,
            TransportErrorKind::Connect | TransportErrorKind::ConnectTimeout
        )
    }
}

impl fmt::Debug for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Error chains from hyper are terse at the top; the causes say why.
        f.write_str(&error_chain(&*self.source))
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// The body of a request handed to a [`Transport`].
///
/// Bytes are sent with a `Content-Length`; streams are sent as they come.
pub struct RequestBody {
    inner: ReqInner,
    handoff: Option<Handoff>,
}

enum ReqInner {
    Full(Option<Bytes>),
    Stream(BoxBody<Bytes, BoxError>),
}

impl RequestBody {
    /// An empty body.
    pub fn empty() -> RequestBody {
        RequestBody {
            inner: ReqInner::Full(None),
            handoff: None,
        }
    }

    /// A body of the given bytes.
    pub fn full(bytes: Bytes) -> RequestBody {
        RequestBody {
            inner: ReqInner::Full((!bytes.is_empty()).then_some(bytes)),
            handoff: None,
        }
    }

    /// A streaming body.
    pub fn stream<B>(body: B) -> RequestBody
    where
        B: HttpBody<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        RequestBody {
            inner: ReqInner::Stream(body.map_err(Into::into).boxed()),
            handoff: None,
        }
    }

    /// Attaches `handoff`, which the body marks handed over when it is
    /// first asked about its content.
    pub(crate) fn set_handoff(&mut self, handoff: Handoff) {
        self.handoff = Some(handoff);
    }

    fn touched(&self) {
        if let Some(h) = &self.handoff {
            h.handed_over();
        }
    }

    /// The bytes of a body that is not a stream (empty for an empty body).
    /// Like any look at the content, this marks the body's [`Handoff`]
    /// handed over.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        static EMPTY: Bytes = Bytes::new();
        self.touched();
        match &self.inner {
            ReqInner::Full(Some(b)) => Some(b),
            ReqInner::Full(None) => Some(&EMPTY),
            ReqInner::Stream(_) => None,
        }
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            ReqInner::Full(b) => {
                write!(f, "RequestBody({} bytes)", b.as_ref().map_or(0, Bytes::len))
            }
            ReqInner::Stream(_) => f.write_str("RequestBody(stream)"),
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.touched();
        match &mut self.inner {
            ReqInner::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            // An empty chunk (as a client's final, empty DATA frame reads)
            // is not passed on: on HTTP/2 it would go out as an empty
            // DATA frame of its own, which servers count as abuse (h2
            // closes a connection after 100 of them).
            ReqInner::Stream(s) => loop {
                match Pin::new(&mut *s).poll_frame(cx) {
                    Poll::Ready(Some(Ok(f))) if f.data_ref().is_some_and(|d| d.is_empty()) => {}
                    polled => return polled,
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.touched();
        match &self.inner {
            ReqInner::Full(b) => b.is_none(),
            ReqInner::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.touched();
        match &self.inner {
            ReqInner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqInner::Stream(s) => s.size_hint(),
        }
    }
}

//! The default transport's connector: TCP, then a proxy or a `CONNECT`
//! tunnel when one applies, then TLS for `https://`; and each connection
//! wrapped to record how it has been used, which is how a stale pooled
//! connection is told apart from a broken one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
#[cfg(feature = "rustls")]
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
#[cfg(feature = "rustls")]
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower_service::Service;

#[cfg(feature = "rustls")]
use super::proxy;
use super::proxy::Proxies;
#[cfg(feature = "rustls")]
use super::tls::Tls;
use super::BoxError;

/// A connection's byte stream. Plain TCP is polled as it is, with no
/// adapter layers; TLS is boxed, so a plain connection (most of a pool, in
/// a sidecar) does not carry rustls's kilobyte of session state.
pub(crate) enum Io {
    Plain(tokio::net::TcpStream),
    #[cfg(feature = "rustls")]
    Tls(Box<TokioIo<MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>>>),
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Io::Plain(_) => f.write_str("Io::Plain"),
            #[cfg(feature = "rustls")]
            Io::Tls(_) => f.write_str("Io::Tls"),
        }
    }
}

/// A plain TCP connection, as the connection type.
fn plain(io: TokioIo<tokio::net::TcpStream>) -> Io {
    Io::Plain(io.into_inner())
}

impl Io {
    fn connected(&self) -> Connected {
        match self {
            Io::Plain(tcp) => tcp.connected(),
            #[cfg(feature = "rustls")]
            Io::Tls(tls) => tls.connected(),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            #[cfg(feature = "rustls")]
            Io::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            #[cfg(feature = "rustls")]
            Io::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            #[cfg(feature = "rustls")]
            Io::Tls(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            #[cfg(feature = "rustls")]
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            #[cfg(feature = "rustls")]
            Io::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            #[cfg(feature = "rustls")]
            Io::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}

/// TCP (hyper-util's `HttpConnector`), proxies, and rustls.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    pub(crate) http: HttpConnector,
    #[cfg(feature = "rustls")]
    pub(crate) tls: Arc<Tls>,
    pub(crate) proxies: Option<Arc<Proxies>>,
}

impl Service<Uri> for Connector {
    type Response = TokioIo<Tracked>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<Tracked>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let intercept = self.proxies.as_ref().and_then(|p| p.intercept(&dst));
        let https = dst.scheme() == Some(&http::uri::Scheme::HTTPS);
        let mut http = self.http.clone();
        #[cfg(feature = "rustls")]
        let tls = self.tls.clone();
        Box::pin(async move {
            let (io, proxied): (Io, bool) = match (https, intercept) {
                (false, None) => (plain(http.call(dst).await?), false),
                // hyper-util sends the request in absolute form to a
                // connection marked proxied.
                (false, Some(p)) => (plain(http.call(p.uri().clone()).await?), true),
                #[cfg(not(feature = "rustls"))]
                (true, _) => {
                    return Err("https:// needs the `rustls` feature of fallback-chain".into())
                }
                #[cfg(feature = "rustls")]
                (true, None) => (
                    Io::Tls(Box::new(TokioIo::new(
                        HttpsConnector::from((http, tls.config())).call(dst).await?,
                    ))),
                    false,
                ),
                #[cfg(feature = "rustls")]
                (true, Some(p)) => {
                    let mut tunnel = Tunnel::new(p.uri().clone(), http);
                    if let Some(auth) = proxy::auth(&p) {
                        tunnel = tunnel.with_auth(auth);
                    }
                    let io = HttpsConnector::from((tunnel, tls.config()))
                        .call(dst)
                        .await?;
                    (Io::Tls(Box::new(TokioIo::new(io))), false)
                }
            };
            Ok(TokioIo::new(Tracked {
                io,
                proxied,
                write_error: None,
                drained: false,
                usage: Usage(Arc::new(UsageState {
                    exchanges: AtomicU32::new(0),
                    answered: AtomicU64::new(0),
                    reading: AtomicBool::new(true),
                    refused: AtomicBool::new(false),
                })),
            }))
        })
    }
}

/// How a connection has been used, seen from its plaintext bytes.
///
/// hyper writes a request and then reads its answer, never pipelining on
/// HTTP/1, so a write that follows a read starts the next exchange.
#[derive(Debug)]
pub(crate) struct UsageState {
    exchanges: AtomicU32,
    /// Bytes read since the current exchange's first write.
    answered: AtomicU64,
    /// The last operation was a read (true before the first write).
    reading: AtomicBool,
    /// The server refused the TLS session with a fatal alert.
    refused: AtomicBool,
}

/// A connection's [`UsageState`], as an extra of its `Connected`.
#[derive(Clone, Debug)]
pub(crate) struct Usage(pub(crate) Arc<UsageState>);

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

    /// The server refused the TLS session: nothing sent on it was taken.
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    pub(crate) fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// The connection served an earlier exchange, and nothing of the
    /// current one's answer has arrived.
    pub(crate) fn reused_without_answer(&self) -> bool {
        self.exchanges.load(Ordering::Relaxed) >= 2 && self.answered.load(Ordering::Relaxed) == 0
    }
}

/// A connection that records its [`Usage`] (above TLS, so handshakes do
/// not count).
#[derive(Debug)]
pub(crate) struct Tracked {
    io: Io,
    proxied: bool,
    usage: Usage,
    /// A write error held until the read side has drained.
    write_error: Option<std::io::Error>,
    drained: bool,
}

impl Connection for Tracked {
    fn connected(&self) -> Connected {
        self.io
            .connected()
            .proxy(self.proxied)
            .extra(self.usage.clone())
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
        match &polled {
            Poll::Ready(Ok(())) => self.usage.0.on_read(buf.filled().len() - before),
            Poll::Ready(Err(e)) => self.note_refusal(e),
            Poll::Pending => {}
        }
        polled
    }
}

impl Tracked {
    fn note_refusal(&self, e: &std::io::Error) {
        if refusal_alert(e) {
            self.usage.0.refused.store(true, Ordering::Relaxed);
        }
    }

    /// A write failed because the peer closed the connection: the server
    /// may have closed it right after a fatal alert that is still unread.
    /// Reads to the end (a closed socket answers at once) before the write
    /// error is reported, so the alert is seen.
    fn poll_write_failed<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        use std::io::ErrorKind::*;
        let e = match polled {
            Poll::Ready(Err(e))
                if matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted) =>
            {
                e
            }
            other => return other,
        };
        if self.drained {
            return Poll::Ready(Err(e));
        }
        let mut scratch = [0u8; 1024];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                // The write is polled again once the read can go on.
                Poll::Pending => {
                    self.write_error = Some(e);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Ready(Ok(())) => break,
                Poll::Ready(Err(read)) => {
                    self.note_refusal(&read);
                    break;
                }
            }
        }
        self.drained = true;
        Poll::Ready(Err(e))
    }

    /// A write error held back while the read side drains.
    fn held_write_error<T>(&mut self, cx: &mut Context<'_>) -> Option<Poll<std::io::Result<T>>> {
        let e = self.write_error.take()?;
        Some(self.poll_write_failed(cx, Poll::Ready(Err(e))))
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(held) = self.held_write_error(cx) {
            return held;
        }
        self.usage.0.on_write();
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.poll_write_failed(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(held) = self.held_write_error(cx) {
            return held;
        }
        self.usage.0.on_write();
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.poll_write_failed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(held) = self.held_write_error(cx) {
            return held;
        }
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.poll_write_failed(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Whether an I/O error is a fatal TLS alert by which the server refused
/// the session (a certificate it would not take): the server then never
/// took any application data from the connection.
pub(crate) fn refusal_alert(e: &std::io::Error) -> bool {
    #[cfg(feature = "rustls")]
    {
        use rustls::AlertDescription as A;
        const REFUSALS: [A; 9] = [
            A::CertificateRequired,
            A::BadCertificate,
            A::UnsupportedCertificate,
            A::CertificateRevoked,
            A::CertificateExpired,
            A::CertificateUnknown,
            A::UnknownCA,
            A::AccessDenied,
            A::HandshakeFailure,
        ];
        let inner = e.get_ref();
        if let Some(rustls::Error::AlertReceived(alert)) =
            inner.and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return REFUSALS.contains(alert);
        }
        // rustls reports an alert to a reader as text:
        // "received fatal alert: CertificateRequired".
        inner
            .map(ToString::to_string)
            .as_deref()
            .and_then(|t| t.strip_prefix("received fatal alert: "))
            .is_some_and(|name| REFUSALS.iter().any(|a| format!("{a:?}") == name))
    }
    #[cfg(not(feature = "rustls"))]
    {
        let _ = e;
        false
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
            refused: AtomicBool::new(false),
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

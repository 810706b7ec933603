//! The default transport's connector: TCP, then a proxy or a `CONNECT`
//! tunnel when one applies, then TLS for `https://`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
#[cfg(feature = "rustls")]
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
#[cfg(feature = "rustls")]
use hyper_util::client::legacy::connect::proxy::Tunnel;
#[cfg(feature = "rustls")]
use hyper_util::client::legacy::connect::Connection;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower_service::Service;

#[cfg(feature = "rustls")]
use super::proxy;
use super::proxy::Proxies;
#[cfg(feature = "rustls")]
use super::tls::Tls;
use super::BoxError;

/// A new connection, and what the pool needs to know of it.
pub(crate) struct Connected {
    pub(crate) io: Io,
    /// TLS negotiated HTTP/2 by ALPN.
    pub(crate) h2: bool,
}

/// A connection's byte stream. Plain TCP is polled as it is, with no
/// adapter layers; TLS is boxed, so a plain connection (most of a pool, in
/// a sidecar) does not carry rustls's kilobyte of session state.
pub(crate) enum Io {
    Plain(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    #[cfg(feature = "rustls")]
    Tls(Box<TlsIo>),
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Io::Plain(_) => f.write_str("Io::Plain"),
            #[cfg(unix)]
            Io::Unix(_) => f.write_str("Io::Unix"),
            #[cfg(feature = "rustls")]
            Io::Tls(_) => f.write_str("Io::Tls"),
        }
    }
}

/// A plain TCP connection, as the connection type.
fn plain(io: TokioIo<tokio::net::TcpStream>) -> Io {
    Io::Plain(io.into_inner())
}

/// TCP (hyper-util's `HttpConnector`: getaddrinfo, happy eyeballs, the
/// connect timeout), proxies, and rustls.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    pub(crate) http: HttpConnector,
    #[cfg(feature = "rustls")]
    pub(crate) tls: Arc<Tls>,
    pub(crate) proxies: Option<Arc<Proxies>>,
    /// The bound on a Unix socket's connect (TCP's is in `http`).
    pub(crate) connect_timeout: Option<std::time::Duration>,
}

impl Connector {
    /// Opens a connection to the Unix socket at `path`, within the
    /// connect timeout. Proxies do not apply: the socket is local.
    #[cfg(unix)]
    pub(crate) async fn connect_unix(&self, path: &std::path::Path) -> Result<Connected, BoxError> {
        let connect = tokio::net::UnixStream::connect(path);
        let io = match self.connect_timeout {
            Some(t) => tokio::time::timeout(t, connect).await.map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "unix socket connect timed out",
                )
            })??,
            None => connect.await?,
        };
        Ok(Connected {
            io: Io::Unix(io),
            h2: false,
        })
    }

    /// Opens a connection for requests to `dst` (absolute).
    pub(crate) async fn connect(&self, dst: &Uri) -> Result<Connected, BoxError> {
        let intercept = self.proxies.as_ref().and_then(|p| p.intercept(dst));
        let https = dst.scheme() == Some(&http::uri::Scheme::HTTPS);
        let mut http = self.http.clone();
        let plain = |io| Connected {
            io: plain(io),
            h2: false,
        };
        match (https, intercept) {
            (false, None) => Ok(plain(http.call(dst.clone()).await?)),
            // Requests on it go in absolute form (the client knows).
            (false, Some(p)) => Ok(plain(http.call(p.uri().clone()).await?)),
            #[cfg(not(feature = "rustls"))]
            (true, _) => Err("https:// needs the `rustls` feature of fallback-chain".into()),
            #[cfg(feature = "rustls")]
            (true, None) => {
                let io = HttpsConnector::from((http, self.tls.config()))
                    .call(dst.clone())
                    .await?;
                Ok(tls(io))
            }
            #[cfg(feature = "rustls")]
            (true, Some(p)) => {
                let mut tunnel = Tunnel::new(p.uri().clone(), http);
                if let Some(auth) = proxy::auth(&p) {
                    tunnel = tunnel.with_auth(auth);
                }
                let io = HttpsConnector::from((tunnel, self.tls.config()))
                    .call(dst.clone())
                    .await?;
                Ok(tls(io))
            }
        }
    }
}

#[cfg(feature = "rustls")]
type TlsStream = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

#[cfg(feature = "rustls")]
fn tls(io: TlsStream) -> Connected {
    let h2 = io.connected().is_negotiated_h2();
    Connected {
        io: Io::Tls(Box::new(TlsIo {
            io: TokioIo::new(io),
            write_error: None,
            drained: false,
        })),
        h2,
    }
}

/// A TLS connection that, when a write fails because the server closed
/// the connection, reads what the server sent before closing: with TLS
/// 1.3 a server checks a client certificate after the client's side of
/// the handshake is done, so its refusal (a fatal alert) may sit unread
/// while the first write fails. The alert, not the broken pipe, is then
/// the error, which tells the chain the server took nothing.
#[cfg(feature = "rustls")]
pub(crate) struct TlsIo {
    io: TokioIo<TlsStream>,
    /// A write error held until the read side has drained.
    write_error: Option<std::io::Error>,
    drained: bool,
}

#[cfg(feature = "rustls")]
impl TlsIo {
    /// A write failed because the peer closed the connection: reads to the
    /// end (a closed socket answers at once) before reporting it, and
    /// reports a refusal alert found there in its place.
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
                    self.drained = true;
                    if refusal_alert(&read) {
                        return Poll::Ready(Err(read));
                    }
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

    fn poll_write_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut TokioIo<TlsStream>>, &mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if let Some(held) = self.held_write_error(cx) {
            return held;
        }
        let polled = write(Pin::new(&mut self.io), cx);
        self.poll_write_failed(cx, polled)
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
            #[cfg(unix)]
            Io::Unix(u) => Pin::new(u).poll_read(cx, buf),
            #[cfg(feature = "rustls")]
            Io::Tls(tls) => Pin::new(&mut tls.io).poll_read(cx, buf),
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
            #[cfg(unix)]
            Io::Unix(u) => Pin::new(u).poll_write(cx, buf),
            #[cfg(feature = "rustls")]
            Io::Tls(tls) => tls.poll_write_with(cx, |io, cx| io.poll_write(cx, buf)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            Io::Unix(u) => Pin::new(u).poll_write_vectored(cx, bufs),
            #[cfg(feature = "rustls")]
            Io::Tls(tls) => tls.poll_write_with(cx, |io, cx| io.poll_write_vectored(cx, bufs)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            #[cfg(unix)]
            Io::Unix(u) => u.is_write_vectored(),
            #[cfg(feature = "rustls")]
            Io::Tls(tls) => tls.io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            #[cfg(unix)]
            Io::Unix(u) => Pin::new(u).poll_flush(cx),
            #[cfg(feature = "rustls")]
            Io::Tls(tls) => tls.poll_write_with(cx, |io, cx| io.poll_flush(cx)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            #[cfg(unix)]
            Io::Unix(u) => Pin::new(u).poll_shutdown(cx),
            #[cfg(feature = "rustls")]
            Io::Tls(tls) => Pin::new(&mut tls.io).poll_shutdown(cx),
        }
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

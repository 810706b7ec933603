//! Serving client connections: HTTP/1.1 or h2c, bounds on the head, and
//! a graceful drain at shutdown.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;

use crate::send_timeout::SendTimeout;
use crate::{path, Proxy};

/// The largest request head accepted (HTTP/1 buffer, HTTP/2 header list).
const MAX_HEAD: usize = 64 * 1024;

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(1);

/// How client connections are served: HTTP/1.1 or h2c, a bound on the
/// head's size and on the time to read it.
///
/// No half-close: a client whose connection ends while its request is in
/// flight has gone, and its request is cancelled, with every attempt,
/// retry and hedge it would still make (nginx's default too). A client
/// that shuts its writing side after the request is taken as gone.
pub(crate) fn connections(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD as u32);
    builder
}

/// Where client connections come from.
pub(crate) enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

pub(crate) async fn serve<F: std::future::Future>(proxy: &Proxy, listener: Listener, shutdown: F) {
    let listeners = &proxy.shared.listeners;
    let graceful = GracefulShutdown::new();
    let builder = connections(listeners.header_timeout);
    let mut stop = std::pin::pin!(shutdown);
    loop {
        let idle = proxy.live().idle_timeout;
        tokio::select! {
            accepted = accept(&listener) => match accepted {
                Some(Accepted::Tcp(tcp, client)) => {
                    let _ = tcp.set_nodelay(true);
                    let io = SendTimeout::new(tcp, idle);
                    serve_connection(proxy, &builder, &graceful, io, Some(client));
                }
                #[cfg(unix)]
                Some(Accepted::Unix(unix)) => {
                    let io = SendTimeout::new(unix, idle);
                    serve_connection(proxy, &builder, &graceful, io, None);
                }
                None => {}
            },
            _ = &mut stop => break,
        }
    }
    proxy.shared.draining.store(true, Ordering::Relaxed);
    drop(listener);
    // Idle keep-alive connections could hold this forever: bound it.
    let _ = tokio::time::timeout(listeners.drain, graceful.shutdown()).await;
}

enum Accepted {
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// The next client connection (`None`: an accept that failed, such as a
/// client gone before it was taken).
async fn accept(listener: &Listener) -> Option<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.ok().map(|(s, a)| Accepted::Tcp(s, a)),
        #[cfg(unix)]
        Listener::Unix(l) => l.accept().await.ok().map(|(s, _)| Accepted::Unix(s)),
    }
}

/// Serves one client connection in a task of its own.
fn serve_connection<T>(
    proxy: &Proxy,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    io: T,
    client: Option<std::net::SocketAddr>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let proxy = proxy.clone();
    let svc = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(path::handle(&proxy, req, client).await) }
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        let _ = conn.await;
    });
}

/// The exporter keeps every histogram sample until it is folded into the
/// buckets: without this, a proxy nobody scrapes grows by each request's
/// samples (37 MiB over two million requests in the soak).
pub(crate) async fn metrics_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

//! Links over Unix sockets: a real HTTP server on a socket in a
//! directory made by the test; the URL still gives `Host` and the path.
#![cfg(unix)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use fallback_chain::transport::{RequestBody, SendFuture, Transport};
use fallback_chain::{BuildError, Chain, Link, Outcome};
use fallback_chain_testserver::{Behavior, Server};

/// An HTTP/1.1 server on a Unix socket at `path`: answers each request
/// with its `Host` header and path. Gives back how many connections it
/// accepted.
async fn unix_server(path: &std::path::Path) -> Arc<AtomicUsize> {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let host = req
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body = format!("{host} {}", req.uri());
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    accepted
}

#[tokio::test]
async fn a_link_reaches_a_server_on_a_unix_socket_and_keeps_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("orders.sock");
    let accepted = unix_server(&sock).await;
    let chain = Chain::builder()
        .link(Link::get("http://orders.internal/orders/42?full=1").unix_socket(&sock))
        .build()
        .unwrap();
    for _ in 0..3 {
        let resp = chain.call().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&resp.body()[..], b"orders.internal /orders/42?full=1");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one pooled connection");
}

#[tokio::test]
async fn a_socket_nobody_listens_on_fails_over_like_a_refused_connection() {
    let dir = tempfile::tempdir().unwrap();
    let backup = Server::start(Behavior::ok("backup"));
    let chain = Chain::builder()
        .link(Link::post("http://orders.internal/orders").unix_socket(dir.path().join("gone.sock")))
        .link(Link::post(backup.url("/orders")))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&resp.body()[..], b"backup");
    let first = &resp.report().attempts()[0];
    assert_eq!(
        first.outcome(),
        Outcome::Connect,
        "never sent: a POST may fall over"
    );
}

#[test]
fn a_unix_socket_is_checked_when_the_chain_is_built() {
    let refused = |link: Link| match Chain::builder().link(link).build() {
        Err(e @ BuildError::Link { .. }) => e.to_string(),
        other => panic!("{other:?}"),
    };
    let e = refused(Link::get("https://orders.internal/").unix_socket("/run/x.sock"));
    assert!(
        e.contains("only http://") && e.contains("/run/x.sock"),
        "{e}"
    );
    let e = refused(Link::get("http://orders.internal/").unix_socket(""));
    assert!(e.contains("empty"), "{e}");
    let long = format!("/{}", "d".repeat(200));
    let e = refused(Link::get("http://orders.internal/").unix_socket(long));
    assert!(e.contains("at most 107"), "{e}");

    /// A transport that cannot reach Unix sockets.
    struct TcpOnly;
    impl Transport for TcpOnly {
        fn send(&self, _: http::Request<RequestBody>) -> SendFuture {
            unreachable!("nothing is sent by a chain that is refused")
        }
    }
    let e = match Chain::builder()
        .transport(TcpOnly)
        .link(Link::get("http://orders.internal/").unix_socket("/run/x.sock"))
        .build()
    {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a transport without Unix sockets took a socket link"),
    };
    assert!(e.contains("does not connect to Unix sockets"), "{e}");
}

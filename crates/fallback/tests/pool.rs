//! The default transport's connection pool, on real loopback sockets:
//! connections are kept and shared, given back only once their answer was
//! read, and one the server closed while it sat idle is never used again.

use std::time::Duration;

use fallback_chain::transport::HyperTransport;
use fallback_chain::{Chain, Link, Outcome};
use fallback_chain_testserver::{Behavior, Server};

#[tokio::test]
async fn calls_one_after_another_share_one_connection() {
    let server = Server::start(Behavior::ok("x"));
    let chain = Chain::builder()
        .link(Link::get(server.url("/")))
        .build()
        .unwrap();
    for _ in 0..50 {
        chain.call().await.unwrap();
    }
    assert_eq!(server.request_count(), 50);
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_open_at_most_one_connection_each() {
    let server = Server::start(Behavior::ok("x"));
    let chain = Chain::builder()
        .link(Link::get(server.url("/")))
        .build()
        .unwrap();
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let chain = chain.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    chain.call().await.unwrap();
                }
            })
        })
        .collect();
    for c in callers {
        c.await.unwrap();
    }
    assert_eq!(server.request_count(), 200);
    let opened = server.connection_count();
    assert!((1..=8).contains(&opened), "{opened} connections");
}

#[tokio::test]
async fn an_answer_read_halfway_does_not_give_its_connection_back() {
    let server = Server::start(Behavior::ok("a body of a few bytes"));
    let transport = HyperTransport::new();
    let chain = Chain::builder()
        .transport(transport)
        .link(Link::get(server.url("/")))
        .build()
        .unwrap();
    // A streamed answer dropped before its end: its connection cannot
    // serve another request, so the next call opens a new one.
    let resp = chain.send_streaming(http::Request::new("")).await.unwrap();
    drop(resp);
    chain.call().await.unwrap();
    assert_eq!(server.connection_count(), 2);
    // Read to the end, the connection is reused.
    chain.call().await.unwrap();
    assert_eq!(server.connection_count(), 2);
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_not_used_again() {
    let server = Server::builder(Behavior::ok("x"))
        .idle_timeout(Duration::from_millis(20))
        .start();
    let chain = Chain::builder()
        .link(Link::get(server.url("/")))
        .build()
        .unwrap();
    for _ in 0..5 {
        chain.call().await.unwrap();
        // Long past the server's idle close.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let resp = chain.call().await.unwrap();
        let outcomes: Vec<_> = resp
            .report()
            .attempts()
            .iter()
            .map(|a| a.outcome())
            .collect();
        // Not a stale attempt and a re-send: the closed connection was
        // seen at checkout and a new one opened.
        assert_eq!(outcomes, [Outcome::Ok]);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(server.connection_count(), 10);
}

#[tokio::test]
async fn the_idle_timeout_closes_kept_connections() {
    let server = Server::start(Behavior::ok("x"));
    let transport = HyperTransport::builder()
        .pool_idle_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let chain = Chain::builder()
        .transport(transport)
        .link(Link::get(server.url("/")))
        .build()
        .unwrap();
    chain.call().await.unwrap();
    // Closed by the pool, though no call came to take it.
    let t = std::time::Instant::now();
    while server.closed_connection_count() == 0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.closed_connection_count(), 1);
    chain.call().await.unwrap();
    assert_eq!(server.connection_count(), 2);
}

/// A server that answers a request's head at once, without reading its
/// body, and keeps the connection: 413 to a `POST`, 200 to anything else.
async fn early_answering_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let Ok(n) = conn.read(&mut buf).await else {
                    return;
                };
                let answer: &[u8] = if buf[..n].starts_with(b"POST") {
                    b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                };
                let _ = conn.write_all(answer).await;
                // Keep reading (and ignoring) whatever comes.
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// An upload whose next bytes never come.
struct Stalled;

impl http_body::Body for Stalled {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn a_connection_still_sending_an_upload_is_not_waited_for() {
    use fallback_chain::transport::{RequestBody, Transport};
    use http_body_util::BodyExt;
    let addr = early_answering_server().await;
    let transport = HyperTransport::new();
    // An upload that never ends, answered 413 before it is read.
    let mut post = http::Request::new(RequestBody::stream(Stalled));
    *post.method_mut() = http::Method::POST;
    *post.uri_mut() = format!("http://{addr}/upload").parse().unwrap();
    let resp = transport.send(post).await.unwrap();
    assert_eq!(resp.status(), 413);
    let _ = resp.into_body().collect().await;
    // The next request does not wait for that connection to be free.
    let mut get = http::Request::new(RequestBody::empty());
    *get.uri_mut() = format!("http://{addr}/x").parse().unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), transport.send(get))
        .await
        .expect("not stuck behind the upload")
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// An h2c server whose answers wait until `release` says go. Returns its
/// address, the connections it accepted and the streams it has been sent.
async fn holding_h2_server(
    release: tokio::sync::watch::Receiver<bool>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (conns, streams) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, s) = (conns.clone(), streams.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let (s, release) = (s.clone(), release.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((_, mut respond))) = conn.accept().await {
                    s.fetch_add(1, Ordering::SeqCst);
                    let mut release = release.clone();
                    tokio::spawn(async move {
                        let _ = release.wait_for(|go| *go).await;
                        let Ok(mut send) = respond.send_response(http::Response::new(()), false)
                        else {
                            return;
                        };
                        let _ = send.send_data(bytes::Bytes::from_static(b"held"), true);
                    });
                }
            });
        }
    });
    (addr, conns, streams)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_carrying_its_most_streams_is_joined_by_another() {
    use std::sync::atomic::Ordering;
    let (go, release) = tokio::sync::watch::channel(false);
    let (addr, conns, streams) = holding_h2_server(release).await;
    let transport = HyperTransport::builder()
        .http2_max_streams_per_connection(2)
        .build()
        .unwrap();
    let chain = Chain::builder()
        .transport(transport)
        .link(Link::get(format!("http://{addr}/")).http2_prior_knowledge(true))
        .build()
        .unwrap();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let chain = chain.clone();
            tokio::spawn(async move { chain.call().await })
        })
        .collect();
    // Five streams held open at once, two a connection: three connections
    // (one alone, the server allowing far more, would carry all five).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while streams.load(Ordering::SeqCst) < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server saw {streams:?} streams"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(conns.load(Ordering::SeqCst), 3);
    go.send(true).unwrap();
    for c in calls {
        let resp = c.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&resp.body()[..], b"held");
    }
    // Their streams ended: later calls reuse the connections.
    for _ in 0..6 {
        chain.call().await.unwrap();
    }
    assert_eq!(conns.load(Ordering::SeqCst), 3);
    assert_eq!(streams.load(Ordering::SeqCst), 11);
}

#[test]
fn no_streams_per_http2_connection_is_refused_by_name() {
    let err = HyperTransport::builder()
        .http2_max_streams_per_connection(0)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("http2_max_streams_per_connection"),
        "{err}"
    );
}

#[tokio::test]
async fn a_connection_past_its_age_takes_no_new_request() {
    let server = Server::start(Behavior::ok("x"));
    let transport = HyperTransport::builder()
        .pool_max_connection_age(Duration::from_secs(1))
        .build()
        .unwrap();
    let chain = Chain::builder()
        .transport(transport)
        .link(Link::get(server.url("/")))
        .build()
        .unwrap();
    chain.call().await.unwrap();
    chain.call().await.unwrap();
    assert_eq!(server.connection_count(), 1, "reused while young");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    chain.call().await.unwrap();
    assert_eq!(server.connection_count(), 2, "a new one past the age");
}

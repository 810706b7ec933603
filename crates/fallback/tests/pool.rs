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

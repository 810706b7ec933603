//! Calls that commit at the head (`send_streaming`, `call_streaming`): the
//! winner's body streams unread; after the commit there is no failover, and
//! the body's end tells the link's breaker how it went.

use std::time::Duration;

use bytes::Bytes;
use fallback_chain::{Chain, Link};
use fallback_chain_testserver::{Behavior, Server};
use http_body_util::BodyExt;

#[tokio::test]
async fn the_head_commits_and_a_large_body_streams_unread() {
    let down = Server::start(Behavior::status(503));
    let big = Server::start(Behavior::Huge {
        status: 200,
        len: 64 << 20,
        chunked: true,
    });
    let chain = Chain::builder()
        .max_body(1024) // does not apply to a streamed body
        .link(Link::get(down.url("/")))
        .link(Link::get(big.url("/")))
        .build()
        .unwrap();
    let resp = chain.call_streaming().await.unwrap();
    assert_eq!(resp.winner(), 1);
    // The head is here long before 64 MiB could have been sent.
    assert!(big.bytes_sent() < 64 << 20, "{}", big.bytes_sent());
    let mut body = resp.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len() as u64;
        }
    }
    assert_eq!(total, 64 << 20);
    let health = chain.health();
    assert_eq!((health[1].successes(), health[1].failures()), (1, 0));
}

#[tokio::test]
async fn a_body_that_breaks_after_the_commit_is_an_error_and_a_failure() {
    let truncated = Server::start(Behavior::Truncate {
        status: 200,
        body: Bytes::from_static(b"half of it"),
        declared: 100,
    });
    let backup = Server::start(Behavior::ok("never asked"));
    let chain = Chain::builder()
        .timeout(Duration::from_secs(5))
        .link(Link::get(truncated.url("/")))
        .link(Link::get(backup.url("/")))
        .build()
        .unwrap();
    let resp = chain
        .send_streaming(http::Request::new(Bytes::new()))
        .await
        .unwrap();
    assert_eq!(resp.winner(), 0);
    // The client of a proxy sees an error, never a clean, short end.
    assert!(resp.into_body().collect().await.is_err());
    assert_eq!(backup.request_count(), 0, "no failover after the commit");
    let health = chain.health();
    assert_eq!((health[0].successes(), health[0].failures()), (0, 1));
}

#[tokio::test]
async fn the_request_s_path_and_body_reach_the_winner() {
    let down = Server::start(Behavior::status(502));
    let echo = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .link(Link::get(down.url("/api")))
        .link(Link::get(echo.url("/api")))
        .build()
        .unwrap();
    let req = http::Request::post("/orders?x=1")
        .header("content-type", "text/plain")
        .body(Bytes::from_static(b"order"))
        .unwrap();
    let resp = chain.send_streaming(req).await.unwrap();
    assert_eq!(resp.headers()["x-echo-path"], "/api/orders?x=1");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"order");
    assert_eq!(down.requests()[0].body, &b"order"[..]);
}

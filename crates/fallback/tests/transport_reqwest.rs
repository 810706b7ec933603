//! The `reqwest` transport: a caller's own client, same behaviour.
#![cfg(feature = "reqwest-0_13")]

use std::time::Duration;

use bytes::Bytes;
use fallback_chain::transport::ReqwestTransport;
use fallback_chain::{Chain, ErrorKind, Link, Outcome};
use fallback_chain_testserver::{Behavior, Server};

fn chain(links: Vec<Link>) -> Chain {
    let client = reqwest::Client::builder()
        .user_agent("my-app/1.0")
        .build()
        .unwrap();
    Chain::builder()
        .transport(ReqwestTransport::new(client))
        .links(links)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

#[tokio::test]
async fn fails_over_like_the_default_transport() {
    let refused = Server::refused();
    let hole = Server::start(Behavior::BlackHole);
    let trunc = Server::start(Behavior::Truncate {
        status: 200,
        body: Bytes::from_static(b"part"),
        declared: 50,
    });
    let ok = Server::start(Behavior::Echo);
    let c = chain(vec![
        Link::get(refused.url("/")),
        Link::get(hole.url("/")),
        Link::get(trunc.url("/")),
        Link::put(ok.url("/")).body("data"),
    ]);
    let resp = c.call().await.unwrap();
    assert_eq!(&resp.body()[..], b"data");
    let outcomes: Vec<_> = resp
        .report()
        .attempts()
        .iter()
        .map(|a| a.outcome())
        .collect();
    assert_eq!(
        outcomes,
        [Outcome::Connect, Outcome::Timeout, Outcome::Io, Outcome::Ok]
    );
    // The caller's client settings are used.
    assert_eq!(ok.requests()[0].header("user-agent"), Some("my-app/1.0"));
}

#[tokio::test]
async fn post_to_a_reset_is_not_re_sent() {
    let reset = Server::start(Behavior::Reset);
    let ok = Server::start(Behavior::ok("fine"));
    let c = chain(vec![Link::post(reset.url("/")), Link::post(ok.url("/"))]);
    let err = c.call().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MaybeProcessed);
    assert_eq!(ok.request_count(), 0);
}

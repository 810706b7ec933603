//! The blocking API on the same misbehaving servers.
#![cfg(feature = "blocking")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use fallback_chain::{blocking, Chain, ErrorKind, Link, Outcome};
use fallback_chain_testserver::{Behavior, Server};

fn chain(links: Vec<Link>) -> blocking::Chain {
    blocking::Chain::new(
        Chain::builder()
            .timeout(Duration::from_millis(200))
            .links(links)
            .build()
            .unwrap(),
    )
    .unwrap()
}

fn outcomes(r: &fallback_chain::Report) -> Vec<Outcome> {
    r.attempts().iter().map(|a| a.outcome()).collect()
}

#[test]
fn fails_over_refused_black_hole_and_truncated() {
    let refused = Server::refused();
    let hole = Server::start(Behavior::BlackHole);
    let trunc = Server::start(Behavior::Truncate {
        status: 200,
        body: Bytes::from_static(b"part"),
        declared: 40,
    });
    let ok = Server::start(Behavior::ok_json(r#"{"v": 3}"#));
    let c = chain(vec![
        Link::get(refused.url("/")),
        Link::get(hole.url("/")),
        Link::get(trunc.url("/")),
        Link::get(ok.url("/")),
    ]);
    let t = Instant::now();
    let resp = c.call_json::<serde_json::Value>().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(resp.body()["v"], 3);
    assert_eq!(
        outcomes(resp.report()),
        [Outcome::Connect, Outcome::Timeout, Outcome::Io, Outcome::Ok]
    );
}

#[test]
fn every_link_failing_returns_the_last_body() {
    let a = Server::start(Behavior::status(500));
    let b = Server::start(fallback_chain_testserver::Reply::json(
        503,
        r#"{"m": "down"}"#,
    ));
    let c = chain(vec![Link::get(a.url("/")), Link::get(b.url("/"))]);
    let f = c.call_json::<serde_json::Value>().unwrap_err();
    assert_eq!(f.kind(), ErrorKind::Exhausted);
    let body: serde_json::Value = f.json().unwrap().unwrap();
    assert_eq!(body["m"], "down");
}

#[test]
fn a_post_with_an_unknown_outcome_is_not_re_sent() {
    let hole = Server::start(Behavior::BlackHole);
    let ok = Server::start(Behavior::ok("fine"));
    let c = chain(vec![
        Link::post(hole.url("/")).body("x"),
        Link::post(ok.url("/")).body("x"),
    ]);
    assert_eq!(c.call().unwrap_err().kind(), ErrorKind::MaybeProcessed);
    assert_eq!(ok.request_count(), 0);
}

#[test]
fn shared_between_threads() {
    let ok = Server::start(Behavior::ok("fine"));
    let c = chain(vec![Link::get(ok.url("/"))]);
    std::thread::scope(|s| {
        for _ in 0..8 {
            let c = c.clone();
            s.spawn(move || {
                for _ in 0..25 {
                    assert_eq!(&c.call().unwrap().body()[..], b"fine");
                }
            });
        }
    });
    assert_eq!(ok.request_count(), 200);
}

#[tokio::test]
async fn called_from_async_code_it_does_not_panic() {
    let ok = Server::start(Behavior::ok("fine"));
    let c = chain(vec![Link::get(ok.url("/"))]);
    assert_eq!(&c.call().unwrap().body()[..], b"fine");
}

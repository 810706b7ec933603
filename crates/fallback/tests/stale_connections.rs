//! Stale pooled connections, on real loopback sockets.
//!
//! Servers close keep-alive connections that sit idle. A request sent on a
//! pooled connection at that very moment is lost with it. An idempotent
//! request is then re-sent once, at once, on a new connection (Go's
//! net/http rule): not a try, not drawn from the budget, and shown in the
//! report as `stale`. Any other request keeps its unknown outcome.

use std::collections::HashMap;
use std::time::Duration;

use fallback_chain::{Chain, ErrorKind, Link, Outcome, RetryBudget};
use fallback_chain_testserver::{Behavior, Server};

fn outcomes(r: &fallback_chain::Report) -> Vec<(Outcome, u32)> {
    r.attempts()
        .iter()
        .map(|a| (a.outcome(), a.try_number()))
        .collect()
}

/// Every request that arrives on a kept-alive connection is read, then
/// the connection closes (`Close`: FIN, or `Reset`: RST) unanswered. Every
/// call after the first finds its pooled connection stale.
async fn gets_survive(reused: Behavior) {
    let server = Server::start(Behavior::on_reused(reused, Behavior::ok("fresh")));
    let chain = Chain::builder()
        .link(Link::get(server.url("/x")))
        // An empty budget: a re-send that drew from it would be refused.
        .retries(1)
        .retry_budget(RetryBudget::new().ratio(0.0).min_per_sec(0.0))
        .build()
        .unwrap();
    let mut stale = 0;
    for call in 0..40 {
        let resp = chain
            .call()
            .await
            .unwrap_or_else(|e| panic!("call {call}: {e}"));
        assert_eq!(&resp.body()[..], b"fresh");
        // The re-send's connection is not pooled, so the call after it
        // connects anew and its connection is pooled for the next one.
        match &outcomes(resp.report())[..] {
            [(Outcome::Ok, 1)] => {}
            [(Outcome::Stale, 1), (Outcome::Ok, 1)] => {
                stale += 1;
                let why = resp.report().attempts()[0].error().unwrap();
                assert!(why.contains("re-sent at once on a new connection"), "{why}");
            }
            other => panic!("call {call}: {other:?}"),
        }
    }
    assert_eq!(
        stale, 20,
        "every other call found its pooled connection closed"
    );
    // Each re-send went out on a new connection: no connection answered
    // more than one request.
    let mut per_conn: HashMap<usize, usize> = HashMap::new();
    for r in server.requests() {
        *per_conn.entry(r.connection).or_default() += 1;
    }
    assert!(per_conn.values().all(|&n| n <= 2), "{per_conn:?}");
    assert_eq!(server.request_count(), 40 + stale);
}

#[tokio::test]
async fn a_get_on_a_connection_the_server_closed_is_re_sent_on_a_new_one() {
    gets_survive(Behavior::Close).await;
}

#[tokio::test]
async fn a_get_on_a_connection_the_server_reset_is_re_sent_on_a_new_one() {
    gets_survive(Behavior::Reset).await;
}

#[tokio::test]
async fn a_post_on_a_stale_connection_is_never_duplicated() {
    let primary = Server::start(Behavior::on_reused(Behavior::Reset, Behavior::Echo));
    let backup = Server::start(Behavior::Echo);
    // One pool for every call, so connections are reused.
    let transport = fallback_chain::transport::HyperTransport::new();
    let (mut ok, mut unknown) = (0, 0);
    for i in 0..40 {
        let order = format!("order-{i}");
        let c = Chain::builder()
            .transport(transport.clone())
            .link(Link::post(primary.url("/orders")).body(order.clone()))
            .link(Link::post(backup.url("/orders")).body(order.clone()))
            .breaker(None)
            .build()
            .unwrap();
        match c.call().await {
            Ok(resp) => {
                assert_eq!(resp.body(), order.as_bytes());
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::MaybeProcessed, "{e}");
                assert!(e.may_have_been_processed());
                let last = e.last_attempt().unwrap();
                assert_eq!(last.outcome(), Outcome::Io, "{e}");
                assert!(
                    last.error().unwrap().contains("closed it while idle"),
                    "{e}"
                );
                unknown += 1;
            }
        }
    }
    assert_eq!(ok + unknown, 40);
    assert!(unknown > 0, "the stale connections were reached");
    assert_eq!(
        backup.request_count(),
        0,
        "an unknown outcome is not re-sent"
    );
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in primary.requests() {
        *seen.entry(r.body.to_vec()).or_default() += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "duplicates: {seen:?}");
}

#[tokio::test]
async fn a_post_with_an_idempotency_key_is_re_sent_fresh() {
    let server = Server::start(Behavior::on_reused(Behavior::Close, Behavior::Echo));
    let chain = Chain::builder()
        .link(
            Link::post(server.url("/orders"))
                .header("Idempotency-Key", "k-1")
                .body("order"),
        )
        .build()
        .unwrap();
    for _ in 0..5 {
        let resp = chain.call().await.unwrap();
        assert_eq!(&resp.body()[..], b"order");
    }
}

#[tokio::test]
async fn a_get_marked_not_idempotent_keeps_its_unknown_outcome() {
    let server = Server::start(Behavior::on_reused(Behavior::Close, Behavior::ok("x")));
    let chain = Chain::builder()
        .link(Link::get(server.url("/")).idempotent(false))
        .build()
        .unwrap();
    chain.call().await.unwrap();
    let e = chain.call().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MaybeProcessed, "{e}");
    assert_eq!(server.request_count(), 2);
}

/// A tiny deterministic generator, so the gaps are the same on every run.
fn gaps(n: usize, around: Duration, spread: Duration) -> Vec<Duration> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let span = spread.as_micros() as u64 * 2;
            around - spread + Duration::from_micros(x % span)
        })
        .collect()
}

/// A server that closes idle connections after 20 ms, as gunicorn does
/// after 2 s, and calls spaced 17 to 23 ms apart, so the close races the
/// next request on the pooled connection. Before stale connections were
/// re-sent, about 1 GET in 100 failed here.
#[tokio::test]
async fn gets_racing_the_servers_idle_close_never_fail() {
    let server = Server::builder(Behavior::ok("x"))
        .idle_timeout(Duration::from_millis(20))
        .start();
    let chain = Chain::builder()
        .link(Link::get(server.url("/")))
        .build()
        .unwrap();
    let mut failed = Vec::new();
    let mut stale = 0;
    for gap in gaps(300, Duration::from_millis(20), Duration::from_millis(3)) {
        tokio::time::sleep(gap).await;
        match chain.call().await {
            Ok(resp) => {
                stale += resp
                    .report()
                    .attempts()
                    .iter()
                    .filter(|a| a.outcome() == Outcome::Stale)
                    .count()
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    eprintln!(
        "300 GETs: {} failed, {stale} stale connections re-sent, {} connections",
        failed.len(),
        server.connection_count()
    );
    assert!(failed.is_empty(), "{failed:#?}");
}

#[tokio::test]
async fn posts_racing_the_servers_idle_close_are_never_duplicated() {
    let server = Server::builder(Behavior::Echo)
        .idle_timeout(Duration::from_millis(20))
        .start();
    let transport = fallback_chain::transport::HyperTransport::new();
    let mut unknown = 0;
    for (i, gap) in gaps(200, Duration::from_millis(20), Duration::from_millis(3))
        .into_iter()
        .enumerate()
    {
        tokio::time::sleep(gap).await;
        let chain = Chain::builder()
            .transport(transport.clone())
            .link(Link::post(server.url("/")).body(format!("order-{i}")))
            .build()
            .unwrap();
        if let Err(e) = chain.call().await {
            assert_eq!(e.kind(), ErrorKind::MaybeProcessed, "{e}");
            unknown += 1;
        }
    }
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in server.requests() {
        *seen.entry(r.body.to_vec()).or_default() += 1;
    }
    eprintln!(
        "200 POSTs: {unknown} unknown outcomes, {} received",
        server.request_count()
    );
    assert!(seen.values().all(|&n| n == 1), "duplicates: {seen:?}");
}

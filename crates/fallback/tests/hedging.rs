//! Hedged requests on real loopback servers (short real delays, generous
//! bounds), and on a paused clock for the exact schedule.

mod common;

use std::time::{Duration, Instant};

use common::{ok, Script, Step};
use fallback_chain::{Chain, Hedge, Link, Outcome, RetryBudget};
use fallback_chain_testserver::{Behavior, Reply, Server};

fn outcomes(r: &fallback_chain::Report) -> Vec<(usize, Outcome)> {
    r.attempts()
        .iter()
        .map(|a| (a.link(), a.outcome()))
        .collect()
}

#[tokio::test]
async fn a_slow_primary_is_hedged_and_cancelled() {
    let slow = Server::start(Reply::json(200, r#"{"from": "slow"}"#).delay(Duration::from_secs(3)));
    let fast = Server::start(Reply::json(200, r#"{"from": "fast"}"#));
    let chain = Chain::builder()
        .hedge(Hedge::fixed(Duration::from_millis(100)))
        .link(Link::get(slow.url("/")))
        .link(Link::get(fast.url("/")))
        .build()
        .unwrap();
    let t = Instant::now();
    let resp = chain.call_json::<serde_json::Value>().await.unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(resp.body()["from"], "fast");
    assert_eq!(
        outcomes(resp.report()),
        [(1, Outcome::Ok), (0, Outcome::Cancelled)]
    );
    assert_eq!(slow.request_count(), 1);
    assert_eq!(fast.request_count(), 1);
}

#[tokio::test]
async fn a_fast_primary_sends_no_hedge() {
    let primary = Server::start(Behavior::ok("primary"));
    let backup = Server::start(Behavior::ok("backup"));
    let chain = Chain::builder()
        .hedge(Hedge::fixed(Duration::from_millis(500)))
        .link(Link::get(primary.url("/")))
        .link(Link::get(backup.url("/")))
        .build()
        .unwrap();
    for _ in 0..20 {
        let resp = chain.call().await.unwrap();
        assert_eq!(outcomes(resp.report()), [(0, Outcome::Ok)]);
    }
    assert_eq!(backup.request_count(), 0);
}

#[tokio::test]
async fn a_post_is_never_hedged() {
    let slow = Server::start(
        Reply::new(200)
            .body("slow")
            .delay(Duration::from_millis(400)),
    );
    let fast = Server::start(Behavior::ok("fast"));
    let chain = Chain::builder()
        .hedge(Hedge::fixed(Duration::from_millis(20)))
        .link(Link::post(slow.url("/")).body("order"))
        .link(Link::post(fast.url("/")).body("order"))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(&resp.body()[..], b"slow");
    assert_eq!(fast.request_count(), 0);
}

#[tokio::test]
async fn a_post_marked_idempotent_is_hedged() {
    let slow = Server::start(Reply::new(200).body("slow").delay(Duration::from_secs(3)));
    let fast = Server::start(Behavior::ok("fast"));
    let chain = Chain::builder()
        .hedge(Hedge::fixed(Duration::from_millis(20)))
        .header("Idempotency-Key", "order-7")
        .link(Link::post(slow.url("/")).body("order"))
        .link(Link::post(fast.url("/")).body("order"))
        .build()
        .unwrap();
    assert_eq!(&chain.call().await.unwrap().body()[..], b"fast");
}

#[tokio::test]
async fn the_winner_s_body_is_whole_and_a_broken_hedge_does_not_win() {
    // The primary answers slowly and whole; the hedge answers fast but
    // truncated, which is a failure, never a winner.
    let slow = Server::start(
        Reply::new(200)
            .body(vec![b'p'; 50_000])
            .delay(Duration::from_millis(300)),
    );
    let broken = Server::start(Behavior::Truncate {
        status: 200,
        body: bytes::Bytes::from_static(b"partial"),
        declared: 1000,
    });
    let chain = Chain::builder()
        .hedge(Hedge::fixed(Duration::from_millis(20)))
        .link(Link::get(slow.url("/")))
        .link(Link::get(broken.url("/")))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(resp.body().len(), 50_000);
    assert!(resp.body().iter().all(|&b| b == b'p'));
    assert_eq!(
        outcomes(resp.report()),
        [(1, Outcome::Io), (0, Outcome::Ok)]
    );
}

#[tokio::test]
async fn a_spent_budget_sends_no_hedge() {
    let slow = Server::start(
        Reply::new(200)
            .body("slow")
            .delay(Duration::from_millis(300)),
    );
    let fast = Server::start(Behavior::ok("fast"));
    let chain = Chain::builder()
        .hedge(Hedge::fixed(Duration::from_millis(20)))
        .retry_budget(RetryBudget::new().ratio(0.0).min_per_sec(0.0))
        .link(Link::get(slow.url("/")))
        .link(Link::get(fast.url("/")))
        .build()
        .unwrap();
    assert_eq!(&chain.call().await.unwrap().body()[..], b"slow");
    assert_eq!(fast.request_count(), 0);
}

#[tokio::test]
async fn a_failure_fails_over_at_once_while_hedging() {
    let refused = Server::refused();
    let fast = Server::start(Behavior::ok("fast"));
    let chain = Chain::builder()
        .hedge(Hedge::fixed(Duration::from_secs(5)))
        .link(Link::get(refused.url("/")))
        .link(Link::get(fast.url("/")))
        .build()
        .unwrap();
    let t = Instant::now();
    let resp = chain.call().await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(
        outcomes(resp.report()),
        [(0, Outcome::Connect), (1, Outcome::Ok)]
    );
}

// ---- exact schedules on a paused clock ----

#[tokio::test(start_paused = true)]
async fn the_hedge_starts_exactly_after_the_delay() {
    let s = Script::new(&[
        ("a", vec![Step::Hang]),
        ("b", vec![Step::Hang]),
        ("c", vec![ok()]),
    ]);
    let chain = Chain::builder()
        .transport(s.clone())
        .timeout(Duration::from_secs(10))
        .hedge(Hedge::fixed(Duration::from_millis(50)).max_in_flight(3))
        .retry_budget(RetryBudget::unlimited())
        .links([
            Link::get("http://a/"),
            Link::get("http://b/"),
            Link::get("http://c/"),
        ])
        .build()
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let resp = chain.call().await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    assert_eq!(s.times("b")[0] - s.times("a")[0], Duration::from_millis(50));
    assert_eq!(s.times("c")[0] - s.times("b")[0], Duration::from_millis(50));
    assert_eq!(
        outcomes(resp.report()),
        [
            (2, Outcome::Ok),
            (0, Outcome::Cancelled),
            (1, Outcome::Cancelled)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn at_most_max_in_flight() {
    let s = Script::new(&[
        ("a", vec![Step::Hang]),
        ("b", vec![Step::Hang]),
        ("c", vec![ok()]),
    ]);
    let chain = Chain::builder()
        .transport(s.clone())
        .timeout(Duration::from_secs(1))
        .hedge(Hedge::fixed(Duration::from_millis(50)))
        .retry_budget(RetryBudget::unlimited())
        .links([
            Link::get("http://a/"),
            Link::get("http://b/"),
            Link::get("http://c/"),
        ])
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    // Two in flight: c starts only when a times out at 1 s.
    assert_eq!(s.times("c")[0] - s.times("a")[0], Duration::from_secs(1));
    assert_eq!(
        outcomes(resp.report()),
        [
            (0, Outcome::Timeout),
            (2, Outcome::Ok),
            (1, Outcome::Cancelled)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn adaptive_delay_follows_the_link_s_latency() {
    let s = Script::new(&[("a", vec![ok()]), ("b", vec![ok()])]);
    let chain = Chain::builder()
        .transport(s.clone())
        .hedge(Hedge::adaptive().floor(Duration::from_millis(1)))
        .links([Link::get("http://a/"), Link::get("http://b/")])
        .build()
        .unwrap();
    // Instant answers: nothing is ever hedged.
    for _ in 0..40 {
        chain.call().await.unwrap();
    }
    assert!(s.times("b").is_empty());
    // Now a hangs: the hedge goes out after the floor, as a's p95 is ~0.
    s.set("a", vec![Step::Hang]);
    let t0 = tokio::time::Instant::now();
    let resp = chain.call().await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(1));
    assert_eq!(resp.winner(), 1);
}

#[tokio::test]
async fn call_into_hedges_too_and_only_the_winner_reaches_the_sink() {
    // The slow primary starts its body at once, then stalls: a sink fed as
    // bytes arrive would hold the loser's first half.
    let slow = Server::start(Behavior::StallMidBody {
        status: 200,
        body: bytes::Bytes::from_static(b"LOSER-LOSER-LOSER"),
        sent: 6,
    });
    let fast = Server::start(Behavior::ok("winner"));
    let chain = Chain::builder()
        .hedge(Hedge::fixed(Duration::from_millis(100)))
        .timeout(Duration::from_secs(5))
        .link(Link::get(slow.url("/")))
        .link(Link::get(fast.url("/")))
        .build()
        .unwrap();
    let mut sink: Vec<u8> = Vec::new();
    let resp = chain.call_into(&mut sink).await.unwrap();
    assert_eq!(sink, b"winner");
    assert_eq!(resp.winner(), 1);
    assert_eq!(
        outcomes(resp.report()),
        [(1, Outcome::Ok), (0, Outcome::Cancelled)]
    );
}

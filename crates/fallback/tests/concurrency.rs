//! One shared chain under many concurrent calls.

use fallback_chain::{BreakerState, Chain, Link, Outcome};
use fallback_chain_testserver::{Behavior, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_on_one_chain() {
    let primary = Server::refused();
    let backup = Server::builder(Behavior::ok_json(r#"{"n": 1}"#))
        .threads(2)
        .start();
    // Breakers off: every call tries the primary, as the original did.
    let chain = Chain::builder()
        .breaker(None)
        .link(Link::get(primary.url("/")).name("primary"))
        .link(Link::get(backup.url("/")).name("backup"))
        .build()
        .unwrap();

    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let chain = chain.clone();
            tokio::spawn(async move { chain.call_json::<serde_json::Value>().await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let resp = t.await.expect("task").expect("call");
        assert_eq!(resp.body()["n"], 1);
        let outcomes: Vec<_> = resp
            .report()
            .attempts()
            .iter()
            .map(|a| a.outcome())
            .collect();
        assert_eq!(outcomes, [Outcome::Connect, Outcome::Ok]);
        ok += 1;
    }
    assert_eq!(ok, 1000);
    assert_eq!(backup.request_count(), 1000);

    // The pool keeps connections alive: later calls open none.
    let opened = backup.connection_count();
    for _ in 0..100 {
        chain.call().await.unwrap();
    }
    assert_eq!(backup.connection_count(), opened);
    assert_eq!(backup.request_count(), 1100);
}

#[test]
fn chain_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Chain>();
    fn assert_send<T: Send>(_: &T) {}
    let chain = Chain::builder()
        .link(Link::get("http://127.0.0.1:1/"))
        .build()
        .unwrap();
    // The call futures can be spawned on a multi-threaded runtime.
    assert_send(&chain.call());
    assert_send(&chain.call_json::<serde_json::Value>());
    let mut sink = Vec::new();
    assert_send(&chain.call_into(&mut sink));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_breakers_the_dead_primary_is_skipped() {
    let primary = Server::refused();
    let backup = Server::builder(Behavior::ok("fine")).threads(2).start();
    let chain = Chain::builder()
        .link(Link::get(primary.url("/")).name("primary"))
        .link(Link::get(backup.url("/")).name("backup"))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let chain = chain.clone();
            tokio::spawn(async move { chain.call().await })
        })
        .collect();
    let mut connects = 0;
    for t in tasks {
        let resp = t.await.expect("task").expect("call");
        let first = resp.report().attempts()[0].outcome();
        assert!(
            matches!(first, Outcome::Connect | Outcome::Skipped),
            "{first:?}"
        );
        connects += usize::from(first == Outcome::Connect);
        assert_eq!(resp.winner(), 1);
    }
    assert_eq!(backup.request_count(), 1000);
    let health = &chain.health()[0];
    assert_eq!(health.state(), BreakerState::Open);
    // Every failure that reached the primary was counted, none lost.
    assert_eq!(health.failures() as usize, connects);
    let resp = chain.call().await.unwrap();
    assert_eq!(resp.report().attempts()[0].outcome(), Outcome::Skipped);
}

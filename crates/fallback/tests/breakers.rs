//! Breakers through the whole chain: skipped links, probes, panic mode and
//! sticky failover on a paused clock over an in-memory transport; counts
//! under concurrency on real sockets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ok, Script, Step};
use fallback_chain::{
    AllOpen, BreakerConfig, BreakerState, Chain, ErrorKind, Link, Outcome, SharedBreaker,
};
use fallback_chain_testserver::{Behavior, Server};
use tokio::time::{advance, Instant};

fn breaker() -> BreakerConfig {
    BreakerConfig::new()
        .consecutive_failures(2)
        .break_duration(Duration::from_secs(5))
        .seed(3)
}

fn chain(script: &Arc<Script>, cfg: BreakerConfig) -> fallback_chain::ChainBuilder {
    Chain::builder()
        .transport(script.clone())
        .timeout(Duration::from_secs(1))
        .breaker(cfg)
        .link(Link::get("http://a/").name("a"))
        .link(Link::get("http://b/").name("b"))
}

/// Lets spawned tasks (background probes) run on the test's runtime.
async fn let_tasks_run() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn trail(r: &fallback_chain::Report) -> Vec<(usize, Outcome)> {
    r.attempts()
        .iter()
        .map(|a| (a.link(), a.outcome()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_open_link_is_skipped_at_zero_cost() {
    let s = Script::new(&[("a", vec![Step::Hang]), ("b", vec![ok()])]);
    let c = chain(&s, breaker()).build().unwrap();
    for _ in 0..2 {
        let t = Instant::now();
        c.call().await.unwrap();
        assert_eq!(
            t.elapsed(),
            Duration::from_secs(1),
            "each call pays the timeout"
        );
    }
    let t = Instant::now();
    let resp = c.call().await.unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO, "the open link costs nothing");
    assert_eq!(
        trail(resp.report()),
        [(0, Outcome::Skipped), (1, Outcome::Ok)]
    );
    assert_eq!(resp.report().attempts()[0].elapsed(), Duration::ZERO);
    assert_eq!(s.times("a").len(), 2);
    let h = &c.health()[0];
    assert_eq!(
        (h.state(), h.failures(), h.times_opened()),
        (BreakerState::Open, 2, 1)
    );
    // Opened when the second call's timeout fired, at 2 s, until 7 s.
    assert_eq!(h.open_for(), Some(Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn half_open_probe_success_closes_the_link() {
    let s = Script::new(&[
        ("a", vec![Step::Refuse, Step::Refuse, ok()]),
        ("b", vec![ok()]),
    ]);
    let c = chain(&s, breaker()).build().unwrap();
    c.call().await.unwrap();
    c.call().await.unwrap();
    assert_eq!(c.health()[0].state(), BreakerState::Open);
    advance(Duration::from_secs(5)).await;
    assert_eq!(c.health()[0].state(), BreakerState::HalfOpen);
    let resp = c.call().await.unwrap();
    assert_eq!(trail(resp.report()), [(0, Outcome::Ok)]);
    assert_eq!(c.health()[0].state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_probe_failure_reopens_for_longer() {
    let s = Script::new(&[("a", vec![Step::Refuse]), ("b", vec![ok()])]);
    let c = chain(&s, breaker()).build().unwrap();
    c.call().await.unwrap();
    c.call().await.unwrap();
    advance(Duration::from_secs(5)).await;
    let resp = c.call().await.unwrap();
    assert_eq!(
        trail(resp.report()),
        [(0, Outcome::Connect), (1, Outcome::Ok)]
    );
    let h = &c.health()[0];
    assert_eq!(
        (h.state(), h.times_opened(), h.failed_probes()),
        (BreakerState::Open, 1, 1)
    );
    let left = h.open_for().unwrap();
    assert!(
        left >= Duration::from_secs(8) && left <= Duration::from_secs(10),
        "{left:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn with_every_link_open_the_soonest_to_recover_is_tried() {
    let s = Script::new(&[
        ("a", vec![Step::Refuse, Step::Refuse, ok()]),
        ("b", vec![ok(), ok(), Step::Refuse]),
    ]);
    let c = chain(&s, breaker())
        .all_open(AllOpen::try_soonest())
        .build()
        .unwrap();
    // a opens at 0 s (break ends at 5 s) ...
    c.call().await.unwrap();
    c.call().await.unwrap();
    // ... b opens at 1 s (break ends at 6 s).
    advance(Duration::from_secs(1)).await;
    assert!(c.call().await.is_err());
    assert!(c.call().await.is_err());
    assert!(c.health().iter().all(|h| h.state() == BreakerState::Open));
    // Panic mode: a, whose break ends first, is tried anyway, and it has
    // recovered.
    advance(Duration::from_secs(1)).await;
    let resp = c.call().await.unwrap();
    assert_eq!(trail(resp.report()), [(0, Outcome::Ok)]);
    assert_eq!(c.health()[0].state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn panic_mode_tries_only_the_soonest_link() {
    let s = Script::new(&[("a", vec![Step::Refuse]), ("b", vec![Step::Refuse])]);
    let c = chain(&s, breaker())
        .all_open(AllOpen::try_soonest())
        .build()
        .unwrap();
    assert!(c.call().await.is_err());
    assert!(c.call().await.is_err());
    let err = c.call().await.unwrap_err();
    assert_eq!(
        trail(err.report()),
        [(0, Outcome::Connect), (1, Outcome::Skipped)]
    );
}

#[tokio::test(start_paused = true)]
async fn sticky_failover_probes_in_the_background_and_returns() {
    let s = Script::new(&[
        ("a", vec![Step::Refuse, Step::Refuse, Step::Hang]),
        ("b", vec![ok()]),
    ]);
    let c = chain(&s, breaker()).sticky(true).build().unwrap();
    c.call().await.unwrap();
    c.call().await.unwrap();
    advance(Duration::from_secs(5)).await;

    // The break is over. The caller goes straight to b while a background
    // probe tries a (which hangs: the caller never waits for it).
    let t = Instant::now();
    let resp = c.call().await.unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
    assert_eq!(
        trail(resp.report()),
        [(0, Outcome::Skipped), (1, Outcome::Ok)]
    );
    // While the probe is in flight, calls keep starting at b.
    let_tasks_run().await;
    let resp = c.call().await.unwrap();
    assert_eq!(
        trail(resp.report()),
        [(0, Outcome::Skipped), (1, Outcome::Ok)]
    );
    // The probe times out after 1 s: a reopens, for longer.
    advance(Duration::from_millis(1100)).await;
    let_tasks_run().await;
    assert_eq!(c.health()[0].state(), BreakerState::Open);
    assert_eq!(s.times("a").len(), 3);

    // Next break: a has recovered; the background probe finds it.
    s.set("a", vec![ok()]);
    advance(Duration::from_secs(11)).await;
    let resp = c.call().await.unwrap();
    assert_eq!(resp.winner(), 1);
    let_tasks_run().await;
    assert_eq!(c.health()[0].state(), BreakerState::Closed);
    // Calls are back on the primary.
    let resp = c.call().await.unwrap();
    assert_eq!(trail(resp.report()), [(0, Outcome::Ok)]);
}

#[tokio::test(start_paused = true)]
async fn sticky_never_probes_a_post_in_the_background() {
    let s = Script::new(&[
        ("a", vec![Step::Refuse, Step::Refuse, ok()]),
        ("b", vec![ok()]),
    ]);
    let c = Chain::builder()
        .transport(s.clone())
        .breaker(breaker())
        .sticky(true)
        .link(Link::post("http://a/").body("x"))
        .link(Link::post("http://b/").body("x"))
        .build()
        .unwrap();
    c.call().await.unwrap();
    c.call().await.unwrap();
    advance(Duration::from_secs(5)).await;
    // The probe is the caller's own request, sent once.
    let resp = c.call().await.unwrap();
    assert_eq!(trail(resp.report()), [(0, Outcome::Ok)]);
    assert_eq!(s.times("a").len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_shared_breaker_opened_through_one_chain_skips_the_link_in_another() {
    let s = Script::new(&[("a", vec![Step::Refuse]), ("b", vec![ok()])]);
    let shared = SharedBreaker::new(breaker());
    let build = |path: &str| {
        Chain::builder()
            .transport(s.clone())
            .breaker(None)
            .link(Link::get(format!("http://a{path}")).breaker(shared.clone()))
            .link(Link::get(format!("http://b{path}")))
            .build()
            .unwrap()
    };
    let (orders, users) = (build("/orders"), build("/users"));
    orders.call().await.unwrap();
    users.call().await.unwrap();
    assert_eq!(shared.state(), BreakerState::Open);
    assert_eq!(s.times("a").len(), 2);
    // Both chains skip a now, though each saw only one failure.
    for c in [&orders, &users] {
        let resp = c.call().await.unwrap();
        assert_eq!(
            trail(resp.report()),
            [(0, Outcome::Skipped), (1, Outcome::Ok)]
        );
        assert_eq!(c.health()[0].state(), BreakerState::Open);
    }
    assert_eq!(s.times("a").len(), 2);
    // The shared breaker turned breakers on, for b too, with the defaults.
    assert_eq!(orders.health().len(), 2);
    // A re-assembled chain (the tower layer's) keeps the shared breaker.
    let again = orders.with_transport(s.clone());
    assert_eq!(again.health()[0].state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_probe_url_is_probed_in_the_background_even_for_a_post() {
    let s = Script::new(&[
        ("a", vec![Step::Refuse]),
        ("health", vec![Step::Hang, ok()]),
        ("b", vec![ok()]),
    ]);
    let c = Chain::builder()
        .transport(s.clone())
        .timeout(Duration::from_secs(1))
        .breaker(breaker())
        .sticky(true)
        .link(
            Link::post("http://a/orders")
                .body("x")
                .probe("http://health/healthz"),
        )
        .link(Link::post("http://b/orders").body("x"))
        .build()
        .unwrap();
    c.call().await.unwrap();
    c.call().await.unwrap();
    s.set("a", vec![ok()]);
    advance(Duration::from_secs(5)).await;
    // The break is over: the POST goes straight to b, and a GET of the
    // probe URL (which hangs) decides in the background.
    let t = Instant::now();
    let resp = c.call().await.unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
    assert_eq!(
        trail(resp.report()),
        [(0, Outcome::Skipped), (1, Outcome::Ok)]
    );
    let_tasks_run().await;
    assert_eq!(s.times("health").len(), 1);
    assert_eq!(s.times("a").len(), 2, "the POST is never the probe");
    advance(Duration::from_millis(1100)).await;
    let_tasks_run().await;
    assert_eq!(c.health()[0].state(), BreakerState::Open);
    // The next probe finds the health endpoint up: a closes.
    advance(Duration::from_secs(11)).await;
    c.call().await.unwrap();
    let_tasks_run().await;
    assert_eq!(s.times("health").len(), 2);
    assert_eq!(c.health()[0].state(), BreakerState::Closed);
    let resp = c.call().await.unwrap();
    assert_eq!(trail(resp.report()), [(0, Outcome::Ok)]);
}

#[test]
fn a_bad_probe_url_or_shared_breaker_config_is_a_build_error() {
    let err = Chain::builder()
        .link(Link::get("http://127.0.0.1:1/").probe("ftp://x/health"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("link 0"), "{err}");
    assert!(err.to_string().contains("probe"), "{err}");
    let err = Chain::builder()
        .link(Link::get("http://127.0.0.1:1/").probe("http://u:pw@x/health"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("probe"), "{err}");
    assert!(!err.to_string().contains("pw"), "{err}");
    let bad = SharedBreaker::new(BreakerConfig::new().failure_ratio(0.0));
    let err = Chain::builder()
        .link(Link::get("http://127.0.0.1:1/").breaker(bad))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("failure ratio"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn with_every_link_down_calls_fail_fast_and_each_link_gets_one_probe_a_second() {
    let s = Script::new(&[("a", vec![Step::Refuse]), ("b", vec![Step::Refuse])]);
    let c = chain(&s, breaker()).build().unwrap();
    // Two calls open both breakers (two consecutive failures each).
    assert!(c.call().await.is_err());
    assert!(c.call().await.is_err());
    assert_eq!((s.times("a").len(), s.times("b").len()), (2, 2));
    // Every link open: the first two calls are the links' probes, the
    // other 998 fail at once, sending nothing.
    let mut fast = 0;
    for _ in 0..1000 {
        let t = Instant::now();
        let err = c.call().await.unwrap_err();
        assert_eq!(t.elapsed(), Duration::ZERO);
        if err.kind() == ErrorKind::AllOpen {
            fast += 1;
            assert!(err
                .report()
                .attempts()
                .iter()
                .all(|a| a.outcome() == Outcome::Skipped));
            assert!(
                err.to_string().contains("every link's breaker is open"),
                "{err}"
            );
        }
    }
    assert_eq!(fast, 998);
    assert_eq!((s.times("a").len(), s.times("b").len()), (3, 3));
    // A second later each link may be probed again, once.
    advance(Duration::from_secs(1)).await;
    for _ in 0..100 {
        let _ = c.call().await;
    }
    assert_eq!((s.times("a").len(), s.times("b").len()), (4, 4));
    // Re-opens after failed probes are not outages: the breakers opened
    // once each.
    let h = c.health();
    assert_eq!((h[0].times_opened(), h[0].failed_probes()), (1, 2));

    // b comes back: found within the probe interval, and then used.
    s.set("b", vec![ok()]);
    advance(Duration::from_secs(1)).await;
    let mut first_ok = None;
    for i in 0..10 {
        if c.call().await.is_ok() {
            first_ok = Some(i);
            break;
        }
    }
    assert_eq!(first_ok, Some(1), "the second call is b's probe");
    let resp = c.call().await.unwrap();
    assert_eq!(resp.winner(), 1);
    assert_eq!(c.health()[1].state(), BreakerState::Closed);
}

#[tokio::test]
async fn failing_fast_in_a_loop_still_lets_other_tasks_run() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let s = Script::new(&[("a", vec![Step::Refuse]), ("b", vec![Step::Refuse])]);
    let c = chain(&s, breaker()).build().unwrap();
    for _ in 0..4 {
        let _ = c.call().await;
    }
    // On this one thread, another task is waiting to run.
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    let mut calls = 0;
    while !ran.load(Ordering::SeqCst) && calls < 1_000_000 {
        assert_eq!(c.call().await.unwrap_err().kind(), ErrorKind::AllOpen);
        calls += 1;
    }
    assert!(ran.load(Ordering::SeqCst), "starved for {calls} calls");
    assert!(calls < 1_000, "{calls} calls before it ran");
}

#[test]
fn a_zero_probe_interval_is_a_build_error() {
    let err = Chain::builder()
        .all_open(AllOpen::fail_fast().probe_interval(Duration::ZERO))
        .link(Link::get("http://127.0.0.1:1/"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("all_open"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_does_not_wedge_the_link() {
    let s = Script::new(&[
        ("a", vec![Step::Refuse, Step::Refuse, Step::Hang, ok()]),
        ("b", vec![ok()]),
    ]);
    let c = chain(&s, breaker())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    c.call().await.unwrap();
    c.call().await.unwrap();
    advance(Duration::from_secs(5)).await;
    // The caller gives up on the probe call (it hangs) after 1 s.
    assert!(tokio::time::timeout(Duration::from_secs(1), c.call())
        .await
        .is_err());
    // The next call probes again instead of skipping a forever.
    let resp = c.call().await.unwrap();
    assert_eq!(trail(resp.report()), [(0, Outcome::Ok)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_stay_consistent_while_a_link_flaps() {
    // The primary alternates between 500 and 200.
    let primary = Server::builder(Behavior::custom(|_, i| {
        if i % 2 == 0 {
            Behavior::status(500)
        } else {
            Behavior::ok("primary")
        }
    }))
    .threads(2)
    .start();
    let backup = Server::start(Behavior::ok("backup"));
    let c = Chain::builder()
        .breaker(
            BreakerConfig::new()
                .window(Duration::from_secs(600))
                .min_calls(50)
                .failure_ratio(0.6)
                .consecutive_failures(0),
        )
        .link(Link::get(primary.url("/")))
        .link(Link::get(backup.url("/")))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                let (mut ok, mut bad) = (0u64, 0u64);
                for _ in 0..25 {
                    let resp = c.call().await.expect("the backup always answers");
                    match resp.report().attempts()[0].outcome() {
                        Outcome::Ok => ok += 1,
                        Outcome::Status => bad += 1,
                        other => panic!("unexpected {other:?}"),
                    }
                }
                (ok, bad)
            })
        })
        .collect();
    let (mut ok, mut bad) = (0, 0);
    for t in tasks {
        let (o, b) = t.await.unwrap();
        ok += o;
        bad += b;
    }
    let h = &c.health()[0];
    assert_eq!((h.successes(), h.failures()), (ok, bad), "no update lost");
    assert_eq!(ok + bad, primary.request_count() as u64);
    assert_eq!(
        h.state(),
        BreakerState::Closed,
        "a 50 % failure ratio is under 0.6"
    );
}

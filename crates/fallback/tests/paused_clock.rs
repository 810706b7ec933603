//! Scheduling (Retry-After, backoff, budget, timeouts, deadline) on a paused
//! tokio clock, over an in-memory transport: no sockets, no real waiting,
//! exact virtual times.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{ok, Script, Step};
use fallback_chain::{Chain, ErrorKind, ExponentialBackoff, Link, Outcome, RetryBudget};
use tokio::time::Instant;

fn chain(script: &Arc<Script>, links: Vec<Link>) -> fallback_chain::ChainBuilder {
    Chain::builder().transport(script.clone()).links(links)
}

fn outcomes(r: &fallback_chain::Report) -> Vec<(usize, u32, Outcome)> {
    r.attempts()
        .iter()
        .map(|a| (a.link(), a.try_number(), a.outcome()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_is_honoured_on_the_same_link() {
    let s = Script::new(&[
        ("a", vec![Step::Answer(503, Some("2".into()), ""), ok()]),
        ("b", vec![ok()]),
    ]);
    let c = chain(&s, vec![Link::get("http://a/"), Link::get("http://b/")])
        .retries(1)
        .build()
        .unwrap();
    let t = Instant::now();
    let resp = c.call().await.unwrap();
    assert_eq!(
        outcomes(resp.report()),
        [(0, 1, Outcome::Status), (0, 2, Outcome::Ok)]
    );
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2010),
        "{waited:?}"
    );
    assert!(s.times("b").is_empty());
}

#[tokio::test(start_paused = true)]
async fn retry_after_http_date_is_honoured() {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    let s = Script::new(&[("a", vec![Step::Answer(429, Some(at), ""), ok()])]);
    let c = chain(&s, vec![Link::get("http://a/")])
        .retries(1)
        .build()
        .unwrap();
    let t = Instant::now();
    c.call().await.unwrap();
    // HTTP dates have one-second resolution.
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited <= Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_over_the_cap_moves_on_at_once() {
    let huge = (484_289u64 * 3600).to_string();
    let s = Script::new(&[
        ("a", vec![Step::Answer(503, Some(huge), "")]),
        ("b", vec![ok()]),
    ]);
    let c = chain(&s, vec![Link::get("http://a/"), Link::get("http://b/")])
        .retries(3)
        .build()
        .unwrap();
    let t = Instant::now();
    let resp = c.call().await.unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
    assert_eq!(
        outcomes(resp.report()),
        [(0, 1, Outcome::Status), (1, 1, Outcome::Ok)]
    );
    let err = resp.report().attempts()[0].error().unwrap();
    assert!(
        err.contains("484289h") && err.contains("exceeds the cap"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_past_the_deadline_moves_on_at_once() {
    let s = Script::new(&[
        ("a", vec![Step::Answer(429, Some("5".into()), "")]),
        ("b", vec![ok()]),
    ]);
    let c = chain(&s, vec![Link::get("http://a/"), Link::get("http://b/")])
        .retries(2)
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let t = Instant::now();
    let resp = c.call().await.unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
    assert_eq!(resp.winner(), 1);
    assert!(resp.report().attempts()[0]
        .error()
        .unwrap()
        .contains("deadline"));
}

#[tokio::test(start_paused = true)]
async fn backoff_without_jitter_is_exact() {
    let s = Script::new(&[("a", vec![Step::Refuse, Step::Refuse, Step::Refuse, ok()])]);
    let backoff = ExponentialBackoff::new()
        .base(Duration::from_millis(100))
        .cap(Duration::from_secs(1))
        .jitter(false);
    let c = chain(&s, vec![Link::get("http://a/")])
        .retries(3)
        .backoff(backoff)
        .build()
        .unwrap();
    c.call().await.unwrap();
    let t = s.times("a");
    let gaps: Vec<_> = t.windows(2).map(|w| w[1] - w[0]).collect();
    let ms = Duration::from_millis;
    assert_eq!(gaps, [ms(100), ms(200), ms(400)]);
}

#[tokio::test(start_paused = true)]
async fn seeded_jitter_is_reproducible_and_bounded() {
    async fn gaps(seed: u64) -> Vec<Duration> {
        let s = Script::new(&[(
            "a",
            vec![Step::Refuse, Step::Refuse, Step::Refuse, Step::Refuse, ok()],
        )]);
        let backoff = ExponentialBackoff::new()
            .base(Duration::from_millis(100))
            .cap(Duration::from_secs(1))
            .seed(seed);
        let c = chain(&s, vec![Link::get("http://a/")])
            .retries(4)
            .backoff(backoff)
            .build()
            .unwrap();
        c.call().await.unwrap();
        s.times("a").windows(2).map(|w| w[1] - w[0]).collect()
    }
    let a = gaps(42).await;
    assert_eq!(a, gaps(42).await);
    assert_ne!(a, gaps(43).await);
    for (n, g) in a.iter().enumerate() {
        // Full jitter: within [0, 100 ms × 2ⁿ] (plus the clock's 1 ms tick).
        assert!(
            *g <= Duration::from_millis(100 << n) + Duration::from_millis(1),
            "{n}: {g:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn spent_budget_skips_the_retry_and_fails_over() {
    let s = Script::new(&[("a", vec![Step::Answer(500, None, "")]), ("b", vec![ok()])]);
    let c = chain(&s, vec![Link::get("http://a/"), Link::get("http://b/")])
        .retries(3)
        .retry_budget(RetryBudget::new().ratio(0.0).min_per_sec(0.0))
        .build()
        .unwrap();
    let resp = c.call().await.unwrap();
    assert_eq!(
        outcomes(resp.report()),
        [
            (0, 1, Outcome::Status),
            (0, 2, Outcome::Skipped),
            (1, 1, Outcome::Ok)
        ]
    );
    assert_eq!(s.times("a").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn budget_is_shared_by_clones_and_calls() {
    let s = Script::new(&[("a", vec![Step::Answer(503, None, "")])]);
    // One retry allowed in the whole window, whatever the traffic.
    let budget = RetryBudget::new().ratio(0.0).min_per_sec(0.1);
    let c = chain(&s, vec![Link::get("http://a/")])
        .retries(1)
        .retry_budget(budget)
        .build()
        .unwrap();
    let first = c.call().await.unwrap_err();
    let second = c.clone().call().await.unwrap_err();
    let o1: Vec<_> = first
        .report()
        .attempts()
        .iter()
        .map(|a| a.outcome())
        .collect();
    let o2: Vec<_> = second
        .report()
        .attempts()
        .iter()
        .map(|a| a.outcome())
        .collect();
    assert_eq!(o1, [Outcome::Status, Outcome::Status]);
    assert_eq!(o2, [Outcome::Status, Outcome::Skipped]);
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_fires_at_its_exact_time() {
    let s = Script::new(&[("a", vec![Step::Hang]), ("b", vec![ok()])]);
    let c = chain(&s, vec![Link::get("http://a/"), Link::get("http://b/")])
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let t = Instant::now();
    let resp = c.call().await.unwrap();
    assert_eq!(t.elapsed(), Duration::from_secs(5));
    assert_eq!(
        resp.report().attempts()[0].elapsed(),
        Duration::from_secs(5)
    );
    assert_eq!(s.times("b")[0] - s.times("a")[0], Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn deadline_covers_backoff_sleeps_and_attempts() {
    let s = Script::new(&[("a", vec![Step::Refuse]), ("b", vec![Step::Hang])]);
    let backoff = ExponentialBackoff::new()
        .base(Duration::from_secs(1))
        .cap(Duration::from_secs(8))
        .jitter(false);
    let c = chain(&s, vec![Link::get("http://a/"), Link::get("http://b/")])
        .retries(5)
        .backoff(backoff)
        .deadline(Duration::from_millis(2500))
        .build()
        .unwrap();
    let t = Instant::now();
    let err = c.call().await.unwrap_err();
    // a at 0 s and 1 s; the 2 s wait would pass the deadline, so b at 1 s,
    // which hangs until the deadline at 2.5 s.
    assert_eq!(t.elapsed(), Duration::from_millis(2500));
    assert_eq!(err.kind(), ErrorKind::Deadline);
    assert_eq!(
        err.report()
            .attempts()
            .iter()
            .map(|a| (a.link(), a.outcome()))
            .collect::<Vec<_>>(),
        [
            (0, Outcome::Connect),
            (0, Outcome::Connect),
            (1, Outcome::Timeout)
        ]
    );
    assert_eq!(s.times("b")[0] - s.times("a")[0], Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn post_is_retried_only_when_the_outcome_is_known() {
    // Refused (never sent) and 503 (answered): retried on the same link.
    let s = Script::new(&[("a", vec![Step::Refuse, Step::Answer(503, None, ""), ok()])]);
    let c = chain(&s, vec![Link::post("http://a/").body("x")])
        .retries(2)
        .build()
        .unwrap();
    assert_eq!(c.call().await.unwrap().report().attempts().len(), 3);

    // A timeout after sending: unknown, so never retried.
    let s = Script::new(&[("a", vec![Step::Hang, ok()]), ("b", vec![ok()])]);
    let c = chain(
        &s,
        vec![
            Link::post("http://a/").body("x"),
            Link::post("http://b/").body("x"),
        ],
    )
    .retries(2)
    .timeout(Duration::from_secs(1))
    .build()
    .unwrap();
    let err = c.call().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MaybeProcessed);
    assert_eq!(s.times("a").len(), 1);
    assert!(s.times("b").is_empty());
}

#[tokio::test(start_paused = true)]
async fn final_and_non_retryable_statuses_are_not_retried_on_the_same_link() {
    let s = Script::new(&[("a", vec![Step::Answer(404, None, "")]), ("b", vec![ok()])]);
    let c = chain(&s, vec![Link::get("http://a/"), Link::get("http://b/")])
        .retries(3)
        .build()
        .unwrap();
    let resp = c.call().await.unwrap();
    // 404 falls back (non-2xx rule) but a retry on the same link is pointless.
    assert_eq!(
        outcomes(resp.report()),
        [(0, 1, Outcome::Status), (1, 1, Outcome::Ok)]
    );
}

/// The handoff contract for any transport: a timer that fires while the
/// transport still reports "connecting" means nothing was sent, so a POST
/// fails over; handed over, or never tracked, means the outcome is unknown.
#[tokio::test(start_paused = true)]
async fn a_timeout_before_the_handoff_is_the_connect_phase() {
    use fallback_chain::Phase;
    for (step, phase, fails_over) in [
        (Step::HangConnecting, Phase::Connect, true),
        (Step::HangHandedOver, Phase::Head, false),
        (Step::Hang, Phase::Head, false),
    ] {
        let s = Script::new(&[("a", vec![step]), ("b", vec![ok()])]);
        let c = chain(&s, vec![Link::post("http://a/"), Link::post("http://b/")])
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let t = Instant::now();
        let result = c.call().await;
        assert_eq!(t.elapsed(), Duration::from_secs(1));
        let report = match &result {
            Ok(r) => r.report(),
            Err(e) => e.report(),
        };
        let first = &report.attempts()[0];
        assert_eq!(first.phase(), Some(phase));
        assert_eq!(result.is_ok(), fails_over, "{phase}");
        if let Err(e) = result {
            assert_eq!(e.kind(), ErrorKind::MaybeProcessed);
        }
    }
}

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use proptest::prelude::*;

fn cfg() -> BreakerConfig {
    BreakerConfig::new()
        .failure_ratio(0.5)
        .min_calls(10)
        .consecutive_failures(0)
        .break_duration(Duration::from_secs(5))
        .max_break_duration(Duration::from_secs(40))
        .seed(1)
}

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

#[test]
fn opens_at_exactly_the_ratio_threshold() {
    let t0 = Instant::now();
    let b = Breaker::new(&cfg(), t0, 0);
    // 4 failures and 5 successes: 9 calls, under the minimum.
    for i in 0..9 {
        b.record(at(t0, 1), i % 2 == 1, false);
    }
    assert_eq!(b.admit(at(t0, 2)), Admit::Go);
    // The 10th call makes 5 failures of 10: exactly 0.5.
    b.record(at(t0, 3), false, false);
    assert_eq!(b.admit(at(t0, 4)), Admit::Skip(at(t0, 5003)));
}

#[test]
fn below_the_threshold_stays_closed() {
    let t0 = Instant::now();
    let b = Breaker::new(&cfg(), t0, 0);
    // 4 failures in 10: 0.4.
    for i in 0..10 {
        b.record(at(t0, 1), i >= 4, false);
    }
    assert_eq!(b.admit(at(t0, 2)), Admit::Go);
}

#[test]
fn consecutive_failures_open_with_little_traffic() {
    let t0 = Instant::now();
    let b = Breaker::new(&cfg().consecutive_failures(3), t0, 0);
    b.record(at(t0, 0), false, false);
    b.record(at(t0, 0), false, false);
    b.record(at(t0, 0), true, false);
    b.record(at(t0, 0), false, false);
    b.record(at(t0, 0), false, false);
    assert_eq!(b.admit(at(t0, 1)), Admit::Go);
    b.record(at(t0, 2), false, false);
    assert!(matches!(b.admit(at(t0, 3)), Admit::Skip(_)));
}

#[test]
fn failures_leave_the_window() {
    let t0 = Instant::now();
    let b = Breaker::new(&cfg(), t0, 0);
    for _ in 0..9 {
        b.record(at(t0, 0), false, false);
    }
    // Eleven seconds later those nine failures are gone.
    b.record(at(t0, 11_000), false, false);
    assert_eq!(b.admit(at(t0, 11_001)), Admit::Go);
}

#[test]
fn half_open_probe_closes_or_reopens_longer() {
    let t0 = Instant::now();
    let b = Breaker::new(&cfg().consecutive_failures(1), t0, 0);
    b.record(t0, false, false);
    assert_eq!(b.admit(at(t0, 4_999)), Admit::Skip(at(t0, 5_000)));
    // The break is over: one probe, and only one.
    assert_eq!(b.admit(at(t0, 5_000)), Admit::Probe);
    assert!(matches!(b.admit(at(t0, 5_001)), Admit::Skip(_)));
    // The probe fails: open again, for longer (2 × 5 s, jittered ≥ 80 %).
    b.record(at(t0, 5_010), false, true);
    let Admit::Skip(until) = b.admit(at(t0, 5_011)) else {
        panic!("open")
    };
    let second = until - at(t0, 5_010);
    assert!(
        second >= Duration::from_secs(8) && second <= Duration::from_secs(10),
        "{second:?}"
    );
    // The next probe succeeds: closed, counts reset.
    assert_eq!(b.admit(until), Admit::Probe);
    b.record(until, true, true);
    assert_eq!(b.admit(until), Admit::Go);
    let h = b.health(until, 0, "x");
    // One outage, one failed probe within it.
    assert_eq!(
        (h.state(), h.failures(), h.times_opened(), h.failed_probes()),
        (BreakerState::Closed, 0, 1, 1)
    );
}

#[test]
fn breaks_grow_up_to_the_cap() {
    let t0 = Instant::now();
    let b = Breaker::new(&cfg().consecutive_failures(1), t0, 0);
    b.record(t0, false, false);
    let mut now = t0;
    let mut breaks = Vec::new();
    for _ in 0..8 {
        let Admit::Skip(until) = b.admit(now) else {
            panic!("open")
        };
        breaks.push(until - now);
        now = until;
        assert_eq!(b.admit(now), Admit::Probe);
        b.record(now, false, true);
    }
    assert_eq!(breaks[0], Duration::from_secs(5));
    for w in breaks.windows(2) {
        assert!(
            w[1] >= w[0] || w[1] >= Duration::from_secs(32),
            "{breaks:?}"
        );
    }
    assert!(
        breaks.iter().all(|b| *b <= Duration::from_secs(40)),
        "{breaks:?}"
    );
    assert!(
        breaks[7] >= Duration::from_secs(32),
        "capped at 40 s, jittered: {breaks:?}"
    );
}

#[test]
fn an_abandoned_probe_lets_the_next_call_probe() {
    let t0 = Instant::now();
    let b = Breaker::new(&cfg().consecutive_failures(1), t0, 0);
    b.record(t0, false, false);
    assert_eq!(b.admit(at(t0, 6_000)), Admit::Probe);
    b.release_probe();
    assert_eq!(b.admit(at(t0, 6_001)), Admit::Probe);
}

#[test]
fn validation() {
    assert!(BreakerConfig::new().validate().is_ok());
    assert!(BreakerConfig::new().failure_ratio(0.0).validate().is_err());
    assert!(BreakerConfig::new()
        .break_duration(Duration::ZERO)
        .validate()
        .is_err());
    assert!(BreakerConfig::new()
        .break_duration(Duration::from_secs(90))
        .validate()
        .is_err());
}

proptest! {
    /// Whatever the sequence, a closed breaker with N failures out of M
    /// calls in one window is open exactly when the rule says so.
    #[test]
    fn ratio_rule_holds(outcomes in proptest::collection::vec(any::<bool>(), 0..200), ratio in 0.05f64..1.0, min in 1u32..50) {
        let t0 = Instant::now();
        let b = Breaker::new(&cfg().failure_ratio(ratio).min_calls(min), t0, 0);
        let (mut ok, mut bad) = (0u64, 0u64);
        for o in outcomes {
            if b.admit(t0) != Admit::Go {
                break;
            }
            b.record(t0, o, false);
            if o { ok += 1 } else { bad += 1 }
            let calls = ok + bad;
            let should = !o && calls >= min as u64 && bad as f64 >= ratio * calls as f64;
            prop_assert_eq!(b.admit(t0) != Admit::Go, should, "ok {} bad {}", ok, bad);
        }
    }
}

//! Counters, histograms and gauges through the `metrics` facade (feature
//! `metrics`): attempts by link and outcome, their durations, breaker
//! states, budget denials and streamed bodies aborted after the commit.

use crate::breaker::BreakerState;
use crate::report::Attempt;

pub(crate) fn attempt(a: &Attempt) {
    let link = a.name().to_owned();
    metrics::counter!("fallback_attempts_total", "link" => link.clone(), "outcome" => a.outcome().as_str())
        .increment(1);
    // A skipped attempt took no time, and a stale or redirected one is
    // followed by its next request: they would only distort the histogram.
    if !matches!(
        a.outcome(),
        crate::report::Outcome::Skipped
            | crate::report::Outcome::Stale
            | crate::report::Outcome::RefusedStream
            | crate::report::Outcome::Redirect
    ) {
        metrics::histogram!("fallback_attempt_duration_seconds", "link" => link)
            .record(a.elapsed().as_secs_f64());
    }
}

pub(crate) fn breaker_state(link: &str, state: BreakerState) {
    let v = match state {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open => 2.0,
    };
    metrics::gauge!("fallback_breaker_state", "link" => link.to_owned()).set(v);
    // Transitions, not a count of re-opens: with every link down, a link
    // moves at most twice per probe interval.
    metrics::counter!("fallback_breaker_transitions_total", "link" => link.to_owned(), "to" => state.as_str())
        .increment(1);
}

pub(crate) fn budget_denied() {
    metrics::counter!("fallback_budget_denied_total").increment(1);
}

/// A streamed body that broke after the commit: the server stalled past
/// the idle timeout (`idle_timeout`) or the stream failed (`upstream`).
pub(crate) fn stream_aborted(link: &str, e: &(dyn std::error::Error + 'static)) {
    let why = if crate::IdleTimeout::in_chain(e) {
        "idle_timeout"
    } else {
        "upstream"
    };
    metrics::counter!("fallback_stream_aborts_total", "link" => link.to_owned(), "why" => why)
        .increment(1);
}

//! Another try on the same link: which failures are worth one, how long
//! a `Retry-After` may make it wait, the backoff between tries
//! ([`backoff`]) and the budget that bounds them all ([`budget`]).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

use crate::report::Outcome;

pub(crate) mod backoff;
pub(crate) mod budget;

/// Default cap on a `Retry-After` the chain will wait for.
pub(crate) const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(30);

/// Whether a failure is worth another try on the same link.
pub(crate) fn worth_retrying(outcome: Outcome, status: Option<StatusCode>) -> bool {
    match outcome {
        Outcome::Connect | Outcome::Timeout | Outcome::Io | Outcome::Grpc => true,
        Outcome::Status => status.is_some_and(crate::Classifier::is_server_failure),
        _ => false,
    }
}

/// The delay a 429 or 503 answer asks for, if it asks for one.
///
/// Both forms of RFC 9110 are read: delta-seconds (`120`) and an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, and the two obsolete date forms). A
/// date in the past means "now". Anything unreadable is ignored.
pub(crate) fn retry_after(
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Huge values saturate rather than overflow; the cap rejects them.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What to do after a failed try that may be retried on the same link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait this long, then try the same link again.
    RetryAfter(Duration),
    /// Move to the next link now.
    FailOver(FailOverWhy),
}

/// Why the chain left a link that still had tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailOverWhy {
    /// The server's Retry-After is longer than the cap.
    RetryAfterOverCap(Duration),
    /// The wait would outlast the call's deadline.
    PastDeadline(Duration),
}

impl FailOverWhy {
    pub(crate) fn describe(self) -> String {
        match self {
            FailOverWhy::RetryAfterOverCap(d) => {
                format!("Retry-After of {} exceeds the cap; moved on", human(d))
            }
            FailOverWhy::PastDeadline(d) => {
                format!("a wait of {} would pass the deadline; moved on", human(d))
            }
        }
    }
}

fn human(d: Duration) -> String {
    if d.as_secs() >= 3600 {
        format!("{}h", d.as_secs() / 3600)
    } else {
        format!("{:?}", d)
    }
}

/// Decides the wait before the next try on the same link.
///
/// `asked` is the server's Retry-After, `backoff` the next backoff delay,
/// `remaining` the time left before the deadline (if there is one).
pub(crate) fn next(
    asked: Option<Duration>,
    backoff: Duration,
    cap: Duration,
    remaining: Option<Duration>,
) -> Next {
    let wait = match asked {
        Some(a) if a > cap => return Next::FailOver(FailOverWhy::RetryAfterOverCap(a)),
        Some(a) => a,
        None => backoff,
    };
    match remaining {
        Some(r) if wait >= r => Next::FailOver(FailOverWhy::PastDeadline(wait)),
        _ => Next::RetryAfter(wait),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    const NOW: u64 = 1_445_412_480; // Wed, 21 Oct 2015 07:28:00 GMT

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    #[test]
    fn delta_seconds() {
        let s = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(
            retry_after(s, &headers("120"), now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_after(s, &headers(" 0 "), now()), Some(Duration::ZERO));
        assert_eq!(
            retry_after(s, &headers("99999999999999999999999"), now()),
            Some(Duration::from_secs(u64::MAX))
        );
        for junk in ["-1", "1.5", "soon", "", "0x10"] {
            assert_eq!(retry_after(s, &headers(junk), now()), None, "{junk:?}");
        }
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        let s = StatusCode::TOO_MANY_REQUESTS;
        for v in [
            "Wed, 21 Oct 2015 07:28:10 GMT",
            "Wednesday, 21-Oct-15 07:28:10 GMT",
            "Wed Oct 21 07:28:10 2015",
        ] {
            assert_eq!(
                retry_after(s, &headers(v), now()),
                Some(Duration::from_secs(10)),
                "{v}"
            );
        }
        // In the past: now.
        assert_eq!(
            retry_after(s, &headers("Wed, 21 Oct 2015 07:00:00 GMT"), now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn only_429_and_503() {
        for s in [500u16, 502, 200, 301] {
            let s = StatusCode::from_u16(s).unwrap();
            assert_eq!(retry_after(s, &headers("5"), now()), None);
        }
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), now()),
            None
        );
    }

    #[test]
    fn decisions() {
        let ms = Duration::from_millis;
        let cap = Duration::from_secs(30);
        assert_eq!(next(None, ms(80), cap, None), Next::RetryAfter(ms(80)));
        assert_eq!(
            next(Some(ms(2000)), ms(80), cap, None),
            Next::RetryAfter(ms(2000))
        );
        assert_eq!(
            next(Some(ms(2000)), ms(80), cap, Some(ms(5000))),
            Next::RetryAfter(ms(2000))
        );
        // Beyond the deadline: move on, do not sleep.
        assert_eq!(
            next(Some(ms(2000)), ms(80), cap, Some(ms(1000))),
            Next::FailOver(FailOverWhy::PastDeadline(ms(2000)))
        );
        assert_eq!(
            next(None, ms(80), cap, Some(ms(50))),
            Next::FailOver(FailOverWhy::PastDeadline(ms(80)))
        );
        // Beyond the cap: "484289h" is never slept.
        let huge = Duration::from_secs(484_289 * 3600);
        let n = next(Some(huge), ms(80), cap, None);
        assert_eq!(n, Next::FailOver(FailOverWhy::RetryAfterOverCap(huge)));
        if let Next::FailOver(why) = n {
            assert!(why.describe().contains("484289h"), "{}", why.describe());
        }
    }

    #[test]
    fn which_failures_are_retried_on_the_same_link() {
        let s = |c| Some(StatusCode::from_u16(c).unwrap());
        assert!(worth_retrying(Outcome::Connect, None));
        assert!(worth_retrying(Outcome::Timeout, None));
        assert!(worth_retrying(Outcome::Io, None));
        for c in [408, 429, 500, 502, 503, 504] {
            assert!(worth_retrying(Outcome::Status, s(c)), "{c}");
        }
        for c in [400, 401, 404, 302] {
            assert!(!worth_retrying(Outcome::Status, s(c)), "{c}");
        }
        assert!(!worth_retrying(Outcome::TooLarge, s(200)));
        assert!(!worth_retrying(Outcome::Decode, s(200)));
    }
}

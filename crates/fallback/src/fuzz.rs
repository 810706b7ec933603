//! Entry points of internal parsers for the project's fuzz targets (feature
//! `fuzzing`). Not an API: no semver promise.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, StatusCode};

use crate::retry::{self, Next};

/// A `Retry-After` value, read as a 503's and a 429's, and planned with as
/// a retry would be: asked 30 s at most, 10 s before the deadline.
pub fn retry_after(value: &[u8]) {
    let Ok(v) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::RETRY_AFTER, v);
    // Wed, 21 Oct 2015 07:28:00 GMT
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
    assert_eq!(retry::retry_after(StatusCode::OK, &headers, now), None);
    let cap = Duration::from_secs(30);
    let remaining = Duration::from_secs(10);
    // The header's own trim: spaces and tabs, not Unicode's (a non-ASCII
    // value is not read at all).
    let trimmed = std::str::from_utf8(value)
        .ok()
        .filter(|v| v.is_ascii())
        .map_or("", |v| v.trim_matches([' ', '\t']));
    for status in [
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        let asked = retry::retry_after(status, &headers, now);
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            let secs = trimmed.parse::<u64>().unwrap_or(u64::MAX);
            assert_eq!(asked, Some(Duration::from_secs(secs)), "{trimmed:?}");
        }
        match retry::next(asked, Duration::from_millis(50), cap, Some(remaining)) {
            Next::RetryAfter(wait) => assert!(wait <= cap && wait < remaining, "{wait:?}"),
            Next::FailOver(why) => assert!(!why.describe().is_empty()),
        }
    }
}

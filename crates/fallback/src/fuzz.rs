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

/// A `grpc-timeout` value: read as the specification's grammar says (1 to
/// 8 digits and a unit), and what is read writes back as no shorter.
pub fn grpc_timeout(value: &[u8]) {
    let text = String::from_utf8_lossy(value);
    let read = crate::grpc::parse_timeout(&text);
    let grammar = text.len() >= 2
        && text.len() <= 9
        && text.is_ascii()
        && text[..text.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && matches!(
            text.as_bytes()[text.len() - 1],
            b'H' | b'M' | b'S' | b'm' | b'u' | b'n'
        );
    assert_eq!(read.is_some(), grammar, "{text:?}");
    if let Some(d) = read {
        let written = crate::grpc::format_timeout(d);
        let back = crate::grpc::parse_timeout(&written).expect("a written timeout reads back");
        assert!(back >= d, "{text:?} -> {written:?}");
    }
}

/// A gRPC answer's head: its `grpc-status` (the first line) and
/// `grpc-message` (the rest), read and classified as a chain does; and the
/// same bytes as a health check's answer.
pub fn grpc_status(data: &[u8]) {
    use crate::grpc::{Code, Status};
    use crate::{Answer, Classifier, Verdict};
    let _ = crate::grpc::health_serving(data);
    let (status, message) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(status) {
        headers.insert("grpc-status", v);
    }
    if let Ok(v) = HeaderValue::from_bytes(message) {
        headers.insert("grpc-message", v);
    }
    let Some(read) = Status::from_headers(&headers) else {
        return;
    };
    let text = crate::grpc::encode_message(read.message());
    assert_eq!(crate::grpc::decode_message(text.as_bytes()), read.message());
    let answer = Answer::new(StatusCode::OK).with_grpc_status(read.code());
    let verdict = Classifier::default().classify(&answer);
    let expected = match read.code() {
        Code::OK => Verdict::Success,
        Code::UNAVAILABLE => Verdict::Fallback,
        _ => Verdict::Final,
    };
    assert_eq!(verdict, expected, "{:?}", read.code());
    // A code's name reads back as the code; a number the specification
    // does not name is refused where a code is configured.
    let named = read.code().to_string().parse::<Code>();
    if read.code().name().is_some() {
        assert_eq!(named, Ok(read.code()));
    } else {
        assert!(named.is_err());
    }
}

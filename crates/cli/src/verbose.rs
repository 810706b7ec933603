//! `--verbose`: each request and response head on stderr, as curl shows
//! them, with secrets redacted.

use fallback_chain::redact;
use fallback_chain::{Attempt, Observer, RequestHead, ResponseHead};
use http::HeaderMap;

use crate::print::err;

/// Prints heads as they go out and come back.
pub struct Verbose;

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn headers(prefix: char, headers: &HeaderMap) -> String {
    let mut out = String::new();
    for (n, v) in headers {
        let shown = if v.is_sensitive() || redact::is_secret_header(n.as_str()) {
            "<redacted>".to_owned()
        } else {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        };
        out.push_str(&format!("{prefix} {n}: {shown}\n"));
    }
    out.push_str(&format!("{prefix}\n"));
    out
}

impl Observer for Verbose {
    fn on_attempt(&self, _attempt: &Attempt) {}

    fn on_request(&self, head: &RequestHead<'_>) {
        err!(
            "* link {} ({}): {}\n> {} {} {}\n{}",
            head.link,
            head.name,
            redact::url(&head.uri.to_string()),
            head.method,
            redact::url(head.uri.path_and_query().map_or("/", |p| p.as_str())),
            version(head.version),
            headers('>', head.headers)
        );
    }

    fn on_response(&self, head: &ResponseHead<'_>) {
        err!(
            "< {} {}\n{}",
            version(head.version),
            head.status,
            headers('<', head.headers)
        );
    }
}

/// The status line and headers of an answer, as `-i` prints them.
pub fn status_and_headers(v: http::Version, status: http::StatusCode, h: &HeaderMap) -> Vec<u8> {
    let mut out = format!("{} {}\r\n", version(v), status).into_bytes();
    for (n, v) in h {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

//! What the proxy answers when it answers itself, and what it adds to an
//! upstream's answer: its own errors (`x-fallback-error`, a JSON body
//! naming each attempt), the report headers, and an attempt as JSON.

use bytes::Bytes;
use fallback_chain::transport::ResponseBody;
use fallback_chain::{ErrorKind, Outcome, Report};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::headers::strip_hop_by_hop;

/// The attempts of a request, for the access log and the proxy's own
/// error answers.
pub(crate) fn attempts_json(report: &Report) -> serde_json::Value {
    report
        .attempts()
        .iter()
        .map(|a| {
            let mut line = a.to_json();
            // The field's name before the shared shape; kept for one
            // release, so log pipelines that read it keep working.
            line["upstream"] = a.name().into();
            line
        })
        .collect()
}

static X_FALLBACK_UPSTREAM: HeaderName = HeaderName::from_static("x-fallback-upstream");
static X_FALLBACK_ATTEMPTS: HeaderName = HeaderName::from_static("x-fallback-attempts");

pub(crate) fn report_headers(headers: &mut HeaderMap, upstream: Option<&str>, attempts: usize) {
    if let Some(v) = upstream.and_then(|u| HeaderValue::from_str(u).ok()) {
        headers.insert(&X_FALLBACK_UPSTREAM, v);
    }
    headers.insert(&X_FALLBACK_ATTEMPTS, HeaderValue::from(attempts));
}

/// Every upstream failed: the last answer if there was one, else the
/// proxy's own 502, 503 or 504.
pub(crate) fn failed(e: &fallback_chain::Error, report: bool) -> Response<ResponseBody> {
    let attempts = e.report().attempts();
    if let (Some(status), Some(headers)) = (e.status(), e.headers()) {
        let mut headers = headers.clone();
        strip_hop_by_hop(&mut headers);
        headers.remove(http::header::CONTENT_LENGTH);
        let body = e.body().cloned().unwrap_or_default();
        let mut out = Response::new(ResponseBody::full(body));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        if report {
            let upstream = attempts.last().map(|a| a.name().to_owned());
            report_headers(out.headers_mut(), upstream.as_deref(), attempts.len());
        }
        return out;
    }
    let nothing_tried = attempts.iter().all(|a| a.outcome() == Outcome::Skipped);
    let (status, kind) = if e.is_timeout() {
        (StatusCode::GATEWAY_TIMEOUT, "timeout")
    } else if nothing_tried {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    } else if matches!(
        e.kind(),
        ErrorKind::MaybeProcessed | ErrorKind::NotReplayable
    ) {
        (StatusCode::BAD_GATEWAY, "not-resent")
    } else {
        (StatusCode::BAD_GATEWAY, "upstream")
    };
    let body = serde_json::json!({ "error": e.to_string(), "attempts": attempts_json(e.report()) });
    let mut out = own(status, kind, body.to_string());
    if report {
        report_headers(out.headers_mut(), None, attempts.len());
    }
    out
}

pub(crate) fn own_error(status: StatusCode, kind: &str, message: &str) -> Response<ResponseBody> {
    own(
        status,
        kind,
        serde_json::json!({ "error": message }).to_string(),
    )
}

/// An answer of the proxy itself, marked by `x-fallback-error`.
fn own(status: StatusCode, kind: &str, json: String) -> Response<ResponseBody> {
    let mut out = Response::new(ResponseBody::full(Bytes::from(json)));
    *out.status_mut() = status;
    let h = out.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(kind) {
        h.insert("x-fallback-error", v);
    }
    out
}

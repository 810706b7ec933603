//! What the proxy answers when it answers itself, and what it adds to an
//! upstream's answer: its own errors (`x-fallback-error`, a JSON body
//! naming each attempt, or for a gRPC client a trailers-only answer in
//! gRPC's terms), the report headers, and an attempt as JSON.

use bytes::Bytes;
use fallback_chain::grpc::{self, Code};
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
/// proxy's own 502, 503 or 504 (for a gRPC client, `UNAVAILABLE`,
/// `DEADLINE_EXCEEDED` or `RESOURCE_EXHAUSTED`, trailers-only).
pub(crate) fn failed(
    e: &fallback_chain::Error,
    report: bool,
    grpc: bool,
) -> Response<ResponseBody> {
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
    let mut out = if grpc {
        let code = match e.kind() {
            ErrorKind::Deadline => Code::DEADLINE_EXCEEDED,
            ErrorKind::NotReplayable => Code::RESOURCE_EXHAUSTED,
            _ => Code::UNAVAILABLE,
        };
        grpc_own(code, kind, &grpc_message(e))
    } else {
        let body =
            serde_json::json!({ "error": e.to_string(), "attempts": attempts_json(e.report()) });
        own(status, kind, body.to_string())
    };
    if report {
        report_headers(out.headers_mut(), None, attempts.len());
    }
    out
}

/// The proxy's own error: JSON, or for a gRPC client a trailers-only
/// answer with the code that fits the status.
pub(crate) fn own_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    grpc: bool,
) -> Response<ResponseBody> {
    if grpc {
        let code = match status {
            StatusCode::NOT_FOUND => Code::UNIMPLEMENTED,
            StatusCode::BAD_REQUEST => Code::INVALID_ARGUMENT,
            StatusCode::PAYLOAD_TOO_LARGE => Code::RESOURCE_EXHAUSTED,
            StatusCode::LOOP_DETECTED => Code::INTERNAL,
            _ => Code::UNAVAILABLE,
        };
        return grpc_own(code, kind, message);
    }
    own(
        status,
        kind,
        serde_json::json!({ "error": message }).to_string(),
    )
}

/// Bound on the `grpc-message` the proxy writes: gRPC clients refuse
/// metadata over 8 KiB by default.
const GRPC_MESSAGE_MAX: usize = 2048;

/// The error and every attempt, in one line: `every link failed (2
/// attempts); …; attempts: primary connect, backup grpc 200`.
fn grpc_message(e: &fallback_chain::Error) -> String {
    let attempts: Vec<String> = e
        .report()
        .attempts()
        .iter()
        .map(|a| {
            let mut s = format!("{} {}", a.name(), a.outcome());
            if let Some(g) = a.grpc_status() {
                s.push_str(&format!(" {}", g.code()));
            } else if let Some(st) = a.status() {
                s.push_str(&format!(" {}", st.as_u16()));
            }
            s
        })
        .collect();
    format!("{e}; attempts: {}", attempts.join(", "))
}

/// A gRPC trailers-only answer of the proxy's own: HTTP 200, no body,
/// `grpc-status` and a percent-encoded `grpc-message` in the head, and
/// `x-fallback-error` as on every answer of the proxy's own.
fn grpc_own(code: Code, kind: &str, message: &str) -> Response<ResponseBody> {
    let mut out = Response::new(ResponseBody::empty());
    let h = out.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code.value()));
    let mut encoded = grpc::encode_message(message);
    if encoded.len() > GRPC_MESSAGE_MAX {
        // Cut at an escape's start, never inside one.
        let mut cut = GRPC_MESSAGE_MAX;
        while cut > 0 && encoded.as_bytes()[cut - 1] == b'%'
            || cut > 1 && encoded.as_bytes()[cut - 2] == b'%'
        {
            cut -= 1;
        }
        encoded.truncate(cut);
    }
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        h.insert("grpc-message", v);
    }
    if let Ok(v) = HeaderValue::from_str(kind) {
        h.insert("x-fallback-error", v);
    }
    out
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

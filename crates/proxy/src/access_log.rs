//! The access log: one JSON line per request, written when the answer's
//! body ends (or is dropped: the client went away), with what it sent.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use fallback_chain::transport::{BoxError, ResponseBody};
use fallback_chain::Body;
use http::{Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};

/// What the access log says of a request, filled in as it goes.
pub(crate) struct Entry {
    pub(crate) started: Instant,
    pub(crate) method: http::Method,
    /// Secrets redacted.
    pub(crate) path: String,
    pub(crate) route: Option<String>,
    pub(crate) attempts: serde_json::Value,
    /// The upstream whose answer the client got, if any.
    pub(crate) upstream: Option<String>,
    /// Counted as the body goes upstream.
    pub(crate) bytes_in: Arc<AtomicU64>,
    pub(crate) error: Option<String>,
    /// The request body, asked when the line is written why it could not
    /// be kept whole for a re-send (it may outgrow its copy after the
    /// answer began).
    pub(crate) request_body: Option<Body>,
}

impl Entry {
    /// The line's start, before anything is known but the request.
    pub(crate) fn new<B>(req: &Request<B>) -> Entry {
        Entry {
            started: Instant::now(),
            method: req.method().clone(),
            path: req.uri().path_and_query().map_or_else(
                || "/".to_owned(),
                |p| fallback_chain::redact::url(p.as_str()),
            ),
            route: None,
            attempts: serde_json::Value::Array(Vec::new()),
            upstream: None,
            bytes_in: Arc::default(),
            error: None,
            request_body: None,
        }
    }
}

/// The answer, with its request's line written when its body ends.
pub(crate) fn logged(resp: Response<ResponseBody>, entry: Entry) -> Response<ResponseBody> {
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let body = ResponseBody::new(Logged {
        body,
        bytes: 0,
        line: Some(Line { entry, status }),
    });
    Response::from_parts(parts, body)
}

/// The access-log line, once the response's status is known.
struct Line {
    entry: Entry,
    status: StatusCode,
}

/// A response body that writes its request's access-log line when it
/// ends (or is dropped: the client went away), with the bytes it sent.
struct Logged {
    body: ResponseBody,
    bytes: u64,
    line: Option<Line>,
}

impl Logged {
    /// A gRPC status in the winner's trailers goes on its attempt, in the
    /// shape a status in a head takes.
    fn grpc_trailers(&mut self, trailers: &http::HeaderMap) {
        let (Some(status), Some(line)) = (
            fallback_chain::grpc::Status::from_headers(trailers),
            self.line.as_mut(),
        ) else {
            return;
        };
        if let Some(last) = line
            .entry
            .attempts
            .as_array_mut()
            .and_then(|a| a.last_mut())
        {
            last["grpc_status"] = status.code().value().into();
            last["grpc_message"] = status.message().into();
        }
    }

    fn write(&mut self, complete: bool) {
        let Some(Line { entry, status }) = self.line.take() else {
            return;
        };
        crate::log_line(format_args!(
            "{}",
            serde_json::json!({
                "time": httpdate::fmt_http_date(std::time::SystemTime::now()),
                "method": entry.method.as_str(),
                "path": entry.path,
                "route": entry.route,
                "status": status.as_u16(),
                "upstream": entry.upstream,
                "attempts": entry.attempts,
                "error": entry.error,
                "replay": entry.request_body.as_ref().and_then(Body::not_replayable_because),
                "elapsed_ms": fallback_chain::report::millis(entry.started.elapsed()),
                "bytes_in": entry.bytes_in.load(Ordering::Relaxed),
                "bytes_out": self.bytes,
                "complete": complete,
            })
        ));
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
                if let Some(t) = frame.trailers_ref() {
                    self.grpc_trailers(t);
                }
                if self.body.is_end_stream() {
                    self.write(true);
                }
            }
            Poll::Ready(None) => self.write(true),
            Poll::Ready(Some(Err(e))) => {
                // Why the client's response was aborted.
                let why = format!(
                    "response body: {}",
                    fallback_chain::transport::error_chain(&**e)
                );
                if let Some(line) = self.line.as_mut() {
                    line.entry.error = Some(why);
                }
                self.write(false);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // An empty body is never polled; anything else cut short.
        let complete = self.body.is_end_stream();
        self.write(complete);
    }
}

//! One request through the proxy: route it, send it along its route's
//! chain, and pass the winner's answer back (or the proxy's own error).

use std::net::SocketAddr;
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
use hyper::body::Incoming;

use super::answer::{attempts_json, failed, own_error, report_headers};
use super::headers::{forwarded, outbound, strip_hop_by_hop};
use super::send_timeout::StreamSendTimeout;
use super::settings::Live;
use super::Proxy;
use crate::print::errln;

/// What the access log says of a request, filled in as it goes.
struct Entry {
    started: Instant,
    method: http::Method,
    /// Secrets redacted.
    path: String,
    route: Option<String>,
    attempts: serde_json::Value,
    /// The upstream whose answer the client got, if any.
    upstream: Option<String>,
    /// Counted as the body goes upstream.
    bytes_in: Arc<AtomicU64>,
    error: Option<String>,
    /// The request body, asked when the line is written why it could not
    /// be kept whole for a re-send (it may outgrow its copy after the
    /// answer began).
    request_body: Option<Body>,
}

pub(super) async fn handle(
    proxy: &Proxy,
    req: Request<Incoming>,
    client: SocketAddr,
) -> Response<ResponseBody> {
    let live = proxy.live();
    // Only a logged request pays for its log line.
    let mut entry = live.access_log.then(|| Entry {
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
    });
    let h2 = req.version() == http::Version::HTTP_2;
    let mut resp = forward(proxy, &live, req, client, entry.as_mut()).await;
    // An HTTP/1.1 client that stops reading blocks its socket, which
    // `SendTimeout` bounds; an HTTP/2 one may stall a single stream.
    if let (true, Some(idle)) = (h2, live.idle_timeout) {
        if !resp.body().is_end_stream() {
            resp = resp.map(|b| ResponseBody::new(StreamSendTimeout::new(b, idle)));
        }
    }
    match entry {
        Some(entry) => {
            let status = resp.status();
            let (parts, body) = resp.into_parts();
            // The line is written when the body ends, with what it sent.
            let body = ResponseBody::new(Logged {
                body,
                bytes: 0,
                line: Some(Line { entry, status }),
            });
            Response::from_parts(parts, body)
        }
        None => resp,
    }
}

/// Sends one request along its route's chain.
async fn forward(
    proxy: &Proxy,
    live: &Arc<Live>,
    req: Request<Incoming>,
    client: SocketAddr,
    mut entry: Option<&mut Entry>,
) -> Response<ResponseBody> {
    let path = req.uri().path();
    let Some(route) = live.route(path) else {
        count(proxy, "none", StatusCode::NOT_FOUND);
        return own_error(
            StatusCode::NOT_FOUND,
            "no-route",
            "no route matches this path",
        );
    };
    if let Some(e) = entry.as_deref_mut() {
        e.route = Some(route.prefix.clone());
    }
    let resp = if proxy.hop.looped(req.headers()) {
        own_error(
            StatusCode::LOOP_DETECTED,
            "loop",
            "this request came back through this proxy",
        )
    } else if super::upgrade::is_upgrade(&req) {
        let mut upstream = None;
        let mut tries = Vec::new();
        let resp = super::upgrade::tunnel(proxy, live, route, req, &mut upstream, &mut tries).await;
        if let Some(e) = entry {
            e.upstream = upstream;
            e.attempts = tries
                .iter()
                // The shape of the chain's attempts (Attempt::to_json).
                .map(|t| {
                    serde_json::json!({
                        "link": t.link,
                        "name": t.upstream,
                        "url": t.url,
                        "try": 1,
                        "outcome": t.outcome,
                        "phase": null,
                        "status": t.status,
                        "elapsed_ms": crate::report::ms(t.elapsed),
                        "error": t.error,
                        "insecure": false,
                        "upstream": t.upstream,
                    })
                })
                .collect();
            if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                e.error = tries.last().and_then(|t| t.error.clone());
            }
        }
        resp
    } else {
        send(proxy, live, route, req, client, entry).await
    };
    count(proxy, &route.prefix, resp.status());
    resp
}

fn count(proxy: &Proxy, route: &str, status: StatusCode) {
    if proxy.metrics.is_some() {
        metrics::counter!(
            "fallback_requests_total",
            "route" => route.to_owned(),
            "status" => status.as_u16().to_string()
        )
        .increment(1);
    }
}

async fn send(
    proxy: &Proxy,
    live: &Live,
    route: &super::settings::Route,
    req: Request<Incoming>,
    client: SocketAddr,
    entry: Option<&mut Entry>,
) -> Response<ResponseBody> {
    let (mut parts, body) = req.into_parts();
    let counter = entry.as_ref().map(|e| e.bytes_in.clone());
    // Sent upstream as it arrives, while a copy is kept for a re-send:
    // a full-duplex client is never held back, and a body can fail over
    // while its copy is whole.
    let body = if body.is_end_stream() {
        Body::empty()
    } else {
        Body::replayable(Counted { body, counter }, &live.replay)
    };
    outbound(&mut parts.headers, &proxy.hop, live.via);
    // hyper answers `100 Continue` itself when the body is first read (by
    // the first upstream's connection): the upstream has nothing to wait
    // for.
    parts.headers.remove(http::header::EXPECT);
    if live.forwarded {
        forwarded(&mut parts.headers, client);
    }
    // The chain appends the request's path and query to each upstream's
    // URL: only a stripped prefix needs a new one.
    if let Some(target) = route.stripped_target(&parts.uri) {
        parts.uri = match target.parse() {
            Ok(u) => u,
            Err(_) => return own_error(StatusCode::BAD_REQUEST, "path", "the path is not valid"),
        };
    }
    let request = Request::from_parts(parts, body.clone());
    let result = route.chain.send_streaming(request).await;
    if let Some(e) = entry {
        e.request_body = Some(body.clone());
        let report = match &result {
            Ok(r) => r.report(),
            Err(e) => e.report(),
        };
        e.attempts = attempts_json(report);
        // As `x-fallback-upstream` names it, whether or not that is sent.
        let answered = result
            .as_ref()
            .map_or_else(|e| e.status().is_some(), |_| true);
        e.upstream = answered
            .then(|| report.attempts().last().map(|a| a.name().to_owned()))
            .flatten();
        // Why it failed, and why it was not re-sent, when it was not.
        e.error = result.as_ref().err().map(ToString::to_string);
    }
    match result {
        Ok(resp) => {
            let (mut out, report) = resp.into_http();
            // The client's own version, not the upstream's.
            *out.version_mut() = http::Version::default();
            strip_hop_by_hop(out.headers_mut());
            if live.report_headers {
                let attempts = report.attempts();
                report_headers(
                    out.headers_mut(),
                    attempts.last().map(|a| a.name()),
                    attempts.len(),
                );
            }
            out
        }
        Err(e) => failed(&e, live.report_headers),
    }
}

/// The client's request body, counted as it is read (once, however many
/// attempts send it), for the access log.
struct Counted {
    body: Incoming,
    counter: Option<Arc<AtomicU64>>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(c)) = (&polled, &self.counter) {
            if let Some(d) = frame.data_ref() {
                c.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
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
    fn write(&mut self, complete: bool) {
        let Some(Line { entry, status }) = self.line.take() else {
            return;
        };
        errln!(
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
                "elapsed_ms": crate::report::ms(entry.started.elapsed()),
                "bytes_in": entry.bytes_in.load(Ordering::Relaxed),
                "bytes_out": self.bytes,
                "complete": complete,
            })
        );
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

//! One request through the proxy, as named steps in order: [`route`] it,
//! prepare its [`body`] and head, send it along its route's [`chain`], and
//! [`answer`] with the winner's head (or the last failure, or the proxy's
//! own error); the access log's line is written when the answer's body
//! ends (`access_log.rs`). A protocol upgrade leaves the path after
//! `route`, for `upgrade.rs`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use fallback_chain::transport::ResponseBody;
use fallback_chain::{Body, Response as ChainResponse};
use http::{Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;

use crate::access_log::{self, Entry};
use crate::answer::{attempts_json, failed, own_error, report_headers};
use crate::headers::{forwarded, outbound, strip_hop_by_hop};
use crate::live::{Live, Route};
use crate::send_timeout::StreamSendTimeout;
use crate::{upgrade, Proxy};

/// The whole path of one request.
pub(crate) async fn handle(
    proxy: &Proxy,
    req: Request<Incoming>,
    client: Option<SocketAddr>,
) -> Response<ResponseBody> {
    let live = proxy.live();
    // Only a logged request pays for its log line.
    let mut entry = live.access_log.then(|| Entry::new(&req));
    let h2 = req.version() == http::Version::HTTP_2;
    // A gRPC client reads failures only in gRPC's terms.
    let grpc = fallback_chain::grpc::is_grpc(req.headers());
    let mut resp = match route(&live, &req) {
        None => {
            count(proxy, "none", StatusCode::NOT_FOUND);
            own_error(
                StatusCode::NOT_FOUND,
                "no-route",
                "no route matches this path",
                grpc,
            )
        }
        Some(route) => {
            if let Some(e) = entry.as_mut() {
                e.route = Some(route.prefix.clone());
            }
            let resp = if proxy.shared.hop.looped(req.headers()) {
                own_error(
                    StatusCode::LOOP_DETECTED,
                    "loop",
                    "this request came back through this proxy",
                    grpc,
                )
            } else if upgrade::is_upgrade(&req) {
                upgrade::tunnel(proxy, &live, route, req, entry.as_mut()).await
            } else {
                match body(proxy, &live, route, req, client, entry.as_mut()) {
                    Ok(request) => {
                        let result = chain(route, request, entry.as_mut()).await;
                        answer(&live, result, grpc)
                    }
                    Err(BadPath) => {
                        let why = "the path is not valid";
                        own_error(StatusCode::BAD_REQUEST, "path", why, grpc)
                    }
                }
            };
            count(proxy, &route.prefix, resp.status());
            resp
        }
    };
    // An HTTP/1.1 client that stops reading blocks its socket, which
    // `SendTimeout` bounds; an HTTP/2 one may stall a single stream.
    if let (true, Some(idle)) = (h2, live.idle_timeout) {
        if !resp.body().is_end_stream() {
            resp = resp.map(|b| ResponseBody::new(StreamSendTimeout::new(b, idle)));
        }
    }
    match entry {
        Some(entry) => access_log::logged(resp, entry),
        None => resp,
    }
}

/// Step 1: the route for the request's path, by the longest prefix.
fn route<'a>(live: &'a Live, req: &Request<Incoming>) -> Option<&'a Route> {
    live.route(req.uri().path())
}

/// A path that is no longer a valid one once its prefix is stripped.
struct BadPath;

/// Step 2: the request as it goes upstream. Its body is sent as it
/// arrives, while a copy is kept for a re-send: a full-duplex client is
/// never held back, and a body can fail over while its copy is whole.
fn body(
    proxy: &Proxy,
    live: &Live,
    route: &Route,
    req: Request<Incoming>,
    client: Option<SocketAddr>,
    entry: Option<&mut Entry>,
) -> Result<Request<Body>, BadPath> {
    let (mut parts, body) = req.into_parts();
    let counter = entry.as_ref().map(|e| e.bytes_in.clone());
    let body = if body.is_end_stream() {
        Body::empty()
    } else {
        Body::replayable(Counted { body, counter }, &live.replay)
    };
    if let Some(e) = entry {
        e.request_body = Some(body.clone());
    }
    outbound(&mut parts.headers, &proxy.shared.hop, live.via);
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
        parts.uri = target.parse().map_err(|_| BadPath)?;
    }
    Ok(Request::from_parts(parts, body))
}

type Sent = Result<ChainResponse<ResponseBody>, fallback_chain::Error>;

/// Step 3: the request along the route's chain, which commits at the
/// winner's head and streams its body.
async fn chain(route: &Route, request: Request<Body>, entry: Option<&mut Entry>) -> Sent {
    let result = route.chain.send_streaming(request).await;
    if let Some(e) = entry {
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
    result
}

/// Step 4: the winner's head, for the client: its own version, no
/// hop-by-hop headers, the report headers; or the failure's answer.
fn answer(live: &Live, result: Sent, grpc: bool) -> Response<ResponseBody> {
    match result {
        Ok(resp) => {
            let (mut out, report) = resp.into_http();
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
        Err(e) => failed(&e, live.report_headers, grpc),
    }
}

fn count(proxy: &Proxy, route: &str, status: StatusCode) {
    if proxy.metrics().is_some() {
        metrics::counter!(
            "fallback_requests_total",
            "route" => route.to_owned(),
            "status" => status.as_u16().to_string()
        )
        .increment(1);
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

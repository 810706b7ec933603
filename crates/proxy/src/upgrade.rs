//! Protocol upgrades (WebSocket): the request goes to the route's
//! upstreams in order, and the first that answers `101 Switching
//! Protocols` gets the client's connection, spliced byte for byte.
//!
//! Two offers are not taken down this path, and go through the chain as
//! ordinary requests with the offer removed (RFC 9110 lets a server ignore
//! one): `Upgrade: h2c` (the proxy does not take HTTP/2 by upgrade; clients
//! that want it use prior knowledge), which Java's `HttpClient` sends on
//! its first request to every `http://` URL, POSTs included; and any offer
//! on a request with a body, which this path, sending heads only, would
//! lose.
//!
//! An upgrade is a connection, not a request the chain can replay or
//! stream, so it is sent here, over one HTTP/1.1 connection per try; but
//! it is judged as the chain judges: the route's chain admits each try
//! through the upstream's breaker ([`Chain::external_attempt`]), its
//! classifier (the route's `fail_on`) says whether an answer other than
//! `101 Switching Protocols` falls back, and the outcome counts in the
//! breaker.
//!
//! [`Chain::external_attempt`]: fallback_chain::Chain::external_attempt

use std::time::{Duration, Instant};

use fallback_chain::transport::ResponseBody;
use fallback_chain::{ExternalAttempt, Verdict};
use http::header::{HeaderMap, HeaderValue, CONNECTION, HOST, UPGRADE};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::access_log::Entry;
use crate::answer::{own_error, report_headers};
use crate::headers::{outbound, strip_hop_by_hop};
use crate::live::{Live, Route, Upstream};
use crate::Proxy;

/// Whether `req` asks to switch to a protocol this path tunnels: an
/// HTTP/1.1 offer other than `h2c`, on a request without a body.
pub(crate) fn is_upgrade(req: &Request<Incoming>) -> bool {
    tunnels(req.version(), req.headers())
}

fn tunnels(version: http::Version, h: &http::HeaderMap) -> bool {
    version == http::Version::HTTP_11
        && offered(h).next().is_some()
        && h.get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        && !has_body(h)
}

/// Whether a request's head announces a body.
fn has_body(h: &http::HeaderMap) -> bool {
    h.contains_key(http::header::TRANSFER_ENCODING)
        || h.get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// One try of an upgrade, for the access log and the metrics.
struct Try {
    /// The upstream's index in the route's chain.
    link: usize,
    upstream: String,
    /// Without secrets.
    url: String,
    outcome: &'static str,
    status: Option<u16>,
    elapsed: Duration,
    error: Option<String>,
}

impl Try {
    /// The shape of the chain's attempts (`Attempt::to_json`), with the
    /// alias `upstream` the access log keeps for one release.
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "link": self.link,
            "name": self.upstream,
            "url": self.url,
            "try": 1,
            "outcome": self.outcome,
            "phase": null,
            "status": self.status,
            "elapsed_ms": fallback_chain::report::millis(self.elapsed),
            "error": self.error,
            "insecure": false,
            "upstream": self.upstream,
        })
    }
}

/// What every try of one upgrade sends, and what it has found so far.
struct Offer<'a> {
    proxy: &'a Proxy,
    live: &'a Live,
    method: http::Method,
    /// The path and query sent upstream.
    target: String,
    headers: HeaderMap,
    tries: Vec<Try>,
    /// The upstream whose answer the client gets, if any.
    upstream: Option<String>,
}

/// Sends an upgrade along the route's upstreams; the first that switches
/// protocols gets the client's connection.
pub(crate) async fn tunnel(
    proxy: &Proxy,
    live: &Live,
    route: &Route,
    mut req: Request<Incoming>,
    entry: Option<&mut Entry>,
) -> Response<ResponseBody> {
    let client = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let protocol = without_h2c(&parts.headers);
    let mut headers = parts.headers;
    outbound(&mut headers, &proxy.shared.hop, live.via);
    // The two hop-by-hop headers an upgrade is made of.
    if let Some(p) = protocol {
        headers.insert(UPGRADE, p);
    }
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    let target = route.stripped_target(&parts.uri).unwrap_or_else(|| {
        parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned())
    });
    let mut offer = Offer {
        proxy,
        live,
        method: parts.method,
        target,
        headers,
        tries: Vec::new(),
        upstream: None,
    };
    let resp = offer.along(route, client).await;
    if let Some(e) = entry {
        e.attempts = offer.tries.iter().map(Try::to_json).collect();
        e.upstream = offer.upstream.clone();
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            e.error = offer.tries.last().and_then(|t| t.error.clone());
        }
    }
    resp
}

impl Offer<'_> {
    /// Tries the route's upstreams in order, past open breakers.
    async fn along(&mut self, route: &Route, client: OnUpgrade) -> Response<ResponseBody> {
        let mut last: Option<Response<Incoming>> = None;
        for (link, &u) in route.upstreams.iter().enumerate() {
            let Some(attempt) = route.chain.external_attempt(link) else {
                continue;
            };
            let up = &self.live.upstreams[u];
            let begun = Instant::now();
            let resp = match self.send(up).await {
                Ok(r) => r,
                Err((outcome, e)) => {
                    attempt.failed();
                    self.record(link, up, begun, outcome, None, Some(e));
                    continue;
                }
            };
            let status = resp.status();
            self.upstream = Some(up.name.clone());
            if status == StatusCode::SWITCHING_PROTOCOLS {
                attempt.answered(status);
                self.record(link, up, begun, "ok", Some(101), None);
                return self.switch(up, resp, client);
            }
            let falls_back = self.falls_back(&attempt, &resp);
            attempt.answered(status);
            let why = format!("{} did not switch protocols: {}", up.name, status.as_u16());
            self.record(link, up, begun, "status", Some(status.as_u16()), Some(why));
            last = Some(resp);
            if !falls_back {
                break;
            }
        }
        match last {
            // An upstream's own refusal of the upgrade is the client's answer.
            Some(resp) => refusal(resp).await,
            None => {
                self.upstream = None;
                own_error(
                    StatusCode::BAD_GATEWAY,
                    "upgrade",
                    "no upstream accepted the protocol upgrade",
                    false,
                )
            }
        }
    }

    /// Whether the route's `fail_on` passes over this answer.
    fn falls_back(&self, attempt: &ExternalAttempt<'_>, resp: &Response<Incoming>) -> bool {
        attempt.classify(&self.method, resp.status(), resp.headers()) == Verdict::Fallback
    }

    /// One try at `up`: its answer, or the outcome and why it failed.
    async fn send(&self, up: &Upstream) -> Result<Response<Incoming>, (&'static str, String)> {
        let Some((base, authority)) = origin(up.url()) else {
            return Err((
                "connect",
                "only plain http:// upstreams take upgrades".into(),
            ));
        };
        let mut out = Request::builder()
            .method(self.method.clone())
            .uri(join(&base, &self.target))
            .body(Empty::<bytes::Bytes>::new())
            .expect("a request from valid parts");
        *out.headers_mut() = self.headers.clone();
        if let Ok(h) = HeaderValue::from_str(&authority) {
            out.headers_mut().insert(HOST, h);
        }
        send(&authority, out, self.live.connect_timeout).await
    }

    /// Notes a try for the access log and the metrics.
    fn record(
        &mut self,
        link: usize,
        up: &Upstream,
        begun: Instant,
        outcome: &'static str,
        status: Option<u16>,
        error: Option<String>,
    ) {
        if self.proxy.metrics().is_some() {
            metrics::counter!(
                "fallback_attempts_total",
                "link" => up.name.clone(),
                "outcome" => outcome
            )
            .increment(1);
        }
        self.tries.push(Try {
            link,
            upstream: up.name.clone(),
            url: up.shown.clone(),
            outcome,
            status,
            elapsed: begun.elapsed(),
            error,
        });
    }

    /// `101` from `up`: the client's connection and the upstream's are
    /// spliced, byte for byte, until either side hangs up.
    fn switch(
        &self,
        up: &Upstream,
        mut resp: Response<Incoming>,
        client: OnUpgrade,
    ) -> Response<ResponseBody> {
        let upstream = hyper::upgrade::on(&mut resp);
        let name = up.name.clone();
        tokio::spawn(async move {
            let (Ok(c), Ok(u)) = (client.await, upstream.await) else {
                return;
            };
            let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                // Either side hanging up ends the tunnel; say so only when
                // it was not a plain close.
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    crate::log_line(format_args!("fallback: upgraded connection to {name}: {e}"));
                }
            }
        });
        let (rparts, _) = resp.into_parts();
        let mut answer = Response::new(ResponseBody::empty());
        *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *answer.headers_mut() = rparts.headers;
        if self.live.report_headers {
            report_headers(answer.headers_mut(), Some(&up.name), self.tries.len());
        }
        answer
    }
}

/// An upstream's answer other than `101`, for the client.
async fn refusal(resp: Response<Incoming>) -> Response<ResponseBody> {
    let (mut rparts, body) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut answer = Response::new(ResponseBody::full(body));
    *answer.status_mut() = rparts.status;
    *answer.headers_mut() = rparts.headers;
    answer.headers_mut().remove(http::header::CONTENT_LENGTH);
    answer
}

/// `http://host:port/base` -> (`/base` without a trailing slash, `host:port`).
/// Only plain HTTP upstreams can be upgraded here.
fn origin(url: &str) -> Option<(String, String)> {
    let uri: Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let auth = uri.authority()?.as_str();
    let host = auth.rsplit('@').next()?.to_owned();
    let host = if host.contains(':') && !host.ends_with(']') {
        host
    } else {
        format!("{host}:80")
    };
    Some((uri.path().trim_end_matches('/').to_owned(), host))
}

fn join(base: &str, target: &str) -> String {
    format!("{base}{target}")
}

/// The protocols offered in every `Upgrade` field, but `h2c`.
fn offered(headers: &http::HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("h2c"))
}

/// Every protocol offered, in every `Upgrade` field, less `h2c`; `None`
/// when nothing is left.
fn without_h2c(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let kept: Vec<&str> = offered(headers).collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// One try: the upstream's answer, or the outcome and why it failed.
async fn send(
    authority: &str,
    req: Request<Empty<bytes::Bytes>>,
    connect_timeout: Duration,
) -> Result<Response<Incoming>, (&'static str, String)> {
    let tcp = match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(authority))
        .await
    {
        Err(_) => {
            return Err((
                "timeout",
                format!("no connection within {connect_timeout:?}"),
            ))
        }
        Ok(Err(e)) => return Err(("connect", format!("cannot connect: {e}"))),
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| ("connect", e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    // An upstream that accepts the connection but never answers is passed
    // over after the connect timeout's worth of waiting, at least 2 s.
    let wait = connect_timeout.max(Duration::from_secs(2));
    match tokio::time::timeout(wait, sender.send_request(req)).await {
        Err(_) => Err(("timeout", format!("no response head within {wait:?}"))),
        Ok(Err(e)) => Err(("io", e.to_string())),
        Ok(Ok(resp)) => Ok(resp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin("http://u:p@127.0.0.1:9000/api/"),
            Some(("/api".into(), "127.0.0.1:9000".into()))
        );
        assert_eq!(
            origin("http://example"),
            Some(("".into(), "example:80".into()))
        );
        assert_eq!(origin("https://example/"), None);
        assert_eq!(join("/api", "/ws?x=1"), "/api/ws?x=1");
    }

    #[test]
    fn h2c_is_taken_out_of_an_offer() {
        let offer = |fields: &[&'static str]| {
            let mut h = http::HeaderMap::new();
            for f in fields {
                h.append(UPGRADE, HeaderValue::from_static(f));
            }
            without_h2c(&h)
        };
        assert_eq!(offer(&["h2c"]), None);
        assert_eq!(offer(&["websocket, h2c"]).unwrap(), "websocket");
        assert_eq!(offer(&["WebSocket"]).unwrap(), "WebSocket");
        assert_eq!(offer(&["h2c", "websocket"]).unwrap(), "websocket");
    }

    fn offer(headers: &[(&'static str, &'static str)]) -> bool {
        let mut h = http::HeaderMap::new();
        for (n, v) in headers {
            h.append(*n, HeaderValue::from_static(v));
        }
        tunnels(http::Version::HTTP_11, &h)
    }

    #[test]
    fn only_bodiless_offers_other_than_h2c_are_tunnelled() {
        let ws = [("connection", "Upgrade"), ("upgrade", "websocket")];
        assert!(offer(&ws));
        // Java's HttpClient, on its first request to an http:// URL.
        assert!(!offer(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA"),
        ]));
        assert!(!offer(&[
            ("connection", "keep-alive"),
            ("upgrade", "websocket")
        ]));
        let with_body = [ws[0], ws[1], ("content-length", "5")];
        assert!(!offer(&with_body));
        let chunked = [ws[0], ws[1], ("transfer-encoding", "chunked")];
        assert!(!offer(&chunked));
        let empty = [ws[0], ws[1], ("content-length", "0")];
        assert!(offer(&empty));
    }
}

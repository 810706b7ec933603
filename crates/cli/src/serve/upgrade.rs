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
//! stream, so it is handled here, over one HTTP/1.1 connection per try.
//! An upstream whose breaker is open is skipped; one that refuses, times
//! out or answers 5xx, 408 or 429 is passed over; any other answer is the
//! client's.

use std::time::Duration;

use fallback_chain::transport::ResponseBody;
use fallback_chain::BreakerState;
use http::header::{HeaderValue, CONNECTION, HOST, UPGRADE};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::answer::{own_error, report_headers};
use super::headers::{outbound, strip_hop_by_hop};
use super::settings::{Live, Route};
use super::Proxy;
use crate::print::errln;

/// Whether `req` asks to switch to a protocol this path tunnels: an
/// HTTP/1.1 offer other than `h2c`, on a request without a body.
pub(super) fn is_upgrade(req: &Request<Incoming>) -> bool {
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
pub(super) struct Try {
    /// The upstream's index in the route's chain.
    pub(super) link: usize,
    pub(super) upstream: String,
    /// Without secrets.
    pub(super) url: String,
    pub(super) outcome: &'static str,
    pub(super) status: Option<u16>,
    pub(super) elapsed: Duration,
    pub(super) error: Option<String>,
}

pub(super) async fn tunnel(
    proxy: &Proxy,
    live: &Live,
    route: &Route,
    mut req: Request<Incoming>,
    upstream: &mut Option<String>,
    tries: &mut Vec<Try>,
) -> Response<ResponseBody> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let protocol = without_h2c(&parts.headers);
    let mut headers = parts.headers;
    outbound(&mut headers, &proxy.hop, live.via);
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
    let health = route.chain.health();
    let mut last: Option<Response<Incoming>> = None;
    let mut tried = 0;
    for (i, link) in route.chain.links().iter().enumerate() {
        if health
            .get(i)
            .is_some_and(|h| h.state() == BreakerState::Open)
        {
            continue;
        }
        let Some(up) = live.upstreams.iter().find(|u| u.name == link.name()) else {
            continue;
        };
        tried += 1;
        let begun = std::time::Instant::now();
        let mut record = |outcome: &'static str, status: Option<u16>, error: Option<String>| {
            if proxy.metrics.is_some() {
                metrics::counter!(
                    "fallback_attempts_total",
                    "link" => up.name.clone(),
                    "outcome" => outcome
                )
                .increment(1);
            }
            tries.push(Try {
                link: i,
                upstream: up.name.clone(),
                url: up.shown.clone(),
                outcome,
                status,
                elapsed: begun.elapsed(),
                error,
            });
        };
        let Some((base, authority)) = origin(up.url()) else {
            record(
                "connect",
                None,
                Some("only plain http:// upstreams take upgrades".into()),
            );
            continue;
        };
        let mut out = Request::builder()
            .method(parts.method.clone())
            .uri(join(&base, &target))
            .body(Empty::<bytes::Bytes>::new())
            .expect("a request from valid parts");
        *out.headers_mut() = headers.clone();
        if let Ok(h) = HeaderValue::from_str(&authority) {
            out.headers_mut().insert(HOST, h);
        }
        let mut resp = match send(&authority, out, live.connect_timeout).await {
            Ok(r) => r,
            Err((outcome, e)) => {
                record(outcome, None, Some(e));
                continue;
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            record("ok", Some(101), None);
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let name = up.name.clone();
            tokio::spawn(async move {
                let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) else {
                    return;
                };
                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                    // Either side hanging up ends the tunnel; say so only
                    // when it was not a plain close.
                    if e.kind() != std::io::ErrorKind::UnexpectedEof {
                        errln!("fallback: upgraded connection to {name}: {e}");
                    }
                }
            });
            let (rparts, _) = resp.into_parts();
            let mut answer = Response::new(ResponseBody::empty());
            *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            *answer.headers_mut() = rparts.headers;
            if live.report_headers {
                report_headers(answer.headers_mut(), Some(&up.name), tried);
            }
            *upstream = Some(up.name.clone());
            return answer;
        }
        // The proxy's default rule: 5xx, 408 and 429 fall back.
        let s = resp.status();
        let falls_back = fallback_chain::Classifier::is_server_failure(s);
        record(
            "status",
            Some(s.as_u16()),
            Some(format!(
                "{} did not switch protocols: {}",
                up.name,
                s.as_u16()
            )),
        );
        last = Some(resp);
        *upstream = Some(up.name.clone());
        if !falls_back {
            break;
        }
    }
    match last {
        // An upstream's own refusal of the upgrade is the client's answer.
        Some(resp) => {
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
        None => {
            *upstream = None;
            own_error(
                StatusCode::BAD_GATEWAY,
                "upgrade",
                "no upstream accepted the protocol upgrade",
            )
        }
    }
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

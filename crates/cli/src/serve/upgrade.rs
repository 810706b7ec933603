//! Protocol upgrades (WebSocket): the request goes to the route's
//! upstreams in order, and the first that answers `101 Switching
//! Protocols` gets the client's connection, spliced byte for byte.
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

use super::forward::{own_error, report_headers};
use super::headers::{outbound, strip_hop_by_hop};
use super::settings::{Live, Route};
use super::Proxy;
use crate::print::errln;

/// Whether `req` asks to switch protocols.
pub(super) fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(UPGRADE)
        && req
            .headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

pub(super) async fn tunnel(
    proxy: &Proxy,
    live: &Live,
    route: &Route,
    mut req: Request<Incoming>,
    upstream: &mut Option<String>,
) -> Response<ResponseBody> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let protocol = parts.headers.get(UPGRADE).cloned();
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
        let Some((base, authority)) = origin(up.url()) else {
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
        let Ok(mut resp) = send(&authority, out, live.connect_timeout).await else {
            continue;
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
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
        let falls_back = s.is_server_error()
            || s == StatusCode::REQUEST_TIMEOUT
            || s == StatusCode::TOO_MANY_REQUESTS;
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

async fn send(
    authority: &str,
    req: Request<Empty<bytes::Bytes>>,
    connect_timeout: Duration,
) -> Result<Response<Incoming>, ()> {
    let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(authority))
        .await
        .map_err(drop)?
        .map_err(drop)?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(drop)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    // An upstream that accepts the connection but never answers is passed
    // over after the connect timeout's worth of waiting, at least 2 s.
    let wait = connect_timeout.max(Duration::from_secs(2));
    tokio::time::timeout(wait, sender.send_request(req))
        .await
        .map_err(drop)?
        .map_err(drop)
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
}

//! What a proxy does to headers on the way through: hop-by-hop headers
//! go, `X-Fallback-Hop` marks the hop (and finds loops), `Via` when asked
//! to, and `X-Forwarded-For` / `Forwarded` name the client when asked to.
//!
//! `Via` is off by default: nginx's stock `gzip_proxied off` compresses no
//! answer to a request that carries it, so behind a proxy that adds it,
//! clients of such an upstream get every answer uncompressed. Neither
//! nginx, HAProxy nor Envoy adds it by default.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// RFC 9110, section 7.6.1: headers for one connection only (and
/// `HTTP2-Settings`, RFC 9113 section 3.2.1, which only an h2c upgrade
/// offer carries). Typed, so removing them hashes no strings.
static HOP_BY_HOP: [HeaderName; 10] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::PROXY_AUTHORIZATION,
    http::header::PROXY_AUTHENTICATE,
    HeaderName::from_static("http2-settings"),
];

/// Removes hop-by-hop headers, and those `Connection` names. A `TE:
/// trailers` survives: it is the one value that means the same on every
/// hop.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(conn) = headers.get(http::header::CONNECTION) {
        let named: Vec<HeaderName> = std::iter::once(conn)
            .chain(headers.get_all(http::header::CONNECTION).iter().skip(1))
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    let trailers = headers
        .get_all(http::header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
    if trailers {
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The header that marks each hop through a `fallback` proxy.
pub(crate) static X_FALLBACK_HOP: HeaderName = HeaderName::from_static("x-fallback-hop");

/// This process among the hops: a per-process pseudonym, `fallback-XXXXXX`,
/// in `X-Fallback-Hop` always and in `Via` (`1.1 fallback-XXXXXX`) when
/// asked for.
#[derive(Clone, Debug)]
pub(crate) struct Hop {
    id: HeaderValue,
    via: HeaderValue,
}

impl Hop {
    pub(crate) fn new() -> Hop {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let id = format!("fallback-{:06x}", h.finish() & 0xff_ffff);
        Hop {
            via: HeaderValue::from_str(&format!("1.1 {id}"))
                .unwrap_or_else(|_| HeaderValue::from_static("1.1 fallback")),
            id: HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("fallback")),
        }
    }

    /// Whether a request has already passed through this proxy: its
    /// pseudonym among the hops of `X-Fallback-Hop` or `Via`.
    pub(crate) fn looped(&self, headers: &HeaderMap) -> bool {
        let mine = |name: &HeaderName, me: &HeaderValue| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|hop| hop.trim().as_bytes() == me.as_bytes())
        };
        mine(&X_FALLBACK_HOP, &self.id) || mine(&http::header::VIA, &self.via)
    }
}

/// A request's headers as they go upstream: hop-by-hop headers gone, no
/// `Host` (the upstream's authority goes there), this hop in
/// `X-Fallback-Hop`, and in `Via` too when `via` is on.
pub(crate) fn outbound(headers: &mut HeaderMap, hop: &Hop, via: bool) {
    strip_hop_by_hop(headers);
    headers.remove(http::header::HOST);
    headers.append(&X_FALLBACK_HOP, hop.id.clone());
    if via {
        headers.append(http::header::VIA, hop.via.clone());
    }
}

/// Appends the client to `X-Forwarded-For` and `Forwarded` (RFC 7239).
/// A client on a Unix socket has no address: `Forwarded` says
/// `for=unknown` (RFC 7239, section 6.2) and `X-Forwarded-For`, which has
/// no such word, is left as it came.
pub(crate) fn forwarded(headers: &mut HeaderMap, client: Option<SocketAddr>) {
    let ip = client.map(|c| c.ip());
    let xff = match (
        headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
        ip,
    ) {
        (Some(before), Some(ip)) => Some(format!("{before}, {ip}")),
        (None, Some(ip)) => Some(ip.to_string()),
        (_, None) => None,
    };
    // RFC 7239: an IPv6 address is bracketed and quoted.
    let node = match ip {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => format!("\"[{v6}]\""),
        None => "unknown".to_owned(),
    };
    let element = format!("for={node};proto=http");
    let fwd = match headers
        .get(http::header::FORWARDED)
        .and_then(|v| v.to_str().ok())
    {
        Some(before) => format!("{before}, {element}"),
        None => element,
    };
    if let Some(Ok(v)) = xff.map(|x| HeaderValue::from_str(&x)) {
        headers.insert("x-forwarded-for", v);
    }
    if let Ok(v) = HeaderValue::from_str(&fwd) {
        headers.insert(http::header::FORWARDED, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("te", HeaderValue::from_static("gzip"));
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-end-to-end"]);
    }

    #[test]
    fn te_trailers_survives() {
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("gzip, trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
    }

    #[test]
    fn a_loop_is_this_proxys_own_pseudonym_among_the_hops() {
        let me = Hop {
            id: HeaderValue::from_static("fallback-abcdef"),
            via: HeaderValue::from_static("1.1 fallback-abcdef"),
        };
        let mut h = HeaderMap::new();
        h.append(
            "via",
            HeaderValue::from_static("1.1 cdn, 1.1 fallback-abcdef"),
        );
        assert!(me.looped(&h));
        let mut h = HeaderMap::new();
        h.append(
            "x-fallback-hop",
            HeaderValue::from_static("fallback-123456, fallback-abcdef"),
        );
        assert!(me.looped(&h));
        let mut other = HeaderMap::new();
        other.append("via", HeaderValue::from_static("1.1 fallback-123456"));
        other.append(
            "x-fallback-hop",
            HeaderValue::from_static("fallback-123456"),
        );
        assert!(!me.looped(&other));
    }

    #[test]
    fn via_goes_upstream_only_when_asked_for() {
        let me = Hop::new();
        let mut h = HeaderMap::new();
        outbound(&mut h, &me, false);
        assert!(h.get("via").is_none());
        assert!(me.looped(&h), "the hop header alone finds the loop");
        let mut h = HeaderMap::new();
        outbound(&mut h, &me, true);
        assert!(h.get("via").is_some());
        assert!(me.looped(&h));
    }

    #[test]
    fn forwarded_appends_the_client() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        forwarded(&mut h, Some("127.0.0.1:5000".parse().unwrap()));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9, 127.0.0.1");
        assert_eq!(h.get("forwarded").unwrap(), "for=127.0.0.1;proto=http");
        let mut h = HeaderMap::new();
        forwarded(&mut h, Some("[::1]:5000".parse().unwrap()));
        assert_eq!(h.get("forwarded").unwrap(), "for=\"[::1]\";proto=http");
        // A client on a Unix socket: no address to add.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        forwarded(&mut h, None);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9");
        assert_eq!(h.get("forwarded").unwrap(), "for=unknown;proto=http");
    }
}

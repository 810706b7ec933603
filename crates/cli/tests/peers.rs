//! `fallback serve` between the software our users run: nginx upstreams
//! (from the system's packages) and real clients, each exchange one that
//! once went wrong.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

mod common;
use common::nginx::Nginx;
use common::proxy::{header, payload, request_to, Proxy};

/// A page nginx's stock gzip settings compress (text/html, > 20 bytes).
fn page() -> Vec<u8> {
    let mut page = b"<!doctype html><title>orders</title><ul>".to_vec();
    for i in 0..3000 {
        page.extend_from_slice(format!("<li>order {i}: shipped</li>\n").as_bytes());
    }
    page
}

/// nginx with gzip on and everything else stock (`gzip_proxied off`).
fn gzip_nginx(page: &[u8]) -> Nginx {
    Nginx::start("", "gzip on;", "", &[("index.html", page)])
}

#[test]
fn an_nginx_upstream_compresses_for_clients_behind_the_proxy_as_for_direct_ones() {
    let page = page();
    let nginx = gzip_nginx(&page);
    let get = "GET /index.html HTTP/1.1\r\naccept-encoding: gzip";
    let (status, direct_headers, direct) = request_to(&nginx.addr(), get, b"");
    let direct = payload(&direct_headers, &direct);
    assert_eq!(status, 200);
    assert_eq!(header(&direct_headers, "content-encoding"), Some("gzip"));
    assert!(direct.len() < page.len() / 5, "{} bytes", direct.len());

    let p = Proxy::start(&[&nginx.url("/")]);
    let (status, headers, proxied) = p.request(get, b"");
    let proxied = payload(&headers, &proxied);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-encoding"),
        Some("gzip"),
        "compressed behind the proxy too"
    );
    assert_eq!(proxied, direct, "the same bytes on the wire");

    // With --via, nginx's gzip_proxied off sees a proxied request: the
    // documented trade-off.
    let p = Proxy::start(&["--via", &nginx.url("/")]);
    let (status, headers, with_via) = p.request(get, b"");
    let with_via = payload(&headers, &with_via);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), None);
    assert_eq!(with_via.len(), page.len());
}

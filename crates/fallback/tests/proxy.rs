//! Forward proxies on loopback: plain HTTP in absolute form, HTTPS through
//! `CONNECT`, `no_proxy`, and credentials that never show.
#![cfg(feature = "rustls")]

use fallback_chain::transport::HyperTransport;
use fallback_chain::{Chain, Link, Outcome};
use fallback_chain_testserver::proxy::Proxy;
use fallback_chain_testserver::tls::{HttpServer, TestCa};
use fallback_chain_testserver::{Behavior, Server};

#[tokio::test]
async fn plain_http_goes_through_the_proxy_with_its_credentials() {
    let proxy = Proxy::builder()
        .credentials("proxyuser", "pr0xy-pass")
        .start();
    let origin = Server::start(Behavior::ok("via proxy"));
    let url = proxy
        .url()
        .replace("http://", "http://proxyuser:pr0xy-pass@");
    let chain = Chain::builder()
        .transport_options(HyperTransport::builder().proxy(url))
        .link(Link::get(origin.url("/x?a=1")))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(&resp.body()[..], b"via proxy");
    let passed = proxy.requests();
    assert_eq!(passed.len(), 1);
    assert_eq!(passed[0].method, "GET");
    assert_eq!(passed[0].target, origin.url("/x?a=1"), "absolute form");
    assert!(passed[0].allowed);
    // The proxy's credentials stop at the proxy.
    assert_eq!(origin.requests()[0].header("proxy-authorization"), None);
    assert!(!format!("{chain:?}").contains("pr0xy-pass"));
}

#[tokio::test]
async fn https_goes_through_a_connect_tunnel() {
    let ca = TestCa::new();
    let origin = HttpServer::builder().tls(&ca).start();
    let proxy = Proxy::builder().credentials("u", "tunnel-pass").start();
    let chain = Chain::builder()
        .transport_options(
            HyperTransport::builder()
                .add_root_certificate_pem(ca.cert_pem())
                .proxy(proxy.url().replace("http://", "http://u:tunnel-pass@")),
        )
        .link(Link::post(origin.url("/secure")).body("through the tunnel"))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(&resp.body()[..], b"through the tunnel");
    let passed = proxy.requests();
    assert_eq!(passed[0].method, "CONNECT");
    assert_eq!(
        passed[0].target,
        format!("localhost:{}", origin.addr().port())
    );
    assert!(passed[0].allowed, "{passed:?}");
    // TLS ran end to end: the origin saw the request, over h2.
    assert_eq!(origin.requests()[0].alpn.as_deref(), Some("h2"));
}

#[tokio::test]
async fn no_proxy_bypasses_the_proxy() {
    let proxy = Proxy::start();
    let origin = Server::start(Behavior::ok("direct"));
    let chain = Chain::builder()
        .transport_options(
            HyperTransport::builder()
                .proxy(proxy.url())
                .no_proxy("localhost, 127.0.0.0/8"),
        )
        .link(Link::get(origin.url("/")))
        .build()
        .unwrap();
    chain.call().await.unwrap();
    assert!(proxy.requests().is_empty());
    assert_eq!(origin.request_count(), 1);
}

#[tokio::test]
async fn wrong_proxy_credentials_fail_the_link_and_never_show() {
    let proxy = Proxy::builder().credentials("u", "right").start();
    let origin = Server::start(Behavior::ok("x"));
    let ca = TestCa::new();
    let tls_origin = HttpServer::builder().tls(&ca).start();
    let backup = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .transport_options(
            HyperTransport::builder()
                .add_root_certificate_pem(ca.cert_pem())
                .proxy(proxy.url().replace("http://", "http://u:WRONG-secret@"))
                .no_proxy(format!("127.0.0.1:{}", backup.addr().port())),
        )
        .link(Link::get(origin.url("/")))
        .link(Link::post(tls_origin.url("/")).body("b"))
        .build()
        .unwrap();
    let e = chain.call().await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(407), "{e}");
    let attempts = e.report().attempts();
    assert_eq!(attempts[0].outcome(), Outcome::Status);
    // A refused CONNECT sent nothing to the origin: a connect failure.
    assert_eq!(attempts[1].outcome(), Outcome::Connect, "{}", attempts[1]);
    for text in [e.to_string(), format!("{e:?}"), e.report().to_string()] {
        assert!(!text.contains("WRONG-secret"), "{text}");
    }
    assert_eq!(origin.request_count(), 0);
    assert!(tls_origin.requests().is_empty());
}

#[test]
fn bad_proxy_urls_are_refused_at_build_without_their_credentials() {
    for (url, why) in [
        (
            "socks5://u:hidden-pw@127.0.0.1:1080",
            "only http:// proxies",
        ),
        ("https://u:hidden-pw@proxy:3128", "only http:// proxies"),
        ("http://u:hidden-pw@", "proxy"),
    ] {
        let err = Chain::builder()
            .transport_options(HyperTransport::builder().proxy(url))
            .link(Link::get("http://127.0.0.1:1/"))
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{url}: {err}");
        assert!(!err.contains("hidden-pw"), "{err}");
    }
}

//! HTTPS with a private CA, client certificates, HTTP/2 by ALPN and h2c,
//! against real TLS servers on loopback whose certificates are made at test
//! time.
#![cfg(feature = "rustls")]

use fallback_chain::transport::HyperTransport;
use fallback_chain::{BuildError, Chain, Link, Outcome};
use fallback_chain_testserver::tls::{HttpServer, TestCa};
use fallback_chain_testserver::{Behavior, Server};

fn trusting(ca: &TestCa) -> fallback_chain::transport::HyperTransportBuilder {
    HyperTransport::builder()
        .proxy_from_env(false)
        .add_root_certificate_pem(ca.cert_pem())
}

#[tokio::test]
async fn a_private_ca_is_refused_by_default_and_a_post_fails_over() {
    let ca = TestCa::new();
    let tls = HttpServer::builder().tls(&ca).start();
    let backup = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .transport_options(HyperTransport::builder().proxy_from_env(false))
        .link(Link::post(tls.url("/orders")).body("order"))
        .link(Link::post(backup.url("/orders")).body("order"))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    let first = &resp.report().attempts()[0];
    // The handshake failed, so nothing was sent: even a POST fails over.
    assert_eq!(first.outcome(), Outcome::Connect, "{first}");
    assert!(first.error().unwrap().contains("UnknownIssuer"), "{first}");
    assert_eq!(resp.winner(), 1);
    assert!(tls.requests().is_empty());
    assert_eq!(backup.request_count(), 1);
}

#[tokio::test]
async fn a_private_ca_is_accepted_with_its_root() {
    let ca = TestCa::new();
    let tls = HttpServer::builder().tls(&ca).start();
    for only_given in [false, true] {
        let chain = Chain::builder()
            .transport_options(trusting(&ca).tls_built_in_root_certs(!only_given))
            .link(Link::post(tls.url("/x")).body("hello"))
            .build()
            .unwrap();
        let resp = chain.call().await.unwrap();
        assert_eq!(&resp.body()[..], b"hello");
    }
}

#[tokio::test]
async fn h2_is_negotiated_over_tls_and_h2c_needs_prior_knowledge() {
    let ca = TestCa::new();
    let tls = HttpServer::builder().tls(&ca).start();
    let chain = Chain::builder()
        .transport_options(trusting(&ca))
        .link(Link::get(tls.url("/")))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(resp.headers()["x-alpn"], "h2");
    let seen = &tls.requests()[0];
    assert_eq!(
        (seen.version.as_str(), seen.alpn.as_deref()),
        ("HTTP/2.0", Some("h2"))
    );

    let plain = HttpServer::start();
    for (h2c, version) in [(false, "HTTP/1.1"), (true, "HTTP/2.0")] {
        let chain = Chain::builder()
            .http2_prior_knowledge(h2c)
            .link(Link::get(plain.url("/")))
            .build()
            .unwrap();
        let resp = chain.call().await.unwrap();
        assert_eq!(resp.headers()["x-version"], version);
    }
    // Per link, and ignored for https:// links (ALPN decides).
    let chain = Chain::builder()
        .transport_options(trusting(&ca))
        .link(Link::get(tls.url("/")).http2_prior_knowledge(true))
        .link(Link::get(plain.url("/")).http2_prior_knowledge(true))
        .build()
        .unwrap();
    assert_eq!(chain.call().await.unwrap().headers()["x-alpn"], "h2");
}

#[tokio::test]
async fn mutual_tls_with_the_identity_and_a_post_fails_over_without_it() {
    let ca = TestCa::new();
    let server = HttpServer::builder()
        .tls(&ca)
        .require_client_cert(&ca)
        .start();
    let id = ca.client_identity("caller");
    let chain = Chain::builder()
        .transport_options(trusting(&ca).identity_pem(id.cert_pem.clone(), id.key_pem.clone()))
        .link(Link::post(server.url("/")).body("with identity"))
        .build()
        .unwrap();
    chain.call().await.unwrap();
    assert!(server.requests()[0].client_cert);

    let backup = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .transport_options(trusting(&ca))
        .link(Link::post(server.url("/")).body("no identity"))
        .link(Link::post(backup.url("/")).body("no identity"))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap_or_else(|e| panic!("{e}"));
    let first = &resp.report().attempts()[0];
    assert_eq!(first.outcome(), Outcome::Connect, "{first}");
    assert_eq!(resp.winner(), 1);
    assert_eq!(
        server.requests().len(),
        1,
        "only the first call got through"
    );
}

#[tokio::test]
async fn bad_certificates_and_keys_are_refused_at_build() {
    let ca = TestCa::new();
    let other = ca.client_identity("x");
    let cases: Vec<(fallback_chain::transport::HyperTransportBuilder, &str)> = vec![
        (
            HyperTransport::builder().add_root_certificate_pem("not a pem"),
            "root certificate",
        ),
        (
            HyperTransport::builder().identity_pem(ca.cert_pem(), "no key here"),
            "client key",
        ),
        (
            HyperTransport::builder()
                .identity_pem(other.cert_pem.clone(), ca.client_identity("y").key_pem),
            "client certificate",
        ),
        (
            HyperTransport::builder().tls_built_in_root_certs(false),
            "tls_built_in_root_certs",
        ),
    ];
    for (options, culprit) in cases {
        let err = Chain::builder()
            .transport_options(options)
            .link(Link::get("https://localhost/"))
            .build()
            .unwrap_err();
        assert!(matches!(err, BuildError::Setting { .. }), "{err}");
        assert!(err.to_string().contains(culprit), "{culprit}: {err}");
    }
}

#[tokio::test]
async fn insecure_accepts_any_certificate_and_says_so_on_every_attempt() {
    let ca = TestCa::new();
    let server = HttpServer::builder().tls(&ca).start();
    let down = HttpServer::builder().tls(&ca).reply(503, "down").start();
    let chain = Chain::builder()
        .transport_options(
            HyperTransport::builder()
                .proxy_from_env(false)
                .danger_accept_invalid_certs(true),
        )
        .link(Link::get(down.url("/")))
        .link(Link::get(server.url("/")))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(resp.winner(), 1);
    for a in resp.report().attempts() {
        assert!(a.insecure(), "{a}");
        assert!(
            a.to_string().contains("TLS certificate not verified"),
            "{a}"
        );
    }
    let failed = &resp.report().attempts()[0];
    assert!(
        failed.error().unwrap().contains("verification was off"),
        "{failed}"
    );
}

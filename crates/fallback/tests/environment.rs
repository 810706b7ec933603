//! What the default transport takes from the environment: `SSL_CERT_FILE`
//! and the proxy variables. One test in this binary, since it sets
//! process-wide variables.
#![cfg(feature = "rustls")]

use fallback_chain::transport::HyperTransport;
use fallback_chain::{Chain, Link, Outcome};
use fallback_chain_testserver::proxy::Proxy;
use fallback_chain_testserver::tls::{HttpServer, TestCa};
use fallback_chain_testserver::{Behavior, Server};

fn clear() {
    for v in [
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "REQUEST_METHOD",
    ] {
        std::env::remove_var(v);
    }
}

async fn ssl_cert_file_is_honoured() {
    let ca = TestCa::new();
    let server = HttpServer::builder().tls(&ca).start();
    let call = || async {
        let chain = Chain::builder()
            .link(Link::get(server.url("/")))
            .build()
            .unwrap();
        chain.call().await
    };
    let e = call().await.unwrap_err();
    assert_eq!(e.last_attempt().unwrap().outcome(), Outcome::Connect, "{e}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.pem");
    std::fs::write(&file, ca.cert_pem()).unwrap();
    std::env::set_var("SSL_CERT_FILE", &file);
    call().await.unwrap();
    // The file replaces the system's store, as with OpenSSL.
    std::env::remove_var("SSL_CERT_FILE");

    // An empty store (a minimal container): the chain still builds, and
    // verifies against the bundled webpki roots, which do not know the CA.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    std::env::set_var("SSL_CERT_FILE", &empty);
    let e = call().await.unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    std::env::remove_var("SSL_CERT_FILE");
}

async fn proxy_variables_are_honoured() {
    let proxy = Proxy::start();
    let origin = Server::start(Behavior::ok("x"));
    let chain = |options: fallback_chain::transport::HyperTransportBuilder| {
        Chain::builder()
            .transport_options(options)
            .link(Link::get(origin.url("/")))
            .build()
            .unwrap()
    };
    std::env::set_var("http_proxy", proxy.url());
    chain(HyperTransport::builder()).call().await.unwrap();
    assert_eq!(proxy.requests().len(), 1, "lower case http_proxy");

    std::env::set_var("NO_PROXY", "127.0.0.1");
    chain(HyperTransport::builder()).call().await.unwrap();
    assert_eq!(proxy.requests().len(), 1, "NO_PROXY bypasses");
    std::env::remove_var("NO_PROXY");

    chain(HyperTransport::builder().proxy_from_env(false))
        .call()
        .await
        .unwrap();
    assert_eq!(proxy.requests().len(), 1, "turned off");

    // In a CGI script a request header could have set HTTP_PROXY.
    std::env::set_var("REQUEST_METHOD", "GET");
    chain(HyperTransport::builder()).call().await.unwrap();
    assert_eq!(proxy.requests().len(), 1, "ignored under CGI");
    std::env::remove_var("REQUEST_METHOD");

    std::env::set_var("http_proxy", "socks5://u:env-secret@127.0.0.1:1");
    let err = Chain::builder()
        .link(Link::get(origin.url("/")))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("http_proxy"), "names the variable: {err}");
    assert!(!err.contains("env-secret"), "{err}");
    std::env::remove_var("http_proxy");
    // One through the proxy, three direct.
    assert_eq!(origin.request_count(), 4);
}

#[tokio::test]
async fn environment() {
    clear();
    ssl_cert_file_is_honoured().await;
    proxy_variables_are_honoured().await;
}

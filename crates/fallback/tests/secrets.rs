//! Secrets never print: every output of the library held against a list of
//! secret-bearing inputs (headers by the built-in rule, headers marked
//! secret, userinfo, secret query parameters, and secret response headers).
//!
//! One test in this binary, so its scoped tracing subscriber never races
//! another test for tracing's callsite cache.

mod common;

use common::Buf;
use fallback_chain::{BuildError, Chain, Link};
use fallback_chain_testserver::{Reply, Server};

/// (header name, secret value) pairs sent on every link.
const HEADERS: [(&str, &str); 13] = [
    ("Authorization", "Bearer SECRET-authorization"),
    ("Proxy-Authorization", "Basic SECRET-proxy-auth"),
    ("Cookie", "sid=SECRET-cookie"),
    ("X-Api-Key", "SECRET-api-key"),
    ("api-key", "SECRET-bare-api-key"),
    ("X-Auth-Token", "SECRET-auth-token"),
    ("X-Client-Secret", "SECRET-client-secret"),
    ("X-Password", "SECRET-password"),
    ("X-Passwd", "SECRET-passwd"),
    ("X-Session-Id", "SECRET-session"),
    ("X-Signature", "SECRET-signature"),
    ("X-Credential", "SECRET-credential"),
    ("x-upper-TOKEN", "SECRET-upper-token"),
];

/// Secret query parameters, and userinfo, in every link's URL.
const QUERY: &str = "?page=2&code=SECRET-code&jwt=SECRET-jwt&sig=SECRET-sig\
                     &access_token=SECRET-access-token&password=SECRET-query-password\
                     &X-Amz-Signature=SECRET-amz";
const USERINFO: &str = "admin:SECRET-userinfo@";

/// Headers marked secret by the caller: one chain-wide, one per link, and
/// one sent only as a chain-wide default.
const MARKED: [(&str, &str); 2] = [
    ("X-Tenant", "SECRET-tenant"),
    ("X-Private", "SECRET-private"),
];
const DEFAULT_HEADER: (&str, &str) = ("X-Default-Token", "SECRET-default");

fn assert_clean(what: &str, text: &str) {
    // "SECRET-" prefixes every secret value above and nothing else.
    assert!(!text.contains("SECRET-"), "{what} leaks a secret:\n{text}");
}

fn link(url: String) -> Link {
    let url = url.replace("http://", &format!("http://{USERINFO}")) + QUERY;
    let mut l = Link::get(url).secret_header("X-Private");
    for (n, v) in HEADERS.iter().chain(&MARKED) {
        l = l.header(*n, *v);
    }
    l
}

fn builder(urls: &[String]) -> fallback_chain::ChainBuilder {
    Chain::builder()
        .secret_header("x-tenant")
        .header(DEFAULT_HEADER.0, DEFAULT_HEADER.1)
        .links(urls.iter().cloned().map(link))
}

async fn every_output(refused: &Server, down: &Server, up: &Server) {
    let urls = [refused.url("/a"), down.url("/b"), up.url("/c")];

    // Before the chain is built.
    // A link on its own knows the built-in rule and its own marks; the
    // chain's marks apply once it is in a builder.
    let alone = link(up.url("/")).secret_header("X-Tenant");
    assert_clean("Link Debug", &format!("{alone:?}"));
    assert_clean("ChainBuilder Debug", &format!("{:?}", builder(&urls)));

    let chain = builder(&urls).build().unwrap();
    assert_clean("Chain Debug", &format!("{chain:?}"));
    let links = chain.links();
    assert_clean("Chain::links", &format!("{links:?}"));
    // The marked and default headers are there, only hidden.
    let shown: Vec<_> = links[0].headers().iter().map(|(n, _)| n.as_str()).collect();
    for (n, _) in HEADERS.iter().chain(&MARKED).chain([&DEFAULT_HEADER]) {
        assert!(
            shown.contains(&n.to_ascii_lowercase().as_str()),
            "{n} in {shown:?}"
        );
    }

    // A success: the third link answers with secret response headers.
    let resp = chain.call().await.unwrap();
    assert_eq!(resp.winner(), 2);
    assert_clean("Response Debug", &format!("{resp:?}"));
    assert_clean("Report", &resp.report().to_string());
    assert_clean("Report Debug", &format!("{:?}", resp.report()));
    for a in resp.report().attempts() {
        assert_clean("Attempt", &a.to_string());
        assert_clean("Attempt url", a.url());
    }
    // A response header marked secret by the caller is marked sensitive.
    assert!(resp.headers()["x-tenant"].is_sensitive());
    // Redacted, not dropped: every secret reached the server.
    let got = &up.requests()[0];
    for (n, v) in HEADERS.iter().chain(&MARKED).chain([&DEFAULT_HEADER]) {
        if *n != "Authorization" {
            assert_eq!(got.header(&n.to_ascii_lowercase()), Some(*v), "{n}");
        }
    }
    assert!(got.path.contains("code=SECRET-code"), "{}", got.path);

    // A failure: every link fails, the last with secret response headers.
    let failing = builder(&[refused.url("/x"), down.url("/y")])
        .build()
        .unwrap();
    let err = failing.call().await.unwrap_err();
    assert_clean("Error Display", &err.to_string());
    assert_clean("Error Debug", &format!("{err:?}"));
    assert_clean("Error url", err.url().unwrap());
    assert_clean("Error report", &err.report().to_string());
    let typed = failing.call_json::<serde_json::Value>().await.unwrap_err();
    assert_clean("Failure Debug", &format!("{typed:?}"));
    assert_clean("Failure Display", &typed.to_string());

    // Build errors: a bad value of a secret header is never echoed.
    let bad: BuildError = Chain::builder()
        .link(link(up.url("/")).header("X-Api-Key", "SECRET-bad\r\nvalue"))
        .build()
        .unwrap_err();
    assert_clean("BuildError", &bad.to_string());
    assert_clean("BuildError Debug", &format!("{bad:?}"));
    let bad = Chain::builder()
        .link(Link::get(format!("ftp://{USERINFO}h/{QUERY}")))
        .build()
        .unwrap_err();
    assert_clean("BuildError (URL)", &bad.to_string());
}

#[test]
fn secrets_never_print() {
    let refused = Server::refused();
    let secret_reply = |status: u16| {
        Reply::json(status, r#"{"message": "no"}"#)
            .header("set-cookie", "sid=SECRET-set-cookie")
            .header("x-session-token", "SECRET-response-session")
            .header("x-tenant", "SECRET-response-tenant")
    };
    let down = Server::start(secret_reply(503));
    let up = Server::start(secret_reply(200));
    let buf = Buf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buf.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();

    #[cfg(feature = "metrics")]
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    #[cfg(feature = "metrics")]
    let snapshotter = recorder.snapshotter();

    let run = || {
        tracing::subscriber::with_default(subscriber, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(every_output(&refused, &down, &up));
        })
    };
    #[cfg(feature = "metrics")]
    metrics::with_local_recorder(&recorder, run);
    #[cfg(not(feature = "metrics"))]
    run();

    let out = buf.text();
    assert!(
        out.contains("fallback.attempt"),
        "spans are emitted:\n{out}"
    );
    assert_clean("tracing output", &out);

    #[cfg(feature = "metrics")]
    {
        let snapshot = snapshotter.snapshot().into_vec();
        assert!(!snapshot.is_empty(), "metrics were recorded");
        assert_clean("metrics", &format!("{snapshot:?}"));
    }
}

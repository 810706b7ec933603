//! Spans, events and their levels, and secrets that never reach them. This
//! file holds one test, so no other test in the binary races its scoped
//! subscriber for tracing's callsite cache.

use std::io::Write;
use std::sync::{Arc, Mutex};

use fallback::{Chain, Link};
use fallback_testserver::{Behavior, Server};

const SECRETS: [&str; 5] = [
    "hunter2",
    "s3cr3t-token",
    "cookie-value",
    "proxy-pass",
    "qs-secret",
];

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} leaks {s:?}:\n{text}");
    }
}

/// A tracing writer into a shared buffer.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}

fn secret_chain(refused: &Server, down: &Server, up: &Server) -> Chain {
    let with_secrets = |url: String| {
        let url = url.replace("http://", "http://admin:hunter2@") + "?page=1&api_token=qs-secret";
        Link::get(url)
            .header("Authorization", "Bearer s3cr3t-token")
            .header("Cookie", "session=cookie-value")
            .header("Proxy-Authorization", "Basic proxy-pass")
    };
    Chain::builder()
        .link(with_secrets(refused.url("/a")))
        .link(with_secrets(down.url("/b")))
        .link(with_secrets(up.url("/c")))
        .build()
        .unwrap()
}

fn secrets_never_appear_in_reports_errors_debug_or_spans() {
    let refused = Server::refused();
    let down = Server::start(Behavior::status(503));
    let up = Server::start(Behavior::Echo);
    let buf = Buf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buf.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let chain = secret_chain(&refused, &down, &up);
            assert_clean("Chain Debug", &format!("{chain:?}"));
            assert_clean("links()", &format!("{:?}", chain.links()));
            let resp = chain.call().await.unwrap();
            assert_clean("Report", &resp.report().to_string());
            assert_clean("Report Debug", &format!("{:?}", resp.report()));
            for a in resp.report().attempts() {
                assert_clean("Attempt url", a.url());
            }
            // The secrets did reach the servers: they are redacted, not dropped.
            let got = &up.requests()[0];
            assert_eq!(got.header("authorization"), Some("Bearer s3cr3t-token"));
            assert!(got.path.contains("api_token=qs-secret"));

            let failing = Chain::builder()
                .link(Link::get(
                    refused
                        .url("/x")
                        .replace("http://", "http://admin:hunter2@")
                        + "?key=qs-secret",
                ))
                .build()
                .unwrap();
            let err = failing.call().await.unwrap_err();
            assert_clean("Error Display", &err.to_string());
            assert_clean("Error Debug", &format!("{err:?}"));
            assert_clean("Error url", err.url().unwrap());
        });
    });
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        out.contains("fallback.attempt"),
        "spans are emitted:\n{out}"
    );
    assert!(out.contains("link failed"), "failures are events:\n{out}");
    assert_clean("tracing output", &out);
}

fn spans_and_events_at_the_expected_levels() {
    let down = Server::start(Behavior::status(503));
    let up = Server::start(Behavior::ok("fine"));
    let buf = Buf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buf.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let chain = Chain::builder()
                .link(Link::get(down.url("/")).name("primary"))
                .link(Link::get(up.url("/")).name("backup"))
                .build()
                .unwrap();
            chain.call().await.unwrap();
            let solo = Chain::builder()
                .link(Link::get(up.url("/")).name("solo"))
                .build()
                .unwrap();
            solo.call().await.unwrap();
        });
    });
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let line = |needle: &str, and: &str| {
        out.lines()
            .find(|l| l.contains(needle) && l.contains(and))
            .unwrap_or_else(|| panic!("{needle} {and}:\n{out}"))
            .to_owned()
    };
    let failover = line("link failed", "primary");
    assert!(
        failover.contains("WARN") && failover.contains("primary") && failover.contains("503"),
        "{failover}"
    );
    assert!(line("succeeded after failover", "backup").contains("INFO"));
    let first = line("link succeeded", "solo");
    assert!(first.contains("DEBUG") && first.contains("solo"), "{first}");
    assert!(
        failover.contains("fallback.call") && failover.contains("fallback.attempt"),
        "{failover}"
    );
}

#[test]
fn tracing_output() {
    secrets_never_appear_in_reports_errors_debug_or_spans();
    spans_and_events_at_the_expected_levels();
}

//! Spans, events and their levels (secrets that never reach them are in
//! `secrets.rs`). This file holds one test, so no other test in the binary
//! races its scoped subscriber for tracing's callsite cache.

mod common;

use common::Buf;
use fallback_chain::{Chain, Link};
use fallback_chain_testserver::{Behavior, Server};

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
    let out = buf.text();
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
    spans_and_events_at_the_expected_levels();
}

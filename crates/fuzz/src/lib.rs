//! Every parser that takes outside input, as a function of any bytes: the
//! fuzz targets (`libfuzzer/`) call these, and `tests/corpus.rs` replays
//! each target's corpus through them on every test run.
//!
//! Each one must neither panic nor hang, and checks what its parser
//! promises beyond that.

use fallback_chain::{Chain, Classifier, Link};

mod upstream;
pub use upstream::UpstreamHarness;

pub use fallback_chain::fuzz::{grpc_status, grpc_timeout, retry_after};
pub use fallback_chain_cli::fuzz::{
    duration, header, json_body, send_config, serve_config, size, ServeHarness,
};

/// A target: any bytes in, a panic on a broken promise.
pub type Target = fn(&[u8]);

/// Every target but `serve_request` and `upstream_answer`, which need a
/// harness: its name (the
/// corpus folder) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("retry_after", retry_after),
    ("duration", duration),
    ("size", size),
    ("header", header),
    ("json_body", json_body),
    ("fail_on", fail_on),
    ("link", link),
    ("send_config", send_config),
    ("serve_config", serve_config),
    ("testserver_request", testserver_request),
    ("grpc_timeout", grpc_timeout),
    ("grpc_status", grpc_status),
];

/// A `--fail-on` spec: accepted, or refused with a reason.
pub fn fail_on(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Err(e) = Classifier::parse(&s) {
        assert!(!e.to_string().is_empty());
    }
}

/// A link from outside input: the URL on the first line, then `Name:
/// value` headers, one a line. A chain built from it must never show a
/// secret header's value, in its `Debug`, its links, or its error.
pub fn link(data: &[u8]) {
    const SECRET: &str = "fuzz-secret-7f3a9c";
    let text = String::from_utf8_lossy(data);
    if text.contains(SECRET) {
        return;
    }
    let mut lines = text.split('\n');
    let url = lines.next().unwrap_or("");
    let mut l = Link::get(url).header("authorization", format!("Bearer {SECRET}"));
    for h in lines {
        if let Some((n, v)) = h.split_once(':') {
            l = l.header(n.to_owned(), v.trim().to_owned());
        }
    }
    let shown = match Chain::builder().link(l).build() {
        Ok(chain) => {
            let mut s = format!("{chain:?}");
            for l in chain.links() {
                s.push_str(&format!("{l:?} {} {}", l.url(), l.name()));
                for (n, v) in l.headers() {
                    s.push_str(&format!("{n}: {v}"));
                }
            }
            s
        }
        Err(e) => format!("{e} {e:?}"),
    };
    assert!(!shown.contains(SECRET), "the secret showed: {shown}");
}

/// The test server's request reader, on any bytes.
pub fn testserver_request(data: &[u8]) {
    for r in fallback_chain_testserver::fuzz_read_requests(data) {
        assert!(r.body.len() <= data.len());
    }
}

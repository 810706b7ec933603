//! Every file of every target's corpus, and every crash ever found (kept
//! in the corpus once fixed), replayed through the target's function.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use fallback_chain_fuzz::{ServeHarness, TARGETS};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: an empty corpus", dir.display());
    files
}

#[test]
fn every_corpus_replays_cleanly() {
    for (target, run) in TARGETS {
        for f in inputs(target) {
            let data = std::fs::read(&f).expect("a corpus file");
            run(&data);
        }
    }
}

/// Every panic in this process, whatever thread or task it happened in:
/// tokio catches a panic in a spawned task, so the proxy's tasks would
/// otherwise hide theirs. (libFuzzer aborts on any panic.)
fn panics() -> &'static Mutex<Vec<String>> {
    static PANICS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    PANICS.get_or_init(|| {
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(p) = PANICS.get() {
                p.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(info.to_string());
            }
            before(info);
        }));
        Mutex::default()
    })
}

#[test]
fn the_serve_corpus_replays_cleanly() {
    let panics = panics();
    let h = ServeHarness::new();
    let mut answered = 0;
    for f in inputs("serve_request") {
        let data = std::fs::read(&f).expect("a corpus file");
        if !h.exchange(&data).is_empty() {
            answered += 1;
        }
    }
    // Not every input is a request, but the seeds are.
    assert!(answered > 0, "no input got an answer");
    // Taken out before asserting: the assertion's own panic goes through the
    // hook, which locks the list again.
    let seen = std::mem::take(&mut *panics.lock().unwrap_or_else(|e| e.into_inner()));
    assert!(seen.is_empty(), "panics in this process: {seen:?}");
}

/// The harness is the real proxy: a request goes through, a 503 fails
/// over, and hop-by-hop headers stay behind.
#[test]
fn the_serve_harness_proxies() {
    let h = ServeHarness::new();
    let answer = |name: &str| {
        let data = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpus/serve_request")
                .join(name),
        )
        .expect("a seed");
        String::from_utf8_lossy(&h.exchange(&data)).into_owned()
    };
    // An even upstream path: the first upstream answers.
    let got = answer("get");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        got.contains("GET http://127.0.0.1:1/a/items/1?x=2 0"),
        "{got}"
    );
    // An odd one: 503 there, so the second answers.
    let got = answer("odd");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("GET http://127.0.0.1:2/b/odd1 0"), "{got}");
    // A client's root is the upstream's base URL, as with nginx's
    // `proxy_pass http://u/a`.
    let got = answer("root");
    assert!(got.contains("GET http://127.0.0.1:1/a 0"), "{got}");
    let got = answer("hopbyhop");
    assert!(got.contains("te: trailers"), "{got}");
    assert!(
        !got.contains("x-drop") && !got.contains("keep-alive: 5"),
        "{got}"
    );
    let got = answer("post");
    assert!(got.contains("POST http://127.0.0.1:2/b/orders 13"), "{got}");
    // Five thousand bytes, over the 4 KiB replay buffer: streamed once.
    let got = answer("bigbody");
    assert!(
        got.contains("POST http://127.0.0.1:1/a/big 5000\n"),
        "{got}"
    );
}

#[test]
fn the_upstream_corpus_replays_cleanly() {
    let h = fallback_chain_fuzz::UpstreamHarness::with_patience(Duration::from_secs(1));
    for f in inputs("upstream_answer") {
        let data = std::fs::read(&f).expect("a corpus file");
        h.exchange(&data);
    }
}

/// The harness is the real transport: answers come back whole, and the
/// second request gets its own answer whatever the first did.
#[test]
fn the_upstream_harness_sends_and_reuses() {
    let h = fallback_chain_fuzz::UpstreamHarness::with_patience(Duration::from_secs(1));
    let seed = |name: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpus/upstream_answer")
                .join(name),
        )
        .expect("a seed")
    };
    let own = Some((200, b"second".to_vec()));
    for name in ["get-length", "get-length-kept", "get-close-delimited"] {
        let [first, second] = h.exchange(&seed(name));
        assert_eq!(first.as_ref().map(|(s, _)| *s), Some(200), "{name}");
        assert_eq!(second, own, "{name}");
    }
    let [first, _] = h.exchange(&seed("get-chunked-trailers"));
    assert_eq!(first, Some((200, b"hello".to_vec())));
    let [first, second] = h.exchange(&seed("post-continue"));
    assert_eq!(first, Some((201, b"ok".to_vec())));
    assert_eq!(second, own);
    // Two answers to one request: the second is never taken for the next
    // request's.
    let [first, second] = h.exchange(&seed("get-extra-answer"));
    assert_eq!(first, Some((200, b"ok".to_vec())));
    assert_ne!(second, Some((200, b"junk".to_vec())));
    let [first, second] = h.exchange(&seed("garbage"));
    assert_eq!(first, None);
    assert_eq!(second, own);
}

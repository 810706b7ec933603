//! Bad input is refused when the chain is built: a typed error that names
//! the link and the culprit, and nothing is sent.

use std::time::Duration;

use fallback_chain::{BuildError, Chain, Link, LinkProblem};
use fallback_chain_testserver::{Behavior, Server};

/// Builds a two-link chain whose second link is `bad`, and checks that the
/// error names link 1 and that the healthy server received nothing.
fn refused(bad: impl FnOnce(&Server) -> Link) -> (BuildError, String) {
    let good = Server::start(Behavior::ok("fine"));
    let err = Chain::builder()
        .link(Link::get(good.url("/")).name("good"))
        .link(bad(&good))
        .build()
        .unwrap_err();
    assert_eq!(good.request_count(), 0, "nothing is sent");
    let msg = err.to_string();
    match &err {
        BuildError::Link { index, .. } => assert_eq!(*index, 1, "{msg}"),
        other => panic!("expected a link error, got {other:?}"),
    }
    (err, msg)
}

fn problem(e: &BuildError) -> &LinkProblem {
    match e {
        BuildError::Link { problem, .. } => problem,
        other => panic!("not a link error: {other:?}"),
    }
}

#[test]
fn bad_urls() {
    for url in [
        "not a url",
        "http://",
        "/relative/path",
        "http://exa mple.com/",
        "http://h:0/",
    ] {
        let (e, msg) = refused(|_| Link::get(url).name("bad"));
        assert!(
            matches!(problem(&e), LinkProblem::Url { .. }),
            "{url}: {msg}"
        );
        assert!(msg.contains("link 1 (bad)"), "{msg}");
    }
    for url in ["ftp://example.com/", "file:///etc/passwd", "ws://h/"] {
        let (e, msg) = refused(|_| Link::get(url));
        assert!(
            matches!(problem(&e), LinkProblem::Scheme { .. }),
            "{url}: {msg}"
        );
        assert!(msg.contains(url), "the culprit is named: {msg}");
    }
}

#[test]
fn ports_outside_1_to_65535_are_refused() {
    // `Uri` accepts these, and a client would then quietly connect to
    // port 80 instead.
    for (url, port) in [
        ("http://127.0.0.1:99999/x", "99999"),
        ("http://127.0.0.1:65536/x", "65536"),
        ("http://127.0.0.1:0/x", "0"),
        ("https://u:p@[::1]:70000/x", "70000"),
    ] {
        let (e, msg) = refused(|_| Link::get(url).name("bad-port"));
        assert!(
            matches!(problem(&e), LinkProblem::Url { .. }),
            "{url}: {msg}"
        );
        assert!(msg.contains("link 1 (bad-port)"), "{msg}");
        assert!(
            msg.contains(&format!("port {port} is out of range")),
            "{msg}"
        );
    }
}

#[test]
fn userinfo_never_appears_in_errors() {
    let (_, msg) = refused(|_| Link::get("ftp://user:hunter2@example.com/"));
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn bad_methods() {
    for m in ["", "GE T", "CONNECT", "G\u{e9}T"] {
        let (e, msg) = refused(|s| Link::new(m, s.url("/")));
        assert!(
            matches!(problem(&e), LinkProblem::Method { .. }),
            "{m:?}: {msg}"
        );
    }
}

#[test]
fn bad_header_names_and_values() {
    let (e, msg) = refused(|s| Link::get(s.url("/")).header("Bad Name", "v"));
    assert!(
        matches!(problem(&e), LinkProblem::HeaderName { .. }),
        "{msg}"
    );
    assert!(msg.contains("Bad Name"), "{msg}");

    for v in ["a\r\nX-Injected: 1", "a\nb", "a\rb"] {
        let (e, msg) = refused(|s| Link::get(s.url("/")).header("X-Token", v));
        assert!(
            matches!(problem(&e), LinkProblem::HeaderValue { .. }),
            "{msg}"
        );
        assert!(msg.contains("X-Token") && msg.contains("CR or LF"), "{msg}");
        assert!(
            !msg.contains("Injected"),
            "the value itself is not echoed: {msg}"
        );
    }
    let (_, msg) = refused(|s| Link::get(s.url("/")).header("X-Null", "a\0b"));
    assert!(msg.contains("NUL"), "{msg}");
}

#[test]
fn bad_chain_wide_header() {
    let err = Chain::builder()
        .header("X-Ok", "line\nbreak")
        .link(Link::get("http://127.0.0.1:1/"))
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::DefaultHeader(_)), "{err}");
    assert!(err.to_string().contains("X-Ok"));
}

#[test]
fn json_that_cannot_be_serialized() {
    use std::collections::HashMap;
    // JSON object keys must be strings.
    let bad: HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let (e, msg) = refused(|s| Link::post(s.url("/")).json(&bad));
    assert!(matches!(problem(&e), LinkProblem::Json(_)), "{msg}");
}

#[test]
fn empty_chain_and_zero_durations() {
    assert!(matches!(Chain::builder().build(), Err(BuildError::NoLinks)));
    let link = || Link::get("http://127.0.0.1:1/");
    for (b, name) in [
        (
            Chain::builder().link(link()).timeout(Duration::ZERO),
            "timeout",
        ),
        (
            Chain::builder().link(link()).deadline(Duration::ZERO),
            "deadline",
        ),
        (
            Chain::builder()
                .link(link())
                .connect_timeout(Duration::ZERO),
            "connect_timeout",
        ),
        (
            Chain::builder().link(link().timeout(Duration::ZERO)),
            "link timeout",
        ),
    ] {
        match b.build() {
            Err(BuildError::Setting { setting, .. }) => assert_eq!(setting, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn debug_output_hides_secrets() {
    let link = Link::get("http://user:s3cret@127.0.0.1:1/")
        .header("Authorization", "Bearer s3cret")
        .header("Cookie", "session=s3cret");
    let dbg = format!("{link:?}");
    assert!(!dbg.contains("s3cret"), "{dbg}");
    let chain = Chain::builder().link(link).build().unwrap();
    let dbg = format!("{chain:?}");
    assert!(!dbg.contains("s3cret"), "{dbg}");
}

#[tokio::test]
async fn typed_methods_uris_and_headers_work_as_strings_do() {
    use http::header::{HeaderName, HeaderValue};
    let s = Server::start(Behavior::Echo);
    let uri: http::Uri = s.url("/typed").parse().unwrap();
    let mut secret = HeaderValue::from_static("t0ken");
    secret.set_sensitive(true);
    let chain = Chain::builder()
        .header(HeaderName::from_static("x-default"), "d")
        .link(
            Link::new(http::Method::PUT, &uri)
                .header(
                    HeaderName::from_static("x-typed"),
                    HeaderValue::from_static("v"),
                )
                .header("X-Text", String::from("w"))
                .header("x-custom-auth", secret)
                .body("b"),
        )
        .build()
        .unwrap();
    assert!(!format!("{:?}", chain.links()).contains("t0ken"));
    chain.call().await.unwrap();
    let got = &s.requests()[0];
    assert_eq!((got.method.as_str(), got.path.as_str()), ("PUT", "/typed"));
    for (n, v) in [
        ("x-default", "d"),
        ("x-typed", "v"),
        ("x-text", "w"),
        ("x-custom-auth", "t0ken"),
    ] {
        assert_eq!(got.header(n), Some(v), "{n}");
    }
    // Strings are still checked at build, naming the culprit.
    let (e, msg) = refused(|s| Link::new("post", s.url("/")).header("X-Bad", "a\r\nb"));
    assert!(
        matches!(problem(&e), LinkProblem::HeaderValue { .. }),
        "{msg}"
    );
}

#[test]
fn limits_are_refused_at_build_naming_the_limit() {
    use fallback_chain::limits;
    let many = (0..=limits::MAX_LINKS).map(|i| Link::get(format!("http://127.0.0.1:1/{i}")));
    let err = Chain::builder().links(many).build().unwrap_err();
    assert!(
        err.to_string().contains("1001 links; the limit is 1000"),
        "{err}"
    );
    let at_limit = (0..limits::MAX_LINKS).map(|i| Link::get(format!("http://127.0.0.1:1/{i}")));
    assert!(Chain::builder().links(at_limit).build().is_ok());

    let err = Chain::builder()
        .retries(limits::MAX_RETRIES + 1)
        .link(Link::get("http://127.0.0.1:1/"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("the limit is 100"), "{err}");
    let err = Chain::builder()
        .link(Link::get("http://127.0.0.1:1/").retries(1_000_000))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("retries"), "{err}");

    // A 10 MB header value: named, never printed.
    let secret = "s".repeat(10 << 20);
    let err = Chain::builder()
        .link(Link::get("http://127.0.0.1:1/").header("X-Big", secret.as_str()))
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("x-big") && text.contains("the limit is 65536"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(text.len() < 300, "the value is not in the message");
    // Many values under the per-value limit, too many together.
    let mut link = Link::get("http://127.0.0.1:1/");
    for i in 0..8 {
        link = link.header(format!("X-Part-{i}"), "v".repeat(60 * 1024));
    }
    let err = Chain::builder().link(link).build().unwrap_err();
    assert!(err.to_string().contains("headers together"), "{err}");
}

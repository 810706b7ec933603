//! Retries and re-sending on real loopback sockets: the connect phase,
//! retries on the same link, and bodies re-sent byte for byte.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fallback_chain::{Body, Chain, ErrorKind, ExponentialBackoff, Link, Outcome, Phase};
use fallback_chain_testserver::{Behavior, Server};

fn quick_backoff() -> ExponentialBackoff {
    ExponentialBackoff::new()
        .base(Duration::from_millis(5))
        .cap(Duration::from_millis(20))
}

#[tokio::test]
async fn connect_timeout_is_the_connect_phase_and_a_post_fails_over() {
    let primary = Server::connect_hangs();
    let backup = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .connect_timeout(Duration::from_millis(200))
        .timeout(Duration::from_secs(5))
        .link(Link::post(primary.url("/")).body("order"))
        .link(Link::post(backup.url("/")).body("order"))
        .build()
        .unwrap();
    let t = Instant::now();
    let resp = chain.call().await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let a = &resp.report().attempts()[0];
    assert_eq!(
        (a.outcome(), a.phase()),
        (Outcome::Timeout, Some(Phase::Connect))
    );
    // Nothing was sent to the primary, so the POST went to the backup.
    assert_eq!(&resp.body()[..], b"order");
    assert_eq!(backup.request_count(), 1);
}

/// The attempt's own timeout (shorter than the 2 s connect timeout) fires
/// while the connection is still being made: nothing was sent, so even a
/// POST fails over. (It used to be reported as `timeout (head)`, an
/// unknown outcome, and the POST stopped there.)
#[tokio::test]
async fn an_attempt_timeout_during_the_connect_lets_a_post_fail_over() {
    let primary = Server::connect_hangs();
    let backup = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .timeout(Duration::from_millis(300))
        .link(Link::post(primary.url("/")).body("order"))
        .link(Link::post(backup.url("/")).body("order"))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    let a = &resp.report().attempts()[0];
    assert_eq!(
        (a.outcome(), a.phase()),
        (Outcome::Timeout, Some(Phase::Connect)),
        "{a}"
    );
    assert!(a.error().unwrap().contains("no connection within"), "{a}");
    assert_eq!(&resp.body()[..], b"order");
    assert_eq!(backup.request_count(), 1);
}

/// The call's deadline expires during the connect: the call ends (the
/// deadline leaves no time for a backup), but as a deadline, with the
/// attempt in the connect phase, never as "may have been processed".
#[tokio::test]
async fn a_deadline_during_the_connect_is_the_connect_phase() {
    let primary = Server::connect_hangs();
    let backup = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .deadline(Duration::from_millis(300))
        .link(Link::post(primary.url("/")).body("order"))
        .link(Link::post(backup.url("/")).body("order"))
        .build()
        .unwrap();
    let e = chain.call().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Deadline, "{e}");
    assert!(!e.may_have_been_processed());
    let a = e.last_attempt().unwrap();
    assert_eq!(
        (a.outcome(), a.phase()),
        (Outcome::Timeout, Some(Phase::Connect)),
        "{e}"
    );

    // With room left after the attempt's timeout, the POST fails over.
    let chain = Chain::builder()
        .timeout(Duration::from_millis(200))
        .deadline(Duration::from_secs(5))
        .link(Link::post(primary.url("/")).body("order"))
        .link(Link::post(backup.url("/")).body("order"))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(resp.winner(), 1);
    assert_eq!(backup.request_count(), 1);
}

/// The converse: a server that accepts and reads the request but never
/// answers may have processed it, so the POST is not re-sent, on a new
/// connection or on a pooled one.
#[tokio::test]
async fn a_timeout_after_the_request_left_keeps_a_post_unsent_to_the_backup() {
    let primary = Server::start(Behavior::fail_first(
        1,
        Behavior::ok("warm"),
        Behavior::BlackHole,
    ));
    let backup = Server::start(Behavior::Echo);
    let transport = fallback_chain::transport::HyperTransport::new();
    let post = |body: &str| {
        Chain::builder()
            .transport(transport.clone())
            .timeout(Duration::from_millis(300))
            .link(Link::post(primary.url("/")).body(body.to_owned()))
            .link(Link::post(backup.url("/")).body(body.to_owned()))
            .build()
            .unwrap()
    };
    // The first POST leaves a pooled connection behind; the second is sent
    // on it and never answered.
    post("first").call().await.unwrap();
    let e = post("second").call().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MaybeProcessed, "{e}");
    let a = e.last_attempt().unwrap();
    assert_eq!(
        (a.outcome(), a.phase()),
        (Outcome::Timeout, Some(Phase::Head))
    );
    // And on a new connection.
    let chain = Chain::builder()
        .timeout(Duration::from_millis(300))
        .link(Link::post(primary.url("/")).body("third"))
        .link(Link::post(backup.url("/")).body("third"))
        .build()
        .unwrap();
    let e = chain.call().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MaybeProcessed, "{e}");
    assert_eq!(backup.request_count(), 0);
}

#[tokio::test]
async fn retries_on_the_same_link_before_moving_on() {
    let flaky = Server::start(Behavior::fail_first(
        2,
        Behavior::status(503),
        Behavior::ok("up"),
    ));
    let backup = Server::start(Behavior::ok("backup"));
    let chain = Chain::builder()
        .retries(2)
        .backoff(quick_backoff())
        .link(Link::get(flaky.url("/")))
        .link(Link::get(backup.url("/")))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(&resp.body()[..], b"up");
    let tries: Vec<_> = resp
        .report()
        .attempts()
        .iter()
        .map(|a| (a.link(), a.try_number()))
        .collect();
    assert_eq!(tries, [(0, 1), (0, 2), (0, 3)]);
    assert_eq!(backup.request_count(), 0);
}

#[tokio::test]
async fn per_link_retries_override_the_chain() {
    let down = Server::start(Behavior::status(500));
    let backup = Server::start(Behavior::ok("backup"));
    let chain = Chain::builder()
        .retries(5)
        .backoff(quick_backoff())
        .link(Link::get(down.url("/")).retries(1))
        .link(Link::get(backup.url("/")))
        .build()
        .unwrap();
    chain.call().await.unwrap();
    assert_eq!(down.request_count(), 2);
}

#[tokio::test]
async fn a_post_to_a_black_hole_is_not_retried_on_the_same_link_either() {
    let hole = Server::start(Behavior::BlackHole);
    let chain = Chain::builder()
        .retries(3)
        .timeout(Duration::from_millis(150))
        .link(Link::post(hole.url("/")).body("pay"))
        .build()
        .unwrap();
    let err = chain.call().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MaybeProcessed);
    assert_eq!(hole.request_count(), 1);
}

#[tokio::test]
async fn a_file_body_is_re_opened_and_reaches_every_link_and_try_intact() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let dir = std::env::temp_dir().join(format!("fallback-body-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("payload.bin");
    std::fs::write(&path, &data).unwrap();

    let a = Server::start(Behavior::fail_first(
        1,
        Behavior::status(503),
        Behavior::status(502),
    ));
    let b = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .retries(1)
        .backoff(quick_backoff())
        .link(Link::put(a.url("/")).body(Body::file(&path)))
        .link(Link::put(b.url("/")).body(Body::file(&path)))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(&resp.body()[..], &data[..]);
    let got: Vec<_> = a.requests().into_iter().chain(b.requests()).collect();
    assert_eq!(got.len(), 3, "two tries on a, one on b");
    for r in got {
        assert_eq!(r.header("content-length"), Some("300000"));
        assert!(r.body == data, "byte-identical on every attempt");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_missing_body_file_is_a_build_error() {
    let s = Server::start(Behavior::Echo);
    let err = Chain::builder()
        .link(
            Link::post(s.url("/"))
                .name("upload")
                .body(Body::file("/no/such/file.bin")),
        )
        .build()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("upload") && msg.contains("/no/such/file.bin"),
        "{msg}"
    );
    assert_eq!(s.request_count(), 0);
}

#[tokio::test]
async fn a_factory_body_is_called_for_every_attempt() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let body = Body::factory(move || {
        c2.fetch_add(1, Ordering::SeqCst);
        http_body_util::Full::new(Bytes::from_static(b"streamed"))
    });
    let a = Server::start(Behavior::status(500));
    let b = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .link(Link::put(a.url("/")).body(body.clone()))
        .link(Link::put(b.url("/")).body(body))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(&resp.body()[..], b"streamed");
    assert_eq!(&a.requests()[0].body[..], b"streamed");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_one_shot_body_is_refused_at_build() {
    let s = Server::start(Behavior::Echo);
    let err = Chain::builder()
        .link(
            Link::post(s.url("/")).body(Body::once(http_body_util::Full::new(Bytes::from_static(
                b"x",
            )))),
        )
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("one-shot"), "{err}");
    assert_eq!(s.request_count(), 0);
}

/// A one-shot stream of `chunks` chunks of `size` bytes each: `a`s, `b`s, ...
fn stream_of(chunks: usize, size: usize) -> Body {
    struct Chunks {
        left: usize,
        done: usize,
        size: usize,
    }
    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            if self.left == 0 {
                return std::task::Poll::Ready(None);
            }
            self.left -= 1;
            let byte = b'a' + (self.done % 26) as u8;
            self.done += 1;
            let chunk = Bytes::from(vec![byte; self.size]);
            std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
        }
    }
    Body::once(Chunks {
        left: chunks,
        done: 0,
        size,
    })
}

#[tokio::test]
async fn a_one_shot_body_passes_whole_to_the_next_link_when_nothing_read_it() {
    let refused = Server::refused();
    let backup = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .link(Link::post(refused.url("/")))
        .link(Link::post(backup.url("/")))
        .build()
        .unwrap();
    let req = http::Request::post("/up")
        .body(stream_of(64, 16 * 1024))
        .unwrap();
    let resp = chain.send(req).await.unwrap();
    assert_eq!(resp.winner(), 1);
    assert_eq!(resp.body().len(), 64 * 16 * 1024);
    assert_eq!(backup.requests()[0].body.len(), 64 * 16 * 1024);
    assert_eq!(&backup.requests()[0].body[..3], b"aaa");
}

#[tokio::test]
async fn a_one_shot_body_read_by_a_failing_link_is_never_sent_again() {
    let failing = Server::start(Behavior::status(503));
    let backup = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .retries(2)
        .backoff(quick_backoff())
        // Hedging, too, stands aside for a one-shot body.
        .hedge(fallback_chain::Hedge::fixed(Duration::from_millis(1)))
        .link(Link::put(failing.url("/")))
        .link(Link::put(backup.url("/")))
        .build()
        .unwrap();
    let req = http::Request::put("/up").body(stream_of(8, 1024)).unwrap();
    let err = chain.send(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotReplayable);
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert!(err.to_string().contains("cannot be sent again"), "{err}");
    assert_eq!(failing.request_count(), 1, "no retry: the stream is spent");
    assert_eq!(
        backup.request_count(),
        0,
        "PUT is idempotent, yet the bytes are gone"
    );
    assert_eq!(err.report().attempts().len(), 1);
}

//! The idle timeout of streamed bodies, on a paused tokio clock over an
//! in-memory transport: a body that stalls after the commit ends with
//! `IdleTimeout` at an exact virtual time, and one that trickles within
//! the bound is never cut, however long it runs.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fallback_chain::transport::{RequestBody, ResponseBody, SendFuture, Transport};
use fallback_chain::{BreakerConfig, BuildError, Chain, IdleTimeout, Link, Outcome, Phase};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A body fed by the test, chunk by chunk; it ends when the sender goes.
struct Fed(mpsc::UnboundedReceiver<Bytes>);

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

/// Answers 200 with a body the test feeds through the returned sender.
struct Feeding(std::sync::Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>);

impl Transport for Feeding {
    fn send(&self, _req: http::Request<RequestBody>) -> SendFuture {
        let rx = self.0.lock().unwrap().take().expect("one request");
        Box::pin(async move { Ok(http::Response::new(ResponseBody::new(Fed(rx)))) })
    }
}

fn feeding() -> (Feeding, mpsc::UnboundedSender<Bytes>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Feeding(std::sync::Mutex::new(Some(rx))), tx)
}

/// Feeds `chunks` at the given virtual times from now, then keeps the
/// body open (stalled) for `then_stall`, then ends it.
fn feed(tx: mpsc::UnboundedSender<Bytes>, chunks: Vec<(u64, &'static str)>, then_stall: u64) {
    tokio::spawn(async move {
        let t = Instant::now();
        for (at, chunk) in chunks {
            tokio::time::sleep_until(t + Duration::from_secs(at)).await;
            let _ = tx.send(Bytes::from_static(chunk.as_bytes()));
        }
        tokio::time::sleep(Duration::from_secs(then_stall)).await;
        drop(tx);
    });
}

fn chain(t: Feeding) -> fallback_chain::ChainBuilder {
    Chain::builder()
        .link(Link::get("http://primary/"))
        .transport(t)
        .breaker(BreakerConfig::new().consecutive_failures(5))
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stalls_after_the_commit_ends_with_an_idle_timeout() {
    let (t, tx) = feeding();
    let c = chain(t).build().unwrap(); // the default: 60 s
    feed(tx, vec![(0, "first "), (30, "second")], 3600);
    let t0 = Instant::now();
    let resp = c.call_streaming().await.unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let err = loop {
        match body.frame().await {
            Some(Ok(f)) => got.extend_from_slice(&f.into_data().unwrap()),
            Some(Err(e)) => break e,
            None => panic!("the stalled body ended as if whole"),
        }
    };
    assert_eq!(got, b"first second");
    // The last byte came at 30 s; the bound is 60 s from there.
    assert_eq!(t0.elapsed().as_secs(), 90, "{:?}", t0.elapsed());
    let idle = err.downcast_ref::<IdleTimeout>().expect("an IdleTimeout");
    assert_eq!(idle.idle(), Duration::from_secs(60));
    assert!(err.to_string().contains("idle timeout"), "{err}");
    assert_eq!(c.health()[0].failures(), 1, "the breaker counts it");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_trickles_within_the_bound_is_never_cut() {
    let (t, tx) = feeding();
    let c = chain(t)
        .idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // Five minutes in all, far past the 10 s per-attempt timeout, but
    // never 60 s without a byte.
    feed(
        tx,
        vec![(0, "a"), (59, "b"), (118, "c"), (177, "d"), (236, "e")],
        59,
    );
    let t0 = Instant::now();
    let body = c.call_streaming().await.unwrap().into_body();
    let whole = body.collect().await.unwrap().to_bytes();
    assert_eq!(&whole[..], b"abcde");
    assert_eq!(t0.elapsed().as_secs(), 295);
    assert_eq!(c.health()[0].failures(), 0);
    assert_eq!(c.health()[0].successes(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_idle_timeout_leaves_a_stalled_body_unbounded() {
    let (t, tx) = feeding();
    let c = chain(t).idle_timeout(None).build().unwrap();
    feed(tx, vec![(0, "x")], 7200);
    let t0 = Instant::now();
    let body = c.call_streaming().await.unwrap().into_body();
    let whole = body.collect().await.unwrap().to_bytes();
    assert_eq!(&whole[..], b"x");
    assert_eq!(t0.elapsed().as_secs(), 7200);
}

#[tokio::test(start_paused = true)]
async fn a_links_own_idle_timeout_wins_over_the_chains() {
    let (t, tx) = feeding();
    let c = Chain::builder()
        .link(Link::get("http://primary/").idle_timeout(Duration::from_secs(5)))
        .transport(t)
        .idle_timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    feed(tx, vec![(0, "x")], 3600);
    let t0 = Instant::now();
    let body = c.call_streaming().await.unwrap().into_body();
    let err = body.collect().await.unwrap_err();
    assert!(err.downcast_ref::<IdleTimeout>().is_some(), "{err}");
    assert_eq!(t0.elapsed().as_secs(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_sink_call_times_out_in_the_body_phase_when_its_body_stalls() {
    let (t, tx) = feeding();
    let c = chain(t)
        .timeout(Duration::from_secs(1000))
        .idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    feed(tx, vec![(0, "partial")], 3600);
    let t0 = Instant::now();
    let mut sink: Vec<u8> = Vec::new();
    let err = c.call_into(&mut sink).await.unwrap_err();
    assert_eq!(t0.elapsed().as_secs(), 5);
    assert!(sink.is_empty(), "a failed attempt's bytes never stay");
    let a = &err.report().attempts()[0];
    assert_eq!(a.outcome(), Outcome::Timeout);
    assert_eq!(a.phase(), Some(Phase::Body));
    assert!(
        a.error().unwrap().contains("idle timeout"),
        "{:?}",
        a.error()
    );
}

#[test]
fn a_zero_idle_timeout_is_refused_when_the_chain_is_built() {
    let err = Chain::builder()
        .link(Link::get("http://primary/"))
        .idle_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::Setting {
                setting: "idle_timeout",
                ..
            }
        ),
        "{err}"
    );
    let err = Chain::builder()
        .link(Link::get("http://primary/").idle_timeout(Duration::ZERO))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("idle_timeout"), "{err}");
}

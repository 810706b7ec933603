//! One test per outcome kind, against servers that misbehave on purpose.
//! Timeouts are short and real; bounds on elapsed time are generous.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fallback_chain::{Chain, Classifier, ErrorKind, Link, Outcome, Phase};
use fallback_chain_testserver::{Behavior, Reply, Server};
use serde::Deserialize;

#[derive(Deserialize, Debug)]
struct Value {
    v: u32,
}

fn two(primary: &Server, backup: &Server) -> fallback_chain::ChainBuilder {
    Chain::builder()
        .link(Link::get(primary.url("/p")).name("primary"))
        .link(Link::get(backup.url("/b")).name("backup"))
}

fn outcomes(r: &fallback_chain::Report) -> Vec<Outcome> {
    r.attempts().iter().map(|a| a.outcome()).collect()
}

#[tokio::test]
async fn connect_refused_falls_back() {
    let primary = Server::refused();
    let backup = Server::start(Behavior::ok("fine"));
    let resp = two(&primary, &backup)
        .build()
        .unwrap()
        .call()
        .await
        .unwrap();
    assert_eq!(outcomes(resp.report()), [Outcome::Connect, Outcome::Ok]);
    assert_eq!(&resp.body()[..], b"fine");
    let err = resp.report().attempts()[0].error().unwrap();
    assert!(err.to_lowercase().contains("refused"), "{err}");
}

#[tokio::test]
async fn black_hole_times_out_in_the_head_phase() {
    let primary = Server::start(Behavior::BlackHole);
    let backup = Server::start(Behavior::ok("fine"));
    let chain = two(&primary, &backup)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let t = Instant::now();
    let resp = chain.call().await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let a = &resp.report().attempts()[0];
    assert_eq!(a.outcome(), Outcome::Timeout);
    assert_eq!(a.phase(), Some(Phase::Head));
    assert!(
        a.elapsed() >= Duration::from_millis(190),
        "{:?}",
        a.elapsed()
    );
    assert_eq!(primary.request_count(), 1);
}

#[tokio::test]
async fn never_reading_server_times_out() {
    let primary = Server::start(Behavior::NeverRead);
    let backup = Server::start(Behavior::ok("fine"));
    let chain = two(&primary, &backup)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(outcomes(resp.report()), [Outcome::Timeout, Outcome::Ok]);
}

#[tokio::test]
async fn stall_mid_body_times_out_in_the_body_phase() {
    let primary = Server::start(Behavior::StallMidBody {
        status: 200,
        body: Bytes::from(vec![b'a'; 1000]),
        sent: 100,
    });
    let backup = Server::start(Behavior::ok("fine"));
    let chain = two(&primary, &backup)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    let a = &resp.report().attempts()[0];
    assert_eq!(
        (a.outcome(), a.phase()),
        (Outcome::Timeout, Some(Phase::Body))
    );
    assert_eq!(&resp.body()[..], b"fine");
}

#[tokio::test]
async fn per_link_timeout_overrides_the_chain() {
    let slow = Server::start(
        Reply::new(200)
            .body("slow")
            .delay(Duration::from_millis(400)),
    );
    let backup = Server::start(Behavior::ok("fine"));
    let chain = Chain::builder()
        .timeout(Duration::from_millis(100))
        .link(Link::get(slow.url("/")).timeout(Duration::from_secs(5)))
        .link(Link::get(backup.url("/")))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(&resp.body()[..], b"slow");
    assert_eq!(backup.request_count(), 0);
}

#[tokio::test]
async fn deadline_bounds_the_whole_call() {
    let a = Server::start(Behavior::BlackHole);
    let b = Server::start(Behavior::BlackHole);
    let c = Server::start(Behavior::ok("too late"));
    let chain = Chain::builder()
        .links([
            Link::get(a.url("/")),
            Link::get(b.url("/")),
            Link::get(c.url("/")),
        ])
        .timeout(Duration::from_millis(200))
        .deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let t = Instant::now();
    let err = chain.call().await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(err.kind(), ErrorKind::Deadline);
    assert!(err.is_timeout());
    // The second attempt was cut to the ~100 ms left; the third never ran.
    assert_eq!(err.report().attempts().len(), 2);
    assert!(err.report().attempts()[1].elapsed() < Duration::from_millis(200));
    assert_eq!(c.request_count(), 0);
}

#[tokio::test]
async fn reset_after_request_is_io() {
    let primary = Server::start(Behavior::Reset);
    let backup = Server::start(Behavior::ok("fine"));
    let resp = two(&primary, &backup)
        .build()
        .unwrap()
        .call()
        .await
        .unwrap();
    assert_eq!(outcomes(resp.report()), [Outcome::Io, Outcome::Ok]);
}

#[tokio::test]
async fn truncated_body_is_io_and_never_reaches_the_caller() {
    let primary = Server::start(Behavior::Truncate {
        status: 200,
        body: Bytes::from_static(b"PARTIAL-"),
        declared: 100,
    });
    let backup = Server::start(Behavior::ok("whole"));
    let chain = two(&primary, &backup).build().unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(outcomes(resp.report()), [Outcome::Io, Outcome::Ok]);
    assert_eq!(&resp.body()[..], b"whole");

    // Streaming: the sink is reset, so it holds the winner's bytes only.
    let mut sink = Vec::new();
    chain.call_into(&mut sink).await.unwrap();
    assert_eq!(sink, b"whole");
}

#[tokio::test]
async fn huge_body_is_too_large() {
    for chunked in [false, true] {
        let primary = Server::start(Behavior::Huge {
            status: 200,
            len: 4 << 20,
            chunked,
        });
        let backup = Server::start(Behavior::ok("small"));
        let chain = two(&primary, &backup).max_body(1 << 20).build().unwrap();
        let resp = chain.call().await.unwrap();
        assert_eq!(
            outcomes(resp.report()),
            [Outcome::TooLarge, Outcome::Ok],
            "chunked: {chunked}"
        );
        let mut sink = Vec::new();
        chain.call_into(&mut sink).await.unwrap();
        assert_eq!(sink, b"small");
    }
}

#[tokio::test]
async fn body_at_the_limit_is_accepted() {
    let primary = Server::start(Behavior::Huge {
        status: 200,
        len: 1 << 20,
        chunked: true,
    });
    let chain = Chain::builder()
        .link(Link::get(primary.url("/")))
        .max_body(1 << 20)
        .build()
        .unwrap();
    assert_eq!(chain.call().await.unwrap().body().len(), 1 << 20);
}

#[tokio::test]
async fn invalid_json_is_decode_and_falls_back() {
    let primary = Server::start(Behavior::invalid_json());
    let backup = Server::start(Behavior::ok_json(r#"{"v": 7}"#));
    let chain = two(&primary, &backup).build().unwrap();
    let resp = chain.call_json::<Value>().await.unwrap();
    assert_eq!(resp.body().v, 7);
    assert_eq!(outcomes(resp.report()), [Outcome::Decode, Outcome::Ok]);
    // The untyped call takes the same bytes as a success.
    assert_eq!(chain.call().await.unwrap().winner(), 0);
}

#[tokio::test]
async fn redirect_to_self_is_a_status_that_falls_back() {
    let primary = Server::start(Behavior::RedirectSelf);
    let backup = Server::start(Behavior::ok("fine"));
    let resp = two(&primary, &backup)
        .build()
        .unwrap()
        .call()
        .await
        .unwrap();
    assert_eq!(
        resp.report().attempts()[0].status().map(|s| s.as_u16()),
        Some(302)
    );
    assert_eq!(primary.request_count(), 1);
}

#[tokio::test]
async fn final_status_stops_the_chain() {
    let primary = Server::start(Reply::new(404).body("no such order"));
    let backup = Server::start(Behavior::ok("fine"));
    let chain = two(&primary, &backup)
        .classifier(Classifier::server_errors())
        .build()
        .unwrap();
    let err = chain.call().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FinalStatus);
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    assert_eq!(err.body().map(|b| &b[..]), Some(&b"no such order"[..]));
    assert_eq!(backup.request_count(), 0);
    assert_eq!(outcomes(err.report()), [Outcome::Status]);
}

#[tokio::test]
async fn failed_bodies_are_drained_so_connections_are_reused() {
    let primary = Server::start(Reply::new(503).body(vec![b'e'; 4096]));
    let backup = Server::start(Behavior::ok("fine"));
    let chain = two(&primary, &backup).build().unwrap();
    for _ in 0..5 {
        chain.call().await.unwrap();
    }
    assert_eq!(primary.request_count(), 5);
    assert_eq!(primary.connection_count(), 1);
    assert_eq!(backup.connection_count(), 1);
}

#[tokio::test]
async fn status_with_retry_after_is_recorded() {
    let primary = Server::start(Behavior::retry_after(503, "1"));
    let backup = Server::start(Behavior::ok("fine"));
    let resp = two(&primary, &backup)
        .build()
        .unwrap()
        .call()
        .await
        .unwrap();
    assert_eq!(outcomes(resp.report()), [Outcome::Status, Outcome::Ok]);
}

#[tokio::test]
async fn fail_first_then_succeed() {
    let flaky = Server::start(Behavior::fail_first(
        2,
        Behavior::status(500),
        Behavior::ok("up"),
    ));
    let chain = Chain::builder()
        .link(Link::get(flaky.url("/")))
        .build()
        .unwrap();
    assert_eq!(
        chain.call().await.unwrap_err().status().map(|s| s.as_u16()),
        Some(500)
    );
    assert!(chain.call().await.is_err());
    assert_eq!(&chain.call().await.unwrap().body()[..], b"up");
}

// ---- the re-send rule ----

#[tokio::test]
async fn post_to_a_black_hole_is_not_re_sent() {
    let primary = Server::start(Behavior::BlackHole);
    let backup = Server::start(Behavior::ok("fine"));
    let chain = Chain::builder()
        .link(Link::post(primary.url("/orders")).body("order-1"))
        .link(Link::post(backup.url("/orders")).body("order-1"))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = chain.call().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MaybeProcessed);
    assert!(err.may_have_been_processed());
    let msg = err.to_string();
    assert!(
        msg.contains("Idempotency-Key") && msg.contains("idempotent"),
        "{msg}"
    );
    assert_eq!(primary.request_count(), 1);
    assert_eq!(backup.request_count(), 0);
}

#[tokio::test]
async fn post_with_idempotency_key_is_re_sent() {
    let primary = Server::start(Behavior::BlackHole);
    let backup = Server::start(Behavior::ok("fine"));
    let chain = Chain::builder()
        .header("Idempotency-Key", "k-42")
        .link(Link::post(primary.url("/orders")).body("order-1"))
        .link(Link::post(backup.url("/orders")).body("order-1"))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    chain.call().await.unwrap();
    let got = backup.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].body[..], b"order-1");
}

#[tokio::test]
async fn post_marked_idempotent_is_re_sent_after_reset() {
    let primary = Server::start(Behavior::Reset);
    let backup = Server::start(Behavior::ok("fine"));
    let chain = Chain::builder()
        .link(Link::post(primary.url("/")).idempotent(true))
        .link(Link::post(backup.url("/")))
        .build()
        .unwrap();
    chain.call().await.unwrap();
    assert_eq!(backup.request_count(), 1);
}

#[tokio::test]
async fn post_after_reset_is_not_re_sent() {
    let primary = Server::start(Behavior::Reset);
    let backup = Server::start(Behavior::ok("fine"));
    let chain = Chain::builder()
        .link(Link::post(primary.url("/")))
        .link(Link::post(backup.url("/")))
        .build()
        .unwrap();
    let err = chain.call().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MaybeProcessed);
    assert_eq!(backup.request_count(), 0);
}

#[tokio::test]
async fn post_to_a_refused_port_goes_to_the_backup() {
    let primary = Server::refused();
    let backup = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .link(Link::post(primary.url("/")).json(&serde_json::json!({"a": 1})))
        .link(Link::post(backup.url("/")).json(&serde_json::json!({"a": 1})))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(&resp.body()[..], br#"{"a":1}"#);
    assert_eq!(backup.request_count(), 1);
}

#[tokio::test]
async fn post_answered_2xx_with_garbage_is_processed_not_re_sent() {
    let primary = Server::start(Behavior::invalid_json());
    let backup = Server::start(Behavior::ok_json(r#"{"v": 1}"#));
    let chain = Chain::builder()
        .link(Link::post(primary.url("/")).name("primary").body("x"))
        .link(Link::post(backup.url("/")).body("x"))
        .build()
        .unwrap();
    let err = chain.call_json::<Value>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Processed);
    let msg = err.to_string();
    assert!(msg.contains("primary") && msg.contains("200"), "{msg}");
    assert_eq!(backup.request_count(), 0);
    assert_eq!(outcomes(err.report()), [Outcome::Decode]);
}

#[tokio::test]
async fn post_with_truncated_2xx_is_processed_not_re_sent() {
    let primary = Server::start(Behavior::Truncate {
        status: 201,
        body: Bytes::from_static(b"{"),
        declared: 10,
    });
    let backup = Server::start(Behavior::ok("fine"));
    let chain = Chain::builder()
        .link(Link::post(primary.url("/")))
        .link(Link::post(backup.url("/")))
        .build()
        .unwrap();
    let mut sink = Vec::new();
    let err = chain.call_into(&mut sink).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Processed);
    assert!(
        sink.is_empty(),
        "no byte of a failed attempt reaches the sink"
    );
    assert_eq!(backup.request_count(), 0);
}

#[tokio::test]
async fn post_answered_500_is_re_sent() {
    let primary = Server::start(Behavior::status(500));
    let backup = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .link(Link::patch(primary.url("/")).body("delta"))
        .link(Link::patch(backup.url("/")).body("delta"))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(&resp.body()[..], b"delta");
}

#[tokio::test]
async fn binary_body_reaches_every_link_byte_identical() {
    let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let a = Server::start(Behavior::status(503));
    let b = Server::start(Behavior::status(500));
    let c = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .links([a.url("/"), b.url("/"), c.url("/")].map(|u| Link::put(u).body(body.clone())))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(&resp.body()[..], &body[..]);
    for s in [&a, &b, &c] {
        assert_eq!(&s.requests()[0].body[..], &body[..]);
    }
}

#[tokio::test]
async fn head_with_a_large_content_length_is_not_too_large() {
    let server = Server::start(
        Reply::new(200)
            .header("x-size", "big")
            .body(vec![b'x'; 4096]),
    );
    let chain = Chain::builder()
        .link(Link::head(server.url("/")))
        .max_body(10)
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert!(resp.body().is_empty());
    assert_eq!(resp.headers()["content-length"], "4096");
}

#[tokio::test]
async fn huge_durations_are_accepted_without_overflow() {
    let down = Server::start(Behavior::status(503));
    let up = Server::start(Behavior::ok("fine"));
    let chain = Chain::builder()
        .timeout(Duration::MAX)
        .deadline(Duration::MAX)
        .retry_after_cap(Duration::MAX)
        .breaker(
            fallback_chain::BreakerConfig::new()
                .consecutive_failures(1)
                .break_duration(Duration::MAX)
                .max_break_duration(Duration::MAX),
        )
        .link(Link::get(down.url("/")))
        .link(Link::get(up.url("/")))
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(&chain.call().await.unwrap().body()[..], b"fine");
    }
    assert_eq!(
        down.request_count(),
        1,
        "the breaker opened for a very long time"
    );
}

#[tokio::test]
async fn the_error_s_source_chain_reaches_the_io_error() {
    let refused = Server::refused();
    let chain = Chain::builder()
        .link(Link::get(refused.url("/")))
        .build()
        .unwrap();
    let err = chain.call().await.unwrap_err();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
    let mut io = None;
    while let Some(e) = cur {
        if let Some(i) = e.downcast_ref::<std::io::Error>() {
            io = Some(i.kind());
        }
        cur = e.source();
    }
    assert_eq!(io, Some(std::io::ErrorKind::ConnectionRefused));

    // An answer has no underlying cause.
    let down = Server::start(Behavior::status(503));
    let chain = Chain::builder()
        .link(Link::get(down.url("/")))
        .build()
        .unwrap();
    let err = chain.call().await.unwrap_err();
    assert!(std::error::Error::source(&err).is_none());
}

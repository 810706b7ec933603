//! gRPC through the library: real tonic servers on loopback, and calls
//! sent with `Chain::send_streaming` as a proxy sends them.

use std::time::Duration;

use bytes::Bytes;
use fallback_chain::grpc::{self, Code};
use fallback_chain::{BreakerConfig, BreakerState, Chain, Classifier, ErrorKind, Link, Outcome};
use fallback_chain_testserver::grpc::{GrpcServer, Mode, Msg};
use http_body_util::BodyExt;
use prost::Message;

/// One gRPC message, length-prefixed.
fn frame(text: &str) -> Bytes {
    let msg = Msg::new(text).encode_to_vec();
    let mut out = vec![0];
    out.extend((msg.len() as u32).to_be_bytes());
    out.extend(msg);
    out.into()
}

fn call(method: &str, text: &str) -> http::Request<Bytes> {
    http::Request::post(method)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame(text))
        .unwrap()
}

/// The messages of a body, and its trailers.
async fn read(body: fallback_chain::transport::ResponseBody) -> (Vec<String>, http::HeaderMap) {
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let mut bytes = collected.to_bytes();
    let mut texts = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let msg = Msg::decode(&bytes[5..5 + len]).unwrap();
        texts.push(msg.text);
        bytes = bytes.slice(5 + len..);
    }
    (texts, trailers)
}

fn chain_of(servers: &[&GrpcServer]) -> fallback_chain::ChainBuilder {
    Chain::builder().links(servers.iter().map(|s| {
        Link::post(s.url())
            .name(s.addr().to_string())
            .http2_prior_knowledge(true)
    }))
}

#[tokio::test]
async fn a_trailers_only_unavailable_falls_over_and_opens_the_breaker() {
    let primary = GrpcServer::start("primary", Mode::Fail(14, "down for now".into()));
    let backup = GrpcServer::start("backup", Mode::Serve);
    let chain = chain_of(&[&primary, &backup])
        .breaker(BreakerConfig::new().consecutive_failures(1))
        .build()
        .unwrap();

    let resp = chain
        .send_streaming(call("/test.Echo/Say", "hi"))
        .await
        .unwrap();
    assert_eq!(resp.winner(), 1);
    let attempts = resp.report().attempts().to_vec();
    let (texts, trailers) = read(resp.into_body()).await;
    assert_eq!(texts, ["backup: hi"]);
    assert_eq!(
        grpc::Status::from_headers(&trailers).unwrap().code(),
        Code::OK
    );

    assert_eq!(attempts[0].outcome(), Outcome::Grpc);
    let status = attempts[0].grpc_status().unwrap();
    assert_eq!(status.code(), Code::UNAVAILABLE);
    assert_eq!(status.message(), "down for now");
    let json = attempts[0].to_json();
    assert_eq!(json["outcome"], "grpc");
    assert_eq!(json["grpc_status"], 14);
    assert_eq!(json["grpc_message"], "down for now");
    assert!(attempts[1].to_json().get("grpc_status").is_none());
    assert_eq!(chain.health()[0].state(), BreakerState::Open);

    // The open primary is skipped: the next call goes straight on.
    let resp = chain
        .send_streaming(call("/test.Echo/Say", "again"))
        .await
        .unwrap();
    assert_eq!(resp.report().attempts()[0].outcome(), Outcome::Skipped);
    assert_eq!(primary.calls().len(), 1);
}

#[tokio::test]
async fn another_code_is_final_and_comes_back_as_it_is() {
    let primary = GrpcServer::start("primary", Mode::Fail(5, "no such order".into()));
    let backup = GrpcServer::start("backup", Mode::Serve);
    let chain = chain_of(&[&primary, &backup]).build().unwrap();

    let e = chain
        .send_streaming(call("/test.Echo/Say", "hi"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FinalStatus);
    let status = e.grpc_status().unwrap();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NOT_FOUND, "no such order")
    );
    assert!(e.to_string().contains("NOT_FOUND"), "{e}");
    assert_eq!(e.report().attempts()[0].outcome(), Outcome::Status);
    assert!(backup.calls().is_empty());
    // A live server's answer: the breaker does not count it.
    assert_eq!(chain.health()[0].failures(), 0);
}

#[tokio::test]
async fn the_grpc_set_is_the_callers_to_choose() {
    let primary = GrpcServer::start("primary", Mode::Fail(8, "quota".into()));
    let backup = GrpcServer::start("backup", Mode::Serve);
    let chain = chain_of(&[&primary, &backup])
        .classifier(Classifier::default().grpc([Code::UNAVAILABLE, Code::RESOURCE_EXHAUSTED]))
        .build()
        .unwrap();
    let resp = chain
        .send_streaming(call("/test.Echo/Say", "hi"))
        .await
        .unwrap();
    assert_eq!(resp.winner(), 1);

    // And without RESOURCE_EXHAUSTED in the set, it is final.
    let chain = chain_of(&[&primary, &backup]).build().unwrap();
    let e = chain
        .send_streaming(call("/test.Echo/Say", "hi"))
        .await
        .unwrap_err();
    assert_eq!(e.grpc_status().unwrap().code(), Code::RESOURCE_EXHAUSTED);
}

#[tokio::test]
async fn each_attempt_is_sent_the_time_left_as_grpc_timeout() {
    let primary = GrpcServer::start("primary", Mode::Fail(14, String::new()));
    let backup = GrpcServer::start("backup", Mode::Serve);
    let chain = chain_of(&[&primary, &backup]).build().unwrap();
    let mut req = call("/test.Echo/Say", "hi");
    req.headers_mut()
        .insert("grpc-timeout", "2S".parse().unwrap());
    chain.send_streaming(req).await.unwrap();
    for server in [&primary, &backup] {
        let sent = server.calls()[0].timeout.clone().expect("a grpc-timeout");
        let left = grpc::parse_timeout(&sent).unwrap();
        assert!(left <= Duration::from_secs(2), "{sent}");
        assert!(left > Duration::from_millis(500), "{sent}");
    }
    let first = grpc::parse_timeout(primary.calls()[0].timeout.as_deref().unwrap()).unwrap();
    let second = grpc::parse_timeout(backup.calls()[0].timeout.as_deref().unwrap()).unwrap();
    assert!(
        second < first,
        "the backup is sent what is left: {second:?} < {first:?}"
    );

    // The chain's own deadline, when it is the shorter.
    let chain = chain_of(&[&backup])
        .deadline(Duration::from_millis(400))
        .build()
        .unwrap();
    let mut req = call("/test.Echo/Say", "hi");
    req.headers_mut()
        .insert("grpc-timeout", "2S".parse().unwrap());
    chain.send_streaming(req).await.unwrap();
    let sent = backup.calls()[1].timeout.clone().unwrap();
    assert!(
        grpc::parse_timeout(&sent).unwrap() <= Duration::from_millis(400),
        "{sent}"
    );

    // No deadline anywhere: no grpc-timeout is made up.
    let chain = chain_of(&[&backup]).build().unwrap();
    chain
        .send_streaming(call("/test.Echo/Say", "hi"))
        .await
        .unwrap();
    assert_eq!(backup.calls()[2].timeout, None);
}

#[tokio::test]
async fn a_grpc_timeout_bounds_the_whole_call() {
    let hangs = GrpcServer::start("hangs", Mode::Hang);
    let chain = chain_of(&[&hangs]).build().unwrap();
    let mut req = call("/test.Echo/Say", "hi");
    req.headers_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let started = std::time::Instant::now();
    let e = chain.send_streaming(req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Deadline);
    assert!(e.is_timeout());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_stream_that_fails_in_its_trailers_counts_against_its_link() {
    let primary = GrpcServer::start("primary", Mode::StreamThenFail(2, 14));
    let backup = GrpcServer::start("backup", Mode::Serve);
    let chain = chain_of(&[&primary, &backup])
        .breaker(BreakerConfig::new().consecutive_failures(1))
        .build()
        .unwrap();

    let resp = chain
        .send_streaming(call("/test.Echo/Count", "5"))
        .await
        .unwrap();
    assert_eq!(resp.winner(), 0, "the head was a success: committed");
    let (texts, trailers) = read(resp.into_body()).await;
    assert_eq!(texts, ["primary 0", "primary 1"]);
    let status = grpc::Status::from_headers(&trailers).unwrap();
    assert_eq!(
        status.code(),
        Code::UNAVAILABLE,
        "the trailers reach the caller unchanged"
    );
    assert_eq!(chain.health()[0].state(), BreakerState::Open);

    let resp = chain
        .send_streaming(call("/test.Echo/Count", "2"))
        .await
        .unwrap();
    assert_eq!(resp.winner(), 1);
    let (texts, _) = read(resp.into_body()).await;
    assert_eq!(texts, ["backup 0", "backup 1"]);
}

#[tokio::test]
async fn a_stream_that_ends_ok_counts_as_a_success() {
    let primary = GrpcServer::start("primary", Mode::Serve);
    let chain = chain_of(&[&primary])
        .breaker(BreakerConfig::new().consecutive_failures(1))
        .build()
        .unwrap();
    let resp = chain
        .send_streaming(call("/test.Echo/Count", "3"))
        .await
        .unwrap();
    let (texts, trailers) = read(resp.into_body()).await;
    assert_eq!(texts.len(), 3);
    assert_eq!(
        grpc::Status::from_headers(&trailers).unwrap().code(),
        Code::OK
    );
    let health = &chain.health()[0];
    assert_eq!(
        (health.state(), health.successes(), health.failures()),
        (BreakerState::Closed, 1, 0)
    );
}

#[tokio::test]
async fn the_grpc_health_check_readmits_only_a_serving_link() {
    let primary = GrpcServer::start("primary", Mode::Fail(14, "down".into()));
    primary.set_serving(false);
    let backup = GrpcServer::start("backup", Mode::Serve);
    let chain = Chain::builder()
        .link(
            Link::post(primary.url())
                .http2_prior_knowledge(true)
                .grpc_health_probe("test.Echo"),
        )
        .link(Link::post(backup.url()).http2_prior_knowledge(true))
        .breaker(
            BreakerConfig::new()
                .consecutive_failures(1)
                .break_duration(Duration::from_millis(100))
                .max_break_duration(Duration::from_millis(200)),
        )
        .sticky(true)
        .build()
        .unwrap();
    let winner = |chain: Chain| async move {
        chain
            .send_streaming(call("/test.Echo/Say", "hi"))
            .await
            .unwrap()
            .winner()
    };
    assert_eq!(winner(chain.clone()).await, 1);
    // The primary would answer calls now, but its health check says
    // NOT_SERVING: it stays out.
    primary.set_mode(Mode::Serve);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(winner(chain.clone()).await, 1);
    }
    let checks = |s: &GrpcServer| {
        s.calls()
            .iter()
            .filter(|c| c.path == "/grpc.health.v1.Health/Check")
            .count()
    };
    assert!(checks(&primary) >= 1, "{:?}", primary.calls());
    let says = primary
        .calls()
        .iter()
        .filter(|c| c.path == "/test.Echo/Say")
        .count();
    assert_eq!(says, 1, "only the first call reached the primary");

    primary.set_serving(true);
    let readmitted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if winner(chain.clone()).await == 0 {
                break;
            }
        }
    })
    .await;
    assert!(
        readmitted.is_ok(),
        "a SERVING health check re-admits the primary"
    );
}

/// A TCP relay in front of `to` that counts the connections it accepts.
async fn counting_relay(
    to: std::net::SocketAddr,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (format!("http://{addr}"), count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_h2c_calls_share_one_connection_from_the_start() {
    let server = GrpcServer::start("one", Mode::Serve);
    let (url, connections) = counting_relay(server.addr()).await;
    let chain = Chain::builder()
        .link(Link::post(url).http2_prior_knowledge(true))
        .build()
        .unwrap();
    // 32 calls at once on a cold pool: one opens the connection, the
    // others wait for it instead of opening their own.
    let calls: Vec<_> = (0..32)
        .map(|i| {
            let chain = chain.clone();
            tokio::spawn(async move {
                let resp = chain
                    .send_streaming(call("/test.Echo/Say", &format!("hi {i}")))
                    .await
                    .unwrap();
                read(resp.into_body()).await
            })
        })
        .collect();
    for c in calls {
        let (texts, trailers) = c.await.unwrap();
        assert_eq!(texts.len(), 1);
        assert_eq!(trailers["grpc-status"], "0");
    }
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one HTTP/2 connection for every call"
    );
}

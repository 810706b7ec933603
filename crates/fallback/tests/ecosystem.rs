//! tower and metrics, and secrets that never leak through metrics.
//! (Tracing output is tested in `tracing_output.rs`, alone in its binary,
//! so no other test's threads race its subscriber.)

#[allow(unused_imports)]
use fallback_chain::{Chain, ErrorKind, Link, Outcome};
#[allow(unused_imports)]
use fallback_chain_testserver::{Behavior, Server};

#[cfg(feature = "metrics")]
const SECRETS: [&str; 5] = [
    "hunter2",
    "s3cr3t-token",
    "cookie-value",
    "proxy-pass",
    "qs-secret",
];

#[cfg(feature = "metrics")]
fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} leaks {s:?}:\n{text}");
    }
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_count_attempts_latency_breakers_and_budget() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let refused = Server::refused();
    let up = Server::start(Behavior::ok("fine"));
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let chain = Chain::builder()
                .breaker(fallback_chain::BreakerConfig::new().consecutive_failures(2))
                .link(
                    Link::get(refused.url("/").replace("http://", "http://u:hunter2@"))
                        .name("primary"),
                )
                .link(Link::get(up.url("/")).name("backup"))
                .build()
                .unwrap();
            for _ in 0..3 {
                chain.call().await.unwrap();
            }
            let starved = Chain::builder()
                .retries(2)
                .retry_budget(
                    fallback_chain::RetryBudget::new()
                        .ratio(0.0)
                        .min_per_sec(0.0),
                )
                .link(Link::get(refused.url("/")))
                .build()
                .unwrap();
            let _ = starved.call().await;
        });
    });
    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.key().name(), labels.join(","));
        assert_clean("metric", &name);
        seen.insert(name, value);
    }
    let get = |n: &str| {
        seen.get(n)
            .unwrap_or_else(|| panic!("{n} missing from {:?}", seen.keys()))
    };
    assert_eq!(
        get("fallback_attempts_total{link=primary,outcome=connect}"),
        &DebugValue::Counter(2)
    );
    assert_eq!(
        get("fallback_attempts_total{link=primary,outcome=skipped}"),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        get("fallback_attempts_total{link=backup,outcome=ok}"),
        &DebugValue::Counter(3)
    );
    assert!(
        matches!(get("fallback_attempt_duration_seconds{link=backup}"), DebugValue::Histogram(h) if h.len() == 3)
    );
    assert_eq!(
        get("fallback_breaker_state{link=primary}"),
        &DebugValue::Gauge(2.0.into())
    );
    assert_eq!(
        get("fallback_budget_denied_total{}"),
        &DebugValue::Counter(1)
    );
}

#[cfg(feature = "tower-0_3")]
mod tower_tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use tower::{Service, ServiceBuilder, ServiceExt};

    #[tokio::test]
    async fn the_chain_is_a_tower_service_in_a_stack() {
        let down = Server::start(Behavior::status(502));
        let up = Server::start(Behavior::Echo);
        let chain = Chain::builder()
            .link(Link::get(down.url("/v1")))
            .link(Link::get(up.url("/v1")))
            .header("X-From", "chain")
            .build()
            .unwrap();
        let mut svc = ServiceBuilder::new()
            .concurrency_limit(4)
            .timeout(std::time::Duration::from_secs(5))
            .service(chain);
        let req = http::Request::put("/orders/7?fields=all")
            .header("X-Trace", "t-1")
            .body(http_body_util::Full::new(Bytes::from_static(
                b"{\"qty\":2}",
            )))
            .unwrap();
        let resp = ServiceExt::<http::Request<Full<Bytes>>>::ready(&mut svc)
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-echo-method"], "PUT");
        assert_eq!(resp.headers()["x-echo-path"], "/v1/orders/7?fields=all");
        let got = &up.requests()[0];
        assert_eq!(got.header("x-trace"), Some("t-1"));
        assert_eq!(got.header("x-from"), Some("chain"));
        assert_eq!(&got.body[..], b"{\"qty\":2}");
        assert_eq!(down.requests()[0].path, "/v1/orders/7?fields=all");
    }

    #[tokio::test]
    async fn a_post_through_the_service_keeps_the_re_send_rule() {
        let hole = Server::start(Behavior::BlackHole);
        let up = Server::start(Behavior::Echo);
        let mut chain = Chain::builder()
            .timeout(std::time::Duration::from_millis(200))
            .link(Link::get(hole.url("/")))
            .link(Link::get(up.url("/")))
            .build()
            .unwrap();
        let req = http::Request::post("/pay")
            .body(http_body_util::Full::new(Bytes::from_static(b"1")))
            .unwrap();
        let err = ServiceExt::<http::Request<Full<Bytes>>>::ready(&mut chain)
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MaybeProcessed);
        assert_eq!(up.request_count(), 0);
    }

    #[tokio::test]
    async fn any_tower_service_can_be_a_link_s_transport() {
        use fallback_chain::tower::TowerTransport;
        use fallback_chain::transport::RequestBody;
        // A plain tower service that answers from memory, and one that fails.
        let local = tower::service_fn(|req: http::Request<RequestBody>| async move {
            let body = format!("local answer to {}", req.uri().path());
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
        });
        let broken = tower::service_fn(|_req: http::Request<RequestBody>| async move {
            Err::<http::Response<Full<Bytes>>, _>(std::io::Error::other("backend exploded"))
        });
        let chain = Chain::builder()
            .link(Link::get("http://broken.invalid/x").transport(TowerTransport::new(broken)))
            .link(Link::get("http://local.invalid/y").transport(TowerTransport::new(local)))
            .build()
            .unwrap();
        let resp = chain.call().await.unwrap();
        assert_eq!(&resp.body()[..], b"local answer to /y");
        let a = &resp.report().attempts()[0];
        assert_eq!(a.outcome(), Outcome::Io);
        assert!(a.error().unwrap().contains("backend exploded"));
    }

    #[tokio::test]
    async fn the_layer_wraps_a_service_in_a_chain() {
        use fallback_chain::tower::FallbackLayer;
        use fallback_chain::transport::RequestBody;
        use tower::Layer;
        // One inner service for every link: it fails for the primary host.
        let inner = tower::service_fn(|req: http::Request<RequestBody>| async move {
            if req.uri().host() == Some("primary.internal") {
                return Err(std::io::Error::other("primary is down"));
            }
            let body = format!("{} answered", req.uri().host().unwrap_or("?"));
            Ok(http::Response::new(Full::new(Bytes::from(body))))
        });
        let template = Chain::builder()
            .link(Link::get("http://primary.internal/x"))
            .link(Link::get("http://backup.internal/x"))
            .build()
            .unwrap();
        let chain = FallbackLayer::new(template).layer(inner);
        let resp = chain.call().await.unwrap();
        assert_eq!(&resp.body()[..], b"backup.internal answered");
        assert_eq!(resp.report().attempts()[0].outcome(), Outcome::Io);
    }
}

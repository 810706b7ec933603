//! The admin listener: liveness, readiness, the upstreams' health, and
//! Prometheus metrics.

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use fallback_chain::transport::ResponseBody;
use fallback_chain::BreakerState;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use crate::Proxy;

pub(crate) async fn serve(listener: tokio::net::TcpListener, proxy: Proxy) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let proxy = proxy.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(answer(&proxy, req.uri().path())) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(tcp), svc)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<ResponseBody> {
    let mut out = Response::new(ResponseBody::full(body.to_string()));
    *out.status_mut() = status;
    out.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}

fn answer(proxy: &Proxy, path: &str) -> Response<ResponseBody> {
    match path {
        "/healthz" => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        "/readyz" if proxy.shared.draining.load(Ordering::Relaxed) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "draining"}),
        ),
        "/readyz" => json(StatusCode::OK, serde_json::json!({"status": "ready"})),
        "/metrics" => match proxy.metrics() {
            Some(m) => {
                // Every upstream's state, changed lately or not.
                for up in &proxy.live().upstreams {
                    let state = match up.breaker.state() {
                        BreakerState::Closed => 0.0,
                        BreakerState::HalfOpen => 1.0,
                        _ => 2.0,
                    };
                    metrics::gauge!("fallback_breaker_state", "link" => up.name.clone()).set(state);
                }
                let mut out = Response::new(ResponseBody::full(m.render()));
                out.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                out
            }
            None => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "no metrics"}),
            ),
        },
        "/upstreams" => {
            let live = proxy.live();
            let list: Vec<_> = live
                .upstreams
                .iter()
                .enumerate()
                .map(|(i, up)| {
                    // The counts, through any route that uses the upstream:
                    // they all share its breaker.
                    let health = live.routes.iter().find_map(|r| {
                        let link = r.upstreams.iter().position(|&u| u == i)?;
                        r.chain.health().into_iter().nth(link)
                    });
                    serde_json::json!({
                        "name": up.name,
                        "url": up.shown,
                        "state": up.breaker.state().as_str(),
                        "successes": health.as_ref().map(|h| h.successes()),
                        "failures": health.as_ref().map(|h| h.failures()),
                        "times_opened": health.as_ref().map(|h| h.times_opened()),
                    })
                })
                .collect();
            json(StatusCode::OK, serde_json::Value::Array(list))
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not found"}),
        ),
    }
}

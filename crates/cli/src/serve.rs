//! `fallback serve`: a local failover proxy. Plain HTTP/1.1 or h2c in, the
//! chain out, with breakers and budgets shared by every request.
//!
//! A thin user of the library: each request goes through
//! `Chain::send_streaming`, which commits at the winner's head and streams
//! its body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use fallback_chain::transport::ResponseBody;
use fallback_chain::{BreakerConfig, Chain, Classifier, ErrorKind, Hedge, Link, Outcome};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;

use crate::print::{errln, outln};
use crate::{units, Usage};

/// Serve the chain as a local failover proxy: plain HTTP to ADDR, each
/// request tried along the upstreams in order (breakers on, sticky).
#[derive(Parser, Debug)]
pub struct ServeArgs {
    /// Upstream base URLs, in order; the request's path and query are
    /// appended.
    #[arg(value_name = "URL", required = true)]
    urls: Vec<String>,
    /// Where to listen (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Per-attempt timeout [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    timeout: Option<Duration>,
    /// Bound on each request's whole failover [default: none].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    deadline: Option<Duration>,
    /// Extra tries on the same upstream before moving on [default: 0].
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// Start the next upstream when the current one has not answered
    /// within DUR.
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    hedge: Option<Duration>,
    /// Statuses that fall back [default: 5xx,408,429: a proxy passes
    /// redirects, 304 and client errors through].
    #[arg(long, value_name = "SPEC")]
    fail_on: Option<String>,
    /// Allow re-sending a POST/PATCH whose outcome is unknown.
    #[arg(long)]
    idempotent: bool,
    /// Bound on establishing a connection [default: 2s].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    connect_timeout: Option<Duration>,
    /// Request bodies up to SIZE are buffered, so they can be re-sent.
    #[arg(long, value_name = "SIZE", value_parser = units::size, default_value = "1MiB")]
    replay_buffer: u64,
    /// How long requests in flight may finish after SIGTERM or SIGINT.
    #[arg(long, value_name = "DUR", value_parser = units::duration, default_value = "15s")]
    drain: Duration,
    /// Runtime worker threads [default: the number of cores].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Also serve the admin endpoints here: /healthz, /readyz, /upstreams,
    /// /metrics (Prometheus text).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// One JSON line per request on stderr.
    #[arg(long, value_name = "FORMAT", default_value = "none")]
    access_log: AccessLog,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum AccessLog {
    Json,
    None,
}

/// What every request shares.
struct Proxy {
    chain: Chain,
    /// `1.1 fallback-XXXXXX`: this process in `Via`, to detect loops.
    via: HeaderValue,
    replay_buffer: u64,
    access_log: bool,
    /// Set once shutdown has begun: /readyz answers 503.
    draining: std::sync::atomic::AtomicBool,
    /// Renders /metrics, when there is an admin listener.
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

pub fn run(args: ServeArgs) -> Result<ExitCode, Usage> {
    let mut b = Chain::builder()
        .breaker(BreakerConfig::default())
        .sticky(true)
        .classifier(match &args.fail_on {
            Some(spec) => Classifier::parse(spec).map_err(|e| Usage(format!("--fail-on: {e}")))?,
            None => Classifier::server_errors(),
        });
    if let Some(t) = args.timeout {
        b = b.timeout(t);
    }
    b = b.deadline(args.deadline);
    if let Some(r) = args.retries {
        b = b.retries(r);
    }
    if let Some(h) = args.hedge {
        b = b.hedge(Hedge::fixed(h));
    }
    if let Some(c) = args.connect_timeout {
        b = b.connect_timeout(c);
    }
    for url in &args.urls {
        let mut link = Link::get(url.as_str());
        if args.idempotent {
            link = link.idempotent(true);
        }
        b = b.link(link);
    }
    let chain = b.build().map_err(|e| Usage(e.to_string()))?;
    let via = HeaderValue::from_str(&format!("1.1 fallback-{:06x}", pseudonym()))
        .map_err(|e| Usage(e.to_string()))?;
    let proxy = Arc::new(Proxy {
        chain,
        via,
        replay_buffer: args.replay_buffer,
        access_log: args.access_log == AccessLog::Json,
        draining: std::sync::atomic::AtomicBool::new(false),
        metrics: match args.admin {
            Some(_) => Some(
                metrics_exporter_prometheus::PrometheusBuilder::new()
                    .set_buckets(&[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ])
                    .map_err(|e| Usage(format!("cannot record metrics: {e}")))?
                    .install_recorder()
                    .map_err(|e| Usage(format!("cannot record metrics: {e}")))?,
            ),
            None => None,
        },
    });

    if proxy.metrics.is_some() {
        // Shown from the start, not only after the first denial.
        metrics::counter!("fallback_budget_denied_total").increment(0);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        rt.worker_threads(n.max(1));
    }
    let rt = rt
        .enable_all()
        .build()
        .map_err(|e| Usage(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                errln!("fallback: cannot listen on {}: {e}", args.listen);
                return Ok(ExitCode::from(1));
            }
        };
        let addr = listener
            .local_addr()
            .map_err(|e| Usage(format!("cannot read the listening address: {e}")))?;
        let admin = match args.admin {
            Some(a) => match tokio::net::TcpListener::bind(a).await {
                Ok(l) => Some(l),
                Err(e) => {
                    errln!("fallback: cannot listen on {a} (admin): {e}");
                    return Ok(ExitCode::from(1));
                }
            },
            None => None,
        };
        outln!("listening on http://{addr}");
        if let Some(a) = admin.as_ref().and_then(|l| l.local_addr().ok()) {
            outln!("admin on http://{a}");
        }
        if let Some(admin) = admin {
            tokio::spawn(serve_admin(admin, proxy.clone()));
        }
        serve(listener, proxy, args.drain).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// A per-process pseudonym for `Via`.
fn pseudonym() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() & 0xff_ffff) as u32
}

async fn serve(listener: tokio::net::TcpListener, proxy: Arc<Proxy>, drain: Duration) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut stop = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let proxy = proxy.clone();
                let svc = service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(handle(&proxy, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(tcp), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut stop => break,
        }
    }
    proxy
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    drop(listener);
    // Idle keep-alive connections could hold this forever: bound it.
    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
}

/// The admin endpoints: liveness, readiness, and the upstreams' health.
async fn serve_admin(listener: tokio::net::TcpListener, proxy: Arc<Proxy>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let proxy = proxy.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(admin(&proxy, req.uri().path())) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(tcp), svc)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

fn admin(proxy: &Proxy, path: &str) -> Response<ResponseBody> {
    let json = |status: StatusCode, body: serde_json::Value| {
        let mut out = Response::new(ResponseBody::full(body.to_string()));
        *out.status_mut() = status;
        out.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        out
    };
    match path {
        "/healthz" => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        "/readyz" if proxy.draining.load(std::sync::atomic::Ordering::Relaxed) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "draining"}),
        ),
        "/readyz" => json(StatusCode::OK, serde_json::json!({"status": "ready"})),
        "/metrics" => match &proxy.metrics {
            Some(m) => {
                // Every upstream's state, changed or not.
                let links = proxy.chain.links();
                for h in proxy.chain.health() {
                    let state = match h.state() {
                        fallback_chain::BreakerState::Closed => 0.0,
                        fallback_chain::BreakerState::HalfOpen => 1.0,
                        _ => 2.0,
                    };
                    let name = links
                        .get(h.link())
                        .map_or_else(String::new, |l| l.name().to_owned());
                    metrics::gauge!("fallback_breaker_state", "link" => name).set(state);
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
            let health = proxy.chain.health();
            let list: Vec<_> = proxy
                .chain
                .links()
                .iter()
                .map(|l| {
                    let h = health.get(l.index());
                    serde_json::json!({
                        "name": l.name(),
                        "url": l.url(),
                        "state": h.map(|h| format!("{:?}", h.state()).to_lowercase()),
                        "successes": h.map(|h| h.successes()),
                        "failures": h.map(|h| h.failures()),
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

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// RFC 9110, section 7.6.1: headers for one connection only.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// Removes hop-by-hop headers, and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove("proxy-authenticate");
}

async fn handle(proxy: &Proxy, req: Request<Incoming>) -> Response<ResponseBody> {
    let started = Instant::now();
    // Only a logged request pays for its log line.
    let logged = proxy.access_log.then(|| {
        let path = req.uri().path_and_query().map_or_else(
            || "/".to_owned(),
            |p| fallback_chain::redact::url(p.as_str()),
        );
        (req.method().clone(), path)
    });
    let mut attempts = serde_json::Value::Array(Vec::new());
    let resp = forward(proxy, req, logged.is_some().then_some(&mut attempts)).await;
    if proxy.metrics.is_some() {
        metrics::counter!(
            "fallback_requests_total",
            "route" => "/",
            "status" => resp.status().as_u16().to_string()
        )
        .increment(1);
    }
    if let Some((method, path)) = logged {
        errln!(
            "{}",
            serde_json::json!({
                "time": httpdate::fmt_http_date(std::time::SystemTime::now()),
                "method": method.as_str(),
                "path": path,
                "status": resp.status().as_u16(),
                "upstream": resp.headers().get("x-fallback-upstream").and_then(|v| v.to_str().ok()),
                "attempts": attempts,
                "elapsed_ms": (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            })
        );
    }
    resp
}

/// The attempts of a request, for the access log.
fn attempts_json(report: &fallback_chain::Report) -> serde_json::Value {
    report
        .attempts()
        .iter()
        .map(|a| {
            serde_json::json!({
                "upstream": a.name(),
                "outcome": a.outcome().as_str(),
                "status": a.status().map(|s| s.as_u16()),
                "elapsed_ms": (a.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            })
        })
        .collect()
}

/// Sends one request along the chain; `log`, if given, gets its attempts.
async fn forward(
    proxy: &Proxy,
    req: Request<Incoming>,
    log: Option<&mut serde_json::Value>,
) -> Response<ResponseBody> {
    let (mut parts, body) = req.into_parts();
    let looped = parts
        .headers
        .get_all(http::header::VIA)
        .iter()
        .any(|v| v.as_bytes() == proxy.via.as_bytes());
    if looped {
        return own_error(
            StatusCode::LOOP_DETECTED,
            "loop",
            "this request came back through this proxy",
        );
    }
    let limit = usize::try_from(proxy.replay_buffer).unwrap_or(usize::MAX);
    let body = match Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_large {
                own_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body",
                    "the request body is larger than the replay buffer",
                )
            } else {
                own_error(
                    StatusCode::BAD_REQUEST,
                    "body",
                    "the request body could not be read",
                )
            };
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.append(http::header::VIA, proxy.via.clone());
    // The upstream's authority goes in Host.
    parts.headers.remove(http::header::HOST);
    let request = Request::from_parts(parts, body);
    match proxy.chain.send_streaming(request).await {
        Ok(resp) => {
            if let Some(log) = log {
                *log = attempts_json(resp.report());
            }
            let attempts = resp.report().attempts().len();
            let upstream = resp.report().attempts().last().map(|a| a.name().to_owned());
            let status = resp.status();
            let mut headers = resp.headers().clone();
            strip_hop_by_hop(&mut headers);
            let mut out = Response::new(resp.into_body());
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            report_headers(out.headers_mut(), upstream.as_deref(), attempts);
            out
        }
        Err(e) => {
            if let Some(log) = log {
                *log = attempts_json(e.report());
            }
            failed(&e)
        }
    }
}

fn report_headers(headers: &mut HeaderMap, upstream: Option<&str>, attempts: usize) {
    if let Some(v) = upstream.and_then(|u| HeaderValue::from_str(u).ok()) {
        headers.insert("x-fallback-upstream", v);
    }
    headers.insert("x-fallback-attempts", HeaderValue::from(attempts));
}

/// Every upstream failed: the last answer if there was one, else the
/// proxy's own 502, 503 or 504.
fn failed(e: &fallback_chain::Error) -> Response<ResponseBody> {
    let attempts = e.report().attempts();
    if let (Some(status), Some(headers)) = (e.status(), e.headers()) {
        let mut headers = headers.clone();
        strip_hop_by_hop(&mut headers);
        headers.remove(http::header::CONTENT_LENGTH);
        let body = e.body().cloned().unwrap_or_default();
        let mut out = Response::new(ResponseBody::full(body));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        let upstream = attempts.last().map(|a| a.name().to_owned());
        report_headers(out.headers_mut(), upstream.as_deref(), attempts.len());
        return out;
    }
    let nothing_tried = attempts.iter().all(|a| a.outcome() == Outcome::Skipped);
    let (status, kind) = if e.is_timeout() {
        (StatusCode::GATEWAY_TIMEOUT, "timeout")
    } else if nothing_tried {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    } else if e.kind() == ErrorKind::MaybeProcessed {
        (StatusCode::BAD_GATEWAY, "not-resent")
    } else {
        (StatusCode::BAD_GATEWAY, "upstream")
    };
    let list: Vec<_> = attempts
        .iter()
        .map(|a| {
            serde_json::json!({
                "upstream": a.name(),
                "outcome": a.outcome().as_str(),
                "status": a.status().map(|s| s.as_u16()),
                "error": a.error(),
            })
        })
        .collect();
    let body = serde_json::json!({ "error": e.to_string(), "attempts": list });
    let mut out = own(status, kind, body.to_string());
    report_headers(out.headers_mut(), None, attempts.len());
    out
}

fn own_error(status: StatusCode, kind: &str, message: &str) -> Response<ResponseBody> {
    own(
        status,
        kind,
        serde_json::json!({ "error": message }).to_string(),
    )
}

/// An answer of the proxy itself, marked by `x-fallback-error`.
fn own(status: StatusCode, kind: &str, json: String) -> Response<ResponseBody> {
    let mut out = Response::new(ResponseBody::full(Bytes::from(json)));
    *out.status_mut() = status;
    let h = out.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(kind) {
        h.insert("x-fallback-error", v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-end-to-end"]);
    }
}

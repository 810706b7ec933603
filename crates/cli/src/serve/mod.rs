//! `fallback serve`: a local failover proxy. Plain HTTP/1.1 or h2c in, the
//! chain out, with breakers and budgets shared by every request.
//!
//! A thin user of the library: each request goes through
//! `Chain::send_streaming`, which commits at the winner's head and streams
//! its body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use clap::Parser;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;

use crate::print::{errln, outln};
use crate::{units, NetArgs, Usage};

mod admin;
mod answer;
mod forward;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz;
mod headers;
mod send_timeout;
mod settings;
mod upgrade;

use settings::{Listeners, Live};

/// Serve the chain as a local failover proxy: plain HTTP to ADDR, each
/// request tried along the upstreams in order (breakers on, sticky).
///
/// The config file (-c) adds `[serve]` (listen, admin, replay_buffer,
/// replay_disk, replay_disk_total, temp_dir, drain, access_log, report_headers, forwarded, via, header_timeout),
/// `[[upstream]]` (name, url, headers, timeout, idle_timeout, retries,
/// probe) and `[[route]]` (prefix, upstreams, strip_prefix, and overrides
/// of timeout, deadline, idle_timeout, retries, hedge, fail_on,
/// idempotent). The command line wins
/// over the config's chain-wide keys; a route's own keys win over both.
/// SIGHUP re-reads it.
#[derive(Parser, Debug)]
pub struct ServeArgs {
    /// Upstream base URLs, in order, after any from --config; the
    /// request's path and query are appended.
    #[arg(value_name = "URL")]
    urls: Vec<String>,
    /// Upstreams, routes and settings from a TOML file; re-read on SIGHUP.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to listen (port 0 picks a free port) [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Per-attempt timeout [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    timeout: Option<Duration>,
    /// Bound on each request's whole failover [default: none].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    deadline: Option<Duration>,
    /// Bound between two reads of an upstream's body once it streams to
    /// the client, and on a client that stops reading its response; when
    /// it is reached the client's response is aborted [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    idle_timeout: Option<Duration>,
    /// Extra tries on the same upstream before moving on [default: 0].
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// Start the next upstream when the current one has not answered
    /// within DUR.
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    hedge: Option<Duration>,
    /// Statuses that fall back [default: 5xx,408,429: a proxy passes
    /// redirects, 304 and client errors through].
    #[arg(long, value_name = "SPEC", value_parser = crate::parse_fail_on)]
    fail_on: Option<String>,
    /// Allow re-sending a POST/PATCH whose outcome is unknown.
    #[arg(long)]
    idempotent: bool,
    #[command(flatten)]
    net: NetArgs,
    /// Request bodies stream upstream as they arrive, while a copy is kept
    /// so they can be re-sent: up to SIZE in memory [default: 1MiB].
    #[arg(long, value_name = "SIZE", value_parser = units::size)]
    replay_buffer: Option<u64>,
    /// ... and beyond it, up to SIZE per request in a temporary file
    /// (0: none) [default: 64MiB]. A larger body streams once.
    #[arg(long, value_name = "SIZE", value_parser = units::size)]
    replay_disk: Option<u64>,
    /// Bound on what every request keeps on disk at once; past it, large
    /// bodies stream once and the access log says why [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = units::size)]
    replay_disk_total: Option<u64>,
    /// Where the temporary files go; they are made unlinked (no name, so
    /// no other user can open them, and a crash leaves nothing behind)
    /// [default: the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// How long requests in flight may finish after SIGTERM or SIGINT
    /// [default: 15s].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    drain: Option<Duration>,
    /// Bound on reading a request's head [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    header_timeout: Option<Duration>,
    /// Add X-Forwarded-For and Forwarded (the client's address) to
    /// requests sent upstream.
    #[arg(long)]
    forwarded: bool,
    /// Add `Via` to requests sent upstream. Off by default: nginx's stock
    /// `gzip_proxied off` compresses nothing for a request with `Via`.
    /// Loops are found without it (`X-Fallback-Hop`).
    #[arg(long)]
    via: bool,
    /// Runtime worker threads [default: the number of cores].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Also serve the admin endpoints here: /healthz, /readyz, /upstreams,
    /// /metrics (Prometheus text).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// One JSON line per request on stderr [default: none].
    #[arg(long, value_name = "FORMAT")]
    access_log: Option<AccessLog>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum AccessLog {
    Json,
    None,
}

/// What every request shares.
pub(crate) struct Proxy {
    /// Swapped whole by a reload; a request keeps the one it started with.
    live: RwLock<Arc<Live>>,
    /// This process among a request's hops, to detect loops.
    hop: headers::Hop,
    /// Set once shutdown has begun: /readyz answers 503.
    draining: AtomicBool,
    /// Renders /metrics, when there is an admin listener.
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl Proxy {
    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub fn run(args: ServeArgs) -> Result<ExitCode, Usage> {
    let (live, listeners) = settings::load(&args, None).map_err(Usage)?;
    let metrics = match listeners.admin {
        Some(_) => Some(
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .map_err(|e| Usage(format!("cannot record metrics: {e}")))?
                .install_recorder()
                .map_err(|e| Usage(format!("cannot record metrics: {e}")))?,
        ),
        None => None,
    };
    let proxy = Arc::new(Proxy {
        live: RwLock::new(Arc::new(live)),
        hop: headers::Hop::new(),
        draining: AtomicBool::new(false),
        metrics,
    });
    if proxy.metrics.is_some() {
        // Shown from the start, not only after the first denial.
        metrics::counter!("fallback_budget_denied_total").increment(0);
    }
    // One worker needs no work stealing: the current-thread scheduler
    // does the same work with fewer atomics and no cross-thread wakeups.
    let mut rt = match args.workers {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = rt
        .enable_all()
        .build()
        .map_err(|e| Usage(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listeners.listen).await {
            Ok(l) => l,
            Err(e) => {
                errln!("fallback: cannot listen on {}: {e}", listeners.listen);
                return Ok(ExitCode::from(1));
            }
        };
        let addr = listener
            .local_addr()
            .map_err(|e| Usage(format!("cannot read the listening address: {e}")))?;
        let admin = match listeners.admin {
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
            tokio::spawn(admin::serve(admin, proxy.clone()));
        }
        if let Some(handle) = proxy.metrics.clone() {
            tokio::spawn(metrics_upkeep(handle));
        }
        tokio::spawn(reload_on_hangup(args, proxy.clone()));
        serve(listener, proxy, &listeners).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The exporter keeps every histogram sample until it is folded into the
/// buckets: without this, a proxy nobody scrapes grows by each request's
/// samples (37 MiB over two million requests in the soak).
async fn metrics_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(1);

/// SIGHUP re-reads the config: a valid one serves new requests, an
/// invalid one is logged and the old one keeps serving.
async fn reload_on_hangup(args: ServeArgs, proxy: Arc<Proxy>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            let current = proxy.live();
            match settings::load(&args, Some(&current)) {
                Ok((live, _)) => {
                    let routes = live.routes.len();
                    let upstreams = live.upstreams.len();
                    *proxy.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
                    errln!("fallback: reloaded: {upstreams} upstream(s), {routes} route(s)");
                }
                Err(e) => errln!("fallback: reload refused, the old config keeps serving: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (args, proxy);
}

/// How client connections are served: HTTP/1.1 or h2c, a bound on the
/// head's size and on the time to read it.
///
/// No half-close: a client whose connection ends while its request is in
/// flight has gone, and its request is cancelled, with every attempt,
/// retry and hedge it would still make (nginx's default too). A client
/// that shuts its writing side after the request is taken as gone.
fn connections(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD as u32);
    builder
}

async fn serve(listener: tokio::net::TcpListener, proxy: Arc<Proxy>, listeners: &Listeners) {
    let graceful = GracefulShutdown::new();
    let builder = connections(listeners.header_timeout);
    let mut stop = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, client)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let tcp = send_timeout::SendTimeout::new(tcp, proxy.live().idle_timeout);
                let proxy = proxy.clone();
                let svc = service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(forward::handle(&proxy, req, client).await) }
                });
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut stop => break,
        }
    }
    proxy.draining.store(true, Ordering::Relaxed);
    drop(listener);
    // Idle keep-alive connections could hold this forever: bound it.
    let _ = tokio::time::timeout(listeners.drain, graceful.shutdown()).await;
}

/// The largest request head accepted (HTTP/1 buffer, HTTP/2 header list).
const MAX_HEAD: usize = 64 * 1024;

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

//! A local failover proxy over [`fallback_chain`]: plain HTTP/1.1 or h2c
//! in, every request tried along an ordered chain of upstreams, with
//! breakers and a retry budget shared by every request.
//!
//! The `fallback serve` command is a thin shell over this crate; a Rust
//! program can embed the same proxy:
//!
//! ```no_run
//! use fallback_chain_proxy::{Config, Proxy, Upstream};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = Config::default();
//! config.upstreams.push(Upstream::new("http://127.0.0.1:9001"));
//! config.upstreams.push(Upstream::new("http://127.0.0.1:9002"));
//! let proxy = Proxy::new(config)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // Serves until the future given ends, then drains.
//! proxy.serve(listener, tokio::signal::ctrl_c()).await;
//! # Ok(())
//! # }
//! ```
//!
//! # The request path
//! Each request goes through named steps, in order (the functions of
//! `src/path.rs`):
//! 1. **route**: the longest matching prefix picks a route (404 when none
//!    does), and a request that came back through this proxy is refused
//!    (508);
//! 2. **body**: the client's body streams upstream as it arrives, while a
//!    copy is kept for a re-send ([`fallback_chain::Body::replayable`]);
//!    hop-by-hop headers go, `X-Fallback-Hop` comes;
//! 3. **chain**: the route's [`Chain`](fallback_chain::Chain) sends it
//!    along the upstreams (`send_streaming`: the winner's body streams to
//!    the client); a protocol upgrade takes the upgrade path instead
//!    (`src/upgrade.rs`), which asks the same breakers and classifier;
//! 4. **answer**: the winner's head goes back, or the last upstream's
//!    failure, or the proxy's own error (`x-fallback-error`);
//! 5. **log**: the access-log line is written when the answer's body ends.
//!
//! # Semver
//! The proxy's behaviour on the wire (headers added and removed, its own
//! errors, the access log's fields, the metrics) is part of its API, as
//! much as its types are.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod access_log;
mod admin;
mod answer;
pub mod config;
pub mod expand;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod headers;
mod live;
mod path;
mod send_timeout;
mod server;
pub mod units;
mod upgrade;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

pub use config::{Config, Net, Route, Upstream};
use live::{Listeners, Live};

/// A configuration the proxy cannot serve by: the message names the
/// culprit (the file, key and line, or the upstream or route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> ConfigError {
        ConfigError(message.into())
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The proxy: what every request shares. Cheap to clone (one `Arc`).
///
/// Built from a [`Config`], it serves client connections with
/// [`serve`](Self::serve) and the admin endpoints with
/// [`serve_admin`](Self::serve_admin); [`reload`](Self::reload) swaps in a
/// new configuration while requests in flight finish under the old one.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

struct Shared {
    /// Swapped whole by a reload; a request keeps the one it started with.
    live: RwLock<Arc<Live>>,
    /// Fixed when the proxy is built: a reload does not move a listener.
    listeners: Listeners,
    /// This process among a request's hops, to detect loops.
    hop: headers::Hop,
    /// Set once shutdown has begun: /readyz answers 503.
    draining: AtomicBool,
    /// Renders /metrics, once the recorder is installed.
    metrics: OnceLock<metrics_exporter_prometheus::PrometheusHandle>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self.live();
        f.debug_struct("Proxy")
            .field("listen", &self.shared.listeners.listen)
            .field("upstreams", &live.upstreams.len())
            .field("routes", &live.routes.len())
            .finish_non_exhaustive()
    }
}

/// What a reload changed: the counts of what now serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    /// Upstreams.
    pub upstreams: usize,
    /// Routes.
    pub routes: usize,
}

impl Proxy {
    /// Builds the proxy's upstreams, routes and chains from `config`.
    /// Nothing is sent and nothing listens yet.
    pub fn new(config: Config) -> Result<Proxy, ConfigError> {
        let listeners = Listeners::of(&config)?;
        let live = Live::build(&config, None, None)?;
        Ok(Proxy::assemble(listeners, live))
    }

    fn assemble(listeners: Listeners, live: Live) -> Proxy {
        Proxy {
            shared: Arc::new(Shared {
                live: RwLock::new(Arc::new(live)),
                listeners,
                hop: headers::Hop::new(),
                draining: AtomicBool::new(false),
                metrics: OnceLock::new(),
            }),
        }
    }

    /// Where the config asks the proxy to listen (default 127.0.0.1:8080).
    pub fn listen(&self) -> &config::Listen {
        &self.shared.listeners.listen
    }

    /// Where the config asks the admin endpoints to listen, if anywhere.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared.listeners.admin
    }

    /// How long requests in flight may finish once shutdown begins.
    pub fn drain(&self) -> Duration {
        self.shared.listeners.drain
    }

    /// Serves new requests by `config` from now on; requests in flight
    /// finish under the configuration they started with. Breakers of
    /// unchanged URLs, the retry budget and the count of what is on disk
    /// carry over. The listeners stay where they are. On an error, the
    /// old configuration keeps serving.
    pub fn reload(&self, config: &Config) -> Result<Reloaded, ConfigError> {
        let current = self.live();
        let live = Live::build(config, Some(&current), None)?;
        let reloaded = Reloaded {
            upstreams: live.upstreams.len(),
            routes: live.routes.len(),
        };
        *self.shared.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
        Ok(reloaded)
    }

    /// Installs this process's metrics recorder, which `/metrics` on the
    /// admin listener renders (Prometheus text), and keeps it in bounds
    /// in the background. Call it within a tokio runtime, once per
    /// process: a second recorder is refused.
    pub fn install_metrics(&self) -> Result<(), ConfigError> {
        let fail =
            |e: &dyn std::fmt::Display| ConfigError::new(format!("cannot record metrics: {e}"));
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .map_err(|e| fail(&e))?
            .install_recorder()
            .map_err(|e| fail(&e))?;
        // Shown from the start, not only after the first denial.
        metrics::counter!("fallback_budget_denied_total").increment(0);
        tokio::spawn(server::metrics_upkeep(handle.clone()));
        let _ = self.shared.metrics.set(handle);
        Ok(())
    }

    /// Serves client connections from `listener` until `shutdown` ends;
    /// then stops accepting, answers `/readyz` with 503, and lets requests
    /// in flight finish for up to [`drain`](Self::drain).
    pub async fn serve<F: std::future::Future>(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: F,
    ) {
        server::serve(self, server::Listener::Tcp(listener), shutdown).await;
    }

    /// [`serve`](Self::serve), from a Unix socket's listener: clients have
    /// no address (`Forwarded: for=unknown`).
    #[cfg(unix)]
    pub async fn serve_unix<F: std::future::Future>(
        &self,
        listener: tokio::net::UnixListener,
        shutdown: F,
    ) {
        server::serve(self, server::Listener::Unix(listener), shutdown).await;
    }

    /// Serves the admin endpoints from `listener`, for good: `/healthz`,
    /// `/readyz`, `/upstreams` (each upstream's breaker) and `/metrics`.
    pub async fn serve_admin(&self, listener: tokio::net::TcpListener) {
        admin::serve(listener, self.clone()).await;
    }

    fn live(&self) -> Arc<Live> {
        self.shared
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn metrics(&self) -> Option<&metrics_exporter_prometheus::PrometheusHandle> {
        self.shared.metrics.get()
    }
}

/// Writes one line to stderr, for the access log and the proxy's own
/// notices; a closed stderr drops it instead of panicking.
pub(crate) fn log_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(line).and_then(|()| err.write_all(b"\n"));
}

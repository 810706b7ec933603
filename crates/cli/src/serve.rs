//! `fallback serve`: the failover proxy of `fallback-chain-proxy`, on the
//! command line. A thin shell: its flags become a `Config` laid over the
//! config file's, and SIGHUP re-reads the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fallback_chain_proxy::config::Listen;
use fallback_chain_proxy::{units, Config, Proxy, Upstream};

use crate::print::{errln, outln};
use crate::{NetArgs, PolicyArgs, Usage};

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
    /// Where to listen: ADDR:PORT (port 0 picks a free port) or
    /// unix:/path (a socket made with mode 0660, removed on exit)
    /// [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<Listen>,
    #[command(flatten)]
    policy: PolicyArgs,
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

impl ServeArgs {
    /// The flags given, as a layer over the config file.
    fn command_line(&self) -> Config {
        let mut c = Config::default();
        c.listen = self.listen.clone();
        c.admin = self.admin;
        c.replay_buffer = self.replay_buffer;
        c.replay_disk = self.replay_disk;
        c.replay_disk_total = self.replay_disk_total;
        c.temp_dir = self.temp_dir.clone();
        c.drain = self.drain;
        c.access_log = self.access_log.map(|a| a == AccessLog::Json);
        c.forwarded = self.forwarded.then_some(true);
        c.via = self.via.then_some(true);
        c.header_timeout = self.header_timeout;
        c.policy = self.policy.policy();
        c.net = self.net.net();
        c.upstreams = self.urls.iter().map(|u| Upstream::new(u.trim())).collect();
        c
    }

    /// The config file (if any) with the command line over it.
    fn config(&self) -> Result<Config, String> {
        let file = match &self.config {
            Some(path) => Config::load(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        Ok(file.overlaid(&self.command_line()))
    }
}

pub fn run(args: ServeArgs) -> Result<ExitCode, Usage> {
    let proxy = Proxy::new(args.config().map_err(Usage)?).map_err(|e| Usage(e.to_string()))?;
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
        let listener = match bind(proxy.listen()).await {
            Ok(l) => l,
            Err(e) => {
                errln!("fallback: cannot listen on {}: {e}", proxy.listen());
                return Ok(ExitCode::from(1));
            }
        };
        let ready = match &listener {
            Listener::Tcp(l) => {
                let addr = l
                    .local_addr()
                    .map_err(|e| Usage(format!("cannot read the listening address: {e}")))?;
                format!("http://{addr}")
            }
            #[cfg(unix)]
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        };
        let admin = match proxy.admin_addr() {
            Some(a) => match tokio::net::TcpListener::bind(a).await {
                Ok(l) => Some(l),
                Err(e) => {
                    errln!("fallback: cannot listen on {a} (admin): {e}");
                    return Ok(ExitCode::from(1));
                }
            },
            None => None,
        };
        if admin.is_some() {
            proxy.install_metrics().map_err(|e| Usage(e.to_string()))?;
        }
        outln!("listening on {ready}");
        if let Some(a) = admin.as_ref().and_then(|l| l.local_addr().ok()) {
            outln!("admin on http://{a}");
        }
        if let Some(admin) = admin {
            let proxy = proxy.clone();
            tokio::spawn(async move { proxy.serve_admin(admin).await });
        }
        tokio::spawn(reload_on_hangup(args, proxy.clone()));
        match listener {
            Listener::Tcp(l) => proxy.serve(l, shutdown_signal()).await,
            #[cfg(unix)]
            Listener::Unix(l, path) => {
                proxy.serve_unix(l, shutdown_signal()).await;
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, PathBuf),
}

async fn bind(listen: &Listen) -> Result<Listener, String> {
    match listen {
        Listen::Tcp(addr) => tokio::net::TcpListener::bind(addr)
            .await
            .map(Listener::Tcp)
            .map_err(|e| e.to_string()),
        #[cfg(unix)]
        Listen::Unix(path) => bind_unix(path).map(|l| Listener::Unix(l, path.clone())),
        #[allow(unreachable_patterns)]
        _ => Err("this system has no Unix sockets".into()),
    }
}

/// A Unix socket at `path`, mode 0660. A socket already there is replaced
/// only when nothing accepts on it (a stale one, left by a process that
/// was killed); any other file is refused, never removed.
#[cfg(unix)]
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err("another process is listening on this socket".into());
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("a stale socket is there and cannot be removed: {e}"))?;
        }
        Ok(_) => return Err("the path exists and is not a socket; it is left alone".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| e.to_string())?;
    // Until this, the socket has the umask's mode: under the usual 022 no
    // one but the owner may connect, so nothing is open wider meanwhile.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| {
        let _ = std::fs::remove_file(path);
        format!("cannot set its mode to 0660: {e}")
    })?;
    Ok(listener)
}

/// SIGHUP re-reads the config: a valid one serves new requests, an
/// invalid one is logged and the old one keeps serving.
async fn reload_on_hangup(args: ServeArgs, proxy: Proxy) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            let reloaded = args
                .config()
                .and_then(|c| proxy.reload(&c).map_err(|e| e.to_string()));
            match reloaded {
                Ok(r) => errln!(
                    "fallback: reloaded: {} upstream(s), {} route(s)",
                    r.upstreams,
                    r.routes
                ),
                Err(e) => errln!("fallback: reload refused, the old config keeps serving: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (args, proxy);
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

//! The `serve` group: `fallback serve --workers 1` against nginx and
//! HAProxy (one worker each) as failover sidecars, and direct-to-backup as
//! the ceiling, with the same load generator and one interleaved run.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fallback_chain_testserver::{Behavior, Server};

use super::server::{HyperServer, Kind};
use super::{closed_loop, median, raw_hyper, Cfg, Row};

/// The primary's failure, the backup being healthy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Primary {
    Healthy,
    Refused,
    Unavailable,
    BlackHole,
}

impl Primary {
    pub(super) const ALL: [Primary; 4] = [
        Primary::Healthy,
        Primary::Refused,
        Primary::Unavailable,
        Primary::BlackHole,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Primary::Healthy => "healthy",
            Primary::Refused => "refused",
            Primary::Unavailable => "503",
            Primary::BlackHole => "blackhole",
        }
    }
}

/// One primary of each kind, fresh for each variant of a group.
pub(super) struct Primaries {
    healthy: HyperServer,
    unavailable: HyperServer,
    refused: Server,
    hole: Server,
}

impl Primaries {
    pub(super) fn start() -> Primaries {
        Primaries {
            healthy: HyperServer::start(Kind::Healthy),
            unavailable: HyperServer::start(Kind::Unavailable),
            refused: Server::refused(),
            hole: Server::start(Behavior::BlackHole),
        }
    }

    pub(super) fn url(&self, primary: Primary) -> String {
        match primary {
            Primary::Healthy => format!("http://{}", self.healthy.addr),
            Primary::Unavailable => format!("http://{}", self.unavailable.addr),
            Primary::Refused => format!("http://{}", self.refused.addr()),
            Primary::BlackHole => format!("http://{}", self.hole.addr()),
        }
    }

    /// Requests the primary of this kind has received.
    fn count(&self, primary: Primary) -> u64 {
        match primary {
            Primary::Healthy => self.healthy.count(),
            Primary::Unavailable => self.unavailable.count(),
            Primary::BlackHole => self.hole.request_count() as u64,
            Primary::Refused => 0,
        }
    }
}

/// A proxy (or none) between the load generator and the upstreams.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Ours,
    Nginx,
    Haproxy,
    /// A bare hyper pass-through to the backup, no failover: what hyper
    /// alone costs.
    RawHyper,
    Direct,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Ours => "fallback serve",
            Via::Nginx => "nginx",
            Via::Haproxy => "HAProxy",
            Via::RawHyper => "raw hyper proxy (no failover)",
            Via::Direct => "direct to backup",
        }
    }
}

/// The CPU core proxies are started on (`taskset -c N`), if any: the fair
/// group pins each proxy alone on one core.
static PIN: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Starts proxies on `core` from now on (`None`: anywhere).
pub(super) fn pin_proxies(core: Option<u32>) {
    PIN.store(
        core.map_or(-1, |c| c as i32),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// `exe`, under `taskset` when proxies are pinned.
fn command(exe: impl AsRef<std::ffi::OsStr>) -> Command {
    match PIN.load(std::sync::atomic::Ordering::Relaxed) {
        -1 => Command::new(exe),
        core => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(exe);
            c
        }
    }
}

/// One running proxy process, stopped by its PID when dropped.
pub(super) struct Running {
    child: Option<Child>,
    port: u16,
    _dir: Option<tempdir::Dir>,
}

impl Running {
    pub(super) fn port(&self) -> u16 {
        self.port
    }

    /// The upstream itself, no proxy between.
    pub(super) fn direct(port: u16) -> Running {
        Running {
            child: None,
            port,
            _dir: None,
        }
    }

    /// The process's CPU time so far (user and system), in microseconds.
    pub(super) fn cpu_us(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command name, which is in parentheses.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        // Linux's USER_HZ is 100 on every architecture it runs on.
        Some(ticks * 10_000.0)
    }

    /// The process's resident memory now, in KiB.
    pub(super) fn rss_kib(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(super) mod tempdir {
    use std::path::{Path, PathBuf};

    /// A scratch directory, removed when dropped.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(tag: &str) -> std::io::Result<Dir> {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let p = std::env::temp_dir().join(format!(
                "fallback-bench-{tag}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&p)?;
            Ok(Dir(p))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts on `port`.
fn wait_listening(port: u16) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub(super) fn installed(cmd: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.exists())
}

/// The `fallback` binary beside this one, built if missing.
pub(super) fn fallback_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?.with_file_name("fallback");
    if !exe.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "--release", "-p", "fallback-chain-cli"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok || !exe.exists() {
            return None;
        }
    }
    Some(exe)
}

pub(super) fn start_ours(primary: &str, backup: &str) -> Option<Running> {
    start_ours_with(&[
        "--timeout",
        "1s",
        "--connect-timeout",
        "1s",
        primary,
        backup,
    ])
}

/// `fallback serve --workers 1 --listen 127.0.0.1:0 ARGS...`, once it is
/// listening.
pub(super) fn start_ours_with(args: &[&str]) -> Option<Running> {
    let mut cmd = command(fallback_exe()?);
    cmd.args(["serve", "--workers", "1", "--listen", "127.0.0.1:0"])
        .args(args);
    // "listening on http://127.0.0.1:PORT"
    spawn_announcing(cmd, |line| line.rsplit(':').next()?.parse().ok())
}

fn start_raw(backup: &str) -> Option<Running> {
    let mut cmd = Command::new(std::env::current_exe().ok()?);
    cmd.args(["__raw_proxy", backup]);
    spawn_announcing(cmd, |line| line.parse().ok())
}

/// Starts a proxy that prints its port in its first line once it listens.
fn spawn_announcing(mut cmd: Command, port: impl FnOnce(&str) -> Option<u16>) -> Option<Running> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    // Stopped by its PID, even when the line says nothing usable.
    let mut running = Running {
        child: Some(child),
        port: 0,
        _dir: None,
    };
    running.port = port(line.trim())?;
    Some(running)
}

/// The bare hyper proxy: every request to `upstream`, bodies streamed both
/// ways, one current-thread runtime. Prints its port.
pub(super) fn raw_proxy(upstream: &str) {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let upstream: http::Uri = upstream.parse().expect("upstream URL");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr").port());
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_nodelay(true);
        let client: Client<_, hyper::body::Incoming> = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(http);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (client, upstream) = (client.clone(), upstream.clone());
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (client, upstream) = (client.clone(), upstream.clone());
                        async move {
                            let (mut parts, body) = req.into_parts();
                            let mut uri = upstream.into_parts();
                            uri.path_and_query = parts.uri.path_and_query().cloned();
                            parts.uri = http::Uri::from_parts(uri).expect("uri");
                            parts.headers.remove(http::header::HOST);
                            client.request(http::Request::from_parts(parts, body)).await
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}

pub(super) fn start_nginx(primary: &str, backup: &str) -> Option<Running> {
    start_nginx_with(
        primary,
        backup,
        "",
        r#"proxy_pass http://chain;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout http_503;
      proxy_connect_timeout 1s;
      proxy_send_timeout 1s;
      proxy_read_timeout 1s;"#,
    )
}

/// One nginx process (its own worker) listening on a free port, with the
/// upstream block `chain` (the primary, then the backup marked `backup`)
/// and `location /` as given; `listen` follows the port (` http2`).
pub(super) fn start_nginx_with(
    primary: &str,
    backup: &str,
    listen: &str,
    location: &str,
) -> Option<Running> {
    let exe = installed("nginx")?;
    let dir = tempdir::Dir::new("nginx").ok()?;
    let port = free_port();
    let hostport = |u: &str| u.trim_start_matches("http://").to_owned();
    let conf = format!(
        // One process that is its own worker: stopping its PID stops it
        // all, and it is nginx's one-worker speed.
        r#"master_process off;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  # keepalive above any benchmark's connection count: with fewer, nginx
  # opens and closes upstream connections past the cache under load.
  upstream chain {{
    server {primary};
    server {backup} backup;
    keepalive 1024;
  }}
  server {{
    listen 127.0.0.1:{port}{listen};
    location / {{
      {location}
    }}
  }}
}}
"#,
        dir = dir.path().display(),
        primary = hostport(primary),
        backup = hostport(backup),
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).ok()?;
    let prefix = dir.path().to_path_buf();
    spawn_peer(
        exe,
        &[prefix.as_os_str(), "-c".as_ref(), path.as_os_str()],
        "-p",
        dir,
        port,
    )
}

/// Starts a peer proxy (`exe FLAG ARGS...`) and waits until it listens.
pub(super) fn spawn_peer(
    exe: PathBuf,
    args: &[&std::ffi::OsStr],
    flag: &str,
    dir: tempdir::Dir,
    port: u16,
) -> Option<Running> {
    let child = command(exe)
        .arg(flag)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let running = Running {
        child: Some(child),
        port,
        _dir: Some(dir),
    };
    wait_listening(port).then_some(running)
}

pub(super) fn start_haproxy(primary: &str, backup: &str) -> Option<Running> {
    let exe = installed("haproxy")?;
    let dir = tempdir::Dir::new("haproxy").ok()?;
    let port = free_port();
    let hostport = |u: &str| u.trim_start_matches("http://").to_owned();
    let conf = format!(
        r#"global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 1s
  option http-keep-alive
  option redispatch
  retries 1
  retry-on conn-failure empty-response response-timeout 503
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  http-reuse always
  server primary {primary} check inter 2s
  server backup {backup} backup
"#,
        primary = hostport(primary),
        backup = hostport(backup),
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, conf).ok()?;
    // -db: in the foreground, one process.
    spawn_peer(exe, &["-f".as_ref(), path.as_os_str()], "-db", dir, port)
}

/// What one proxy did under one primary, over every round.
#[derive(Default)]
struct Cell {
    rates: Vec<f64>,
    latencies: Vec<f64>,
    ok: u64,
    bad: u64,
    primary: u64,
    backup: u64,
}

impl Cell {
    fn pct(&mut self, p: f64) -> f64 {
        self.latencies.sort_by(|a, b| a.total_cmp(b));
        let n = self.latencies.len();
        if n == 0 {
            return 0.0;
        }
        self.latencies[((n as f64 * p) as usize).min(n - 1)]
    }
}

/// A GET of `/item` through `port` that counts only a 200 with the JSON.
fn load(port: u16) -> super::Op {
    let client = raw_hyper();
    let uri: http::Uri = format!("http://127.0.0.1:{port}/item")
        .parse()
        .expect("uri");
    super::op(move || {
        let client = client.clone();
        let uri = uri.clone();
        async move { super::hyper_get_json(&client, &uri).await }
    })
}

pub(super) async fn serve_group(cfg: Cfg) -> Vec<Row> {
    eprintln!("serve: fallback serve vs nginx vs HAProxy as failover sidecars (1 worker each), 32 callers");
    let have_nginx = installed("nginx").is_some();
    let have_haproxy = installed("haproxy").is_some();
    if fallback_exe().is_none() {
        eprintln!("  skipped: no fallback binary");
        return Vec::new();
    }
    let c = 32;
    let mut rows = Vec::new();
    let mut table = Vec::new();
    let backup = HyperServer::start(Kind::Healthy);
    let backup_url = format!("http://{}", backup.addr);
    for primary in Primary::ALL {
        // Each variant gets fresh upstream processes' state and proxies.
        let primaries = Primaries::start();
        let primary_url = primaries.url(primary);
        let primary_count = || primaries.count(primary);
        let mut targets: Vec<(Via, Option<Running>)> = vec![
            (Via::Ours, start_ours(&primary_url, &backup_url)),
            (Via::Nginx, start_nginx(&primary_url, &backup_url)),
            (Via::Haproxy, start_haproxy(&primary_url, &backup_url)),
            (Via::RawHyper, start_raw(&backup_url)),
            (
                Via::Direct,
                Some(Running {
                    child: None,
                    port: backup.addr.port(),
                    _dir: None,
                }),
            ),
        ];
        let ops: Vec<Option<super::Op>> = targets
            .iter()
            .map(|(_, r)| r.as_ref().map(|r| load(r.port)))
            .collect();
        // Warm up: pools fill, and breakers learn that the primary is dead.
        for o in ops.iter().flatten() {
            closed_loop(o, c, cfg.warm.max(Duration::from_millis(300)), false).await;
        }
        let mut cells: Vec<Cell> = targets.iter().map(|_| Cell::default()).collect();
        for _ in 0..cfg.rounds {
            for (i, o) in ops.iter().enumerate() {
                let Some(o) = o else { continue };
                let (p0, b0) = (primary_count(), backup.count());
                let r = closed_loop(o, c, cfg.run, true).await;
                let cell = &mut cells[i];
                cell.rates.push(r.ok as f64 / r.secs);
                cell.ok += r.ok;
                cell.bad += r.failed;
                cell.primary += primary_count() - p0;
                cell.backup += backup.count() - b0;
                cell.latencies
                    .extend(r.latencies.iter().map(|d| d.as_secs_f64() * 1e3));
            }
        }
        let mut rate = |i: usize| {
            if cells[i].rates.is_empty() {
                None
            } else {
                Some(median(&mut cells[i].rates))
            }
        };
        let rates: Vec<Option<f64>> = (0..targets.len()).map(&mut rate).collect();
        let p99s: Vec<f64> = cells.iter_mut().map(|c| c.pct(0.99)).collect();
        for (i, (via, running)) in targets.iter().enumerate() {
            let cell = &mut cells[i];
            let calls = (cell.ok + cell.bad).max(1) as f64;
            let line = match (running, rates[i]) {
                (None, _) | (_, None) => format!(
                    "| {} | {} | not installed | | | | | | |",
                    primary.name(),
                    via.name()
                ),
                (Some(_), Some(r)) => format!(
                    "| {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {} | {:.3} |",
                    primary.name(),
                    via.name(),
                    r,
                    cell.pct(0.5),
                    p99s[i],
                    cell.latencies.last().copied().unwrap_or(0.0),
                    cell.bad,
                    if primary == Primary::Refused {
                        "refused".to_owned()
                    } else {
                        format!("{:.3}", cell.primary as f64 / calls)
                    },
                    cell.backup as f64 / calls,
                ),
            };
            eprintln!("  {line}");
            table.push(line);
        }
        let ours = rates[0].unwrap_or(0.0);
        let name = primary.name();
        if let Some(nginx) = rates[1] {
            rows.push(super::throughput_row(
                &format!("serve_{name}_vs_nginx"),
                (ours, nginx),
                1.0,
            ));
        } else if !have_nginx {
            eprintln!("  serve_{name}_vs_nginx: nginx not installed");
        }
        if let Some(haproxy) = rates[2] {
            eprintln!(
                "  serve_{name}: ours {ours:.0}/s, HAProxy {haproxy:.0}/s, ratio {:.3}",
                ours / haproxy
            );
        } else if !have_haproxy {
            eprintln!("  serve_{name}_vs_haproxy: HAProxy not installed");
        }
        rows.push(Row {
            scenario: format!("serve_{name}_client_errors"),
            metric: "errors",
            ours: cells[0].bad as f64,
            baseline: cells[1].bad as f64,
            ratio: cells[0].bad as f64,
            goal: 0.0,
            at_least: false,
        });
        if primary == Primary::BlackHole {
            rows.push(Row {
                scenario: "serve_blackhole_p99".into(),
                metric: "p99_ms",
                ours: p99s[0],
                baseline: p99s[4],
                ratio: p99s[0] / p99s[4].max(1e-9),
                goal: 2.0,
                at_least: false,
            });
        }
        drop(targets.drain(..));
    }
    println!(
        "\n| primary | through | req/s | p50 ms | p99 ms | max ms | non-2xx + errors | primary reqs/call | backup reqs/call |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for line in &table {
        println!("{line}");
    }
    if let Some(r) = stream_rss(cfg) {
        rows.push(r);
    }
    rows
}

/// A large download through the proxy: its peak RSS, and proof that it
/// streamed (the client got every byte).
fn stream_rss(cfg: Cfg) -> Option<Row> {
    let len: u64 = if cfg.rounds < 5 { 256 << 20 } else { 1 << 30 };
    eprintln!("serve_stream: {} MiB through fallback serve", len >> 20);
    let huge = Server::builder(Behavior::Huge {
        status: 200,
        len,
        chunked: false,
    })
    .threads(1)
    .start();
    let ours = start_ours(&huge.url("/"), &huge.url("/"))?;
    let pid = ours.child.as_ref()?.id();
    let t = Instant::now();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", ours.port)).ok()?;
    use std::io::{Read, Write};
    tcp.write_all(b"GET /big HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let mib = hwm_kib / 1024.0;
    eprintln!(
        "  serve_stream: {} MiB in {secs:.1}s ({:.0} MiB/s), proxy peak RSS {mib:.1} MiB",
        total >> 20,
        (total >> 20) as f64 / secs
    );
    if total < len {
        eprintln!("  serve_stream: short download ({total} of {len} bytes)");
        return None;
    }
    Some(Row {
        scenario: format!("serve_stream_{}mib", len >> 20),
        metric: "MiB_peak_rss",
        ours: mib,
        baseline: (len >> 20) as f64,
        ratio: mib,
        goal: 32.0,
        at_least: false,
    })
}

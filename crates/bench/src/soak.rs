//! The soak-and-chaos scenario: 64 callers for 60 s (10 s quick) against a
//! primary that cycles healthy → 503 → refused → black hole every 2 s,
//! with a healthy backup. The servers run here, restarted on the
//! primary's port at each change; the client runs in a child process, so
//! its resident memory is its own.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fallback_chain::{Chain, Link};
use fallback_chain_testserver::{Behavior, Reply, Server};

use super::server::ITEM;
use super::{Cfg, Row};

const CALLERS: usize = 64;
/// Each phase of the primary's cycle.
const PHASE: Duration = Duration::from_secs(2);
/// The chain's attempt timeout: what a black hole costs a call.
const TIMEOUT: Duration = Duration::from_millis(200);

/// The client: `__soak SECS TIMEOUT_MS URL...`, a chain of the URLs.
/// Prints one JSON object.
pub(super) fn child(secs: u64, timeout_ms: u64, urls: &[String]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(async {
        let chain = Chain::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .links(urls.iter().map(|u| Link::get(u.as_str())))
            .build()
            .expect("chain");
        let op = super::chain_op(chain);
        // RSS and the heap in use once a second, from a thread of its own.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Room up front, so the samples don't grow the heap measured.
                let room = secs as usize + 2;
                let (mut rss, mut heap) = (Vec::with_capacity(room), Vec::with_capacity(room));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    rss.push(super::rss_kib());
                    heap.extend(heap_kib());
                    std::thread::sleep(Duration::from_secs(1));
                }
                (rss, heap)
            })
        };
        // Latencies go to a fixed histogram (10 µs buckets up to 2 s,
        // touched up front), so the client's memory is the chain's alone.
        let hist = std::sync::Arc::new(std::sync::Mutex::new(Histogram::new()));
        let end = Instant::now() + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (op, hist) = (op.clone(), hist.clone());
                tokio::spawn(async move {
                    let (mut calls, mut failed) = (0u64, 0u64);
                    while Instant::now() < end {
                        let t = Instant::now();
                        if !op().await {
                            failed += 1;
                        }
                        calls += 1;
                        hist.lock().expect("histogram").add(t.elapsed());
                    }
                    (calls, failed)
                })
            })
            .collect();
        let (mut calls, mut failed) = (0u64, 0u64);
        for t in tasks {
            let (c, f) = t.await.expect("caller");
            calls += c;
            failed += f;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (rss, heap) = sampler.join().unwrap_or_default();
        let h = hist.lock().expect("histogram");
        let pct = |p: f64| h.percentile(p);
        serde_json::json!({
            "calls": calls,
            "failed": failed,
            "p50": pct(0.5),
            "p99": pct(0.99),
            "p999": pct(0.999),
            "max": h.max_ms,
            "rss_kib": rss,
            "heap_kib": heap,
        })
    });
    println!("{out}");
}

/// The bytes malloc has handed out and not had back, in KiB: what a leak
/// grows, where RSS also counts what the allocator keeps after a free.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_kib() -> Option<f64> {
    type MallInfo2 = unsafe extern "C" fn() -> libc::mallinfo2;
    // Looked up at run time: glibc has it from 2.33 on, and linking to it
    // would keep the bench from building against an older one.
    static FN: std::sync::OnceLock<Option<MallInfo2>> = std::sync::OnceLock::new();
    let f = (*FN.get_or_init(|| {
        // SAFETY: a NUL-terminated name looked up in the loaded objects.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) };
        // SAFETY: the symbol, when present, is glibc's mallinfo2, of
        // exactly this signature.
        (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut libc::c_void, MallInfo2>(p) })
    }))?;
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { f() };
    Some((m.uordblks + m.hblkhd) as f64 / 1024.0)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_kib() -> Option<f64> {
    None
}

/// Latencies in 10 µs buckets up to 2 s; the max kept apart.
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max_ms: f64,
}

impl Histogram {
    const WIDTH_US: u64 = 10;

    fn new() -> Histogram {
        let mut buckets = vec![1u64; 200_000];
        // Touched now, so its pages are resident before the first sample.
        buckets.iter_mut().for_each(|b| *b = 0);
        Histogram {
            buckets,
            count: 0,
            max_ms: 0.0,
        }
    }

    fn add(&mut self, d: Duration) {
        let i = (d.as_micros() as u64 / Self::WIDTH_US).min(self.buckets.len() as u64 - 1);
        self.buckets[i as usize] += 1;
        self.count += 1;
        self.max_ms = self.max_ms.max(d.as_secs_f64() * 1e3);
    }

    fn percentile(&self, p: f64) -> f64 {
        let target = (self.count as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target.max(1) {
                return ((i as u64 + 1) * Self::WIDTH_US) as f64 / 1e3;
            }
        }
        self.max_ms
    }
}

/// Both soaks; `--only soak_library` or `--only soak_serve` runs one.
pub(super) async fn group(cfg: Cfg, only: Option<&str>) -> Vec<Row> {
    let mut rows = Vec::new();
    if only != Some("soak_serve") {
        rows.extend(soak(cfg, false).await);
    }
    if only != Some("soak_library") {
        rows.extend(soak(cfg, true).await);
    }
    rows
}

/// One soak, through the library or through `fallback serve --workers 1`.
async fn soak(cfg: Cfg, via_proxy: bool) -> Vec<Row> {
    let secs: u64 = if cfg.rounds < 5 { 10 } else { 60 };
    let name = if via_proxy { "soak_serve" } else { "soak" };
    eprintln!(
        "{name}: {CALLERS} callers for {secs} s; the primary cycles healthy, 503, refused, black hole every {PHASE:?}"
    );
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    let backup = Server::builder(Reply::json(200, ITEM)).threads(2).start();
    let start = |phase: usize, port: u16| -> Option<Server> {
        let b = match phase % 4 {
            0 => Server::builder(Reply::json(200, ITEM)),
            1 => Server::builder(Behavior::status(503)),
            2 => return None,
            _ => Server::builder(Behavior::BlackHole),
        };
        Some(b.threads(2).port(port).start())
    };
    let first = start(0, 0).expect("a server");
    let port = first.addr().port();
    let primary_url = first.url("/item");
    let mut primary = Some(first);
    let (mut primary_requests, mut primary_conns) = (0usize, 0usize);
    // Through the proxy, the client's chain is the proxy alone, with time
    // for the proxy's own timeout and failover.
    // Metrics on, as in production: the exporter's memory is part of the
    // proxy's, and its counters say what the breaker did.
    let admin_port = if via_proxy { free_port() } else { None };
    let proxy = if via_proxy {
        let timeout = format!("{}ms", TIMEOUT.as_millis());
        let admin = format!("127.0.0.1:{}", admin_port.unwrap_or(0));
        let p = super::serve::start_ours_with(&[
            "--timeout",
            &timeout,
            "--admin",
            &admin,
            &primary_url.replace("/item", ""),
            &backup.url(""),
        ]);
        match p {
            Some(p) => Some(p),
            None => {
                eprintln!("  {name}: skipped: no fallback binary");
                return Vec::new();
            }
        }
    } else {
        None
    };
    let (urls, timeout_ms) = match &proxy {
        Some(p) => (vec![format!("http://127.0.0.1:{}/item", p.port())], 5_000),
        None => (
            vec![primary_url.clone(), backup.url("/item")],
            TIMEOUT.as_millis() as u64,
        ),
    };
    let Ok(mut client) = Command::new(exe)
        .arg("__soak")
        .arg(secs.to_string())
        .arg(timeout_ms.to_string())
        .args(&urls)
        .stdout(Stdio::piped())
        .spawn()
    else {
        return Vec::new();
    };
    let t0 = Instant::now();
    let mut phase = 0;
    let mut proxy_rss = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        for _ in 0..2 {
            tokio::time::sleep(PHASE / 2).await;
            if let Some(kib) = proxy.as_ref().and_then(|p| p.rss_kib()) {
                proxy_rss.push(kib);
            }
        }
        phase += 1;
        if let Some(s) = primary.take() {
            primary_requests += s.request_count();
            primary_conns += s.connection_count();
        }
        primary = start(phase, port);
    }
    let mut line = String::new();
    if let Some(out) = client.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let _ = client.wait();
    if let Some(s) = primary.take() {
        primary_requests += s.request_count();
        primary_conns += s.connection_count();
    }
    let Ok(r) = serde_json::from_str::<serde_json::Value>(&line) else {
        eprintln!("  {name}: the client printed no result");
        return Vec::new();
    };
    let num = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let calls = num("calls");
    // The memory that matters: the proxy's, or the library client's.
    let series = |k: &str| -> Vec<f64> {
        r[k].as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default()
    };
    let rss: Vec<f64> = if via_proxy {
        proxy_rss
    } else {
        series("rss_kib")
    };
    // The proxy is another process: its heap isn't measured from here.
    let heap = if via_proxy {
        Vec::new()
    } else {
        series("heap_kib")
    };
    if let Some(page) = admin_port.and_then(|p| get(p, "/metrics")) {
        for line in page.lines().filter(|l| {
            l.starts_with("fallback_breaker_transitions_total")
                || l.starts_with("fallback_attempts_total")
        }) {
            eprintln!("  {name}: {line}");
        }
    }
    drop(proxy);
    let growth = last_stretch_growth(&rss);
    let per_call = (primary_requests + backup.request_count()) as f64 / calls;
    eprintln!(
        "  {name}: {calls:.0} calls, {} failed; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.1} ms",
        num("failed"),
        num("p50"),
        num("p99"),
        num("p999"),
        num("max")
    );
    // Samples in MiB, every `step`th.
    let mib = |v: &[f64], step: usize| -> String {
        let v: Vec<String> = v
            .iter()
            .step_by(step)
            .map(|k| format!("{:.1}", k / 1024.0))
            .collect();
        v.join(" ")
    };
    eprintln!("  {name}: RSS every 5 s, MiB: {}", mib(&rss, 5));
    eprintln!(
        "  {name}: RSS, the last 10 samples, MiB: {}",
        mib(&rss[rss.len().saturating_sub(10)..], 1)
    );
    let heap_growth = last_stretch_growth(&heap);
    if !heap.is_empty() {
        eprintln!(
            "  {name}: heap in use every 5 s, MiB: {} (last stretch {:+.1} %)",
            mib(&heap, 5),
            heap_growth * 100.0
        );
    }
    eprintln!(
        "  {name}: RSS {:.1} -> {:.1} MiB (last stretch {:+.1} %); connections opened: primary {primary_conns}, backup {}; requests per call {per_call:.3} (primary {primary_requests}, backup {})",
        rss.first().copied().unwrap_or(0.0) / 1024.0,
        rss.last().copied().unwrap_or(0.0) / 1024.0,
        growth * 100.0,
        backup.connection_count(),
        backup.request_count()
    );
    let row = |scenario: &str, metric: &'static str, ours: f64, goal: f64| Row {
        scenario: scenario.into(),
        metric,
        ours,
        baseline: 0.0,
        ratio: ours,
        goal,
        at_least: false,
    };
    let mut rows = vec![
        row(&format!("{name}_failed_calls"), "calls", num("failed"), 0.0),
        row(
            &format!("{name}_p999"),
            "ms",
            num("p999"),
            f64::from(TIMEOUT.as_millis() as u32) * 2.0,
        ),
        row(&format!("{name}_rss_growth"), "fraction", growth, 0.05),
    ];
    if !heap.is_empty() {
        rows.push(row(
            &format!("{name}_heap_growth"),
            "fraction",
            heap_growth,
            0.05,
        ));
    }
    rows.push(row(
        &format!("{name}_requests_per_call"),
        "requests",
        per_call,
        1.1,
    ));
    rows
}

/// Growth over the last 30 samples (the last half in a quick run), as a
/// fraction of where that stretch began.
fn last_stretch_growth(v: &[f64]) -> f64 {
    let tail = v.len().saturating_sub((v.len() / 2).min(30)).max(1);
    match (v.get(tail - 1), v.last()) {
        (Some(a), Some(b)) if *a > 0.0 => (b - a) / a,
        _ => f64::NAN,
    }
}

/// A port nothing listens on now (the kernel's next ephemeral one).
fn free_port() -> Option<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    Some(l.local_addr().ok()?.port())
}

/// The body of a `GET` on loopback, or `None`.
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut t = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    t.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        t,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut s = String::new();
    t.read_to_string(&mut s).ok()?;
    Some(s.split_once("\r\n\r\n")?.1.to_owned())
}

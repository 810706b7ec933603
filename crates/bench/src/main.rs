//! `cargo run --release -p fallback-chain-bench -- [--quick] [--json FILE] [--svg FILE]`
//!
//! Every scenario runs against its baseline in the same run, interleaved
//! (A B A B …), and reports medians and their ratio. Servers run on
//! 127.0.0.1 on threads (or processes) of their own.

mod fair;
mod grpc;
mod icount;
mod serve;
mod server;
mod soak;

use std::future::Future;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fallback_chain::{BreakerConfig, Chain, Hedge, Link};
use fallback_chain_testserver::{Behavior, Reply, Server};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use server::{HyperServer, Item, Kind, ITEM};

type Op = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

fn op<F, Fut>(f: F) -> Op
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

#[derive(Clone, Copy)]
struct Cfg {
    rounds: usize,
    run: Duration,
    warm: Duration,
    cli_runs: usize,
    mem_calls: usize,
    mem_delay_ms: u64,
}

struct Row {
    scenario: String,
    metric: &'static str,
    ours: f64,
    baseline: f64,
    ratio: f64,
    goal: f64,
    /// true: the ratio (or value) must be at least the goal.
    at_least: bool,
}

impl Row {
    fn meets(&self) -> bool {
        if self.at_least {
            self.ratio >= self.goal
        } else {
            self.ratio <= self.goal
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__serve_slow") => return serve_slow(args[2].parse().expect("delay ms")),
        Some("__mem") => return mem_child(&args[2], &args[3], args[4].parse().expect("calls")),
        Some("__raw_proxy") => return serve::raw_proxy(&args[2]),
        Some("__soak") => {
            let secs = args[2].parse().expect("seconds");
            let timeout_ms = args[3].parse().expect("timeout");
            return soak::child(secs, timeout_ms, &args[4..]);
        }
        Some("__serve_healthy") => return icount::serve_healthy(),
        Some("__icount") => {
            let n = args.last().and_then(|n| n.parse().ok()).expect("calls");
            return icount::child(&args[2], &args[3..args.len() - 1], n);
        }
        _ => {}
    }
    let quick = args.iter().any(|a| a == "--quick");
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
    };
    let json_out = flag("--json");
    let svg_out = flag("--svg").unwrap_or_else(|| PathBuf::from("target/bench/slow_tail.svg"));
    let only = flag("--only").map(|p| p.to_string_lossy().into_owned());
    let cfg = if quick {
        Cfg {
            rounds: 3,
            run: Duration::from_millis(400),
            warm: Duration::from_millis(150),
            cli_runs: 20,
            mem_calls: 10_000,
            mem_delay_ms: 3000,
        }
    } else {
        Cfg {
            rounds: 5,
            run: Duration::from_secs(3),
            warm: Duration::from_millis(500),
            cli_runs: 200,
            mem_calls: 10_000,
            mem_delay_ms: 4000,
        }
    };
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    let want = |s: &str| {
        only.as_deref()
            .is_none_or(|o| s.starts_with(o) || o.starts_with(s))
    };

    rt.block_on(async {
        if want("healthy") {
            rows.extend(healthy(cfg, &want).await);
        }
        if want("refused_primary")
            || want("failing_primary_503")
            || want("naive")
            || want("blackhole")
        {
            rows.extend(failing_primaries(cfg, &want).await);
        }
        if want("slow_tail") {
            rows.extend(slow_tail(cfg, &svg_out).await);
        }
        if want("serve") {
            rows.extend(serve::serve_group(cfg).await);
        }
        if want("fair") {
            rows.extend(fair::fair_group(cfg, quick));
        }
        if want("grpc") {
            rows.extend(grpc::grpc_group(cfg).await);
        }
        if want("soak_grpc") {
            rows.extend(grpc::soak_grpc(cfg).await);
        }
        if want("all_down") {
            rows.extend(all_down(cfg).await);
        }
        if want("soak") {
            rows.extend(soak::group(cfg, only.as_deref()).await);
        }
    });
    if want("icount") {
        rows.extend(icount::group());
    }
    if want("memory_inflight") {
        rows.extend(memory(cfg).unwrap_or_default());
    }
    if want("cli_single") {
        if let Some(r) = cli_single(cfg) {
            rows.push(r);
        }
    }

    print_table(&rows);
    println!(
        "\n{} scenarios in {:.1}s ({} mode, {} rounds of {:?} per side)",
        rows.len(),
        started.elapsed().as_secs_f64(),
        if quick { "quick" } else { "full" },
        cfg.rounds,
        cfg.run
    );
    if let Some(path) = json_out {
        let all: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "scenario": r.scenario,
                    "metric": r.metric,
                    "ours": r.ours,
                    "baseline": r.baseline,
                    "ratio": r.ratio,
                    "goal": r.goal,
                    "meets_goal": r.meets(),
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&all).expect("json");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        println!("wrote {}", path.display());
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "\n| scenario | metric | ours | baseline | ratio | goal | met |\n| --- | --- | ---: | ---: | ---: | --- | --- |"
    );
    let num = |x: f64| {
        if x.abs() < 10.0 {
            format!("{x:.3}")
        } else {
            format!("{x:.1}")
        }
    };
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.3} | {} {} | {} |",
            r.scenario,
            r.metric,
            num(r.ours),
            num(r.baseline),
            r.ratio,
            if r.at_least { "≥" } else { "≤" },
            r.goal,
            if r.meets() { "yes" } else { "**no**" }
        );
    }
}

// ---------- load generation ----------

#[derive(Default)]
struct Run {
    ok: u64,
    failed: u64,
    secs: f64,
    latencies: Vec<Duration>,
}

async fn closed_loop(op: &Op, concurrency: usize, dur: Duration, keep_latencies: bool) -> Run {
    let start = Instant::now();
    let end = start + dur;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut lat = Vec::new();
                while Instant::now() < end {
                    let t = Instant::now();
                    if op().await {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                    if keep_latencies {
                        lat.push(t.elapsed());
                    }
                }
                (ok, failed, lat)
            })
        })
        .collect();
    let mut run = Run {
        ok: 0,
        failed: 0,
        secs: 0.0,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (ok, failed, lat) = t.await.expect("load task");
        run.ok += ok;
        run.failed += failed;
        run.latencies.extend(lat);
    }
    run.secs = start.elapsed().as_secs_f64();
    run
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A B A B …: the medians of throughput, ours first.
async fn interleaved(cfg: Cfg, concurrency: usize, ours: &Op, base: &Op) -> (f64, f64) {
    closed_loop(ours, concurrency, cfg.warm, false).await;
    closed_loop(base, concurrency, cfg.warm, false).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..cfg.rounds {
        let r = closed_loop(ours, concurrency, cfg.run, false).await;
        assert!(r.failed == 0 || r.ok > 0, "ours: every call failed");
        a.push(r.ok as f64 / r.secs);
        let r = closed_loop(base, concurrency, cfg.run, false).await;
        assert!(r.failed == 0 || r.ok > 0, "baseline: every call failed");
        b.push(r.ok as f64 / r.secs);
    }
    (median(&mut a), median(&mut b))
}

fn throughput_row(scenario: &str, (ours, base): (f64, f64), goal: f64) -> Row {
    let row = Row {
        scenario: scenario.to_owned(),
        metric: "req/s",
        ours,
        baseline: base,
        ratio: ours / base,
        goal,
        at_least: true,
    };
    eprintln!(
        "  {scenario}: ours {ours:.0}/s, baseline {base:.0}/s, ratio {:.3}",
        row.ratio
    );
    row
}

// ---------- clients ----------

fn raw_hyper() -> Client<HttpConnector, Empty<Bytes>> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(http)
}

async fn hyper_get_json(client: &Client<HttpConnector, Empty<Bytes>>, uri: &http::Uri) -> bool {
    let req = http::Request::get(uri.clone())
        .body(Empty::new())
        .expect("request");
    match client.request(req).await {
        Ok(resp) => decodes(resp).await,
        Err(_) => false,
    }
}

/// Whether an answer is a 2xx whose body decodes as an [`Item`].
async fn decodes<B: hyper::body::Body>(resp: http::Response<B>) -> bool {
    if !resp.status().is_success() {
        return false;
    }
    let Ok(body) = resp.into_body().collect().await else {
        return false;
    };
    serde_json::from_slice::<Item>(&body.to_bytes()).is_ok()
}

fn raw_hyper_op(url: &str) -> Op {
    let client = raw_hyper();
    let uri: http::Uri = url.parse().expect("uri");
    op(move || {
        let client = client.clone();
        let uri = uri.clone();
        async move { hyper_get_json(&client, &uri).await }
    })
}

/// A raw loop on the chain's own transport: one `HyperTransport::send`
/// per call, its body read and decoded, no chain. Chain ÷ this is the
/// chain's own cost, whatever the transport's.
fn own_transport_op(url: &str) -> Op {
    use fallback_chain::transport::{HyperTransport, RequestBody, Transport};
    let transport = std::sync::Arc::new(HyperTransport::new());
    let uri: http::Uri = url.parse().expect("uri");
    op(move || {
        let transport = transport.clone();
        let mut req = http::Request::new(RequestBody::empty());
        *req.uri_mut() = uri.clone();
        async move {
            match transport.send(req).await {
                Ok(resp) => decodes(resp).await,
                Err(_) => false,
            }
        }
    })
}

fn chain_op(chain: Chain) -> Op {
    op(move || {
        let chain = chain.clone();
        async move { chain.call_json::<Item>().await.is_ok() }
    })
}

fn links(urls: &[String]) -> Vec<Link> {
    urls.iter().map(|u| Link::get(u.clone())).collect()
}

// ---------- scenarios ----------

async fn healthy(cfg: Cfg, want: &dyn Fn(&str) -> bool) -> Vec<Row> {
    eprintln!("healthy: typed-JSON calls, primary healthy");
    let s = HyperServer::start(Kind::Healthy);
    let s2 = HyperServer::start(Kind::Healthy);
    let s3 = HyperServer::start(Kind::Healthy);
    let one = Chain::builder()
        .links(links(&[s.url()]))
        .build()
        .expect("chain");
    let three = Chain::builder()
        .links(links(&[s.url(), s2.url(), s3.url()]))
        .build()
        .expect("chain");
    let base = raw_hyper_op(&s.url());
    let mut rows = Vec::new();
    // Profiling aid: load one side alone for a while.
    if let Ok(side) = std::env::var("FALLBACK_BENCH_PROFILE") {
        let nobreak = Chain::builder()
            .breaker(None)
            .links(links(&[s.url()]))
            .build()
            .expect("chain");
        let o = match side.as_str() {
            "ours" => chain_op(one.clone()),
            "nobreaker" => chain_op(nobreak),
            "bytes" => {
                let c = one.clone();
                op(move || {
                    let c = c.clone();
                    async move {
                        c.call()
                            .await
                            .map(|r| serde_json::from_slice::<Item>(r.body()).is_ok())
                            .unwrap_or(false)
                    }
                })
            }
            _ => base.clone(),
        };
        let r = closed_loop(&o, 64, Duration::from_secs(8), false).await;
        eprintln!("{side}: {:.0}/s", r.ok as f64 / r.secs);
        return rows;
    }
    for c in [1usize, 64] {
        if !want(&format!("healthy_c{c}")) {
            continue;
        }
        rows.push(throughput_row(
            &format!("healthy_c{c}"),
            interleaved(cfg, c, &chain_op(one.clone()), &base).await,
            0.97,
        ));
        rows.push(throughput_row(
            &format!("healthy_c{c}_3links"),
            interleaved(cfg, c, &chain_op(three.clone()), &base).await,
            0.97,
        ));
    }
    if want("healthy_c64_own_transport") {
        rows.push(throughput_row(
            "healthy_c64_own_transport",
            interleaved(cfg, 64, &chain_op(one.clone()), &own_transport_op(&s.url())).await,
            0.97,
        ));
    }
    if !want("healthy_reqwest_c64") {
        return rows;
    }
    // The reqwest transport against raw reqwest, with the same client.
    let client = reqwest::Client::builder().build().expect("reqwest");
    let chain = Chain::builder()
        .transport(fallback_chain::transport::ReqwestTransport::new(
            client.clone(),
        ))
        .links(links(&[s.url()]))
        .build()
        .expect("chain");
    let url = s.url();
    let base = op(move || {
        let client = client.clone();
        let url = url.clone();
        async move {
            let Ok(resp) = client.get(&url).send().await else {
                return false;
            };
            if !resp.status().is_success() {
                return false;
            }
            let Ok(body) = resp.bytes().await else {
                return false;
            };
            serde_json::from_slice::<Item>(&body).is_ok()
        }
    });
    rows.push(throughput_row(
        "healthy_reqwest_c64",
        interleaved(cfg, 64, &chain_op(chain), &base).await,
        0.97,
    ));
    rows
}

async fn failing_primaries(cfg: Cfg, want: &dyn Fn(&str) -> bool) -> Vec<Row> {
    eprintln!("failing primaries: refused, 503, black hole, with and without breakers");
    let healthy = HyperServer::start(Kind::Healthy);
    let unavailable = HyperServer::start(Kind::Unavailable);
    let refused = Server::refused();
    let hole = Server::start(Behavior::BlackHole);
    let direct = raw_hyper_op(&healthy.url());
    let mut rows = Vec::new();
    let c = 32;

    if want("refused_primary") {
        let chain = Chain::builder()
            .links(links(&[refused.url("/item"), healthy.url()]))
            .build()
            .expect("chain");
        rows.push(throughput_row(
            "refused_primary",
            interleaved(cfg, c, &chain_op(chain), &direct).await,
            0.95,
        ));
    }
    if want("failing_primary_503") {
        let chain = Chain::builder()
            .links(links(&[
                format!("http://{}/item", unavailable.addr),
                healthy.url(),
            ]))
            .build()
            .expect("chain");
        rows.push(throughput_row(
            "failing_primary_503",
            interleaved(cfg, c, &chain_op(chain), &direct).await,
            0.95,
        ));
    }
    if want("naive_refused_primary") {
        let chain = Chain::builder()
            .breaker(None)
            .links(links(&[refused.url("/item"), healthy.url()]))
            .build()
            .expect("chain");
        let client = raw_hyper();
        let uris: Arc<[http::Uri]> = Arc::from([
            refused.url("/item").parse().expect("uri"),
            healthy.url().parse().expect("uri"),
        ]);
        // The hand-written "try the next URL on error" loop.
        let naive = op(move || {
            let client = client.clone();
            let uris = uris.clone();
            async move {
                for uri in uris.iter() {
                    if hyper_get_json(&client, uri).await {
                        return true;
                    }
                }
                false
            }
        });
        if let Ok(side) = std::env::var("FALLBACK_BENCH_PROFILE") {
            let o = if side == "ours" {
                chain_op(chain.clone())
            } else {
                naive.clone()
            };
            let r = closed_loop(&o, c, Duration::from_secs(6), false).await;
            eprintln!("{side}: {:.0}/s", r.ok as f64 / r.secs);
            return rows;
        }
        rows.push(throughput_row(
            "naive_refused_primary",
            interleaved(cfg, c, &chain_op(chain), &naive).await,
            1.0,
        ));
    }
    if want("blackhole_primary") {
        let chain = Chain::builder()
            .timeout(Duration::from_millis(100))
            .breaker(BreakerConfig::new())
            .links(links(&[hole.url("/item"), healthy.url()]))
            .build()
            .expect("chain");
        // Steady state: let the breaker open first.
        for _ in 0..6 {
            let _ = chain.call_json::<Item>().await;
        }
        rows.push(throughput_row(
            "blackhole_primary",
            interleaved(cfg, c, &chain_op(chain), &direct).await,
            0.95,
        ));
    }
    rows
}

/// Every link down: the load that reaches the dead servers, how fast calls
/// fail, and how soon a link that comes back is found. Fail-fast (the
/// default) against Envoy's panic mode (`AllOpen::try_soonest`).
async fn all_down(cfg: Cfg) -> Vec<Row> {
    use std::sync::atomic::{AtomicBool, Ordering};
    eprintln!("all_down: two links answering 503, 64 callers; then the second comes back");
    let c = 64;
    let run = cfg.run.max(Duration::from_secs(1));
    let mut out = Vec::new();
    let mut figures = Vec::new();
    for soonest in [false, true] {
        let up = Arc::new(AtomicBool::new(false));
        let a = Server::builder(Behavior::status(503)).threads(2).start();
        let flag = up.clone();
        let b = Server::builder(Behavior::custom(move |_, _| {
            if flag.load(Ordering::Relaxed) {
                Reply::json(200, server::ITEM).into()
            } else {
                Behavior::status(503)
            }
        }))
        .threads(2)
        .start();
        let mut builder = Chain::builder().links(links(&[a.url("/item"), b.url("/item")]));
        if soonest {
            builder = builder.all_open(fallback_chain::AllOpen::try_soonest());
        }
        let chain = builder.build().expect("chain");
        // Open both breakers.
        for _ in 0..6 {
            let _ = chain.call_json::<Item>().await;
        }
        let before = a.request_count() + b.request_count();
        let r = closed_loop(&chain_op(chain.clone()), c, run, true).await;
        let sent = (a.request_count() + b.request_count() - before) as f64 / r.secs;
        let mut lat: Vec<f64> = r.latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        lat.sort_by(|x, y| x.total_cmp(y));
        let p99 = lat[((lat.len() as f64 * 0.99) as usize).min(lat.len() - 1)];
        let calls = (r.ok + r.failed) as f64 / r.secs;
        // b comes back just after its last probe, the worst moment: how
        // long until a call succeeds?
        let probes = b.request_count();
        let t = Instant::now();
        while b.request_count() == probes && t.elapsed() < Duration::from_secs(3) {
            closed_loop(&chain_op(chain.clone()), c, Duration::from_millis(5), false).await;
        }
        up.store(true, Ordering::Relaxed);
        let t = Instant::now();
        let recovered = loop {
            let done = closed_loop(
                &chain_op(chain.clone()),
                c,
                Duration::from_millis(20),
                false,
            )
            .await;
            if done.ok > 0 {
                break t.elapsed();
            }
            if t.elapsed() > Duration::from_secs(30) {
                break t.elapsed();
            }
        };
        let name = if soonest { "try_soonest" } else { "fail_fast" };
        eprintln!(
            "  all_down ({name}): {calls:.0} calls/s, {sent:.1} requests/s reach the dead servers, p99 {p99:.3} ms; recovered in {:.0} ms",
            recovered.as_secs_f64() * 1e3
        );
        figures.push((sent, p99, recovered.as_secs_f64() * 1e3));
    }
    let (ours, base) = (figures[0], figures[1]);
    out.push(Row {
        scenario: "all_down_requests_per_s".into(),
        metric: "requests_per_s_to_dead_links",
        ours: ours.0,
        baseline: base.0,
        ratio: ours.0,
        goal: 10.0,
        at_least: false,
    });
    out.push(Row {
        scenario: "all_down_fail_p99".into(),
        metric: "p99_ms",
        ours: ours.1,
        baseline: base.1,
        ratio: ours.1,
        goal: 1.0,
        at_least: false,
    });
    out.push(Row {
        scenario: "all_down_recover".into(),
        metric: "ms_to_first_success",
        ours: ours.2,
        baseline: base.2,
        ratio: ours.2,
        goal: 1100.0,
        at_least: false,
    });
    out
}

async fn slow_tail(cfg: Cfg, svg: &std::path::Path) -> Vec<Row> {
    eprintln!("slow_tail: 5% of the primary's answers take 250 ms; adaptive hedging against none");
    let c = 16;
    let mut p99 = (Vec::new(), Vec::new());
    let (mut all_hedged, mut all_plain) = (Vec::new(), Vec::new());
    let (mut calls, mut sent) = (0u64, 0u64);
    let backup = HyperServer::start(Kind::Healthy);
    for _ in 0..cfg.rounds {
        for hedged in [true, false] {
            // A fresh primary per run, so its 5 % schedule starts anew.
            let primary = HyperServer::start(Kind::SlowTail);
            let mut b = Chain::builder().links(links(&[primary.url(), backup.url()]));
            if hedged {
                b = b.hedge(Hedge::adaptive());
            }
            let chain = b.build().expect("chain");
            let before = backup.count();
            let run = closed_loop(
                &chain_op(chain),
                c,
                cfg.run.max(Duration::from_millis(1500)),
                true,
            )
            .await;
            let mut lat: Vec<f64> = run
                .latencies
                .iter()
                .map(|d| d.as_secs_f64() * 1e3)
                .collect();
            lat.sort_by(|a, b| a.total_cmp(b));
            let p = lat[((lat.len() as f64 * 0.99) as usize).min(lat.len() - 1)];
            if hedged {
                p99.0.push(p);
                calls += run.ok + run.failed;
                sent += primary.count() + (backup.count() - before);
                all_hedged.extend(lat);
            } else {
                p99.1.push(p);
                all_plain.extend(lat);
            }
        }
    }
    let (ours, base) = (median(&mut p99.0), median(&mut p99.1));
    let extra = (sent.saturating_sub(calls)) as f64 / calls as f64;
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    eprintln!(
        "  slow_tail: hedged p50 {:.2} ms, p99 {ours:.2} ms; unhedged p50 {:.2} ms, p99 {base:.2} ms; extra requests {:.1}%",
        pct(&mut all_hedged, 0.5),
        pct(&mut all_plain, 0.5),
        extra * 100.0
    );
    if let Err(e) = plot(svg, &mut all_hedged, &mut all_plain) {
        eprintln!("  (no plot: {e})");
    }
    vec![
        Row {
            scenario: "slow_tail".into(),
            metric: "p99_ms",
            ours,
            baseline: base,
            ratio: ours / base,
            goal: 0.3,
            at_least: false,
        },
        Row {
            scenario: "slow_tail_extra_requests".into(),
            metric: "extra_requests_fraction",
            ours: extra,
            baseline: 0.0,
            ratio: extra,
            goal: 0.1,
            at_least: false,
        },
    ]
}

/// The latency distribution (CDF, log time axis) with and without hedging.
fn plot(
    path: &std::path::Path,
    hedged: &mut [f64],
    plain: &mut [f64],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    hedged.sort_by(|a, b| a.total_cmp(b));
    plain.sort_by(|a, b| a.total_cmp(b));
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let lo = hedged
        .first()
        .copied()
        .unwrap_or(0.01)
        .min(plain.first().copied().unwrap_or(0.01))
        .max(0.01);
    let hi = hedged
        .last()
        .copied()
        .unwrap_or(1.0)
        .max(plain.last().copied().unwrap_or(1.0))
        * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "slow_tail: latency CDF (5% of primary answers take 250 ms)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("percent of calls at or below")
        .draw()?;
    let cdf = |v: &[f64]| -> Vec<(f64, f64)> {
        let n = v.len().max(1) as f64;
        let step = (v.len() / 2000).max(1);
        v.iter()
            .enumerate()
            .step_by(step)
            .map(|(i, &x)| (x, (i + 1) as f64 * 100.0 / n))
            .chain(v.last().map(|&x| (x, 100.0)))
            .collect()
    };
    chart
        .draw_series(LineSeries::new(cdf(plain), RED.stroke_width(2)))?
        .label("no hedging")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(LineSeries::new(cdf(hedged), BLUE.stroke_width(2)))?
        .label("adaptive hedging (p95)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    eprintln!("  wrote {}", path.display());
    Ok(())
}

// ---------- memory per in-flight call (child processes) ----------

fn memory(cfg: Cfg) -> Option<Vec<Row>> {
    eprintln!(
        "memory_inflight: {} calls in flight against a slow server",
        cfg.mem_calls
    );
    let mut server = Command::new(std::env::current_exe().ok()?)
        .args(["__serve_slow", &cfg.mem_delay_ms.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    let url = format!("http://127.0.0.1:{}/item", line.trim());
    let measure = |who: &str| -> Option<f64> {
        let out = Command::new(std::env::current_exe().ok()?)
            .args(["__mem", who, &url, &cfg.mem_calls.to_string()])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let parsed = text.trim().parse().ok();
        if parsed.is_none() {
            // Too few file descriptors, say: report it, do not fail the run.
            eprintln!(
                "  skipped: the {who} probe failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parsed
    };
    let result = measure("ours").zip(measure("raw"));
    // The documented knob: an exact read buffer per connection.
    let small = measure("ours_buf=2048");
    // The smallest read buffer the transport accepts.
    let smallest = measure("ours_buf=1024");
    drop(server.stdin.take());
    let _ = server.kill();
    let _ = server.wait();
    let (ours, base) = result?;
    eprintln!("  memory_inflight: {ours:.1} KiB per call (raw hyper {base:.1} KiB)");
    let row = |scenario: &str, ours: f64| Row {
        scenario: scenario.into(),
        metric: "KiB_per_inflight_call",
        ours,
        baseline: base,
        ratio: ours,
        goal: 16.0,
        at_least: false,
    };
    let mut rows = vec![row("memory_inflight", ours)];
    if let Some(small) = small {
        eprintln!("  memory_inflight_read_buf_2k: {small:.1} KiB per call");
        rows.push(row("memory_inflight_read_buf_2k", small));
    }
    if let Some(smallest) = smallest {
        eprintln!("  memory_inflight_read_buf_1k: {smallest:.1} KiB per call");
        rows.push(row("memory_inflight_read_buf_1k", smallest));
    }
    Some(rows)
}

fn serve_slow(delay_ms: u64) {
    let s = Server::builder(Reply::json(200, ITEM).delay(Duration::from_millis(delay_ms)))
        .threads(1)
        .backlog(16384)
        .start();
    println!("{}", s.addr().port());
    std::io::stdout().flush().expect("flush");
    // Serve until the parent closes stdin.
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
}

fn rss_kib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4.0
}

fn mem_child(who: &str, url: &str, calls: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let kib = rt.block_on(async {
        let op: Op = if who.starts_with("ours") {
            let mut b = Chain::builder()
                .timeout(Duration::from_secs(60))
                .links(links(&[url.to_owned()]));
            if let Some(size) = who
                .strip_prefix("ours_buf=")
                .and_then(|n| n.parse::<usize>().ok())
            {
                b = b.transport_options(
                    fallback_chain::transport::HyperTransport::builder()
                        .http1_read_buf_exact_size(size),
                );
            }
            chain_op(b.build().expect("chain"))
        } else {
            raw_hyper_op(url)
        };
        // Warm up: one call, so the runtime and pool exist before "idle".
        assert!(op().await, "warm-up call failed");
        let idle = rss_kib();
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(idle as u64));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    peak.fetch_max(rss_kib() as u64, std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let tasks: Vec<_> = (0..calls)
            .map(|_| {
                let op = op.clone();
                tokio::spawn(async move { op().await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap_or(false));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sampler.join().expect("sampler");
        assert!(ok * 10 >= calls * 9, "only {ok} of {calls} calls succeeded");
        (peak.load(std::sync::atomic::Ordering::Relaxed) as f64 - idle) / calls as f64
    });
    println!("{kib:.2}");
}

// ---------- the CLI against curl ----------

fn cli_single(cfg: Cfg) -> Option<Row> {
    eprintln!(
        "cli_single: `fallback send URL` against `curl -s URL`, {} runs each",
        cfg.cli_runs
    );
    let Some(exe) = serve::fallback_exe() else {
        eprintln!("  skipped: no fallback binary beside this one");
        return None;
    };
    if Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("  skipped: curl is not installed");
        return None;
    }
    let s = HyperServer::start(Kind::Healthy);
    let url = s.url();
    let time = |cmd: &mut Command| -> Duration {
        let t = Instant::now();
        let st = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run");
        assert!(st.success(), "{cmd:?} failed");
        t.elapsed()
    };
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..cfg.cli_runs {
        ours += time(Command::new(&exe).args(["send", &url]));
        base += time(Command::new("curl").args(["-s", &url]));
    }
    let per = |d: Duration| d.as_secs_f64() * 1e3 / cfg.cli_runs as f64;
    let (o, b) = (per(ours), per(base));
    eprintln!("  cli_single: {o:.2} ms per run vs curl {b:.2} ms");
    Some(Row {
        scenario: "cli_single".into(),
        metric: "ms_per_run",
        ours: o,
        baseline: b,
        ratio: o / b,
        goal: 1.5,
        at_least: false,
    })
}

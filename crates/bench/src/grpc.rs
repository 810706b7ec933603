//! The `grpc` group: unary gRPC calls through `fallback serve --workers 1`
//! and through nginx's `grpc_pass` (one worker), h2c on both sides, tonic
//! servers upstream and a tonic client in front; and `soak_grpc`, the
//! primary cycling through serving, `UNAVAILABLE`, refused and killed
//! while the backup serves.

use std::time::{Duration, Instant};

use fallback_chain_testserver::grpc::{GrpcServer, Mode, Msg};
use fallback_chain_testserver::Server;
use http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use super::serve::{start_nginx_with, start_ours_with, Running};
use super::{closed_loop, median, Cfg, Row};

/// The primary's state, the backup serving.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Primary {
    Healthy,
    Refused,
    Unavailable,
}

impl Primary {
    fn name(self) -> &'static str {
        match self {
            Primary::Healthy => "healthy",
            Primary::Refused => "refused",
            Primary::Unavailable => "unavailable",
        }
    }
}

fn start_nginx_grpc(primary: &str, backup: &str) -> Option<Running> {
    start_nginx_with(
        primary,
        backup,
        " http2",
        "grpc_pass grpc://chain;
      grpc_next_upstream error timeout;
      grpc_connect_timeout 1s;
      grpc_send_timeout 1s;
      grpc_read_timeout 1s;",
    )
}

fn start_ours_grpc(primary: &str, backup: &str, extra: &[&str]) -> Option<Running> {
    let mut args = vec![
        "--http2-prior-knowledge",
        "--timeout",
        "1s",
        "--connect-timeout",
        "1s",
    ];
    args.extend_from_slice(extra);
    args.push(primary);
    args.push(backup);
    start_ours_with(&args)
}

/// A unary `Say` through `port`, counting only an `OK` with the answer.
async fn load(port: u16) -> Option<super::Op> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    Some(super::op(move || {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        async move { say(&mut grpc).await }
    }))
}

async fn say(grpc: &mut tonic::client::Grpc<Channel>) -> bool {
    if grpc.ready().await.is_err() {
        return false;
    }
    let path = PathAndQuery::from_static("/test.Echo/Say");
    let codec = ProstCodec::<Msg, Msg>::default();
    match grpc
        .unary(tonic::Request::new(Msg::new("x")), path, codec)
        .await
    {
        Ok(r) => r.into_inner().text.ends_with(": x"),
        Err(e) => {
            static SHOWN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
                eprintln!("  a failed call: {e:?}");
            }
            false
        }
    }
}

pub(super) async fn grpc_group(cfg: Cfg) -> Vec<Row> {
    eprintln!(
        "grpc: unary calls through fallback serve vs nginx grpc_pass (1 worker each), 32 callers"
    );
    if super::serve::fallback_exe().is_none() {
        eprintln!("  skipped: no fallback binary");
        return Vec::new();
    }
    let c = 32;
    let mut rows = Vec::new();
    let backup = GrpcServer::start("backup", Mode::Serve);
    for primary in [Primary::Healthy, Primary::Refused, Primary::Unavailable] {
        let healthy = GrpcServer::start("primary", Mode::Serve);
        let unavailable = GrpcServer::start("primary", Mode::Fail(14, "draining".into()));
        let refused = Server::refused();
        let primary_url = match primary {
            Primary::Healthy => healthy.url(),
            Primary::Unavailable => unavailable.url(),
            Primary::Refused => format!("http://{}", refused.addr()),
        };
        let targets = [
            start_ours_grpc(&primary_url, &backup.url(), &[]),
            start_nginx_grpc(&primary_url, &backup.url()),
        ];
        let mut ops = Vec::new();
        for t in &targets {
            ops.push(match t {
                Some(r) => load(r.port()).await,
                None => None,
            });
        }
        for o in ops.iter().flatten() {
            closed_loop(o, c, cfg.warm.max(Duration::from_millis(300)), false).await;
        }
        let mut rates = [Vec::new(), Vec::new()];
        let mut errors = [0u64, 0u64];
        for _ in 0..cfg.rounds {
            for (i, o) in ops.iter().enumerate() {
                let Some(o) = o else { continue };
                let r = closed_loop(o, c, cfg.run, false).await;
                rates[i].push(r.ok as f64 / r.secs);
                errors[i] += r.failed;
            }
        }
        let name = primary.name();
        let ours = if rates[0].is_empty() {
            0.0
        } else {
            median(&mut rates[0])
        };
        match rates[1].is_empty() {
            true => eprintln!("  grpc_{name}_vs_nginx: nginx not installed or not answering"),
            false => {
                let nginx = median(&mut rates[1]);
                if primary == Primary::Healthy {
                    rows.push(super::throughput_row(
                        "grpc_healthy_vs_nginx",
                        (ours, nginx),
                        1.0,
                    ));
                } else {
                    eprintln!(
                        "  grpc_{name}: ours {ours:.0}/s, nginx {nginx:.0}/s, ratio {:.3}",
                        ours / nginx
                    );
                }
            }
        }
        eprintln!(
            "  grpc_{name}_client_errors: ours {}, nginx {}",
            errors[0], errors[1]
        );
        rows.push(Row {
            scenario: format!("grpc_{name}_client_errors"),
            metric: "errors",
            ours: errors[0] as f64,
            baseline: errors[1] as f64,
            ratio: errors[0] as f64,
            goal: 0.0,
            at_least: false,
        });
    }
    rows
}

/// The primary cycles through serving, `UNAVAILABLE`, refused (stopped)
/// and killed mid-load (stopped under calls), each phase `phase` long,
/// while 16 callers make unary calls through `fallback serve` on an
/// idempotent route; every call that does not come back `OK` counts.
pub(super) async fn soak_grpc(cfg: Cfg) -> Vec<Row> {
    let phase = if cfg.rounds <= 3 {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    eprintln!("soak_grpc: primary cycling serving / UNAVAILABLE / refused / killed, {phase:?} each, 16 callers");
    let backup = GrpcServer::start("backup", Mode::Serve);
    let mut primary = Some(GrpcServer::start("primary", Mode::Serve));
    let addr = primary.as_ref().map(GrpcServer::addr).expect("primary");
    let Some(proxy) = start_ours_grpc(&format!("http://{addr}"), &backup.url(), &["--idempotent"])
    else {
        eprintln!("  skipped: no fallback binary");
        return Vec::new();
    };
    let Some(op) = load(proxy.port()).await else {
        eprintln!("  skipped: the proxy did not answer");
        return Vec::new();
    };
    let load = {
        let op = op.clone();
        tokio::spawn(async move { closed_loop(&op, 16, phase * 8, false).await })
    };
    let started = Instant::now();
    for cycle in 0..2 {
        // Serving, then UNAVAILABLE, then refused, then killed under load
        // and back: two cycles of four phases.
        let p = primary.get_or_insert_with(|| GrpcServer::restart_at(addr, "primary", Mode::Serve));
        p.set_mode(Mode::Serve);
        tokio::time::sleep(phase).await;
        p.set_mode(Mode::Fail(14, "draining".into()));
        tokio::time::sleep(phase).await;
        primary = None; // stopped: refused from now on
        tokio::time::sleep(phase).await;
        let p = GrpcServer::restart_at(addr, "primary", Mode::Serve);
        tokio::time::sleep(phase / 2).await;
        drop(p); // killed with calls in flight
        tokio::time::sleep(phase / 2).await;
        eprintln!("  cycle {} done at {:.1?}", cycle + 1, started.elapsed());
    }
    let run = load.await.unwrap_or_default();
    eprintln!(
        "  soak_grpc: {} calls OK, {} failed ({:.0}/s)",
        run.ok,
        run.failed,
        run.ok as f64 / run.secs.max(1e-9)
    );
    vec![Row {
        scenario: "soak_grpc_client_errors".into(),
        metric: "errors",
        ours: run.failed as f64,
        baseline: 0.0,
        ratio: run.failed as f64,
        goal: 0.0,
        at_least: false,
    }]
}

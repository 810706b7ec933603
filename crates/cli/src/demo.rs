//! `fallback demo`: misbehaving servers on 127.0.0.1, and calls that fail
//! over through them.

use std::process::ExitCode;
use std::time::Duration;

use fallback_chain::{BreakerConfig, Chain, Hedge, Link};
use fallback_chain_testserver::{Behavior, Reply, Server};

use crate::print::outln;
use crate::{report, runtime, Usage};

fn title(n: usize, text: &str) {
    outln!("\n{n}. {text}");
}

fn show(r: &fallback_chain::Report, status: Option<u16>) {
    for line in report::text(r, status).lines() {
        outln!("   {line}");
    }
}

pub fn run() -> Result<ExitCode, Usage> {
    let refused = Server::refused();
    let black_hole = Server::start(Behavior::BlackHole);
    let unavailable = Server::start(
        Reply::json(503, r#"{"message": "maintenance"}"#).header("retry-after", "120"),
    );
    let garbage = Server::start(Behavior::invalid_json());
    let slow = Server::start(
        Reply::json(200, r#"{"from": "slow primary"}"#).delay(Duration::from_secs(2)),
    );
    let healthy = Server::start(Behavior::ok_json(r#"{"id": 42, "status": "shipped"}"#));
    outln!("Servers on 127.0.0.1: refused :{}, black hole :{}, 503 :{}, bad JSON :{}, slow :{}, healthy :{}",
        refused.addr().port(), black_hole.addr().port(), unavailable.addr().port(),
        garbage.addr().port(), slow.addr().port(), healthy.addr().port());

    let build = |b: fallback_chain::ChainBuilder| b.build().map_err(|e| Usage(e.to_string()));
    let rt = runtime();
    rt.block_on(async {
        title(
            1,
            "GET /orders/42 along five links: refused, never answers, 503, bad JSON, healthy",
        );
        let chain = build(
            Chain::builder()
                .timeout(Duration::from_millis(300))
                .link(Link::get(refused.url("/orders/42")).name("system-1"))
                .link(Link::get(black_hole.url("/orders/42")).name("backup-1"))
                .link(Link::get(unavailable.url("/orders/42")).name("backup-2"))
                .link(Link::get(garbage.url("/orders/42")).name("backup-3"))
                .link(Link::get(healthy.url("/orders/42")).name("backup-4")),
        )?;
        match chain.call_json::<serde_json::Value>().await {
            Ok(resp) => {
                show(resp.report(), Some(resp.status().as_u16()));
                outln!("   body: {}", resp.body());
            }
            Err(f) => show(f.report(), None),
        }

        title(
            2,
            "Hedging: the primary takes 2 s, so the backup starts after 100 ms",
        );
        let chain = build(
            Chain::builder()
                .hedge(Hedge::fixed(Duration::from_millis(100)))
                .link(Link::get(slow.url("/orders/42")).name("primary"))
                .link(Link::get(healthy.url("/orders/42")).name("backup")),
        )?;
        if let Ok(resp) = chain.call().await {
            show(resp.report(), Some(resp.status().as_u16()));
        }

        title(
            3,
            "A breaker: after two failures the dead primary is skipped at no cost",
        );
        let chain = build(
            Chain::builder()
                .breaker(BreakerConfig::new().consecutive_failures(2))
                .link(Link::get(refused.url("/orders/42")).name("primary"))
                .link(Link::get(healthy.url("/orders/42")).name("backup")),
        )?;
        for call in 1..=3 {
            if let Ok(resp) = chain.call().await {
                outln!("   call {call}:");
                show(resp.report(), Some(resp.status().as_u16()));
            }
        }

        title(
            4,
            "Every link down: the last status and its body come back, with the trail",
        );
        let chain = build(
            Chain::builder()
                .link(Link::get(refused.url("/orders/42")).name("system-1"))
                .link(Link::get(unavailable.url("/orders/42")).name("backup-1")),
        )?;
        if let Err(e) = chain.call().await {
            show(e.report(), None);
            outln!("   error: {e}");
            outln!(
                "   last body: {}",
                String::from_utf8_lossy(e.body().map(|b| &b[..]).unwrap_or(b""))
            );
        }

        title(
            5,
            "A POST to a server that never answers is not re-sent (its outcome is unknown)",
        );
        let order = serde_json::json!({"item": "book", "qty": 1});
        let chain = build(
            Chain::builder()
                .timeout(Duration::from_millis(300))
                .link(
                    Link::post(black_hole.url("/orders"))
                        .name("system-1")
                        .json(&order),
                )
                .link(
                    Link::post(healthy.url("/orders"))
                        .name("backup-1")
                        .json(&order),
                ),
        )?;
        if let Err(e) = chain.call().await {
            show(e.report(), None);
            outln!("   error: {e}");
        }
        let posts = healthy
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count();
        outln!("   backup-1 received {posts} POST(s)");
        Ok(ExitCode::SUCCESS)
    })
}

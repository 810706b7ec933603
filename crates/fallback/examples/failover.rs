//! Starts misbehaving servers on loopback and sends calls through chains
//! that fail over, printing what happened at each link.
//!
//! Run: `cargo run -p fallback-chain --example failover`

use std::time::Duration;

use fallback_chain::{Chain, Link, Report};
use fallback_chain_testserver::{Behavior, Reply, Server};
use serde::Deserialize;

#[derive(Deserialize, Debug)]
struct Order {
    id: u64,
    status: String,
}

#[derive(Deserialize, Debug)]
struct ApiError {
    message: String,
}

fn show(title: &str, report: &Report) {
    println!("\n{title}");
    for a in report.attempts() {
        let status = a
            .status()
            .map(|s| s.as_u16().to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "  link {} {:<10} try {}  {:<9} status {:<3}  {:>8.1?}  {}",
            a.link(),
            a.name(),
            a.try_number(),
            a.outcome(),
            status,
            a.elapsed(),
            a.error().unwrap_or("")
        );
    }
    match report.winner() {
        Some(w) => println!("  => won by link {w} in {:.1?}", report.elapsed()),
        None => println!("  => every link failed ({:.1?})", report.elapsed()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let refused = Server::refused();
    let black_hole = Server::start(Behavior::BlackHole);
    let unavailable = Server::start(Reply::json(503, r#"{"message": "maintenance"}"#));
    let garbage = Server::start(Behavior::invalid_json());
    let healthy = Server::start(Behavior::ok_json(r#"{"id": 42, "status": "shipped"}"#));

    // System 1 refuses, Backup 1 never answers, Backup 2 answers 503,
    // Backup 3 answers 200 with broken JSON, Backup 4 works.
    let chain = Chain::builder()
        .timeout(Duration::from_millis(300))
        .link(Link::get(refused.url("/orders/42")).name("system-1"))
        .link(Link::get(black_hole.url("/orders/42")).name("backup-1"))
        .link(Link::get(unavailable.url("/orders/42")).name("backup-2"))
        .link(Link::get(garbage.url("/orders/42")).name("backup-3"))
        .link(Link::get(healthy.url("/orders/42")).name("backup-4"))
        .build()?;
    let resp = chain.call_json::<Order>().await?;
    show("GET /orders/42 through five links:", resp.report());
    println!("  order {} is {}", resp.body().id, resp.body().status);

    // Every link fails: the caller gets the last status, its body decoded
    // as the error type, and the whole trail.
    let chain = Chain::builder()
        .link(Link::get(refused.url("/orders/42")).name("system-1"))
        .link(Link::get(unavailable.url("/orders/42")).name("backup-1"))
        .build()?;
    let fail = chain.call_json::<Order>().await.unwrap_err();
    show("GET /orders/42 when every link is down:", fail.report());
    println!(
        "  error: {fail}\n  last status {:?}, message {:?}",
        fail.status().map(|s| s.as_u16()),
        fail.json::<ApiError>()
            .and_then(Result::ok)
            .map(|e| e.message)
    );

    // A POST whose outcome is unknown is never re-sent.
    let chain = Chain::builder()
        .timeout(Duration::from_millis(300))
        .link(
            Link::post(black_hole.url("/orders"))
                .name("system-1")
                .json(&serde_json::json!({"item": "book"})),
        )
        .link(
            Link::post(healthy.url("/orders"))
                .name("backup-1")
                .json(&serde_json::json!({"item": "book"})),
        )
        .build()?;
    let err = chain.call().await.unwrap_err();
    show("POST /orders to a server that never answers:", err.report());
    println!("  error: {err}");
    println!(
        "  backup-1 received {} requests",
        healthy
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    );
    Ok(())
}

//! Circuit breakers: a dead primary is skipped at no cost, then probed, and
//! calls return to it once it recovers (sticky failover).
//!
//! Run: `cargo run -p fallback-chain --example breakers`

use std::time::Duration;

use fallback_chain::{BreakerConfig, Chain, Link};
use fallback_chain_testserver::{Behavior, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The primary fails 3 times, then recovers.
    let primary = Server::start(Behavior::fail_first(
        3,
        Behavior::status(503),
        Behavior::ok("primary"),
    ));
    let backup = Server::start(Behavior::ok("backup"));
    let chain = Chain::builder()
        .breaker(
            BreakerConfig::new()
                .consecutive_failures(2)
                .break_duration(Duration::from_millis(300)),
        )
        .sticky(true)
        .link(Link::get(primary.url("/")).name("primary"))
        .link(Link::get(backup.url("/")).name("backup"))
        .build()?;
    for call in 1..=14 {
        let resp = chain.call().await?;
        let trail: Vec<_> = resp
            .report()
            .attempts()
            .iter()
            .map(|a| format!("{}:{}", a.name(), a.outcome()))
            .collect();
        let h = &chain.health()[0];
        println!(
            "call {call}: {:<8} {:<40} primary breaker {}",
            String::from_utf8_lossy(resp.body()),
            trail.join(" "),
            h.state()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    Ok(())
}

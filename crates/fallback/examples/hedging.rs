//! Hedged requests: when the primary is slow, the backup starts after the
//! hedge delay and the first whole answer wins.
//!
//! Run: `cargo run -p fallback-chain --example hedging`

use std::time::{Duration, Instant};

use fallback_chain::{Chain, Hedge, Link};
use fallback_chain_testserver::{Behavior, Reply, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every 4th answer from the primary takes a second.
    let primary = Server::start(Behavior::custom(|_, i| {
        if i % 4 == 3 {
            Reply::new(200)
                .body("slow primary")
                .delay(Duration::from_secs(1))
                .into()
        } else {
            Behavior::ok("primary")
        }
    }));
    let backup = Server::start(Behavior::ok("backup"));
    let chain = Chain::builder()
        .hedge(Hedge::fixed(Duration::from_millis(50)))
        .link(Link::get(primary.url("/")).name("primary"))
        .link(Link::get(backup.url("/")).name("backup"))
        .build()?;
    for call in 1..=8 {
        let t = Instant::now();
        let resp = chain.call().await?;
        let trail: Vec<_> = resp
            .report()
            .attempts()
            .iter()
            .map(|a| format!("{}:{}", a.name(), a.outcome()))
            .collect();
        println!(
            "call {call}: {:<8} in {:>8.1?}  {}",
            String::from_utf8_lossy(resp.body()),
            t.elapsed(),
            trail.join(" ")
        );
    }
    println!("hedges sent: {}", backup.request_count());
    Ok(())
}

//! Metrics through the `metrics` facade, exported as Prometheus text on
//! loopback.
//!
//! Run: `cargo run -p fallback-chain --example metrics --features metrics`

use fallback_chain::{BreakerConfig, Chain, Link};
use fallback_chain_testserver::{Behavior, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    // The recorder keeps histogram samples until upkeep folds them in: a
    // long-lived process runs it on a timer, or it grows with every call.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    // The exporter's page, served on 127.0.0.1.
    let exporter = Server::start(Behavior::custom(move |_, _| Behavior::ok(handle.render())));

    let dead = Server::refused();
    let up = Server::start(Behavior::ok("fine"));
    let chain = Chain::builder()
        .breaker(BreakerConfig::new().consecutive_failures(3))
        .link(Link::get(dead.url("/")).name("primary"))
        .link(Link::get(up.url("/")).name("backup"))
        .build()?;
    for _ in 0..10 {
        chain.call().await?;
    }
    let scrape = Chain::builder()
        .link(Link::get(exporter.url("/metrics")))
        .build()?;
    let page = scrape.call().await?;
    for line in String::from_utf8_lossy(page.body())
        .lines()
        .filter(|l| l.starts_with("fallback_"))
    {
        println!("{line}");
    }
    Ok(())
}

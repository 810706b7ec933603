//! Observability with tracing: a span per call, a child span per attempt,
//! a `warn` for each failover and a `debug` for a first-link success.
//!
//! Run: `cargo run -p fallback-chain --example tracing`

use fallback_chain::{Chain, Link};
use fallback_chain_testserver::{Behavior, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_target(false)
        .with_ansi(false)
        .init();
    let down = Server::start(Behavior::status(503));
    let up = Server::start(Behavior::ok("fine"));
    let chain = Chain::builder()
        // Credentials never reach a span, an event, a report or a log.
        .link(Link::get(down.url("/orders?api_key=secret")).name("primary"))
        .link(Link::get(up.url("/orders")).name("backup"))
        .build()?;
    chain.call().await?;
    Ok(())
}

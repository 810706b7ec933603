//! When is a request re-sent? A POST whose outcome is unknown is not; with
//! an Idempotency-Key it is.
//!
//! Run: `cargo run -p fallback-chain --example resend`

use std::time::Duration;

use fallback_chain::{Chain, Link};
use fallback_chain_testserver::{Behavior, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let never_answers = Server::start(Behavior::BlackHole);
    let backup = Server::start(Behavior::Echo);
    let order = serde_json::json!({"item": "book", "qty": 1});

    let plain = Chain::builder()
        .timeout(Duration::from_millis(200))
        .link(Link::post(never_answers.url("/orders")).json(&order))
        .link(Link::post(backup.url("/orders")).json(&order))
        .build()?;
    let err = plain.call().await.unwrap_err();
    println!("without a key: {err}");
    println!("  backup received {} POSTs", backup.request_count());

    let keyed = Chain::builder()
        .timeout(Duration::from_millis(200))
        .header("Idempotency-Key", "order-7f3a")
        .link(Link::post(never_answers.url("/orders")).json(&order))
        .link(Link::post(backup.url("/orders")).json(&order))
        .build()?;
    let resp = keyed.call().await?;
    println!("with a key: {} from link {}", resp.status(), resp.winner());
    println!("  backup received {} POSTs", backup.request_count());
    Ok(())
}

//! Retries with backoff and Retry-After, under a retry budget that stops a
//! retry storm.
//!
//! Run: `cargo run -p fallback-chain --example budgets`

use std::time::Duration;

use fallback_chain::{Chain, ExponentialBackoff, Link, Outcome, RetryBudget};
use fallback_chain_testserver::{Behavior, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let flaky = Server::start(Behavior::fail_first(
        2,
        Behavior::retry_after(503, "0"),
        Behavior::ok("up"),
    ));
    let chain = Chain::builder()
        .retries(3)
        .backoff(
            ExponentialBackoff::new()
                .base(Duration::from_millis(20))
                .seed(1),
        )
        .link(Link::get(flaky.url("/")))
        .build()?;
    let resp = chain.call().await?;
    println!(
        "flaky link: {} after {} tries",
        String::from_utf8_lossy(resp.body()),
        resp.report().attempts().len()
    );

    // A dead link and a budget of 10 % with no floor: most retries are refused.
    let dead = Server::start(Behavior::status(503));
    let backup = Server::start(Behavior::ok("backup"));
    let chain = Chain::builder()
        .retries(2)
        .backoff(ExponentialBackoff::new().base(Duration::from_millis(1)))
        .retry_budget(RetryBudget::new().ratio(0.1).min_per_sec(0.0))
        .breaker(None)
        .link(Link::get(dead.url("/")))
        .link(Link::get(backup.url("/")))
        .build()?;
    let mut skipped = 0;
    for _ in 0..50 {
        let resp = chain.call().await?;
        skipped += resp
            .report()
            .attempts()
            .iter()
            .filter(|a| a.outcome() == Outcome::Skipped)
            .count();
    }
    println!(
        "50 calls: the dead link got {} requests; {skipped} retries were refused by the budget",
        dead.request_count()
    );
    Ok(())
}

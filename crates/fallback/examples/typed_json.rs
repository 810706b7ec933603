//! Typed JSON: the winner's body decoded as your type; on total failure, the
//! last failure's body decoded as your error type, with the whole trail.
//!
//! Run: `cargo run -p fallback-chain --example typed_json`

use fallback_chain::{Chain, Link};
use fallback_chain_testserver::{Behavior, Reply, Server};
use serde::Deserialize;

#[derive(Deserialize, Debug)]
struct Order {
    id: u64,
    status: String,
}

#[derive(Deserialize, Debug)]
struct ApiError {
    code: u16,
    message: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let garbage = Server::start(Behavior::invalid_json());
    let good = Server::start(Behavior::ok_json(r#"{"id": 42, "status": "shipped"}"#));
    let down = Server::start(Reply::json(
        503,
        r#"{"code": 503, "message": "maintenance"}"#,
    ));

    // A 2xx that does not decode is a failed link: the next one is tried.
    let chain = Chain::builder()
        .link(Link::get(garbage.url("/orders/42")).name("garbage"))
        .link(Link::get(good.url("/orders/42")).name("good"))
        .build()?;
    let resp = chain.call_json::<Order>().await?;
    println!(
        "order {} is {} (from {})",
        resp.body().id,
        resp.body().status,
        resp.report().attempts()[1].name()
    );

    // Every link fails: the last failure's body, typed.
    let chain = Chain::builder()
        .link(Link::get(down.url("/orders/42")).name("down"))
        .build()?;
    let fail = chain.call_json::<Order>().await.unwrap_err();
    let e: ApiError = fail.json().expect("a body").expect("a typed error body");
    println!("failed with {:?}: {} {}", fail.status(), e.code, e.message);
    Ok(())
}

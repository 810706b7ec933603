//! The blocking API, for programs without an async runtime.
//!
//! Run: `cargo run -p fallback-chain --example blocking --features blocking`

use std::time::Duration;

use fallback_chain::{blocking, Chain, Link};
use fallback_chain_testserver::{Behavior, Server};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hole = Server::start(Behavior::BlackHole);
    let up = Server::start(Behavior::ok_json(r#"{"ok": true}"#));
    let chain = blocking::Chain::new(
        Chain::builder()
            .timeout(Duration::from_millis(200))
            .link(Link::get(hole.url("/")).name("never-answers"))
            .link(Link::get(up.url("/")).name("backup"))
            .build()?,
    )?;
    let resp = chain.call_json::<serde_json::Value>()?;
    println!(
        "{} from {}",
        resp.body(),
        resp.report().attempts()[resp.report().attempts().len() - 1].name()
    );
    for a in resp.report().attempts() {
        println!("  {a}");
    }
    Ok(())
}

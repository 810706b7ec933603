//! The chain as a tower Service in a stack, and a tower service as one
//! link's transport.
//!
//! Run: `cargo run -p fallback-chain --example tower --features tower-0_3`

use bytes::Bytes;
use fallback_chain::tower::TowerTransport;
use fallback_chain::transport::RequestBody;
use fallback_chain::{Chain, Link};
use fallback_chain_testserver::{Behavior, Server};
use http_body_util::Full;
use tower::{Service, ServiceBuilder, ServiceExt};

type Req = http::Request<Full<Bytes>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let down = Server::refused();
    let up = Server::start(Behavior::Echo);
    // A last resort answered in-process by a plain tower service.
    let cache = tower::service_fn(|req: http::Request<RequestBody>| async move {
        let body = format!("{{\"cached\": true, \"path\": \"{}\"}}", req.uri().path());
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
    });
    let chain = Chain::builder()
        .link(Link::get(down.url("/api")).name("primary"))
        .link(Link::get(up.url("/api")).name("backup"))
        .link(
            Link::get("http://cache.local/api")
                .name("cache")
                .transport(TowerTransport::new(cache)),
        )
        .build()?;
    let mut svc = ServiceBuilder::new().concurrency_limit(16).service(chain);
    let req: Req =
        http::Request::put("/orders/7?x=1").body(Full::new(Bytes::from("{\"qty\": 2}")))?;
    let resp = ServiceExt::<Req>::ready(&mut svc).await?.call(req).await?;
    println!(
        "{} {} via {}",
        resp.status(),
        resp.headers()["x-echo-method"].to_str()?,
        resp.headers()["x-echo-path"].to_str()?
    );
    drop(up);
    let req: Req = http::Request::get("/orders/7").body(Full::new(Bytes::new()))?;
    let resp = ServiceExt::<Req>::ready(&mut svc).await?.call(req).await?;
    use http_body_util::BodyExt;
    println!(
        "{} {}",
        resp.status(),
        String::from_utf8_lossy(
            &resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes()
        )
    );
    Ok(())
}

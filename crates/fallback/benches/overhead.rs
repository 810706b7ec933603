//! The chain's own cost per call, over an in-memory transport that answers
//! at once: no sockets, so the numbers are the engine's overhead alone.
//!
//! `cargo bench -p fallback-chain --bench overhead`

use std::sync::Arc;

use bytes::Bytes;
use fallback_chain::transport::{RequestBody, ResponseBody, SendFuture, Transport};
use fallback_chain::{Chain, Link};
use http_body_util::BodyExt;

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

const ITEM: &[u8] =
    br#"{"id":42,"name":"widget","price":9.99,"tags":["red","small"],"in_stock":true}"#;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Item {
    id: u64,
    name: String,
    price: f64,
    tags: Vec<String>,
    in_stock: bool,
}

/// Answers 200 with `ITEM`, at once.
struct Instant200;

impl Transport for Instant200 {
    fn send(&self, _req: http::Request<RequestBody>) -> SendFuture {
        Box::pin(async {
            let body = ResponseBody::full(Bytes::from_static(ITEM));
            Ok(http::Response::new(body))
        })
    }
}

fn chain(links: usize) -> Chain {
    let transport = Arc::new(Instant200);
    Chain::builder()
        .transport(transport)
        .links((0..links).map(|i| Link::get(format!("http://backend-{i}.test/item"))))
        .build()
        .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    divan::main();
}

/// The same transport and decode, without the chain: the floor.
#[divan::bench]
fn baseline_transport_and_decode(b: divan::Bencher) {
    let rt = rt();
    let t = Instant200;
    let uri: http::Uri = "http://backend-0.test/item".parse().unwrap();
    b.bench_local(|| {
        rt.block_on(async {
            let mut req = http::Request::new(RequestBody::empty());
            *req.uri_mut() = uri.clone();
            let resp = t.send(req).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Item>(&body).unwrap()
        })
    });
}

#[divan::bench(args = [1, 3])]
fn chain_call_json(b: divan::Bencher, links: usize) {
    let rt = rt();
    let chain = chain(links);
    b.bench_local(|| rt.block_on(chain.call_json::<Item>()).unwrap());
}

#[divan::bench(args = [1, 3])]
fn chain_call_bytes(b: divan::Bencher, links: usize) {
    let rt = rt();
    let chain = chain(links);
    b.bench_local(|| rt.block_on(chain.call()).unwrap());
}

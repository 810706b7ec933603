//! The proxy's request handling, in-process, for the fuzz target: raw bytes
//! in through hyper's server connection and this proxy's `handle`, the
//! answer's bytes out.
//!
//! The upstreams are a transport in memory, the one part a socket cannot
//! give at millions of requests a second: the first answers 503 to every
//! other request, the second echoes what reached it. Both check what the
//! proxy sends upstream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use fallback_chain::transport::{RequestBody, ResponseBody, SendFuture, Transport};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{forward, headers, settings, Proxy, ServeArgs};

/// Bound on one input's whole exchange: longer is a hang.
const HANG: Duration = Duration::from_secs(5);

/// A config file for `serve`, read and built into the proxy's routes.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("fuzz.toml");
    let Ok(cfg) = crate::config::parse(text, path).and_then(|c| settings::for_serve(c, path))
    else {
        return;
    };
    let args = ServeArgs::try_parse_from(["serve"]).expect("no arguments");
    let _ = settings::from_config(&args, cfg, None);
}

/// One proxy, built once, for any number of inputs.
pub struct Harness {
    rt: tokio::runtime::Runtime,
    proxy: Arc<Proxy>,
}

impl Harness {
    /// A proxy of two upstreams with a 4 KiB replay buffer, so that both
    /// buffered and streamed request bodies are reached.
    pub fn new() -> Harness {
        let args = ServeArgs::try_parse_from([
            "serve",
            "--timeout",
            "1s",
            "--replay-buffer",
            "4KiB",
            "--header-timeout",
            "1s",
        ])
        .expect("the harness's arguments");
        // Nothing listens on ports 1 and 2: an upgrade, which goes around
        // the chain, is refused at once. Background probes ask for
        // /healthz, which no client request becomes.
        let cfg = crate::config::parse(
            "[[upstream]]\nurl = \"http://127.0.0.1:1/a\"\nprobe = \"/healthz\"\n\
             [[upstream]]\nurl = \"http://127.0.0.1:2/b\"\nprobe = \"/healthz\"\n",
            std::path::Path::new("harness.toml"),
        )
        .expect("the harness's config");
        let (mut live, _) = settings::from_config(&args, cfg, None).expect("the harness's config");
        for r in &mut live.routes {
            r.chain = r.chain.with_transport(Upstreams);
        }
        let proxy = Arc::new(Proxy {
            live: RwLock::new(Arc::new(live)),
            via: headers::via(),
            draining: AtomicBool::new(false),
            metrics: None,
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Harness { rt, proxy }
    }

    /// Sends `input` as a client connection's bytes, then closes the
    /// client's writing side; returns what the proxy wrote back. Panics on
    /// a hang, and on anything sent upstream that a proxy must not send.
    pub fn exchange(&self, input: &[u8]) -> Vec<u8> {
        let proxy = self.proxy.clone();
        self.rt.block_on(async move {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
            let svc = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(forward::handle(&proxy, req, peer).await) }
            });
            let builder = super::connections(Duration::from_secs(1));
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(server), svc)
                .into_owned();
            let conn = tokio::spawn(conn);
            let (mut rd, mut wr) = tokio::io::split(&mut client);
            let write = async {
                // The proxy may close before reading it all.
                let _ = wr.write_all(input).await;
                let _ = wr.shutdown().await;
            };
            let mut out = Vec::new();
            let read = async {
                let _ = rd.read_to_end(&mut out).await;
            };
            let both = async { tokio::join!(write, read) };
            if tokio::time::timeout(HANG, both).await.is_err() {
                panic!("the proxy hung on this input");
            }
            conn.abort();
            out
        })
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

/// The two upstreams, told apart by port.
struct Upstreams;

impl Transport for Upstreams {
    fn send(&self, req: http::Request<RequestBody>) -> SendFuture {
        Box::pin(async move {
            check_outbound(&req);
            let first = req.uri().port_u16() == Some(1);
            let (parts, body) = req.into_parts();
            // A body that breaks mid-way is the client's doing; the chain
            // says so, and here it is only read.
            let len = body.collect().await.map_or(0, |b| b.to_bytes().len());
            if first && parts.uri.path().len() % 2 == 1 {
                let mut resp = http::Response::new(ResponseBody::full("busy"));
                *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                resp.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("0"),
                );
                return Ok(resp);
            }
            let mut echo = format!("{} {} {len}\n", parts.method, parts.uri);
            for (n, v) in &parts.headers {
                echo.push_str(&format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())));
            }
            Ok(http::Response::new(ResponseBody::full(Bytes::from(echo))))
        })
    }
}

/// What must never go upstream: a hop-by-hop header (but `TE: trailers`),
/// or a client's request without this hop in `Via`.
fn check_outbound(req: &http::Request<RequestBody>) {
    if req.uri().path() == "/healthz" {
        // The proxy's own probe, not a forwarded request.
        return;
    }
    let h = req.headers();
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    ] {
        assert!(!h.contains_key(name), "{name} went upstream");
    }
    for te in h.get_all(http::header::TE) {
        assert_eq!(te.as_bytes(), b"trailers", "TE went upstream");
    }
    assert!(
        h.contains_key(http::header::VIA),
        "no Via upstream: {:?}",
        h.keys().collect::<Vec<_>>()
    );
}

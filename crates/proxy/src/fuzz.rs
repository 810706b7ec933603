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
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fallback_chain::transport::{HyperTransport, RequestBody, ResponseBody, SendFuture, Transport};
use fallback_chain::Policy;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::live::{Listeners, Live};
use crate::{headers, path, server, Proxy};

/// A config file for `serve`, read and built into the proxy's routes. A
/// refusal must not show a string value the text gave where something
/// else belongs: it may be a secret typed in the wrong place.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut cfg = match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(cfg) => cfg,
        Err(e) => {
            let e = e.to_string();
            let shown = e
                .match_indices("string \"")
                .any(|(i, m)| !e[i + m.len()..].starts_with('…'));
            assert!(!shown, "a string value showed: {e}");
            return;
        }
    };
    // A fuzzer that names `/dev/stdin` or a FIFO would wait on it for
    // good, as the command would.
    cfg.net.ca_cert = None;
    cfg.net.client_cert = None;
    cfg.net.client_key = None;
    let _ = Proxy::new(cfg);
}

/// Bound on one input's whole exchange: longer is a hang.
const HANG: Duration = Duration::from_secs(5);

/// The harness's upstreams: nothing listens on ports 1 and 2, so an
/// upgrade, which goes around the chain, is refused at once. Background
/// probes ask for /healthz, which no client request becomes.
const UPSTREAMS: &str = "[[upstream]]\nurl = \"http://127.0.0.1:1/a\"\nprobe = \"/healthz\"\n\
                         [[upstream]]\nurl = \"http://127.0.0.1:2/b\"\nprobe = \"/healthz\"\n";

/// The proxy's settings, and a transport built once (building one reads
/// the system's trust store); each input gets a proxy of its own.
pub struct Harness {
    config: Config,
    transport: HyperTransport,
    rt: tokio::runtime::Runtime,
}

impl Harness {
    /// Two upstreams, a 4 KiB replay buffer (so that request bodies are
    /// both buffered and streamed), 1 s timeouts.
    pub fn new() -> Harness {
        let mut config =
            Config::parse(UPSTREAMS, Path::new("harness.toml")).expect("the harness's config");
        config.policy = Policy::new().timeout(Duration::from_secs(1));
        config.replay_buffer = Some(4 * 1024);
        config.header_timeout = Some(Duration::from_secs(1));
        let transport = HyperTransport::builder()
            .build()
            .expect("the default transport");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Harness {
            config,
            transport,
            rt,
        }
    }

    /// Sends `input` as a client connection's bytes, then shuts the
    /// client's writing side; returns what the proxy wrote back.
    ///
    /// Every input meets a new proxy (fresh breakers, budget and probes),
    /// so a crash reproduces from its input alone; an earlier input's
    /// timers and probes may still run, on its own proxy. Panics
    /// on a hang, on a panic in the proxy's connection task, and on
    /// anything sent upstream that a proxy must not send.
    pub fn exchange(&self, input: &[u8]) -> Vec<u8> {
        let mut live = Live::build(&self.config, None, Some(self.transport.clone()))
            .expect("the harness's proxy");
        let upstreams = Upstreams::default();
        for r in &mut live.routes {
            r.chain = r.chain.with_transport(upstreams.clone());
        }
        let listeners = Listeners::of(&self.config).expect("the harness's listeners");
        let proxy = Proxy::assemble(listeners, live);
        let out = self.rt.block_on(async move {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
            let svc = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(path::handle(&proxy, req, Some(peer)).await) }
            });
            let mut builder = server::connections(Duration::from_secs(1));
            // The input ends with the client's writing side shut: answer
            // it anyway, which the proxy itself does not (a client that
            // goes away cancels its request).
            builder.http1().half_close(true);
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
            drop(client);
            match tokio::time::timeout(HANG, conn).await {
                Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Ok(_) => {}
                Err(_) => panic!("the proxy's connection did not end with its client"),
            }
            out
        });
        if let Some(broken) = upstreams
            .broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            panic!("{broken}");
        }
        out
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

/// The two upstreams, told apart by port. What they find wrong in a
/// request is kept for `exchange` to raise: a panic here would happen in
/// a task of the proxy's, where tokio would catch it.
#[derive(Clone, Default)]
struct Upstreams {
    broken: Arc<Mutex<Option<String>>>,
}

impl Transport for Upstreams {
    fn send(&self, req: http::Request<RequestBody>) -> SendFuture {
        let broken = self.broken.clone();
        Box::pin(async move {
            if let Err(why) = check_outbound(&req) {
                broken
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(why);
            }
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
fn check_outbound(req: &http::Request<RequestBody>) -> Result<(), String> {
    if req.uri().path() == "/healthz" {
        // The proxy's own probe, not a forwarded request.
        return Ok(());
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
        if h.contains_key(name) {
            return Err(format!("{name} went upstream"));
        }
    }
    if h.get_all(http::header::TE)
        .iter()
        .any(|te| te.as_bytes() != b"trailers")
    {
        return Err("a TE other than trailers went upstream".into());
    }
    if !h.contains_key(&headers::X_FALLBACK_HOP) {
        return Err(format!(
            "no X-Fallback-Hop upstream: {:?}",
            h.keys().collect::<Vec<_>>()
        ));
    }
    Ok(())
}

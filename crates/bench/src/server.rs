//! An efficient hyper HTTP/1.1 server on its own thread and runtime, so the
//! server is never what a benchmark measures.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The JSON every healthy endpoint answers; the benchmarks decode it.
pub const ITEM: &[u8] =
    br#"{"id":42,"name":"widget","price":9.99,"tags":["red","small"],"in_stock":true}"#;

#[derive(serde::Deserialize, Debug)]
#[allow(dead_code)]
pub struct Item {
    pub id: u64,
    pub name: String,
    pub price: f64,
    pub tags: Vec<String>,
    pub in_stock: bool,
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// 200 with `ITEM`.
    Healthy,
    /// 503, small body.
    Unavailable,
    /// Every 20th request (5 %) waits 250 ms; the rest answer at once.
    SlowTail,
}

pub struct HyperServer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    _thread: std::thread::JoinHandle<()>,
}

impl HyperServer {
    pub fn start(kind: Kind) -> HyperServer {
        let std = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std.set_nonblocking(true).expect("nonblocking");
        let addr = std.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        let thread = std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std).expect("listener");
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let count = count.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                                let n = count.fetch_add(1, Ordering::Relaxed);
                                let big = req.uri().path() == "/big";
                                async move {
                                    let resp = match kind {
                                        Kind::Healthy if big => ok_big(),
                                        Kind::Healthy => ok(),
                                        Kind::Unavailable => {
                                            let mut r = Response::new(Full::new(
                                                Bytes::from_static(b"{\"error\":\"down\"}"),
                                            ));
                                            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                                            r
                                        }
                                        Kind::SlowTail => {
                                            if n % 20 == 19 {
                                                tokio::time::sleep(Duration::from_millis(250))
                                                    .await;
                                            }
                                            ok()
                                        }
                                    };
                                    Ok::<_, Infallible>(resp)
                                }
                            });
                            let _ = http1::Builder::new()
                                .keep_alive(true)
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                });
            })
            .expect("spawn the server thread");
        HyperServer {
            addr,
            requests,
            _thread: thread,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/item", self.addr)
    }

    pub fn count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// 16 KiB of JSON: a larger answer than [`ITEM`]'s 77 bytes.
pub const BIG_LEN: usize = 16 * 1024;

fn ok_big() -> Response<Full<Bytes>> {
    static BIG: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let body = BIG.get_or_init(|| {
        let mut v = vec![b' '; BIG_LEN];
        v[0] = b'"';
        v[BIG_LEN - 1] = b'"';
        Bytes::from(v)
    });
    let mut r = Response::new(Full::new(body.clone()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn ok() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(ITEM)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

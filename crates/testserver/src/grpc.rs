//! gRPC servers on loopback, built on `tonic` (feature `grpc`): one
//! service, `test.Echo`, with a method of each kind, served over h2c by a
//! server that behaves as the test asks: serves, fails every call with a
//! code (a trailers-only answer), streams and then fails in trailers, or
//! never answers. It records each call's path and `grpc-timeout`.
//!
//! | method | kind | what a serving server answers |
//! | --- | --- | --- |
//! | `/test.Echo/Say` | unary | `"{name}: {text}"` |
//! | `/test.Echo/Count` | server streaming | `text` parsed as a number *n*: *n* messages `"{name} 0"`, `"{name} 1"`, … |
//! | `/test.Echo/Gather` | client streaming | `"{name}: "` and every text received, joined by `+` |
//! | `/test.Echo/Chat` | bidirectional | `"{name}: {text}"` for each message, as it comes |
//!
//! The service also answers `grpc.health.v1.Health/Check` with the
//! server's health ([`GrpcServer::set_serving`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_stream::{Stream, StreamExt};

use crate::lock;
use tonic::body::Body;
use tonic::server::Grpc;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// The one message of `test.Echo`: a text.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    /// The text.
    #[prost(string, tag = "1")]
    pub text: String,
}

impl Msg {
    /// A message with `text`.
    pub fn new(text: impl Into<String>) -> Msg {
        Msg { text: text.into() }
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    /// The service asked about; empty for the server as a whole.
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`: 1 is `SERVING`, 2 `NOT_SERVING`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    /// The serving status.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// How a [`GrpcServer`] answers every call of `test.Echo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answers as the table in the module's docs says.
    Serve,
    /// Fails every call with this code (a number, as `grpc-status`) and
    /// message, trailers-only.
    Fail(i32, String),
    /// Streams this many messages of `Count`, then fails with the code in
    /// the trailers; other methods serve.
    StreamThenFail(usize, i32),
    /// Accepts the call and never answers.
    Hang,
}

/// A call as the server received it.
#[derive(Clone, Debug)]
pub struct GrpcCall {
    /// The method's path, as `/test.Echo/Say`.
    pub path: String,
    /// The `grpc-timeout` header, if any.
    pub timeout: Option<String>,
    /// When the head arrived.
    pub at: Instant,
}

struct State {
    name: String,
    mode: Mutex<Mode>,
    serving: Mutex<bool>,
    calls: Mutex<Vec<GrpcCall>>,
}

/// A tonic server of `test.Echo` on `127.0.0.1`, on a thread of its own;
/// stopped when dropped.
pub struct GrpcServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GrpcServer {
    /// Starts a server that answers as `name`, in `mode`, on an ephemeral
    /// port.
    ///
    /// # Panics
    /// If no loopback port can be bound, which only a broken machine causes.
    pub fn start(name: &str, mode: Mode) -> GrpcServer {
        GrpcServer::start_with(name, mode, None)
    }

    /// As [`start`](Self::start), with connections closed gracefully
    /// (`GOAWAY`) once they are `max_age` old.
    pub fn start_with(name: &str, mode: Mode, max_age: Option<Duration>) -> GrpcServer {
        let (socket, _) = crate::bound_socket();
        socket.listen(1024).expect("listen");
        GrpcServer::on(socket.into(), name, mode, max_age)
    }

    /// A server on the address of a stopped one (a primary coming back).
    pub fn restart_at(addr: SocketAddr, name: &str, mode: Mode) -> GrpcServer {
        let (socket, _) = crate::bound_socket_on(addr.port());
        socket.listen(1024).expect("listen");
        GrpcServer::on(socket.into(), name, mode, None)
    }

    fn on(
        listener: std::net::TcpListener,
        name: &str,
        mode: Mode,
        max_age: Option<Duration>,
    ) -> GrpcServer {
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            name: name.to_owned(),
            mode: Mutex::new(mode),
            serving: Mutex::new(true),
            calls: Mutex::default(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let svc = Echo {
            state: state.clone(),
        };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                let mut builder = tonic::transport::Server::builder();
                if let Some(age) = max_age {
                    builder = builder
                        .max_connection_age(age)
                        .max_connection_age_grace(Duration::from_secs(5));
                }
                // Calls in flight get a moment to finish at a stop; one that
                // hangs is cut off with the runtime.
                let stopping = Arc::new(tokio::sync::Notify::new());
                let told = stopping.clone();
                let serve = builder.serve_with_incoming_shutdown(svc, incoming, async move {
                    let _ = stopped.await;
                    told.notify_one();
                });
                tokio::select! {
                    _ = serve => {}
                    () = async {
                        stopping.notified().await;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    } => {}
                }
            });
        });
        GrpcServer {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call received so far, in order of arrival.
    pub fn calls(&self) -> Vec<GrpcCall> {
        lock(&self.state.calls).clone()
    }

    /// How calls are answered from now on.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.state.mode) = mode;
    }

    /// What `grpc.health.v1.Health/Check` answers: `SERVING` or
    /// `NOT_SERVING`.
    pub fn set_serving(&self, serving: bool) {
        *lock(&self.state.serving) = serving;
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Reply = http::Response<Body>;
type BoxFuture = Pin<Box<dyn std::future::Future<Output = Result<Reply, Infallible>> + Send>>;
type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

/// The service: `test.Echo` and the health check, by path.
#[derive(Clone)]
struct Echo {
    state: Arc<State>,
}

impl tower_service::Service<http::Request<Body>> for Echo {
    type Response = Reply;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> BoxFuture {
        let state = self.state.clone();
        let path = req.uri().path().to_owned();
        lock(&state.calls).push(GrpcCall {
            path: path.clone(),
            timeout: req
                .headers()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            at: Instant::now(),
        });
        let mode = lock(&state.mode).clone();
        Box::pin(async move {
            if path == "/grpc.health.v1.Health/Check" {
                return Ok(health(state, req).await);
            }
            match mode {
                Mode::Hang => std::future::pending().await,
                Mode::Fail(code, message) => {
                    Ok(Status::new(tonic::Code::from(code), message).into_http())
                }
                Mode::Serve => Ok(serve(&path, state, req, None).await),
                Mode::StreamThenFail(n, code) => {
                    Ok(serve(&path, state, req, Some((n, code))).await)
                }
            }
        })
    }
}

async fn health(state: Arc<State>, req: http::Request<Body>) -> Reply {
    let serving = *lock(&state.serving);
    let check = tower::service_fn(move |_: Request<HealthCheckRequest>| async move {
        Ok::<_, Status>(Response::new(HealthCheckResponse {
            status: if serving { 1 } else { 2 },
        }))
    });
    Grpc::new(ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default())
        .unary(check, req)
        .await
}

async fn serve(
    path: &str,
    state: Arc<State>,
    req: http::Request<Body>,
    fail_after: Option<(usize, i32)>,
) -> Reply {
    let mut grpc = Grpc::new(ProstCodec::<Msg, Msg>::default());
    let name = state.name.clone();
    match path {
        "/test.Echo/Say" => {
            let say = tower::service_fn(move |r: Request<Msg>| {
                let text = format!("{name}: {}", r.into_inner().text);
                async move { Ok::<_, Status>(Response::new(Msg::new(text))) }
            });
            grpc.unary(say, req).await
        }
        "/test.Echo/Count" => {
            let count = tower::service_fn(move |r: Request<Msg>| {
                let n: usize = r.into_inner().text.parse().unwrap_or(0);
                let name = name.clone();
                async move {
                    let limit = fail_after.map_or(n, |(k, _)| k.min(n));
                    let msgs = (0..limit).map(move |i| Ok(Msg::new(format!("{name} {i}"))));
                    let tail = fail_after.map(|(_, code)| {
                        Err(Status::new(tonic::Code::from(code), "failed mid-stream"))
                    });
                    let stream: MsgStream = Box::pin(
                        tokio_stream::iter(msgs.chain(tail)).throttle(Duration::from_millis(5)),
                    );
                    Ok::<_, Status>(Response::new(stream))
                }
            });
            grpc.server_streaming(count, req).await
        }
        "/test.Echo/Gather" => {
            let gather = tower::service_fn(move |r: Request<Streaming<Msg>>| {
                let name = name.clone();
                async move {
                    let mut stream = r.into_inner();
                    let mut texts = Vec::new();
                    while let Some(m) = stream.next().await {
                        texts.push(m?.text);
                    }
                    Ok::<_, Status>(Response::new(Msg::new(format!(
                        "{name}: {}",
                        texts.join("+")
                    ))))
                }
            });
            grpc.client_streaming(gather, req).await
        }
        "/test.Echo/Chat" => {
            let chat = tower::service_fn(move |r: Request<Streaming<Msg>>| {
                let name = name.clone();
                async move {
                    let stream: MsgStream = Box::pin(
                        r.into_inner()
                            .map(move |m| m.map(|m| Msg::new(format!("{name}: {}", m.text)))),
                    );
                    Ok::<_, Status>(Response::new(stream))
                }
            });
            grpc.streaming(chat, req).await
        }
        _ => Status::unimplemented(format!("no method {path}")).into_http(),
    }
}

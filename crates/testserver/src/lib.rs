//! Loopback HTTP/1.1 servers that misbehave on purpose.
//!
//! Each [`Server`] listens on `127.0.0.1` on an ephemeral port, runs on a
//! thread and runtime of its own (so it works from sync code, from any async
//! runtime, and is never slowed by a paused test clock), records every request
//! it receives, and shuts down when dropped.
//!
//! What a server does with each request is a [`Behavior`]: answer with any
//! status and body (optionally after a delay), never answer, reset the
//! connection, send a truncated body, stall mid-body, answer with a huge body,
//! redirect to itself, echo the request, or a sequence of these such as "fail
//! the first N requests, then succeed". [`Server::refused`] gives an address
//! where connections are refused.
//!
//! ```
//! use fallback_chain_testserver::{Behavior, Server};
//! use std::io::{Read, Write};
//!
//! let server = Server::start(Behavior::fail_first(1, Behavior::status(503), Behavior::ok("hello")));
//! for expected in ["503", "200"] {
//!     let mut tcp = std::net::TcpStream::connect(server.addr()).unwrap();
//!     tcp.write_all(b"GET /x HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").unwrap();
//!     let mut answer = String::new();
//!     tcp.read_to_string(&mut answer).unwrap();
//!     assert!(answer.starts_with(&format!("HTTP/1.1 {expected}")));
//! }
//! assert_eq!(server.request_count(), 2);
//! assert_eq!(server.requests()[0].path, "/x");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "grpc")]
pub mod grpc;
pub mod proxy;
#[cfg(feature = "tls")]
pub mod tls;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// A per-request decision: the request and its index from 0.
pub type Decide = Arc<dyn Fn(&Recorded, usize) -> Behavior + Send + Sync>;

/// What a server does with one request.
#[derive(Clone)]
#[non_exhaustive]
pub enum Behavior {
    /// Answer with a status, headers and body, optionally after a delay.
    Respond(Reply),
    /// Read the request, then never answer (the connection stays open).
    BlackHole,
    /// Accept the connection and never read from it.
    NeverRead,
    /// Read the request, then reset the connection (TCP RST).
    Reset,
    /// Read the request, then close the connection (FIN) without answering.
    Close,
    /// Send a `Content-Length` larger than the body actually sent, then close.
    Truncate {
        /// Status of the response head.
        status: u16,
        /// The bytes actually sent.
        body: Bytes,
        /// The length announced in `Content-Length`.
        declared: usize,
    },
    /// Send the head and the first part of the body, then stall forever.
    StallMidBody {
        /// Status of the response head.
        status: u16,
        /// The full body announced in `Content-Length`.
        body: Bytes,
        /// How many bytes of `body` are sent before stalling.
        sent: usize,
    },
    /// Answer with a body of `len` bytes, generated on the fly.
    Huge {
        /// Status of the response.
        status: u16,
        /// Body length in bytes.
        len: u64,
        /// Use chunked encoding, so the client cannot see the size in advance.
        chunked: bool,
    },
    /// Answer `302 Found` pointing at the same path.
    RedirectSelf,
    /// Answer `200` with the request's body and `Content-Type`, plus
    /// `x-echo-method` and `x-echo-path` headers.
    Echo,
    /// The n-th request (counting from 0) gets the n-th behavior; the last
    /// one repeats.
    Sequence(Vec<Behavior>),
    /// Decide per request from the recorded request and its index.
    Custom(Decide),
}

impl fmt::Debug for Behavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Behavior::Respond(r) => f.debug_tuple("Respond").field(r).finish(),
            Behavior::BlackHole => f.write_str("BlackHole"),
            Behavior::NeverRead => f.write_str("NeverRead"),
            Behavior::Reset => f.write_str("Reset"),
            Behavior::Close => f.write_str("Close"),
            Behavior::Truncate {
                status,
                declared,
                body,
            } => {
                write!(f, "Truncate({status}, sends {} of {declared})", body.len())
            }
            Behavior::StallMidBody { status, body, sent } => {
                write!(f, "StallMidBody({status}, sends {sent} of {})", body.len())
            }
            Behavior::Huge {
                status,
                len,
                chunked,
            } => {
                write!(f, "Huge({status}, {len} bytes, chunked: {chunked})")
            }
            Behavior::RedirectSelf => f.write_str("RedirectSelf"),
            Behavior::Echo => f.write_str("Echo"),
            Behavior::Sequence(s) => f.debug_tuple("Sequence").field(s).finish(),
            Behavior::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Behavior {
    /// `200 OK` with a text body.
    pub fn ok(body: impl Into<Bytes>) -> Behavior {
        Behavior::Respond(Reply::new(200).body(body))
    }

    /// `200 OK` with a JSON body (`Content-Type: application/json`).
    pub fn ok_json(json: impl Into<Bytes>) -> Behavior {
        Behavior::Respond(Reply::json(200, json))
    }

    /// The given status with an empty body.
    pub fn status(status: u16) -> Behavior {
        Behavior::Respond(Reply::new(status))
    }

    /// `200 OK`, `Content-Type: application/json`, and a body that is not JSON.
    pub fn invalid_json() -> Behavior {
        Behavior::Respond(Reply::json(200, "{\"unterminated\": "))
    }

    /// The given status with a `Retry-After` header (seconds or an HTTP date).
    pub fn retry_after(status: u16, value: &str) -> Behavior {
        Behavior::Respond(Reply::new(status).header("retry-after", value))
    }

    /// `fail` for the first `n` requests, then `then` for every later one.
    pub fn fail_first(n: usize, fail: Behavior, then: Behavior) -> Behavior {
        let mut seq = vec![fail; n];
        seq.push(then);
        Behavior::Sequence(seq)
    }

    /// Decide per request; `f` gets the request and its index from 0.
    pub fn custom(f: impl Fn(&Recorded, usize) -> Behavior + Send + Sync + 'static) -> Behavior {
        Behavior::Custom(Arc::new(f))
    }

    /// The first request on each connection gets `first`; every later
    /// request on the same (kept-alive) connection gets `reused`. With
    /// [`Behavior::Close`] or [`Behavior::Reset`] as `reused`, this is what a
    /// client sees when it sends on a pooled connection that the server
    /// closed at that very moment, deterministically.
    pub fn on_reused(reused: Behavior, first: Behavior) -> Behavior {
        let seen = Mutex::new(std::collections::HashSet::new());
        Behavior::custom(move |req, _| {
            if lock(&seen).insert(req.connection) {
                first.clone()
            } else {
                reused.clone()
            }
        })
    }

    fn resolve(&self, req: &Recorded, index: usize) -> Behavior {
        match self {
            Behavior::Sequence(seq) => match seq.get(index).or(seq.last()) {
                Some(b) => b.resolve(req, index),
                None => Behavior::status(500),
            },
            Behavior::Custom(f) => f(req, index).resolve(req, index),
            other => other.clone(),
        }
    }

    /// Whether the behavior for `index` is [`Behavior::NeverRead`], decided
    /// before any request byte is read.
    fn never_reads(&self, index: usize) -> bool {
        match self {
            Behavior::NeverRead => true,
            Behavior::Sequence(seq) => seq
                .get(index)
                .or(seq.last())
                .is_some_and(|b| b.never_reads(index)),
            _ => false,
        }
    }
}

/// A complete answer: status, headers, body and an optional delay.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    delay: Duration,
}

impl Reply {
    /// An answer with the given status and an empty body.
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }

    /// An answer with a JSON body and `Content-Type: application/json`.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply::new(status)
            .header("content-type", "application/json")
            .body(body)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    /// Waits this long after reading the request before answering.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

impl From<Reply> for Behavior {
    fn from(reply: Reply) -> Behavior {
        Behavior::Respond(reply)
    }
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target, e.g. `/api?x=1`.
    pub path: String,
    /// Header names (lower-cased) and values, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body bytes, de-chunked.
    pub body: Bytes,
    /// When the request had been read whole.
    pub at: Instant,
    /// Which accepted connection carried it, counting from 0.
    pub connection: usize,
}

impl Recorded {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    connections: AtomicUsize,
    /// Connections whose handling has ended: closed by either side.
    closed: AtomicUsize,
    turns: AtomicUsize,
    bytes_sent: AtomicU64,
}

/// A running loopback server. It stops when dropped.
pub struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    // Keeps a refused address's port reserved.
    _reserved: Option<socket2::Socket>,
    _filler: Option<std::net::TcpStream>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    /// Starts a server on `127.0.0.1` with an ephemeral port.
    ///
    /// # Panics
    /// If no loopback port can be bound, which only a broken machine causes.
    pub fn start(behavior: impl Into<Behavior>) -> Server {
        Server::builder(behavior).start()
    }

    /// A server with options; see [`ServerBuilder`].
    pub fn builder(behavior: impl Into<Behavior>) -> ServerBuilder {
        ServerBuilder {
            behavior: behavior.into(),
            threads: 1,
            backlog: 1024,
            idle_timeout: None,
            port: 0,
        }
    }

    /// An address where every connection is refused. The port is bound but
    /// not listening, so no other socket can take it while this lives.
    pub fn refused() -> Server {
        let (socket, addr) = bound_socket();
        Server {
            addr,
            state: Arc::default(),
            shutdown: None,
            thread: None,
            _reserved: Some(socket),
            _filler: None,
        }
    }

    /// An address where connecting hangs: the listener's accept queue is
    /// full and never drained, so the kernel drops further handshakes and a
    /// client's connect only ends by its own timeout.
    pub fn connect_hangs() -> Server {
        let (socket, addr) = bound_socket();
        socket.listen(0).expect("listen");
        // One completed handshake fills a backlog of 0.
        let filler = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok();
        Server {
            addr,
            state: Arc::default(),
            shutdown: None,
            thread: None,
            _reserved: Some(socket),
            _filler: filler,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// How many connections were accepted so far.
    pub fn connection_count(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// How many accepted connections have ended: closed by the client, or
    /// by the server after an error (a write to a client that went away).
    /// A connection stalled by a client that stops reading has not.
    pub fn closed_connection_count(&self) -> usize {
        self.state.closed.load(Ordering::SeqCst)
    }

    /// How many body bytes were written to clients so far.
    pub fn bytes_sent(&self) -> u64 {
        self.state.bytes_sent.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Options for a [`Server`].
#[derive(Debug)]
pub struct ServerBuilder {
    behavior: Behavior,
    threads: usize,
    backlog: i32,
    idle_timeout: Option<Duration>,
    port: u16,
}

impl ServerBuilder {
    /// Listens on this loopback port, e.g. to restart a stopped server
    /// where its clients expect it. Default: 0, a free port.
    pub fn port(mut self, port: u16) -> ServerBuilder {
        self.port = port;
        self
    }

    /// Worker threads of the server's own runtime. Default: 1, enough for
    /// tests; benchmarks use more so the server is not the bottleneck.
    pub fn threads(mut self, threads: usize) -> ServerBuilder {
        self.threads = threads.max(1);
        self
    }

    /// The listen backlog. Default: 1024, so bursts of thousands of
    /// connections are not dropped by the kernel.
    pub fn backlog(mut self, backlog: i32) -> ServerBuilder {
        self.backlog = backlog.max(1);
        self
    }

    /// Closes a kept-alive connection when no new request has begun to
    /// arrive within `idle` of the last answer, as gunicorn (2 s), Node.js
    /// (5 s) and nginx (75 s) do. A request racing that close is lost with
    /// the connection, unread. Default: connections stay open.
    pub fn idle_timeout(mut self, idle: Duration) -> ServerBuilder {
        self.idle_timeout = Some(idle);
        self
    }

    /// Binds the port and starts serving.
    ///
    /// # Panics
    /// If no loopback port can be bound or no thread can be started.
    pub fn start(self) -> Server {
        let (socket, _) = bound_socket_on(self.port);
        socket.listen(self.backlog).expect("listen");
        let std_listener: StdListener = socket.into();
        std_listener.set_nonblocking(true).expect("set nonblocking");
        let addr = std_listener.local_addr().expect("read the bound address");
        let state = Arc::new(State::default());
        let (tx, rx) = oneshot::channel();
        let behavior = Arc::new(self.behavior);
        let idle = self.idle_timeout;
        let st = state.clone();
        let threads = self.threads;
        let thread = std::thread::Builder::new()
            .name(format!("testserver-{}", addr.port()))
            .spawn(move || {
                let rt = if threads == 1 {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                } else {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(threads)
                        .enable_all()
                        .build()
                }
                .expect("build the server runtime");
                rt.block_on(serve(std_listener, behavior, idle, st, rx));
            })
            .expect("spawn the server thread");
        Server {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
            _reserved: None,
            _filler: None,
        }
    }
}

/// A TCP socket bound to an ephemeral loopback port, and that port.
fn bound_socket() -> (socket2::Socket, SocketAddr) {
    bound_socket_on(0)
}

fn bound_socket_on(port: u16) -> (socket2::Socket, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("create a socket");
    // A server restarted on its old port must not wait out TIME_WAIT.
    let _ = socket.set_reuse_address(true);
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("bind a loopback port");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("read the bound address");
    (socket, addr)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread must not poison every later assertion.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn serve(
    listener: StdListener,
    behavior: Arc<Behavior>,
    idle: Option<Duration>,
    state: Arc<State>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("register the listener");
    // Dropping the set on shutdown aborts every connection, stalled or not.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let id = state.connections.fetch_add(1, Ordering::SeqCst);
                let st = state.clone();
                let conn = connection(stream, id, behavior.clone(), idle, state.clone());
                conns.spawn(async move {
                    conn.await;
                    st.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    id: usize,
    behavior: Arc<Behavior>,
    idle: Option<Duration>,
    state: Arc<State>,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut served = 0usize;
    loop {
        if let Some(idle) = idle.filter(|_| served > 0 && buf.is_empty()) {
            // Dropping the stream closes it; bytes that arrived meanwhile
            // stay unread, so the kernel answers them with a reset.
            if tokio::time::timeout(idle, stream.readable()).await.is_err() {
                return;
            }
        }
        served += 1;
        if behavior.never_reads(state.turns.load(Ordering::SeqCst)) {
            state.turns.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        let req = match read_request(&mut stream, &mut buf, id).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(_) => {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                return;
            }
        };
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let index = state.turns.fetch_add(1, Ordering::SeqCst);
        lock(&state.requests).push(req.clone());
        let action = behavior.resolve(&req, index);
        match respond(&mut stream, &req, action, &state).await {
            Ok(true) if !close => {}
            _ => return,
        }
    }
}

/// Writes the answer. Ok(true) means the connection can serve another request.
async fn respond(
    stream: &mut TcpStream,
    req: &Recorded,
    action: Behavior,
    state: &State,
) -> io::Result<bool> {
    match action {
        Behavior::Respond(reply) => {
            if !reply.delay.is_zero() {
                tokio::time::sleep(reply.delay).await;
            }
            let head = head(reply.status, &reply.headers, Some(reply.body.len() as u64));
            // A HEAD answer announces the body's length but sends no body.
            let body = if req.method == "HEAD" {
                &[][..]
            } else {
                &reply.body[..]
            };
            write_all(stream, head.as_bytes(), body, state).await?;
            Ok(true)
        }
        Behavior::BlackHole | Behavior::NeverRead => std::future::pending().await,
        Behavior::Reset => {
            // SO_LINGER 0 turns the close into a RST.
            let _ = socket2::SockRef::from(&*stream).set_linger(Some(Duration::ZERO));
            Ok(false)
        }
        Behavior::Close => {
            stream.shutdown().await?;
            Ok(false)
        }
        Behavior::Truncate {
            status,
            body,
            declared,
        } => {
            let head = head(status, &[], Some(declared as u64));
            write_all(stream, head.as_bytes(), &body, state).await?;
            stream.shutdown().await?;
            Ok(false)
        }
        Behavior::StallMidBody { status, body, sent } => {
            let head = head(status, &[], Some(body.len() as u64));
            let sent = sent.min(body.len());
            write_all(stream, head.as_bytes(), &body[..sent], state).await?;
            std::future::pending().await
        }
        Behavior::Huge {
            status,
            len,
            chunked,
        } => {
            let head = if chunked {
                head(
                    status,
                    &[("transfer-encoding".into(), "chunked".into())],
                    None,
                )
            } else {
                head(status, &[], Some(len))
            };
            stream.write_all(head.as_bytes()).await?;
            let block = Bytes::from(vec![b'x'; 64 * 1024]);
            let mut left = len;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                if chunked {
                    stream.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                }
                stream.write_all(&block[..n]).await?;
                if chunked {
                    stream.write_all(b"\r\n").await?;
                }
                state.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                left -= n as u64;
            }
            if chunked {
                stream.write_all(b"0\r\n\r\n").await?;
            }
            Ok(true)
        }
        Behavior::RedirectSelf => {
            let head = head(302, &[("location".into(), req.path.clone())], Some(0));
            write_all(stream, head.as_bytes(), &[], state).await?;
            Ok(true)
        }
        Behavior::Echo => {
            let ctype = req
                .header("content-type")
                .unwrap_or("application/octet-stream")
                .to_owned();
            let headers = [
                ("content-type".to_owned(), ctype),
                ("x-echo-method".to_owned(), req.method.clone()),
                ("x-echo-path".to_owned(), req.path.clone()),
            ];
            let head = head(200, &headers, Some(req.body.len() as u64));
            write_all(stream, head.as_bytes(), &req.body, state).await?;
            Ok(true)
        }
        // resolve() never yields these.
        Behavior::Sequence(_) | Behavior::Custom(_) => Ok(false),
    }
}

async fn write_all(
    stream: &mut TcpStream,
    head: &[u8],
    body: &[u8],
    state: &State,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head);
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    state
        .bytes_sent
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    Ok(())
}

fn head(status: u16, headers: &[(String, String)], len: Option<u64>) -> String {
    let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (n, v) in headers {
        h.push_str(n);
        h.push_str(": ");
        h.push_str(v);
        h.push_str("\r\n");
    }
    if let Some(len) = len {
        h.push_str(&format!("content-length: {len}\r\n"));
    }
    h.push_str("\r\n");
    h
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

const MAX_HEAD: usize = 64 * 1024;

/// The fuzz target's entry: every request in `input`, read as the server
/// reads them from a connection, until the input ends or one is refused.
/// Not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_read_requests(input: &[u8]) -> Vec<Recorded> {
    let mut reader = input;
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    loop {
        // A byte slice never pends, so one poll settles each request.
        let fut = std::pin::pin!(read_request(&mut reader, &mut buf, 0));
        match std::future::Future::poll(fut, &mut cx) {
            std::task::Poll::Ready(Ok(Some(r))) => out.push(r),
            std::task::Poll::Ready(_) => return out,
            std::task::Poll::Pending => panic!("a byte slice never pends"),
        }
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Reads one request; Ok(None) when the client closed between requests.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    connection: usize,
) -> io::Result<Option<Recorded>> {
    let (method, path, headers, head_len) = loop {
        if !buf.is_empty() {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut hs);
            match req.parse(buf).map_err(|e| bad(&e.to_string()))? {
                httparse::Status::Complete(n) => {
                    let headers = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect::<Vec<_>>();
                    break (
                        req.method.unwrap_or("").to_owned(),
                        req.path.unwrap_or("").to_owned(),
                        headers,
                        n,
                    );
                }
                httparse::Status::Partial if buf.len() > MAX_HEAD => {
                    return Err(bad("head too large"))
                }
                httparse::Status::Partial => {}
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(bad("closed mid-head"))
            };
        }
    };
    buf.advance(head_len);
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(stream, buf).await?
    } else {
        let len: usize = match find("content-length") {
            Some(v) => v.parse().map_err(|_| bad("bad content-length"))?,
            None => 0,
        };
        fill(stream, buf, len).await?;
        buf.split_to(len).freeze()
    };
    Ok(Some(Recorded {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
        connection,
    }))
}

async fn fill<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<()> {
    while buf.len() < want {
        if stream.read_buf(buf).await? == 0 {
            return Err(bad("closed mid-body"));
        }
    }
    Ok(())
}

async fn read_line<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> io::Result<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf.split_to(i + 2);
            return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("chunk line too long"));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(bad("closed mid-chunk"));
        }
    }
}

async fn read_chunked<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> io::Result<Bytes> {
    let mut body = BytesMut::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailers end with an empty line.
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(body.freeze());
        }
        let with_crlf = size
            .checked_add(2)
            .ok_or_else(|| bad("chunk size too large"))?;
        fill(stream, buf, with_crlf).await?;
        body.extend_from_slice(&buf[..size]);
        buf.advance(with_crlf);
    }
}

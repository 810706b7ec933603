//! An HTTP forward proxy on loopback: `CONNECT` tunnels (for HTTPS) and
//! absolute-form requests (for plain HTTP), optionally behind Basic
//! credentials, recording what passed through it.
//!
//! ```
//! use fallback_chain_testserver::proxy::Proxy;
//!
//! let proxy = Proxy::builder().credentials("user", "pass").start();
//! assert!(proxy.url().starts_with("http://127.0.0.1:"));
//! assert!(proxy.requests().is_empty());
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// One request the proxy handled.
#[derive(Clone, Debug)]
pub struct Passed {
    /// `CONNECT`, or the method of a forwarded plain request.
    pub method: String,
    /// `host:port` for `CONNECT`, the absolute URL otherwise.
    pub target: String,
    /// The `Proxy-Authorization` header the client sent, if any.
    pub proxy_authorization: Option<String>,
    /// Whether the proxy let it through.
    pub allowed: bool,
}

/// Options for a [`Proxy`].
#[derive(Debug, Default)]
#[must_use]
pub struct ProxyBuilder {
    credentials: Option<String>,
}

impl ProxyBuilder {
    /// Require Basic credentials; anything else gets `407`.
    pub fn credentials(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some(format!(
            "Basic {}",
            base64(format!("{user}:{password}").as_bytes())
        ));
        self
    }

    /// Binds `127.0.0.1` on an ephemeral port and starts proxying.
    ///
    /// # Panics
    /// If no port can be bound.
    pub fn start(self) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let passed: Arc<Mutex<Vec<Passed>>> = Arc::default();
        let (tx, rx) = oneshot::channel::<()>();
        let p = passed.clone();
        let creds = self.credentials;
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(serve(listener, creds, p, rx));
            })
            .expect("spawn the proxy thread");
        Proxy {
            addr,
            passed,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

/// A running proxy. It stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    passed: Arc<Mutex<Vec<Passed>>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy").field("addr", &self.addr).finish()
    }
}

impl Proxy {
    /// Options.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }

    /// An open proxy.
    pub fn start() -> Proxy {
        ProxyBuilder::default().start()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request handled so far.
    pub fn requests(&self) -> Vec<Passed> {
        self.passed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    creds: Option<String>,
    passed: Arc<Mutex<Vec<Passed>>>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("listener");
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                conns.spawn(handle(client, creds.clone(), passed.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn handle(
    mut client: TcpStream,
    creds: Option<String>,
    passed: Arc<Mutex<Vec<Passed>>>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let (method, target, auth, head_len, headers) = loop {
        if client.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hs);
        if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
            let auth = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
                .map(|h| String::from_utf8_lossy(h.value).into_owned());
            let headers: Vec<(String, Vec<u8>)> = req
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect();
            break (
                req.method.unwrap_or("").to_owned(),
                req.path.unwrap_or("").to_owned(),
                auth,
                n,
                headers,
            );
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
    };
    let allowed = creds.is_none() || auth == creds;
    passed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Passed {
            method: method.clone(),
            target: target.clone(),
            proxy_authorization: auth,
            allowed,
        });
    if !allowed {
        client
            .write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  proxy-authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await?;
        return Ok(());
    }
    if method == "CONNECT" {
        let Ok(mut upstream) = TcpStream::connect(&target).await else {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                .await?;
            return Ok(());
        };
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        // Anything the client sent after the head belongs to the tunnel.
        upstream.write_all(&buf[head_len..]).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    // A plain request in absolute form: forward it in origin form, one per
    // connection.
    let rest = target
        .strip_prefix("http://")
        .unwrap_or(target.as_str())
        .to_owned();
    let (host, path) = match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.clone(), "/".to_owned()),
    };
    let Ok(mut upstream) = TcpStream::connect(&host).await else {
        client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("proxy-authorization")
            || n.eq_ignore_ascii_case("connection")
            || n.eq_ignore_ascii_case("proxy-connection")
        {
            continue;
        }
        head.extend_from_slice(n.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(&v);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    upstream.write_all(&head).await?;
    upstream.write_all(&buf[head_len..]).await?;
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut uw).await;
        let _ = uw.shutdown().await;
        std::future::pending::<()>().await
    };
    let down = async {
        tokio::io::copy(&mut ur, &mut cw).await?;
        cw.shutdown().await
    };
    // The answer ends the exchange.
    tokio::select! {
        r = down => r,
        () = up => Ok(()),
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (c as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

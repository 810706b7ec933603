//! `upstream_answer`: any bytes as an upstream's answer, read by the
//! default transport's own client and connection pool over a real
//! loopback socket.
//!
//! The first byte picks the request (`GET`, `HEAD`, a `POST` with a body,
//! by its low bits) and whether the server keeps the connection open after
//! its answer (high bits all set: rare, since such an answer left
//! incomplete is only ended by the harness's patience); the rest is the
//! answer, written as it is. A second request follows on the
//! same transport, answered correctly: whatever the first answer did to
//! its connection, the pool must not hand the second request a
//! connection that answers with the first exchange's bytes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fallback_chain::transport::{HyperTransport, RequestBody, Transport};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The second request's answer, which only it may get.
const SECOND: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond";

/// Answers queued for the server, each with whether to close after it.
type Answers = Arc<Mutex<VecDeque<(Vec<u8>, bool)>>>;

/// A loopback server that answers each request head with the next queued
/// answer, a transport, and a runtime, made once.
pub struct UpstreamHarness {
    rt: tokio::runtime::Runtime,
    /// How long an exchange may take: an answer the server never finishes
    /// ends there.
    patience: Duration,
    transport: HyperTransport,
    answers: Answers,
    url: String,
}

impl Default for UpstreamHarness {
    fn default() -> Self {
        UpstreamHarness::new()
    }
}

impl UpstreamHarness {
    /// The fuzzer's harness: 2 ms for an exchange on loopback. Inputs that
    /// leave an answer unfinished wait this long, so it sets the pace; an
    /// exchange cut short only returns `None`, it never fails a check.
    pub fn new() -> UpstreamHarness {
        UpstreamHarness::with_patience(Duration::from_millis(2))
    }

    /// A harness whose exchanges may take `patience` (the tests give a
    /// loaded machine a second).
    pub fn with_patience(patience: Duration) -> UpstreamHarness {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let answers: Answers = Arc::default();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let url = format!(
            "http://{}/fuzz",
            listener.local_addr().expect("its address")
        );
        let queued = answers.clone();
        rt.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, queued.clone()));
            }
        });
        let transport = HyperTransport::builder()
            .proxy_from_env(false)
            .build()
            .expect("the default transport");
        UpstreamHarness {
            rt,
            patience,
            transport,
            answers,
            url,
        }
    }

    /// One input: its request and answer, then the second request. Gives
    /// back what each got (status and body), if it got a whole answer.
    pub fn exchange(&self, data: &[u8]) -> [Option<(u16, Vec<u8>)>; 2] {
        let Some((&mode, answer)) = data.split_first() else {
            return [None, None];
        };
        let method = match (mode & 0x0f) % 3 {
            0 => http::Method::GET,
            1 => http::Method::HEAD,
            _ => http::Method::POST,
        };
        let keep_open = mode & 0xf0 == 0xf0;
        {
            let mut q = self.answers.lock().unwrap_or_else(|e| e.into_inner());
            q.clear();
            q.push_back((answer.to_vec(), !keep_open));
        }
        self.rt.block_on(async {
            let first = self.send(method).await;
            self.answers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            let second = self.send(http::Method::GET).await;
            if let Some((status, body)) = &second {
                let (status, body) = (*status, body.as_slice());
                let own = status == 200 && body == b"second";
                // A 200 with other bytes can only be the input's own (a
                // chunked one's decoded bytes are not in it as they are).
                let chunked = contains(&answer.to_ascii_lowercase(), b"chunked");
                assert!(
                    own || chunked || contains(answer, body) || status != 200,
                    "the second request got another exchange's answer: {status} {body:?}"
                );
            }
            [first, second]
        })
    }

    /// A request and its whole answer, or `None` on an error or past the
    /// harness's patience (an answer the server never finishes).
    async fn send(&self, method: http::Method) -> Option<(u16, Vec<u8>)> {
        let body = if method == http::Method::POST {
            RequestBody::full(bytes::Bytes::from_static(b"{\"order\":1}"))
        } else {
            RequestBody::empty()
        };
        let mut req = http::Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = self.url.parse().expect("the harness's URL");
        let exchange = async {
            let resp = self.transport.send(req).await.ok()?;
            let status = resp.status().as_u16();
            let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
                .collect()
                .await
                .ok()?
                .to_bytes();
            Some((status, body.to_vec()))
        };
        tokio::time::timeout(self.patience, exchange)
            .await
            .ok()
            .flatten()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads request heads (and a `POST`'s 11-byte body) and writes the next
/// queued answer to each, or the second request's answer when none is
/// queued.
async fn serve(mut conn: tokio::net::TcpStream, answers: Answers) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 65_536 {
                return;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let body_len = if buf.starts_with(b"POST") { 11 } else { 0 };
        while buf.len() < head_end + body_len {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + body_len);
        let next = answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let (answer, close) = next.unwrap_or_else(|| (SECOND.to_vec(), false));
        if conn.write_all(&answer).await.is_err() {
            return;
        }
        if close {
            let _ = conn.shutdown().await;
            return;
        }
    }
}

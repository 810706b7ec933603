//! HTTPS and HTTP/2 servers (feature `tls`): a private CA made at run time,
//! TLS servers that speak HTTP/1.1 and HTTP/2 by ALPN and may require a
//! client certificate, and cleartext servers that also take h2c.
//!
//! No key is ever checked in: [`TestCa::new`] generates the CA, and every
//! leaf is signed by it on the spot.
//!
//! ```
//! use fallback_chain_testserver::tls::{HttpServer, TestCa};
//!
//! let ca = TestCa::new();
//! let server = HttpServer::builder().tls(&ca).start();
//! assert!(server.url("/x").starts_with("https://localhost:"));
//! assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
//! ```

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

/// A private certificate authority, generated when created.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TestCa")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// A certificate chain and its private key, both PEM.
#[derive(Clone)]
pub struct Identity {
    /// The leaf certificate (PEM).
    pub cert_pem: String,
    /// Its PKCS#8 private key (PEM).
    pub key_pem: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Identity(..)")
    }
}

impl TestCa {
    /// A new CA with a fresh key.
    ///
    /// # Panics
    /// If key generation fails, which only a broken crypto backend causes.
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("generate the CA key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "fallback test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        TestCa { cert, key }
    }

    /// The CA certificate, PEM: what a client adds to trust this CA.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    fn sign(&self, mut params: CertificateParams) -> Identity {
        let key = KeyPair::generate().expect("generate a leaf key");
        params.is_ca = IsCa::NoCa;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign a leaf");
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server_identity(&self) -> Identity {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).expect("server names");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate named `name`, for mutual TLS.
    pub fn client_identity(&self, name: &str) -> Identity {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }
}

fn der_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certificates PEM")
}

fn der_key(pem: &str) -> PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .expect("key PEM")
        .into()
}

/// One request as an [`HttpServer`] saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The ALPN protocol negotiated by TLS (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// Whether the client presented a certificate.
    pub client_cert: bool,
    /// Header names (lower-cased) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl Seen {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Options for an [`HttpServer`].
#[derive(Debug, Default)]
#[must_use]
pub struct HttpServerBuilder {
    identity: Option<Identity>,
    client_ca: Option<String>,
    status: Option<u16>,
    body: Option<Bytes>,
}

impl HttpServerBuilder {
    /// Serve HTTPS with a certificate for `localhost` and `127.0.0.1`
    /// signed by `ca`, offering `h2` and `http/1.1` by ALPN.
    pub fn tls(mut self, ca: &TestCa) -> Self {
        self.identity = Some(ca.server_identity());
        self
    }

    /// Require a client certificate signed by `ca` (mutual TLS).
    pub fn require_client_cert(mut self, ca: &TestCa) -> Self {
        self.client_ca = Some(ca.cert_pem());
        self
    }

    /// Answer every request with `status` and `body` instead of echoing.
    pub fn reply(mut self, status: u16, body: impl Into<Bytes>) -> Self {
        self.status = Some(status);
        self.body = Some(body.into());
        self
    }

    /// Binds `127.0.0.1` on an ephemeral port and starts serving.
    ///
    /// # Panics
    /// If no port can be bound or the TLS setup is invalid.
    pub fn start(self) -> HttpServer {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("address");
        let acceptor = self.identity.as_ref().map(|id| {
            let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
            let builder = match &self.client_ca {
                Some(ca) => {
                    let mut roots = rustls::RootCertStore::empty();
                    for c in der_certs(ca) {
                        roots.add(c).expect("client CA");
                    }
                    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        Arc::new(rustls::crypto::ring::default_provider()),
                    )
                    .build()
                    .expect("client verifier");
                    builder.with_client_cert_verifier(verifier)
                }
                None => builder.with_no_client_auth(),
            };
            let mut cfg = builder
                .with_single_cert(der_certs(&id.cert_pem), der_key(&id.key_pem))
                .expect("server certificate");
            cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            TlsAcceptor::from(Arc::new(cfg))
        });
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handshake_failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reply = self.status.map(|s| (s, self.body.unwrap_or_default()));
        let (tx, rx) = oneshot::channel::<()>();
        let state = (seen.clone(), handshake_failures.clone());
        let thread = std::thread::Builder::new()
            .name(format!("httpserver-{}", addr.port()))
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(serve(std_listener, acceptor, reply, state, rx));
            })
            .expect("spawn the server thread");
        HttpServer {
            addr,
            tls: self.identity.is_some(),
            seen,
            handshake_failures,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

/// A hyper server on loopback: HTTPS (HTTP/1.1 and h2 by ALPN) or cleartext
/// (HTTP/1.1 and h2c). It echoes each request's body, with its protocol in
/// `x-version` and `x-alpn`, and records what it saw. It stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    tls: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
    handshake_failures: Arc<std::sync::atomic::AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish()
    }
}

impl HttpServer {
    /// Options: TLS, client certificates, a fixed reply.
    pub fn builder() -> HttpServerBuilder {
        HttpServerBuilder::default()
    }

    /// A cleartext server (HTTP/1.1 and h2c) that echoes.
    pub fn start() -> HttpServer {
        HttpServer::builder().start()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:PORT` (or `http://127.0.0.1:PORT`) and `path`.
    pub fn url(&self, path: &str) -> String {
        if self.tls {
            format!("https://localhost:{}{path}", self.addr.port())
        } else {
            format!("http://{}{path}", self.addr)
        }
    }

    /// Every request served so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many TLS handshakes failed (an untrusted client, no client
    /// certificate, …).
    pub fn handshake_failures(&self) -> usize {
        self.handshake_failures
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type State = (Arc<Mutex<Vec<Seen>>>, Arc<std::sync::atomic::AtomicUsize>);

async fn serve(
    listener: std::net::TcpListener,
    acceptor: Option<TlsAcceptor>,
    reply: Option<(u16, Bytes)>,
    state: State,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("listener");
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let reply = reply.clone();
                let state = state.clone();
                conns.spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                state.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                return;
                            };
                            let (_, conn) = tls.get_ref();
                            let alpn = conn
                                .alpn_protocol()
                                .map(|p| String::from_utf8_lossy(p).into_owned());
                            let client_cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
                            connection(TokioIo::new(tls), alpn, client_cert, reply, state.0).await;
                        }
                        None => connection(TokioIo::new(tcp), None, false, reply, state.0).await,
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn connection<I>(
    io: I,
    alpn: Option<String>,
    client_cert: bool,
    reply: Option<(u16, Bytes)>,
    seen: Arc<Mutex<Vec<Seen>>>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let alpn = alpn.clone();
        let reply = reply.clone();
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let version = format!("{:?}", parts.version);
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
                method: parts.method.to_string(),
                path: parts
                    .uri
                    .path_and_query()
                    .map_or("/".into(), |p| p.to_string()),
                version: version.clone(),
                alpn: alpn.clone(),
                client_cert,
                headers: parts
                    .headers
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: body.clone(),
            });
            let (status, body) = reply.unwrap_or((200, body));
            let mut resp = hyper::Response::new(Full::new(body));
            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
            let h = resp.headers_mut();
            h.insert("x-version", version.parse().expect("header value"));
            if let Some(a) = alpn.as_deref().and_then(|a| a.parse().ok()) {
                h.insert("x-alpn", a);
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, svc)
        .await;
}

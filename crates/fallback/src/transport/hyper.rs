//! The default transport: hyper's connections in a pool of our own, over
//! rustls; its options and their defaults.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;

use super::client::Client;
use super::connector::Connector;
use super::pool::Pool;
use super::proxy::Proxies;
#[cfg(feature = "rustls")]
use super::tls::Tls;
#[cfg(doc)]
use super::{FreshConnection, Handoff, TransportErrorKind};
use super::{RequestBody, SendFuture, Transport};
use crate::error::BuildError;

/// Default idle timeout of pooled connections: 4 s.
const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Past it a connection takes no new request: 5 minutes follows DNS
/// changes and new replicas while a busy connection is still reused
/// thousands of times.
const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// hyper 1.x connections in a pool of our own, and rustls (ring): HTTP/1.1,
/// HTTP/2 over TLS by ALPN, and h2c for requests whose version is HTTP/2
/// (see [`Link::http2_prior_knowledge`](crate::Link::http2_prior_knowledge)).
///
/// One pool serves every link of a chain and every clone of it, so
/// keep-alive connections are reused across calls. Cloning a
/// `HyperTransport` shares its pool, so several chains can share one too.
/// Connections are kept per origin (scheme, host and port):
/// - HTTP/1: a connection goes back to the pool when its answer's body has
///   been read to the end (an answer dropped half-read takes its
///   connection with it), and the newest idle one is taken first. One the
///   server closed, or idle for longer than
///   [`pool_idle_timeout`](HyperTransportBuilder::pool_idle_timeout), is
///   never handed out, and one still sending an earlier request's body is
///   not waited for.
/// - HTTP/2: one connection per origin carries every request; concurrent
///   calls to an h2c origin wait for the one being opened rather than each
///   open their own, and a connection the server sent away (`GOAWAY`) is
///   replaced by a new one.
///
/// It tells the chain what it needs to fail over safely:
/// - whether a request was handed to a connection (a [`Handoff`]), so a
///   timer that fires while still connecting counts as "nothing sent";
/// - when a pooled connection turned out to be stale
///   ([`TransportErrorKind::StaleConnection`]): an HTTP/1 connection that
///   had served earlier requests failed before any byte of the response
///   came back. It honours [`FreshConnection`] for the re-send.
///
/// ```
/// use fallback_chain::transport::HyperTransport;
/// # fn main() -> Result<(), fallback_chain::BuildError> {
/// # let ca_pem = fallback_chain_testserver::tls::TestCa::new().cert_pem();
/// let transport = HyperTransport::builder()
///     .add_root_certificate_pem(ca_pem) // a private CA, besides the system's
///     .proxy("http://proxy.internal:3128")
///     .no_proxy("localhost,.internal")
///     .build()?;
/// let chain = fallback_chain::Chain::builder()
///     .transport(transport)
///     .link(fallback_chain::Link::get("https://orders.internal/api"))
///     .build()?;
/// # let _ = chain; Ok(()) }
/// ```
#[derive(Clone)]
pub struct HyperTransport {
    client: Arc<Client>,
    insecure: bool,
}

impl fmt::Debug for HyperTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperTransport")
            .field("proxies", &self.client.proxies())
            .field("danger_accept_invalid_certs", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl Default for HyperTransport {
    /// The defaults of [`HyperTransportBuilder`]. Proxy variables that do
    /// not parse are ignored here (with a warning in tracing); use
    /// [`HyperTransport::builder`] to have them refused.
    fn default() -> Self {
        match HyperTransport::builder().build() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the proxy environment");
                HyperTransport::builder()
                    .proxy_from_env(false)
                    .build()
                    .expect("the defaults without proxies always build")
            }
        }
    }
}

impl HyperTransport {
    /// A transport with the defaults of [`HyperTransportBuilder`].
    pub fn new() -> HyperTransport {
        HyperTransport::default()
    }

    /// Options for the transport.
    pub fn builder() -> HyperTransportBuilder {
        HyperTransportBuilder::default()
    }
}

/// Options of a [`HyperTransport`]. Setters never fail;
/// [`build`](Self::build) checks every certificate, key and proxy URL.
///
/// | option | default |
/// | --- | --- |
/// | [`connect_timeout`](Self::connect_timeout) | 2 s |
/// | [`pool_idle_timeout`](Self::pool_idle_timeout) | 4 s |
/// | [`pool_max_idle_per_host`](Self::pool_max_idle_per_host) | unbounded |
/// | [`http2_max_streams_per_connection`](Self::http2_max_streams_per_connection) | 100 |
/// | [`pool_max_connection_age`](Self::pool_max_connection_age) | 5 min |
/// | [`http1_read_buf_exact_size`](Self::http1_read_buf_exact_size) | none: hyper's adaptive buffer, 8 KiB at first, growing for large reads |
/// | [`http1_max_buf_size`](Self::http1_max_buf_size) | about 400 KiB (hyper's) |
/// | [`add_root_certificate_pem`](Self::add_root_certificate_pem) | none |
/// | [`tls_built_in_root_certs`](Self::tls_built_in_root_certs) | on: the system's trust store (`SSL_CERT_FILE`, `SSL_CERT_DIR` honoured), or the bundled webpki roots where it is empty |
/// | [`identity_pem`](Self::identity_pem) | none |
/// | [`danger_accept_invalid_certs`](Self::danger_accept_invalid_certs) | off |
/// | [`proxy`](Self::proxy) | none |
/// | [`no_proxy`](Self::no_proxy) | `NO_PROXY` |
/// | [`proxy_from_env`](Self::proxy_from_env) | on |
///
/// Why 4 s for idle connections: servers close keep-alive connections
/// that sit idle, gunicorn after 2 s, Node.js and Apache httpd after 5 s,
/// nginx after 75 s. A request sent on a connection at the moment the
/// server closes it is lost; an idempotent one is re-sent at once on a new
/// connection, but a `POST`'s outcome becomes unknown. Dropping idle
/// connections before the common 5 s keeps that race rare, and a
/// connection busy at least every 4 s is still reused. (reqwest and Go use
/// 90 s, longer than most servers keep a connection.)
///
/// Why `rustls-native-certs` for the system's trust store: on Linux it
/// reads the same CA bundle as OpenSSL and curl (and honours
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`), so a CA added to the system is
/// trusted here too, while the roots stay an ordinary set that extra roots
/// join and that the webpki roots can stand in for.
/// `rustls-platform-verifier` would hand verification to the platform,
/// which suits macOS and Windows enterprise policies but leaves no such
/// set to extend or replace.
#[derive(Clone)]
#[must_use]
pub struct HyperTransportBuilder {
    connect_timeout: Option<Duration>,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    h2_streams: usize,
    max_age: Option<Duration>,
    read_buf_exact: Option<usize>,
    max_buf: Option<usize>,
    roots: Vec<Vec<u8>>,
    built_in_roots: bool,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    insecure: bool,
    proxy: Option<String>,
    no_proxy: Option<String>,
    proxy_from_env: bool,
}

impl fmt::Debug for HyperTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperTransportBuilder")
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("http2_max_streams_per_connection", &self.h2_streams)
            .field("pool_max_connection_age", &self.max_age)
            .field("http1_read_buf_exact_size", &self.read_buf_exact)
            .field("http1_max_buf_size", &self.max_buf)
            .field("roots", &self.roots.len())
            .field("built_in_roots", &self.built_in_roots)
            .field("identity", &self.identity.is_some())
            .field("danger_accept_invalid_certs", &self.insecure)
            .field("proxy", &self.proxy.as_deref().map(crate::redact::raw_url))
            .field("no_proxy", &self.no_proxy)
            .field("proxy_from_env", &self.proxy_from_env)
            .finish()
    }
}

impl Default for HyperTransportBuilder {
    fn default() -> Self {
        HyperTransportBuilder {
            connect_timeout: Some(crate::timeout::DEFAULT_CONNECT_TIMEOUT),
            pool_idle_timeout: Some(DEFAULT_POOL_IDLE_TIMEOUT),
            pool_max_idle_per_host: usize::MAX,
            h2_streams: 100,
            max_age: Some(DEFAULT_MAX_CONNECTION_AGE),
            read_buf_exact: None,
            max_buf: None,
            roots: Vec::new(),
            built_in_roots: true,
            identity: None,
            insecure: false,
            proxy: None,
            no_proxy: None,
            proxy_from_env: true,
        }
    }
}

impl HyperTransportBuilder {
    /// Bound on establishing a TCP connection (`None`: no bound of its own).
    /// A connect that times out sent nothing, so any request may fail over.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// How long an idle pooled connection is kept (`None`: until the server
    /// closes it).
    pub fn pool_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.pool_idle_timeout = timeout.into();
        self
    }

    /// The most idle connections kept per host (0 turns pooling off).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// How old a connection may be and still take a new request (`None`
    /// or zero: any age). Past it, a connection finishes what it carries
    /// and closes when idle, so connections follow a host name that moved
    /// to other addresses and spread over replicas added since (as .NET's
    /// `PooledConnectionLifetime`).
    pub fn pool_max_connection_age(mut self, age: impl Into<Option<Duration>>) -> Self {
        self.max_age = age.into().filter(|a| !a.is_zero());
        self
    }

    /// The most streams at once on one HTTP/2 connection: a call that finds
    /// every connection of its origin carrying this many opens another.
    /// Checked by [`build`](Self::build): at least 1.
    ///
    /// Why 100: a server announces its own limit, and requests above it
    /// wait on the connection for a stream to end. RFC 9113 asks servers
    /// to allow at least 100 (nginx allows 128, hyper 200, Go 250), so
    /// below 100 calls rarely wait behind a busy connection, and a
    /// connection's streams are still shared widely. hyper does not
    /// expose the server's announced limit, so this is a setting.
    pub fn http2_max_streams_per_connection(mut self, max: usize) -> Self {
        self.h2_streams = max;
        self
    }

    /// A read buffer of exactly this many bytes for each HTTP/1 connection,
    /// instead of hyper's adaptive one (8 KiB at first, grown for large
    /// reads). The buffer lives as long as its connection, in use or idle,
    /// so this is the knob for memory per connection: 2 KiB holds a typical
    /// answer head and small body, and larger bodies are read in more
    /// steps. Checked by [`build`](Self::build): at least 1 KiB, and not
    /// with [`http1_max_buf_size`](Self::http1_max_buf_size).
    /// See BENCHMARKS.md for what each size costs.
    pub fn http1_read_buf_exact_size(mut self, size: impl Into<Option<usize>>) -> Self {
        self.read_buf_exact = size.into();
        self
    }

    /// The most a connection's HTTP/1 buffers may hold; an answer head
    /// larger than this is an error. Checked by [`build`](Self::build): at
    /// least 8 KiB.
    pub fn http1_max_buf_size(mut self, max: usize) -> Self {
        self.max_buf = Some(max);
        self
    }

    #[cfg(feature = "rustls")]
    /// Also trusts the CA certificates in `pem` (one or many). Call it
    /// again to add more.
    pub fn add_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots.push(pem.into());
        self
    }

    #[cfg(feature = "rustls")]
    /// Whether the system's trust store (or the bundled webpki roots where
    /// it is empty) is trusted; `false` trusts only the roots added with
    /// [`add_root_certificate_pem`](Self::add_root_certificate_pem).
    pub fn tls_built_in_root_certs(mut self, on: bool) -> Self {
        self.built_in_roots = on;
        self
    }

    #[cfg(feature = "rustls")]
    /// A client certificate for mutual TLS: `cert_pem` holds the leaf and
    /// any intermediates, `key_pem` its private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub fn identity_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    #[cfg(feature = "rustls")]
    /// **Dangerous.** Accepts any server certificate, expired, self-signed
    /// or for another name, as curl's `--insecure` does. Every attempt made
    /// through such a transport says so in its report and in tracing.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.insecure = accept;
        self
    }

    /// Sends every request through the `http://` proxy at `url`
    /// (`http://user:password@host:port`; the credentials go in
    /// `Proxy-Authorization`). It replaces the proxy variables.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = Some(url.into());
        self
    }

    /// Hosts that bypass the proxy, as in `NO_PROXY`: comma-separated
    /// names (a name also covers its subdomains), IP addresses, CIDR
    /// ranges, or `*`. It replaces `NO_PROXY`.
    pub fn no_proxy(mut self, list: impl Into<String>) -> Self {
        self.no_proxy = Some(list.into());
        self
    }

    /// Whether `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY`
    /// (and their lower-case forms) are honoured.
    pub fn proxy_from_env(mut self, on: bool) -> Self {
        self.proxy_from_env = on;
        self
    }

    /// Checks the certificates, key and proxy settings and builds the
    /// transport. It needs a tokio runtime only when used; the system's
    /// trust store is read on the first HTTPS connection.
    pub fn build(self) -> Result<HyperTransport, BuildError> {
        // hyper asserts on these; refuse them here with a name instead.
        if let Some(n) = self.read_buf_exact.filter(|&n| n < 1024) {
            return Err(BuildError::Setting {
                setting: "http1_read_buf_exact_size",
                reason: format!("{n} bytes is below the 1 KiB minimum"),
            });
        }
        if self.read_buf_exact.is_some() && self.max_buf.is_some() {
            // hyper's buffer is either exact or bounded, not both.
            return Err(BuildError::Setting {
                setting: "http1_read_buf_exact_size",
                reason: "set it or http1_max_buf_size, not both".into(),
            });
        }
        if self.h2_streams == 0 {
            return Err(BuildError::Setting {
                setting: "http2_max_streams_per_connection",
                reason: "0 streams would send nothing".into(),
            });
        }
        if let Some(n) = self.max_buf.filter(|&n| n < 8192) {
            return Err(BuildError::Setting {
                setting: "http1_max_buf_size",
                reason: format!("{n} bytes is below the 8 KiB minimum"),
            });
        }
        #[cfg(feature = "rustls")]
        let tls = Arc::new(Tls::new(
            &self.roots,
            self.built_in_roots,
            self.identity.as_ref(),
            self.insecure,
        )?);
        let proxies = Proxies::new(
            self.proxy.as_deref(),
            self.no_proxy.as_deref(),
            self.proxy_from_env,
        )?
        .map(Arc::new);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(self.connect_timeout);
        let connector = Connector {
            http,
            #[cfg(feature = "rustls")]
            tls,
            proxies,
            connect_timeout: self.connect_timeout,
        };
        let mut h1 = hyper::client::conn::http1::Builder::new();
        if self.read_buf_exact.is_some() {
            h1.read_buf_exact_size(self.read_buf_exact);
        }
        if let Some(n) = self.max_buf {
            h1.max_buf_size(n);
        }
        Ok(HyperTransport {
            client: Arc::new(Client::new(
                connector,
                Pool::new(
                    self.pool_idle_timeout,
                    self.pool_max_idle_per_host,
                    self.h2_streams,
                    self.max_age,
                ),
                h1,
            )),
            insecure: self.insecure,
        })
    }
}

impl Transport for HyperTransport {
    fn send(&self, request: http::Request<RequestBody>) -> SendFuture {
        Box::pin(self.client.clone().send(request))
    }

    fn danger_accepts_invalid_certs(&self) -> bool {
        self.insecure
    }

    fn supports_unix_sockets(&self) -> bool {
        cfg!(unix)
    }
}

//! The default transport: hyper-util's pooled client over rustls.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{BoxError, RequestBody, SendFuture, Transport, TransportError, TransportErrorKind};

/// hyper 1.x with hyper-util's pooled client, rustls (ring) and the webpki
/// root certificates; HTTP/1.1 and HTTP/2 (by ALPN).
///
/// One pool serves every link of a chain and every clone of it, so
/// keep-alive connections are reused across calls. Cloning a
/// `HyperTransport` shares its pool, so several chains can share one too.
#[derive(Clone, Debug)]
pub struct HyperTransport {
    client: Client<HttpsConnector<HttpConnector>, RequestBody>,
}

impl Default for HyperTransport {
    fn default() -> Self {
        HyperTransport::builder().build()
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

/// Options of a [`HyperTransport`].
///
/// | option | default |
/// | --- | --- |
/// | [`connect_timeout`](Self::connect_timeout) | 2 s |
/// | [`pool_idle_timeout`](Self::pool_idle_timeout) | 90 s |
/// | [`pool_max_idle_per_host`](Self::pool_max_idle_per_host) | unbounded |
#[derive(Clone, Debug)]
pub struct HyperTransportBuilder {
    connect_timeout: Option<Duration>,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
}

impl Default for HyperTransportBuilder {
    fn default() -> Self {
        HyperTransportBuilder {
            connect_timeout: Some(Duration::from_secs(2)),
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: usize::MAX,
        }
    }
}

impl HyperTransportBuilder {
    /// Bound on establishing a TCP connection (`None`: no bound of its own).
    /// A connect that times out sent nothing, so any request may fail over.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept (`None`: forever).
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// The most idle connections kept per host.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Builds the transport. It needs a tokio runtime only when used.
    pub fn build(self) -> HyperTransport {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(self.connect_timeout);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        // ring supports every default version, so this cannot fail.
        .expect("ring supports the default TLS versions")
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .build(https);
        HyperTransport { client }
    }
}

impl Transport for HyperTransport {
    fn send(&self, request: http::Request<RequestBody>) -> SendFuture {
        let fut = self.client.request(request);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync())),
                Err(e) => {
                    let kind = if !e.is_connect() {
                        TransportErrorKind::Other
                    } else if timed_out(&e) {
                        TransportErrorKind::ConnectTimeout
                    } else {
                        TransportErrorKind::Connect
                    };
                    Err(TransportError::new(kind, e))
                }
            }
        })
    }
}

fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

//! A transport over a caller-configured `reqwest::Client`.

use super::{RequestBody, ResponseBody, SendFuture, Transport, TransportError, TransportErrorKind};

/// Sends through a `reqwest::Client` that the caller configured (proxies,
/// cookies, TLS roots, and so on).
///
/// The chain's own per-attempt timeout still applies on top of any timeout
/// set on the client.
///
/// **Versions.** This is reqwest 0.13's `Client`, behind the feature
/// `reqwest-0_13`. A later reqwest will get a feature of its own beside this
/// one, so upgrading reqwest never forces a breaking release here: the
/// `Client` you pass must come from the same reqwest version as the feature
/// you enable (`cargo tree -i reqwest` shows which you have).
///
/// It does not report [`Handoff`](super::Handoff)s or stale pooled
/// connections, so a request cut short by the chain's timer is taken as
/// possibly sent.
///
/// ```
/// # fn demo() -> Result<(), fallback_chain::BuildError> {
/// let client = reqwest::Client::builder().build().expect("client");
/// let chain = fallback_chain::Chain::builder()
///     .transport(fallback_chain::transport::ReqwestTransport::new(client))
///     .link(fallback_chain::Link::get("http://127.0.0.1:8080/"))
///     .build()?;
/// # let _ = chain; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    /// Wraps `client`; its connection pool is shared by every link.
    pub fn new(client: reqwest::Client) -> ReqwestTransport {
        ReqwestTransport { client }
    }
}

impl Transport for ReqwestTransport {
    fn send(&self, request: http::Request<RequestBody>) -> SendFuture {
        let (parts, body) = request.into_parts();
        let body = match body.as_bytes() {
            // Bytes keep their Content-Length.
            Some(bytes) => reqwest::Body::from(bytes.clone()),
            None => reqwest::Body::wrap(body),
        };
        let request = reqwest::Request::try_from(http::Request::from_parts(parts, body));
        let client = self.client.clone();
        Box::pin(async move {
            let request =
                request.map_err(|e| TransportError::new(TransportErrorKind::Connect, e))?;
            match client.execute(request).await {
                Ok(resp) => {
                    let resp: http::Response<reqwest::Body> = resp.into();
                    Ok(resp.map(ResponseBody::new))
                }
                Err(e) => {
                    let kind = match (e.is_connect(), e.is_timeout()) {
                        (true, true) => TransportErrorKind::ConnectTimeout,
                        (true, false) => TransportErrorKind::Connect,
                        _ => TransportErrorKind::Other,
                    };
                    // reqwest's message carries the URL, query secrets and all.
                    Err(TransportError::new(kind, e.without_url()))
                }
            }
        })
    }
}

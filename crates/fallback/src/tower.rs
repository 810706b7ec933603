//! tower integration (feature `tower-0_3`).
//!
//! - [`Chain`] implements `tower::Service<http::Request<B>>`:
//!   each call sends the incoming request (its method, headers, body, path
//!   and query) to every link in turn, the link's URL giving the scheme,
//!   host and path prefix. It drops into tower stacks and axum.
//! - [`FallbackLayer`] is a `tower::Layer`: it wraps a service in a chain
//!   whose links all go through it.
//! - [`TowerTransport`] turns any `tower::Service` over `http::Request` into
//!   a [`Transport`], for the whole chain
//!   ([`ChainBuilder::transport`](crate::ChainBuilder::transport)) or one
//!   link ([`Link::transport`](crate::Link::transport)).
//!
//! The breaker, retry, timeout, hedge and idempotency rules apply as for
//! any call.
//!
//! ```
//! use fallback_chain::{Chain, Link};
//! use fallback_chain_testserver::{Behavior, Server};
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let down = Server::refused();
//! let up = Server::start(Behavior::Echo);
//! let mut svc = Chain::builder()
//!     .link(Link::get(down.url("/api")))
//!     .link(Link::get(up.url("/api")))
//!     .build()?;
//! let body = http_body_util::Full::new(bytes::Bytes::from("hello"));
//! let req = http::Request::post("/orders?x=1").body(body)?;
//! type Req = http::Request<http_body_util::Full<bytes::Bytes>>;
//! let resp = ServiceExt::<Req>::ready(&mut svc).await?.call(req).await?;
//! assert_eq!(resp.headers()["x-echo-path"], "/api/orders?x=1");
//! # Ok(()) }
//! ```

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use tower_service::Service;

use crate::error::{Error, ErrorKind};
use crate::report::Report;
use crate::transport::{
    BoxError, RequestBody, ResponseBody, SendFuture, Transport, TransportError, TransportErrorKind,
};
use crate::Chain;

/// Any `tower::Service` over `http::Request<RequestBody>` as a transport.
///
/// An error is taken as "the request may have been sent" unless it is (or
/// wraps) a hyper-util connect error, so a POST is not re-sent after it.
#[derive(Clone, Debug)]
pub struct TowerTransport<S> {
    svc: S,
}

impl<S> TowerTransport<S> {
    /// Wraps `svc`; it is cloned for each request.
    pub fn new(svc: S) -> Self {
        TowerTransport { svc }
    }
}

impl<S, B> Transport for TowerTransport<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn send(&self, request: http::Request<RequestBody>) -> SendFuture {
        let mut svc = self.svc.clone();
        Box::pin(async move {
            let kind = |e: &BoxError| {
                let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&**e);
                while let Some(err) = cur {
                    if err
                        .downcast_ref::<hyper_util::client::legacy::Error>()
                        .is_some_and(|h| h.is_connect())
                    {
                        return TransportErrorKind::Connect;
                    }
                    cur = err.source();
                }
                TransportErrorKind::Other
            };
            if let Err(e) = poll_fn(|cx| svc.poll_ready(cx)).await {
                // Not ready: nothing was sent.
                let e: BoxError = e.into();
                return Err(TransportError::new(TransportErrorKind::Connect, e));
            }
            match svc.call(request).await {
                Ok(resp) => Ok(resp.map(ResponseBody::new)),
                Err(e) => {
                    let e: BoxError = e.into();
                    Err(TransportError::new(kind(&e), e))
                }
            }
        })
    }
}

impl<B> Service<http::Request<B>> for Chain
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<ResponseBody>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let chain = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let limit = chain.max_body();
            let body =
                http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
                    .collect()
                    .await
                    .map_err(|e| {
                        Error::new(ErrorKind::Body, Report::default(), None).with_detail(format!(
                            "the incoming request body could not be read: {e}"
                        ))
                    })?
                    .to_bytes();
            let resp = chain.send(http::Request::from_parts(parts, body)).await?;
            let mut out = http::Response::new(ResponseBody::full(resp.body().clone()));
            *out.status_mut() = resp.status();
            *out.version_mut() = resp.version();
            *out.headers_mut() = resp.headers().clone();
            Ok(out)
        })
    }
}

/// A `tower::Layer` that wraps a service in a chain: every link is sent
/// through the inner service, with the chain's failover, breakers, retries,
/// timeouts and hedging around it.
///
/// ```
/// use fallback_chain::tower::FallbackLayer;
/// use fallback_chain::transport::RequestBody;
/// use fallback_chain::{Chain, Link};
/// use tower::Layer;
///
/// let template = Chain::builder()
///     .link(Link::get("http://primary.internal/api"))
///     .link(Link::get("http://backup.internal/api"))
///     .build()?;
/// let inner = tower::service_fn(|_req: http::Request<RequestBody>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("ok"))))
/// });
/// let chain: Chain = FallbackLayer::new(template).layer(inner);
/// # drop(chain);
/// # Ok::<(), fallback_chain::BuildError>(())
/// ```
#[derive(Clone, Debug)]
pub struct FallbackLayer {
    template: Chain,
}

impl FallbackLayer {
    /// A layer that builds chains like `template` (already validated) over
    /// the service it wraps.
    pub fn new(template: Chain) -> FallbackLayer {
        FallbackLayer { template }
    }
}

impl<S, B> tower_layer::Layer<S> for FallbackLayer
where
    S: Service<http::Request<RequestBody>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Service = Chain;

    fn layer(&self, inner: S) -> Chain {
        self.template.with_transport(TowerTransport::new(inner))
    }
}

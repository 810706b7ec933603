//! A streamed winner's breaker verdict, deferred to the end of its body:
//! a body that ends cleanly is a success, one that breaks (or whose gRPC
//! trailers carry a code of the classifier's gRPC set) is a failure, one
//! dropped unread says nothing.

use std::pin::Pin;

use bytes::Bytes;
use tokio::time::Instant;

use super::Chain;

/// A breaker verdict that waits for the end of a streamed body: a body
/// that ends cleanly is a success, one that breaks is a failure, and one
/// dropped unread says nothing (a probe then frees the way).
pub(crate) struct Pending {
    pub(super) chain: Chain,
    pub(super) index: usize,
    /// The verdict settles a probe.
    pub(super) probe: bool,
    /// False when the chain has no breakers.
    pub(super) armed: bool,
}

impl Pending {
    fn finish(&mut self, ok: bool) {
        if !std::mem::take(&mut self.armed) {
            return;
        }
        let inner = &*self.chain.inner;
        if let Some(b) = inner.breakers.as_ref().and_then(|b| b.get(self.index)) {
            let changed = b.record(Instant::now(), ok, self.probe);
            #[cfg(feature = "metrics")]
            if let (Some(state), Some(ep)) = (changed, inner.endpoints.get(self.index)) {
                crate::metrics::breaker_state(&ep.name, state);
            }
            #[cfg(not(feature = "metrics"))]
            let _ = changed;
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if std::mem::take(&mut self.armed) && self.probe {
            if let Some(b) = self
                .chain
                .inner
                .breakers
                .as_ref()
                .and_then(|b| b.get(self.index))
            {
                b.release_probe();
            }
        }
    }
}

/// A streamed body that tells its link's breaker how it ended.
pub(crate) struct Watched {
    pub(crate) body: crate::transport::ResponseBody,
    pub(crate) pending: Option<Pending>,
}

impl Watched {
    /// Trailers without a gRPC status in the classifier's gRPC set end
    /// the stream well.
    fn trailers_ok(&self, trailers: Option<&http::HeaderMap>) -> bool {
        let Some(p) = &self.pending else {
            return true;
        };
        let classifier = &p.chain.inner.settings.classifier;
        !trailers
            .and_then(crate::grpc::code_of)
            .is_some_and(|code| classifier.grpc_falls_back(code))
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = crate::transport::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let ended = match &polled {
            std::task::Poll::Ready(None) => Some(true),
            std::task::Poll::Ready(Some(Err(_))) => Some(false),
            // A gRPC status in the trailers: the stream's own verdict.
            std::task::Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {
                Some(self.trailers_ok(frame.trailers_ref()))
            }
            // A reader that stops at the end it knows (Content-Length)
            // never polls for the final `None`.
            std::task::Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => Some(true),
            _ => None,
        };
        if let Some(ok) = ended {
            if let Some(mut p) = self.pending.take() {
                #[cfg(feature = "metrics")]
                if let (false, std::task::Poll::Ready(Some(Err(e)))) = (ok, &polled) {
                    if let Some(ep) = p.chain.inner.endpoints.get(p.index) {
                        crate::metrics::stream_aborted(&ep.name, &**e);
                    }
                }
                if let (false, std::task::Poll::Ready(Some(Err(e)))) = (ok, &polled) {
                    tracing::warn!(error = %crate::transport::error_chain(&**e), "streamed body aborted after the commit");
                }
                p.finish(ok);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

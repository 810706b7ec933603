//! The winning response and the streaming [`BodySink`]. How the chain
//! reads a winner's body is `chain/consume.rs`.

use std::future::Future;
use std::io;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::report::Report;

/// The winning link's answer: status, headers, body and the report.
///
/// `T` is [`Bytes`] for [`Chain::call`], the decoded type for
/// [`Chain::call_json`], and `()` for [`Chain::call_into`], whose body went
/// to a [`BodySink`].
///
/// [`Chain::call`]: crate::Chain::call
/// [`Chain::call_json`]: crate::Chain::call_json
/// [`Chain::call_into`]: crate::Chain::call_into
#[derive(Clone)]
pub struct Response<T = Bytes> {
    pub(crate) status: StatusCode,
    pub(crate) version: http::Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: T,
    pub(crate) winner: usize,
    pub(crate) report: Report,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Response<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("version", &self.version)
            .field("headers", &crate::redact::Headers(&self.headers))
            .field("body", &self.body)
            .field("winner", &self.winner)
            .field("report", &self.report)
            .finish()
    }
}

impl<T> Response<T> {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The HTTP version the winner answered in.
    pub fn version(&self) -> http::Version {
        self.version
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The gRPC status in the head, when the answer is trailers-only
    /// (`OK`: a failure code comes back as an [`Error`](crate::Error)
    /// instead). A streamed answer's status comes in its trailers, at the
    /// end of the body.
    pub fn grpc_status(&self) -> Option<crate::grpc::Status> {
        crate::grpc::Status::from_headers(&self.headers)
    }

    /// The body.
    pub fn body(&self) -> &T {
        &self.body
    }

    /// Takes the body.
    pub fn into_body(self) -> T {
        self.body
    }

    /// The index of the link that answered, from 0.
    pub fn winner(&self) -> usize {
        self.winner
    }

    /// Every attempt made, in order; the last one is the winner.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The answer as an [`http::Response`], with the report alongside:
    /// what a proxy passes on, without copying the headers.
    ///
    /// ```
    /// # async fn demo(chain: fallback_chain::Chain) -> Result<(), fallback_chain::Error> {
    /// let (answer, report) = chain.call().await?.into_http();
    /// println!("{} after {} attempt(s)", answer.status(), report.attempts().len());
    /// # Ok(()) }
    /// ```
    pub fn into_http(self) -> (http::Response<T>, Report) {
        let mut out = http::Response::new(self.body);
        *out.status_mut() = self.status;
        *out.version_mut() = self.version;
        *out.headers_mut() = self.headers;
        (out, self.report)
    }
}

/// Where [`Chain::call_into`] streams the winner's body.
///
/// If a body breaks mid-way, the chain calls [`reset`](BodySink::reset) and moves
/// on (when the request may be re-sent), so the sink only ever ends up
/// holding one attempt's bytes: the winner's.
///
/// ```
/// # async fn demo(chain: fallback_chain::Chain) -> Result<(), fallback_chain::Error> {
/// let mut sink: Vec<u8> = Vec::new(); // Vec<u8> is a BodySink
/// let resp = chain.call_into(&mut sink).await?;
/// println!("{} bytes from link {}", sink.len(), resp.winner());
/// # Ok(()) }
/// ```
///
/// [`Chain::call_into`]: crate::Chain::call_into
///
/// It is used as a generic parameter, not as a trait object: its methods
/// return futures, so `dyn BodySink` does not exist. ([`Observer`], which
/// the chain keeps for its whole life, is object-safe.)
///
/// [`Observer`]: crate::Observer
pub trait BodySink: Send {
    /// Takes the next chunk of the body.
    fn write(&mut self, chunk: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    /// Discards everything written so far.
    fn reset(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

impl BodySink for Vec<u8> {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.extend_from_slice(&chunk);
        Ok(())
    }

    async fn reset(&mut self) -> io::Result<()> {
        self.clear();
        Ok(())
    }
}

//! The winning response, the streaming [`BodySink`], and how bodies are read.

use std::future::Future;
use std::io;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::report::Report;
use crate::transport::{BoxError, ResponseBody};

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

/// Why a success's body could not be taken.
#[derive(Debug)]
pub(crate) enum ConsumeError {
    TooLarge(u64),
    Body(BoxError),
    Decode(serde_json::Error, Bytes),
    Sink(io::Error),
}

/// Takes the body of a response the classifier called a success.
pub(crate) trait Consume: Send {
    type Output: Send;

    fn consume(
        &mut self,
        body: ResponseBody,
        limit: u64,
        len: Option<u64>,
    ) -> impl Future<Output = Result<Self::Output, ConsumeError>> + Send;

    /// Undoes a consume that failed or was abandoned mid-way.
    fn reset(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Whether the winner's body is still to be read when the attempt ends
    /// (the call commits at the head): its link's breaker then hears the
    /// verdict when the body ends, through [`Consume::attach`].
    fn commits_at_head(&self) -> bool {
        false
    }

    /// Whether the body is read as it comes rather than buffered whole
    /// (a commit at the head, a caller's sink): such a body is bounded
    /// between reads by the link's idle timeout.
    fn streams(&self) -> bool {
        self.commits_at_head()
    }

    /// Ties the breaker's pending verdict to the output, for consumers that
    /// commit at the head.
    fn attach(output: Self::Output, pending: crate::chain::Pending) -> Self::Output {
        drop(pending);
        output
    }

    /// Takes a whole body already read (a hedged call's winner), for a
    /// consumer that does not fork.
    fn take(&mut self, bytes: Bytes) -> impl Future<Output = io::Result<Self::Output>> + Send {
        let _ = bytes;
        async {
            Err(io::Error::other(
                "this consumer forks: it never takes a buffered body",
            ))
        }
    }

    /// A fresh consumer for a concurrent attempt, when this one keeps no
    /// state (buffering does; a caller's sink does not fork).
    fn fork(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

/// Buffers the body as bytes.
pub(crate) struct Buffered;

impl Consume for Buffered {
    type Output = Bytes;

    fn fork(&self) -> Option<Self> {
        Some(Buffered)
    }

    async fn consume(
        &mut self,
        body: ResponseBody,
        limit: u64,
        len: Option<u64>,
    ) -> Result<Bytes, ConsumeError> {
        collect(body, limit, len).await
    }
}

/// Commits at the head: the body is handed on unread, to stream.
pub(crate) struct Commit;

impl Consume for Commit {
    type Output = ResponseBody;

    fn fork(&self) -> Option<Self> {
        Some(Commit)
    }

    fn commits_at_head(&self) -> bool {
        true
    }

    async fn consume(
        &mut self,
        body: ResponseBody,
        _limit: u64,
        _len: Option<u64>,
    ) -> Result<ResponseBody, ConsumeError> {
        Ok(body)
    }

    fn attach(output: ResponseBody, pending: crate::chain::Pending) -> ResponseBody {
        ResponseBody::new(crate::chain::Watched {
            body: output,
            pending: Some(pending),
        })
    }
}

/// Buffers the body and decodes it as JSON.
pub(crate) struct Typed<T>(PhantomData<fn() -> T>);

impl<T> Typed<T> {
    pub(crate) fn new() -> Typed<T> {
        Typed(PhantomData)
    }
}

impl<T: DeserializeOwned + Send> Consume for Typed<T> {
    type Output = T;

    fn fork(&self) -> Option<Self> {
        Some(Typed::new())
    }

    async fn consume(
        &mut self,
        body: ResponseBody,
        limit: u64,
        len: Option<u64>,
    ) -> Result<T, ConsumeError> {
        let bytes = collect(body, limit, len).await?;
        serde_json::from_slice(&bytes).map_err(|e| ConsumeError::Decode(e, bytes))
    }
}

/// Streams the body into a caller's sink.
pub(crate) struct ToSink<'a, S>(pub(crate) &'a mut S);

impl<S: BodySink> Consume for ToSink<'_, S> {
    fn streams(&self) -> bool {
        true
    }

    type Output = ();

    async fn consume(
        &mut self,
        mut body: ResponseBody,
        limit: u64,
        len: Option<u64>,
    ) -> Result<(), ConsumeError> {
        check_len(limit, len)?;
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ConsumeError::Body)?;
            if let Ok(data) = frame.into_data() {
                seen += data.len() as u64;
                if seen > limit {
                    return Err(ConsumeError::TooLarge(limit));
                }
                self.0.write(data).await.map_err(ConsumeError::Sink)?;
            }
        }
        Ok(())
    }

    fn reset(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        self.0.reset()
    }

    async fn take(&mut self, bytes: Bytes) -> io::Result<()> {
        if !bytes.is_empty() {
            self.0.write(bytes).await?;
        }
        Ok(())
    }
}

fn check_len(limit: u64, len: Option<u64>) -> Result<(), ConsumeError> {
    match len {
        Some(n) if n > limit => Err(ConsumeError::TooLarge(limit)),
        _ => Ok(()),
    }
}

/// Reads a whole body, refusing more than `limit` bytes. A single-frame body
/// is returned without a copy.
pub(crate) async fn collect(
    mut body: ResponseBody,
    limit: u64,
    len: Option<u64>,
) -> Result<Bytes, ConsumeError> {
    check_len(limit, len)?;
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ConsumeError::Body)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        seen += data.len() as u64;
        if seen > limit {
            return Err(ConsumeError::TooLarge(limit));
        }
        match (&mut first, &mut buf) {
            (None, None) => first = Some(data),
            (Some(f), None) => {
                let cap = len.unwrap_or(0).max(seen) as usize;
                let mut b = BytesMut::with_capacity(cap);
                b.extend_from_slice(f);
                b.extend_from_slice(&data);
                first = None;
                buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&data),
        }
    }
    Ok(match (first, buf) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

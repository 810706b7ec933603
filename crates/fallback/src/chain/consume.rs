//! How an attempt takes a winner's body: buffered ([`Buffered`]), decoded
//! as JSON ([`Typed`]), into a caller's sink ([`ToSink`]), or handed on
//! unread to stream ([`Commit`]); and the bounded read they share
//! ([`collect`]).

use std::future::Future;
use std::io;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use super::deferred::{Pending, Watched};
use crate::response::BodySink;
use crate::transport::{BoxError, ResponseBody};

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
    fn attach(output: Self::Output, pending: Pending) -> Self::Output {
        drop(pending);
        output
    }

    /// Takes a whole body already read: a hedged call's winner, raced by
    /// buffering because this consumer does not fork.
    fn take(&mut self, bytes: Bytes) -> impl Future<Output = io::Result<Self::Output>> + Send;

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

    fn consume(
        &mut self,
        body: ResponseBody,
        limit: u64,
        len: Option<u64>,
    ) -> impl Future<Output = Result<Bytes, ConsumeError>> + Send {
        collect(body, limit, len)
    }

    async fn take(&mut self, bytes: Bytes) -> io::Result<Bytes> {
        Ok(bytes)
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

    async fn take(&mut self, bytes: Bytes) -> io::Result<ResponseBody> {
        Ok(ResponseBody::full(bytes))
    }

    fn attach(output: ResponseBody, pending: Pending) -> ResponseBody {
        ResponseBody::new(Watched {
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

    async fn take(&mut self, bytes: Bytes) -> io::Result<T> {
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
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
pub(crate) fn collect(body: ResponseBody, limit: u64, len: Option<u64>) -> Collect {
    Collect {
        body,
        limit,
        len,
        seen: 0,
        got: Got::Nothing,
    }
}

/// The future of [`collect`]: a named type rather than an `async fn`, so
/// that it holds the body once and nothing else (it sits in every call's
/// future while the winner's body is read).
pub(crate) struct Collect {
    body: ResponseBody,
    limit: u64,
    len: Option<u64>,
    seen: u64,
    got: Got,
}

/// What a [`Collect`] has read so far.
enum Got {
    Nothing,
    /// One chunk, kept as it came.
    One(Bytes),
    /// Several, copied into one buffer.
    Many(BytesMut),
}

impl Future for Collect {
    type Output = Result<Bytes, ConsumeError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use http_body::Body as _;
        use std::task::Poll;
        let this = &mut *self;
        check_len(this.limit, this.len)?;
        loop {
            let frame = match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => break,
                Poll::Ready(Some(frame)) => frame.map_err(ConsumeError::Body)?,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            this.seen += data.len() as u64;
            if this.seen > this.limit {
                return Poll::Ready(Err(ConsumeError::TooLarge(this.limit)));
            }
            this.got = match std::mem::replace(&mut this.got, Got::Nothing) {
                Got::Nothing => Got::One(data),
                Got::One(first) => {
                    let cap = this.len.unwrap_or(0).max(this.seen) as usize;
                    let mut b = BytesMut::with_capacity(cap);
                    b.extend_from_slice(&first);
                    b.extend_from_slice(&data);
                    Got::Many(b)
                }
                Got::Many(mut b) => {
                    b.extend_from_slice(&data);
                    Got::Many(b)
                }
            };
        }
        Poll::Ready(Ok(match std::mem::replace(&mut this.got, Got::Nothing) {
            Got::Nothing => Bytes::new(),
            Got::One(b) => b,
            Got::Many(b) => b.freeze(),
        }))
    }
}

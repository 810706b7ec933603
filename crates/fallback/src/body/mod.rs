//! Request bodies that can be sent again, byte for byte, to every link.
//!
//! | body | kept how | re-sent how |
//! | --- | --- | --- |
//! | [`Body::bytes`], `From<Vec<u8>>`, `From<String>`, … | in memory, once | the same bytes, shared, never copied |
//! | [`Body::json`] | serialized once, when the link is made | the same bytes |
//! | [`Body::file`] | a path; checked when the chain is built | re-opened and streamed on every attempt |
//! | [`Body::factory`] | a closure | called for a fresh stream on every attempt |
//! | [`Body::once`] | a one-shot stream | **refused in a link**, when the chain is built; in a request to [`Chain::send`], it goes to the first link tried, and to a later one only if none of it was read |
//! | [`Body::replayable`] | a stream, sent as it arrives while a copy is kept (memory, then a temporary file: [`ReplayBuffer`]) | **refused in a link**; in a request, any attempt may send it while the copy is whole: the copy, then on from the stream |
//!
//! A one-shot stream that breaks a retry mid-call is the most common
//! complaint against retry middleware (reqwest-middleware issue 44). Here
//! it is a build error in a link, and a call that stops with
//! [`ErrorKind::NotReplayable`] when a link that read it fails.
//!
//! [`Chain::send`]: crate::Chain::send
//! [`ErrorKind::NotReplayable`]: crate::ErrorKind::NotReplayable

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use serde::Serialize;
use tokio::io::{AsyncRead, ReadBuf};

use crate::transport::{BoxError, RequestBody};

mod replay;

pub use replay::ReplayBuffer;

type Factory = Arc<dyn Fn() -> RequestBody + Send + Sync>;

/// A request body that can be re-sent, identical, on every attempt.
///
/// Bytes and JSON are kept in memory once and shared (never copied) between
/// attempts; files are re-opened, factories called again.
///
/// ```
/// use fallback_chain::Body;
/// let raw = Body::from("plain text");
/// let json = Body::json(&serde_json::json!({"Name": "Random", "Amount": 100}));
/// assert_eq!(raw.len(), Some(10));
/// assert!(json.is_json());
/// ```
#[derive(Clone, Default)]
pub struct Body {
    inner: Inner,
}

#[derive(Clone, Default)]
enum Inner {
    #[default]
    Empty,
    Bytes(Bytes),
    Json(Result<Bytes, Arc<serde_json::Error>>),
    File(Arc<PathBuf>),
    Factory(Factory),
    Once(Arc<OnceSlot>),
    Replay(Arc<replay::Tee>),
}

/// A one-shot stream, owned by the first attempt that reads it.
pub(crate) struct OnceSlot {
    stream: std::sync::Mutex<Option<UnsyncBoxBody<Bytes, BoxError>>>,
    /// Set by the first read: from then on nothing else may send it.
    spent: std::sync::atomic::AtomicBool,
}

impl Body {
    /// No body.
    pub fn empty() -> Body {
        Body::default()
    }

    /// Raw bytes.
    pub fn bytes(bytes: impl Into<Bytes>) -> Body {
        Body {
            inner: Inner::Bytes(bytes.into()),
        }
    }

    /// Any value serialized as JSON. The link sends it with
    /// `Content-Type: application/json` unless it sets its own. A value that
    /// cannot be serialized is reported when the chain is built.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Body {
        Body {
            inner: Inner::Json(serde_json::to_vec(value).map(Bytes::from).map_err(Arc::new)),
        }
    }

    /// A file, re-opened and streamed (not buffered) on every attempt, with
    /// its length as `Content-Length`. The chain checks, when it is built,
    /// that the file exists and is a regular file.
    pub fn file(path: impl Into<PathBuf>) -> Body {
        Body {
            inner: Inner::File(Arc::new(path.into())),
        }
    }

    /// A closure called for a fresh body stream on every attempt. Every call
    /// must yield the same bytes.
    ///
    /// ```
    /// use fallback_chain::Body;
    /// use http_body_util::Full;
    /// let body = Body::factory(|| Full::new(bytes::Bytes::from_static(b"fresh each time")));
    /// # let _ = body;
    /// ```
    pub fn factory<F, B>(f: F) -> Body
    where
        F: Fn() -> B + Send + Sync + 'static,
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        Body {
            inner: Inner::Factory(Arc::new(move || RequestBody::stream(f()))),
        }
    }

    /// A one-shot stream, too large or too live to keep.
    ///
    /// - **In a link** it could not be re-sent to a backup or a retry, so
    ///   the chain is refused when it is built; use [`Body::bytes`],
    ///   [`Body::file`] or [`Body::factory`] instead.
    /// - **In a request** to [`Chain::send`](crate::Chain::send) or
    ///   [`send_streaming`](crate::Chain::send_streaming) it streams to the
    ///   first link tried, unbuffered. A link that fails before reading any
    ///   of it (a refused connection, an open breaker) passes it on whole to
    ///   the next; once a link has read it, nothing else is tried, and the
    ///   call fails with [`ErrorKind::NotReplayable`](crate::ErrorKind::NotReplayable).
    ///   Hedging is off for such a call.
    ///
    /// ```
    /// use fallback_chain::{Body, BuildError, Chain, Link, LinkProblem};
    /// let stream = http_body_util::Full::new(bytes::Bytes::from_static(b"once"));
    /// let err = Chain::builder()
    ///     .link(Link::post("http://127.0.0.1:1/").body(Body::once(stream)))
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, BuildError::Link { problem: LinkProblem::OneShotBody, .. }));
    /// ```
    pub fn once<B>(body: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Body {
            inner: Inner::Once(Arc::new(OnceSlot {
                stream: std::sync::Mutex::new(Some(body.map_err(Into::into).boxed_unsync())),
                spent: std::sync::atomic::AtomicBool::new(false),
            })),
        }
    }

    /// A stream sent as it arrives, while a copy is kept so that a later
    /// attempt can send it again: in memory, then in a temporary file, as
    /// `buffer` bounds them. The first attempt waits for nothing (a
    /// full-duplex exchange works); a later one sends the copy, then goes
    /// on from the stream.
    ///
    /// Once a byte could not be kept (the body outgrew the buffer, or the
    /// buffer's disk total was in use), the attempt reading it goes on
    /// and nothing else may send the body: a failure then ends the call
    /// with [`ErrorKind::NotReplayable`](crate::ErrorKind::NotReplayable),
    /// and [`not_replayable_because`](Self::not_replayable_because) says
    /// why. Like [`Body::once`], it is refused in a link.
    ///
    /// ```
    /// use fallback_chain::{Body, ReplayBuffer};
    /// let buffer = ReplayBuffer::new(); // 1 MiB in memory, then 64 MiB on disk
    /// let stream = http_body_util::Full::new(bytes::Bytes::from_static(b"upload"));
    /// let body = Body::replayable(stream, &buffer);
    /// assert_eq!(body.not_replayable_because(), None);
    /// ```
    pub fn replayable<B>(body: B, buffer: &ReplayBuffer) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body {
            inner: Inner::Replay(Arc::new(replay::Tee::new(body, buffer))),
        }
    }

    /// Why a [replayable](Self::replayable) body can no longer be sent
    /// again, once it has outgrown its buffer; `None` for every other
    /// body.
    pub fn not_replayable_because(&self) -> Option<String> {
        match &self.inner {
            Inner::Replay(tee) => tee.gap(),
            _ => None,
        }
    }

    /// The call is over: a replayable body keeps no more copy than the
    /// reader still reading needs.
    pub(crate) fn settle(&self) {
        if let Inner::Replay(tee) = &self.inner {
            tee.settle();
        }
    }

    /// Whether this is a stream that some attempt has read and that was
    /// not kept whole: it cannot be sent again.
    pub(crate) fn is_spent(&self) -> bool {
        match &self.inner {
            Inner::Once(slot) => slot.spent.load(std::sync::atomic::Ordering::Acquire),
            Inner::Replay(tee) => tee.is_spent(),
            _ => false,
        }
    }

    /// Whether this is a one-shot stream.
    pub(crate) fn is_once(&self) -> bool {
        matches!(self.inner, Inner::Once(_))
    }

    /// Whether this is a JSON body.
    pub fn is_json(&self) -> bool {
        matches!(self.inner, Inner::Json(_))
    }

    /// The body's length, when known.
    pub fn len(&self) -> Option<u64> {
        match &self.inner {
            Inner::Empty => Some(0),
            Inner::Bytes(b) | Inner::Json(Ok(b)) => Some(b.len() as u64),
            Inner::Json(Err(_))
            | Inner::File(_)
            | Inner::Factory(_)
            | Inner::Once(_)
            | Inner::Replay(_) => None,
        }
    }

    /// Whether the body is known to be empty.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// Checks, when the chain is built, that the body can be re-sent.
    pub(crate) fn check(&self) -> Result<(), crate::LinkProblem> {
        match &self.inner {
            Inner::Json(Err(e)) => Err(crate::LinkProblem::Json(e.clone())),
            Inner::Once(_) | Inner::Replay(_) => Err(crate::LinkProblem::OneShotBody),
            Inner::File(path) => match std::fs::metadata(&**path) {
                Ok(m) if m.is_file() => Ok(()),
                Ok(_) => Err(crate::LinkProblem::BodyFile {
                    path: path.display().to_string(),
                    reason: "not a regular file".into(),
                }),
                Err(e) => Err(crate::LinkProblem::BodyFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }),
            },
            _ => Ok(()),
        }
    }

    /// The in-memory bytes, when the body needs no I/O to produce.
    pub(crate) fn ready(&self) -> Option<RequestBody> {
        match &self.inner {
            Inner::Bytes(b) | Inner::Json(Ok(b)) => Some(RequestBody::full(b.clone())),
            Inner::Empty | Inner::Json(Err(_)) => Some(RequestBody::empty()),
            Inner::Once(slot) => Some(RequestBody::stream(OnceBody {
                slot: slot.clone(),
                mine: false,
            })),
            Inner::Factory(f) => Some(f()),
            Inner::Replay(tee) => Some(RequestBody::stream(tee.reader())),
            Inner::File(_) => None,
        }
    }

    /// A fresh body for one attempt.
    pub(crate) async fn open(&self) -> io::Result<RequestBody> {
        if let Some(b) = self.ready() {
            return Ok(b);
        }
        match &self.inner {
            Inner::File(path) => FileBody::open(path).await.map(RequestBody::stream),
            _ => Ok(RequestBody::empty()),
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Empty => f.write_str("Body(empty)"),
            Inner::Bytes(b) => write!(f, "Body({} bytes)", b.len()),
            Inner::Json(Ok(b)) => write!(f, "Body(json, {} bytes)", b.len()),
            Inner::Json(Err(e)) => write!(f, "Body(json error: {e})"),
            Inner::File(p) => write!(f, "Body(file {})", p.display()),
            Inner::Factory(_) => f.write_str("Body(factory)"),
            Inner::Once(_) => f.write_str("Body(one-shot stream)"),
            Inner::Replay(_) => f.write_str("Body(replayable stream)"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body::bytes(b)
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Body {
        Body::bytes(b)
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::bytes(s)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Body {
        Body::bytes(s)
    }
}

impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Body {
        Body::bytes(s)
    }
}

/// One attempt's hold on a one-shot stream: it takes the stream on its
/// first read, and an attempt that never reads leaves it for the next.
struct OnceBody {
    slot: Arc<OnceSlot>,
    /// This attempt read first.
    mine: bool,
}

impl OnceBody {
    fn stream(&self) -> std::sync::MutexGuard<'_, Option<UnsyncBoxBody<Bytes, BoxError>>> {
        self.slot
            .stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl http_body::Body for OnceBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use std::sync::atomic::Ordering;
        if !self.mine {
            if self.slot.spent.swap(true, Ordering::AcqRel) {
                return Poll::Ready(Some(Err(
                    "the one-shot request body was already sent to another link".into(),
                )));
            }
            self.mine = true;
        }
        let mut guard = self.stream();
        match guard.as_mut() {
            Some(s) => Pin::new(s).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream().as_ref().is_none_or(|s| s.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.stream()
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |s| s.size_hint())
    }
}

/// A file streamed in 64 KiB frames, exactly as long as it was when opened.
struct FileBody {
    file: tokio::fs::File,
    left: u64,
    buf: Vec<u8>,
}

impl FileBody {
    async fn open(path: &Path) -> io::Result<FileBody> {
        let file = tokio::fs::File::open(path).await?;
        let left = file.metadata().await?.len();
        Ok(FileBody {
            file,
            left,
            buf: Vec::new(),
        })
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let want = this.left.min(64 * 1024) as usize;
        this.buf.resize(want, 0);
        let mut rb = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    // Shorter than announced: fail rather than send a lie.
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the body file shrank while it was sent",
                    ))));
                }
                this.left -= n as u64;
                let chunk = Bytes::copy_from_slice(&this.buf[..n]);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

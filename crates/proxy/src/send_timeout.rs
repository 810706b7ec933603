//! nginx's `send_timeout`: a client that stops reading its response for
//! the idle timeout is cut off, so a stalled reader cannot hold a task, its
//! buffers and its upstream connection forever.
//!
//! A wrapper around the client's socket: a write that stays blocked (the
//! client's receive window full) for the bound fails with `TimedOut`, and
//! hyper then closes the connection and drops the response, whose upstream
//! body goes with it. The timer is made on the first blocked write only:
//! a client that reads keeps every write ready and never touches it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fallback_chain::transport::{BoxError, ResponseBody};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub(crate) struct SendTimeout<T> {
    io: T,
    idle: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
    /// A write was blocked and has not gone through since: the timer runs.
    blocked: bool,
}

impl<T> SendTimeout<T> {
    /// `idle: None` leaves writes unbounded.
    pub(crate) fn new(io: T, idle: Option<Duration>) -> SendTimeout<T> {
        SendTimeout {
            io,
            idle,
            timer: None,
            blocked: false,
        }
    }

    /// After a write was `Pending`: arms the timer at the first block
    /// since the last write that went through, and fails once it fires.
    fn on_blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(idle) = self.idle else {
            return Poll::Pending;
        };
        let deadline = Instant::now()
            .checked_add(idle)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        let timer = match &mut self.timer {
            Some(t) => {
                if !self.blocked {
                    t.as_mut().reset(deadline);
                }
                t
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.blocked = true;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {idle:?} (idle timeout)"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn after<R>(
        &mut self,
        polled: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(r) => {
                self.blocked = false;
                Poll::Ready(r)
            }
            Poll::Pending => match self.on_blocked(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.after(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.after(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.after(polled, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.after(polled, cx)
    }
}

/// The same bound for one HTTP/2 stream, whose client may read the other
/// streams of its connection and leave this one's window shut: hyper then
/// stops asking for the body, and the socket never blocks. A watchdog,
/// started once the body has more than a frame to give, drops the
/// upstream's body when the stream has not asked for a frame for the
/// bound (the upstream is released at once), and the stream ends with an
/// error (`RST_STREAM`) when it next asks.
///
/// Frames go out in pieces of at most 16 KiB, so that a client reading
/// slowly asks again well within the bound: only one that reads nothing is
/// cut (nginx's rule: the time between two writes).
pub(crate) struct StreamSendTimeout {
    shared: Arc<Mutex<Paced>>,
    idle: Duration,
    /// The rest of a frame larger than a piece.
    rest: Bytes,
    watching: bool,
}

struct Paced {
    /// `None` once the watchdog dropped it.
    body: Option<ResponseBody>,
    /// When the stream last asked for a frame.
    last: Instant,
    /// Whether the stream is waiting on the upstream, whose own silence is
    /// the chain's idle timeout, not this one.
    waiting: bool,
}

/// The largest piece of a frame handed to the stream at once.
const PIECE: usize = 16 * 1024;

impl StreamSendTimeout {
    pub(crate) fn new(body: ResponseBody, idle: Duration) -> StreamSendTimeout {
        StreamSendTimeout {
            shared: Arc::new(Mutex::new(Paced {
                body: Some(body),
                last: Instant::now(),
                waiting: false,
            })),
            idle,
            rest: Bytes::new(),
            watching: false,
        }
    }

    fn watch(&mut self) {
        if std::mem::replace(&mut self.watching, true) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.shared);
        let idle = self.idle;
        rt.spawn(async move {
            loop {
                let Some(shared) = weak.upgrade() else { return };
                let next = {
                    let mut paced = shared.lock().unwrap_or_else(|e| e.into_inner());
                    let due = paced.last + idle;
                    if paced.waiting {
                        Instant::now() + idle
                    } else if Instant::now() >= due {
                        // Taken under the lock the stream reads under: it
                        // cannot be half-way through a poll.
                        let body = paced.body.take();
                        drop(paced);
                        drop(body);
                        return;
                    } else {
                        due
                    }
                };
                drop(shared);
                tokio::time::sleep_until(next).await;
            }
        });
    }

    /// The next piece of `data`, keeping the rest.
    fn piece(&mut self, mut data: Bytes) -> Bytes {
        if data.len() > PIECE {
            self.rest = data.split_off(PIECE);
        }
        data
    }
}

impl http_body::Body for StreamSendTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let idle = self.idle;
        let shared = self.shared.clone();
        let mut paced = shared.lock().unwrap_or_else(|e| e.into_inner());
        paced.last = Instant::now();
        paced.waiting = false;
        if !self.rest.is_empty() {
            let rest = std::mem::take(&mut self.rest);
            drop(paced);
            let piece = self.piece(rest);
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        let Some(body) = paced.body.as_mut() else {
            return Poll::Ready(Some(Err(format!(
                "the client read nothing of this stream for {idle:?} (idle timeout)"
            )
            .into())));
        };
        let polled = Pin::new(&mut *body).poll_frame(cx);
        let more = match &polled {
            Poll::Ready(Some(Ok(_))) => !body.is_end_stream(),
            Poll::Pending => {
                paced.waiting = true;
                false
            }
            _ => false,
        };
        drop(paced);
        let polled = match polled {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    let piece = self.piece(data);
                    Poll::Ready(Some(Ok(Frame::data(piece))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        };
        if more || !self.rest.is_empty() {
            self.watch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
            && self
                .shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .body
                .as_ref()
                .is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.len() as u64;
        let inner = self
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .body
            .as_ref()
            .map_or_else(SizeHint::default, |b| b.size_hint());
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(rest));
        if let Some(u) = inner.upper() {
            hint.set_upper(u.saturating_add(rest));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_blocked_for_the_bound_fails_and_one_that_moves_does_not() {
        // A pipe of 16 bytes that nobody reads: the second write blocks.
        let (reader, writer) = tokio::io::duplex(16);
        let mut w = SendTimeout::new(writer, Some(Duration::from_secs(60)));
        w.write_all(&[0; 16]).await.unwrap();
        let t = Instant::now();
        let err = w.write_all(&[0; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(t.elapsed(), Duration::from_secs(60));
        assert!(err.to_string().contains("idle timeout"), "{err}");

        // A reader that takes 16 bytes every 59 s never trips it.
        let (mut reader2, writer) = tokio::io::duplex(16);
        let mut w = SendTimeout::new(writer, Some(Duration::from_secs(60)));
        let slow = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0; 16];
            let mut got = 0;
            while got < 96 {
                tokio::time::sleep(Duration::from_secs(59)).await;
                got += reader2.read(&mut buf).await.unwrap();
            }
            got
        });
        let t = Instant::now();
        w.write_all(&[1; 96]).await.unwrap();
        assert!(t.elapsed() >= Duration::from_secs(59 * 5));
        assert_eq!(slow.await.unwrap(), 96);
        drop(reader);
    }

    /// A body of many ready frames, that says when it is dropped.
    struct Frames {
        left: usize,
        dropped: Arc<std::sync::atomic::AtomicBool>,
    }

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            self.left -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"frame")))))
        }
    }

    impl Drop for Frames {
        fn drop(&mut self) {
            self.dropped
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_not_asked_for_a_frame_for_the_bound_drops_its_upstream() {
        use http_body_util::BodyExt;
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let upstream = Frames {
            left: 100,
            dropped: dropped.clone(),
        };
        let mut body = StreamSendTimeout::new(ResponseBody::new(upstream), Duration::from_secs(60));
        body.frame().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
        // Asked again in time: the clock starts over.
        body.frame().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            dropped.load(std::sync::atomic::Ordering::SeqCst),
            "released at 60 s"
        );
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("idle timeout"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waiting_on_its_upstream_is_not_cut_by_this_bound() {
        use http_body_util::BodyExt;
        // One frame at once, the next after ten minutes of upstream silence.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        struct Fed(tokio::sync::mpsc::Receiver<Bytes>);
        impl http_body::Body for Fed {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
                self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
            }
        }
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        let mut body = StreamSendTimeout::new(ResponseBody::new(Fed(rx)), Duration::from_secs(60));
        body.frame().await.unwrap().unwrap();
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(600)).await;
            tx.send(Bytes::from_static(b"second")).await.unwrap();
        });
        let second = body.frame().await.unwrap().unwrap();
        assert_eq!(second.into_data().unwrap(), "second");
        later.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn no_bound_waits_as_long_as_it_takes() {
        let (_reader, writer) = tokio::io::duplex(4);
        let mut w = SendTimeout::new(writer, None);
        w.write_all(&[0; 4]).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_secs(3600), w.write_all(&[0; 4])).await;
        assert!(blocked.is_err(), "still blocked after an hour, not failed");
    }

    #[tokio::test]
    async fn a_large_frame_goes_out_in_pieces() {
        use http_body_util::BodyExt;
        let big = Bytes::from(vec![1u8; 40 * 1024]);
        let mut body = StreamSendTimeout::new(ResponseBody::full(big), Duration::from_secs(60));
        let mut sizes = Vec::new();
        while let Some(f) = body.frame().await {
            sizes.push(f.unwrap().into_data().unwrap().len());
        }
        assert_eq!(sizes, [16 * 1024, 16 * 1024, 8 * 1024]);
    }
}

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
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub(super) struct SendTimeout<T> {
    io: T,
    idle: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
    /// A write was blocked and has not gone through since: the timer runs.
    blocked: bool,
}

impl<T> SendTimeout<T> {
    /// `idle: None` leaves writes unbounded.
    pub(super) fn new(io: T, idle: Option<Duration>) -> SendTimeout<T> {
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

    #[tokio::test(start_paused = true)]
    async fn no_bound_waits_as_long_as_it_takes() {
        let (_reader, writer) = tokio::io::duplex(4);
        let mut w = SendTimeout::new(writer, None);
        w.write_all(&[0; 4]).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_secs(3600), w.write_all(&[0; 4])).await;
        assert!(blocked.is_err(), "still blocked after an hour, not failed");
    }
}

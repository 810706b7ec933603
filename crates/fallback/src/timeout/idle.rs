//! The idle timeout of a streamed body: the bound between two reads once
//! the per-attempt timeout no longer applies (after the commit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use super::later;

/// The default bound between two reads of a streamed response body: 60 s,
/// nginx's `proxy_read_timeout`.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The error a streamed response body ends with when no data came for the
/// idle timeout ([`ChainBuilder::idle_timeout`](crate::ChainBuilder::idle_timeout)).
///
/// Found in the `source()` chain of the body's error:
///
/// ```
/// # fn f(e: &(dyn std::error::Error + 'static)) {
/// if let Some(idle) = e.downcast_ref::<fallback_chain::IdleTimeout>() {
///     eprintln!("the server went quiet for {:?}", idle.idle());
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleTimeout {
    idle: Duration,
}

impl IdleTimeout {
    /// The bound that was reached.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Whether `e`, or an error in its `source()` chain, is an idle timeout.
    pub(crate) fn in_chain(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if err.is::<IdleTimeout>() {
                return true;
            }
            cur = err.source();
        }
        false
    }
}

impl fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no data from the server for {:?} (idle timeout)",
            self.idle
        )
    }
}

impl std::error::Error for IdleTimeout {}

pin_project_lite::pin_project! {
    /// A streamed body that fails with [`IdleTimeout`] when no frame comes
    /// for `idle`. The timer is made on the first wait and reset only on
    /// a wait after progress: a body whose frames are ready at once never
    /// touches the timer wheel.
    pub(crate) struct Idle<B> {
        #[pin]
        body: B,
        idle: Duration,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        progressed: bool,
    }
}

impl<B> Idle<B> {
    pub(crate) fn new(body: B, idle: Duration) -> Idle<B> {
        Idle {
            body,
            idle,
            timer: None,
            progressed: false,
        }
    }
}

impl<B> http_body::Body for Idle<B>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<crate::transport::BoxError>,
{
    type Data = bytes::Bytes;
    type Error = crate::transport::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = self.project();
        match this.body.poll_frame(cx) {
            Poll::Ready(f) => {
                *this.progressed = true;
                return Poll::Ready(f.map(|r| r.map_err(Into::into)));
            }
            Poll::Pending => {}
        }
        let idle = *this.idle;
        let timer = match this.timer {
            Some(t) => {
                if std::mem::take(this.progressed) {
                    t.as_mut().reset(later(Instant::now(), idle));
                }
                t
            }
            // No runtime to time it on (a body read after its runtime
            // ended): unbounded, as before the bound existed.
            None if tokio::runtime::Handle::try_current().is_err() => return Poll::Pending,
            None => {
                *this.progressed = false;
                this.timer.insert(Box::pin(tokio::time::sleep_until(later(
                    Instant::now(),
                    idle,
                ))))
            }
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimeout { idle })))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

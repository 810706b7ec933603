//! The report of a call: one [`Attempt`] per request that went out (or
//! was skipped), how it ended ([`Outcome`]), and its error text, rendered
//! only when read.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;

use crate::timeout::Phase;

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The link succeeded: its answer is the result.
    Ok,
    /// The server answered a status that falls back, or a final
    /// (non-fallback) status.
    Status,
    /// No connection was made, so nothing was sent.
    Connect,
    /// A time limit expired; [`Attempt::phase`] says which.
    Timeout,
    /// The connection broke after the request was sent, or the body could
    /// not be read whole.
    Io,
    /// The body was over the size limit.
    TooLarge,
    /// A typed call's body did not decode.
    Decode,
    /// Not tried: a breaker was open or the budget was spent.
    Skipped,
    /// A hedged attempt that lost.
    Cancelled,
    /// A pooled keep-alive connection turned out to be closed by the
    /// server: the request was re-sent at once on a new connection, as the
    /// same try. Only idempotent requests are re-sent this way; this is not
    /// a failure of the link, and draws nothing from the retry budget.
    Stale,
    /// The link answered a redirect that was followed: the next line is
    /// the request to where it led ([`ChainBuilder::follow_redirects`](crate::ChainBuilder::follow_redirects)).
    Redirect,
    /// The server refused the request without processing it (RFC 9113,
    /// section 8.7): an HTTP/2 stream reset with `REFUSED_STREAM`, or one
    /// above the last stream id of a `GOAWAY`, as a server sends when it
    /// closes a connection gracefully (nginx every 1,000 requests). The
    /// request, whatever its method, was re-sent at once on a new
    /// connection, as the same try: not a failure of the link, nothing
    /// drawn from the retry budget. Only when the re-sends too are
    /// refused does the attempt end so, as a failure that falls over like
    /// a refused connection.
    RefusedStream,
    /// A gRPC answer whose head carried a failure status in the
    /// classifier's gRPC set (`UNAVAILABLE` by default): HTTP 200, but the
    /// link failed, as with a 503. [`Attempt::grpc_status`] has the code.
    Grpc,
}

impl Outcome {
    /// The outcome's stable name: `ok`, `status`, `connect`, `timeout`,
    /// `io`, `too_large`, `decode`, `skipped`, `cancelled`, `stale`,
    /// `redirect`, `refused_stream` or `grpc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Status => "status",
            Outcome::Connect => "connect",
            Outcome::Timeout => "timeout",
            Outcome::Io => "io",
            Outcome::TooLarge => "too_large",
            Outcome::Decode => "decode",
            Outcome::Skipped => "skipped",
            Outcome::Cancelled => "cancelled",
            Outcome::Stale => "stale",
            Outcome::RefusedStream => "refused_stream",
            Outcome::Redirect => "redirect",
            Outcome::Grpc => "grpc",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One attempt at one link.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub(crate) link: usize,
    pub(crate) name: Arc<str>,
    pub(crate) url: Arc<str>,
    pub(crate) try_number: u32,
    pub(crate) outcome: Outcome,
    pub(crate) phase: Option<Phase>,
    pub(crate) status: Option<StatusCode>,
    pub(crate) elapsed: Duration,
    pub(crate) error: Option<ErrorText>,
    pub(crate) insecure: bool,
    /// A gRPC answer's status, when its head carried one.
    pub(crate) grpc: Option<Box<crate::grpc::Status>>,
}

/// An attempt's error text, rendered only when someone reads it: failed
/// and skipped attempts are cheap on the hot path.
#[derive(Clone, Debug)]
pub(crate) struct ErrorText {
    detail: Detail,
    rendered: OnceLock<String>,
}

#[derive(Clone, Debug)]
enum Detail {
    Text(String),
    Static(&'static str),
    BreakerOpen(Duration),
    Error(Arc<dyn std::error::Error + Send + Sync>),
}

impl ErrorText {
    fn new(detail: Detail) -> ErrorText {
        ErrorText {
            detail,
            rendered: OnceLock::new(),
        }
    }

    pub(crate) fn fixed(s: &'static str) -> ErrorText {
        ErrorText::new(Detail::Static(s))
    }

    pub(crate) fn breaker_open(left: Duration) -> ErrorText {
        ErrorText::new(Detail::BreakerOpen(left))
    }

    /// An error's `Display` text (a `TransportError` includes its causes).
    pub(crate) fn error(e: impl std::error::Error + Send + Sync + 'static) -> ErrorText {
        ErrorText::new(Detail::Error(Arc::new(e)))
    }

    /// The error behind the text, when there is one.
    pub(crate) fn cause(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.detail {
            Detail::Error(e) => Some(&**e),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match &self.detail {
            Detail::Text(s) => s,
            Detail::Static(s) => s,
            Detail::BreakerOpen(left) => self
                .rendered
                .get_or_init(|| format!("breaker open for another {left:.1?}")),
            Detail::Error(e) => self.rendered.get_or_init(|| e.to_string()),
        }
    }
}

impl From<String> for ErrorText {
    fn from(s: String) -> ErrorText {
        ErrorText::new(Detail::Text(s))
    }
}

impl Attempt {
    /// The link's index in the chain, from 0.
    pub fn link(&self) -> usize {
        self.link
    }

    /// The link's name (by default the URL's host and port).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The link's URL, without any userinfo.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The try on this link, from 1.
    pub fn try_number(&self) -> u32 {
        self.try_number
    }

    /// How the attempt ended.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// For a timeout, the phase that expired.
    pub fn phase(&self) -> Option<Phase> {
        self.phase
    }

    /// The status the server answered, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// How long the attempt took.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// What went wrong, for any outcome but `ok`.
    pub fn error(&self) -> Option<&str> {
        self.error.as_ref().map(ErrorText::as_str)
    }

    /// Whether the attempt went over TLS without verifying the server's
    /// certificate ([`danger_accept_invalid_certs`]).
    ///
    /// [`danger_accept_invalid_certs`]: crate::transport::HyperTransportBuilder::danger_accept_invalid_certs
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// Whether the attempt succeeded.
    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// The attempt as one JSON object, the shape `fallback send --report
    /// json` and `fallback serve`'s access log share: `link` (the index),
    /// `name`, `url` (no userinfo, secrets redacted), `try`, `outcome`,
    /// `phase`, `status`, `elapsed_ms` (to the microsecond), `error` and
    /// `insecure`; and, for a gRPC answer whose head carried a status,
    /// `grpc_status` (the number) and `grpc_message`.
    ///
    /// ```
    /// # fn show(report: &fallback_chain::Report) {
    /// for attempt in report.attempts() {
    ///     println!("{}", attempt.to_json());
    /// }
    /// # }
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        let mut line = serde_json::json!({
            "link": self.link,
            "name": &*self.name,
            "url": &*self.url,
            "try": self.try_number,
            "outcome": self.outcome.as_str(),
            "phase": self.phase.map(Phase::as_str),
            "status": self.status.map(|s| s.as_u16()),
            "elapsed_ms": millis(self.elapsed),
            "error": self.error(),
            "insecure": self.insecure,
        });
        if let Some(g) = &self.grpc {
            line["grpc_status"] = g.code().value().into();
            line["grpc_message"] = g.message().into();
        }
        line
    }

    /// The gRPC status the answer's head carried (a trailers-only
    /// answer), for a gRPC request.
    pub fn grpc_status(&self) -> Option<&crate::grpc::Status> {
        self.grpc.as_deref()
    }
}

/// A duration in milliseconds, to the microsecond: how reports, the
/// command line and the proxy's access log print time.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(fallback_chain::report::millis(Duration::from_micros(1_234_567)), 1234.567);
/// ```
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "link {} ({}) try {}: {}",
            self.link, self.name, self.try_number, self.outcome
        )?;
        if let Some(s) = self.status {
            write!(f, " {}", s.as_u16())?;
        }
        write!(f, " in {:.1?}", self.elapsed)?;
        if let Some(e) = self.error() {
            write!(f, ": {e}")?;
        }
        if self.insecure {
            f.write_str(" [TLS certificate not verified]")?;
        }
        Ok(())
    }
}

/// The attempt report: what happened at every link, in order.
///
/// A [`Report`] comes back with every success ([`Response::report`]) and
/// every failure ([`Error::report`]), so a caller never loses the trail of
/// what was tried.
///
/// [`Response::report`]: crate::Response::report
/// [`Error::report`]: crate::Error::report
///
/// Every attempt of one call, in the order they were made.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) elapsed: Duration,
    pub(crate) winner: Option<usize>,
}

impl Report {
    /// The attempts, in order.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// The index of the link that succeeded, if one did.
    pub fn winner(&self) -> Option<usize> {
        self.winner
    }

    /// How long the whole call took.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The last attempt made, if any.
    pub fn last(&self) -> Option<&Attempt> {
        self.attempts.last()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in &self.attempts {
            writeln!(f, "{a}")?;
        }
        match self.winner {
            Some(w) => write!(f, "won by link {w} in {:.1?}", self.elapsed),
            None => write!(f, "no link succeeded ({:.1?})", self.elapsed),
        }
    }
}

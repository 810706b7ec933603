//! Errors: [`BuildError`] when a chain is built, [`Error`] when a call
//! fails.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::report::{Attempt, Outcome, Report};

/// A chain that cannot be built. Nothing was sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The chain has no links.
    #[error("the chain has no links: add at least one with ChainBuilder::link")]
    NoLinks,
    /// A link is invalid.
    #[error("link {index} ({name}): {problem}")]
    #[non_exhaustive]
    Link {
        /// The link's index, from 0.
        index: usize,
        /// Its name, or its URL when it has none.
        name: String,
        /// What is wrong with it.
        problem: LinkProblem,
    },
    /// A chain-wide default header is invalid.
    #[error("chain-wide header: {0}")]
    DefaultHeader(LinkProblem),
    /// A chain setting is out of range.
    #[error("invalid {setting}: {reason}")]
    #[non_exhaustive]
    Setting {
        /// The setting, e.g. `timeout`.
        setting: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}

/// What is wrong with a link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkProblem {
    /// The URL does not parse.
    #[error("invalid URL {url:?}: {reason}")]
    #[non_exhaustive]
    Url {
        /// The URL, without userinfo.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The URL's scheme is not http or https.
    #[error("unsupported scheme in {url:?}: only http:// and https:// are allowed")]
    #[non_exhaustive]
    Scheme {
        /// The URL, without userinfo.
        url: String,
    },
    /// The method is not a valid token (or is CONNECT).
    #[error("invalid method {method:?}")]
    #[non_exhaustive]
    Method {
        /// The method as given.
        method: String,
    },
    /// A header name is invalid.
    #[error("invalid header name {name:?}")]
    #[non_exhaustive]
    HeaderName {
        /// The name as given.
        name: String,
    },
    /// A header value is invalid. The value itself is never printed: it
    /// may be a secret.
    #[error("invalid value for header {name:?}: {reason}")]
    #[non_exhaustive]
    HeaderValue {
        /// The header's name.
        name: String,
        /// Why the value is invalid, e.g. "contains CR or LF".
        reason: &'static str,
    },
    /// The link's headers exceed a limit (see [`limits`](crate::limits)):
    /// one value, or all of them together.
    #[error("{what} is {size} bytes; the limit is {limit}")]
    #[non_exhaustive]
    HeadersTooLarge {
        /// What is too large, e.g. `the value of header "X-Big"`.
        what: String,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The link's Unix socket cannot be used.
    #[error("unix socket {path:?}: {reason}")]
    #[non_exhaustive]
    UnixSocket {
        /// The socket's path.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The body is a one-shot stream, which could not be re-sent to a backup
    /// or a retry.
    #[error("the body is a one-shot stream and could not be re-sent to another link or try: use Body::bytes, Body::file or Body::factory")]
    OneShotBody,
    /// The body file cannot be used.
    #[error("body file {path:?}: {reason}")]
    #[non_exhaustive]
    BodyFile {
        /// The file's path.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The JSON body could not be serialized.
    #[error("the JSON body cannot be serialized: {0}")]
    Json(Arc<serde_json::Error>),
}

/// Why a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Every link was tried and failed.
    Exhausted,
    /// A link answered a status that does not fall back (see
    /// [`Classifier`](crate::Classifier)); later links were not tried.
    FinalStatus,
    /// A non-idempotent request may have been processed (a timeout, reset
    /// or truncated answer after it was sent), so it was not re-sent.
    MaybeProcessed,
    /// A non-idempotent request was accepted with a success status, but the
    /// answer could not be used; it was not re-sent.
    Processed,
    /// The call's deadline expired.
    Deadline,
    /// The caller's sink failed while taking the body.
    Sink,
    /// The request body could not be produced (a body file could not be
    /// read). Nothing more was sent.
    Body,
    /// A one-shot request body ([`Body::once`](crate::Body::once)), or a
    /// [replayable](crate::Body::replayable) one that outgrew its buffer,
    /// was read by a link that then failed: it cannot be sent again, so
    /// later links were not tried.
    NotReplayable,
    /// Every link's breaker was open, and this call was no link's probe:
    /// it failed at once, sending nothing (see
    /// [`AllOpen`](crate::AllOpen)).
    AllOpen,
}

/// The last response received by a failed call.
#[derive(Clone, Debug)]
pub(crate) struct LastResponse {
    pub(crate) version: http::Version,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Bytes>,
}

/// A failed call: why, the last response received, and the whole trail.
///
/// ```
/// # async fn demo(chain: fallback_chain::Chain) {
/// match chain.call().await {
///     Ok(resp) => println!("{} from link {}", resp.status(), resp.winner()),
///     Err(err) => {
///         eprintln!("{err}");
///         for attempt in err.report().attempts() {
///             eprintln!("  {attempt}");
///         }
///         if let Some(body) = err.body() {
///             eprintln!("last body: {}", String::from_utf8_lossy(body));
///         }
///     }
/// }
/// # }
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    report: Report,
    last: Option<LastResponse>,
    detail: Option<String>,
    deadline: Option<Duration>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, report: Report, last: Option<LastResponse>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                report,
                last,
                detail: None,
                deadline: None,
            }),
        }
    }

    pub(crate) fn with_detail(mut self, detail: String) -> Error {
        self.inner.detail = Some(detail);
        self
    }

    pub(crate) fn with_deadline(mut self, deadline: Duration) -> Error {
        self.inner.deadline = Some(deadline);
        self
    }

    /// Why the call failed.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Every attempt made, in order.
    pub fn report(&self) -> &Report {
        &self.inner.report
    }

    /// The status of the last response received, if any link answered.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.last.as_ref().map(|l| l.status)
    }

    /// The HTTP version of the last response received, if any link
    /// answered.
    pub fn version(&self) -> Option<http::Version> {
        self.inner.last.as_ref().map(|l| l.version)
    }

    /// The headers of the last response received.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.inner.last.as_ref().map(|l| &l.headers)
    }

    /// The gRPC status of the last response received, when its head
    /// carried one (a trailers-only answer): for a gRPC call that every
    /// link failed, the last link's own failure.
    pub fn grpc_status(&self) -> Option<crate::grpc::Status> {
        self.headers().and_then(crate::grpc::Status::from_headers)
    }

    /// The body of the last response received, if it could be read whole.
    pub fn body(&self) -> Option<&Bytes> {
        self.inner.last.as_ref().and_then(|l| l.body.as_ref())
    }

    /// The last attempt.
    pub fn last_attempt(&self) -> Option<&Attempt> {
        self.inner.report.last()
    }

    /// The URL of the last attempt, without userinfo.
    pub fn url(&self) -> Option<&str> {
        self.last_attempt().map(Attempt::url)
    }

    /// Whether the call ended on a time limit (the last attempt timed out,
    /// or the deadline expired).
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::Deadline
            || self
                .last_attempt()
                .is_some_and(|a| a.outcome() == Outcome::Timeout)
    }

    /// Whether the request may have had its side effect although the call
    /// failed ([`ErrorKind::MaybeProcessed`] or [`ErrorKind::Processed`]).
    pub fn may_have_been_processed(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::MaybeProcessed | ErrorKind::Processed
        )
    }

    /// Decodes the last response's body as JSON: the original package's
    /// `CustomError`. `None` when no body was read.
    ///
    /// ```no_run
    /// # async fn demo(chain: fallback_chain::Chain) {
    /// #[derive(serde::Deserialize, Debug)]
    /// struct ApiError { message: String }
    ///
    /// if let Err(err) = chain.call().await {
    ///     match err.json::<ApiError>() {
    ///         Some(Ok(body)) => eprintln!("{}: {}", err, body.message),
    ///         Some(Err(e)) => eprintln!("{err}; the error body is not JSON: {e}"),
    ///         None => eprintln!("{err}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn json<E: DeserializeOwned>(&self) -> Option<Result<E, serde_json::Error>> {
        self.body().map(|b| serde_json::from_slice(b))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.inner.kind)
            .field("status", &self.status())
            .field("attempts", &self.inner.report.attempts)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.last_attempt();
        let n = self.inner.report.attempts.len();
        match self.inner.kind {
            ErrorKind::Exhausted => {
                let s = if n == 1 { "" } else { "s" };
                write!(f, "every link failed ({n} attempt{s})")?;
                if let Some(a) = last {
                    write!(f, "; last: {a}")?;
                }
                Ok(())
            }
            ErrorKind::FinalStatus => {
                if let Some(a) = last {
                    write!(f, "link {} ({}) answered ", a.link, a.name)?;
                    // A gRPC answer's own status says more than its 200.
                    match &a.grpc {
                        Some(g) => write!(f, "{g}, ")?,
                        None => write!(f, "{}, ", a.status.map_or(0, |s| s.as_u16()))?,
                    }
                }
                f.write_str("a final status that does not fall back")
            }
            ErrorKind::MaybeProcessed | ErrorKind::Processed => {
                if let Some(a) = last {
                    write!(f, "link {} ({}): ", a.link, a.name)?;
                }
                f.write_str(
                    self.inner
                        .detail
                        .as_deref()
                        .unwrap_or("the request may have been processed"),
                )
            }
            ErrorKind::Deadline => {
                write!(f, "the deadline")?;
                if let Some(d) = self.inner.deadline {
                    write!(f, " of {d:?}")?;
                }
                let s = if n == 1 { "" } else { "s" };
                write!(f, " expired after {n} attempt{s}")?;
                if let Some(a) = last {
                    write!(f, "; last: {a}")?;
                }
                Ok(())
            }
            ErrorKind::Sink => write!(
                f,
                "writing the body to the sink failed: {}",
                self.inner.detail.as_deref().unwrap_or("unknown error")
            ),
            ErrorKind::Body => write!(
                f,
                "the request body could not be produced: {}",
                self.inner.detail.as_deref().unwrap_or("unknown error")
            ),
            ErrorKind::AllOpen => write!(
                f,
                "every link's breaker is open ({n} link{}); failed fast, nothing sent{}",
                if n == 1 { "" } else { "s" },
                self.inner
                    .detail
                    .as_deref()
                    .map(|d| format!("; {d}"))
                    .unwrap_or_default()
            ),
            ErrorKind::NotReplayable => {
                if let Some(a) = last {
                    write!(f, "link {} ({}): {a}; ", a.link, a.name)?;
                }
                match self.inner.detail.as_deref() {
                    // A replayable body says which bound it outgrew.
                    Some(d) => write!(f, "not re-sent: {d}"),
                    None => f.write_str(
                        "not re-sent: the one-shot request body was streamed to this link \
                         and cannot be sent again",
                    ),
                }
            }
        }
    }
}

impl std::error::Error for Error {
    /// The underlying cause of the last attempt that failed with one (a
    /// transport error, a body that broke): `downcast_ref::<std::io::Error>()`
    /// and `anyhow` chains reach it. `None` when the last failure was an
    /// answer (a status, a body that did not decode).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .report
            .attempts
            .iter()
            .rev()
            .find(|a| !matches!(a.outcome, Outcome::Skipped | Outcome::Cancelled))
            .and_then(|a| a.error.as_ref())
            .and_then(|e| e.cause())
    }
}

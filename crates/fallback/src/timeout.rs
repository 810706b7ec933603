//! Time limits: the per-attempt timeout, the connect timeout and the
//! overall deadline.
//!
//! | limit | set with | default | covers |
//! | --- | --- | --- | --- |
//! | per attempt | [`ChainBuilder::timeout`], [`Link::timeout`] | 10 s | connect, sending, the response head and the whole body |
//! | connect | [`ChainBuilder::connect_timeout`] | 2 s | the TCP (and TLS) connect; nothing was sent, so any request may fail over |
//! | deadline | [`ChainBuilder::deadline`] | none | the whole call: every attempt and every wait |
//!
//! Each attempt's timeout is cut to the time left before the deadline, and
//! a timeout reports the [`Phase`] that expired.
//!
//! [`ChainBuilder::timeout`]: crate::ChainBuilder::timeout
//! [`ChainBuilder::connect_timeout`]: crate::ChainBuilder::connect_timeout
//! [`ChainBuilder::deadline`]: crate::ChainBuilder::deadline
//! [`Link::timeout`]: crate::Link::timeout

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// Default per-attempt timeout.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The phase of an attempt in which a time limit expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Establishing the connection: nothing was sent.
    Connect,
    /// Sending the request or waiting for the response head.
    Head,
    /// Reading the response body.
    Body,
}

impl Phase {
    /// `connect`, `head` or `body`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Head => "head",
            Phase::Body => "body",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// When an attempt must end: its own timeout, cut to the call's deadline.
///
/// Returns `None` when the deadline has already passed.
pub(crate) fn attempt_deadline(
    now: Instant,
    attempt_timeout: Duration,
    call_deadline: Option<Instant>,
) -> Option<Instant> {
    let own = now + attempt_timeout;
    match call_deadline {
        Some(d) if d <= now => None,
        Some(d) => Some(own.min(d)),
        None => Some(own),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_timeout_is_cut_to_the_deadline() {
        let now = Instant::now();
        let d = Duration::from_secs;
        assert_eq!(attempt_deadline(now, d(10), None), Some(now + d(10)));
        assert_eq!(
            attempt_deadline(now, d(10), Some(now + d(3))),
            Some(now + d(3))
        );
        assert_eq!(
            attempt_deadline(now, d(1), Some(now + d(3))),
            Some(now + d(1))
        );
        assert_eq!(attempt_deadline(now, d(1), Some(now)), None);
    }
}

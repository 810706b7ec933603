//! The observer hook: the original package's `Logger`, called for every
//! failed attempt and for the success, and, for those who want to see the
//! wire (the command line's `--verbose`), for every request and response
//! head.
//!
//! `tracing` events cover the same ground: a failed attempt is a `warn`, a
//! success on the first try of the first link is a `debug`, and a success
//! after a failover is an `info`.

use http::{HeaderMap, Method, StatusCode, Uri, Version};

use crate::report::Attempt;

/// A request about to be sent, as [`Observer::on_request`] sees it.
///
/// The URI and headers are those sent: secrets included. Secret headers
/// are marked sensitive ([`http::HeaderValue::is_sensitive`]), and
/// [`crate::redact`] says what else to hide before printing.
#[derive(Debug)]
#[non_exhaustive]
pub struct RequestHead<'a> {
    /// The link's index.
    pub link: usize,
    /// The link's name.
    pub name: &'a str,
    /// The method.
    pub method: &'a Method,
    /// The absolute URI.
    pub uri: &'a Uri,
    /// The version asked for (TLS links negotiate theirs).
    pub version: Version,
    /// The headers the chain sets (the transport adds `Host` and framing).
    pub headers: &'a HeaderMap,
}

/// A response head as it arrived, as [`Observer::on_response`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct ResponseHead<'a> {
    /// The link's index.
    pub link: usize,
    /// The link's name.
    pub name: &'a str,
    /// The status.
    pub status: StatusCode,
    /// The version.
    pub version: Version,
    /// The headers.
    pub headers: &'a HeaderMap,
}

/// Called for each failed attempt and for the success, as they happen.
///
/// Any `Fn(&Attempt)` closure is an observer.
///
/// ```
/// let chain = fallback_chain::Chain::builder()
///     .link(fallback_chain::Link::get("http://127.0.0.1:9/"))
///     .observer(|a: &fallback_chain::Attempt| eprintln!("{a}"))
///     .build()
///     .unwrap();
/// # drop(chain);
/// ```
pub trait Observer: Send + Sync + 'static {
    /// One attempt has ended.
    fn on_attempt(&self, attempt: &Attempt);

    /// A request is about to go out: every try, redirect hop and re-send.
    /// Default: nothing.
    fn on_request(&self, head: &RequestHead<'_>) {
        let _ = head;
    }

    /// A response head has arrived. Default: nothing.
    fn on_response(&self, head: &ResponseHead<'_>) {
        let _ = head;
    }
}

impl<F: Fn(&Attempt) + Send + Sync + 'static> Observer for F {
    fn on_attempt(&self, attempt: &Attempt) {
        self(attempt)
    }
}

//! The observer hook: the original package's `Logger`, called for every
//! failed attempt and for the success.
//!
//! `tracing` events cover the same ground: a failed attempt is a `warn`, a
//! success on the first try of the first link is a `debug`, and a success
//! after a failover is an `info`.

use crate::report::Attempt;

/// Called for each failed attempt and for the success, as they happen.
///
/// Any `Fn(&Attempt)` closure is an observer.
///
/// ```
/// let chain = fallback::Chain::builder()
///     .link(fallback::Link::get("http://127.0.0.1:9/"))
///     .observer(|a: &fallback::Attempt| eprintln!("{a}"))
///     .build()
///     .unwrap();
/// # drop(chain);
/// ```
pub trait Observer: Send + Sync + 'static {
    /// One attempt has ended.
    fn on_attempt(&self, attempt: &Attempt);
}

impl<F: Fn(&Attempt) + Send + Sync + 'static> Observer for F {
    fn on_attempt(&self, attempt: &Attempt) {
        self(attempt)
    }
}

//! Circuit breakers: a link's state (closed, open, half-open) over a
//! sliding window of outcomes (`state`), their settings and what a call
//! does when every link is open (`config`), and the rule for what counts
//! as a failure with the guard that records it (`guard`).

mod config;
mod guard;
mod state;

pub use config::{AllOpen, BreakerConfig};
pub(crate) use guard::{counts_as_failure, ProbeGuard};
pub(crate) use state::{panic_link, Admit, Breaker};
pub use state::{BreakerState, LinkHealth, SharedBreaker};

#[cfg(test)]
mod tests;

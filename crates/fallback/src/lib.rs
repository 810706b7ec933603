//! # fallback
//!
//! Keep an application's HTTP calls working when the servers it depends on
//! fail. Declare an ordered chain (System 1, then Backup 1, then Backup 2,
//! any number of links), each a full request of its own. A call tries the
//! links in order and returns the first success; when every link fails, the
//! error carries the last failure's status and body and a report of every
//! attempt.
//!
//! ## A first chain
//!
//! ```
//! use fallback::{Chain, Link};
//! use fallback_testserver::{Behavior, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Loopback servers that misbehave on purpose: System 1 refuses
//! // connections, Backup 1 answers 503, Backup 2 works.
//! let system1 = Server::refused();
//! let backup1 = Server::start(Behavior::status(503));
//! let backup2 = Server::start(Behavior::ok_json(r#"{"Text": "hello", "Detail": "from backup 2"}"#));
//!
//! let chain = Chain::builder()
//!     .link(Link::get(system1.url("/basic")).name("system-1"))
//!     .link(Link::get(backup1.url("/basic")).name("backup-1"))
//!     .link(Link::get(backup2.url("/basic")).name("backup-2"))
//!     .build()?;
//!
//! #[derive(serde::Deserialize)]
//! struct Basic { #[serde(rename = "Text")] text: String }
//! #[derive(serde::Deserialize, Debug)]
//! struct ApiError { message: String }
//!
//! let resp = chain.call_json::<Basic, ApiError>().await?;
//! assert_eq!(resp.body().text, "hello");
//! assert_eq!(resp.winner(), 2);
//!
//! let outcomes: Vec<_> = resp.report().attempts().iter().map(|a| a.outcome().as_str()).collect();
//! assert_eq!(outcomes, ["connect", "status", "ok"]);
//! # Ok(()) }
//! ```
//!
//! ## What falls back
//!
//! By default, as in the original Go package, a link fails and the next one
//! is tried on a transport error, on any non-2xx status, on a body that
//! cannot be read whole or is over the size limit ([`ChainBuilder::max_body`],
//! 16 MiB by default), and, for [`Chain::call_json`], on a 2xx body that does
//! not decode. A [`Classifier`] changes which statuses fall back; a status
//! outside its fall-back set is a *final* answer, returned at once.
//!
//! One rule overrides all of these: a request that is not idempotent is
//! never sent twice when the first attempt may have had its effect. See
//! [`safety`] ("When is a request re-sent?").
//!
//! ## Time limits
//!
//! Every attempt is bounded (10 s by default, covering connect, the
//! response head and the whole body), connects are bounded (2 s), and an
//! optional deadline bounds the whole call. See [`timeout`].
//!
//! ## The report
//!
//! Every attempt is recorded as an [`Attempt`]: link index and name, URL,
//! try number, [`Outcome`], status, elapsed time and error text. The
//! [`Report`] comes back with the [`Response`] and with the [`Error`]. No
//! byte of a failed attempt ever reaches the caller.
//!
//! ## Large bodies
//!
//! [`Chain::call_into`] streams the winner's body into a [`Sink`] that the
//! caller supplies; if the body breaks mid-way the sink is reset and the
//! chain moves on.
//!
//! ## Transports
//!
//! The default [`transport::HyperTransport`] is hyper 1.x with hyper-util's
//! pooled client and rustls. With the feature `reqwest`,
//! `transport::ReqwestTransport` sends through your own `reqwest::Client`.
//! Any client can be plugged in by implementing [`transport::Transport`].
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod backoff;
mod body;
pub mod budget;
mod chain;
pub mod classify;
mod error;
mod link;
mod observer;
pub mod report;
mod response;
pub mod retry;
pub mod safety;
pub mod timeout;
pub mod transport;

pub use backoff::ExponentialBackoff;
pub use body::Body;
pub use budget::RetryBudget;
pub use chain::{Chain, ChainBuilder, DEFAULT_MAX_BODY};
pub use classify::{Classifier, ClassifierParseError, Verdict};
pub use error::{BuildError, Error, ErrorKind, Failure, LinkProblem};
pub use link::Link;
pub use observer::Observer;
pub use report::{Attempt, Outcome, Report};
pub use response::{Response, Sink};
pub use timeout::Phase;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

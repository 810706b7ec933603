//! # fallback-chain
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
//! use fallback_chain::{Chain, Link};
//! use fallback_chain_testserver::{Behavior, Server};
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
//!
//! let resp = chain.call_json::<Basic>().await?;
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
//! ## When is a request re-sent?
//!
//! A request is re-sent (to the same link, or the next) only when that
//! cannot duplicate a side effect. This is nginx's `proxy_next_upstream`
//! rule. *Idempotent* means GET, HEAD, OPTIONS, PUT, DELETE or TRACE
//! (RFC 9110), a request with an `Idempotency-Key` header, or a link marked
//! [`Link::idempotent`].
//!
//! | the failed attempt | idempotent | POST, PATCH, other |
//! | --- | --- | --- |
//! | no connection: refused, DNS, TLS handshake, connect timeout, or an attempt timeout or deadline that fired while still connecting (nothing was sent) | re-sent | re-sent |
//! | a pooled keep-alive connection the server had closed, found before any byte of the answer | re-sent once, at once, on a new connection: reported `stale`, not a try, not from the budget | **not re-sent**: [`ErrorKind::MaybeProcessed`] |
//! | an HTTP/2 stream the server refused unprocessed: reset with `REFUSED_STREAM`, or above the last stream id of its `GOAWAY` (RFC 9113, section 8.7) | re-sent at once on a new connection, up to 3 times: reported `refused_stream`, not a try, not from the budget, not a breaker failure | the same |
//! | an answer with a status that falls back (4xx, 5xx by default) | re-sent | re-sent |
//! | a timeout after sending, a reset after sending, a truncated answer (outcome unknown) | re-sent | **not re-sent**: [`ErrorKind::MaybeProcessed`] |
//! | a 2xx whose body is unusable: too large, truncated, not decodable (processed) | re-sent | **not re-sent**: [`ErrorKind::Processed`] |
//!
//! The error names the link that may have processed the request and says
//! that marking it idempotent, or sending an `Idempotency-Key`, allows
//! re-sending. Whether a timer fired before anything was sent is the
//! transport's to say, through a [`transport::Handoff`]; a transport that
//! does not say is taken to have sent the request.
//!
//! ## Time limits
//!
//! | limit | default | covers |
//! | --- | --- | --- |
//! | [`ChainBuilder::timeout`] (per attempt; [`Link::timeout`] overrides) | 10 s | connect, send, response head and the whole body |
//! | [`ChainBuilder::connect_timeout`] | 2 s | the connect: nothing sent yet, so even a POST fails over |
//! | [`ChainBuilder::deadline`] | none | the whole call: every attempt, backoff and `Retry-After` wait |
//!
//! A timeout reports its [`Phase`]: `connect`, `head` or `body`. See
//! [`Phase`].
//!
//! ## Retries, backoff and the budget
//!
//! [`ChainBuilder::retries`] (default 0; [`Link::retries`] overrides) gives
//! each link extra tries before the chain moves on, for failures worth
//! retrying there (connect, timeout, broken connection, 408, 429, 5xx). The
//! wait is the server's `Retry-After` on 429 and 503 (both forms, capped at
//! 30 s), or an [`ExponentialBackoff`] with full jitter. A wait longer than
//! the cap or the time left is not taken: the chain moves on at once.
//!
//! Every extra try draws from a [`RetryBudget`] shared by all calls through
//! the chain (20 % extra load over 10 s plus 10 per second, by default), so
//! an outage cannot turn into a retry storm. Moving to the *next* link never
//! draws from it. See [`ChainBuilder::retries`], [`ExponentialBackoff`] and [`RetryBudget`].
//!
//! ```
//! use std::time::Duration;
//! use fallback_chain::{Chain, ExponentialBackoff, Link};
//! use fallback_chain_testserver::{Behavior, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let flaky = Server::start(Behavior::fail_first(2, Behavior::status(503), Behavior::ok("up")));
//! let backup = Server::start(Behavior::ok("backup"));
//! let chain = Chain::builder()
//!     .timeout(Duration::from_secs(2))
//!     .deadline(Duration::from_secs(5))
//!     .retries(2)
//!     .backoff(ExponentialBackoff::new().base(Duration::from_millis(10)))
//!     .link(Link::get(flaky.url("/")))
//!     .link(Link::get(backup.url("/")))
//!     .build()?;
//! let resp = chain.call().await?;
//! assert_eq!(resp.body().as_ref(), b"up");
//! assert_eq!(resp.report().attempts().len(), 3); // three tries on link 0
//! # Ok(()) }
//! ```
//!
//! ## Circuit breakers
//!
//! Each link has a breaker, shared by every call through the chain: a link
//! that keeps failing (half its calls over 10 s, or 5 in a row) is *skipped*
//! at no cost for a break (5 s, growing up to 60 s while probes keep
//! failing), then probed. When every link is open, calls fail at once
//! ([`ErrorKind::AllOpen`]) except one probe per link per second, so servers
//! that are all down get almost no load and a link that comes back is found
//! within a second ([`AllOpen`]; Envoy's "try the soonest" is the other
//! choice). With [`ChainBuilder::sticky`], calls stay on the
//! backup while the primary is probed in the background, and return to it
//! once it answers. [`Chain::health`] shows each link's state and counts.
//! See [`BreakerConfig`].
//!
//! ## Hedged requests
//!
//! With [`ChainBuilder::hedge`], a link that has not answered within the
//! hedge delay (fixed, or a percentile of its recent latency) gets company:
//! the next link starts too, and the first whole, valid answer wins. Losers
//! are cancelled and reported `cancelled`. Only idempotent requests hedge,
//! and hedges draw from the retry budget. See [`Hedge`].
//!
//! ## Secrets never print
//!
//! Reports, errors, `Debug` output, tracing, metrics and [`Chain::links`]
//! never show a secret: credential headers (`Authorization`, cookies, and
//! any name containing `key`, `token`, `secret`, `password`, `auth`,
//! `session`, …), userinfo, and secret query values (`code`, `jwt`, `sig`,
//! `access_token`, …) are redacted. Mark any other header with
//! [`ChainBuilder::secret_header`] or [`Link::secret_header`]. The rule is
//! written out in [`redact`].
//!
//! ## Request bodies
//!
//! A [`Body`] is re-sent byte for byte to every link and try: bytes, JSON,
//! a file (re-opened for each attempt, never buffered whole) or a factory
//! closure. A one-shot stream is refused when the chain is built.
//!
//! ## The report
//!
//! Every attempt is recorded as an [`Attempt`]: link index and name, URL,
//! try number, [`Outcome`], status, elapsed time and error text. The
//! [`Report`] comes back with the [`Response`] and with the [`Error`]. No
//! byte of a failed attempt ever reaches the caller.
//!
//! ## Streaming: commit at the head
//!
//! [`Chain::send_streaming`] and [`Chain::call_streaming`] are for proxies
//! and large downloads: the first link whose answer is a success wins as
//! soon as its head arrives, and its body streams to you unread. After that
//! commit there is no failover; a body that breaks yields an error from the
//! body and counts against the link's breaker.
//!
//! ## Large bodies
//!
//! [`Chain::call_into`] streams the winner's body into a [`BodySink`] that the
//! caller supplies; if the body breaks mid-way the sink is reset and the
//! chain moves on.
//!
//! ## Transports and production networks
//!
//! The default [`transport::HyperTransport`] is hyper 1.x's connections in
//! a pool of this crate's own, and rustls. Its options go through
//! [`ChainBuilder::transport_options`]:
//!
//! - **Trust**: the operating system's trust store (`SSL_CERT_FILE` and
//!   `SSL_CERT_DIR` honoured; the bundled webpki roots where the store is
//!   empty), extra roots from PEM, or only the given roots.
//! - **Client certificates** for mutual TLS, from PEM.
//! - **Proxies**: `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY`
//!   by default, or an explicit `http://` proxy; HTTPS goes through a
//!   `CONNECT` tunnel. Proxy credentials never print.
//! - **HTTP/2** by ALPN over TLS, and h2c with
//!   [`ChainBuilder::http2_prior_knowledge`] or [`Link::http2_prior_knowledge`].
//! - `danger_accept_invalid_certs`, which marks every attempt made with it.
//!
//! A TLS handshake the server refuses is a connect failure: nothing was
//! sent, so even a `POST` fails over. Redirects are followed within a link
//! when asked ([`ChainBuilder::follow_redirects`]), and
//! with the feature `compression`, `ChainBuilder::decompress` asks for and
//! decodes compressed answers.
//!
//! ```
//! use fallback_chain::transport::HyperTransport;
//! use fallback_chain::{Chain, Link};
//! use fallback_chain_testserver::tls::{HttpServer, TestCa};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An HTTPS server whose certificate comes from a private CA.
//! let ca = TestCa::new();
//! let server = HttpServer::builder().tls(&ca).start();
//! let chain = Chain::builder()
//!     .transport_options(HyperTransport::builder().add_root_certificate_pem(ca.cert_pem()))
//!     .link(Link::get(server.url("/orders/42")))
//!     .build()?;
//! let resp = chain.call().await?;
//! assert_eq!(resp.version(), http::Version::HTTP_2); // negotiated by ALPN
//! # Ok(()) }
//! ```
//!
//! With the feature `reqwest-0_13`,
//! `transport::ReqwestTransport` sends through your own `reqwest::Client`.
//! Any client can be plugged in by implementing [`transport::Transport`],
//! for the whole chain or for one link ([`Link::transport`]).
//!
//! ## tower (feature `tower-0_3`)
//!
//! A [`Chain`] is a `tower::Service<http::Request<B>>`: the incoming
//! request's method, headers, body, path and query go to every link in turn,
//! so a chain drops into tower stacks and axum. `tower::TowerTransport`
//! makes any tower service a link's transport. See the `tower` module and
//! `examples/tower.rs`.
//!
//! ## Blocking (feature `blocking`)
//!
//! `blocking::Chain` offers the same calls without an async runtime. See the
//! `blocking` module and `examples/blocking.rs`.
//!
//! ## Observability
//!
//! - **tracing:** one `fallback.call` span per call and a `fallback.attempt`
//!   child span per attempt, with the link's name, URL, try, outcome, status
//!   and elapsed time. A failed attempt is a `warn` event, a success after a
//!   failover an `info`, a first-link success a `debug`.
//! - **The observer hook** ([`Observer`]) is called for every attempt, and
//!   for every request and response head if you want to see the wire.
//! - **metrics** (feature `metrics`), through the
//!   [`metrics`](https://docs.rs/metrics) facade: install any recorder
//!   (Prometheus, StatsD, …) and these appear (see `examples/metrics.rs`):
//!
//! | name | kind | labels | meaning |
//! | --- | --- | --- | --- |
//! | `fallback_attempts_total` | counter | `link`, `outcome` | attempts, by how they ended |
//! | `fallback_attempt_duration_seconds` | histogram | `link` | how long attempts took |
//! | `fallback_breaker_state` | gauge | `link` | 0 closed, 1 half-open, 2 open |
//! | `fallback_breaker_transitions_total` | counter | `link`, `to` | each change of state (`closed`, `open`, `half_open`); with every link down, at most two per link per probe interval |
//! | `fallback_budget_denied_total` | counter | | retries and hedges the budget refused |
//!
//! `link` is the link's name (by default the URL's host and port): never a
//! URL with credentials. The histogram records a sample per attempt: a
//! recorder that holds samples until they are exported (the Prometheus
//! exporter's `install_recorder`) needs its upkeep run on a timer, or it
//! grows with every call. None of these outputs ever shows a secret (see
//! [Secrets never print](#secrets-never-print)).
//!
//! ## Coming from the Go package
//!
//! | the Go package `fallback` | this crate |
//! | --- | --- |
//! | `Connection` (name, method, path, body, headers) | [`Link`]: one full request of its own |
//! | `NewConnectionBuilder(name, method, path, returnsJSON, body, …)` | `Link::post(url).name(name).json(&body)`; [`Link::json`] sets `Content-Type: application/json` as `returnsJSON` did |
//! | `ConnectionManager` (the director) and each `Fallback` field | [`ChainBuilder::link`], in order: the chain holds the links, no link points at the next |
//! | `failBuilder1.Connection.ExecuteHTTPRequest()` | [`Chain::call_json`] (or [`Chain::call`], [`Chain::call_into`]) |
//! | `Output`, decoded from the first 2xx | [`Response::body`] of `call_json::<T>()`; a 2xx that does not decode now falls back (`decode`) |
//! | `CustomError`, decoded from the last failure | [`Error::json`]`::<E>()` |
//! | the returned status code | [`Response::status`], or [`Error::status`] (`None` when no link answered: no more 503 stand-in) |
//! | a bad URL: 400 at run time | a [`BuildError`] naming the link, before anything is sent |
//! | `Logger` ("NAME returned HTTP Error: CODE") | an [`Observer`], or `tracing`; the same words are in each [`Attempt`] of the [`Report`] |
//! | `Connecter`, for links of your own | [`transport::Transport`], for the chain or one link ([`Link::transport`]) |
//!
//! The original's three-link chain: two POSTs that fail, then a GET that
//! works.
//!
//! ```go
//! passBuilder := fallback.NewConnectionBuilder("PASS", "GET", passPath, true,
//!     nil, nil, &basicResponse, &basicError, nil)
//! failBuilder2 := fallback.NewConnectionBuilder("FAIL2", "POST", failPath2,
//!     true, nil, nil, &basicResponse, &basicError, passBuilder.Connection)
//! failBuilder1 := fallback.NewConnectionBuilder("FAIL1", "POST", failPath1,
//!     true, postBody, nil, &basicResponse, &basicError, failBuilder2.Connection)
//! statusCode, err := failBuilder1.Connection.ExecuteHTTPRequest()
//! ```
//!
//! ```
//! use fallback_chain::{Chain, Link};
//! use fallback_chain_testserver::{Behavior, Reply, Server};
//!
//! #[derive(serde::Deserialize, Debug)]
//! struct BasicResponse { #[serde(rename = "Text")] text: String }
//! #[derive(serde::Deserialize)]
//! struct BasicError { #[serde(rename = "Message")] message: String }
//! #[derive(serde::Serialize)]
//! struct PostBody { #[serde(rename = "Name")] name: String, #[serde(rename = "Amount")] amount: u32 }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fail1 = Server::start(Reply::json(400, r#"{"Code": 400, "Message": "bad"}"#));
//! let fail2 = Server::start(Reply::json(500, r#"{"Code": 500, "Message": "down"}"#));
//! let pass = Server::start(Behavior::ok_json(r#"{"Text": "hello", "Detail": "from PASS"}"#));
//! let post_body = PostBody { name: "Random".into(), amount: 100 };
//!
//! let chain = Chain::builder()
//!     .link(Link::post(fail1.url("/fail-basic-post")).name("FAIL1").json(&post_body))
//!     .link(Link::post(fail2.url("/fail-basic")).name("FAIL2"))
//!     .link(Link::get(pass.url("/get-basic")).name("PASS"))
//!     .observer(|a: &fallback_chain::Attempt| println!("{a}")) // the Logger
//!     .build()?;
//! let resp = chain.call_json::<BasicResponse>().await?;
//! assert_eq!((resp.status().as_u16(), resp.body().text.as_str()), (200, "hello"));
//! assert_eq!(resp.winner(), 2);
//!
//! // Every link down: the last status, and its body as the error type.
//! let down = Chain::builder()
//!     .link(Link::post(fail1.url("/fail-basic-post")).name("FAIL1"))
//!     .link(Link::post(fail2.url("/fail-basic")).name("FAIL2"))
//!     .build()?;
//! let err = down.call_json::<BasicResponse>().await.unwrap_err();
//! assert_eq!(err.status().map(|s| s.as_u16()), Some(500));
//! assert_eq!(err.json::<BasicError>().unwrap()?.message, "down");
//! # Ok(()) }
//! ```
//!
//! What the original could not do is the rest of this page: time limits
//! (it waited forever on a server that never answered), retries, breakers,
//! hedging, and the rule that never re-sends a `POST` whose outcome is
//! unknown.
//!
//! ## Examples
//!
//! One runnable file per topic, each offline on 127.0.0.1:
//! `failover`, `typed_json`, `resend`, `budgets`, `breakers`, `hedging`,
//! `tracing`, `tower`, `blocking`, `metrics`
//! (`cargo run -p fallback-chain --example NAME`, with `--features tower-0_3`,
//! `blocking` or `metrics` for the last three).
//!
//! ## Features, and the semver promise
//!
//! | feature | what it adds |
//! | --- | --- |
//! | `rustls` (default) | HTTPS for the default transport: rustls, the system's trust store, client certificates |
//! | `reqwest-0_13` | `transport::ReqwestTransport`, over a `reqwest::Client` of reqwest 0.13 |
//! | `tower-0_3` | `Chain` as a `tower::Service` (tower-service 0.3), `tower::FallbackLayer`, `tower::TowerTransport` |
//! | `blocking` | `blocking::Chain`, for programs without an async runtime |
//! | `metrics` | counters, histograms and gauges through the `metrics` facade |
//! | `compression` | `ChainBuilder::decompress`: gzip, deflate, br and zstd |
//!
//! The public API uses types of this crate and of crates that are 1.0 or
//! later (`http`, `http-body`, `bytes`, `serde`, `serde_json`, `tokio`).
//! A crate before 1.0 appears only behind a feature that names its version,
//! so that its next release can come as a new feature (`reqwest-0_14`)
//! beside the old one, without a breaking release of this crate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "blocking")]
pub mod blocking;
mod body;
mod breaker;
mod chain;
mod classify;
mod conv;
#[cfg(feature = "compression")]
mod decompress;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub mod grpc;
mod hedge;
mod link;
#[cfg(feature = "metrics")]
mod metrics;
mod observer;
mod rand;
pub mod redact;
mod redirect;
pub mod report;
mod response;
mod retry;
mod safety;
mod timeout;
#[cfg(feature = "tower-0_3")]
pub mod tower;
pub mod transport;
mod window;

pub use body::{Body, ReplayBuffer};
pub use retry::backoff::ExponentialBackoff;
/// Limits on what a chain may be built from, each checked when it is
/// built: a larger input is a [`BuildError`] that names the limit, and
/// nothing is sent.
///
/// They bound what one chain can cost in memory and on the wire, whoever
/// wrote its config: a 100,000-link config file, or a 10 MB header value,
/// is a mistake to report, not a request to send.
pub mod limits {
    /// The most links in one chain.
    pub const MAX_LINKS: usize = 1_000;
    /// The most extra tries on one link ([`ChainBuilder::retries`](crate::ChainBuilder::retries),
    /// [`Link::retries`](crate::Link::retries)). With the links, this
    /// bounds a report: at most `MAX_LINKS × (MAX_RETRIES + 1)` attempts,
    /// and redirect hops within them.
    pub const MAX_RETRIES: u32 = 100;
    /// The largest header value: 64 KiB. Servers refuse far less (nginx
    /// 8 KiB per line by default).
    pub const MAX_HEADER_VALUE_BYTES: usize = 64 * 1024;
    /// The largest set of a link's headers, names and values: 256 KiB.
    pub const MAX_HEADERS_BYTES: usize = 256 * 1024;
}

pub use breaker::{AllOpen, BreakerConfig, BreakerState, LinkHealth, SharedBreaker};
pub use chain::{Chain, ChainBuilder, ExternalAttempt, Policy};
pub use classify::{Answer, Classifier, ClassifierParseError, Verdict};
pub use conv::{IntoHeaderName, IntoHeaderValue, IntoMethod, IntoUrl};
pub use error::{BuildError, Error, ErrorKind, LinkProblem};
pub use hedge::Hedge;
pub use link::{Link, LinkInfo};
pub use observer::{Observer, RequestHead, ResponseHead};
pub use report::{Attempt, Outcome, Report};
pub use response::{BodySink, Response};
pub use retry::budget::RetryBudget;
pub use timeout::{IdleTimeout, Phase};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

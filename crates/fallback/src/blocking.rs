//! A blocking API (feature `blocking`), for programs without an async
//! runtime. It runs the same engine, with the same rules, on a small runtime
//! of its own (one worker thread, shared by every clone).
//!
//! ```
//! use fallback_chain::{blocking, Chain, Link};
//! use fallback_chain_testserver::{Behavior, Server};
//!
//! let down = Server::refused();
//! let up = Server::start(Behavior::ok_json(r#"{"n": 1}"#));
//! let chain = blocking::Chain::new(
//!     Chain::builder()
//!         .link(Link::get(down.url("/")))
//!         .link(Link::get(up.url("/")))
//!         .build()?,
//! )?;
//! let resp = chain.call_json::<serde_json::Value>()?;
//! assert_eq!(resp.body()["n"], 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::{BodySink, Error, LinkHealth, LinkInfo, Response};

/// A [`crate::Chain`] with blocking calls. Cheap to clone; `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Chain {
    chain: crate::Chain,
    rt: Arc<Rt>,
}

/// The runtime, shut down without blocking when the last clone goes, so
/// dropping a blocking chain inside async code does not panic.
#[derive(Debug)]
struct Rt(Option<tokio::runtime::Runtime>);

impl Rt {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime lives until drop")
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Chain {
    /// Wraps a built chain, starting the runtime its calls run on.
    pub fn new(chain: crate::Chain) -> std::io::Result<Chain> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fallback-blocking")
            .enable_all()
            .build()?;
        Ok(Chain {
            chain,
            rt: Arc::new(Rt(Some(rt))),
        })
    }

    /// The async chain inside.
    pub fn as_async(&self) -> &crate::Chain {
        &self.chain
    }

    /// See [`crate::Chain::call`].
    pub fn call(&self) -> Result<Response<Bytes>, Error> {
        self.block_on(self.chain.call())
    }

    /// See [`crate::Chain::call_json`].
    pub fn call_json<T>(&self) -> Result<Response<T>, Error>
    where
        T: DeserializeOwned + Send,
    {
        self.block_on(self.chain.call_json::<T>())
    }

    /// See [`crate::Chain::call_into`].
    pub fn call_into<S: BodySink>(&self, sink: &mut S) -> Result<Response<()>, Error> {
        self.block_on(self.chain.call_into(sink))
    }

    /// See [`crate::Chain::health`].
    pub fn health(&self) -> Vec<LinkHealth> {
        self.block_on(async { self.chain.health() })
    }

    /// See [`crate::Chain::links`].
    pub fn links(&self) -> Vec<LinkInfo> {
        self.chain.links()
    }

    fn block_on<F: Future + Send>(&self, fut: F) -> F::Output
    where
        F::Output: Send,
    {
        // Blocking inside an async runtime would panic; a helper thread
        // keeps a careless caller working instead.
        if tokio::runtime::Handle::try_current().is_ok() {
            return std::thread::scope(|s| {
                s.spawn(|| self.rt.get().block_on(fut))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            });
        }
        self.rt.get().block_on(fut)
    }
}

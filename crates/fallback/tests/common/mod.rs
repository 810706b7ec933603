//! An in-memory transport for paused-clock tests: each host answers from a
//! script, and every request's (virtual) time is recorded.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fallback_chain::transport::{
    Handoff, RequestBody, ResponseBody, SendFuture, Transport, TransportError, TransportErrorKind,
};
use tokio::time::Instant;

#[derive(Clone)]
pub enum Step {
    Answer(u16, Option<String>, &'static str),
    Refuse,
    Hang,
    /// Reports a [`Handoff`] that stays connecting, then hangs.
    HangConnecting,
    /// Reports a [`Handoff`] handed over, then hangs.
    HangHandedOver,
}

/// Answers each host from its own script; the last step repeats.
#[derive(Default)]
pub struct Script {
    steps: Mutex<HashMap<String, VecDeque<Step>>>,
    seen: Mutex<Vec<(String, Instant)>>,
}

impl Script {
    pub fn new(hosts: &[(&str, Vec<Step>)]) -> Arc<Script> {
        let s = Script::default();
        for (h, steps) in hosts {
            s.steps
                .lock()
                .unwrap()
                .insert(h.to_string(), steps.iter().cloned().collect());
        }
        Arc::new(s)
    }

    /// Replaces a host's script.
    pub fn set(&self, host: &str, steps: Vec<Step>) {
        self.steps
            .lock()
            .unwrap()
            .insert(host.to_string(), steps.into_iter().collect());
    }

    pub fn times(&self, host: &str) -> Vec<Instant> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, _)| h == host)
            .map(|(_, t)| *t)
            .collect()
    }
}

impl Transport for Script {
    fn send(&self, req: http::Request<RequestBody>) -> SendFuture {
        let host = req.uri().host().unwrap_or("").to_owned();
        self.seen
            .lock()
            .unwrap()
            .push((host.clone(), Instant::now()));
        let step = {
            let mut all = self.steps.lock().unwrap();
            let q = all.get_mut(&host).expect("scripted host");
            if q.len() > 1 {
                q.pop_front().unwrap()
            } else {
                q.front().cloned().unwrap()
            }
        };
        if let Some(h) = Handoff::of(&req) {
            match step {
                Step::HangConnecting => h.connecting(),
                Step::HangHandedOver => {
                    h.connecting();
                    h.handed_over();
                }
                _ => {}
            }
        }
        Box::pin(async move {
            match step {
                Step::Answer(status, retry_after, body) => {
                    let mut b = http::Response::builder().status(status);
                    if let Some(ra) = retry_after {
                        b = b.header("retry-after", ra);
                    }
                    let body = ResponseBody::full(Bytes::from_static(body.as_bytes()));
                    Ok(b.body(body).unwrap())
                }
                Step::Refuse => Err(TransportError::new(
                    TransportErrorKind::Connect,
                    "connection refused",
                )),
                Step::Hang | Step::HangConnecting | Step::HangHandedOver => {
                    std::future::pending().await
                }
            }
        })
    }
}

pub fn ok() -> Step {
    Step::Answer(200, None, "ok")
}

/// A tracing writer into a shared buffer.
#[derive(Clone, Default)]
pub struct Buf(pub Arc<Mutex<Vec<u8>>>);

impl Buf {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}

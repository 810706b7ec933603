//! A scripted, in-memory transport for the schedulers' unit tests: each
//! host answers from its script on tokio's (paused) clock, no sockets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::transport::{
    RequestBody, ResponseBody, SendFuture, Transport, TransportError, TransportErrorKind,
};

#[derive(Clone, Copy)]
pub(super) enum Step {
    /// Answer `status` after a delay.
    Answer(u16, Duration),
    /// Refuse the connection.
    Refuse,
}

/// Each host's steps, in order; the last one repeats. Records the hosts
/// asked, in order.
#[derive(Default)]
pub(super) struct Script {
    steps: Mutex<HashMap<String, Vec<Step>>>,
    pub(super) seen: Mutex<Vec<String>>,
}

impl Script {
    pub(super) fn new(hosts: &[(&str, &[Step])]) -> Script {
        let s = Script::default();
        for (h, steps) in hosts {
            s.steps.lock().unwrap().insert((*h).into(), steps.to_vec());
        }
        s
    }

    pub(super) fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Transport for Script {
    fn send(&self, req: http::Request<RequestBody>) -> SendFuture {
        let host = req.uri().host().unwrap_or_default().to_owned();
        self.seen.lock().unwrap().push(host.clone());
        let step = {
            let mut all = self.steps.lock().unwrap();
            let q = all.get_mut(&host).expect("a scripted host");
            if q.len() > 1 {
                q.remove(0)
            } else {
                q[0]
            }
        };
        Box::pin(async move {
            match step {
                Step::Answer(status, delay) => {
                    tokio::time::sleep(delay).await;
                    let mut resp = http::Response::new(ResponseBody::full(host));
                    *resp.status_mut() = http::StatusCode::from_u16(status).expect("status");
                    Ok(resp)
                }
                Step::Refuse => Err(TransportError::new(TransportErrorKind::Connect, "refused")),
            }
        })
    }
}

pub(super) const NOW: Duration = Duration::ZERO;

pub(super) fn ok() -> Step {
    Step::Answer(200, NOW)
}

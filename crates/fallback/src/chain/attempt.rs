//! One attempt at one link: send (with its re-sends and redirect hops),
//! time limits, the body, and the classification of the answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, StatusCode, Uri};
use tokio::time::Instant;

use crate::classify::{Answer, Verdict};
use crate::error::{ErrorKind, LastResponse};
use crate::link::Endpoint;
use crate::observer::ResponseHead;
use crate::report::{Attempt, ErrorText, Outcome, Report};
use crate::safety::{may_resend, Delivery};
use crate::timeout::{within, Alarm, Phase};
use crate::transport::{error_chain, FreshConnection, Handoff, ResponseBody, TransportErrorKind};
use crate::{breaker, redact, redirect, retry};

use super::consume::{collect, Consume, ConsumeError};
use super::Chain;

/// How one attempt ended, before it is recorded.
pub(super) enum Ended<O> {
    Won(Won<O>),
    // Boxed: failures are rare, and a small enum is cheap to move.
    Lost(Box<Lost>),
}

/// A winning answer: its head and what the consumer made of its body.
pub(super) struct Won<O> {
    pub(super) status: StatusCode,
    pub(super) version: http::Version,
    pub(super) headers: HeaderMap,
    pub(super) output: O,
}

impl<O> Ended<O> {
    /// What the attempt says about its link's health: `None` when the call
    /// was stopped by the caller's own side (its sink or request body).
    pub(super) fn breaker_verdict(&self) -> Option<bool> {
        match self {
            Ended::Won(_) => Some(true),
            Ended::Lost(l) if l.stop.is_some() => None,
            Ended::Lost(l) => Some(!breaker::counts_as_failure(l.outcome, l.status)),
        }
    }
}

/// A request that went out within an attempt before its last one: a
/// re-send after a stale pooled connection, or a followed redirect. Each
/// becomes a line of the report.
pub(super) struct Hop {
    pub(super) outcome: Outcome,
    pub(super) status: Option<StatusCode>,
    pub(super) url: Arc<str>,
    pub(super) elapsed: Duration,
    pub(super) error: ErrorText,
}

/// The request for one hop of an attempt: the link's own, or where a
/// redirect led.
pub(super) async fn hop_request(
    ep: &Endpoint,
    follow: Option<&redirect::Follow>,
) -> std::io::Result<http::Request<crate::transport::RequestBody>> {
    let Some(f) = follow else {
        return ep.request().await;
    };
    let mut request = if f.to_get {
        // A GET carries no body: the link's is not even opened.
        let mut r = http::Request::new(crate::transport::RequestBody::empty());
        *r.method_mut() = http::Method::GET;
        *r.version_mut() = ep.version;
        *r.headers_mut() = ep.headers.clone();
        r
    } else {
        ep.request().await?
    };
    let cross_origin = !redirect::same_origin(&ep.uri, &f.uri);
    redirect::headers(request.headers_mut(), f.to_get, cross_origin, &ep.secrets);
    *request.uri_mut() = f.uri.clone();
    Ok(request)
}

/// The method a hop goes out with: the link's, or `GET` once a redirect
/// turned it into one (a `HEAD` never is).
pub(super) fn hop_method<'a>(ep: &'a Endpoint, follow: Option<&redirect::Follow>) -> &'a Method {
    if follow.is_some_and(|f| f.to_get) {
        &Method::GET
    } else {
        &ep.method
    }
}

pub(super) fn hop_url(ep: &Endpoint, follow: Option<&redirect::Follow>) -> Arc<str> {
    match follow {
        Some(f) => redirect::shown(&f.uri).into(),
        None => ep.url.clone(),
    }
}

/// A transport error, as a lost attempt.
pub(super) fn transport_lost(e: crate::transport::TransportError) -> Lost {
    match e.kind() {
        // Rendered only if someone reads it.
        TransportErrorKind::Connect => {
            Lost::new(Outcome::Connect, Delivery::NotSent, ErrorText::error(e))
        }
        TransportErrorKind::ConnectTimeout => Lost {
            phase: Some(Phase::Connect),
            ..Lost::new(Outcome::Timeout, Delivery::NotSent, ErrorText::error(e))
        },
        TransportErrorKind::RefusedStream => refused_lost(e, 0, false),
        TransportErrorKind::StaleConnection => Lost::new(
            Outcome::Io,
            Delivery::Unknown,
            format!(
                "{e}: a reused connection failed before any answer \
                 (the server may have closed it while idle)"
            ),
        ),
        _ => Lost::new(Outcome::Io, Delivery::Unknown, ErrorText::error(e)),
    }
}

/// How many times one try re-sends a request whose stream the server
/// refused unprocessed, each on a new connection, before it gives up.
pub(super) const MAX_REFUSED_RESENDS: u32 = 3;

/// The end of a refused stream's line in the report when it was re-sent.
pub(super) const RESENT: &str = "re-sent at once on a new connection";

/// A stream the server refused unprocessed, not re-sent: after `resent`
/// re-sends, or because the body cannot be sent again.
pub(super) fn refused_lost(e: crate::transport::TransportError, resent: u32, spent: bool) -> Lost {
    let why = if spent {
        "not re-sent: its body was streamed and cannot be sent again".to_owned()
    } else {
        format!(
            "refused {} time{} in a row",
            resent + 1,
            if resent == 0 { "" } else { "s" }
        )
    };
    Lost::new(
        Outcome::RefusedStream,
        Delivery::NotSent,
        format!("{e}: the server refused the request unprocessed; {why}"),
    )
}

/// The attempt's timer fired before a response head arrived.
pub(super) fn timer_lost(handoff: &Handoff, begun: Instant, until: Instant) -> Lost {
    let limit = until.duration_since(begun);
    if handoff.never_left() {
        // Before the transport handed the request to a connection: nothing
        // was sent.
        Lost {
            phase: Some(Phase::Connect),
            ..Lost::new(
                Outcome::Timeout,
                Delivery::NotSent,
                format!("no connection within {limit:?}"),
            )
        }
    } else {
        Lost {
            phase: Some(Phase::Head),
            ..Lost::new(
                Outcome::Timeout,
                Delivery::Unknown,
                format!("no response head within {limit:?}"),
            )
        }
    }
}

/// A redirect that is not followed (a loop, too many hops, a bad
/// `Location`): the link failed with that answer.
pub(super) async fn redirect_lost(
    resp: http::Response<crate::transport::ResponseBody>,
    why: String,
    alarm: &Alarm,
    limit: u64,
) -> Lost {
    let (parts, body) = resp.into_parts();
    let body = match within(collect(body, limit, None), alarm).await {
        Some(Ok(b)) => Some(b),
        _ => None,
    };
    Lost {
        status: Some(parts.status),
        response: Some(LastResponse {
            version: parts.version,
            status: parts.status,
            headers: parts.headers,
            body,
        }),
        ..Lost::new(Outcome::Status, Delivery::Rejected, why)
    }
}

/// A failed attempt: how it failed, what is known about delivery, and
/// the answer to keep.
pub(super) struct Lost {
    pub(super) outcome: Outcome,
    pub(super) phase: Option<Phase>,
    pub(super) status: Option<StatusCode>,
    pub(super) error: ErrorText,
    pub(super) delivery: Delivery,
    pub(super) verdict: Verdict,
    pub(super) response: Option<LastResponse>,
    pub(super) retry_after: Option<Duration>,
    /// Ends the call at once (the sink or the request body failed).
    pub(super) stop: Option<ErrorKind>,
    /// A gRPC answer's status, from its head.
    pub(super) grpc: Option<Box<crate::grpc::Status>>,
}

impl Lost {
    pub(super) fn new(outcome: Outcome, delivery: Delivery, error: impl Into<ErrorText>) -> Lost {
        Lost {
            outcome,
            phase: None,
            status: None,
            error: error.into(),
            delivery,
            verdict: Verdict::Fallback,
            response: None,
            retry_after: None,
            stop: None,
            grpc: None,
        }
    }
}

impl Chain {
    /// One attempt at one link, bounded by `until`: connect, send, head
    /// and the whole body, under one timer.
    ///
    /// `hops` gets a line for each request that went out before the last
    /// one: a re-send after a stale pooled connection, a followed redirect.
    pub(super) async fn attempt<C: Consume>(
        &self,
        ep: &Endpoint,
        consumer: &mut C,
        begun: Instant,
        until: Instant,
        hops: &mut Vec<Hop>,
    ) -> Ended<C::Output> {
        let mut converted = false;
        let mut ended = self
            .attempt_hops(ep, consumer, begun, until, hops, &mut converted)
            .await;
        // A POST turned into a GET by a redirect was answered: whatever
        // happened after, it is not re-sent.
        if let (true, Ended::Lost(l)) = (converted, &mut ended) {
            l.delivery = Delivery::Processed;
        }
        ended
    }

    pub(super) async fn attempt_hops<C: Consume>(
        &self,
        ep: &Endpoint,
        consumer: &mut C,
        begun: Instant,
        until: Instant,
        hops: &mut Vec<Hop>,
        converted: &mut bool,
    ) -> Ended<C::Output> {
        let inner = &*self.inner;
        // One (shared) alarm for every phase and hop.
        let alarm = inner.alarms.alarm(begun, until);
        let time = Time::new(&alarm, begun, until);
        let transport = ep.transport.as_ref().unwrap_or(&inner.transport);
        // Each phase's locals live in a block of their own, which ends
        // before the next phase's await: the future then holds one phase's
        // state at a time, not every phase's side by side.
        let (parts, body, len) = {
            let mut route = Route::default();
            let resp = loop {
                // The hop's request, with the re-sends that are the same try.
                let mut fresh = false;
                let resp = loop {
                    let handoff = Handoff::new();
                    let sent = {
                        let ready = match route.follow {
                            None => ep.request_now(),
                            Some(_) => None,
                        };
                        let mut request = match ready {
                            Some(r) => r,
                            // A file's body, or a redirect's hop: out of line.
                            None => {
                                match Box::pin(hop_request(ep, route.follow.as_deref())).await {
                                    Ok(r) => r,
                                    Err(e) => return Ended::Lost(Box::new(body_lost(e))),
                                }
                            }
                        };
                        request.body_mut().set_handoff(handoff.clone());
                        if fresh {
                            request.extensions_mut().insert(FreshConnection);
                        }
                        self.show_request(ep, &request);
                        transport.send(request)
                    };
                    let e = match within(sent, time.alarm).await {
                        Some(Ok(resp)) => break resp,
                        Some(Err(e)) => e,
                        None => return Ended::Lost(Box::new(timer_lost(&handoff, begun, until))),
                    };
                    match resend(e, ep, &mut route, begun) {
                        Ok(hop) => hops.push(hop),
                        Err(l) => return Ended::Lost(l),
                    }
                    fresh = true;
                };
                self.show_response(ep, &resp);
                if inner.settings.follow_redirects == 0 {
                    break resp;
                }
                match Box::pin(self.redirect_step(ep, resp, &mut route, &time, hops, converted))
                    .await
                {
                    Step::Final(resp) => break resp,
                    Step::Followed => {}
                    Step::Lost(l) => return Ended::Lost(l),
                }
            };
            let judged = self.judge(ep, resp, route.follow.as_deref());
            if judged.verdict != Verdict::Success {
                return Box::pin(self.read_failure(ep, judged, &time)).await;
            }
            (judged.parts, judged.body, judged.len)
        };
        let body = match ep.idle_timeout.filter(|_| consumer.streams()) {
            Some(idle) => ResponseBody::new(crate::timeout::Idle::new(body, idle)),
            None => body,
        };
        let failed = match within(
            consumer.consume(body, inner.settings.max_body, len),
            time.alarm,
        )
        .await
        {
            Some(Ok(output)) => {
                return Ended::Won(Won {
                    status: parts.status,
                    version: parts.version,
                    headers: parts.headers,
                    output,
                })
            }
            Some(Err(e)) => Some(e),
            None => None,
        };
        Box::pin(Self::not_taken(consumer, parts, failed, &time)).await
    }

    /// Shows a response head to the observer, if there is one.
    fn show_response(&self, ep: &Endpoint, resp: &http::Response<ResponseBody>) {
        if let Some(o) = &self.inner.settings.observer {
            o.on_response(&ResponseHead {
                link: ep.index,
                name: &ep.name,
                status: resp.status(),
                version: resp.version(),
                headers: resp.headers(),
            });
        }
    }

    /// Whether an answer is a redirect to follow: if so, the next hop is
    /// set in `route` (the answer drained, so its connection is pooled).
    async fn redirect_step(
        &self,
        ep: &Endpoint,
        resp: http::Response<ResponseBody>,
        route: &mut Route,
        time: &Time<'_>,
        hops: &mut Vec<Hop>,
        converted: &mut bool,
    ) -> Step {
        let inner = &*self.inner;
        let limit = inner.settings.max_body;
        let current = route.follow.as_deref().map_or(&ep.uri, |f| &f.uri);
        let method = hop_method(ep, route.follow.as_deref());
        let next = match redirect::follow(resp.status(), resp.headers(), current, method) {
            None => return Step::Final(resp),
            Some(Ok(next)) => next,
            Some(Err(why)) => return redirect_refused(resp, why, time, limit).await,
        };
        if route.visited.len() as u32 >= inner.settings.follow_redirects {
            let why = format!(
                "too many redirects: more than {} (the next to {})",
                inner.settings.follow_redirects,
                redirect::shown(&next.uri)
            );
            return redirect_refused(resp, why, time, limit).await;
        }
        if next.uri == ep.uri || route.visited.contains(&next.uri) {
            let why = format!("redirect loop: back to {}", redirect::shown(&next.uri));
            return redirect_refused(resp, why, time, limit).await;
        }
        hops.push(Hop {
            outcome: Outcome::Redirect,
            status: Some(resp.status()),
            url: hop_url(ep, route.follow.as_deref()),
            elapsed: time.begun.elapsed(),
            error: format!("redirected to {}", redirect::shown(&next.uri)).into(),
        });
        let _ = within(collect(resp.into_body(), limit, None), time.alarm).await;
        *converted |= next.to_get && !ep.idempotent;
        route.visited.push(next.uri.clone());
        let to_get = next.to_get || route.follow.as_deref().is_some_and(|f| f.to_get);
        route.follow = Some(Box::new(redirect::Follow { to_get, ..next }));
        Step::Followed
    }

    /// The last hop's answer: its head made ready (secrets marked, decoded
    /// if asked) and classified.
    fn judge(
        &self,
        ep: &Endpoint,
        resp: http::Response<ResponseBody>,
        follow: Option<&redirect::Follow>,
    ) -> Judged {
        let inner = &*self.inner;
        let (mut parts, body) = resp.into_parts();
        let method = hop_method(ep, follow);
        if !ep.secrets.is_empty() {
            redact::mark(&mut parts.headers, &ep.secrets);
        }
        let status = parts.status;
        // A HEAD answer's Content-Length describes a body that never comes.
        let bodiless = *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        #[cfg(feature = "compression")]
        let body = if inner.settings.decompress && !bodiless {
            crate::decompress::decode(&mut parts.headers, body)
        } else {
            body
        };
        let len = parts
            .headers
            .get(CONTENT_LENGTH)
            .filter(|_| !bodiless)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let answer = Answer::of(status, &parts.headers, method, ep.index, &ep.name, ep.grpc);
        let verdict = inner.settings.classifier.classify(&answer);
        Judged {
            parts,
            body,
            len,
            verdict,
        }
    }

    /// A failure's answer, its body read: it may be the caller's error
    /// body, and a drained connection goes back to the pool.
    async fn read_failure<O>(&self, ep: &Endpoint, judged: Judged, time: &Time<'_>) -> Ended<O> {
        let Judged {
            parts,
            body,
            len,
            verdict,
        } = judged;
        let status = parts.status;
        let grpc = ep
            .grpc
            .then(|| crate::grpc::Status::from_headers(&parts.headers))
            .flatten()
            .filter(|g| g.code() != crate::grpc::Code::OK);
        let body = match within(collect(body, self.inner.settings.max_body, len), time.alarm).await
        {
            Some(Ok(b)) => Some(b),
            _ => None,
        };
        let (outcome, error) = match &grpc {
            Some(g) => (
                // Only a code in the gRPC set is the link's failure; any
                // other is the caller's answer, like a 4xx.
                if verdict == Verdict::Fallback
                    && self.inner.settings.classifier.grpc_falls_back(g.code())
                {
                    Outcome::Grpc
                } else {
                    Outcome::Status
                },
                format!("{} answered {g}", ep.name),
            ),
            None => (
                Outcome::Status,
                format!("{} returned HTTP Error: {}", ep.name, status.as_u16()),
            ),
        };
        Ended::Lost(Box::new(Lost {
            status: Some(status),
            verdict,
            grpc: grpc.map(Box::new),
            retry_after: retry::retry_after(status, &parts.headers, SystemTime::now()),
            response: Some(LastResponse {
                version: parts.version,
                status,
                headers: parts.headers,
                body,
            }),
            ..Lost::new(outcome, Delivery::Rejected, error)
        }))
    }

    /// A success whose body the consumer could not take (`None`: not in
    /// time): a failed attempt, and none of its bytes stay with the
    /// caller.
    async fn not_taken<C: Consume>(
        consumer: &mut C,
        parts: http::response::Parts,
        failed: Option<ConsumeError>,
        time: &Time<'_>,
    ) -> Ended<C::Output> {
        let status = parts.status;
        let failed = match failed {
            None => Lost {
                phase: Some(Phase::Body),
                ..Lost::new(
                    Outcome::Timeout,
                    Delivery::Processed,
                    format!(
                        "body not read whole within {:?}",
                        time.until.duration_since(time.begun)
                    ),
                )
            },
            Some(e) => consume_lost(e, &parts),
        };
        // No byte of a failed attempt may stay with the caller.
        if let Err(e) = consumer.reset().await {
            return Ended::Lost(Box::new(Lost {
                stop: Some(ErrorKind::Sink),
                status: Some(status),
                ..Lost::new(
                    Outcome::Io,
                    Delivery::Processed,
                    format!("sink reset failed: {e}"),
                )
            }));
        }
        Ended::Lost(Box::new(Lost {
            status: Some(status),
            response: failed.response.or(Some(LastResponse {
                version: parts.version,
                status,
                headers: parts.headers,
                body: None,
            })),
            ..failed
        }))
    }
}

/// An attempt's clock: its shared alarm, when it began and when it must
/// end.
pub(super) struct Time<'a> {
    alarm: &'a Alarm,
    begun: Instant,
    until: Instant,
}

impl<'a> Time<'a> {
    fn new(alarm: &'a Alarm, begun: Instant, until: Instant) -> Time<'a> {
        Time {
            alarm,
            begun,
            until,
        }
    }
}

/// Where an attempt's hops have been: the redirect being followed, the
/// URLs visited, and the re-sends already spent.
#[derive(Default)]
pub(super) struct Route {
    /// Boxed: redirects are rare, and the route lives in every attempt's
    /// future.
    follow: Option<Box<redirect::Follow>>,
    visited: Vec<Uri>,
    stale_resent: bool,
    refused: u32,
}

/// The last hop's answer, made ready and classified.
pub(super) struct Judged {
    parts: http::response::Parts,
    body: ResponseBody,
    len: Option<u64>,
    verdict: Verdict,
}

/// What an answer does to the hops: it is the last, it led on, or it
/// ended the attempt.
pub(super) enum Step {
    Final(http::Response<ResponseBody>),
    Followed,
    Lost(Box<Lost>),
}

/// A send that failed: re-sent at once, as the same try, when the server
/// refused the stream unprocessed or closed a pooled connection under an
/// idempotent request (the line for the report); else the attempt's loss.
fn resend(
    e: crate::transport::TransportError,
    ep: &Endpoint,
    route: &mut Route,
    begun: Instant,
) -> Result<Hop, Box<Lost>> {
    let (outcome, why) = match e.kind() {
        // Not processed (RFC 9113, section 8.7): safe to send again
        // whatever the method, if the body can be.
        TransportErrorKind::RefusedStream
            if route.refused < MAX_REFUSED_RESENDS && !ep.body.is_spent() =>
        {
            route.refused += 1;
            (
                Outcome::RefusedStream,
                "the server refused the request unprocessed (HTTP/2)",
            )
        }
        // Go's net/http rule: the server closed a pooled connection under
        // the request; send it once more, on a new connection.
        TransportErrorKind::StaleConnection if ep.idempotent && !route.stale_resent => {
            route.stale_resent = true;
            (
                Outcome::Stale,
                "the pooled connection had been closed by the server",
            )
        }
        TransportErrorKind::RefusedStream => {
            return Err(Box::new(refused_lost(e, route.refused, ep.body.is_spent())))
        }
        _ => return Err(Box::new(transport_lost(e))),
    };
    Ok(Hop {
        outcome,
        status: None,
        url: hop_url(ep, route.follow.as_deref()),
        elapsed: begun.elapsed(),
        error: format!("{e}: {why}; {RESENT}").into(),
    })
}

/// A redirect that is not followed ends the attempt with its answer.
async fn redirect_refused(
    resp: http::Response<ResponseBody>,
    why: String,
    time: &Time<'_>,
    limit: u64,
) -> Step {
    Step::Lost(Box::new(redirect_lost(resp, why, time.alarm, limit).await))
}

/// The request body could not be produced: nothing was sent, and the call
/// stops.
fn body_lost(e: std::io::Error) -> Lost {
    Lost {
        stop: Some(ErrorKind::Body),
        ..Lost::new(Outcome::Io, Delivery::NotSent, format!("request body: {e}"))
    }
}

/// A success whose body the consumer could not take.
fn consume_lost(e: ConsumeError, parts: &http::response::Parts) -> Lost {
    match e {
        ConsumeError::TooLarge(limit) => Lost::new(
            Outcome::TooLarge,
            Delivery::Processed,
            format!("body larger than the limit of {limit} bytes"),
        ),
        ConsumeError::Body(e) if crate::IdleTimeout::in_chain(&*e) => Lost {
            phase: Some(Phase::Body),
            ..Lost::new(
                Outcome::Timeout,
                Delivery::Processed,
                format!("body not read whole: {}", error_chain(&*e)),
            )
        },
        ConsumeError::Body(e) => Lost::new(
            Outcome::Io,
            Delivery::Processed,
            format!("body could not be read whole: {}", error_chain(&*e)),
        ),
        ConsumeError::Decode(e, bytes) => Lost {
            response: Some(LastResponse {
                version: parts.version,
                status: parts.status,
                headers: parts.headers.clone(),
                body: Some(bytes),
            }),
            ..Lost::new(
                Outcome::Decode,
                Delivery::Processed,
                format!("body does not decode: {e}"),
            )
        },
        ConsumeError::Sink(e) => Lost {
            stop: Some(ErrorKind::Sink),
            ..Lost::new(
                Outcome::Io,
                Delivery::Processed,
                format!("sink failed: {e}"),
            )
        },
    }
}

/// A line of the report for link `index`; the rest is set by the builders
/// below.
pub(super) fn line(
    index: usize,
    ep: &Endpoint,
    try_number: u32,
    outcome: Outcome,
    elapsed: Duration,
) -> Attempt {
    Attempt {
        link: index,
        name: ep.name.clone(),
        url: ep.url.clone(),
        try_number,
        outcome,
        phase: None,
        status: None,
        elapsed,
        error: None,
        insecure: ep.insecure,
        grpc: None,
    }
}

impl Attempt {
    pub(super) fn with_error(mut self, error: ErrorText) -> Attempt {
        self.error = Some(error);
        self
    }

    pub(super) fn with_status(mut self, status: StatusCode) -> Attempt {
        self.status = Some(status);
        self
    }
}

/// Says in a failed attempt's error text that its certificate was not
/// verified.
pub(super) fn mark_insecure(ep: &Endpoint, lost: &mut Lost) {
    if ep.insecure {
        lost.error = format!(
            "{} (TLS certificate verification was off)",
            lost.error.as_str()
        )
        .into();
    }
}

pub(super) fn not_resent_kind(delivery: Delivery) -> ErrorKind {
    if delivery == Delivery::Processed {
        ErrorKind::Processed
    } else {
        ErrorKind::MaybeProcessed
    }
}

/// The message for a request that must not be re-sent.
pub(super) fn not_resent(
    ep: &Endpoint,
    delivery: Delivery,
    status: Option<StatusCode>,
    attempt: Option<&Attempt>,
) -> String {
    let why = attempt.and_then(|a| a.error()).unwrap_or("unknown failure");
    let m = &ep.method;
    if delivery == Delivery::Processed {
        let s = status.map_or(0, |s| s.as_u16());
        format!(
            "accepted the {m} with {s}, but the answer could not be used ({why}); \
             it was not re-sent because the request was processed"
        )
    } else {
        format!(
            "the {m} may have been processed ({why}); it was not re-sent because {m} is not idempotent. \
             Mark the link idempotent or send an Idempotency-Key header to allow re-sending"
        )
    }
}

impl Hop {
    pub(super) fn attempt(self, link: usize, ep: &Endpoint, try_number: u32) -> Attempt {
        Attempt {
            url: self.url,
            status: self.status,
            ..line(link, ep, try_number, self.outcome, self.elapsed).with_error(self.error)
        }
    }
}

/// Whether a lost attempt ends the call, and why.
/// The granularity of tokio's timers: a server's timer and the call's may
/// fire this far apart for the same instant.
const TIMER_TICK: Duration = Duration::from_millis(1);

pub(super) fn stop_kind(
    ep: &Endpoint,
    lost: &Lost,
    deadline: Option<Instant>,
) -> Option<ErrorKind> {
    if lost.stop.is_some() {
        lost.stop
    } else if lost.verdict == Verdict::Final {
        // A server that gave up on the deadline the call sent it, as the
        // call's own timer fires: the call ran out of time.
        let out_of_time = deadline.is_some_and(|d| Instant::now() + TIMER_TICK >= d);
        let gave_up = lost.grpc.as_ref().is_some_and(|g| {
            matches!(
                g.code(),
                crate::grpc::Code::CANCELLED | crate::grpc::Code::DEADLINE_EXCEEDED
            )
        });
        Some(if out_of_time && gave_up {
            ErrorKind::Deadline
        } else {
            ErrorKind::FinalStatus
        })
    } else if ep.body.is_spent() {
        Some(ErrorKind::NotReplayable)
    } else if deadline.is_some_and(|d| Instant::now() >= d) {
        // Out of time, whether or not the request could have been re-sent.
        Some(ErrorKind::Deadline)
    } else if !may_resend(ep.idempotent, lost.delivery) {
        Some(not_resent_kind(lost.delivery))
    } else {
        None
    }
}

pub(super) fn stop_detail(
    kind: ErrorKind,
    ep: &Endpoint,
    lost: &Lost,
    report: &Report,
) -> Option<String> {
    match kind {
        ErrorKind::MaybeProcessed | ErrorKind::Processed => {
            Some(not_resent(ep, lost.delivery, lost.status, report.last()))
        }
        ErrorKind::Sink | ErrorKind::Body => {
            report.last().and_then(|a| a.error()).map(str::to_owned)
        }
        ErrorKind::NotReplayable => ep.body.not_replayable_because(),
        _ => None,
    }
}

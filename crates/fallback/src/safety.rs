//! When is a request re-sent? The rule that never turns an unknown outcome
//! into a duplicate side effect.
//!
//! This is nginx's `proxy_next_upstream` rule. A request is *idempotent*
//! when its method is GET, HEAD, OPTIONS, PUT, DELETE or TRACE (RFC 9110),
//! when it carries an `Idempotency-Key` header, or when its link is marked
//! with [`Link::idempotent`]. Everything else (POST, PATCH, and extension
//! methods) is re-sent, to the same link or the next, only when the outcome
//! of the failed attempt is *known*:
//!
//! | failed attempt | idempotent | POST, PATCH, … |
//! | --- | --- | --- |
//! | no connection (refused, DNS, TLS handshake, connect timeout, or an attempt timeout or deadline that fired while the transport was still connecting): nothing was sent | re-sent | re-sent |
//! | a pooled connection the server had closed (a reused HTTP/1 connection failed before any byte of the answer) | re-sent once, at once, on a new connection, as the same try: `stale` in the report | **not re-sent**: the call fails with [`ErrorKind::MaybeProcessed`] |
//! | the server answered a status that falls back | re-sent | re-sent |
//! | timeout after sending, reset after sending, truncated answer: outcome unknown | re-sent | **not re-sent**: the call fails with [`ErrorKind::MaybeProcessed`] |
//! | a 2xx whose body is unusable (too large, truncated, not decodable): processed | re-sent | **not re-sent**: the call fails with [`ErrorKind::Processed`] |
//!
//! Whether a timer fired before anything was sent is the transport's to
//! say, through a [`Handoff`]; a transport that does not say is taken to
//! have sent the request.
//!
//! The error says which link may have processed the request, and that
//! marking the link idempotent, or sending an `Idempotency-Key`, allows
//! re-sending.
//!
//! [`Link::idempotent`]: crate::Link::idempotent
//! [`Handoff`]: crate::transport::Handoff
//! [`ErrorKind::MaybeProcessed`]: crate::ErrorKind::MaybeProcessed
//! [`ErrorKind::Processed`]: crate::ErrorKind::Processed

use http::{HeaderMap, Method};

/// What is known about whether a failed attempt's request took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// It never left this machine.
    NotSent,
    /// It may have reached the server; no answer came back whole.
    Unknown,
    /// The server answered with a status that is not a success.
    Rejected,
    /// The server answered with a success, so the request was processed.
    Processed,
}

/// Whether a request whose last attempt ended with `delivery` may be sent
/// again, to the same link or the next.
pub(crate) fn may_resend(idempotent: bool, delivery: Delivery) -> bool {
    match delivery {
        Delivery::NotSent | Delivery::Rejected => true,
        Delivery::Unknown | Delivery::Processed => idempotent,
    }
}

/// RFC 9110's idempotent methods.
pub(crate) fn is_idempotent_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether a request is idempotent, by the rule above.
pub(crate) fn is_idempotent(method: &Method, headers: &HeaderMap, marked: Option<bool>) -> bool {
    marked
        .unwrap_or_else(|| is_idempotent_method(method) || headers.contains_key("idempotency-key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        use Delivery::*;
        for d in [NotSent, Unknown, Rejected, Processed] {
            assert!(may_resend(true, d), "idempotent, {d:?}");
        }
        assert!(may_resend(false, NotSent));
        assert!(may_resend(false, Rejected));
        assert!(!may_resend(false, Unknown));
        assert!(!may_resend(false, Processed));
    }

    #[test]
    fn idempotency() {
        let none = HeaderMap::new();
        let mut key = HeaderMap::new();
        key.insert("idempotency-key", "k1".parse().unwrap());
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(is_idempotent(&m.parse().unwrap(), &none, None), "{m}");
        }
        assert!(!is_idempotent(&Method::POST, &none, None));
        assert!(!is_idempotent(&Method::PATCH, &none, None));
        assert!(is_idempotent(&Method::POST, &key, None));
        assert!(is_idempotent(&Method::POST, &none, Some(true)));
        assert!(!is_idempotent(&Method::GET, &none, Some(false)));
    }
}

//! The re-send rule (nginx's `proxy_next_upstream`): what is known of a
//! failed attempt's delivery, which requests are idempotent, and when a
//! request may be sent again.

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

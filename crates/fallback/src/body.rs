//! Request bodies that can be sent again, byte for byte, to every link.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::transport::RequestBody;

/// A request body that can be re-sent, identical, on every attempt.
///
/// Bytes and JSON are kept in memory once and shared (never copied) between
/// attempts.
///
/// ```
/// use fallback::Body;
/// let raw = Body::from("plain text");
/// let json = Body::json(&serde_json::json!({"Name": "Random", "Amount": 100}));
/// assert_eq!(raw.len(), Some(10));
/// assert!(json.is_json());
/// ```
#[derive(Clone, Default)]
pub struct Body {
    inner: Inner,
}

#[derive(Clone, Default)]
enum Inner {
    #[default]
    Empty,
    Bytes(Bytes),
    Json(Result<Bytes, Arc<serde_json::Error>>),
}

impl Body {
    /// No body.
    pub fn empty() -> Body {
        Body::default()
    }

    /// Raw bytes.
    pub fn bytes(bytes: impl Into<Bytes>) -> Body {
        Body {
            inner: Inner::Bytes(bytes.into()),
        }
    }

    /// Any value serialized as JSON. The link sends it with
    /// `Content-Type: application/json` unless it sets its own. A value that
    /// cannot be serialized is reported when the chain is built.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Body {
        Body {
            inner: Inner::Json(serde_json::to_vec(value).map(Bytes::from).map_err(Arc::new)),
        }
    }

    /// Whether this is a JSON body.
    pub fn is_json(&self) -> bool {
        matches!(self.inner, Inner::Json(_))
    }

    /// The body's length, when known.
    pub fn len(&self) -> Option<u64> {
        match &self.inner {
            Inner::Empty => Some(0),
            Inner::Bytes(b) | Inner::Json(Ok(b)) => Some(b.len() as u64),
            Inner::Json(Err(_)) => None,
        }
    }

    /// Whether the body is known to be empty.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// The error that a JSON value's serialization raised, if any.
    pub(crate) fn json_error(&self) -> Option<&Arc<serde_json::Error>> {
        match &self.inner {
            Inner::Json(Err(e)) => Some(e),
            _ => None,
        }
    }

    /// A fresh body for one attempt.
    pub(crate) fn to_request_body(&self) -> RequestBody {
        match &self.inner {
            Inner::Bytes(b) | Inner::Json(Ok(b)) => RequestBody::full(b.clone()),
            Inner::Empty | Inner::Json(Err(_)) => RequestBody::empty(),
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Empty => f.write_str("Body(empty)"),
            Inner::Bytes(b) => write!(f, "Body({} bytes)", b.len()),
            Inner::Json(Ok(b)) => write!(f, "Body(json, {} bytes)", b.len()),
            Inner::Json(Err(e)) => write!(f, "Body(json error: {e})"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body::bytes(b)
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Body {
        Body::bytes(b)
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::bytes(s)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Body {
        Body::bytes(s)
    }
}

impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Body {
        Body::bytes(s)
    }
}

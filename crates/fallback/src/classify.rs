//! Classification, the one place that says what an answer means: a
//! success, a failure that falls back, or a final answer; and the one rule
//! for a status that says the server failed (5xx, 408, 429).

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};

use crate::grpc::{Code, CodeSet};

/// What an answer means for the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verdict {
    /// The answer is the result.
    Success,
    /// The link failed: try the next one.
    Fallback,
    /// A failure that later links would not fix: return it at once.
    Final,
}

/// An answer as a [`Classifier`] sees it: its status and head, the request's
/// method, and the link that answered. More may be added without a break.
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    status: StatusCode,
    headers: Option<&'a HeaderMap>,
    method: &'a Method,
    link: usize,
    name: &'a str,
    grpc: Option<Code>,
}

static EMPTY: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();

impl<'a> Answer<'a> {
    /// An answer with `status` to a `GET`, with no headers, from link 0:
    /// for trying a classifier out.
    pub fn new(status: StatusCode) -> Answer<'static> {
        Answer {
            status,
            headers: None,
            method: &Method::GET,
            link: 0,
            name: "",
            grpc: None,
        }
    }

    /// This answer, as the head of a trailers-only gRPC answer with `code`
    /// in its `grpc-status`: for trying a classifier out.
    pub fn with_grpc_status(self, code: Code) -> Answer<'a> {
        Answer {
            grpc: Some(code),
            ..self
        }
    }

    pub(crate) fn of(
        status: StatusCode,
        headers: &'a HeaderMap,
        method: &'a Method,
        link: usize,
        name: &'a str,
        grpc: bool,
    ) -> Answer<'a> {
        Answer {
            status,
            headers: Some(headers),
            method,
            link,
            name,
            grpc: if grpc {
                crate::grpc::code_of(headers)
            } else {
                None
            },
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        self.headers
            .unwrap_or_else(|| EMPTY.get_or_init(HeaderMap::new))
    }

    /// The request's method.
    pub fn method(&self) -> &Method {
        self.method
    }

    /// The index of the link that answered, from 0.
    pub fn link(&self) -> usize {
        self.link
    }

    /// The name of the link that answered.
    pub fn link_name(&self) -> &str {
        self.name
    }

    /// For a gRPC request, the `grpc-status` in the answer's head: a
    /// trailers-only answer, which gRPC servers send for a failure before
    /// any message. `None` for other requests, and for answers whose
    /// status comes in trailers.
    pub fn grpc_status(&self) -> Option<Code> {
        self.grpc
    }
}

/// Classification: which statuses are a success, which fall back to the
/// next link, and which are a final answer.
///
/// Classification only says *what* an answer means. Whether a failed request
/// may then be sent again is the re-send rule of [the re-send rule](crate#when-is-a-request-re-sent), and
/// *when* is the business of the chain.
///
/// Transport failures (refused, reset, timed out, truncated) always fall
/// back, subject to the re-send rule.
///
/// Decides the [`Verdict`] for each answer.
///
/// | preset | success | falls back | final |
/// | --- | --- | --- | --- |
/// | [`Classifier::non_2xx`] (default, the original package's rule) | 2xx | every other status | none |
/// | [`Classifier::server_errors`] | 2xx | 5xx, 408, 429 | every other status |
/// | [`Classifier::parse`]`("5xx,429")` | 2xx | the listed codes and classes | every other status |
/// | [`Classifier::custom`] | your predicate decides | | |
///
/// A gRPC request is answered HTTP 200 even when it fails: its status is
/// in `grpc-status`. When the head of a gRPC answer carries one (a
/// trailers-only answer), every preset reads it: `OK` is a success, a code
/// in the gRPC set ([`grpc`](Classifier::grpc), default `UNAVAILABLE`)
/// falls back, any other code is final. A [`custom`](Classifier::custom)
/// predicate sees it as [`Answer::grpc_status`].
///
/// ```
/// use fallback_chain::{Answer, Classifier, Verdict};
/// use http::StatusCode;
///
/// let verdict = |c: &Classifier, s| c.classify(&Answer::new(s));
/// let c = Classifier::server_errors();
/// assert_eq!(verdict(&c, StatusCode::OK), Verdict::Success);
/// assert_eq!(verdict(&c, StatusCode::SERVICE_UNAVAILABLE), Verdict::Fallback);
/// assert_eq!(verdict(&c, StatusCode::NOT_FOUND), Verdict::Final);
///
/// let c = Classifier::parse("5xx, 404").unwrap();
/// assert_eq!(verdict(&c, StatusCode::NOT_FOUND), Verdict::Fallback);
/// assert!(Classifier::parse("6xx").is_err());
/// ```
#[derive(Clone)]
pub struct Classifier {
    inner: Inner,
    grpc: CodeSet,
}

#[derive(Clone)]
enum Inner {
    Non2xx,
    Listed(Arc<[Match]>),
    Custom(Arc<dyn Fn(&Answer<'_>) -> Verdict + Send + Sync>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Match {
    Code(u16),
    Class(u16),
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::non_2xx()
    }
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Non2xx => f.write_str("Classifier(non-2xx")?,
            Inner::Listed(m) => write!(f, "Classifier({}", spec(m))?,
            Inner::Custom(_) => f.write_str("Classifier(custom")?,
        }
        if self.grpc != CodeSet::DEFAULT {
            write!(f, "; grpc {}", self.grpc)?;
        }
        f.write_str(")")
    }
}

/// The spec [`Classifier::parse`] reads: `non-2xx`, `5xx,429`, or
/// `custom` for a function.
impl fmt::Display for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Non2xx => f.write_str("non-2xx"),
            Inner::Listed(m) => f.write_str(&spec(m)),
            Inner::Custom(_) => f.write_str("custom"),
        }
    }
}

fn spec(m: &[Match]) -> String {
    m.iter()
        .map(|m| match m {
            Match::Code(c) => c.to_string(),
            Match::Class(c) => format!("{c}xx"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Classifier {
    /// Every status outside 2xx falls back; nothing is final.
    pub fn non_2xx() -> Classifier {
        Classifier {
            inner: Inner::Non2xx,
            grpc: CodeSet::DEFAULT,
        }
    }

    /// Whether `status` says the server failed rather than the request:
    /// 5xx, 408 (Request Timeout) or 429 (Too Many Requests). The one rule
    /// behind [`server_errors`](Self::server_errors), a retry on the same
    /// link, and a breaker's count of failures.
    ///
    /// ```
    /// use fallback_chain::Classifier;
    /// use http::StatusCode;
    /// assert!(Classifier::is_server_failure(StatusCode::BAD_GATEWAY));
    /// assert!(Classifier::is_server_failure(StatusCode::TOO_MANY_REQUESTS));
    /// assert!(!Classifier::is_server_failure(StatusCode::NOT_FOUND));
    /// ```
    pub fn is_server_failure(status: StatusCode) -> bool {
        status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
    }

    /// 5xx, 408 and 429 fall back ([`is_server_failure`](Self::is_server_failure));
    /// any other non-2xx status is final.
    pub fn server_errors() -> Classifier {
        Classifier {
            inner: Inner::Listed(Arc::from([
                Match::Class(5),
                Match::Code(408),
                Match::Code(429),
            ])),
            grpc: CodeSet::DEFAULT,
        }
    }

    /// Parses `non-2xx`, or a comma-separated list of codes (`429`) and
    /// classes (`5xx`) that fall back; every other non-2xx status is final.
    pub fn parse(spec: &str) -> Result<Classifier, ClassifierParseError> {
        let spec = spec.trim();
        if spec.eq_ignore_ascii_case("non-2xx") {
            return Ok(Classifier::non_2xx());
        }
        let mut list = Vec::new();
        for item in spec.split(',') {
            let item = item.trim();
            let err = || ClassifierParseError {
                item: item.to_owned(),
            };
            let lower = item.to_ascii_lowercase();
            let m = if let Some(class) = lower.strip_suffix("xx") {
                match class.parse::<u16>() {
                    Ok(c) if (1..=5).contains(&c) && class.len() == 1 => Match::Class(c),
                    _ => return Err(err()),
                }
            } else {
                match item.parse::<u16>() {
                    Ok(c) if (100..=599).contains(&c) && item.len() == 3 => Match::Code(c),
                    _ => return Err(err()),
                }
            };
            list.push(m);
        }
        Ok(Classifier {
            inner: Inner::Listed(list.into()),
            grpc: CodeSet::DEFAULT,
        })
    }

    /// Any predicate of your own, over the [`Answer`].
    ///
    /// ```
    /// use fallback_chain::{Answer, Classifier, Verdict};
    /// // 404 means "not here": ask the next link, unless the primary said it.
    /// let c = Classifier::custom(|a: &Answer<'_>| match a.status().as_u16() {
    ///     200..=299 => Verdict::Success,
    ///     404 if a.link() == 0 => Verdict::Final,
    ///     404 | 500..=599 => Verdict::Fallback,
    ///     _ => Verdict::Final,
    /// });
    /// assert_eq!(c.classify(&Answer::new(http::StatusCode::NOT_FOUND)), Verdict::Final);
    /// ```
    pub fn custom(f: impl Fn(&Answer<'_>) -> Verdict + Send + Sync + 'static) -> Classifier {
        Classifier {
            inner: Inner::Custom(Arc::new(f)),
            grpc: CodeSet::DEFAULT,
        }
    }

    /// The gRPC codes that fall back when a trailers-only answer carries
    /// them; any other code but `OK` is final. Default: `UNAVAILABLE`.
    /// Codes above 63 are never in the set. A custom predicate decides
    /// for itself.
    ///
    /// ```
    /// use fallback_chain::grpc::Code;
    /// use fallback_chain::{Answer, Classifier, Verdict};
    /// use http::StatusCode;
    ///
    /// let c = Classifier::default().grpc([Code::UNAVAILABLE, Code::RESOURCE_EXHAUSTED]);
    /// let answer = |code| Answer::new(StatusCode::OK).with_grpc_status(code);
    /// assert_eq!(c.classify(&answer(Code::RESOURCE_EXHAUSTED)), Verdict::Fallback);
    /// assert_eq!(c.classify(&answer(Code::NOT_FOUND)), Verdict::Final);
    /// assert_eq!(c.classify(&answer(Code::OK)), Verdict::Success);
    /// ```
    #[must_use]
    pub fn grpc(self, codes: impl IntoIterator<Item = Code>) -> Classifier {
        Classifier {
            grpc: CodeSet::of(codes),
            ..self
        }
    }

    /// The gRPC codes that fall back, in order.
    pub fn grpc_codes(&self) -> Vec<Code> {
        self.grpc.codes().collect()
    }

    /// Whether a gRPC failure with `code` falls back.
    pub(crate) fn grpc_falls_back(&self, code: Code) -> bool {
        self.grpc.contains(code)
    }

    /// The verdict for an answer.
    pub fn classify(&self, answer: &Answer<'_>) -> Verdict {
        let status = answer.status;
        let code = status.as_u16();
        match &self.inner {
            Inner::Custom(f) => f(answer),
            _ if status.is_success() => match answer.grpc {
                None | Some(Code::OK) => Verdict::Success,
                Some(code) if self.grpc.contains(code) => Verdict::Fallback,
                Some(_) => Verdict::Final,
            },
            Inner::Non2xx => Verdict::Fallback,
            Inner::Listed(list) => {
                let hit = list.iter().any(|m| match *m {
                    Match::Code(c) => c == code,
                    Match::Class(c) => c == code / 100,
                });
                if hit {
                    Verdict::Fallback
                } else {
                    Verdict::Final
                }
            }
        }
    }
}

/// A status list that [`Classifier::parse`] could not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassifierParseError {
    item: String,
}

impl fmt::Display for ClassifierParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid status {:?}: expected `non-2xx`, a code such as 429, or a class such as 5xx",
            self.item
        )
    }
}

impl std::error::Error for ClassifierParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(c: &Classifier, s: u16) -> Verdict {
        c.classify(&Answer::new(StatusCode::from_u16(s).unwrap()))
    }

    #[test]
    fn presets() {
        let c = Classifier::non_2xx();
        assert_eq!(v(&c, 204), Verdict::Success);
        for s in [301, 400, 404, 500, 503] {
            assert_eq!(v(&c, s), Verdict::Fallback);
        }
        let c = Classifier::server_errors();
        for s in [500, 501, 503, 599, 408, 429] {
            assert_eq!(v(&c, s), Verdict::Fallback, "{s}");
        }
        for s in [301, 400, 401, 404, 409] {
            assert_eq!(v(&c, s), Verdict::Final, "{s}");
        }
    }

    #[test]
    fn parse_rejects_junk() {
        for bad in ["", "5x", "600", "99", "abc", "5xx,", "0xx", "55xx", "+200"] {
            assert!(Classifier::parse(bad).is_err(), "{bad:?}");
        }
        let c = Classifier::parse(" 5XX , 429 ").unwrap();
        assert_eq!(v(&c, 429), Verdict::Fallback);
        assert_eq!(v(&c, 502), Verdict::Fallback);
        assert_eq!(v(&c, 404), Verdict::Final);
        assert_eq!(format!("{c:?}"), "Classifier(5xx,429)");
    }
}

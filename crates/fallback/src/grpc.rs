//! gRPC's own failure language: its status codes, the status an answer
//! carries in its head or trailers, the `grpc-timeout` header, and the
//! percent-encoding of `grpc-message`.
//!
//! gRPC reports a failure as HTTP 200 with `grpc-status` in the head (a
//! "trailers-only" answer) or in the trailers, so a chain that looks only
//! at HTTP statuses sees a success. A chain reads a gRPC request's answer
//! in gRPC's terms: a trailers-only answer whose code is in the
//! classifier's gRPC set ([`Classifier::grpc`](crate::Classifier::grpc),
//! `UNAVAILABLE` by default) falls over to the next link as a 503 does,
//! and counts against the link's breaker.
//!
//! ```
//! use std::time::Duration;
//! use fallback_chain::grpc::{self, Code};
//!
//! assert_eq!("unavailable".parse::<Code>(), Ok(Code::UNAVAILABLE));
//! assert_eq!("14".parse::<Code>(), Ok(Code::UNAVAILABLE));
//! assert_eq!(grpc::parse_timeout("250m"), Some(Duration::from_millis(250)));
//! assert_eq!(grpc::format_timeout(Duration::from_millis(1500)), "1500000u");
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderMap;

/// A gRPC status code: the 17 codes of the gRPC specification by name,
/// and any other number a server may send.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(u32);

const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl Code {
    /// 0: not an error.
    pub const OK: Code = Code(0);
    /// 1: the caller cancelled the call.
    pub const CANCELLED: Code = Code(1);
    /// 2: an error with no better code.
    pub const UNKNOWN: Code = Code(2);
    /// 3: the request is wrong, whatever the server's state.
    pub const INVALID_ARGUMENT: Code = Code(3);
    /// 4: the deadline passed before the call completed.
    pub const DEADLINE_EXCEEDED: Code = Code(4);
    /// 5: what the request names is not there.
    pub const NOT_FOUND: Code = Code(5);
    /// 6: what the request would create is there already.
    pub const ALREADY_EXISTS: Code = Code(6);
    /// 7: the caller may not do this.
    pub const PERMISSION_DENIED: Code = Code(7);
    /// 8: a quota or a resource ran out.
    pub const RESOURCE_EXHAUSTED: Code = Code(8);
    /// 9: the system is not in a state to do this.
    pub const FAILED_PRECONDITION: Code = Code(9);
    /// 10: aborted, as by a concurrency conflict.
    pub const ABORTED: Code = Code(10);
    /// 11: past the valid range.
    pub const OUT_OF_RANGE: Code = Code(11);
    /// 12: the server does not implement this method.
    pub const UNIMPLEMENTED: Code = Code(12);
    /// 13: the server broke an invariant of its own.
    pub const INTERNAL: Code = Code(13);
    /// 14: the service is unavailable for now; the call may be tried
    /// again, here or elsewhere.
    pub const UNAVAILABLE: Code = Code(14);
    /// 15: data was lost or corrupted.
    pub const DATA_LOSS: Code = Code(15);
    /// 16: the caller has no valid credentials.
    pub const UNAUTHENTICATED: Code = Code(16);

    /// The code with this number.
    pub const fn new(code: u32) -> Code {
        Code(code)
    }

    /// The code's number, as `grpc-status` carries it.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// The code's name in the specification (`UNAVAILABLE`), for the 17
    /// codes it names.
    pub fn name(self) -> Option<&'static str> {
        NAMES.get(self.0 as usize).copied()
    }
}

impl fmt::Display for Code {
    /// The name, or the number for a code the specification does not name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.pad(n),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({self})")
    }
}

/// A gRPC code that [`Code::from_str`] could not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeParseError {
    item: String,
}

impl fmt::Display for CodeParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid gRPC code {:?}: expected a name such as UNAVAILABLE or a number from 0 to 16",
            self.item
        )
    }
}

impl std::error::Error for CodeParseError {}

impl FromStr for Code {
    type Err = CodeParseError;

    /// A name of the specification in any case (`UNAVAILABLE`,
    /// `resource_exhausted`), or a number from 0 to 16.
    fn from_str(s: &str) -> Result<Code, CodeParseError> {
        let item = s.trim();
        if let Some(i) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(item)) {
            return Ok(Code(i as u32));
        }
        match item.parse::<u32>() {
            Ok(n) if (n as usize) < NAMES.len() && !item.starts_with('+') => Ok(Code(n)),
            _ => Err(CodeParseError {
                item: item.to_owned(),
            }),
        }
    }
}

/// A gRPC status: its code and its message (percent-decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
}

impl Status {
    /// A status with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    /// The status of `headers`, a trailers-only answer's head or an
    /// answer's trailers: `None` without a `grpc-status`, or with one that
    /// is not a number.
    pub fn from_headers(headers: &HeaderMap) -> Option<Status> {
        let code = code_of(headers)?;
        let message = headers
            .get("grpc-message")
            .map(|m| decode_message(m.as_bytes()))
            .unwrap_or_default();
        Some(Status { code, message })
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message, empty when the server sent none.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gRPC {}", self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// The code of `headers`' `grpc-status`, without reading the message.
pub(crate) fn code_of(headers: &HeaderMap) -> Option<Code> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().map(Code)
}

/// Whether a request (or an answer) with these headers is gRPC: its
/// `content-type` is `application/grpc` or `application/grpc+…` (as
/// `application/grpc+proto`), parameters aside.
///
/// ```
/// use http::{header::CONTENT_TYPE, HeaderMap, HeaderValue};
/// let mut h = HeaderMap::new();
/// h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc+proto"));
/// assert!(fallback_chain::grpc::is_grpc(&h));
/// h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc-web"));
/// assert!(!fallback_chain::grpc::is_grpc(&h));
/// ```
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(http::header::CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.as_bytes();
    const GRPC: &[u8] = b"application/grpc";
    ct.len() >= GRPC.len()
        && ct[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(ct.get(GRPC.len()), None | Some(b'+' | b';' | b' '))
}

/// Reads a `grpc-timeout` value: 1 to 8 digits and a unit, `H` (hours),
/// `M` (minutes), `S`, `m` (milliseconds), `u` (microseconds) or `n`
/// (nanoseconds). `None` for anything else.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Writes a `grpc-timeout` value for `d`: the finest unit that fits in 8
/// digits, rounded up so the server never stops before the caller does.
pub fn format_timeout(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let n = nanos.div_ceil(per);
        if n <= MAX {
            return format!("{n}{unit}");
        }
    }
    format!("{MAX}H")
}

/// Percent-encodes a `grpc-message` as the specification asks: every byte
/// outside printable ASCII, and `%`, as `%XX`.
pub fn encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded `grpc-message`; a malformed escape is kept as
/// it is and bytes that are not UTF-8 become U+FFFD, as the specification
/// asks of a receiver.
pub fn decode_message(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (raw[i], raw.get(i + 1).copied(), raw.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path of the standard health check, `grpc.health.v1.Health/Check`.
pub(crate) const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// A `HealthCheckRequest` for `service` (empty: the server as a whole),
/// framed as one gRPC message.
pub(crate) fn health_request(service: &str) -> bytes::Bytes {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut out = Vec::with_capacity(5 + msg.len());
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    out.into()
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// Whether a health check's answer body (one framed, uncompressed
/// `HealthCheckResponse`) says `SERVING` (1). Anything else, malformed
/// included, is not.
pub(crate) fn health_serving(body: &[u8]) -> bool {
    let Some((&0, rest)) = body.split_first() else {
        return false;
    };
    let Some((len, mut msg)) = rest.split_first_chunk::<4>() else {
        return false;
    };
    if msg.len() != u32::from_be_bytes(*len) as usize {
        return false;
    }
    let mut status = 0; // proto3: an absent field is its zero, UNKNOWN
    while !msg.is_empty() {
        let Some(key) = varint(&mut msg) else {
            return false;
        };
        let skip = match key & 7 {
            0 => {
                let Some(v) = varint(&mut msg) else {
                    return false;
                };
                if key >> 3 == 1 {
                    status = v;
                }
                0
            }
            1 => 8,
            2 => match varint(&mut msg).and_then(|l| usize::try_from(l).ok()) {
                Some(l) => l,
                None => return false,
            },
            5 => 4,
            _ => return false,
        };
        let Some(rest) = msg.get(skip..) else {
            return false;
        };
        msg = rest;
    }
    status == 1
}

/// A set of codes, as a bit set: codes above 63 are never in it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CodeSet(u64);

impl CodeSet {
    /// The default fall-back set: `UNAVAILABLE`.
    pub(crate) const DEFAULT: CodeSet = CodeSet(1 << 14);

    pub(crate) fn of(codes: impl IntoIterator<Item = Code>) -> CodeSet {
        CodeSet(
            codes
                .into_iter()
                .filter(|c| c.0 < 64)
                .fold(0, |set, c| set | 1 << c.0),
        )
    }

    pub(crate) fn contains(self, code: Code) -> bool {
        code.0 < 64 && self.0 & (1 << code.0) != 0
    }

    pub(crate) fn codes(self) -> impl Iterator<Item = Code> {
        (0..64).filter(move |i| self.0 & (1 << i) != 0).map(Code)
    }
}

impl fmt::Display for CodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for c in self.codes() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn codes_by_name_and_number() {
        assert_eq!("UNAVAILABLE".parse::<Code>(), Ok(Code::UNAVAILABLE));
        assert_eq!(
            " resource_exhausted ".parse::<Code>(),
            Ok(Code::RESOURCE_EXHAUSTED)
        );
        assert_eq!("0".parse::<Code>(), Ok(Code::OK));
        assert_eq!("16".parse::<Code>(), Ok(Code::UNAUTHENTICATED));
        for bad in ["", "17", "-1", "+4", "UNAVAILABLE,", "unavail", "4.0"] {
            let err = bad.parse::<Code>().unwrap_err().to_string();
            assert!(err.contains(&format!("{:?}", bad.trim())), "{err}");
        }
        assert_eq!(Code::new(99).to_string(), "99");
        assert_eq!(Code::UNAVAILABLE.to_string(), "UNAVAILABLE");
        for (i, n) in NAMES.iter().enumerate() {
            assert_eq!(Code::new(i as u32).name(), Some(*n));
        }
    }

    #[test]
    fn status_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(Status::from_headers(&h), None);
        h.insert("grpc-status", "14".parse().unwrap());
        h.insert(
            "grpc-message",
            "down%20for%20%E2%9C%93 %zz".parse().unwrap(),
        );
        let s = Status::from_headers(&h).unwrap();
        assert_eq!(s.code(), Code::UNAVAILABLE);
        assert_eq!(s.message(), "down for ✓ %zz");
        assert_eq!(s.to_string(), "gRPC UNAVAILABLE: down for ✓ %zz");
        for bad in ["", "x", "-1", "1 4", "99999999999"] {
            h.insert("grpc-status", bad.parse().unwrap());
            assert_eq!(code_of(&h), None, "{bad:?}");
        }
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_grpc(&h));
        for (ct, yes) in [
            ("application/grpc", true),
            ("Application/GRPC", true),
            ("application/grpc+proto", true),
            ("application/grpc; charset=x", true),
            ("application/grpc-web", false),
            ("application/grpcx", false),
            ("application/json", false),
            ("application/grp", false),
        ] {
            h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            assert_eq!(is_grpc(&h), yes, "{ct}");
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [
            "",
            "S",
            "1",
            "123456789S",
            "1s",
            "-1S",
            "1.5S",
            "1 S",
            "１S",
            "1SS",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(format_timeout(Duration::ZERO), "0n");
        assert_eq!(format_timeout(Duration::from_nanos(1500)), "1500n");
        assert_eq!(format_timeout(Duration::from_secs(1)), "1000000u");
        assert_eq!(format_timeout(Duration::from_secs(100_000)), "100000S");
        assert_eq!(format_timeout(Duration::MAX), "99999999H");
    }

    #[test]
    fn messages() {
        assert_eq!(
            encode_message("all 3 down: 50% ✓"),
            "all 3 down: 50%25 %E2%9C%93"
        );
        assert_eq!(decode_message(b"%41%4a%zz%"), "AJ%zz%");
    }

    #[test]
    fn health_messages() {
        assert_eq!(&health_request("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(
            &health_request("a.B")[..],
            [0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
        assert!(health_serving(&[0, 0, 0, 0, 2, 0x08, 1]));
        assert!(!health_serving(&[0, 0, 0, 0, 2, 0x08, 2]), "NOT_SERVING");
        assert!(!health_serving(&[0, 0, 0, 0, 0]), "UNKNOWN, by default");
        // An unknown field before the status is skipped.
        assert!(health_serving(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]));
        for bad in [
            &[][..],
            &[1, 0, 0, 0, 2, 8, 1],
            &[0, 0, 0, 0, 3, 8, 1],
            &[0, 0, 0, 0, 2, 0x12, 9],
            &[0, 0, 0, 0, 1, 0x80],
        ] {
            assert!(!health_serving(bad), "{bad:?}");
        }
    }

    #[test]
    fn code_sets() {
        let s = CodeSet::of([Code::UNAVAILABLE, Code::new(8), Code::new(70)]);
        assert!(s.contains(Code::UNAVAILABLE));
        assert!(s.contains(Code::RESOURCE_EXHAUSTED));
        assert!(!s.contains(Code::new(70)));
        assert!(!s.contains(Code::OK));
        assert_eq!(s.to_string(), "RESOURCE_EXHAUSTED,UNAVAILABLE");
        assert!(CodeSet::DEFAULT.contains(Code::UNAVAILABLE));
    }

    proptest! {
        #[test]
        fn a_formatted_timeout_reads_back_no_shorter(nanos in 0u64..u64::MAX) {
            let d = Duration::from_nanos(nanos);
            let back = parse_timeout(&format_timeout(d)).unwrap();
            prop_assert!(back >= d);
            // Rounded up by less than the unit chosen, which is at most
            // 1,000 times the finer unit the value did not fit in.
            let slack = d.as_nanos() * 1000 / 99_999_999 + 1;
            prop_assert!((back - d).as_nanos() <= slack);
        }

        #[test]
        fn a_message_survives_encoding(m in ".*") {
            let enc = encode_message(&m);
            prop_assert!(enc.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            prop_assert_eq!(decode_message(enc.as_bytes()), m);
        }

        #[test]
        fn a_health_answer_never_panics(b in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = health_serving(&b);
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,12}") {
            let _ = parse_timeout(&s);
            let _ = s.parse::<Code>();
            let _ = decode_message(s.as_bytes());
        }
    }
}

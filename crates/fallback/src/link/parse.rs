//! What a caller writes for a link, checked: URLs (ports as written,
//! userinfo into Basic credentials), methods, headers and their sizes.

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};

use crate::conv::Given;
use crate::error::LinkProblem;
use crate::redact;

/// Refuses header values and header sets beyond [`crate::limits`], naming
/// the header (never its value).
pub(crate) fn check_header_sizes(headers: &HeaderMap) -> Result<(), LinkProblem> {
    use crate::limits::{MAX_HEADERS_BYTES, MAX_HEADER_VALUE_BYTES};
    let mut total = 0;
    for (name, value) in headers {
        if value.len() > MAX_HEADER_VALUE_BYTES {
            return Err(LinkProblem::HeadersTooLarge {
                what: format!("the value of header {:?}", name.as_str()),
                size: value.len(),
                limit: MAX_HEADER_VALUE_BYTES,
            });
        }
        total += name.as_str().len() + value.len() + 4;
    }
    if total > MAX_HEADERS_BYTES {
        return Err(LinkProblem::HeadersTooLarge {
            what: "the link's headers together".into(),
            size: total,
            limit: MAX_HEADERS_BYTES,
        });
    }
    Ok(())
}

pub(crate) fn parse_url(url: &str) -> Result<Uri, LinkProblem> {
    let problem = |reason: &str| LinkProblem::Url {
        url: redact::raw_url(url),
        reason: reason.to_owned(),
    };
    let url_t = url.trim();
    // Name a foreign scheme even when the rest would not parse (file:///x).
    if let Some((scheme, _)) = url_t.split_once(':') {
        let looks_like_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if looks_like_scheme
            && !scheme.eq_ignore_ascii_case("http")
            && !scheme.eq_ignore_ascii_case("https")
        {
            return Err(LinkProblem::Scheme {
                url: redact::raw_url(url),
            });
        }
    }
    let uri: Uri = url_t
        .parse()
        .map_err(|e: http::uri::InvalidUri| problem(&e.to_string()))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        Some(_) => {
            return Err(LinkProblem::Scheme {
                url: redact::raw_url(url),
            })
        }
        None => return Err(problem("missing scheme: expected http:// or https://")),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => {}
        _ => return Err(problem("missing host")),
    }
    // `Uri` keeps a port that does not fit in 16 bits, and clients then
    // quietly use the scheme's default port instead.
    if let Some(port) = uri.authority().and_then(|a| raw_port(a.as_str())) {
        match port.parse::<u32>() {
            Ok(1..=65535) => {}
            _ => {
                return Err(problem(&format!(
                    "port {port} is out of range: ports are 1 to 65535"
                )))
            }
        }
    }
    Ok(uri)
}

/// The port as written in an authority (`user@host:port`, `[::1]:port`),
/// if there is a non-empty one.
pub(crate) fn raw_port(authority: &str) -> Option<&str> {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = match host_port.rfind(']') {
        Some(i) => &host_port[i + 1..],
        None => host_port,
    };
    after_host
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

pub(crate) fn parse_method(method: &str) -> Result<Method, LinkProblem> {
    let upper = method.to_ascii_uppercase();
    let m = if [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ]
    .contains(&upper.as_str())
    {
        upper.as_str()
    } else {
        method
    };
    match Method::from_bytes(m.as_bytes()) {
        Ok(m) if m != Method::CONNECT => Ok(m),
        _ => Err(LinkProblem::Method {
            method: method.to_owned(),
        }),
    }
}

/// A header as given, checked: typed parts as they are, text parsed.
pub(crate) fn checked_header(
    name: &Given<HeaderName>,
    value: &Given<HeaderValue>,
) -> Result<(HeaderName, HeaderValue), LinkProblem> {
    match (name, value) {
        (Given::Typed(n), Given::Typed(v)) => Ok((n.clone(), v.clone())),
        (Given::Typed(n), Given::Text(v)) => parse_header(n.as_str(), v),
        (Given::Text(n), Given::Typed(v)) => Ok((parse_header(n, "")?.0, v.clone())),
        (Given::Text(n), Given::Text(v)) => parse_header(n, v),
    }
}

pub(crate) fn parse_header(
    name: &str,
    value: &str,
) -> Result<(HeaderName, HeaderValue), LinkProblem> {
    let hname =
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| LinkProblem::HeaderName {
            name: name.to_owned(),
        })?;
    let reason = if value.contains(['\r', '\n']) {
        Some("contains CR or LF")
    } else if value.bytes().any(|b| b == 0) {
        Some("contains a NUL byte")
    } else {
        None
    };
    let hvalue = match reason {
        Some(r) => Err(r),
        None => HeaderValue::from_str(value.trim()).map_err(|_| "contains a control character"),
    }
    .map_err(|reason| LinkProblem::HeaderValue {
        name: name.to_owned(),
        reason,
    })?;
    Ok((hname, hvalue))
}

/// Removes `user:password@` from the URI, returning it as a Basic
/// `Authorization` value (marked sensitive).
pub(crate) fn take_userinfo(uri: Uri) -> (Uri, Option<HeaderValue>) {
    let Some(auth) = uri.authority() else {
        return (uri, None);
    };
    let Some((userinfo, host)) = auth.as_str().rsplit_once('@') else {
        return (uri, None);
    };
    let decoded = percent_decode(userinfo);
    let mut value = HeaderValue::from_str(&format!("Basic {}", base64(&decoded))).ok();
    if let Some(v) = &mut value {
        v.set_sensitive(true);
    }
    let mut parts = uri.clone().into_parts();
    parts.authority = host.parse().ok();
    match Uri::from_parts(parts) {
        Ok(clean) => (clean, value),
        Err(_) => (uri, None),
    }
}

pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

pub(crate) fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (c as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `base`'s scheme and authority, `base`'s path followed by `req`'s path,
/// and `req`'s query (or else `base`'s).
pub(crate) fn join_uri(base: &Uri, req: &Uri) -> Uri {
    let prefix = base.path().trim_end_matches('/');
    let path = match req.path() {
        "" | "/" if !prefix.is_empty() => prefix.to_owned(),
        p => format!("{prefix}{p}"),
    };
    let pq = match req.query().or(base.query()) {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = base.clone().into_parts();
    parts.path_and_query = pq.parse().ok().or(parts.path_and_query);
    Uri::from_parts(parts).unwrap_or_else(|_| base.clone())
}

pub(crate) fn default_name(uri: &Uri) -> String {
    let host = uri.host().unwrap_or("");
    match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_becomes_basic_auth() {
        let (uri, auth) = take_userinfo("http://Aladdin:open%20sesame@h:8/x".parse().unwrap());
        assert_eq!(uri.to_string(), "http://h:8/x");
        assert_eq!(auth.unwrap(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        let (uri, auth) = take_userinfo("http://h/x".parse().unwrap());
        assert_eq!((uri.to_string(), auth), ("http://h/x".to_owned(), None));
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn ports_as_written() {
        assert_eq!(raw_port("h:8080"), Some("8080"));
        assert_eq!(raw_port("u:p@h:99999"), Some("99999"));
        assert_eq!(raw_port("[::1]:65536"), Some("65536"));
        assert_eq!(raw_port("[::1]"), None);
        assert_eq!(raw_port("u:p@h"), None);
        assert_eq!(raw_port("h:"), None);
        for url in [
            "http://h:99999/",
            "http://h:65536/",
            "http://h:0/",
            "http://[::1]:70000/",
        ] {
            let e = parse_url(url).unwrap_err().to_string();
            assert!(e.contains("out of range"), "{url}: {e}");
        }
        for url in [
            "http://h:1/",
            "http://h:65535/",
            "http://[::1]:8080/",
            "http://h/",
        ] {
            assert!(parse_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn methods() {
        assert_eq!(parse_method("post").unwrap(), Method::POST);
        assert_eq!(parse_method("PURGE").unwrap().as_str(), "PURGE");
        assert!(parse_method("GE T").is_err());
        assert!(parse_method("").is_err());
        assert!(parse_method("CONNECT").is_err());
    }
}

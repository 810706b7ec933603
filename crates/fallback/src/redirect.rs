//! Following a redirect within one link: where it leads (RFC 3986
//! resolution), how the method and headers change on the way, and which
//! redirects cannot be followed. Opt-in ([`ChainBuilder::follow_redirects`](crate::ChainBuilder::follow_redirects)).

use http::header::{HeaderName, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, StatusCode, Uri};

use crate::redact;

/// Where a redirect leads, and how the request changes on the way.
#[derive(Clone, Debug)]
pub(crate) struct Follow {
    pub(crate) uri: Uri,
    /// The method becomes `GET` and the body is dropped.
    pub(crate) to_get: bool,
}

/// The next hop for an answer, if it is a redirect to follow: `Some(Err)`
/// for a redirect that cannot be followed.
pub(crate) fn follow(
    status: StatusCode,
    headers: &HeaderMap,
    current: &Uri,
    method: &Method,
) -> Option<Result<Follow, String>> {
    let code = status.as_u16();
    if !matches!(code, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = headers.get(http::header::LOCATION)?;
    let uri = match location
        .to_str()
        .ok()
        .and_then(|l| resolve(current, l.trim()))
    {
        Some(u) => u,
        None => {
            return Some(Err(format!(
                "{code} redirect to an unusable Location {:?}",
                redact::raw_url(&String::from_utf8_lossy(location.as_bytes()))
            )))
        }
    };
    let to_get = *method != Method::HEAD
        && (code == 303 || (matches!(code, 301 | 302) && *method == Method::POST));
    Some(Ok(Follow { uri, to_get }))
}

/// `location` resolved against `base` (RFC 3986, section 5.2, for the
/// forms servers send); `None` unless it is an `http(s)` URL with a host.
pub(crate) fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let absolute = if location.contains("://") {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if let Some(query) = location.strip_prefix('?') {
        format!("{scheme}://{authority}{}?{query}", base.path())
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{location}")
    };
    // Drop a fragment; it never goes on the wire.
    let absolute = absolute.split('#').next().unwrap_or_default();
    let uri: Uri = absolute.parse().ok()?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        _ => return None,
    }
    uri.host().filter(|h| !h.is_empty())?;
    Some(uri)
}

fn origin(u: &Uri) -> (Option<&str>, Option<&str>, Option<u16>) {
    let port = u.port_u16().or(match u.scheme_str() {
        Some("https") => Some(443),
        _ => Some(80),
    });
    (u.scheme_str(), u.host(), port)
}

/// Whether two URLs share scheme, host and port.
pub(crate) fn same_origin(a: &Uri, b: &Uri) -> bool {
    let (sa, ha, pa) = origin(a);
    let (sb, hb, pb) = origin(b);
    sa.map(str::to_ascii_lowercase) == sb.map(str::to_ascii_lowercase)
        && ha.map(str::to_ascii_lowercase) == hb.map(str::to_ascii_lowercase)
        && pa == pb
}

/// The headers of a hop's request: without the body's headers when it
/// became a `GET`, and without credentials when it left the link's origin.
pub(crate) fn headers(
    headers: &mut HeaderMap,
    to_get: bool,
    cross_origin: bool,
    marked: &[HeaderName],
) {
    if to_get {
        for h in [CONTENT_TYPE, CONTENT_LENGTH, CONTENT_ENCODING] {
            headers.remove(h);
        }
        headers.remove(http::header::TRANSFER_ENCODING);
    }
    if cross_origin {
        let secret: Vec<HeaderName> = headers
            .keys()
            .filter(|n| redact::is_secret(n.as_str(), marked))
            .cloned()
            .collect();
        for n in secret {
            headers.remove(n);
        }
    }
}

/// The `Location` of a hop as shown in reports: no secrets.
pub(crate) fn shown(uri: &Uri) -> String {
    redact::uri(uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    fn base() -> Uri {
        "http://a.example:8080/api/v1/orders?x=1".parse().unwrap()
    }

    #[test]
    fn resolves_the_forms_servers_send() {
        let r = |l| resolve(&base(), l).map(|u| u.to_string());
        assert_eq!(
            r("https://b.example/x").as_deref(),
            Some("https://b.example/x")
        );
        assert_eq!(r("//c.example/y").as_deref(), Some("http://c.example/y"));
        assert_eq!(
            r("/root?q=2").as_deref(),
            Some("http://a.example:8080/root?q=2")
        );
        assert_eq!(
            r("next").as_deref(),
            Some("http://a.example:8080/api/v1/next")
        );
        assert_eq!(
            r("?page=2").as_deref(),
            Some("http://a.example:8080/api/v1/orders?page=2")
        );
        assert_eq!(r("/x#frag").as_deref(), Some("http://a.example:8080/x"));
        assert_eq!(r("ftp://f.example/"), None);
        assert_eq!(r("http://"), None);
    }

    #[test]
    fn methods_change_as_rfc_9110_and_browsers_say() {
        let mut h = HeaderMap::new();
        h.insert(http::header::LOCATION, hv("/next"));
        let f = |code: u16, m: Method| {
            follow(StatusCode::from_u16(code).unwrap(), &h, &base(), &m)
                .unwrap()
                .unwrap()
                .to_get
        };
        assert!(f(303, Method::POST));
        assert!(f(303, Method::PUT));
        assert!(!f(303, Method::HEAD));
        assert!(f(301, Method::POST));
        assert!(f(302, Method::POST));
        assert!(!f(301, Method::PUT));
        assert!(!f(307, Method::POST));
        assert!(!f(308, Method::POST));
        assert!(follow(StatusCode::NOT_MODIFIED, &h, &base(), &Method::GET).is_none());
        assert!(follow(StatusCode::MULTIPLE_CHOICES, &h, &base(), &Method::GET).is_none());
        let mut bad = HeaderMap::new();
        bad.insert(http::header::LOCATION, hv("gopher://x/"));
        assert!(follow(StatusCode::FOUND, &bad, &base(), &Method::GET)
            .unwrap()
            .is_err());
    }

    #[test]
    fn origins() {
        let a: Uri = "http://h/x".parse().unwrap();
        assert!(same_origin(&a, &"http://H:80/y".parse().unwrap()));
        assert!(!same_origin(&a, &"https://h/x".parse().unwrap()));
        assert!(!same_origin(&a, &"http://h:81/x".parse().unwrap()));
        assert!(!same_origin(&a, &"http://g/x".parse().unwrap()));
    }

    #[test]
    fn credentials_stay_behind_across_origins() {
        let mut h = HeaderMap::new();
        h.insert("authorization", hv("Bearer t"));
        h.insert("cookie", hv("c"));
        h.insert("x-api-key", hv("k"));
        h.insert("x-tenant", hv("t"));
        h.insert("accept", hv("*/*"));
        h.insert("content-type", hv("application/json"));
        let marked = [HeaderName::from_static("x-tenant")];
        let mut same = h.clone();
        headers(&mut same, false, false, &marked);
        assert_eq!(same.len(), 6);
        headers(&mut h, true, true, &marked);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }
}

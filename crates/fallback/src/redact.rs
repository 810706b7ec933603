//! Secrets never print: which header values and query parameters are
//! hidden, and where.
//!
//! Wherever this crate shows a header value or a URL (`Debug` of its types,
//! reports, errors, tracing, metrics, [`Chain::links`]), a secret is
//! replaced by `<redacted>` (headers) or `***` (query values, userinfo).
//! The requests themselves are sent unchanged.
//!
//! **Headers.** A header is secret when its name, in any case, is
//! `Authorization`, `Proxy-Authorization`, `Cookie` or `Set-Cookie`, or
//! contains one of `key`, `token`, `secret`, `password`, `passwd`, `auth`,
//! `session`, `signature` or `credential` (so `X-Api-Key`,
//! `X-Auth-Token`, `X-Session-Id`, and also `Idempotency-Key`). Any other
//! header can be marked secret with [`ChainBuilder::secret_header`] or
//! [`Link::secret_header`] (and `secret_headers` in the command line tool's
//! config file). Secret request headers are also marked sensitive
//! ([`HeaderValue::set_sensitive`]), which keeps HTTP/2 from indexing them.
//!
//! **URLs.** `user:password@` is dropped (and sent as a Basic
//! `Authorization` header instead). A query parameter's value is hidden
//! when its name, in any case, is `code` (OAuth's authorization code) or
//! contains one of `token`, `key`, `secret`, `password`, `passwd`, `pwd`,
//! `auth`, `sig`, `credential`, `session`, `jwt` or `bearer` (so
//! `access_token`, `api_key`, `X-Amz-Signature`).
//!
//! ```
//! use fallback_chain::redact::{is_secret_header, is_secret_param};
//!
//! assert!(is_secret_header("X-Api-Key"));
//! assert!(is_secret_header("set-cookie"));
//! assert!(!is_secret_header("Content-Type"));
//! assert!(is_secret_param("access_token"));
//! assert!(is_secret_param("code"));
//! assert!(!is_secret_param("zipcode"));
//! ```
//!
//! [`Chain::links`]: crate::Chain::links
//! [`ChainBuilder::secret_header`]: crate::ChainBuilder::secret_header
//! [`Link::secret_header`]: crate::Link::secret_header
//! [`HeaderValue::set_sensitive`]: http::HeaderValue::set_sensitive

use std::fmt;

use http::{HeaderMap, HeaderName, Uri};

const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];
/// The stated rule; `is_secret_header` spells it out letter by letter and
/// is tested against it.
#[cfg(test)]
const SECRET_HEADER_WORDS: [&str; 9] = [
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "auth",
    "session",
    "signature",
    "credential",
];
const SECRET_PARAMS: [&str; 1] = ["code"];
const SECRET_PARAM_WORDS: [&str; 12] = [
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "sig",
    "credential",
    "session",
    "jwt",
    "bearer",
];

/// What a redacted header value is shown as.
pub(crate) const REDACTED: &str = "<redacted>";

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Whether a header of this name carries a secret, by the built-in rule.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.trim();
    if SECRET_HEADERS.iter().any(|s| name.eq_ignore_ascii_case(s)) {
        return true;
    }
    // Asked of every header of every request and answer: one pass, and a
    // word compared only where its first letter is.
    let b = name.as_bytes();
    (0..b.len()).any(|i| {
        let at = |w: &str| {
            b.len() - i >= w.len() && b[i..i + w.len()].eq_ignore_ascii_case(w.as_bytes())
        };
        match b[i].to_ascii_lowercase() {
            b'k' => at("key"),
            b't' => at("token"),
            b's' => at("secret") || at("session") || at("signature"),
            b'p' => at("passwd") || at("password"),
            b'a' => at("auth"),
            b'c' => at("credential"),
            _ => false,
        }
    })
}

/// Whether a query parameter of this name carries a secret.
pub fn is_secret_param(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|s| name.eq_ignore_ascii_case(s))
        || SECRET_PARAM_WORDS
            .iter()
            .any(|w| contains_ignore_case(name, w))
}

/// `url` as it may be shown: without `user:password@` or the values of
/// secret query parameters.
///
/// ```
/// assert_eq!(
///     fallback_chain::redact::url("https://u:pw@h/cb?code=abc&page=2"),
///     "https://***@h/cb?code=***&page=2"
/// );
/// ```
pub fn url(url: &str) -> String {
    raw_url(url)
}

/// Whether `name` is secret by the built-in rule or is one of `marked`.
pub(crate) fn is_secret(name: &str, marked: &[HeaderName]) -> bool {
    is_secret_header(name)
        || marked
            .iter()
            .any(|m| m.as_str().eq_ignore_ascii_case(name.trim()))
}

/// Marks the values of secret headers sensitive.
pub(crate) fn mark(headers: &mut HeaderMap, marked: &[HeaderName]) {
    for (name, value) in headers.iter_mut() {
        if is_secret(name.as_str(), marked) {
            value.set_sensitive(true);
        }
    }
}

/// `value`, or [`REDACTED`] when the header is secret.
pub(crate) fn header_value<'a>(name: &str, value: &'a str, marked: &[HeaderName]) -> &'a str {
    if is_secret(name, marked) {
        REDACTED
    } else {
        value
    }
}

/// A header map for `Debug`: secret values (by name, or marked sensitive)
/// hidden.
pub(crate) struct Headers<'a>(pub(crate) &'a HeaderMap);

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(n, v)| {
                let shown: &dyn fmt::Debug = if v.is_sensitive() || is_secret_header(n.as_str()) {
                    &REDACTED
                } else {
                    v
                };
                (n, shown)
            }))
            .finish()
    }
}

/// The URL without userinfo or secret query values, for reports and errors.
pub(crate) fn uri(uri: &Uri) -> String {
    let shown = uri.to_string();
    // Nothing to hide without user information or a query.
    if uri.query().is_none() && !uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return shown;
    }
    raw_url(&shown)
}

/// Drops `user:password@` from a URL string, valid or not, and hides the
/// values of query parameters whose names suggest a secret.
pub(crate) fn raw_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let url = match rest[..end].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..start], &url[start + at + 1..]),
        None => url.to_owned(),
    };
    query(url)
}

fn query(url: String) -> String {
    let Some(q) = url.find('?') else { return url };
    let (base, rest) = url.split_at(q + 1);
    let (query, fragment) = match rest.find('#') {
        Some(h) => rest.split_at(h),
        None => (rest, ""),
    };
    let mut changed = false;
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !value.is_empty() && is_secret_param(name) => {
                changed = true;
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    if !changed {
        return url;
    }
    format!("{base}{}{fragment}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule as the module's documentation states it.
    fn reference_rule(name: &str) -> bool {
        let name = name.trim();
        SECRET_HEADERS.iter().any(|s| name.eq_ignore_ascii_case(s))
            || SECRET_HEADER_WORDS
                .iter()
                .any(|w| contains_ignore_case(name, w))
    }

    proptest::proptest! {
        #[test]
        fn the_fast_header_rule_is_the_stated_one(
            name in "[ -~]{0,24}",
            word in proptest::sample::select(&SECRET_HEADER_WORDS[..]),
            at in 0usize..24,
            upper: bool,
        ) {
            proptest::prop_assert_eq!(is_secret_header(&name), reference_rule(&name));
            let mut with = name.clone();
            let word = if upper { word.to_uppercase() } else { word.to_owned() };
            with.insert_str(at.min(with.len()), &word);
            proptest::prop_assert!(is_secret_header(&with), "{with}");
        }
    }

    #[test]
    fn a_uri_without_credentials_or_query_is_shown_as_it_is() {
        for u in ["http://a.test:8/x/y", "https://a.test/", "http://[::1]:9/p"] {
            assert_eq!(uri(&u.parse().unwrap()), raw_url(u), "{u}");
        }
        assert_eq!(
            uri(&"http://u:p@a.test/x".parse().unwrap()),
            "http://***@a.test/x"
        );
        assert_eq!(
            uri(&"http://a.test/x?token=1".parse().unwrap()),
            "http://a.test/x?token=***"
        );
    }

    #[test]
    fn redacts_userinfo() {
        assert_eq!(raw_url("http://u:p@h:1/x?a@b"), "http://***@h:1/x?a@b");
        assert_eq!(raw_url("http://h/x@y"), "http://h/x@y");
        assert_eq!(raw_url("not a url@all"), "***@all");
    }

    #[test]
    fn redacts_secret_query_values() {
        assert_eq!(
            raw_url("http://h/cb?code=abc&state=s&jwt=j&sig=x&access_token=t&page=2#f"),
            "http://h/cb?code=***&state=s&jwt=***&sig=***&access_token=***&page=2#f"
        );
        assert_eq!(raw_url("http://h/?zipcode=1"), "http://h/?zipcode=1");
        assert_eq!(
            raw_url("http://h/?X-Amz-Signature=a"),
            "http://h/?X-Amz-Signature=***"
        );
    }

    #[test]
    fn the_header_rule() {
        for n in [
            "Authorization",
            "proxy-authorization",
            "COOKIE",
            "Set-Cookie",
            "X-Api-Key",
            "x-auth-token",
            "X-Client-Secret",
            "X-Password",
            "x-passwd",
            "X-Session-Id",
            "X-Signature",
            "X-Credential",
            "WWW-Authenticate",
        ] {
            assert!(is_secret_header(n), "{n}");
        }
        for n in [
            "Content-Type",
            "Accept",
            "Host",
            "X-Request-Id",
            "User-Agent",
        ] {
            assert!(!is_secret_header(n), "{n}");
        }
        let marked = [HeaderName::from_static("x-tenant")];
        assert!(is_secret("X-Tenant", &marked));
        assert!(!is_secret("X-Other", &marked));
    }
}

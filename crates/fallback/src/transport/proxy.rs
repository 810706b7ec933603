//! Forward proxies for the default transport.
//!
//! By default the transport honours `HTTP_PROXY`, `HTTPS_PROXY`,
//! `ALL_PROXY` and `NO_PROXY` (and their lower-case forms), as curl and
//! reqwest do; inside a CGI script (`REQUEST_METHOD` set) the variables are
//! ignored, since a request header could have set them. An explicit proxy
//! replaces them. Plain `http://` requests go to the proxy in absolute form
//! with `Proxy-Authorization`; `https://` requests go through a `CONNECT`
//! tunnel, so the proxy never sees their content. Only `http://` proxy URLs
//! are supported. Proxy credentials are secrets: they never appear in
//! reports, errors or `Debug`.

use std::fmt;

use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};

use crate::error::BuildError;
use crate::redact;

/// Where the transport's proxy settings come from.
pub(crate) struct Proxies {
    matcher: Matcher,
}

impl fmt::Debug for Proxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The matcher's own Debug hides credentials.
        f.debug_tuple("Proxies").field(&self.matcher).finish()
    }
}

fn env(names: [&str; 2]) -> Option<(String, &str)> {
    names.iter().find_map(|n| {
        std::env::var(n)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (v, *n))
    })
}

/// Checks a proxy URL; `source` names where it came from.
fn check(url: &str, source: &str) -> Result<(), BuildError> {
    let fail = |reason: &str| BuildError::Setting {
        setting: "proxy",
        reason: format!("{source} {:?}: {reason}", redact::raw_url(url)),
    };
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let uri: Uri = with_scheme
        .trim()
        .parse()
        .map_err(|_| fail("not a valid URL"))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => {}
        _ => return Err(fail("only http:// proxies are supported")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(fail("no host"));
    }
    Ok(())
}

impl Proxies {
    /// The proxy settings: `explicit` for every scheme if given, else the
    /// environment (when `from_env`); `no_proxy` replaces `NO_PROXY`.
    pub(crate) fn new(
        explicit: Option<&str>,
        no_proxy: Option<&str>,
        from_env: bool,
    ) -> Result<Option<Proxies>, BuildError> {
        let cgi = std::env::var_os("REQUEST_METHOD").is_some();
        let mut builder = Matcher::builder();
        let mut any = false;
        if let Some(url) = explicit {
            check(url, "proxy")?;
            builder = builder.all(url.to_owned());
            any = true;
        } else if from_env && !cgi {
            for (names, set) in [
                (["ALL_PROXY", "all_proxy"], 0),
                (["HTTP_PROXY", "http_proxy"], 1),
                (["HTTPS_PROXY", "https_proxy"], 2),
            ] {
                if let Some((url, name)) = env(names) {
                    check(&url, name)?;
                    any = true;
                    builder = match set {
                        0 => builder.all(url),
                        1 => builder.http(url),
                        _ => builder.https(url),
                    };
                }
            }
        }
        if !any {
            return Ok(None);
        }
        let no = match no_proxy {
            Some(list) => Some(list.to_owned()),
            None if from_env => env(["NO_PROXY", "no_proxy"]).map(|(v, _)| v),
            None => None,
        };
        if let Some(no) = no {
            builder = builder.no(no);
        }
        Ok(Some(Proxies {
            matcher: builder.build(),
        }))
    }

    /// The proxy for `dst`, if one applies.
    pub(crate) fn intercept(&self, dst: &Uri) -> Option<Intercept> {
        self.matcher.intercept(dst)
    }
}

/// The `Proxy-Authorization` value of a proxy, marked sensitive.
pub(crate) fn auth(intercept: &Intercept) -> Option<HeaderValue> {
    intercept.basic_auth().map(|v| {
        let mut v = v.clone();
        v.set_sensitive(true);
        v
    })
}

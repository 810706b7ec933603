//! What the proxy serves by, built from a [`Config`]: its upstreams, its
//! routes, and one chain per route. Every upstream has one breaker, shared
//! by every route that uses it and kept across a reload while its URL stays
//! the same.

use std::net::SocketAddr;
use std::time::Duration;

use fallback_chain::transport::HyperTransport;
use fallback_chain::{
    BreakerConfig, Chain, Classifier, Link, Policy, ReplayBuffer, RetryBudget, SharedBreaker,
};
use http::HeaderValue;

use crate::config::Config;
use crate::ConfigError;

/// Where a path goes: the longest matching prefix, by whole segments.
pub(crate) struct Route {
    /// `/orders`, or `/` for everything.
    pub(crate) prefix: String,
    pub(crate) strip_prefix: bool,
    pub(crate) chain: Chain,
    /// The upstream of each of the chain's links, by index into
    /// [`Live::upstreams`].
    pub(crate) upstreams: Vec<usize>,
}

impl Route {
    fn matches(&self, path: &str) -> bool {
        self.prefix == "/"
            || path == self.prefix
            || path
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The path and query sent upstream when the route strips its prefix;
    /// `None` when the request's go as they are.
    pub(crate) fn stripped_target(&self, uri: &http::Uri) -> Option<String> {
        let path = uri.path();
        let up = self.upstream_path(path);
        if up.len() == path.len() {
            return None;
        }
        Some(match uri.query() {
            Some(q) => format!("{up}?{q}"),
            None => up.to_owned(),
        })
    }

    /// The path sent upstream: the request's, less the prefix when the
    /// route strips it.
    pub(crate) fn upstream_path<'a>(&self, path: &'a str) -> &'a str {
        if !self.strip_prefix || self.prefix == "/" {
            return path;
        }
        match path.get(self.prefix.len()..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => "/",
        }
    }
}

/// One server requests may go to.
pub(crate) struct Upstream {
    pub(crate) name: String,
    /// As configured: a reload keeps the breaker of an unchanged URL.
    url: String,
    /// The link's URL: `url` itself, or for a `unix:` upstream
    /// `http://HOST`.
    target: String,
    /// A `unix:` upstream's socket.
    unix: Option<std::path::PathBuf>,
    /// Without secrets, for /upstreams.
    pub(crate) shown: String,
    pub(crate) breaker: SharedBreaker,
}

/// What requests are served by; a reload swaps in a new one, and requests
/// in flight finish under the one they started with.
pub(crate) struct Live {
    /// Longest prefix first.
    pub(crate) routes: Vec<Route>,
    pub(crate) upstreams: Vec<Upstream>,
    /// Where request bodies are kept for a re-send; its disk count is kept
    /// across reloads.
    pub(crate) replay: ReplayBuffer,
    /// The chain-wide idle timeout, which also bounds a client that stops
    /// reading its response.
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) report_headers: bool,
    pub(crate) forwarded: bool,
    /// Add `Via` upstream.
    pub(crate) via: bool,
    pub(crate) access_log: bool,
    /// For the connections of protocol upgrades.
    pub(crate) connect_timeout: Duration,
    /// Shared by every route, and kept across reloads.
    budget: RetryBudget,
}

impl Upstream {
    /// The URL as configured, secrets included: for connecting only.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

impl Live {
    /// The route for `path`, if any.
    pub(crate) fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(path))
    }
}

/// Fixed when the proxy starts: a reload does not move a listener.
pub(crate) struct Listeners {
    pub(crate) listen: crate::config::Listen,
    pub(crate) admin: Option<SocketAddr>,
    pub(crate) drain: Duration,
    pub(crate) header_timeout: Duration,
}

/// The default idle timeout (nginx's `proxy_read_timeout` and
/// `send_timeout`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default bound on reading a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

impl Listeners {
    /// The listeners `cfg` asks for, with their defaults.
    pub(crate) fn of(cfg: &Config) -> Result<Listeners, ConfigError> {
        let listeners = Listeners {
            listen: cfg.listen.clone().unwrap_or_else(|| {
                crate::config::Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 8080)))
            }),
            admin: cfg.admin,
            drain: cfg.drain.unwrap_or(Duration::from_secs(15)),
            header_timeout: cfg.header_timeout.unwrap_or(HEADER_TIMEOUT),
        };
        if listeners.header_timeout.is_zero() {
            return Err(ConfigError::new("header_timeout must be greater than zero"));
        }
        Ok(listeners)
    }
}

impl Live {
    /// Builds everything `cfg` describes; `previous` lends its breakers,
    /// budget and disk count. Sends through `transport` when one is given
    /// instead of building one (which reads the system's trust store).
    pub(crate) fn build(
        cfg: &Config,
        previous: Option<&Live>,
        transport: Option<HyperTransport>,
    ) -> Result<Live, ConfigError> {
        Listeners::of(cfg)?;
        let upstreams = upstreams(cfg, previous)?;
        let replay = replay_buffer(cfg, previous)?;
        let transport = match transport {
            Some(t) => t,
            None => cfg
                .net
                .transport("serve")?
                .build()
                .map_err(|e| ConfigError::new(format!("serve: {e}")))?,
        };
        let budget = previous.map_or_else(RetryBudget::default, |p| p.budget.clone());
        let ctx = Context {
            cfg,
            upstreams: &upstreams,
            transport: &transport,
            budget: &budget,
        };
        let mut routes = Vec::new();
        if cfg.routes.is_empty() {
            let all: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            routes.push(ctx.route("/", &all, false, &Policy::new())?);
        }
        for r in &cfg.routes {
            let prefix = normalize_prefix(&r.prefix)?;
            if routes.iter().any(|x: &Route| x.prefix == prefix) {
                return Err(ConfigError::new(format!(
                    "route {prefix}: the prefix is given twice"
                )));
            }
            if r.upstreams.is_empty() {
                return Err(ConfigError::new(format!("route {prefix}: no upstreams")));
            }
            let names: Vec<&str> = r.upstreams.iter().map(String::as_str).collect();
            routes.push(ctx.route(&prefix, &names, r.strip_prefix, &r.policy)?);
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Live {
            routes,
            upstreams,
            replay,
            idle_timeout: Some(cfg.policy.idle_timeout.unwrap_or(IDLE_TIMEOUT)),
            report_headers: cfg.report_headers.unwrap_or(true),
            forwarded: cfg.forwarded == Some(true),
            via: cfg.via == Some(true),
            access_log: cfg.access_log == Some(true),
            connect_timeout: cfg.net.connect_timeout.unwrap_or(Duration::from_secs(2)),
            budget,
        })
    }
}

/// Where request bodies are kept for a re-send; a reload keeps the count
/// of what is on disk.
fn replay_buffer(cfg: &Config, previous: Option<&Live>) -> Result<ReplayBuffer, ConfigError> {
    let mut replay = previous
        .map_or_else(ReplayBuffer::new, |p| p.replay.clone())
        .memory(cfg.replay_buffer.unwrap_or(1024 * 1024))
        .disk(cfg.replay_disk.unwrap_or(64 * 1024 * 1024))
        .disk_total(cfg.replay_disk_total.unwrap_or(1024 * 1024 * 1024));
    if let Some(dir) = cfg.temp_dir.clone() {
        replay = replay.temp_dir(dir);
    }
    replay
        .validate()
        .map_err(|e| ConfigError::new(format!("--temp-dir: {e}")))?;
    Ok(replay)
}

/// `/orders/` and `/orders` are the same prefix.
fn normalize_prefix(p: &str) -> Result<String, ConfigError> {
    if !p.starts_with('/') {
        return Err(ConfigError::new(format!(
            "route {p:?}: a prefix starts with /"
        )));
    }
    let trimmed = p.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
}

/// The config's upstreams, in order, each with its breaker (an unchanged
/// URL keeps the one it had).
fn upstreams(cfg: &Config, previous: Option<&Live>) -> Result<Vec<Upstream>, ConfigError> {
    let mut out: Vec<Upstream> = Vec::new();
    for (i, given) in cfg.upstreams.iter().enumerate() {
        let url = given.url.trim().to_owned();
        let (target, unix) = unix_target(&url, given.host.as_deref())
            .map_err(|e| ConfigError::new(format!("upstream {}: {e}", i + 1)))?;
        let name = match (&given.name, &unix) {
            (Some(n), _) => n.clone(),
            (None, Some(_)) => unique(url.clone(), &out),
            (None, None) => default_name(&url, i, &out)?,
        };
        if name.trim().is_empty() || HeaderValue::from_str(&name).is_err() {
            return Err(ConfigError::new(format!(
                "upstream {}: the name {name:?} must be printable and not empty",
                i + 1
            )));
        }
        if out.iter().any(|u| u.name == name) {
            return Err(ConfigError::new(format!(
                "upstream {} ({name}): the name is taken by another upstream",
                i + 1
            )));
        }
        // One server, one breaker: the same URL twice shares it, and so
        // does an unchanged URL across a reload.
        let breaker = out
            .iter()
            .chain(previous.iter().flat_map(|p| p.upstreams.iter()))
            .find(|u| u.url == url)
            .map_or_else(
                || SharedBreaker::new(BreakerConfig::default()),
                |u| u.breaker.clone(),
            );
        out.push(Upstream {
            shown: match &unix {
                Some(_) => url.clone(),
                None => fallback_chain::redact::url(&url),
            },
            name,
            url,
            target,
            unix,
            breaker,
        });
    }
    if out.is_empty() {
        return Err(ConfigError::new(
            "no upstream: pass one or more URLs, or --config FILE with [[upstream]]",
        ));
    }
    Ok(out)
}

/// `unix:/path` (with `host`) as the link's `http://HOST` URL and the
/// socket's path; any other URL as it is (and no `host`).
fn unix_target(
    url: &str,
    host: Option<&str>,
) -> Result<(String, Option<std::path::PathBuf>), String> {
    let Some(path) = url.strip_prefix("unix:") else {
        if host.is_some() {
            return Err("`host` is for unix: upstreams; an http:// URL names its own".into());
        }
        return Ok((url.to_owned(), None));
    };
    if path.is_empty() {
        return Err("unix: needs the socket's path, as unix:/run/app.sock".into());
    }
    let host = host.unwrap_or("localhost");
    // The host is a Host header and an authority: nothing else may ride
    // along (a path, credentials, a second header).
    if host.is_empty() || host.parse::<http::uri::Authority>().is_err() || host.contains('@') {
        return Err(format!(
            "host {host:?} is not a host name (with an optional port)"
        ));
    }
    Ok((format!("http://{host}"), Some(path.into())))
}

/// The library's own default name, host:port, made unique: the same URL
/// may be given twice on purpose.
fn default_name(url: &str, i: usize, taken: &[Upstream]) -> Result<String, ConfigError> {
    let base = Chain::builder()
        .link(Link::get(url))
        .build()
        .map_err(|e| ConfigError::new(format!("upstream {}: {e}", i + 1)))?
        .links()[0]
        .name()
        .to_owned();
    Ok(unique(base, taken))
}

/// `base`, or `base#2`, `base#3`… when the name is taken.
fn unique(base: String, taken: &[Upstream]) -> String {
    let mut name = base.clone();
    let mut n = 1;
    while taken.iter().any(|u| u.name == name) {
        n += 1;
        name = format!("{base}#{n}");
    }
    name
}

/// `probe = "grpc"` (the server as a whole) or `"grpc:package.Service"`:
/// the service the gRPC health check asks about.
fn grpc_probe(probe: &str) -> Option<&str> {
    match probe.strip_prefix("grpc") {
        Some("") => Some(""),
        Some(rest) => rest.strip_prefix(':'),
        None => None,
    }
}

struct Context<'a> {
    cfg: &'a Config,
    upstreams: &'a [Upstream],
    transport: &'a HyperTransport,
    budget: &'a RetryBudget,
}

impl Context<'_> {
    /// A route's chain: the chain-wide policy, with the route's own over
    /// it, over the upstreams named.
    fn route(
        &self,
        prefix: &str,
        names: &[&str],
        strip_prefix: bool,
        own: &Policy,
    ) -> Result<Route, ConfigError> {
        let fail = |e: String| ConfigError::new(format!("route {prefix}: {e}"));
        let policy = self.cfg.policy.overlaid(own);
        let mut b = Chain::builder()
            .transport(self.transport.clone())
            .retry_budget(self.budget.clone())
            .breaker(BreakerConfig::default())
            .sticky(true)
            // A proxy passes redirects, 304 and client errors through.
            .classifier(Classifier::server_errors())
            .idle_timeout(IDLE_TIMEOUT)
            .http2_prior_knowledge(self.cfg.net.http2_prior_knowledge == Some(true))
            .policy(&policy);
        for n in &self.cfg.secret_headers {
            b = b.secret_header(n.clone());
        }
        let mut indices = Vec::with_capacity(names.len());
        for name in names {
            let Some(i) = self.upstreams.iter().position(|u| u.name == *name) else {
                return Err(fail(format!("no upstream is named {name:?}")));
            };
            b = b.link(self.link(i)?);
            indices.push(i);
        }
        let chain = b.build().map_err(|e| fail(e.to_string()))?;
        Ok(Route {
            prefix: prefix.to_owned(),
            strip_prefix,
            chain,
            upstreams: indices,
        })
    }

    /// Upstream `i` as a link, with its own settings.
    fn link(&self, i: usize) -> Result<Link, ConfigError> {
        let up = &self.upstreams[i];
        let c = &self.cfg.upstreams[i];
        let mut link = Link::get(up.target.as_str())
            .name(up.name.clone())
            .breaker(up.breaker.clone());
        if let Some(path) = &up.unix {
            link = link.unix_socket(path.clone());
        }
        for (n, v) in &c.headers {
            link = link.header(n.clone(), v.clone());
        }
        if let Some(t) = c.timeout {
            link = link.timeout(t);
        }
        if let Some(t) = c.idle_timeout {
            link = link.idle_timeout(t);
        }
        if let Some(r) = c.retries {
            link = link.retries(r);
        }
        if let Some(h2c) = c.h2c {
            link = link.http2_prior_knowledge(h2c);
        }
        if let Some(service) = c.probe.as_deref().and_then(grpc_probe) {
            link = link.grpc_health_probe(service);
        } else if let Some(path) = &c.probe {
            let url = probe_url(&up.target, path).map_err(|e| {
                ConfigError::new(format!("upstream {} ({}): probe: {e}", i + 1, up.name))
            })?;
            link = link.probe(url);
        }
        Ok(link)
    }
}

/// The probe path on the upstream's scheme and authority.
fn probe_url(base: &str, path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not a path: it starts with /"));
    }
    // A bad base URL is the link's own error, named when the chain builds.
    let origin = match base.parse::<http::Uri>() {
        Ok(u) => match (u.scheme_str(), u.authority()) {
            (Some(s), Some(a)) => format!("{s}://{}", a.as_str().rsplit('@').next().unwrap_or("")),
            _ => base.to_owned(),
        },
        Err(_) => base.to_owned(),
    };
    Ok(format!("{origin}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_upstream_is_http_to_its_host_over_its_socket() {
        let (url, unix) = unix_target("unix:/run/a.sock", Some("orders.internal:8080")).unwrap();
        assert_eq!(url, "http://orders.internal:8080");
        assert_eq!(unix.unwrap(), std::path::Path::new("/run/a.sock"));
        let (url, _) = unix_target("unix:/run/a.sock", None).unwrap();
        assert_eq!(url, "http://localhost");
        assert_eq!(
            unix_target("http://a:1", None).unwrap(),
            ("http://a:1".into(), None)
        );
        for (url, host, why) in [
            ("http://a:1", Some("b"), "`host` is for unix:"),
            ("unix:", None, "needs the socket's path"),
            ("unix:/run/a.sock", Some("a/b"), "not a host name"),
            ("unix:/run/a.sock", Some("u:p@a"), "not a host name"),
            ("unix:/run/a.sock", Some(""), "not a host name"),
        ] {
            let e = unix_target(url, host).unwrap_err();
            assert!(e.contains(why), "{url} {host:?}: {e}");
        }
    }

    fn route(prefix: &str, strip: bool) -> Route {
        Route {
            prefix: prefix.into(),
            strip_prefix: strip,
            chain: Chain::builder()
                .link(Link::get("http://127.0.0.1:1/"))
                .build()
                .unwrap(),
            upstreams: vec![0],
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let r = route("/orders", false);
        assert!(r.matches("/orders"));
        assert!(r.matches("/orders/"));
        assert!(r.matches("/orders/7"));
        assert!(!r.matches("/ordersx"));
        assert!(!r.matches("/order"));
        assert!(!r.matches("/"));
        assert!(route("/", false).matches("/anything/at/all"));
    }

    #[test]
    fn strip_prefix_leaves_the_rest_of_the_path() {
        let r = route("/orders", true);
        assert_eq!(r.upstream_path("/orders/7"), "/7");
        assert_eq!(r.upstream_path("/orders"), "/");
        assert_eq!(
            route("/orders", false).upstream_path("/orders/7"),
            "/orders/7"
        );
        assert_eq!(route("/", true).upstream_path("/x"), "/x");
    }

    #[test]
    fn only_a_stripped_prefix_makes_a_new_target() {
        let uri: http::Uri = "/orders/7?x=1".parse().unwrap();
        assert_eq!(route("/orders", false).stripped_target(&uri), None);
        assert_eq!(route("/", true).stripped_target(&uri), None);
        assert_eq!(
            route("/orders", true).stripped_target(&uri).as_deref(),
            Some("/7?x=1")
        );
    }

    #[test]
    fn prefixes_are_normalized_and_checked() {
        assert_eq!(normalize_prefix("/orders/").unwrap(), "/orders");
        assert_eq!(normalize_prefix("/").unwrap(), "/");
        assert_eq!(normalize_prefix("//").unwrap(), "/");
        assert!(normalize_prefix("orders").is_err());
    }

    #[test]
    fn a_probe_is_a_path_on_the_upstreams_origin() {
        assert_eq!(
            probe_url("http://u:p@10.0.0.5:8080/api", "/healthz").unwrap(),
            "http://10.0.0.5:8080/healthz"
        );
        assert!(probe_url("http://h/", "healthz").is_err());
    }
}

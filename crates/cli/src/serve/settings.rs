//! From the command line and the config file to what the proxy serves:
//! its upstreams, its routes, and one chain per route. Every upstream has
//! one breaker, shared by every route that uses it and kept across a
//! reload while its URL stays the same.

use std::net::SocketAddr;
use std::time::Duration;

use fallback_chain::transport::HyperTransport;
use fallback_chain::{
    BreakerConfig, Chain, Classifier, Hedge, Link, ReplayBuffer, RetryBudget, SharedBreaker,
};
use http::HeaderValue;

use super::{AccessLog, ServeArgs};
use crate::build;
use crate::config::{self, Config};

/// Where a path goes: the longest matching prefix, by whole segments.
pub(super) struct Route {
    /// `/orders`, or `/` for everything.
    pub(super) prefix: String,
    pub(super) strip_prefix: bool,
    pub(super) chain: Chain,
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
    pub(super) fn stripped_target(&self, uri: &http::Uri) -> Option<String> {
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
    pub(super) fn upstream_path<'a>(&self, path: &'a str) -> &'a str {
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
pub(super) struct Upstream {
    pub(super) name: String,
    /// As configured: a reload keeps the breaker of an unchanged URL.
    url: String,
    /// Without secrets, for /upstreams.
    pub(super) shown: String,
    pub(super) breaker: SharedBreaker,
}

/// What requests are served by; a reload swaps in a new one, and requests
/// in flight finish under the one they started with.
pub(super) struct Live {
    /// Longest prefix first.
    pub(super) routes: Vec<Route>,
    pub(super) upstreams: Vec<Upstream>,
    /// Where request bodies are kept for a re-send; its disk count is kept
    /// across reloads.
    pub(super) replay: ReplayBuffer,
    /// The chain-wide idle timeout, which also bounds a client that stops
    /// reading its response.
    pub(super) idle_timeout: Option<Duration>,
    pub(super) report_headers: bool,
    pub(super) forwarded: bool,
    /// Add `Via` upstream.
    pub(super) via: bool,
    pub(super) access_log: bool,
    /// For the connections of protocol upgrades.
    pub(super) connect_timeout: Duration,
    /// Shared by every route, and kept across reloads.
    budget: RetryBudget,
}

impl Upstream {
    /// The URL as configured, secrets included: for connecting only.
    pub(super) fn url(&self) -> &str {
        &self.url
    }
}

impl Live {
    /// The route for `path`, if any.
    pub(super) fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(path))
    }
}

/// Fixed when the proxy starts: a reload does not move a listener.
pub(super) struct Listeners {
    pub(super) listen: SocketAddr,
    pub(super) admin: Option<SocketAddr>,
    pub(super) drain: Duration,
    pub(super) header_timeout: Duration,
}

/// The default idle timeout (nginx's `proxy_read_timeout` and
/// `send_timeout`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default bound on reading a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the config (if any) and builds everything; `previous` lends its
/// breakers and budget. The error names the culprit.
pub(super) fn load(args: &ServeArgs, previous: Option<&Live>) -> Result<(Live, Listeners), String> {
    let cfg = match &args.config {
        Some(path) => for_serve(config::load_any(path)?, path)?,
        None => Config::default(),
    };
    from_config(args, cfg, previous)
}

/// Refuses the keys of `send` in a config for `serve`.
pub(super) fn for_serve(cfg: Config, path: &std::path::Path) -> Result<Config, String> {
    if !cfg.endpoint.is_empty() {
        return Err(format!(
            "config {}: [[endpoint]] is for `send` and `check`; `serve` takes [[upstream]]",
            path.display()
        ));
    }
    Ok(cfg)
}

/// The proxy's state from its command line and a config already read.
pub(super) fn from_config(
    args: &ServeArgs,
    cfg: Config,
    previous: Option<&Live>,
) -> Result<(Live, Listeners), String> {
    from_config_with(args, cfg, previous, None)
}

/// As [`from_config`], sending through `transport` when one is given
/// instead of building one (which reads the system's trust store).
pub(super) fn from_config_with(
    args: &ServeArgs,
    cfg: Config,
    previous: Option<&Live>,
    transport: Option<HyperTransport>,
) -> Result<(Live, Listeners), String> {
    let serve = cfg.serve.as_ref();
    let access_log = match (args.access_log, serve.and_then(|s| s.access_log.as_deref())) {
        (Some(a), _) => a == AccessLog::Json,
        (None, None | Some("none")) => false,
        (None, Some("json")) => true,
        (None, Some(other)) => {
            return Err(format!(
                "[serve] access_log = {other:?}: expected \"json\" or \"none\""
            ))
        }
    };
    let listeners = Listeners {
        listen: args
            .listen
            .or(serve.and_then(|s| s.listen))
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        admin: args.admin.or(serve.and_then(|s| s.admin)),
        drain: args
            .drain
            .or(serve.and_then(|s| s.drain))
            .unwrap_or(Duration::from_secs(15)),
        header_timeout: args
            .header_timeout
            .or(serve.and_then(|s| s.header_timeout))
            .unwrap_or(HEADER_TIMEOUT),
    };
    if listeners.header_timeout.is_zero() {
        return Err("header_timeout must be greater than zero".into());
    }

    let upstreams = upstreams(args, &cfg, previous)?;
    // A reload keeps the count of what is on disk.
    let mut replay = previous
        .map_or_else(ReplayBuffer::new, |p| p.replay.clone())
        .memory(
            args.replay_buffer
                .or(serve.and_then(|s| s.replay_buffer))
                .unwrap_or(1024 * 1024),
        )
        .disk(
            args.replay_disk
                .or(serve.and_then(|s| s.replay_disk))
                .unwrap_or(64 * 1024 * 1024),
        )
        .disk_total(
            args.replay_disk_total
                .or(serve.and_then(|s| s.replay_disk_total))
                .unwrap_or(1024 * 1024 * 1024),
        );
    if let Some(dir) = args
        .temp_dir
        .clone()
        .or_else(|| serve.and_then(|s| s.temp_dir.clone()))
    {
        replay = replay.temp_dir(dir);
    }
    replay.validate().map_err(|e| format!("--temp-dir: {e}"))?;
    let net = build::command_line_net(&args.net, None, &cfg);
    let transport = match transport {
        Some(t) => t,
        None => build::transport(&net, "serve")
            .map_err(|u| u.0)?
            .build()
            .map_err(|e| format!("serve: {e}"))?,
    };
    let budget = previous.map_or_else(RetryBudget::default, |p| p.budget.clone());
    let chain_wide = ChainWide {
        timeout: args.timeout.or(cfg.timeout),
        deadline: args.deadline.or(cfg.deadline),
        idle_timeout: args.idle_timeout.or(cfg.idle_timeout),
        retries: args.retries.or(cfg.retries),
        hedge: args.hedge.or(cfg.hedge),
        fail_on: args.fail_on.clone().or_else(|| cfg.fail_on.clone()),
        idempotent: args.idempotent || cfg.idempotent == Some(true),
        h2c: net.http2_prior_knowledge == Some(true),
    };
    let ctx = Context {
        cfg: &cfg,
        upstreams: &upstreams,
        transport: &transport,
        budget: &budget,
        chain_wide: &chain_wide,
    };

    let mut routes = Vec::new();
    if cfg.route.is_empty() {
        let all: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
        routes.push(ctx.route("/", &all, false, &RouteOverrides::default())?);
    }
    for r in &cfg.route {
        let prefix = normalize_prefix(&r.prefix)?;
        if routes.iter().any(|x: &Route| x.prefix == prefix) {
            return Err(format!("route {prefix}: the prefix is given twice"));
        }
        if r.upstreams.is_empty() {
            return Err(format!("route {prefix}: no upstreams"));
        }
        let names: Vec<&str> = r.upstreams.iter().map(String::as_str).collect();
        let over = RouteOverrides {
            timeout: r.timeout,
            deadline: r.deadline,
            idle_timeout: r.idle_timeout,
            retries: r.retries,
            hedge: r.hedge,
            fail_on: r.fail_on.clone(),
            idempotent: r.idempotent,
        };
        routes.push(ctx.route(&prefix, &names, r.strip_prefix, &over)?);
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));

    Ok((
        Live {
            routes,
            upstreams,
            replay,
            idle_timeout: Some(chain_wide.idle_timeout.unwrap_or(IDLE_TIMEOUT)),
            report_headers: serve.and_then(|s| s.report_headers).unwrap_or(true),
            forwarded: args.forwarded || serve.and_then(|s| s.forwarded) == Some(true),
            via: args.via || serve.and_then(|s| s.via) == Some(true),
            access_log,
            connect_timeout: net.connect_timeout.unwrap_or(Duration::from_secs(2)),
            budget,
        },
        listeners,
    ))
}

/// `/orders/` and `/orders` are the same prefix.
fn normalize_prefix(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("route {p:?}: a prefix starts with /"));
    }
    let trimmed = p.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
}

/// The config's upstreams, then the command line's URLs, each with its
/// breaker (an unchanged URL keeps the one it had).
fn upstreams(
    args: &ServeArgs,
    cfg: &Config,
    previous: Option<&Live>,
) -> Result<Vec<Upstream>, String> {
    let given = cfg
        .upstream
        .iter()
        .map(|u| (u.name.clone(), u.url.trim().to_owned()))
        .chain(args.urls.iter().map(|u| (None, u.trim().to_owned())));
    let mut out: Vec<Upstream> = Vec::new();
    for (i, (name, url)) in given.enumerate() {
        let name = match name {
            Some(n) => n,
            None => {
                // The library's own default, host:port, made unique: the
                // same URL may be given twice on purpose.
                let base = Chain::builder()
                    .link(Link::get(url.as_str()))
                    .build()
                    .map_err(|e| format!("upstream {}: {e}", i + 1))?
                    .links()[0]
                    .name()
                    .to_owned();
                let mut name = base.clone();
                let mut n = 1;
                while out.iter().any(|u| u.name == name) {
                    n += 1;
                    name = format!("{base}#{n}");
                }
                name
            }
        };
        if name.trim().is_empty() || HeaderValue::from_str(&name).is_err() {
            return Err(format!(
                "upstream {}: the name {name:?} must be printable and not empty",
                i + 1
            ));
        }
        if out.iter().any(|u| u.name == name) {
            return Err(format!(
                "upstream {} ({name}): the name is taken by another upstream",
                i + 1
            ));
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
            shown: fallback_chain::redact::url(&url),
            name,
            url,
            breaker,
        });
    }
    if out.is_empty() {
        return Err(
            "no upstream: pass one or more URLs, or --config FILE with [[upstream]]".into(),
        );
    }
    Ok(out)
}

/// The chain-wide settings, the command line over the config.
struct ChainWide {
    timeout: Option<Duration>,
    deadline: Option<Duration>,
    idle_timeout: Option<Duration>,
    retries: Option<u32>,
    hedge: Option<Duration>,
    fail_on: Option<String>,
    idempotent: bool,
    h2c: bool,
}

/// A route's own settings, over the chain-wide ones.
#[derive(Default)]
struct RouteOverrides {
    timeout: Option<Duration>,
    deadline: Option<Duration>,
    idle_timeout: Option<Duration>,
    retries: Option<u32>,
    hedge: Option<Duration>,
    fail_on: Option<String>,
    idempotent: Option<bool>,
}

struct Context<'a> {
    cfg: &'a Config,
    upstreams: &'a [Upstream],
    transport: &'a HyperTransport,
    budget: &'a RetryBudget,
    chain_wide: &'a ChainWide,
}

impl Context<'_> {
    fn route(
        &self,
        prefix: &str,
        names: &[&str],
        strip_prefix: bool,
        over: &RouteOverrides,
    ) -> Result<Route, String> {
        let w = self.chain_wide;
        let fail = |e: String| format!("route {prefix}: {e}");
        let classifier = match over.fail_on.as_ref().or(w.fail_on.as_ref()) {
            Some(spec) => Classifier::parse(spec).map_err(|e| fail(format!("fail_on: {e}")))?,
            // A proxy passes redirects, 304 and client errors through.
            None => Classifier::server_errors(),
        };
        let mut b = Chain::builder()
            .transport(self.transport.clone())
            .retry_budget(self.budget.clone())
            .breaker(BreakerConfig::default())
            .sticky(true)
            .classifier(classifier)
            .deadline(over.deadline.or(w.deadline))
            .idle_timeout(over.idle_timeout.or(w.idle_timeout).unwrap_or(IDLE_TIMEOUT))
            .hedge(over.hedge.or(w.hedge).map(Hedge::fixed))
            .http2_prior_knowledge(w.h2c);
        if let Some(t) = over.timeout.or(w.timeout) {
            b = b.timeout(t);
        }
        if let Some(r) = over.retries.or(w.retries) {
            b = b.retries(r);
        }
        for n in &self.cfg.secret_headers {
            b = b.secret_header(n.clone());
        }
        let idempotent = over.idempotent.unwrap_or(w.idempotent);
        for name in names {
            let Some((i, up)) = self
                .upstreams
                .iter()
                .enumerate()
                .find(|(_, u)| u.name == *name)
            else {
                return Err(fail(format!("no upstream is named {name:?}")));
            };
            let mut link = Link::get(up.url.as_str())
                .name(up.name.clone())
                .breaker(up.breaker.clone());
            if idempotent {
                link = link.idempotent(true);
            }
            // Command-line URLs come after the config's upstreams.
            if let Some(c) = self.cfg.upstream.get(i) {
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
                if let Some(path) = &c.probe {
                    link = link
                        .probe(probe_url(&up.url, path).map_err(|e| {
                            format!("upstream {} ({}): probe: {e}", i + 1, up.name)
                        })?);
                }
            }
            b = b.link(link);
        }
        let chain = b.build().map_err(|e| fail(e.to_string()))?;
        Ok(Route {
            prefix: prefix.to_owned(),
            strip_prefix,
            chain,
        })
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

    fn route(prefix: &str, strip: bool) -> Route {
        Route {
            prefix: prefix.into(),
            strip_prefix: strip,
            chain: Chain::builder()
                .link(Link::get("http://127.0.0.1:1/"))
                .build()
                .unwrap(),
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

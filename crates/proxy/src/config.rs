//! The proxy's configuration: the typed [`Config`] a [`Proxy`](crate::Proxy)
//! is built from, its TOML file, and the one rule that lays the command
//! line over the file ([`Config::overlaid`]).
//!
//! ```toml
//! timeout = "2s"            # chain-wide: timeout, deadline, idle_timeout, retries, hedge, fail_on,
//!                           # grpc_fail_on, idempotent
//! secret_headers = ["X-Tenant"]
//! ca_cert = "ca.pem"        # network: ca_cert, client_cert, client_key, insecure, proxy, no_proxy,
//!                           # http2_prior_knowledge, connect_timeout, max_connection_age, user_agent
//! [serve]
//! listen = "127.0.0.1:8080" # and admin, replay_buffer, replay_disk, replay_disk_total, temp_dir,
//!                           # drain, access_log, report_headers, forwarded, via, header_timeout
//! [[upstream]]
//! name = "primary"          # optional: host:port by default
//! url = "http://10.0.0.5:8080"
//! headers = { "X-Api-Key" = "..." }
//! timeout = "500ms"         # per upstream: timeout, idle_timeout, retries, probe, h2c
//! [[route]]
//! prefix = "/orders"
//! upstreams = ["primary"]
//! strip_prefix = false      # and any chain-wide key, for this route only
//! ```
//!
//! Unknown keys, and the keys of `fallback send` (`[[endpoint]]`,
//! `max_body`, `follow_redirects`, `compressed`), are refused when the file
//! is read, with the key and its line.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fallback_chain::grpc::Code;
use fallback_chain::transport::{HyperTransport, HyperTransportBuilder};
use fallback_chain::{Classifier, Policy};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::units;
use crate::ConfigError;

/// Everything a [`Proxy`](crate::Proxy) serves by: its listeners and
/// manners (the file's `[serve]`), the chain-wide [`Policy`], how to reach
/// servers ([`Net`]), the upstreams and the routes.
///
/// Every setting is optional; what is unset takes the default named on
/// its field. Build one from [`Config::default`] and its fields, or read
/// one with [`Config::load`] / [`Config::parse`].
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Config {
    /// Where to listen. Default: 127.0.0.1:8080.
    pub listen: Option<Listen>,
    /// Where the admin endpoints listen. Default: nowhere.
    pub admin: Option<SocketAddr>,
    /// A request body's copy kept in memory for a re-send. Default: 1 MiB.
    pub replay_buffer: Option<u64>,
    /// ... and beyond it, per request in a temporary file. Default: 64 MiB.
    pub replay_disk: Option<u64>,
    /// Bound on every request's temporary files at once. Default: 1 GiB.
    pub replay_disk_total: Option<u64>,
    /// Where the temporary files go. Default: the system's.
    pub temp_dir: Option<PathBuf>,
    /// How long requests in flight may finish at shutdown. Default: 15 s.
    pub drain: Option<Duration>,
    /// One JSON line per request on stderr. Default: off.
    pub access_log: Option<bool>,
    /// `x-fallback-upstream` and `x-fallback-attempts` on answers.
    /// Default: on.
    pub report_headers: Option<bool>,
    /// `X-Forwarded-For` and `Forwarded` upstream. Default: off.
    pub forwarded: Option<bool>,
    /// `Via` upstream. Default: off.
    pub via: Option<bool>,
    /// Bound on reading a request's head. Default: 30 s.
    pub header_timeout: Option<Duration>,
    /// The chain-wide settings, which a route's own override.
    pub policy: Policy,
    /// How to reach the upstreams.
    pub net: Net,
    /// Header names whose values are secrets, beyond the built-in rule.
    pub secret_headers: Vec<String>,
    /// The servers requests go to, in order.
    pub upstreams: Vec<Upstream>,
    /// Which upstreams a path goes to. Default: one route, `/`, over every
    /// upstream in order.
    pub routes: Vec<Route>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("admin", &self.admin)
            .field("policy", &self.policy)
            .field("net", &self.net)
            .field("upstreams", &self.upstreams)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

/// One `[[upstream]]`: a server, by name.
#[derive(Clone)]
#[non_exhaustive]
pub struct Upstream {
    /// Default: the URL's host:port, made unique.
    pub name: Option<String>,
    /// The base URL; the request's path and query are appended. Or
    /// `unix:/path/to.sock`: plain HTTP over that Unix socket, with `host`
    /// as the `Host` header.
    pub url: String,
    /// The `Host` of a `unix:` upstream (default `localhost`); refused with
    /// any other URL.
    pub host: Option<String>,
    /// Headers sent to this upstream only.
    pub headers: BTreeMap<String, String>,
    /// This upstream's per-attempt timeout, over the route's.
    pub timeout: Option<Duration>,
    /// This upstream's idle timeout, over the route's.
    pub idle_timeout: Option<Duration>,
    /// This upstream's extra tries, over the route's.
    pub retries: Option<u32>,
    /// The background health probe: a path to `GET`, or `grpc` (the
    /// standard gRPC health check of the server) or `grpc:package.Service`
    /// (of one service), which only `SERVING` passes.
    pub probe: Option<String>,
    /// HTTP/2 without upgrade (h2c) to this `http://` upstream, as gRPC
    /// servers expect, over the file's and the command line's
    /// `http2_prior_knowledge`.
    pub h2c: Option<bool>,
}

impl Upstream {
    /// An upstream at `url`, with nothing else set.
    pub fn new(url: impl Into<String>) -> Upstream {
        Upstream {
            name: None,
            url: url.into(),
            headers: BTreeMap::new(),
            timeout: None,
            idle_timeout: None,
            retries: None,
            probe: None,
            h2c: None,
            host: None,
        }
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values and a URL's password may be secrets.
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("url", &fallback_chain::redact::url(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

/// One `[[route]]`: a path prefix and the upstreams it tries, in order.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Route {
    /// `/orders` (by whole segments), or `/` for everything.
    pub prefix: String,
    /// Upstream names, in the order they are tried.
    pub upstreams: Vec<String>,
    /// Send the path without the prefix. Default: off.
    pub strip_prefix: bool,
    /// This route's settings, over the chain-wide ones.
    pub policy: Policy,
}

impl Route {
    /// A route from `prefix` to `upstreams`, in order.
    pub fn new(prefix: impl Into<String>, upstreams: impl IntoIterator<Item = String>) -> Route {
        Route {
            prefix: prefix.into(),
            upstreams: upstreams.into_iter().collect(),
            strip_prefix: false,
            policy: Policy::new(),
        }
    }
}

/// How to reach servers: the keys allowed chain-wide and, for `fallback
/// send`, per link. Files are read when a transport is built from it.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Net {
    /// Extra trusted root certificates (PEM).
    pub ca_cert: Option<PathBuf>,
    /// A client certificate chain (PEM), with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate.
    pub insecure: Option<bool>,
    /// An `http://` proxy URL.
    pub proxy: Option<String>,
    /// Hosts that bypass the proxy.
    pub no_proxy: Option<String>,
    /// HTTP/2 without upgrade to `http://` servers.
    pub http2_prior_knowledge: Option<bool>,
    /// Bound on establishing a connection. Default: 2 s.
    pub connect_timeout: Option<Duration>,
    /// How old a pooled connection may be and still take a new request
    /// (zero: any age). Default: 5 min.
    pub max_connection_age: Option<Duration>,
    /// The `User-Agent`.
    pub user_agent: Option<String>,
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Net")
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("insecure", &self.insecure)
            .field(
                "proxy",
                &self.proxy.as_deref().map(fallback_chain::redact::url),
            )
            .field("no_proxy", &self.no_proxy)
            .field("http2_prior_knowledge", &self.http2_prior_knowledge)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_connection_age", &self.max_connection_age)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

impl Net {
    /// Whether a link needs a transport of its own.
    pub fn transport_keys(&self) -> bool {
        self.ca_cert.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
            || self.insecure.is_some()
            || self.proxy.is_some()
            || self.no_proxy.is_some()
            || self.connect_timeout.is_some()
            || self.max_connection_age.is_some()
    }

    /// `self`, with `over`'s keys where it sets them.
    pub fn overlaid(&self, over: &Net) -> Net {
        Net {
            ca_cert: over.ca_cert.clone().or_else(|| self.ca_cert.clone()),
            client_cert: over
                .client_cert
                .clone()
                .or_else(|| self.client_cert.clone()),
            client_key: over.client_key.clone().or_else(|| self.client_key.clone()),
            insecure: over.insecure.or(self.insecure),
            proxy: over.proxy.clone().or_else(|| self.proxy.clone()),
            no_proxy: over.no_proxy.clone().or_else(|| self.no_proxy.clone()),
            http2_prior_knowledge: over.http2_prior_knowledge.or(self.http2_prior_knowledge),
            connect_timeout: over.connect_timeout.or(self.connect_timeout),
            max_connection_age: over.max_connection_age.or(self.max_connection_age),
            user_agent: over.user_agent.clone().or_else(|| self.user_agent.clone()),
        }
    }

    /// The transport options these keys ask for; the certificate files
    /// are read now. `where_` names the keys' owner in errors.
    pub fn transport(&self, where_: &str) -> Result<HyperTransportBuilder, ConfigError> {
        let mut t = HyperTransport::builder();
        if let Some(p) = &self.ca_cert {
            t = t.add_root_certificate_pem(read_pem("ca_cert", p)?);
        }
        match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => {
                t = t.identity_pem(read_pem("client_cert", c)?, read_pem("client_key", k)?)
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::new(format!(
                    "{where_}: a client certificate needs both the certificate and its key \
                     (--cert and --key, or client_cert and client_key)"
                )))
            }
            (None, None) => {}
        }
        if self.insecure == Some(true) {
            t = t.danger_accept_invalid_certs(true);
        }
        if let Some(p) = &self.proxy {
            t = t.proxy(p.clone());
        }
        if let Some(n) = &self.no_proxy {
            t = t.no_proxy(n.clone());
        }
        if let Some(c) = self.connect_timeout {
            t = t.connect_timeout(Some(c));
        }
        if let Some(a) = self.max_connection_age {
            t = t.pool_max_connection_age(a);
        }
        Ok(t)
    }
}

/// The largest certificate or key file read: CA bundles are a few hundred
/// KiB. A bound, so that a path such as `/dev/zero` is an error, not a hang.
const MAX_PEM: u64 = 4 * 1024 * 1024;

fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    read_limited(path, MAX_PEM)
        .map_err(|e| ConfigError::new(format!("{what} {}: {e}", path.display())))
}

impl Config {
    /// Reads and checks a config file; the error names the file, and the
    /// key and line when the TOML is at fault.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |e: String| ConfigError::new(format!("config {}: {e}", path.display()));
        let bytes = read_limited(path, MAX_CONFIG).map_err(fail)?;
        let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))?;
        Config::parse(&text, path)
    }

    /// Reads and checks a config file's text; `path` only names it in
    /// errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        const FOR_SEND: &str = "is for `send` and `check`; `serve` takes [[upstream]]";
        let hints = [
            ("endpoint", "[[endpoint]]"),
            ("max_body", "max_body"),
            ("follow_redirects", "follow_redirects"),
            ("compressed", "compressed"),
        ];
        let hints: Vec<(&str, String)> = hints
            .iter()
            .map(|(key, shown)| (*key, format!("{shown} {FOR_SEND}")))
            .collect();
        let (file, env): (File, _) = parse_toml(text, path, &hints)?;
        let mut cfg = file.into_config();
        let from_env = env.secret_headers(cfg.upstreams.iter().flat_map(|u| &u.headers));
        cfg.secret_headers.extend(from_env);
        Ok(cfg)
    }

    /// `self` (a config file), with `over` (a command line) laid over it:
    /// `over`'s settings win where it sets them, its secret headers are
    /// added, and its upstreams and routes come after `self`'s.
    pub fn overlaid(&self, over: &Config) -> Config {
        Config {
            listen: over.listen.clone().or_else(|| self.listen.clone()),
            admin: over.admin.or(self.admin),
            replay_buffer: over.replay_buffer.or(self.replay_buffer),
            replay_disk: over.replay_disk.or(self.replay_disk),
            replay_disk_total: over.replay_disk_total.or(self.replay_disk_total),
            temp_dir: over.temp_dir.clone().or_else(|| self.temp_dir.clone()),
            drain: over.drain.or(self.drain),
            access_log: over.access_log.or(self.access_log),
            report_headers: over.report_headers.or(self.report_headers),
            forwarded: over.forwarded.or(self.forwarded),
            via: over.via.or(self.via),
            header_timeout: over.header_timeout.or(self.header_timeout),
            policy: self.policy.overlaid(&over.policy),
            net: self.net.overlaid(&over.net),
            secret_headers: [&self.secret_headers[..], &over.secret_headers[..]].concat(),
            upstreams: [&self.upstreams[..], &over.upstreams[..]].concat(),
            routes: [&self.routes[..], &over.routes[..]].concat(),
        }
    }
}

/// A file's bytes, up to `limit`: a larger file, or a device that never
/// ends, is refused with the limit named.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut buf))
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > limit {
        return Err(format!("larger than the limit of {limit} bytes"));
    }
    Ok(buf)
}

/// The largest config file read: 16 MiB, far above the 1,000 links a
/// chain may have. A bound, so that `-c /dev/zero` is an error, not a
/// process that grows until it is killed.
pub const MAX_CONFIG: u64 = 16 * 1024 * 1024;

/// Parses a TOML config's text into `T`, after replacing `${NAME}` in its
/// strings by the environment (see [`crate::expand`]); gives back what
/// was replaced too. The error names the file, the line and column, and
/// the key, without the offending line's text (it may hold a secret), and
/// without any value from the environment; an unknown key listed in
/// `hints` gets its hint as the message instead of serde's.
pub fn parse_toml<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    hints: &[(&str, String)],
) -> Result<(T, crate::expand::Expanded), ConfigError> {
    let env = crate::expand::expand(text, |name| std::env::var(name).ok())
        .map_err(|e| ConfigError::new(format!("config {}: {e}", path.display())))?;
    let text = env.text.as_str();
    let parsed = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|span| {
            let before = text.get(..span.start.min(text.len())).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        });
        let message = e.message().trim_end();
        let hint = hints
            .iter()
            .find(|(key, _)| message.starts_with(&format!("unknown field `{key}`")));
        let message = match hint {
            Some((_, hint)) => hint.clone(),
            // The crate's own checks quote the value they refuse
            // (`invalid duration "soon"`): not when it may be the
            // environment's.
            None if env.is_expanded() => env.mask(&unquoted_all(message)),
            None => unquoted(message),
        };
        ConfigError::new(format!(
            "config {}: {}{message}",
            path.display(),
            at.unwrap_or_default(),
        ))
    })?;
    Ok((parsed, env))
}

/// A message with every double-quoted text in it blanked.
fn unquoted_all(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut quoted = false;
    for c in msg.chars() {
        match c {
            '"' => {
                out.push('"');
                if !quoted {
                    out.push('…');
                }
                quoted = !quoted;
            }
            _ if quoted => {}
            c => out.push(c),
        }
    }
    out
}

/// A TOML or serde message with the string values it quotes blanked:
/// `invalid type: string "Bearer …", expected a map` is about a value that
/// may be a secret typed in the wrong place, and the key and line are named
/// anyway. The checks of this crate's own keys (`invalid duration "soon"`)
/// keep their quotes: a duration or a status is no secret.
pub fn unquoted(msg: &str) -> String {
    const STRING: &str = "string \"";
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(STRING) {
        out.push_str(&rest[..i + STRING.len()]);
        rest = &rest[i + STRING.len()..];
        // Up to the closing quote; a backslash escapes the next character.
        let mut end = None;
        let mut escaped = false;
        for (j, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(j);
                    break;
                }
                _ => {}
            }
        }
        out.push('…');
        match end {
            Some(j) => rest = &rest[j..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

/// Declares a config-file table with the chain-wide policy keys beside its
/// own, and how those keys become a [`Policy`]. serde's `flatten` cannot
/// be combined with `deny_unknown_fields` (nor keep a key's line), so the
/// keys are written out here, once, for every table that takes them.
macro_rules! with_policy_keys {
    ($(#[$m:meta])* struct $name:ident { $($body:tt)* }) => {
        $(#[$m])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($body)*
            #[serde(default, deserialize_with = "opt_duration")]
            timeout: Option<Duration>,
            #[serde(default, deserialize_with = "opt_duration")]
            deadline: Option<Duration>,
            #[serde(default, deserialize_with = "opt_duration")]
            idle_timeout: Option<Duration>,
            retries: Option<u32>,
            #[serde(default, deserialize_with = "opt_duration")]
            hedge: Option<Duration>,
            #[serde(default, deserialize_with = "opt_fail_on")]
            fail_on: Option<Classifier>,
            #[serde(default, deserialize_with = "opt_grpc_codes")]
            grpc_fail_on: Option<Vec<Code>>,
            idempotent: Option<bool>,
        }

        impl $name {
            fn policy(&self) -> Policy {
                let mut p = Policy::new();
                p.timeout = self.timeout;
                p.deadline = self.deadline;
                p.idle_timeout = self.idle_timeout;
                p.retries = self.retries;
                p.hedge = self.hedge;
                p.fail_on = self.fail_on.clone();
                p.grpc_fail_on = self.grpc_fail_on.clone();
                p.idempotent = self.idempotent;
                p
            }
        }
    };
}

with_policy_keys! {
    /// The file, as written.
    struct File {
        #[serde(default)]
        secret_headers: Vec<String>,
        ca_cert: Option<PathBuf>,
        client_cert: Option<PathBuf>,
        client_key: Option<PathBuf>,
        insecure: Option<bool>,
        proxy: Option<String>,
        no_proxy: Option<String>,
        http2_prior_knowledge: Option<bool>,
        #[serde(default, deserialize_with = "opt_duration")]
        connect_timeout: Option<Duration>,
        #[serde(default, deserialize_with = "opt_duration_or_zero")]
        max_connection_age: Option<Duration>,
        user_agent: Option<String>,
        #[serde(default)]
        serve: ServeTable,
        #[serde(default)]
        upstream: Vec<UpstreamTable>,
        #[serde(default)]
        route: Vec<RouteTable>,
    }
}

with_policy_keys! {
    /// `[[route]]`, as written.
    struct RouteTable {
        prefix: String,
        upstreams: Vec<String>,
        #[serde(default)]
        strip_prefix: bool,
    }
}

/// `[serve]`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeTable {
    #[serde(default, deserialize_with = "opt_listen")]
    listen: Option<Listen>,
    admin: Option<SocketAddr>,
    #[serde(default, deserialize_with = "opt_size")]
    replay_buffer: Option<u64>,
    #[serde(default, deserialize_with = "opt_size")]
    replay_disk: Option<u64>,
    #[serde(default, deserialize_with = "opt_size")]
    replay_disk_total: Option<u64>,
    temp_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "opt_duration")]
    drain: Option<Duration>,
    #[serde(default, deserialize_with = "opt_access_log")]
    access_log: Option<bool>,
    report_headers: Option<bool>,
    forwarded: Option<bool>,
    via: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    header_timeout: Option<Duration>,
}

/// `[[upstream]]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamTable {
    name: Option<String>,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "opt_duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    idle_timeout: Option<Duration>,
    retries: Option<u32>,
    probe: Option<String>,
    h2c: Option<bool>,
    host: Option<String>,
}

impl File {
    fn into_config(self) -> Config {
        let policy = self.policy();
        let s = self.serve;
        Config {
            listen: s.listen,
            admin: s.admin,
            replay_buffer: s.replay_buffer,
            replay_disk: s.replay_disk,
            replay_disk_total: s.replay_disk_total,
            temp_dir: s.temp_dir,
            drain: s.drain,
            access_log: s.access_log,
            report_headers: s.report_headers,
            forwarded: s.forwarded,
            via: s.via,
            header_timeout: s.header_timeout,
            policy,
            net: Net {
                ca_cert: self.ca_cert,
                client_cert: self.client_cert,
                client_key: self.client_key,
                insecure: self.insecure,
                proxy: self.proxy,
                no_proxy: self.no_proxy,
                http2_prior_knowledge: self.http2_prior_knowledge,
                connect_timeout: self.connect_timeout,
                max_connection_age: self.max_connection_age,
                user_agent: self.user_agent,
            },
            secret_headers: self.secret_headers,
            upstreams: self
                .upstream
                .into_iter()
                .map(|u| Upstream {
                    name: u.name,
                    url: u.url,
                    headers: u.headers,
                    timeout: u.timeout,
                    idle_timeout: u.idle_timeout,
                    retries: u.retries,
                    probe: u.probe,
                    h2c: u.h2c,
                    host: u.host,
                })
                .collect(),
            routes: self
                .route
                .into_iter()
                .map(|r| Route {
                    policy: r.policy(),
                    prefix: r.prefix,
                    upstreams: r.upstreams,
                    strip_prefix: r.strip_prefix,
                })
                .collect(),
        }
    }
}

/// A duration key: `300ms`, `2s`, `1m`.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    units::duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A duration key where `0` means no bound.
pub fn opt_duration_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    units::duration_or_zero(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A `fail_on` key: `5xx,429`, or `non-2xx`.
pub fn opt_fail_on<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Classifier>, D::Error> {
    let s = String::deserialize(d)?;
    Classifier::parse(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A `grpc_fail_on` key: a list of gRPC codes by name or number,
/// `["UNAVAILABLE", "RESOURCE_EXHAUSTED"]`, or one string `"UNAVAILABLE,8"`.
pub fn opt_grpc_codes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Code>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Number(u32),
        Name(String),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Codes {
        List(Vec<Item>),
        Text(String),
    }
    let items = match Codes::deserialize(d)? {
        Codes::List(items) => items,
        Codes::Text(s) => s.split(',').map(|i| Item::Name(i.to_owned())).collect(),
    };
    items
        .into_iter()
        .map(|i| match i {
            Item::Number(n) => n.to_string().parse::<Code>(),
            Item::Name(s) => s.parse::<Code>(),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("grpc_fail_on: {e}")))
}

/// Parses a command line's `--grpc-fail-on`: `UNAVAILABLE,RESOURCE_EXHAUSTED`
/// or numbers.
pub fn grpc_codes(s: &str) -> Result<Vec<Code>, String> {
    s.split(',')
        .map(|c| c.parse::<Code>().map_err(|e| e.to_string()))
        .collect()
}

/// A size key: a number of bytes, or `64KiB`, `10MiB`, `1GiB`.
pub fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(Some(n)),
        Size::Text(s) => units::size(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Where the proxy listens: a TCP address, or a Unix socket's path.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Listen {
    /// `127.0.0.1:8080`; port 0 picks a free port.
    Tcp(SocketAddr),
    /// `unix:/run/fallback.sock`: created with mode 0660 and removed on
    /// exit; a stale socket left by a process that is gone is replaced, any
    /// other file is refused.
    Unix(PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Listen, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs the socket's path, as unix:/run/fallback.sock".into());
            }
            return Ok(Listen::Unix(path.into()));
        }
        s.parse().map(Listen::Tcp).map_err(|_| {
            format!(
                "invalid listen address {s:?}: expected ADDR:PORT (127.0.0.1:8080) or unix:/path"
            )
        })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

fn opt_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Listen>, D::Error> {
    String::deserialize(d)?
        .parse()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `access_log = "json"` or `"none"`.
fn opt_access_log<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match String::deserialize(d)?.as_str() {
        "json" => Ok(Some(true)),
        "none" => Ok(Some(false)),
        other => Err(serde::de::Error::custom(format!(
            "access_log = {other:?}: expected \"json\" or \"none\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connection_age_takes_zero_for_any_age() {
        let cfg = Config::parse(
            "max_connection_age = \"0\"\n[[upstream]]\nurl = \"http://127.0.0.1:1\"\n",
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!(cfg.net.max_connection_age, Some(Duration::ZERO));
        assert!(cfg.net.transport("chain").is_ok());
        let e = Config::parse("max_connection_age = \"later\"\n", Path::new("p.toml")).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn listen_is_an_address_or_a_unix_socket() {
        let tcp: Listen = "127.0.0.1:0".parse().unwrap();
        assert_eq!(tcp.to_string(), "127.0.0.1:0");
        let unix: Listen = "unix:/run/f.sock".parse().unwrap();
        assert_eq!(unix, Listen::Unix("/run/f.sock".into()));
        assert_eq!(unix.to_string(), "unix:/run/f.sock");
        assert!("unix:".parse::<Listen>().unwrap_err().contains("path"));
        assert!("localhost"
            .parse::<Listen>()
            .unwrap_err()
            .contains("ADDR:PORT"));
        let cfg = Config::parse(
            "[serve]\nlisten = \"unix:/run/f.sock\"\n[[upstream]]\nurl = \"http://127.0.0.1:1\"\n",
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!(cfg.listen, Some(unix));
        let e = Config::parse("[serve]\nlisten = \"nowhere\"\n", Path::new("p.toml")).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn string_values_in_messages_are_blanked() {
        assert_eq!(
            unquoted(r#"invalid type: string "Bearer sk-1", expected a map"#),
            r#"invalid type: string "…", expected a map"#
        );
        assert_eq!(
            unquoted(r#"invalid value: string "a\"b", x; string "c"#),
            r#"invalid value: string "…", x; string "…"#
        );
        assert_eq!(
            unquoted(r#"invalid duration "soon""#),
            r#"invalid duration "soon""#
        );
        assert_eq!(unquoted("unknown field `colour`"), "unknown field `colour`");
    }

    #[test]
    fn a_secret_given_where_a_table_goes_is_not_shown() {
        let e = Config::parse(
            "[[upstream]]\nurl = \"http://h/\"\nheaders = \"Authorization: Bearer sk-1\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(!e.contains("sk-1"), "{e}");
    }

    #[test]
    fn the_keys_of_send_are_refused_by_name() {
        for (text, key) in [
            ("[[endpoint]]\nurl = \"http://h/\"\n", "[[endpoint]]"),
            ("max_body = \"1MiB\"\n", "max_body"),
            ("compressed = true\n", "compressed"),
        ] {
            let e = Config::parse(text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("[[upstream]]"), "{e}");
            assert!(e.contains("line 1"), "{e}");
        }
    }

    #[test]
    fn a_route_overrides_and_the_command_line_overlays() {
        let file = Config::parse(
            "timeout = \"2s\"\nretries = 1\n[[upstream]]\nurl = \"http://a/\"\n\
             [[route]]\nprefix = \"/x\"\nupstreams = [\"a\"]\nretries = 3\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(file.routes[0].policy.retries, Some(3));
        assert_eq!(file.routes[0].policy.timeout, None);
        let command_line = Config {
            policy: Policy::new().retries(0),
            upstreams: vec![Upstream::new("http://b/")],
            ..Config::default()
        };
        let both = file.overlaid(&command_line);
        assert_eq!(both.policy.retries, Some(0));
        assert_eq!(both.policy.timeout, Some(Duration::from_secs(2)));
        let urls: Vec<_> = both.upstreams.iter().map(|u| u.url.as_str()).collect();
        assert_eq!(urls, ["http://a/", "http://b/"]);
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut c = Config::default();
        let mut up = Upstream::new("http://user:sk-1@h/");
        up.headers.insert("X-Api-Key".into(), "sk-2".into());
        c.upstreams.push(up);
        c.net.proxy = Some("http://u:sk-3@proxy:3128".into());
        let shown = format!("{c:?}");
        for secret in ["sk-1", "sk-2", "sk-3"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}

//! The TOML config file: chain-wide defaults and `[[endpoint]]` links.
//!
//! ```toml
//! timeout = "2s"          # chain-wide: timeout, deadline, idle_timeout, retries, hedge, fail_on, idempotent, max_body
//! secret_headers = ["X-Tenant"]  # values never printed, beyond the built-in rule (X-Api-Key, ...)
//! follow_redirects = true # or a bound on hops (true: 10); compressed = true
//! ca_cert = "ca.pem"      # chain-wide and per link: ca_cert, client_cert, client_key, insecure,
//!                         # proxy, http2_prior_knowledge, connect_timeout, user_agent
//! [[endpoint]]
//! name = "primary"        # optional
//! url = "https://primary.example/api/orders"   # required
//! method = "POST"         # optional
//! headers = { "X-Api-Key" = "..." }            # optional
//! json = { Name = "Random", Amount = 100 }     # optional: any TOML value, sent as JSON; or body = "raw text"
//! timeout = "500ms"       # optional per-link overrides: timeout, idle_timeout, retries
//! retries = 1
//! ```
//!
//! `fallback serve` reads the same file, with `[serve]`, `[[upstream]]` and
//! `[[route]]` instead of `[[endpoint]]` (see `fallback serve --help`).
//!
//! Unknown keys are errors that name the key and its line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::units;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Between two reads of a streamed response body.
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub deadline: Option<Duration>,
    pub retries: Option<u32>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub hedge: Option<Duration>,
    #[serde(default, deserialize_with = "opt_fail_on")]
    pub fail_on: Option<String>,
    pub idempotent: Option<bool>,
    #[serde(default, deserialize_with = "opt_size")]
    pub max_body: Option<u64>,
    /// Header names whose values are secrets, beyond the built-in rule.
    #[serde(default)]
    pub secret_headers: Vec<String>,
    #[serde(default, deserialize_with = "opt_redirects")]
    pub follow_redirects: Option<u32>,
    pub compressed: Option<bool>,
    // serde's flatten cannot be combined with deny_unknown_fields, so the
    // keys of `Net` are spelled out here and in `Endpoint`.
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub insecure: Option<bool>,
    pub proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub http2_prior_knowledge: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    pub user_agent: Option<String>,
    #[serde(default)]
    pub endpoint: Vec<Endpoint>,
    /// `fallback serve` only: the proxy's own settings.
    pub serve: Option<Serve>,
    /// `fallback serve` only: the servers requests go to.
    #[serde(default)]
    pub upstream: Vec<Upstream>,
    /// `fallback serve` only: which upstreams a path goes to.
    #[serde(default)]
    pub route: Vec<Route>,
}

/// `[serve]`: the proxy's listener and manners.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serve {
    pub listen: Option<std::net::SocketAddr>,
    pub admin: Option<std::net::SocketAddr>,
    #[serde(default, deserialize_with = "opt_size")]
    pub replay_buffer: Option<u64>,
    #[serde(default, deserialize_with = "opt_size")]
    pub replay_disk: Option<u64>,
    #[serde(default, deserialize_with = "opt_size")]
    pub replay_disk_total: Option<u64>,
    pub temp_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub drain: Option<Duration>,
    pub access_log: Option<String>,
    pub report_headers: Option<bool>,
    /// Add `X-Forwarded-For` and `Forwarded` to requests sent upstream.
    pub forwarded: Option<bool>,
    /// Add `Via` to requests sent upstream.
    pub via: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub header_timeout: Option<Duration>,
}

/// `[[upstream]]`: one server, by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: Option<String>,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    pub retries: Option<u32>,
    /// Path of the background health probe (a GET).
    pub probe: Option<String>,
}

/// `[[route]]`: a path prefix and the upstreams it tries, in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub prefix: String,
    pub upstreams: Vec<String>,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub deadline: Option<Duration>,
    pub retries: Option<u32>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub hedge: Option<Duration>,
    #[serde(default, deserialize_with = "opt_fail_on")]
    pub fail_on: Option<String>,
    pub idempotent: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub name: Option<String>,
    pub url: String,
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub json: Option<serde_json::Value>,
    pub body: Option<String>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub insecure: Option<bool>,
    pub proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub http2_prior_knowledge: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    pub user_agent: Option<String>,
}

macro_rules! net_of {
    ($s:expr) => {
        Net {
            ca_cert: $s.ca_cert.clone(),
            client_cert: $s.client_cert.clone(),
            client_key: $s.client_key.clone(),
            insecure: $s.insecure,
            proxy: $s.proxy.clone(),
            no_proxy: $s.no_proxy.clone(),
            http2_prior_knowledge: $s.http2_prior_knowledge,
            connect_timeout: $s.connect_timeout,
            user_agent: $s.user_agent.clone(),
        }
    };
}

impl Config {
    /// The chain-wide network keys.
    pub fn net(&self) -> Net {
        net_of!(self)
    }
}

impl Endpoint {
    /// This link's own network keys.
    pub fn net(&self) -> Net {
        net_of!(self)
    }
}

/// How to reach servers: keys allowed chain-wide and per link.
#[derive(Clone, Debug, Default)]
pub struct Net {
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub insecure: Option<bool>,
    pub proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub http2_prior_knowledge: Option<bool>,
    pub connect_timeout: Option<Duration>,
    pub user_agent: Option<String>,
}

impl Net {
    /// Whether the link needs a transport of its own.
    pub fn transport_keys(&self) -> bool {
        self.ca_cert.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
            || self.insecure.is_some()
            || self.proxy.is_some()
            || self.no_proxy.is_some()
            || self.connect_timeout.is_some()
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
            user_agent: over.user_agent.clone().or_else(|| self.user_agent.clone()),
        }
    }
}

/// Reads a config file for `send` and `check`, which have no use for the
/// proxy's keys.
pub fn load(path: &Path) -> Result<Config, String> {
    for_send(load_any(path)?, path)
}

/// Refuses the proxy's keys in a config for `send` and `check`.
pub fn for_send(cfg: Config, path: &Path) -> Result<Config, String> {
    let serve_only = [
        ("[serve]", cfg.serve.is_some()),
        ("[[upstream]]", !cfg.upstream.is_empty()),
        ("[[route]]", !cfg.route.is_empty()),
    ];
    if let Some((key, _)) = serve_only.iter().find(|(_, set)| *set) {
        return Err(format!(
            "config {}: {key} is for `fallback serve`; this command takes [[endpoint]] links",
            path.display()
        ));
    }
    Ok(cfg)
}

/// Reads and checks a config file; the error names the file, and the key
/// and line when the TOML is at fault.
pub fn load_any(path: &Path) -> Result<Config, String> {
    let fail = |e: String| format!("config {}: {e}", path.display());
    let bytes = read_limited(path, MAX_CONFIG).map_err(fail)?;
    let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))?;
    parse(&text, path)
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
const MAX_CONFIG: u64 = 16 * 1024 * 1024;

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

/// Reads and checks a config file's text; `path` only names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, String> {
    let cfg: Config = toml::from_str(text).map_err(|e| {
        // toml's own message quotes the offending line, which may hold a
        // secret; say where, and what, without it.
        let at = e.span().map(|span| {
            let before = text.get(..span.start.min(text.len())).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        });
        format!(
            "config {}: {}{}",
            path.display(),
            at.unwrap_or_default(),
            unquoted(e.message().trim_end())
        )
    })?;
    for (i, ep) in cfg.endpoint.iter().enumerate() {
        if ep.json.is_some() && ep.body.is_some() {
            let name = ep.name.as_deref().unwrap_or(&ep.url);
            return Err(format!(
                "config {}: endpoint {i} ({name}): set `json` or `body`, not both",
                path.display()
            ));
        }
    }
    Ok(cfg)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    units::duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `true` (10 hops), `false` (none) or a bound on hops.
fn opt_redirects<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Redirects {
        On(bool),
        Hops(u32),
    }
    Ok(Some(match Redirects::deserialize(d)? {
        Redirects::On(true) => 10,
        Redirects::On(false) => 0,
        Redirects::Hops(n) => n,
    }))
}

fn opt_fail_on<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    fallback_chain::Classifier::parse(&s).map_err(serde::de::Error::custom)?;
    Ok(Some(s))
}

fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = parse(
            "[[endpoint]]\nurl = \"http://h/\"\nheaders = \"Authorization: Bearer sk-1\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        assert!(!e.contains("sk-1"), "{e}");
    }
}

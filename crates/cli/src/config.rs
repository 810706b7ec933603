//! The TOML config file: chain-wide defaults and `[[endpoint]]` links.
//!
//! ```toml
//! timeout = "2s"          # chain-wide: timeout, deadline, idle_timeout, retries, hedge, fail_on, grpc_fail_on, idempotent, max_body
//! secret_headers = ["X-Tenant"]  # values never printed, beyond the built-in rule (X-Api-Key, ...)
//! follow_redirects = true # or a bound on hops (true: 10); compressed = true
//! ca_cert = "ca.pem"      # chain-wide and per link: ca_cert, client_cert, client_key, insecure,
//!                         # proxy, http2_prior_knowledge, connect_timeout, max_connection_age, user_agent
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
//! `fallback serve` reads a file of the same chain-wide keys, with
//! `[serve]`, `[[upstream]]` and `[[route]]` instead of `[[endpoint]]`
//! (see `fallback serve --help`); each command refuses the other's keys
//! when the file is read.
//!
//! Unknown keys are errors that name the key and its line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fallback_chain::grpc::Code;
use fallback_chain::{Classifier, Policy};
use fallback_chain_proxy::config::{
    opt_duration, opt_duration_or_zero, opt_fail_on, opt_grpc_codes, opt_size, parse_toml,
    read_limited,
};
use fallback_chain_proxy::config::{Net, MAX_CONFIG};
use serde::{Deserialize, Deserializer};

/// The file of `send` and `check`, as written.
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
    pub fail_on: Option<Classifier>,
    #[serde(default, deserialize_with = "opt_grpc_codes")]
    pub grpc_fail_on: Option<Vec<Code>>,
    pub idempotent: Option<bool>,
    #[serde(default, deserialize_with = "opt_size")]
    pub max_body: Option<u64>,
    /// Header names whose values are secrets, beyond the built-in rule.
    #[serde(default)]
    pub secret_headers: Vec<String>,
    /// What `${NAME}` in the file's strings was replaced by.
    #[serde(skip)]
    pub env: fallback_chain_proxy::expand::Expanded,
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
    #[serde(default, deserialize_with = "opt_duration_or_zero")]
    pub max_connection_age: Option<Duration>,
    pub user_agent: Option<String>,
    #[serde(default)]
    pub endpoint: Vec<Endpoint>,
}

impl Config {
    /// The chain-wide settings, as a layer for the command line to go
    /// over.
    pub fn policy(&self) -> Policy {
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
    #[serde(default, deserialize_with = "opt_duration_or_zero")]
    pub max_connection_age: Option<Duration>,
    pub user_agent: Option<String>,
}

macro_rules! net_of {
    ($s:expr) => {{
        let mut net = Net::default();
        net.ca_cert = $s.ca_cert.clone();
        net.client_cert = $s.client_cert.clone();
        net.client_key = $s.client_key.clone();
        net.insecure = $s.insecure;
        net.proxy = $s.proxy.clone();
        net.no_proxy = $s.no_proxy.clone();
        net.http2_prior_knowledge = $s.http2_prior_knowledge;
        net.connect_timeout = $s.connect_timeout;
        net.max_connection_age = $s.max_connection_age;
        net.user_agent = $s.user_agent.clone();
        net
    }};
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

/// Reads and checks a config file for `send` and `check`; the error names
/// the file, and the key and line when the TOML is at fault.
pub fn load(path: &Path) -> Result<Config, String> {
    let fail = |e: String| format!("config {}: {e}", path.display());
    let bytes = read_limited(path, MAX_CONFIG).map_err(fail)?;
    let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))?;
    parse(&text, path)
}

/// Reads and checks a config file's text; `path` only names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, String> {
    const FOR_SERVE: &str = "is for `fallback serve`; this command takes [[endpoint]] links";
    let hints = [
        ("serve", format!("[serve] {FOR_SERVE}")),
        ("upstream", format!("[[upstream]] {FOR_SERVE}")),
        ("route", format!("[[route]] {FOR_SERVE}")),
    ];
    let (mut cfg, env): (Config, _) = parse_toml(text, path, &hints).map_err(|e| e.to_string())?;
    let from_env = env.secret_headers(cfg.endpoint.iter().flat_map(|ep| &ep.headers));
    cfg.secret_headers.extend(from_env);
    cfg.env = env;
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

#[cfg(test)]
mod tests {
    use super::*;

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

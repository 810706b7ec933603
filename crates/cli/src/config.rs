//! The TOML config file: chain-wide defaults and `[[endpoint]]` links.
//!
//! ```toml
//! timeout = "2s"          # chain-wide: timeout, deadline, retries, hedge, fail_on, idempotent, max_body
//! secret_headers = ["X-Tenant"]  # values never printed, beyond the built-in rule (X-Api-Key, ...)
//! [[endpoint]]
//! name = "primary"        # optional
//! url = "https://primary.example/api/orders"   # required
//! method = "POST"         # optional
//! headers = { "X-Api-Key" = "..." }            # optional
//! json = { Name = "Random", Amount = 100 }     # optional: any TOML value, sent as JSON; or body = "raw text"
//! timeout = "500ms"       # optional per-link overrides: timeout, retries
//! retries = 1
//! ```
//!
//! Unknown keys are errors that name the key and its line.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::units;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
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
    #[serde(default)]
    pub endpoint: Vec<Endpoint>,
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
    pub retries: Option<u32>,
}

/// Reads and checks a config file; the error names the file, and the key
/// and line when the TOML is at fault.
pub fn load(path: &Path) -> Result<Config, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
    let cfg: Config = toml::from_str(&text).map_err(|e| {
        // toml's own message quotes the offending line, which may hold a
        // secret; say where, and what, without it.
        let at = e.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        });
        format!(
            "config {}: {}{}",
            path.display(),
            at.unwrap_or_default(),
            e.message().trim_end()
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

fn opt_fail_on<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    fallback::Classifier::parse(&s).map_err(serde::de::Error::custom)?;
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

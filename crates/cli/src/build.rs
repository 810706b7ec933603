//! From the command line and the config file to a chain: every flag and key
//! maps onto a public `ChainBuilder`, `Link` or `HyperTransportBuilder`
//! setting.

use std::io::Read;

use fallback_chain::{Body, Chain, ChainBuilder, Link};
use fallback_chain_proxy::Net;

use crate::config;
use crate::{NetArgs, SendArgs, Usage};

/// Reads `@path` / `@-` arguments; a plain value is itself.
fn read_arg(flag: &str, value: &str) -> Result<Body, Usage> {
    match value.strip_prefix('@') {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Usage(format!("{flag} @-: cannot read stdin: {e}")))?;
            Ok(Body::bytes(buf))
        }
        // Re-opened for every attempt, never held whole in memory.
        Some(path) => Ok(Body::file(path)),
        None => Ok(Body::bytes(value.as_bytes().to_vec())),
    }
}

/// `--json`: checked to be JSON before anything is sent, without holding
/// a file whole: `@path` is checked as it streams and then sent like
/// `-d @path`, re-read on every attempt.
fn json_arg(value: &str) -> Result<Body, Usage> {
    let fail = |what: &str, e: serde_json::Error| match e.io_error_kind() {
        None => Usage(format!("--json{what}: invalid JSON: {e}")),
        Some(_) => Usage(format!("--json{what}: cannot read: {e}")),
    };
    match value.strip_prefix('@') {
        Some("-") => {
            // Stdin can't be read twice: kept as it is checked, so input
            // that can never be JSON (`< /dev/zero`) stops at its first byte.
            let mut keep = Counted {
                inner: std::io::stdin().lock(),
                count: 0,
                kept: Some(Vec::new()),
            };
            serde_json::from_reader::<_, Checked>(&mut keep).map_err(|e| fail(" @-", e))?;
            Ok(Body::bytes(keep.kept.unwrap_or_default()))
        }
        Some(path) => {
            let file =
                std::fs::File::open(path).map_err(|e| Usage(format!("--json @{path}: {e}")))?;
            // A device or a pipe is refused before a byte is read: it could
            // be endless, and it can't be re-read for another attempt.
            let size = match file.metadata() {
                Ok(m) if m.is_file() => m.len(),
                _ => {
                    return Err(Usage(format!(
                        "--json @{path}: not a regular file (@- reads stdin or a pipe)"
                    )))
                }
            };
            let mut read = Counted {
                inner: file,
                count: 0,
                kept: None,
            };
            serde_json::from_reader::<_, Checked>(std::io::BufReader::new(&mut read))
                .map_err(|e| fail(&format!(" @{path}"), e))?;
            // Each attempt sends the size the file reports: a file whose
            // size is not what it reads (`/proc`, or one being written)
            // would not send what was checked.
            if read.count != size {
                return Err(Usage(format!(
                    "--json @{path}: read {} bytes of a file whose size is {size} (@- reads it from stdin)",
                    read.count
                )));
            }
            Ok(Body::file(path))
        }
        None => {
            serde_json::from_str::<Checked>(value).map_err(|e| fail("", e))?;
            Ok(Body::bytes(value.as_bytes().to_vec()))
        }
    }
}

/// Any JSON value, checked and dropped as it is read. Unlike
/// `serde::de::IgnoredAny`, which skips over a value, its strings are
/// decoded (invalid UTF-8 and lone surrogates are errors) and its nesting
/// is bounded as for any parsed value; unlike `serde_json::Value`, only one
/// string at a time is held.
pub(crate) struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> serde::de::Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// A reader that counts what passes through it, and keeps a copy if asked.
struct Counted<R> {
    inner: R,
    count: u64,
    kept: Option<Vec<u8>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if let Some(kept) = &mut self.kept {
            kept.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

pub fn split_header(h: &str) -> Result<(String, String), Usage> {
    match h.split_once(':') {
        Some((n, v)) if !n.trim().is_empty() => Ok((n.trim().to_owned(), v.trim().to_owned())),
        // Only the first word is echoed: without the colon, the rest may be
        // a secret value.
        _ => Err(Usage(format!(
            "invalid header {:?}: expected 'Name: value'",
            h.split_whitespace().next().unwrap_or("")
        ))),
    }
}

/// The transport options a `Net` asks for; the error is a usage error.
fn transport(
    net: &Net,
    where_: &str,
) -> Result<fallback_chain::transport::HyperTransportBuilder, Usage> {
    net.transport(where_).map_err(|e| Usage(e.to_string()))
}

/// The command line's network flags, over the config's chain-wide keys.
fn command_line_net(args: &NetArgs, user_agent: Option<&String>, cfg: &config::Config) -> Net {
    let mut net = args.net();
    net.user_agent = user_agent.cloned();
    cfg.net().overlaid(&net)
}

/// Builds the chain: config links first, then the command line's URLs.
pub fn chain(
    args: &SendArgs,
    cfg: &config::Config,
    observer: Option<crate::verbose::Verbose>,
) -> Result<Chain, Usage> {
    let policy = cfg.policy().overlaid(&args.policy.policy());
    let mut b: ChainBuilder = Chain::builder().breaker(None).policy(&policy);
    if let Some(m) = args.max_body.or(cfg.max_body) {
        b = b.max_body(m);
    }
    let follow = if args.location {
        Some(args.max_redirs.unwrap_or(10))
    } else {
        cfg.follow_redirects
    };
    if let Some(hops) = follow {
        b = b.follow_redirects(hops);
    }
    if args.compressed || cfg.compressed == Some(true) {
        b = b.decompress(true);
    }
    let net = command_line_net(&args.net, args.user_agent.as_ref(), cfg);
    b = b.transport_options(transport(&net, "the chain")?);
    if net.http2_prior_knowledge == Some(true) {
        b = b.http2_prior_knowledge(true);
    }
    let mut has_user_agent = false;
    for h in &args.headers {
        let (n, v) = split_header(h)?;
        has_user_agent |= n.eq_ignore_ascii_case("user-agent");
        b = b.header(n, v);
    }
    if !has_user_agent {
        let ua = net
            .user_agent
            .clone()
            .unwrap_or_else(|| format!("fallback/{}", env!("CARGO_PKG_VERSION")));
        b = b.header("User-Agent", ua);
    }
    if let Some(user) = &args.user {
        let (u, p) = match user.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (user.as_str(), None),
        };
        b = b.basic_auth(u, p);
    }
    for name in &cfg.secret_headers {
        b = b.secret_header(name.clone());
    }
    if let Some(o) = observer {
        b = b.observer(o);
    }

    for (i, ep) in cfg.endpoint.iter().enumerate() {
        let has_body = ep.json.is_some() || ep.body.is_some();
        let method = ep
            .method
            .clone()
            .unwrap_or_else(|| if has_body { "POST" } else { "GET" }.into());
        let mut link = Link::new(method, ep.url.clone());
        if let Some(n) = &ep.name {
            link = link.name(n.clone());
        }
        for (n, v) in &ep.headers {
            link = link.header(n.clone(), v.clone());
        }
        if let Some(j) = &ep.json {
            link = link.json(j).header("Accept", "application/json");
        } else if let Some(body) = &ep.body {
            link = link.body(body.clone());
        }
        if let Some(t) = ep.timeout {
            link = link.timeout(t);
        }
        if let Some(t) = ep.idle_timeout {
            link = link.idle_timeout(t);
        }
        if let Some(r) = ep.retries {
            link = link.retries(r);
        }
        let own = ep.net();
        if own.transport_keys() {
            let name = format!("endpoint {i} ({})", ep.name.as_deref().unwrap_or(&ep.url));
            let t = transport(&net.overlaid(&own), &name)?
                .build()
                .map_err(|e| Usage(format!("{name}: {e}")))?;
            link = link.transport(t);
        }
        if let Some(h2c) = own.http2_prior_knowledge {
            link = link.http2_prior_knowledge(h2c);
        }
        if let Some(ua) = &own.user_agent {
            link = link.header("User-Agent", ua.clone());
        }
        b = b.link(link);
    }

    let (body, is_json) = match (&args.data, &args.json) {
        (Some(d), _) => (Some(read_arg("-d", d)?), false),
        (None, Some(j)) => (Some(json_arg(j)?), true),
        (None, None) => (None, false),
    };
    let has_content_type = args.headers.iter().any(|h| {
        h.split(':')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case("content-type"))
    });
    if !args.urls.is_empty() {
        let method = match (&args.method, args.head) {
            (Some(m), _) => m.clone(),
            (None, true) => "HEAD".into(),
            (None, false) => if body.is_some() { "POST" } else { "GET" }.into(),
        };
        for url in &args.urls {
            let mut link = Link::new(method.clone(), url.clone());
            if let Some(path) = &args.unix_socket {
                link = link.unix_socket(path.clone());
            }
            if let Some(body) = &body {
                link = link.body(body.clone());
                // curl's default for -d.
                if !is_json && !has_content_type {
                    link = link.header("Content-Type", "application/x-www-form-urlencoded");
                }
            }
            if is_json {
                link = link
                    .header("Content-Type", "application/json")
                    .header("Accept", "application/json");
            }
            b = b.link(link);
        }
    }
    if cfg.endpoint.is_empty() && args.urls.is_empty() {
        return Err(Usage(
            "no URL given: pass one or more URLs, or --config FILE".into(),
        ));
    }
    b.build().map_err(|e| Usage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &[u8]) -> Result<Checked, serde_json::Error> {
        serde_json::from_reader(json)
    }

    #[test]
    fn a_checked_value_is_refused_where_a_parsed_one_would_be() {
        for ok in [
            &br#"{"a": [1, -2, 3.5e3, true, null, "\u00e9\ud834\udd1e"]}"#[..],
            "\"é € 𝄞\"".as_bytes(),
            b" 0 ",
        ] {
            assert!(check(ok).is_ok(), "{}", String::from_utf8_lossy(ok));
            assert!(serde_json::from_slice::<serde_json::Value>(ok).is_ok());
        }
        let deep = [b"[".repeat(200), b"]".repeat(200)].concat();
        for bad in [
            &b"\"caf\xe9\""[..],
            b"\"\\ud800\"",
            b"{\"a\": 1,}",
            b"[1] 2",
            b"",
            &deep,
        ] {
            assert!(check(bad).is_err(), "{}", String::from_utf8_lossy(bad));
            assert!(serde_json::from_slice::<serde_json::Value>(bad).is_err());
        }
    }
}

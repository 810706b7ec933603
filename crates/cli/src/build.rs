//! From the command line and the config file to a chain: every flag and key
//! maps onto a public `ChainBuilder`, `Link` or `HyperTransportBuilder`
//! setting.

use std::io::Read;

use fallback_chain::transport::{HyperTransport, HyperTransportBuilder};
use fallback_chain::{Body, Chain, ChainBuilder, Classifier, Hedge, Link};

use crate::config::{self, Net};
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
/// a file whole: `@path` is validated as it streams and then sent like
/// `-d @path`, re-read on every attempt.
fn json_arg(value: &str) -> Result<Body, Usage> {
    use serde::de::IgnoredAny;
    let invalid =
        |what: &str, e: serde_json::Error| Usage(format!("--json{what}: invalid JSON: {e}"));
    match value.strip_prefix('@') {
        Some("-") => {
            // Stdin can't be read twice: kept as it is validated, so input
            // that can never be JSON (`< /dev/zero`) stops at its first byte.
            let mut keep = Keep {
                inner: std::io::BufReader::new(std::io::stdin().lock()),
                kept: Vec::new(),
            };
            serde_json::from_reader::<_, IgnoredAny>(&mut keep).map_err(|e| {
                if e.is_io() {
                    Usage(format!("--json @-: cannot read stdin: {e}"))
                } else {
                    invalid(" @-", e)
                }
            })?;
            // JSON is UTF-8, which skipping over a value doesn't check.
            std::str::from_utf8(&keep.kept)
                .map_err(|e| Usage(format!("--json @-: invalid JSON: not UTF-8: {e}")))?;
            Ok(Body::bytes(keep.kept))
        }
        Some(path) => {
            let file =
                std::fs::File::open(path).map_err(|e| Usage(format!("--json @{path}: {e}")))?;
            // A device or a pipe is refused before a byte is read: it could
            // be endless, and it can't be re-read for another attempt.
            if !file.metadata().is_ok_and(|m| m.is_file()) {
                return Err(Usage(format!("--json @{path}: not a regular file")));
            }
            let utf8 = Utf8Check {
                inner: file,
                carry: Vec::new(),
            };
            serde_json::from_reader::<_, IgnoredAny>(std::io::BufReader::new(utf8)).map_err(
                |e| match e.io_error_kind() {
                    Some(std::io::ErrorKind::InvalidData) | None => {
                        invalid(&format!(" @{path}"), e)
                    }
                    Some(_) => Usage(format!("--json @{path}: {e}")),
                },
            )?;
            Ok(Body::file(path))
        }
        None => {
            serde_json::from_str::<IgnoredAny>(value).map_err(|e| invalid("", e))?;
            Ok(Body::bytes(value.as_bytes().to_vec()))
        }
    }
}

/// A reader that fails with `InvalidData` unless what passes through it is
/// UTF-8, holding at most a character's first 3 bytes between reads.
struct Utf8Check<R> {
    inner: R,
    /// The start of a character split by the last read.
    carry: Vec<u8>,
}

impl<R: Read> Read for Utf8Check<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let not_utf8 = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8");
        let n = self.inner.read(buf)?;
        if n == 0 {
            return if self.carry.is_empty() {
                Ok(0)
            } else {
                Err(not_utf8())
            };
        }
        let mut check = std::mem::take(&mut self.carry);
        check.extend_from_slice(&buf[..n]);
        if let Err(e) = std::str::from_utf8(&check) {
            // `None`: the input ends inside a character, which the next
            // read may complete.
            if e.error_len().is_some() {
                return Err(not_utf8());
            }
            self.carry = check[e.valid_up_to()..].to_vec();
        }
        Ok(n)
    }
}

/// A reader that keeps a copy of what passes through it.
struct Keep<R> {
    inner: R,
    kept: Vec<u8>,
}

impl<R: Read> Read for Keep<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.kept.extend_from_slice(&buf[..n]);
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

/// The largest certificate or key file read: CA bundles are a few hundred
/// KiB. A bound, so that a path such as `/dev/zero` is an error, not a hang.
const MAX_PEM: u64 = 4 * 1024 * 1024;

fn read_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>, Usage> {
    config::read_limited(path, MAX_PEM)
        .map_err(|e| Usage(format!("{what} {}: {e}", path.display())))
}

/// The transport options a `Net` asks for.
pub(crate) fn transport(net: &Net, where_: &str) -> Result<HyperTransportBuilder, Usage> {
    let mut t = HyperTransport::builder();
    if let Some(p) = &net.ca_cert {
        t = t.add_root_certificate_pem(read_file("ca_cert", p)?);
    }
    match (&net.client_cert, &net.client_key) {
        (Some(c), Some(k)) => {
            t = t.identity_pem(read_file("client_cert", c)?, read_file("client_key", k)?)
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(Usage(format!(
                "{where_}: a client certificate needs both the certificate and its key \
                 (--cert and --key, or client_cert and client_key)"
            )))
        }
        (None, None) => {}
    }
    if net.insecure == Some(true) {
        t = t.danger_accept_invalid_certs(true);
    }
    if let Some(p) = &net.proxy {
        t = t.proxy(p.clone());
    }
    if let Some(n) = &net.no_proxy {
        t = t.no_proxy(n.clone());
    }
    if let Some(c) = net.connect_timeout {
        t = t.connect_timeout(Some(c));
    }
    Ok(t)
}

/// The command line's network flags, over the config's chain-wide keys.
pub(crate) fn command_line_net(
    args: &NetArgs,
    user_agent: Option<&String>,
    cfg: &config::Config,
) -> Net {
    cfg.net().overlaid(&Net {
        ca_cert: args.cacert.clone(),
        client_cert: args.cert.clone(),
        client_key: args.key.clone(),
        insecure: args.insecure.then_some(true),
        proxy: args.proxy.clone(),
        no_proxy: args.noproxy.clone(),
        http2_prior_knowledge: args.http2_prior_knowledge.then_some(true),
        connect_timeout: args.connect_timeout,
        user_agent: user_agent.cloned(),
    })
}

/// Builds the chain: config links first, then the command line's URLs.
pub fn chain(
    args: &SendArgs,
    cfg: &config::Config,
    observer: Option<crate::verbose::Verbose>,
) -> Result<Chain, Usage> {
    let mut b: ChainBuilder = Chain::builder().breaker(None);
    if let Some(t) = args.timeout.or(cfg.timeout) {
        b = b.timeout(t);
    }
    if let Some(d) = args.deadline.or(cfg.deadline) {
        b = b.deadline(d);
    }
    if let Some(r) = args.retries.or(cfg.retries) {
        b = b.retries(r);
    }
    if let Some(h) = args.hedge.or(cfg.hedge) {
        b = b.hedge(Hedge::fixed(h));
    }
    if let Some(spec) = args.fail_on.as_deref().or(cfg.fail_on.as_deref()) {
        b = b.classifier(Classifier::parse(spec).map_err(|e| Usage(format!("--fail-on: {e}")))?);
    }
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
    let idempotent = args.idempotent || cfg.idempotent.unwrap_or(false);

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
        if let Some(r) = ep.retries {
            link = link.retries(r);
        }
        if idempotent {
            link = link.idempotent(true);
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
            if idempotent {
                link = link.idempotent(true);
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

    /// Hands out at most `step` bytes a read, so characters split anywhere.
    struct Trickle<'a> {
        rest: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.rest.len().min(self.step).min(buf.len());
            buf[..n].copy_from_slice(&self.rest[..n]);
            self.rest = &self.rest[n..];
            Ok(n)
        }
    }

    fn check(bytes: &[u8], step: usize) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Utf8Check {
            inner: Trickle { rest: bytes, step },
            carry: Vec::new(),
        }
        .read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn utf8_check_passes_text_split_anywhere_and_stops_at_the_first_bad_byte() {
        let text = "a é € 𝄞 z".as_bytes();
        for step in 1..=text.len() {
            assert_eq!(check(text, step).unwrap(), text, "step {step}");
            // A lone continuation byte, a cut 4-byte character at the end,
            // and an overlong encoding.
            for bad in [&b"a\x80b"[..], &text[..text.len() - 3], b"\xc0\xaf"] {
                let bad = [text, bad].concat();
                let e = check(&bad, step).unwrap_err();
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "step {step}");
            }
        }
    }
}

//! Entry points for the fuzz targets (`fuzz/`), and for the tests that
//! replay their corpora. Not an API.
//!
//! Each takes any bytes, must not panic or hang on them, and checks what
//! its parser promises: what it accepts is usable, and what it refuses is
//! named in the error.

use std::path::Path;

use clap::Parser;

use fallback_chain_proxy::units;

use crate::{build, config, SendArgs};

pub use fallback_chain_proxy::fuzz::Harness as ServeHarness;

/// `--timeout`, `--deadline` and every other duration.
pub fn duration(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    match units::duration(&s) {
        Ok(d) => assert!(!d.is_zero(), "{s:?} was taken as a zero duration"),
        Err(e) => assert!(e.contains(&format!("{s:?}")), "{e:?} does not name {s:?}"),
    }
}

/// `--max-body`, `--replay-buffer` and every other size.
pub fn size(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Err(e) = units::size(&s) {
        assert!(e.contains(&format!("{s:?}")), "{e:?} does not name {s:?}");
    }
}

/// `-H 'Name: value'`.
pub fn header(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok((name, value)) = build::split_header(&s) {
        assert!(!name.is_empty());
        assert_eq!(name, name.trim());
        assert_eq!(value, value.trim());
    }
}

/// `--json`'s check: what it accepts, read from a file or stdin (a reader)
/// or given inline (a string), is exactly what a JSON parser accepts.
pub fn json_body(data: &[u8]) {
    let parsed = serde_json::from_slice::<serde_json::Value>(data).is_ok();
    let read = serde_json::from_reader::<_, build::Checked>(data).is_ok();
    assert_eq!(read, parsed, "read {read}, parsed {parsed}");
    if let Ok(s) = std::str::from_utf8(data) {
        let inline = serde_json::from_str::<build::Checked>(s).is_ok();
        assert_eq!(inline, parsed, "inline {inline}, parsed {parsed}");
    }
}

/// A config file for `send` and `check`, read and built into a chain.
pub fn send_config(data: &[u8]) {
    let Some(cfg) = config_text(data) else {
        return;
    };
    let mut cfg = cfg;
    no_files(&mut cfg);
    let args = SendArgs::try_parse_from(["send"]).expect("no arguments");
    let _ = build::chain(&args, &cfg, None);
}

/// A config file for `serve`, read and built into the proxy's routes.
pub fn serve_config(data: &[u8]) {
    fallback_chain_proxy::fuzz::config(data);
}

/// A config's text for `send`, read; `None` when it is refused. A refusal must not
/// show a string value the text gave where something else belongs: it may
/// be a secret typed in the wrong place.
fn config_text(data: &[u8]) -> Option<config::Config> {
    let text = std::str::from_utf8(data).ok()?;
    match config::parse(text, Path::new("fuzz.toml")) {
        Ok(cfg) => Some(cfg),
        Err(e) => {
            let shown = e
                .match_indices("string \"")
                .any(|(i, m)| !e[i + m.len()..].starts_with('…'));
            assert!(!shown, "a string value showed: {e}");
            None
        }
    }
}

/// Certificate and key paths, cleared: a fuzzer that names `/dev/stdin`
/// or a FIFO would wait on it for good, as the command would (a file too
/// large is refused: `a_certificate_or_config_path_that_never_ends…`).
fn no_files(cfg: &mut config::Config) {
    cfg.ca_cert = None;
    cfg.client_cert = None;
    cfg.client_key = None;
    for e in &mut cfg.endpoint {
        e.ca_cert = None;
        e.client_cert = None;
        e.client_key = None;
    }
}

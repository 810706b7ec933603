//! Entry points for the fuzz targets (`fuzz/`), and for the tests that
//! replay their corpora. Not an API.
//!
//! Each takes any bytes, must not panic or hang on them, and checks what
//! its parser promises: what it accepts is usable, and what it refuses is
//! named in the error.

use std::path::Path;

use clap::Parser;

use crate::{build, config, units, SendArgs};

pub use crate::serve::fuzz::Harness as ServeHarness;

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

/// A config file for `send` and `check`, read and built into a chain.
pub fn send_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let Ok(cfg) = config::parse(text, path).and_then(|c| config::for_send(c, path)) else {
        return;
    };
    let args = SendArgs::parse_from(["send"]);
    let _ = build::chain(&args, &cfg, None);
}

pub use crate::serve::fuzz::config as serve_config;

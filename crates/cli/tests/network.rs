//! End to end, the binary against real TLS servers, proxies and redirects
//! on loopback: one test per option of the curl-like set, and the config
//! keys that mean the same.

mod common;

use std::path::Path;

use common::*;
use fallback_chain_testserver::proxy::Proxy;
use fallback_chain_testserver::tls::{HttpServer, TestCa};
use fallback_chain_testserver::{Behavior, Reply, Server};

fn pem(dir: &Path, name: &str, text: &str) -> String {
    write(dir, name, text.as_bytes())
}

#[test]
fn cacert_trusts_a_private_ca_and_so_does_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ca_file = pem(dir.path(), "ca.pem", &ca.cert_pem());
    let server = HttpServer::builder().tls(&ca).start();
    let url = server.url("/x");

    let o = run_env(&["send", "--report", "json", &url], &[]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(report(&o)["attempts"][0]["outcome"], "connect");
    assert!(stderr(&o).contains("UnknownIssuer"), "{}", stderr(&o));

    let o = run_env(&["send", "--cacert", &ca_file, "-d", "hi", &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout, b"hi");

    let o = run_env(&["send", "-d", "env", &url], &[("SSL_CERT_FILE", &ca_file)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout, b"env");

    // The config's key means the same.
    let cfg = format!("ca_cert = \"{ca_file}\"\n[[endpoint]]\nurl = \"{url}\"\n");
    let cfg = write(dir.path(), "chain.toml", cfg.as_bytes());
    let o = run_env(&["send", "-c", &cfg], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn cert_and_key_give_a_client_identity_and_a_post_fails_over_without() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ca_file = pem(dir.path(), "ca.pem", &ca.cert_pem());
    let id = ca.client_identity("cli");
    let cert = pem(dir.path(), "cert.pem", &id.cert_pem);
    let key = pem(dir.path(), "key.pem", &id.key_pem);
    let server = HttpServer::builder()
        .tls(&ca)
        .require_client_cert(&ca)
        .start();
    let backup = Server::start(Behavior::Echo);

    let o = run_env(
        &[
            "send",
            "--cacert",
            &ca_file,
            "--cert",
            &cert,
            "--key",
            &key,
            "-d",
            "x",
            &server.url("/"),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(server.requests()[0].client_cert);

    let o = run_env(
        &[
            "send",
            "--cacert",
            &ca_file,
            "--report",
            "json",
            "-d",
            "order",
            &server.url("/"),
            &backup.url("/"),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(report(&o)["attempts"][0]["outcome"], "connect");
    assert_eq!(backup.request_count(), 1);

    // Per link in the config: only the first link has the identity.
    let cfg = format!(
        "ca_cert = \"{ca_file}\"\n[[endpoint]]\nurl = \"{}\"\nclient_cert = \"{cert}\"\nclient_key = \"{key}\"\n",
        server.url("/per-link")
    );
    let cfg = write(dir.path(), "chain.toml", cfg.as_bytes());
    let o = run_env(&["send", "-c", &cfg], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // --cert without --key is refused before anything is sent.
    let o = run_env(&["send", "--cert", &cert, &server.url("/")], &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn insecure_skips_verification_and_the_report_says_so() {
    let ca = TestCa::new();
    let server = HttpServer::builder().tls(&ca).start();
    let o = run_env(&["send", "-k", "--report", "text", &server.url("/")], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("[insecure: certificate not verified]"),
        "{}",
        stderr(&o)
    );
    let o = run_env(
        &["send", "--insecure", "--report", "json", &server.url("/")],
        &[],
    );
    assert_eq!(report(&o)["attempts"][0]["insecure"], true);
}

#[test]
fn http2_prior_knowledge_speaks_h2c() {
    let server = HttpServer::start();
    let o = run_env(&["send", "-i", &server.url("/")], &[]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("HTTP/1.1 200"));
    let o = run_env(
        &["send", "--http2-prior-knowledge", "-i", &server.url("/")],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert_eq!(server.requests().last().unwrap().version, "HTTP/2.0");

    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[[endpoint]]\nurl = \"{}\"\nhttp2_prior_knowledge = true\n",
        server.url("/c")
    );
    let cfg = write(dir.path(), "chain.toml", cfg.as_bytes());
    assert_eq!(code(&run_env(&["send", "-c", &cfg], &[])), 0);
    assert_eq!(server.requests().last().unwrap().version, "HTTP/2.0");
}

#[test]
fn proxy_noproxy_and_the_proxy_variables() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = pem(dir.path(), "ca.pem", &ca.cert_pem());
    let proxy = Proxy::builder().credentials("u", "pr0xy-pw").start();
    let with_creds = proxy.url().replace("http://", "http://u:pr0xy-pw@");
    let plain = Server::start(Behavior::ok("plain"));
    let tls = HttpServer::builder().tls(&ca).start();

    let o = run_env(&["send", "-x", &with_creds, &plain.url("/p")], &[]);
    assert_eq!(
        (code(&o), &o.stdout[..]),
        (0, &b"plain"[..]),
        "{}",
        stderr(&o)
    );
    let o = run_env(
        &[
            "send",
            "-x",
            &with_creds,
            "--cacert",
            &ca_file,
            &tls.url("/t"),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let passed = proxy.requests();
    assert_eq!(passed.len(), 2);
    assert_eq!(passed[0].target, plain.url("/p"));
    assert_eq!(passed[1].method, "CONNECT");

    // --noproxy bypasses it; so does NO_PROXY.
    let o = run_env(
        &[
            "send",
            "-x",
            &with_creds,
            "--noproxy",
            "127.0.0.1",
            &plain.url("/"),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(proxy.requests().len(), 2);

    // The variables, as curl reads them.
    let o = run_env(
        &["send", &plain.url("/env")],
        &[("http_proxy", &with_creds)],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(proxy.requests().len(), 3);
    let o = run_env(
        &["send", &plain.url("/env")],
        &[("http_proxy", &with_creds), ("NO_PROXY", "127.0.0.1")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(proxy.requests().len(), 3);

    // Wrong credentials: the link fails and the password never shows.
    let wrong = proxy.url().replace("http://", "http://u:WR0NG-pw@");
    let o = run_env(
        &[
            "send",
            "-x",
            &wrong,
            "-v",
            "--report",
            "text",
            &plain.url("/"),
        ],
        &[],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!stderr(&o).contains("WR0NG-pw"), "{}", stderr(&o));
    assert!(stderr(&o).contains("407"), "{}", stderr(&o));
}

#[test]
fn connect_timeout_bounds_the_connect() {
    let hang = Server::connect_hangs();
    let backup = Server::start(Behavior::Echo);
    let o = run_env(
        &[
            "send",
            "--connect-timeout",
            "200ms",
            "--report",
            "json",
            "-d",
            "p",
            &hang.url("/"),
            &backup.url("/"),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["attempts"][0]["outcome"], "timeout");
    assert_eq!(r["attempts"][0]["phase"], "connect");
    assert!(
        r["attempts"][0]["elapsed_ms"].as_f64().unwrap() < 1500.0,
        "{r}"
    );
}

#[test]
fn location_follows_redirects_within_max_redirs() {
    let s = Server::start(Behavior::custom(|req, _| match req.path.as_str() {
        "/a" => Reply::new(301).header("location", "/b").into(),
        "/b" => Reply::new(302).header("location", "/c").into(),
        _ => Behavior::ok("landed"),
    }));
    let o = run_env(&["send", &s.url("/a")], &[]);
    assert_eq!(code(&o), 1, "off by default: a 3xx fails");
    let o = run_env(&["send", "-L", "--report", "json", &s.url("/a")], &[]);
    assert_eq!(
        (code(&o), &o.stdout[..]),
        (0, &b"landed"[..]),
        "{}",
        stderr(&o)
    );
    assert_eq!(outcomes(&report(&o)), ["redirect", "redirect", "ok"]);
    let o = run_env(
        &[
            "send",
            "-L",
            "--max-redirs",
            "1",
            "--report",
            "json",
            &s.url("/a"),
        ],
        &[],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let r = report(&o);
    assert!(
        r["attempts"][1]["error"]
            .as_str()
            .unwrap()
            .contains("too many redirects"),
        "{r}"
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "follow_redirects = true\n[[endpoint]]\nurl = \"{}\"\n",
        s.url("/a")
    );
    let cfg = write(dir.path(), "chain.toml", cfg.as_bytes());
    assert_eq!(code(&run_env(&["send", "-c", &cfg], &[])), 0);
}

#[test]
fn compressed_asks_for_and_decodes_gzip() {
    use tokio::io::AsyncReadExt;
    let text = "fallback ".repeat(500);
    let mut packed = Vec::new();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(
            async_compression::tokio::bufread::GzipEncoder::new(text.as_bytes())
                .read_to_end(&mut packed),
        )
        .unwrap();
    let s = Server::start(
        Reply::new(200)
            .header("content-encoding", "gzip")
            .body(packed),
    );
    let o = run_env(&["send", "--compressed", &s.url("/")], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout, text.as_bytes());
    assert!(s.requests()[0]
        .header("accept-encoding")
        .unwrap()
        .contains("gzip"));
}

#[test]
fn user_and_user_agent() {
    let s = Server::start(Behavior::Echo);
    let o = run_env(&["send", "-u", "alice:s3cr3t-pw", "-v", &s.url("/")], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let got = &s.requests()[0];
    assert_eq!(
        got.header("authorization"),
        Some("Basic YWxpY2U6czNjcjN0LXB3")
    );
    assert_eq!(
        got.header("user-agent"),
        Some(format!("fallback/{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    let err = stderr(&o);
    assert!(err.contains("authorization: <redacted>"), "{err}");
    assert!(
        !err.contains("YWxpY2U6czNjcjN0LXB3") && !err.contains("s3cr3t-pw"),
        "{err}"
    );

    run_env(&["send", "-A", "probe/1.0", &s.url("/")], &[]);
    assert_eq!(s.requests()[1].header("user-agent"), Some("probe/1.0"));
    run_env(&["send", "-H", "User-Agent: by-header", &s.url("/")], &[]);
    assert_eq!(s.requests()[2].header("user-agent"), Some("by-header"));
}

#[test]
fn include_and_head_print_the_status_line_and_headers() {
    let s = Server::start(Reply::new(200).header("x-served-by", "one").body("body"));
    let o = run_env(&["send", "-i", &s.url("/")], &[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("x-served-by: one\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\nbody"), "{out}");

    let o = run_env(&["send", "-I", &s.url("/")], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("\r\n\r\n"),
        "{out}"
    );
    assert_eq!(s.requests()[1].method, "HEAD");

    // With -o, the head goes into the file too, as with curl.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out");
    let o = run_env(
        &["send", "-i", "-o", file.to_str().unwrap(), &s.url("/")],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(
        saved.starts_with("HTTP/1.1 200 OK") && saved.ends_with("body"),
        "{saved}"
    );
}

#[test]
fn silent_and_verbose() {
    let down = Server::start(Behavior::status(503));
    let up = Server::start(Behavior::ok("up"));
    let o = run_env(
        &[
            "send",
            "-s",
            "--report",
            "text",
            &down.url("/"),
            &up.url("/"),
        ],
        &[],
    );
    assert_eq!(code(&o), 0);
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    // Errors still print.
    let o = run_env(&["send", "-s", &down.url("/")], &[]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("fallback: "), "{}", stderr(&o));

    let o = run_env(
        &[
            "send",
            "-v",
            "-H",
            "X-Api-Key: k3y-value",
            &format!("{}?token=t0k", down.url("/x")),
            &up.url("/y"),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    for needle in [
        "> GET /x?token=*** HTTP/1.1",
        "< HTTP/1.1 503",
        "> GET /y HTTP/1.1",
        "< HTTP/1.1 200",
        "x-api-key: <redacted>",
        "=> 200 from link 1",
    ] {
        assert!(err.contains(needle), "{needle:?} missing:\n{err}");
    }
    assert!(!err.contains("k3y-value") && !err.contains("t0k"), "{err}");
}

#[test]
fn data_without_a_content_type_is_a_form() {
    let s = Server::start(Behavior::Echo);
    run_env(&["send", "-d", "a=b&c=d", &s.url("/")], &[]);
    assert_eq!(
        s.requests()[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    run_env(
        &[
            "send",
            "-d",
            "x",
            "-H",
            "Content-Type: text/plain",
            &s.url("/"),
        ],
        &[],
    );
    assert_eq!(s.requests()[1].header("content-type"), Some("text/plain"));
}

#[test]
fn per_link_config_keys_apply_to_their_link_only() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start();
    let a = Server::start(Behavior::status(503));
    let b = Server::start(Behavior::Echo);
    let cfg = format!(
        "user_agent = \"chain-ua\"\n\
         [[endpoint]]\nurl = \"{}\"\nproxy = \"{}\"\nuser_agent = \"link-ua\"\nconnect_timeout = \"1s\"\n\
         [[endpoint]]\nurl = \"{}\"\n",
        a.url("/a"),
        proxy.url(),
        b.url("/b")
    );
    let cfg = write(dir.path(), "chain.toml", cfg.as_bytes());
    let o = run_env(&["send", "-c", &cfg], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        proxy.requests().len(),
        1,
        "only the first link uses the proxy"
    );
    assert_eq!(a.requests()[0].header("user-agent"), Some("link-ua"));
    assert_eq!(b.requests()[0].header("user-agent"), Some("chain-ua"));
    let o = run(&["check", "-c", &cfg]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn a_certificate_or_config_path_that_never_ends_is_refused_not_read_forever() {
    let server = Server::start(Behavior::ok("never reached"));
    let o = run(&["send", "--cacert", "/dev/zero", &server.url("/")]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("/dev/zero"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("larger than the limit"),
        "{}",
        stderr(&o)
    );
    assert_eq!(server.request_count(), 0);
}

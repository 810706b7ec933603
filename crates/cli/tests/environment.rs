//! Configuration from the environment, through the built binary: every
//! flag of `send` and `serve` from `FALLBACK_<FLAG>`, and `${NAME}` in a
//! config file's strings. Values from the environment never print.

mod common;

use common::proxy::Proxy;
use common::*;

use fallback_chain_testserver::{Behavior, Server};

#[test]
fn a_flag_comes_from_its_variable_and_the_command_line_wins() {
    let s = Server::start(Behavior::ok("hello"));
    let o = run_env(
        &["send", &s.url("/")],
        &[("FALLBACK_USER_AGENT", "from-env/1")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run_env(
        &["send", "-A", "from-line/1", &s.url("/")],
        &[("FALLBACK_USER_AGENT", "from-env/1")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let agents: Vec<String> = s
        .requests()
        .iter()
        .map(|r| r.header("user-agent").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(agents, ["from-env/1", "from-line/1"]);
}

#[test]
fn a_switch_takes_1_and_0_from_its_variable() {
    let s = Server::start(Behavior::ok("hello"));
    let o = run_env(&["send", &s.url("/")], &[("FALLBACK_INCLUDE", "1")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        o.stdout.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = run_env(&["send", &s.url("/")], &[("FALLBACK_INCLUDE", "0")]);
    assert_eq!(o.stdout, b"hello");
}

#[test]
fn a_bad_value_from_a_variable_names_the_variable_and_sends_nothing() {
    let s = Server::start(Behavior::ok("hello"));
    let o = run_env(&["send", &s.url("/")], &[("FALLBACK_TIMEOUT", "soon")]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("FALLBACK_TIMEOUT"), "{}", stderr(&o));
    assert_eq!(s.request_count(), 0);
}

#[test]
fn help_names_each_variable_and_never_shows_a_value() {
    let o = run_env(
        &["send", "--help"],
        &[("FALLBACK_PROXY", "http://user:hunter2@127.0.0.1:9")],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("FALLBACK_TIMEOUT"), "{out}");
    assert!(out.contains("FALLBACK_PROXY"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    let o = run_env(&["serve", "--help"], &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("FALLBACK_LISTEN"), "{out}");
}

#[test]
fn a_config_file_takes_variables_in_its_strings_and_never_prints_them() {
    let s = Server::start(Behavior::ok("hello"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "chain.toml",
        b"# ${NOT_SET} in a comment is left alone\n\
          timeout = \"${TIMEOUT:-2s}\"\n\
          [[endpoint]]\n\
          url = \"http://${UPSTREAM}/orders\"\n\
          headers = { X-Token = \"${TOKEN}\" }\n",
    );
    let env = [
        ("UPSTREAM", s.addr().to_string()),
        ("TOKEN", "tok-\"quoted\"-value".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let o = run_env(&["send", "-c", &cfg, "-v"], &env);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let got = &s.requests()[0];
    assert_eq!(got.header("x-token"), Some("tok-\"quoted\"-value"));
    assert!(
        !stderr(&o).contains("tok-"),
        "verbose output: {}",
        stderr(&o)
    );

    let o = run_env(&["check", "-c", &cfg], &env);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("${UPSTREAM}"), "{out}");
    assert!(!out.contains(&s.addr().to_string()), "{out}");
    assert!(!out.contains("tok-"), "{out}");
    assert!(out.contains("timeout: 2s"), "the default: {out}");
}

#[test]
fn an_unset_variable_is_named_with_its_line_and_nothing_is_sent() {
    let s = Server::start(Behavior::ok("hello"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "chain.toml",
        format!(
            "[[endpoint]]\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer ${{API_TOKEN}}\" }}\n",
            s.url("/")
        )
        .as_bytes(),
    );
    let o = run_env(&["send", "-c", &cfg], &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("API_TOKEN") && err.contains("line 3"), "{err}");
    assert_eq!(s.request_count(), 0);
}

#[test]
fn a_refused_value_from_the_environment_is_not_quoted_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "chain.toml",
        b"timeout = \"${TIMEOUT}\"\n[[endpoint]]\nurl = \"http://127.0.0.1:9/\"\n",
    );
    let o = run_env(&["check", "-c", &cfg], &[("TIMEOUT", "sk-live-secret")]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("line 1"), "{err}");
    assert!(!err.contains("sk-live"), "{err}");
}

#[test]
fn serve_reads_its_flags_and_its_config_from_the_environment() {
    let s = Server::start(Behavior::ok("served"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "proxy.toml",
        b"[[upstream]]\nname = \"primary\"\nurl = \"http://${UPSTREAM}\"\nheaders = { X-Token = \"${TOKEN}\" }\n",
    );
    let addr = s.addr().to_string();
    let proxy = Proxy::start_env(
        &[],
        &[
            ("FALLBACK_CONFIG", cfg.as_str()),
            ("UPSTREAM", addr.as_str()),
            ("TOKEN", "tok-123"),
        ],
        std::process::Stdio::null(),
    );
    let (status, _, body) = proxy.request("GET /x HTTP/1.1", b"");
    assert_eq!(status, 200);
    assert_eq!(body, b"served");
    assert_eq!(s.requests()[0].header("x-token"), Some("tok-123"));
}

/// The ```toml block of docs/kubernetes.md.
fn kubernetes_config() -> String {
    let doc = include_str!("../../../docs/kubernetes.md");
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = doc[start..].find("```").expect("its end");
    doc[start..start + len].to_owned()
}

#[test]
fn the_kubernetes_guide_s_config_serves_with_its_variables_and_flags_from_the_environment() {
    let primary = Server::start(Behavior::status(503));
    let backup = Server::start(Behavior::ok("from the backup"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "fallback.toml", kubernetes_config().as_bytes());
    let (p, b) = (primary.addr().to_string(), backup.addr().to_string());
    let proxy = Proxy::start_env(
        &[],
        &[
            ("FALLBACK_CONFIG", cfg.as_str()),
            ("FALLBACK_DRAIN", "20s"),
            ("PRIMARY_HOST", p.as_str()),
            ("BACKUP_HOST", b.as_str()),
            ("ORDERS_TOKEN", "k8s-secret-token"),
        ],
        std::process::Stdio::null(),
    );
    let (status, _, body) = proxy.request("GET /orders/42 HTTP/1.1", b"");
    assert_eq!(status, 200);
    assert_eq!(body, b"from the backup");
    let seen = &backup.requests()[0];
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer k8s-secret-token")
    );
    assert_eq!(seen.path, "/orders/42");

    // Without the secret's variable, the proxy does not start, and says
    // which variable and where.
    let o = run_env(&["serve", "--config", &cfg], &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("ORDERS_TOKEN") && err.contains("line 10"),
        "{err}"
    );
}

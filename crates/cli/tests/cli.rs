//! End-to-end: the built `fallback` binary against loopback servers that
//! misbehave on purpose. One test per option and per exit status.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

use bytes::Bytes;
use fallback_chain_testserver::{Behavior, Reply, Server};

// ---- exit 0 and the report ----

#[test]
fn a_single_url_is_a_chain_of_one() {
    let s = Server::start(Behavior::ok("hello"));
    let o = run(&["send", &s.url("/x")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout, b"hello");
    // Not a terminal: the default report is none, and nothing went wrong.
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn report_json_has_the_documented_shape() {
    let refused = Server::refused();
    let ok = Server::start(Behavior::ok("fine"));
    let o = run(&["send", "--report", "json", &refused.url("/"), &ok.url("/")]);
    assert_eq!(code(&o), 0);
    let r = report(&o);
    assert_eq!(r["ok"], true);
    assert_eq!(r["winner"], 1);
    assert_eq!(r["status"], 200);
    assert!(r["elapsed_ms"].as_f64().unwrap() >= 0.0);
    let a = &r["attempts"][0];
    assert_eq!(a["endpoint"], 0);
    assert_eq!(a["name"], refused.addr().to_string());
    assert_eq!(a["url"], refused.url("/"));
    assert_eq!(a["try"], 1);
    assert_eq!(a["outcome"], "connect");
    assert!(a["status"].is_null());
    assert!(a["error"].is_string());
    assert!(a["elapsed_ms"].is_number());
    assert_eq!(r["attempts"][1]["outcome"], "ok");
    assert!(r["attempts"][1]["error"].is_null());
}

#[test]
fn report_text_names_each_link() {
    let down = Server::start(Behavior::status(503));
    let ok = Server::start(Behavior::ok("fine"));
    let o = run(&["send", "--report", "text", &down.url("/"), &ok.url("/")]);
    let err = stderr(&o);
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].contains(&down.addr().to_string())
            && lines[0].contains("status")
            && lines[0].contains("503")
    );
    assert!(lines[1].contains(&ok.addr().to_string()) && lines[1].contains("ok"));
    assert!(lines[2].contains("200 from link 1"), "{err}");
}

#[test]
fn stdout_is_the_winner_s_body_byte_for_byte() {
    let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let s = Server::start(Reply::new(200).body(data.clone()));
    let o = run(&["send", &s.url("/")]);
    assert_eq!(o.stdout, data);
}

// ---- exit 1 ----

#[test]
fn every_link_failed_exits_1_with_the_last_body_on_stdout() {
    let a = Server::refused();
    let b = Server::start(Reply::json(503, r#"{"message":"maintenance"}"#));
    let o = run(&["send", "--report", "json", &a.url("/"), &b.url("/")]);
    assert_eq!(code(&o), 1);
    assert_eq!(o.stdout, br#"{"message":"maintenance"}"#);
    let r = report(&o);
    assert_eq!(r["ok"], false);
    assert!(r["winner"].is_null());
    assert_eq!(r["status"], 503);
    assert!(stderr(&o).contains("every link failed"));
}

#[test]
fn fail_on_makes_other_statuses_final() {
    let a = Server::start(Reply::new(404).body("no such thing"));
    let b = Server::start(Behavior::ok("fine"));
    let o = run(&[
        "send",
        "--fail-on",
        "5xx,429,408",
        "--report",
        "json",
        &a.url("/"),
        &b.url("/"),
    ]);
    assert_eq!(code(&o), 1);
    assert_eq!(o.stdout, b"no such thing");
    assert_eq!(b.request_count(), 0);
    let r = report(&o);
    assert_eq!(outcomes(&r), ["status"]);
    assert_eq!(r["ok"], false);
    // The default (non-2xx) falls back on 404.
    let o = run(&["send", &a.url("/"), &b.url("/")]);
    assert_eq!((code(&o), o.stdout.as_slice()), (0, &b"fine"[..]));
}

#[test]
fn deadline_bounds_the_call_and_exits_1() {
    let a = Server::start(Behavior::BlackHole);
    let b = Server::start(Behavior::BlackHole);
    let t = Instant::now();
    let o = run(&[
        "send",
        "--deadline",
        "300ms",
        "--report",
        "json",
        &a.url("/"),
        &b.url("/"),
    ]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("deadline"), "{}", stderr(&o));
    assert_eq!(outcomes(&report(&o)), ["timeout"]);
}

#[test]
fn timeout_moves_on_from_a_black_hole() {
    let a = Server::start(Behavior::BlackHole);
    let b = Server::start(Behavior::ok("fine"));
    let o = run(&[
        "send",
        "--timeout",
        "200ms",
        "--report",
        "json",
        &a.url("/"),
        &b.url("/"),
    ]);
    assert_eq!(code(&o), 0);
    assert_eq!(o.stdout, b"fine");
    assert_eq!(outcomes(&report(&o)), ["timeout", "ok"]);
}

#[test]
fn a_timeout_during_the_connect_lets_a_post_fail_over() {
    // `fallback send --timeout 300ms -d hello P B` with a primary that never
    // completes the handshake: nothing was sent, so the POST fails over.
    let primary = Server::connect_hangs();
    let backup = Server::start(Behavior::Echo);
    let o = run(&[
        "send",
        "--timeout",
        "300ms",
        "--report",
        "json",
        "-d",
        "hello",
        &primary.url("/x"),
        &backup.url("/x"),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout, b"hello");
    let r = report(&o);
    assert_eq!(r["attempts"][0]["outcome"], "timeout");
    assert_eq!(r["attempts"][0]["phase"], "connect");
    assert_eq!(backup.request_count(), 1);
}

#[test]
fn a_deadline_during_the_connect_is_not_an_unknown_outcome() {
    let primary = Server::connect_hangs();
    let backup = Server::start(Behavior::Echo);
    let o = run(&[
        "send",
        "--deadline",
        "300ms",
        "--report",
        "json",
        "-d",
        "hello",
        &primary.url("/x"),
        &backup.url("/x"),
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("deadline"), "{err}");
    assert!(!err.contains("may have been processed"), "{err}");
    let r = report(&o);
    assert_eq!(r["attempts"][0]["phase"], "connect");
}

#[test]
fn retries_try_the_same_link_again() {
    let flaky = Server::start(Behavior::fail_first(
        1,
        Behavior::status(503),
        Behavior::ok("up"),
    ));
    let backup = Server::start(Behavior::ok("backup"));
    let o = run(&[
        "send",
        "--retries",
        "1",
        "--report",
        "json",
        &flaky.url("/"),
        &backup.url("/"),
    ]);
    assert_eq!(o.stdout, b"up");
    let r = report(&o);
    assert_eq!(outcomes(&r), ["status", "ok"]);
    assert_eq!(r["attempts"][1]["try"], 2);
    assert_eq!(backup.request_count(), 0);
}

#[test]
fn hedge_starts_the_backup_and_cancels_the_slow_primary() {
    let slow = Server::start(Reply::new(200).body("slow").delay(Duration::from_secs(3)));
    let fast = Server::start(Behavior::ok("fast"));
    let t = Instant::now();
    let o = run(&[
        "send",
        "--hedge",
        "100ms",
        "--report",
        "json",
        &slow.url("/"),
        &fast.url("/"),
    ]);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(o.stdout, b"fast");
    assert_eq!(outcomes(&report(&o)), ["ok", "cancelled"]);
}

#[test]
fn idempotent_allows_re_sending_a_post_with_an_unknown_outcome() {
    let hole = Server::start(Behavior::BlackHole);
    let backup = Server::start(Behavior::Echo);
    let args = ["send", "--timeout", "200ms", "-d", "order-1"];
    let o = run(&[&args[..], &[&hole.url("/"), &backup.url("/")]].concat());
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(
        err.contains("--idempotent") && err.contains("Idempotency-Key"),
        "{err}"
    );
    assert_eq!(backup.request_count(), 0);

    let o = run(&[
        &args[..],
        &["--idempotent", &hole.url("/"), &backup.url("/")],
    ]
    .concat());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout, b"order-1");
    assert_eq!(backup.request_count(), 1);
}

#[test]
fn max_body_makes_a_huge_answer_fall_back() {
    let huge = Server::start(Behavior::Huge {
        status: 200,
        len: 2 << 20,
        chunked: true,
    });
    let small = Server::start(Behavior::ok("small"));
    let o = run(&[
        "send",
        "--max-body",
        "64KiB",
        "--report",
        "json",
        &huge.url("/"),
        &small.url("/"),
    ]);
    assert_eq!(o.stdout, b"small");
    assert_eq!(outcomes(&report(&o)), ["too_large", "ok"]);
}

// ---- the request ----

#[test]
fn method_defaults_and_override() {
    let s = Server::start(Behavior::Echo);
    run(&["send", &s.url("/")]);
    run(&["send", "-d", "x", &s.url("/")]);
    run(&["send", "-X", "PUT", "-d", "x", &s.url("/")]);
    run(&["send", "--method", "delete", &s.url("/")]);
    let methods: Vec<_> = s.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["GET", "POST", "PUT", "DELETE"]);
}

#[test]
fn headers_go_to_every_link() {
    let a = Server::start(Behavior::status(500));
    let b = Server::start(Behavior::Echo);
    let o = run(&[
        "send",
        "-H",
        "X-One: 1",
        "--header",
        "X-Two:  two words ",
        &a.url("/"),
        &b.url("/"),
    ]);
    assert_eq!(code(&o), 0);
    for s in [&a, &b] {
        let r = &s.requests()[0];
        assert_eq!(r.header("x-one"), Some("1"));
        assert_eq!(r.header("x-two"), Some("two words"));
    }
}

#[test]
fn data_from_a_file_is_binary_safe_and_re_sent_to_every_link() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
    let path = write(dir.path(), "payload.bin", &data);
    let a = Server::start(Behavior::status(502));
    let b = Server::start(Behavior::Echo);
    let o = run(&[
        "send",
        "-X",
        "PUT",
        "-d",
        &format!("@{path}"),
        &a.url("/"),
        &b.url("/"),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout, data);
    assert!(a.requests()[0].body == data);
}

#[test]
fn data_from_stdin() {
    let s = Server::start(Behavior::Echo);
    let o = run_with_stdin(&["send", "-d", "@-", &s.url("/")], Some(b"from\0stdin"));
    assert_eq!(o.stdout, b"from\0stdin");
    assert_eq!(s.requests()[0].method, "POST");
}

#[test]
fn json_sets_content_type_and_accept() {
    let s = Server::start(Behavior::Echo);
    let o = run(&[
        "send",
        "--json",
        r#"{"Name": "Random", "Amount": 100}"#,
        &s.url("/"),
    ]);
    assert_eq!(code(&o), 0);
    let r = &s.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("accept"), Some("application/json"));
    assert_eq!(&r.body[..], br#"{"Name": "Random", "Amount": 100}"#);
}

#[test]
fn json_from_a_file_streams_the_file_and_is_resent_whole_on_failover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("order.json");
    // Larger than any one read, with characters split across reads.
    let text = format!(r#"{{"note": "{}"}}"#, "héllo € ".repeat(20_000));
    std::fs::write(&path, &text).unwrap();
    let down = Server::start(Behavior::status(503));
    let s = Server::start(Behavior::Echo);
    let arg = format!("@{}", path.display());
    let o = run(&["send", "--json", &arg, &down.url("/"), &s.url("/")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout, text.as_bytes());
    assert_eq!(&down.requests()[0].body[..], text.as_bytes());
    assert_eq!(
        s.requests()[0].header("content-type"),
        Some("application/json")
    );
}

#[test]
fn json_that_is_not_json_is_refused_naming_the_file_before_anything_is_sent() {
    let s = Server::start(Behavior::Echo);
    let url = s.url("/");
    let dir = tempfile::tempdir().unwrap();
    let latin1 = dir.path().join("latin1.json");
    std::fs::write(&latin1, b"{\"name\": \"caf\xe9\"}").unwrap();
    let truncated = dir.path().join("truncated.json");
    std::fs::write(&truncated, b"{\"name\": \"caf\xc3").unwrap();
    let surrogate = dir.path().join("surrogate.json");
    std::fs::write(&surrogate, br#"{"name": "\ud800"}"#).unwrap();
    for path in [&latin1, &truncated, &surrogate] {
        let arg = format!("@{}", path.display());
        let culprit = format!("{}: invalid JSON", path.display());
        assert_usage(&run(&["send", "--json", &arg, &url]), &culprit);
    }
    let o = run_with_stdin(&["send", "--json", "@-", &url], Some(b"{\"a\": \"\xff\"}"));
    assert_usage(&o, "@-: invalid JSON");
    assert_eq!(s.request_count(), 0);
}

/// Input that never ends: refused at once, not read until memory runs out.
#[cfg(target_os = "linux")]
#[test]
fn json_from_an_endless_source_is_refused_at_once() {
    let s = Server::start(Behavior::Echo);
    let url = s.url("/");
    // A device by path: refused before a byte is read. A file whose size
    // is not what it reads: refused, since each attempt sends its size.
    assert_usage(
        &run(&["send", "--json", "@/dev/zero", &url]),
        "@/dev/zero: not a regular file",
    );
    // (`/proc` files report a size of 0; this one reads as the number 0.)
    assert_usage(
        &run(&["send", "--json", "@/proc/self/oom_score_adj", &url]),
        "of a file whose size is 0",
    );
    // Endless zeros on stdin: refused at the first byte.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fallback"))
        .args(["send", "--json", "@-", &url])
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("--json @- < /dev/zero still reading after 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_usage(&child.wait_with_output().unwrap(), "@-: invalid JSON");
    assert_eq!(s.request_count(), 0);
}

// ---- -o ----

#[test]
fn output_file_is_written_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let s = Server::start(Behavior::Huge {
        status: 200,
        len: 3 << 20,
        chunked: false,
    });
    let o = run(&["send", "-o", dest.to_str().unwrap(), &s.url("/")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 3 << 20);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary left"
    );
}

#[test]
fn output_file_holds_only_the_winner_s_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.txt");
    let broken = Server::start(Behavior::Truncate {
        status: 200,
        body: Bytes::from_static(b"BROKEN-"),
        declared: 100,
    });
    let ok = Server::start(Behavior::ok("whole"));
    let o = run(&[
        "send",
        "-o",
        dest.to_str().unwrap(),
        &broken.url("/"),
        &ok.url("/"),
    ]);
    assert_eq!(code(&o), 0);
    assert_eq!(std::fs::read(&dest).unwrap(), b"whole");
}

#[test]
fn output_file_is_untouched_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.txt");
    let down = Server::start(Reply::new(500).body("server said no"));
    // Absent before: still absent, no temporary left.
    let o = run(&["send", "-o", dest.to_str().unwrap(), &down.url("/")]);
    assert_eq!(code(&o), 1);
    assert!(!dest.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert_eq!(o.stdout, b"server said no");
    // Present before: unchanged.
    std::fs::write(&dest, b"previous").unwrap();
    let truncated = Server::start(Behavior::Truncate {
        status: 200,
        body: Bytes::from_static(b"partial"),
        declared: 50,
    });
    let o = run(&["send", "-o", dest.to_str().unwrap(), &truncated.url("/")]);
    assert_eq!(code(&o), 1);
    assert_eq!(std::fs::read(&dest).unwrap(), b"previous");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

// ---- exit 2: invalid input, nothing sent ----

fn assert_usage(o: &Output, culprit: &str) {
    assert_eq!(code(o), 2, "{}", stderr(o));
    assert!(
        stderr(o).contains(culprit),
        "{culprit:?} not in {}",
        stderr(o)
    );
}

#[test]
fn invalid_input_exits_2_naming_the_culprit() {
    let s = Server::start(Behavior::ok("fine"));
    let url = s.url("/");
    assert_usage(
        &run(&["send", "ftp://example.com/x", &url]),
        "ftp://example.com/x",
    );
    assert_usage(&run(&["send", "not a url"]), "not a url");
    assert_usage(&run(&["send", "-H", "NoColon", &url]), "NoColon");
    assert_usage(
        &run(&["send", "-H", "X-Bad: a\r\nInjected: 1", &url]),
        "X-Bad",
    );
    assert_usage(&run(&["send", "--timeout", "5 parsecs", &url]), "5 parsecs");
    assert_usage(&run(&["send", "--deadline=-1s", &url]), "-1s");
    assert_usage(&run(&["send", "--max-body", "lots", &url]), "lots");
    assert_usage(&run(&["send", "--retries", "many", &url]), "many");
    assert_usage(&run(&["send", "--fail-on", "6xx", &url]), "6xx");
    assert_usage(&run(&["send", "--report", "xml", &url]), "xml");
    assert_usage(&run(&["send", "--json", "{not json", &url]), "JSON");
    assert_usage(
        &run(&["send", "-d", "@/no/such/file", &url]),
        "/no/such/file",
    );
    assert_usage(&run(&["send"]), "no URL");
    assert_usage(
        &run(&["send", "-c", "/no/such/config.toml"]),
        "/no/such/config.toml",
    );
    assert_usage(&run(&["send", "-X", "GE T", &url]), "GE T");
    assert_eq!(s.request_count(), 0, "nothing was sent");
}

#[test]
fn ports_outside_1_to_65535_exit_2() {
    // Before, these quietly went to port 80.
    for port in ["99999", "65536", "0"] {
        let url = format!("http://127.0.0.1:{port}/x");
        let o = run(&["send", &url]);
        assert_usage(&o, &format!("port {port} is out of range"));
        assert!(stderr(&o).contains("link 0"), "{}", stderr(&o));
    }
}

#[test]
fn a_header_without_a_colon_is_not_echoed_whole() {
    let o = run(&[
        "send",
        "-H",
        "X-Api-Key s3cret-value",
        "http://127.0.0.1:1/",
    ]);
    assert_usage(&o, "X-Api-Key");
    assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
}

// ---- the config file ----

#[test]
fn config_links_come_first_with_every_documented_key() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Server::start(Behavior::status(503));
    let second = Server::start(Behavior::BlackHole);
    let cli = Server::start(Behavior::Echo);
    let cfg = format!(
        r#"
timeout = "2s"
deadline = "10s"
retries = 0
fail_on = "non-2xx"
idempotent = false
max_body = "1MiB"

[[endpoint]]
name = "primary"
url = "{}"
method = "POST"
headers = {{ "X-Api-Key" = "k1" }}
json = {{ Name = "Random", Amount = 100 }}
retries = 1

[[endpoint]]
url = "{}"
method = "PUT"
body = "raw text"
timeout = "150ms"
"#,
        primary.url("/orders"),
        second.url("/orders")
    );
    let path = write(dir.path(), "chain.toml", cfg.as_bytes());
    let o = run(&[
        "send",
        "-c",
        &path,
        "--report",
        "json",
        "-X",
        "PUT",
        "-d",
        "cli body",
        &cli.url("/"),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = report(&o);
    let names: Vec<_> = r["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].clone())
        .collect();
    assert_eq!(names[0], "primary");
    assert_eq!(outcomes(&r), ["status", "status", "timeout", "ok"]);
    let got = &primary.requests()[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.header("x-api-key"), Some("k1"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    let sent: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(sent, serde_json::json!({"Name": "Random", "Amount": 100}));
    assert_eq!(&second.requests()[0].body[..], b"raw text");
    assert_eq!(o.stdout, b"cli body");
    assert_eq!(cli.requests()[0].method, "PUT");
}

#[test]
fn config_chain_wide_keys_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = Server::start(Behavior::fail_first(
        1,
        Behavior::status(500),
        Behavior::ok("up"),
    ));
    let p = write(
        dir.path(),
        "a.toml",
        format!("retries = 1\n[[endpoint]]\nurl = \"{}\"\n", flaky.url("/")).as_bytes(),
    );
    assert_eq!(run(&["send", "-c", &p]).stdout, b"up");

    let gone = Server::start(Reply::new(404).body("gone"));
    let backup = Server::start(Behavior::ok("backup"));
    let p = write(
        dir.path(),
        "b.toml",
        format!(
            "fail_on = \"5xx\"\n[[endpoint]]\nurl = \"{}\"\n[[endpoint]]\nurl = \"{}\"\n",
            gone.url("/"),
            backup.url("/")
        )
        .as_bytes(),
    );
    let o = run(&["send", "-c", &p]);
    assert_eq!((code(&o), o.stdout.as_slice()), (1, &b"gone"[..]));

    let huge = Server::start(Behavior::Huge {
        status: 200,
        len: 100_000,
        chunked: false,
    });
    let p = write(
        dir.path(),
        "c.toml",
        format!(
            "max_body = 1000\n[[endpoint]]\nurl = \"{}\"\n[[endpoint]]\nurl = \"{}\"\n",
            huge.url("/"),
            backup.url("/")
        )
        .as_bytes(),
    );
    assert_eq!(run(&["send", "-c", &p]).stdout, b"backup");

    let hole = Server::start(Behavior::BlackHole);
    let echo = Server::start(Behavior::Echo);
    let p = write(
        dir.path(),
        "d.toml",
        format!(
            "timeout = \"150ms\"\nidempotent = true\n[[endpoint]]\nurl = \"{}\"\nbody = \"x\"\n[[endpoint]]\nurl = \"{}\"\nbody = \"x\"\n",
            hole.url("/"),
            echo.url("/")
        )
        .as_bytes(),
    );
    assert_eq!(run(&["send", "-c", &p]).stdout, b"x");

    let slow = Server::start(Reply::new(200).body("slow").delay(Duration::from_secs(3)));
    let p = write(
        dir.path(),
        "e.toml",
        format!(
            "hedge = \"50ms\"\ndeadline = \"5s\"\n[[endpoint]]\nurl = \"{}\"\n[[endpoint]]\nurl = \"{}\"\n",
            slow.url("/"),
            backup.url("/")
        )
        .as_bytes(),
    );
    assert_eq!(run(&["send", "-c", &p]).stdout, b"backup");
}

#[test]
fn config_errors_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.toml",
        b"timeout = \"2s\"\n[[endpoint]]\nurl = \"http://127.0.0.1:1/\"\ncolour = \"blue\"\n",
    );
    let o = run(&["send", "-c", &p]);
    assert_usage(&o, "colour");
    assert!(stderr(&o).contains("line 4"), "{}", stderr(&o));

    let p = write(dir.path(), "bad2.toml", b"tiemout = \"2s\"\n");
    assert_usage(&run(&["check", "--config", &p]), "tiemout");

    let p = write(
        dir.path(),
        "bad3.toml",
        b"timeout = \"soon\"\n[[endpoint]]\nurl = \"http://127.0.0.1:1/\"\n",
    );
    assert_usage(&run(&["send", "-c", &p]), "soon");

    let p = write(dir.path(), "bad4.toml", b"[[endpoint]]\nname = \"x\"\n");
    assert_usage(&run(&["send", "-c", &p]), "url");

    let p = write(
        dir.path(),
        "bad5.toml",
        b"[[endpoint]]\nurl = \"http://127.0.0.1:1/\"\njson = 1\nbody = \"b\"\n",
    );
    assert_usage(&run(&["send", "-c", &p]), "not both");

    let p = write(
        dir.path(),
        "bad6.toml",
        b"[[endpoint]]\nurl = \"gopher://x/\"\n",
    );
    assert_usage(&run(&["check", "-c", &p]), "gopher://x/");
}

#[test]
fn check_prints_the_chain_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(Behavior::ok("fine"));
    let cfg = format!(
        "timeout = \"2s\"\n[[endpoint]]\nname = \"primary\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer s3cret\" }}\n[[endpoint]]\nurl = \"{}\"\nmethod = \"POST\"\njson = {{ a = 1 }}\n",
        s.url("/a"),
        s.url("/b")
    );
    let p = write(dir.path(), "chain.toml", cfg.as_bytes());
    let o = run(&["check", "--config", &p]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("2 link(s)"), "{out}");
    assert!(
        out.contains("[0] primary") && out.contains(&s.url("/a")),
        "{out}"
    );
    assert!(out.contains("POST") && out.contains("json"), "{out}");
    assert!(!out.contains("s3cret"), "secrets stay hidden: {out}");
    assert_eq!(s.request_count(), 0);
}

#[test]
fn secrets_never_print_in_check_send_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let up = Server::start(
        Reply::new(200)
            .header("set-cookie", "sid=SECRET-set-cookie")
            .body("fine"),
    );
    let refused = Server::refused();
    let with_secrets = |url: String| {
        url.replace("http://", "http://admin:SECRET-userinfo@")
            + "?code=SECRET-code&jwt=SECRET-jwt&sig=SECRET-sig&access_token=SECRET-at"
    };
    let cfg = format!(
        "secret_headers = [\"X-Tenant\"]\n\
         [[endpoint]]\nurl = \"{}\"\nheaders = {{ X-Api-Key = \"SECRET-key\", X-Auth-Token = \"SECRET-token\", Cookie = \"SECRET-cookie\", X-Tenant = \"SECRET-tenant\", X-Session = \"SECRET-session\" }}\n\
         [[endpoint]]\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer SECRET-bearer\", X-Client-Secret = \"SECRET-client\" }}\n",
        with_secrets(refused.url("/a")),
        with_secrets(up.url("/b")),
    );
    let p = write(dir.path(), "chain.toml", cfg.as_bytes());
    let clean = |what: &str, text: &str| {
        assert!(!text.contains("SECRET-"), "{what} leaks a secret:\n{text}");
    };

    let o = run(&["check", "-c", &p]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("x-api-key: <redacted>"), "{out}");
    assert!(out.contains("x-tenant: <redacted>"), "{out}");
    clean("check", &out);

    for format in ["text", "json"] {
        let o = run(&[
            "send",
            "-c",
            &p,
            "-H",
            "X-Password: SECRET-cli",
            "--report",
            format,
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        clean(format, &stderr(&o));
        assert_eq!(o.stdout, b"fine");
    }
    // Every link fails: the error and the report on stderr.
    let o = run(&["send", "-c", &p, "--max-body", "1", "--report", "json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    clean("failure", &stderr(&o));
    // A config error never quotes the offending line.
    let bad = write(
        dir.path(),
        "bad.toml",
        b"[[endpoint]]\nurl = \"http://127.0.0.1:1/\"\nheaders = { X-Api-Key = \"SECRET-typo\", oops }\n",
    );
    let o = run(&["check", "-c", &bad]);
    assert_usage(&o, "line 3");
    clean("config error", &stderr(&o));
    // check sent nothing; each send reached the server once.
    assert_eq!(up.request_count(), 3);
}

#[test]
fn help_explains_every_option() {
    let o = run(&["send", "--help"]);
    assert_eq!(code(&o), 0);
    let help = String::from_utf8(o.stdout).unwrap();
    for opt in [
        "--method",
        "--header",
        "--data",
        "--json",
        "--output",
        "--config",
        "--timeout",
        "--deadline",
        "--retries",
        "--hedge",
        "--fail-on",
        "--idempotent",
        "--max-body",
        "--report",
        "Example",
    ] {
        assert!(help.contains(opt), "{opt} missing from send --help");
    }
    let o = run(&["--help"]);
    let help = String::from_utf8(o.stdout).unwrap();
    for cmd in ["send", "check", "demo", "Example"] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
}

#[test]
fn demo_runs_on_loopback() {
    let t = Instant::now();
    let o = run(&["demo"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(20));
    let out = String::from_utf8(o.stdout).unwrap();
    for word in ["connect", "timeout", "503", "cancelled", "skipped", "ok"] {
        assert!(out.contains(word), "{word} missing from the demo:\n{out}");
    }
}

// ---- a reader that goes away ----

/// Runs `args` with stdout and stderr piped, hands the child to `reader`
/// (which closes one of them early, as `| head` does), and returns the exit
/// status with whatever stderr said.
fn run_closing(args: &[&str], reader: impl FnOnce(&mut std::process::Child)) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fallback"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fallback");
    reader(&mut child);
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    let status = o
        .status
        .code()
        .unwrap_or_else(|| panic!("killed: {:?}", o.status));
    (status, err)
}

fn big_config(dir: &Path, links: usize, url: &str) -> String {
    let mut cfg = String::new();
    for i in 0..links {
        cfg.push_str(&format!(
            "[[endpoint]]\nname = \"link-{i}\"\nurl = \"{url}\"\nheaders = {{ X-Trace = \"{i}\" }}\n"
        ));
    }
    write(dir, "big.toml", cfg.as_bytes())
}

#[test]
fn check_piped_into_head_stops_quietly() {
    // `fallback check -c big.toml | head -1`: far more than a pipe's 64 KiB
    // buffer, so the reader is certainly gone before the end is written.
    let dir = tempfile::tempdir().unwrap();
    let p = big_config(dir.path(), 1000, "http://127.0.0.1:1/x");
    let (status, _) = run_closing(&["check", "-c", &p], |child| {
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert!(first.contains("1000 link(s)"), "{first}");
        // Dropping the reader closes the pipe, as `head -1` does.
    });
    assert_eq!(status, 0, "the exit status is the command's own");
}

#[test]
fn send_with_stdout_closed_stops_quietly() {
    let s = Server::start(Behavior::Huge {
        status: 200,
        len: 1 << 20,
        chunked: false,
    });
    let (status, err) = run_closing(&["send", "--report", "text", &s.url("/big")], |child| {
        drop(child.stdout.take());
    });
    assert_eq!(status, 0, "the call succeeded: {err}");
    assert!(
        err.contains("=> 200 from link 0"),
        "the report still goes to stderr: {err}"
    );
}

#[test]
fn send_with_stderr_closed_stops_quietly() {
    // `fallback send ... --report json 2>&1 >/dev/null | head -c 10`: 400
    // refused links make a report far larger than a pipe's buffer.
    let refused = Server::refused();
    let url = refused.url("/x");
    let mut args = vec!["send", "--report", "json"];
    args.extend(std::iter::repeat_n(url.as_str(), 400));
    let (status, _) = run_closing(&args, |child| {
        use std::io::Read;
        let mut head = [0u8; 10];
        child
            .stderr
            .as_mut()
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        drop(child.stderr.take());
    });
    assert_eq!(status, 1, "every link failed, so 1");
}

#[test]
fn a_config_beyond_the_link_limit_exits_2_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    let text: String = (0..100_000)
        .map(|i| format!("[[endpoint]]\nurl = \"http://127.0.0.1:1/{i}\"\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fallback"))
        .args(["send", "--report", "json", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("100000 links; the limit is 1000"), "{err}");
    assert!(o.stdout.is_empty());
}

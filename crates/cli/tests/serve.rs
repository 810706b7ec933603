//! `fallback serve`, end to end: the real binary as a proxy in front of
//! misbehaving loopback servers, spoken to over real sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fallback_chain_testserver::{Behavior, Reply, Server};

mod common;
use common::proxy::{header, request_to, Proxy};

#[test]
fn a_dead_primary_fails_over_and_the_answer_says_which_upstream() {
    let refused = Server::refused();
    let backup = Server::start(Behavior::ok("from backup"));
    let p = Proxy::start(&[&refused.url("/api"), &backup.url("/api")]);
    let (status, headers, body) = p.request("GET /orders/42?x=1 HTTP/1.1", b"");
    assert_eq!(status, 200);
    assert_eq!(body, b"from backup");
    assert_eq!(
        header(&headers, "x-fallback-upstream"),
        Some(backup.addr().to_string().as_str())
    );
    assert_eq!(header(&headers, "x-fallback-attempts"), Some("2"));
    assert_eq!(backup.requests()[0].path, "/api/orders/42?x=1");
}

#[test]
fn client_errors_pass_through_and_the_last_answer_comes_back() {
    let not_found = Server::start(Reply::json(404, r#"{"message": "no such order"}"#));
    let backup = Server::start(Behavior::ok("backup"));
    let p = Proxy::start(&[&not_found.url("/"), &backup.url("/")]);
    let (status, headers, body) = p.request("GET /x HTTP/1.1", b"");
    assert_eq!(status, 404, "a proxy passes client errors through");
    assert_eq!(body, br#"{"message": "no such order"}"#);
    assert_eq!(header(&headers, "x-fallback-error"), None);
    assert_eq!(backup.request_count(), 0);

    let down = Server::start(Reply::json(503, r#"{"message": "maintenance"}"#));
    let p = Proxy::start(&[&down.url("/"), &down.url("/")]);
    let (status, headers, body) = p.request("GET /x HTTP/1.1", b"");
    assert_eq!(status, 503);
    assert_eq!(body, br#"{"message": "maintenance"}"#);
    assert_eq!(
        header(&headers, "x-fallback-error"),
        None,
        "an upstream's answer"
    );
}

#[test]
fn when_no_upstream_answers_the_proxy_answers_502_in_json() {
    let a = Server::refused();
    let b = Server::refused();
    let p = Proxy::start(&[&a.url("/"), &b.url("/")]);
    let (status, headers, body) = p.request("GET / HTTP/1.1", b"");
    assert_eq!(status, 502);
    assert_eq!(header(&headers, "x-fallback-error"), Some("upstream"));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(json["attempts"][0]["outcome"], "connect");
}

#[test]
fn a_post_to_a_black_hole_is_not_re_sent() {
    let hole = Server::start(Behavior::BlackHole);
    let backup = Server::start(Behavior::Echo);
    let p = Proxy::start(&["--timeout", "300ms", &hole.url("/"), &backup.url("/")]);
    let (status, headers, _) = p.request("POST /orders HTTP/1.1", b"order");
    assert_eq!(status, 504);
    assert_eq!(header(&headers, "x-fallback-error"), Some("timeout"));
    assert_eq!(backup.request_count(), 0);
    assert_eq!(hole.request_count(), 1);
}

#[test]
fn a_5_mib_body_is_replayed_intact() {
    let down = Server::start(Behavior::status(503));
    let echo = Server::start(Behavior::Echo);
    let p = Proxy::start(&["--replay-buffer", "8MiB", &down.url("/"), &echo.url("/")]);
    let body: Vec<u8> = (0..5 << 20).map(|i| (i % 251) as u8).collect();
    let (status, _, got) = p.request("PUT /blob HTTP/1.1", &body);
    assert_eq!(status, 200);
    assert_eq!(got, body);
    assert_eq!(down.requests()[0].body.len(), body.len());
}

#[test]
fn hop_by_hop_headers_are_stripped_both_ways_and_via_is_added() {
    let upstream = Server::start(
        Reply::new(200)
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("x-end-to-end", "kept")
            .body("ok"),
    );
    let p = Proxy::start(&[&upstream.url("/")]);
    let (status, headers, _) = p.request(
        "GET / HTTP/1.1\r\nconnection: x-client-hop\r\nx-client-hop: 1\r\nx-client-kept: yes\r\nproxy-authorization: Basic c2VjcmV0",
        b"",
    );
    assert_eq!(status, 200);
    let seen = &upstream.requests()[0];
    assert_eq!(seen.header("x-client-hop"), None);
    assert_eq!(seen.header("proxy-authorization"), None);
    assert_eq!(seen.header("x-client-kept"), Some("yes"));
    assert_eq!(seen.header("via"), None, "Via only with --via");
    assert!(seen
        .header("x-fallback-hop")
        .is_some_and(|v| v.starts_with("fallback-")));
    assert_eq!(header(&headers, "x-upstream-hop"), None);
    assert_eq!(header(&headers, "keep-alive"), None);
    assert_eq!(header(&headers, "x-end-to-end"), Some("kept"));

    // A request that already went through this proxy has looped.
    let hop = seen.header("x-fallback-hop").unwrap().to_owned();
    let (status, headers, _) = p.request(&format!("GET / HTTP/1.1\r\nx-fallback-hop: {hop}"), b"");
    assert_eq!(status, 508);
    assert_eq!(header(&headers, "x-fallback-error"), Some("loop"));
}

#[test]
fn via_is_added_only_when_asked_for_and_still_finds_loops() {
    let upstream = Server::start(Behavior::ok("ok"));
    let p = Proxy::start(&["--via", &upstream.url("/")]);
    let (status, _, _) = p.request("GET / HTTP/1.1", b"");
    assert_eq!(status, 200);
    let seen = &upstream.requests()[0];
    let via = seen.header("via").expect("Via with --via").to_owned();
    assert!(via.starts_with("1.1 fallback-"), "{via}");
    let (status, _, _) = p.request(&format!("GET / HTTP/1.1\r\nvia: 1.1 cdn, {via}"), b"");
    assert_eq!(status, 508);
}

#[test]
fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let slow = Server::start(
        Reply::new(200)
            .body("slow but done")
            .delay(Duration::from_millis(700)),
    );
    let mut p = Proxy::start(&[&slow.url("/")]);
    let addr = p.addr.clone();
    let client = std::thread::spawn(move || {
        let mut tcp = TcpStream::connect(&addr).unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: p\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).unwrap();
        out
    });
    // Let the request reach the upstream, then ask the proxy to stop.
    let t = Instant::now();
    while slow.request_count() == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = p.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = client.join().unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("slow but done"),
        "{out}"
    );
    let status = p.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn bad_input_exits_2_and_a_taken_port_exits_1() {
    let o = Command::new(env!("CARGO_BIN_EXE_fallback"))
        .args(["serve", "--listen", "127.0.0.1:0", "ftp://x/"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_fallback"))
        .args(["serve", "--listen", &addr, "http://127.0.0.1:1/"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn admin_endpoints_and_the_access_log() {
    let refused = Server::refused();
    let up = Server::start(Behavior::ok("up"));
    let mut p = Proxy::start_with(
        &[
            "--admin",
            "127.0.0.1:0",
            "--access-log",
            "json",
            &refused.url("/"),
            &up.url("/"),
        ],
        Stdio::piped(),
    );
    let admin = p.admin.clone().unwrap();
    let (status, _, body) = request_to(&admin, "GET /healthz HTTP/1.1", b"");
    assert_eq!((status, &body[..]), (200, &br#"{"status":"ok"}"#[..]));
    assert_eq!(request_to(&admin, "GET /readyz HTTP/1.1", b"").0, 200);

    let (status, _, _) = p.request("GET /orders?token=s3cret HTTP/1.1", b"");
    assert_eq!(status, 200);
    let (status, _, body) = request_to(&admin, "GET /upstreams HTTP/1.1", b"");
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list[0]["failures"], 1, "{list}");
    assert_eq!(list[1]["successes"], 1, "{list}");

    let (status, headers, body) = request_to(&admin, "GET /metrics HTTP/1.1", b"");
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(body).unwrap();
    for needle in [
        "fallback_requests_total{route=\"/\",status=\"200\"} 1",
        "outcome=\"connect\"",
        "outcome=\"ok\"",
        "fallback_attempt_duration_seconds_bucket",
        "fallback_budget_denied_total 0",
        "fallback_breaker_state",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }

    let mut log = BufReader::new(p.child.stderr.take().unwrap());
    let mut line = String::new();
    log.read_line(&mut line).unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/orders?token=***", "secrets redacted");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["attempts"][0]["outcome"], "connect");
    assert_eq!(entry["attempts"][1]["outcome"], "ok");
}

#[test]
fn h2c_from_the_client() {
    let up = Server::start(Behavior::ok("over h2c"));
    let p = Proxy::start(&[&up.url("/")]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let chain = fallback_chain::Chain::builder()
            .http2_prior_knowledge(true)
            .link(fallback_chain::Link::get(format!("http://{}/x", p.addr)))
            .build()
            .unwrap();
        let resp = chain.call().await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(&resp.body()[..], b"over h2c");
    });
}

#[test]
fn a_primary_that_dies_and_comes_back_under_load_costs_clients_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let alive = Arc::new(AtomicBool::new(true));
    let flag = alive.clone();
    // Dead: every request read is answered with a reset, as a crashing
    // process does; alive: 200.
    let primary = Server::builder(Behavior::custom(move |_, _| {
        if flag.load(Ordering::SeqCst) {
            Behavior::ok("primary")
        } else {
            Behavior::Reset
        }
    }))
    .threads(2)
    .start();
    let backup = Server::builder(Behavior::ok("backup")).threads(2).start();
    let p = Proxy::start(&["--timeout", "2s", &primary.url("/"), &backup.url("/")]);
    let stop = Arc::new(AtomicBool::new(false));
    let toggler = {
        let (alive, stop) = (alive.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(150));
                alive.fetch_xor(true, Ordering::SeqCst);
            }
            alive.store(true, Ordering::SeqCst);
        })
    };
    let bad = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (addr, bad, served) = (p.addr.clone(), bad.clone(), served.clone());
            std::thread::spawn(move || {
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(1500) {
                    let (status, _, _) = request_to(&addr, "GET /x HTTP/1.1", b"");
                    served.fetch_add(1, Ordering::SeqCst);
                    if status != 200 {
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    toggler.join().unwrap();
    let served = served.load(Ordering::SeqCst);
    assert!(served > 100, "{served}");
    assert_eq!(bad.load(Ordering::SeqCst), 0, "of {served} requests");
    assert!(backup.request_count() > 0 && primary.request_count() > 0);
}

/// A config file in a directory of its own, kept for the proxy's life.
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serve.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.display().to_string())
}

fn serve_exit(args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_fallback"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn routes_take_the_longest_prefix_by_whole_segments_and_may_strip_it() {
    let primary = Server::start(Behavior::ok("primary"));
    let backup = Server::start(Behavior::ok("backup"));
    let dead = Server::refused();
    let (_dir, cfg) = config_file(&format!(
        r#"
[[upstream]]
name = "primary"
url = "{primary}"
headers = {{ "X-Api-Key" = "k-primary" }}

[[upstream]]
name = "backup"
url = "{backup}"

[[upstream]]
name = "dead"
url = "{dead}"

[[route]]
prefix = "/orders"
upstreams = ["dead", "backup"]

[[route]]
prefix = "/orders/archive/"
upstreams = ["primary"]
strip_prefix = true

[[route]]
prefix = "/users"
upstreams = ["primary", "backup"]
"#,
        primary = primary.url("/api"),
        backup = backup.url("/b"),
        dead = dead.url("/"),
    ));
    let p = Proxy::start(&["-c", &cfg]);

    let (status, headers, body) = p.request("GET /orders/7?x=1 HTTP/1.1", b"");
    assert_eq!((status, &body[..]), (200, &b"backup"[..]));
    assert_eq!(header(&headers, "x-fallback-upstream"), Some("backup"));
    assert_eq!(backup.requests()[0].path, "/b/orders/7?x=1");

    // The longer prefix wins, and strips itself.
    let (status, headers, _) = p.request("GET /orders/archive/2019 HTTP/1.1", b"");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-fallback-upstream"), Some("primary"));
    let seen = &primary.requests()[0];
    assert_eq!(seen.path, "/api/2019");
    assert_eq!(seen.header("x-api-key"), Some("k-primary"));
    assert!(seen
        .header("host")
        .is_some_and(|h| h == primary.addr().to_string()));

    // Whole segments only: /ordersx is no route of /orders.
    for path in ["/ordersx", "/", "/user"] {
        let (status, headers, body) = p.request(&format!("GET {path} HTTP/1.1"), b"");
        assert_eq!(status, 404, "{path}");
        assert_eq!(header(&headers, "x-fallback-error"), Some("no-route"));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(json["error"].is_string());
    }
    assert_eq!(
        primary.request_count() + backup.request_count(),
        2,
        "a path without a route reaches no upstream"
    );
}

#[test]
fn an_upstream_shared_by_two_routes_has_one_breaker() {
    let dead = Server::refused();
    let backup = Server::start(Behavior::ok("backup"));
    let (_dir, cfg) = config_file(&format!(
        r#"
[[upstream]]
name = "primary"
url = "{dead}"

[[upstream]]
name = "backup"
url = "{backup}"

[[route]]
prefix = "/a"
upstreams = ["primary", "backup"]

[[route]]
prefix = "/b"
upstreams = ["primary", "backup"]
"#,
        dead = dead.url("/"),
        backup = backup.url("/"),
    ));
    let p = Proxy::start(&["-c", &cfg, "--admin", "127.0.0.1:0"]);
    // Five failures open the primary's breaker (the default), whichever
    // route they came through.
    for i in 0..5 {
        let path = if i % 2 == 0 { "/a" } else { "/b" };
        let (status, headers, _) = p.request(&format!("GET {path} HTTP/1.1"), b"");
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "x-fallback-attempts"), Some("2"));
    }
    for path in ["/a", "/b"] {
        let (_, headers, _) = p.request(&format!("GET {path} HTTP/1.1"), b"");
        assert_eq!(header(&headers, "x-fallback-upstream"), Some("backup"));
        let (_, _, body) = request_to(p.admin.as_ref().unwrap(), "GET /upstreams HTTP/1.1", b"");
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(list[0]["name"], "primary");
        assert_eq!(list[0]["state"], "open", "{list}");
        assert_eq!(list[0]["failures"], 5, "{list}");
    }
}

#[test]
fn config_mistakes_exit_2_and_name_the_culprit() {
    let cases = [
        (
            "[[upstream]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\n\n[[route]]\nprefix = \"/x\"\nupstreams = [\"b\"]\n",
            "no upstream is named \"b\"",
        ),
        (
            "[[upstream]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\n[[upstream]]\nname = \"a\"\nurl = \"http://127.0.0.1:2/\"\n",
            "the name is taken",
        ),
        (
            "[[upstream]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\nweight = 3\n",
            "line 4",
        ),
        (
            "[serve]\nlisten = \"127.0.0.1:0\"\nacess_log = \"json\"\n[[upstream]]\nurl = \"http://127.0.0.1:1/\"\n",
            "acess_log",
        ),
        (
            "[[upstream]]\nurl = \"http://127.0.0.1:1/\"\nprobe = \"healthz\"\n",
            "probe",
        ),
        (
            "[[endpoint]]\nurl = \"http://127.0.0.1:1/\"\n",
            "[[upstream]]",
        ),
        (
            "[[upstream]]\nurl = \"http://127.0.0.1:1/\"\n[[route]]\nprefix = \"/x\"\nupstreams = [\"127.0.0.1:1\"]\nfail_on = \"6xx\"\n",
            "line 6, column 11: invalid status \"6xx\"",
        ),
    ];
    for (text, culprit) in cases {
        let (_dir, cfg) = config_file(text);
        let (code, err) = serve_exit(&["-c", &cfg]);
        assert_eq!(code, Some(2), "{text}\n{err}");
        assert!(err.contains(culprit), "{culprit:?} not in {err:?}");
    }
    // A config for `serve` is not one for `send`.
    let (_dir, cfg) = config_file("[[upstream]]\nurl = \"http://127.0.0.1:1/\"\n");
    let o = Command::new(env!("CARGO_BIN_EXE_fallback"))
        .args(["send", "-c", &cfg])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fallback serve"));
    // No upstream at all.
    let (code, err) = serve_exit(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no upstream"), "{err}");
}

#[test]
fn sighup_reloads_a_good_config_and_keeps_the_old_one_on_a_bad_one() {
    let one = Server::start(Behavior::ok("one"));
    let two = Server::start(Behavior::ok("two"));
    let slow = Server::start(
        Reply::new(200)
            .body("slow")
            .delay(Duration::from_millis(800)),
    );
    let write = |path: &str, upstream: &str, extra: &str| {
        std::fs::write(
            path,
            format!("[[upstream]]\nname = \"u\"\nurl = \"{upstream}\"\n{extra}"),
        )
        .unwrap();
    };
    let (_dir, cfg) = config_file("");
    write(&cfg, &slow.url("/"), "");
    let mut p = Proxy::start_with(&["-c", &cfg], Stdio::piped());
    let hup = |p: &Proxy| {
        assert!(Command::new("kill")
            .args(["-HUP", &p.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    };
    let mut log = BufReader::new(p.child.stderr.take().unwrap());
    // A request in flight finishes under the config it started with.
    let addr = p.addr.clone();
    let in_flight = std::thread::spawn(move || request_to(&addr, "GET / HTTP/1.1", b""));
    let t = Instant::now();
    while slow.request_count() == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    write(&cfg, &one.url("/"), "");
    hup(&p);
    let mut line = String::new();
    log.read_line(&mut line).unwrap();
    assert!(line.contains("reloaded"), "{line}");
    let (status, _, body) = p.request("GET / HTTP/1.1", b"");
    assert_eq!((status, &body[..]), (200, &b"one"[..]));
    let (status, _, body) = in_flight.join().unwrap();
    assert_eq!((status, &body[..]), (200, &b"slow"[..]));

    // A bad config is refused, named, and the good one keeps serving.
    write(&cfg, &two.url("/"), "colour = \"blue\"\n");
    hup(&p);
    let mut line = String::new();
    log.read_line(&mut line).unwrap();
    assert!(
        line.contains("refused") && line.contains("colour"),
        "{line}"
    );
    let (status, _, body) = p.request("GET / HTTP/1.1", b"");
    assert_eq!((status, &body[..]), (200, &b"one"[..]));
    assert_eq!(two.request_count(), 0);
}

#[test]
fn a_reload_keeps_the_breaker_of_an_unchanged_upstream() {
    let dead = Server::refused();
    let backup = Server::start(Behavior::ok("backup"));
    let other = Server::start(Behavior::ok("other"));
    let text = |extra: &str| {
        format!(
            "[[upstream]]\nname = \"primary\"\nurl = \"{}\"\n[[upstream]]\nname = \"backup\"\nurl = \"{}\"\n{extra}",
            dead.url("/"),
            backup.url("/")
        )
    };
    let (_dir, cfg) = config_file(&text(""));
    let mut p = Proxy::start_with(&["-c", &cfg, "--admin", "127.0.0.1:0"], Stdio::piped());
    for _ in 0..5 {
        assert_eq!(p.request("GET / HTTP/1.1", b"").0, 200);
    }
    std::fs::write(
        &cfg,
        text(&format!(
            "[[upstream]]\nname = \"other\"\nurl = \"{}\"\n",
            other.url("/")
        )),
    )
    .unwrap();
    let mut log = BufReader::new(p.child.stderr.take().unwrap());
    assert!(Command::new("kill")
        .args(["-HUP", &p.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let mut line = String::new();
    log.read_line(&mut line).unwrap();
    assert!(line.contains("3 upstream"), "{line}");
    let (_, _, body) = request_to(p.admin.as_ref().unwrap(), "GET /upstreams HTTP/1.1", b"");
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list[0]["state"], "open", "{list}");
    assert_eq!(list[2]["name"], "other");
    // The primary is still skipped: no new connection attempt costs a client.
    let (_, headers, _) = p.request("GET / HTTP/1.1", b"");
    assert_eq!(header(&headers, "x-fallback-upstream"), Some("backup"));
}

/// Raw bytes in, whatever comes back until the proxy closes or 5 s pass.
fn raw_exchange(addr: &str, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = tcp.write_all(bytes);
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn malformed_requests_get_400_and_everyone_else_is_still_served() {
    let up = Server::start(Behavior::ok("fine"));
    let p = Proxy::start(&[&up.url("/")]);
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
        b"\x00\x01\x02\x03\r\n\r\n",
    ] {
        let out = raw_exchange(&p.addr, garbage);
        assert!(out.starts_with("HTTP/1.1 400"), "{garbage:?} -> {out:?}");
    }
    // Headers beyond the limit (64 KiB) are refused, not buffered.
    let huge = format!(
        "GET / HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let out = raw_exchange(&p.addr, huge.as_bytes());
    assert!(
        out.starts_with("HTTP/1.1 431") || out.starts_with("HTTP/1.1 400"),
        "{out:?}"
    );
    assert_eq!(up.request_count(), 0, "nothing malformed went upstream");
    let (status, _, body) = p.request("GET / HTTP/1.1", b"");
    assert_eq!((status, &body[..]), (200, &b"fine"[..]));
}

#[test]
fn a_client_that_goes_away_cancels_its_request_and_its_failover() {
    let primary = Server::start(Behavior::BlackHole);
    let backup = Server::start(Behavior::ok("fine"));
    let p = Proxy::start(&["--timeout", "1s", &primary.url("/"), &backup.url("/")]);
    let mut tcp = TcpStream::connect(&p.addr).unwrap();
    tcp.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    while primary.request_count() == 0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(primary.request_count(), 1);
    drop(tcp);
    // Past the primary's timeout: a request still alive would be at the
    // backup by now.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(backup.request_count(), 0, "a gone client's request went on");
    // The proxy serves the next client as usual.
    let (status, _, body) = p.request("GET /y HTTP/1.1", b"");
    assert_eq!((status, &body[..]), (200, &b"fine"[..]));
}

#[test]
fn a_client_that_never_finishes_its_head_is_cut_off() {
    let up = Server::start(Behavior::ok("fine"));
    let p = Proxy::start(&["--header-timeout", "300ms", &up.url("/")]);
    let mut tcp = TcpStream::connect(&p.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n").unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(up.request_count(), 0);
    // Others are served meanwhile and after.
    assert_eq!(p.request("GET / HTTP/1.1", b"").0, 200);
}

#[test]
fn expect_100_continue_works() {
    let up = Server::start(Behavior::ok("stored"));
    let p = Proxy::start(&[&up.url("/")]);
    let mut tcp = TcpStream::connect(&p.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(
        b"POST /upload HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    // The client waits for the interim answer before it sends the body.
    let mut first = [0u8; 25];
    tcp.read_exact(&mut first).unwrap();
    assert!(
        first.starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    tcp.write_all(b"hello").unwrap();
    let mut rest = String::new();
    tcp.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("HTTP/1.1 200") && rest.ends_with("stored"),
        "{rest}"
    );
    let seen = &up.requests()[0];
    assert_eq!(&seen.body[..], b"hello");
    assert_eq!(seen.header("expect"), None, "the proxy answered it itself");
}

#[test]
fn forwarded_headers_are_opt_in_and_report_headers_can_be_off() {
    let up = Server::start(Behavior::ok("fine"));
    let p = Proxy::start(&[&up.url("/")]);
    let (_, headers, _) = p.request("GET / HTTP/1.1", b"");
    assert_eq!(header(&headers, "x-fallback-attempts"), Some("1"));
    assert_eq!(up.requests()[0].header("x-forwarded-for"), None);
    assert_eq!(up.requests()[0].header("forwarded"), None);

    let (_dir, cfg) = config_file(&format!(
        "[serve]\nreport_headers = false\nforwarded = true\n[[upstream]]\nurl = \"{}\"\n",
        up.url("/")
    ));
    let p = Proxy::start(&["-c", &cfg]);
    let (status, headers, _) = p.request("GET / HTTP/1.1\r\nx-forwarded-for: 203.0.113.7", b"");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-fallback-attempts"), None);
    assert_eq!(header(&headers, "x-fallback-upstream"), None);
    let seen = &up.requests()[1];
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen.header("forwarded"), Some("for=127.0.0.1;proto=http"));
}

#[test]
fn a_probe_path_re_admits_a_primary_without_any_client_paying() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // The primary's API hangs until it is healthy; its /healthz says so.
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let primary = Server::builder(Behavior::custom(move |req, _| {
        match (req.path.as_str(), flag.load(Ordering::SeqCst)) {
            (_, true) => Behavior::ok("primary"),
            ("/healthz", false) => Behavior::status(503),
            (_, false) => Behavior::status(500),
        }
    }))
    .threads(2)
    .start();
    let backup = Server::start(Behavior::ok("backup"));
    let (_dir, cfg) = config_file(&format!(
        "[[upstream]]\nname = \"primary\"\nurl = \"{}\"\nprobe = \"/healthz\"\n[[upstream]]\nname = \"backup\"\nurl = \"{}\"\n",
        primary.url("/api"),
        backup.url("/")
    ));
    let p = Proxy::start(&["-c", &cfg]);
    // Five POSTs open the primary's breaker.
    for _ in 0..5 {
        assert_eq!(p.request("POST /api/x HTTP/1.1", b"{}").0, 200);
    }
    healthy.store(true, Ordering::SeqCst);
    // The first break is 5 s; every POST meanwhile and at its end goes to
    // the backup, and a GET of /healthz re-admits the primary.
    let t = Instant::now();
    let mut back = false;
    while t.elapsed() < Duration::from_secs(15) {
        let (status, headers, _) = p.request("POST /api/x HTTP/1.1", b"{}");
        assert_eq!(status, 200);
        if header(&headers, "x-fallback-upstream") == Some("primary") {
            assert_eq!(header(&headers, "x-fallback-attempts"), Some("1"));
            back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(back, "the primary was re-admitted");
    let probes: Vec<_> = primary
        .requests()
        .into_iter()
        .filter(|r| r.path == "/healthz")
        .collect();
    assert!(!probes.is_empty());
    assert!(probes
        .iter()
        .all(|r| r.method == "GET" && r.body.is_empty()));
    // No POST was ever the probe: the primary saw the 5 that opened it,
    // then only POSTs after it was back.
    let posts_while_open = primary
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts_while_open, 6, "5 failures, then the 1 that came back");
}

#[test]
fn a_body_larger_than_the_buffer_streams_and_is_never_re_sent_once_sent() {
    let down = Server::start(Behavior::status(503));
    let echo = Server::start(Behavior::Echo);
    let body: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    let mut p = Proxy::start_with(
        &[
            "--replay-buffer",
            "64KiB",
            "--replay-disk",
            "1MiB",
            "--access-log",
            "json",
            &down.url("/"),
            &echo.url("/"),
        ],
        Stdio::piped(),
    );
    // The primary read it and answered 503: it cannot go to the backup,
    // idempotent PUT or not, so the primary's answer is the client's.
    let (status, headers, _) = p.request("PUT /blob HTTP/1.1", &body);
    assert_eq!(status, 503);
    assert_eq!(
        header(&headers, "x-fallback-upstream"),
        Some(down.addr().to_string().as_str())
    );
    assert_eq!(down.requests()[0].body.len(), body.len(), "streamed whole");
    assert_eq!(echo.request_count(), 0, "never sent twice");
    let mut log = BufReader::new(p.child.stderr.take().unwrap());
    let mut line = String::new();
    log.read_line(&mut line).unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    let why = "larger than the replay buffer (64 KiB in memory and 1 MiB on disk)";
    assert!(
        entry["error"].as_str().is_some_and(|e| e.contains(why)),
        "the log says why: {entry}"
    );
    assert!(
        entry["replay"].as_str().is_some_and(|e| e.contains(why)),
        "{entry}"
    );
    assert_eq!(entry["bytes_in"], body.len(), "counted as it streamed");
}

#[test]
fn a_body_larger_than_the_buffer_fails_over_whole_when_nothing_was_sent() {
    let refused = Server::refused();
    let echo = Server::start(Behavior::Echo);
    let p = Proxy::start(&[
        "--replay-buffer",
        "64KiB",
        &refused.url("/"),
        &echo.url("/"),
    ]);
    let body: Vec<u8> = (0..3 << 20).map(|i| (i % 241) as u8).collect();
    let (status, headers, got) = p.request("POST /upload HTTP/1.1", &body);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-fallback-attempts"), Some("2"));
    assert_eq!(got, body, "every byte, in order");
}

#[test]
fn bytes_reach_the_client_before_the_upstream_has_finished() {
    let body = bytes::Bytes::from(vec![b'x'; 256 * 1024]);
    let stalls = Server::start(Behavior::StallMidBody {
        status: 200,
        body: body.clone(),
        sent: 64 * 1024,
    });
    let p = Proxy::start(&["--timeout", "30s", &stalls.url("/")]);
    let mut tcp = TcpStream::connect(&p.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"GET /big HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    // The upstream sent a quarter and stalls: that quarter arrives anyway.
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while got.len() < 64 * 1024 {
        let n = tcp
            .read(&mut buf)
            .expect("bytes before the upstream finished");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..40]);
    assert!(
        text.contains("content-length: 262144"),
        "the length passes through"
    );
}

#[test]
fn a_body_that_breaks_after_the_commit_aborts_the_clients_response() {
    let truncates = Server::start(Behavior::Truncate {
        status: 200,
        body: bytes::Bytes::from_static(b"only part"),
        declared: 1000,
    });
    let backup = Server::start(Behavior::ok("backup"));
    let p = Proxy::start(&[&truncates.url("/"), &backup.url("/")]);
    let out = raw_exchange(&p.addr, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("content-length: 1000"), "{out}");
    // The connection ends short of the declared length: the client sees
    // an error, never a clean short end, and no second answer follows.
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(body, "only part");
    assert_eq!(backup.request_count(), 0, "no failover after the commit");
}

/// An upstream that switches to an echo protocol on `Upgrade: echo`, then
/// echoes every byte back; returns its address.
fn echo_upgrade_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tcp.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                assert!(head.contains("upgrade: echo"), "{head}");
                assert!(head.contains("x-fallback-hop: fallback-"), "{head}");
                tcp.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
                )
                .unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    match tcp.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tcp.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn an_upgrade_passes_through_to_the_first_upstream_that_switches() {
    let refuses = Server::start(Behavior::status(503));
    let echo = echo_upgrade_server();
    let p = Proxy::start(&[&refuses.url("/"), &format!("http://{echo}/")]);
    let mut tcp = TcpStream::connect(&p.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"GET /chat HTTP/1.1\r\nhost: a\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            tcp.read(&mut byte).unwrap(),
            1,
            "{:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    assert!(
        head.contains(&format!("x-fallback-upstream: {echo}")),
        "{head}"
    );
    assert_eq!(refuses.request_count(), 1, "the 503 was passed over");
    // The connection is now the upstream's: bytes go both ways.
    for msg in [&b"hello"[..], b"over the tunnel"] {
        tcp.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        tcp.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
}

#[test]
fn an_upgrade_no_upstream_accepts_gets_the_last_refusal() {
    let plain = Server::start(Reply::new(400).body("no upgrades here"));
    let p = Proxy::start(&[&plain.url("/")]);
    let out = raw_exchange(
        &p.addr,
        b"GET /chat HTTP/1.1\r\nhost: a\r\nconnection: upgrade, close\r\nupgrade: echo\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.ends_with("no upgrades here"), "{out}");
}

#[test]
fn a_primary_killed_and_restarted_mid_run_costs_clients_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let start_primary = |port: u16| {
        Server::builder(
            Reply::new(200)
                .body("primary")
                .delay(Duration::from_millis(5)),
        )
        .threads(2)
        .port(port)
        .start()
    };
    let first = start_primary(0);
    let port = first.addr().port();
    let url = first.url("/");
    let primary = Arc::new(Mutex::new(Some(first)));
    let backup = Server::builder(Behavior::ok("backup")).threads(2).start();
    let p = Proxy::start(&["--timeout", "2s", &url, &backup.url("/")]);
    let stop = Arc::new(AtomicBool::new(false));
    let (bad, served, from_primary) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (addr, stop) = (p.addr.clone(), stop.clone());
            let (bad, served, from_primary) = (bad.clone(), served.clone(), from_primary.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let (status, _, body) = request_to(&addr, "GET /x HTTP/1.1", b"");
                    served.fetch_add(1, Ordering::SeqCst);
                    if status != 200 {
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                    if body == b"primary" {
                        from_primary.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    // Kill the primary (its process's sockets close, requests in flight
    // die with them) and restart it on its port, three times.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        drop(primary.lock().unwrap().take());
        std::thread::sleep(Duration::from_millis(400));
        *primary.lock().unwrap() = Some(start_primary(port));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let served = served.load(Ordering::SeqCst);
    assert!(served > 100, "{served}");
    assert_eq!(bad.load(Ordering::SeqCst), 0, "of {served} requests");
    assert!(from_primary.load(Ordering::SeqCst) > 0);
    assert!(backup.request_count() > 0);
}

#[test]
fn the_access_log_names_the_upstream_even_without_report_headers() {
    let up = Server::start(Behavior::ok("fine"));
    let (_dir, cfg) = config_file(&format!(
        "[serve]\nreport_headers = false\naccess_log = \"json\"\n[[upstream]]\nname = \"only\"\nurl = \"{}\"\n",
        up.url("/")
    ));
    let mut p = Proxy::start_with(&["-c", &cfg], Stdio::piped());
    let (status, headers, _) = p.request("GET / HTTP/1.1", b"");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-fallback-upstream"), None);
    let mut log = BufReader::new(p.child.stderr.take().unwrap());
    let mut line = String::new();
    log.read_line(&mut line).unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["upstream"], "only", "{entry}");
}

#[test]
fn an_upstream_that_stalls_after_its_head_is_cut_at_the_idle_timeout() {
    // A 200 head with Content-Length: 100, then nothing, forever.
    let stalls = Server::start(Behavior::StallMidBody {
        status: 200,
        body: bytes::Bytes::from(vec![b'x'; 100]),
        sent: 0,
    });
    let mut p = Proxy::start_with(
        &[
            "--idle-timeout",
            "300ms",
            "--admin",
            "127.0.0.1:0",
            "--access-log",
            "json",
            &stalls.url("/"),
        ],
        Stdio::piped(),
    );
    let t = Instant::now();
    let mut tcp = TcpStream::connect(&p.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.write_all(b"GET /big HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    // The connection closes before the declared length: the client sees a
    // broken body, never a whole one, and never waits for its own timeout.
    let mut out = Vec::new();
    tcp.read_to_end(&mut out)
        .expect("closed by the proxy, not timed out");
    let waited = t.elapsed();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("content-length: 100"), "{out}");
    assert!(out.ends_with("\r\n\r\n"), "no byte of the body: {out}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(10),
        "{waited:?}"
    );

    let admin = p.admin.clone().unwrap();
    let (_, _, body) = request_to(&admin, "GET /upstreams HTTP/1.1", b"");
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list[0]["failures"], 1, "the breaker counts it: {list}");
    let (_, _, body) = request_to(&admin, "GET /metrics HTTP/1.1", b"");
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("fallback_stream_aborts_total{") && text.contains("why=\"idle_timeout\"} 1"),
        "{text}"
    );

    let mut log = BufReader::new(p.child.stderr.take().unwrap());
    let mut line = String::new();
    log.read_line(&mut line).unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["complete"], false, "{entry}");
    let why = entry["error"].as_str().unwrap_or_default();
    assert!(why.contains("idle timeout"), "{entry}");
}

#[test]
fn an_upstream_that_stalls_is_cut_with_rst_stream_for_an_http2_client() {
    let stalls = Server::start(Behavior::StallMidBody {
        status: 200,
        body: bytes::Bytes::from(vec![b'x'; 100]),
        sent: 10,
    });
    let p = Proxy::start(&["--idle-timeout", "300ms", &stalls.url("/")]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use http_body_util::BodyExt;
        let resp = h2_get(&p.addr, "/big").await;
        assert_eq!(resp.status(), 200);
        let t = Instant::now();
        let mut body = resp.into_body();
        let mut got = 0;
        let err = loop {
            match tokio::time::timeout(Duration::from_secs(20), body.frame()).await {
                Err(_) => panic!("still waiting after 20 s"),
                Ok(Some(Ok(f))) => got += f.data_ref().map_or(0, |d| d.len()),
                Ok(Some(Err(e))) => break e,
                Ok(None) => panic!("the stalled body ended as if whole"),
            }
        };
        assert_eq!(got, 10);
        let mut chain = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(c) = cause {
            chain = format!("{chain}: {c}");
            cause = c.source();
        }
        // RST_STREAM from the proxy.
        assert!(chain.contains("stream error received"), "{chain}");
        assert!(t.elapsed() < Duration::from_secs(10));
    });
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_the_upstream_released() {
    let huge = Server::start(Behavior::Huge {
        status: 200,
        len: 1 << 30,
        chunked: false,
    });
    let p = Proxy::start(&["--idle-timeout", "300ms", &huge.url("/")]);
    let mut tcp = TcpStream::connect(&p.addr).unwrap();
    tcp.write_all(b"GET /huge HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 256];
    let n = tcp.read(&mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    // Stop reading for ten times the bound: the upstream's connection is
    // closed (not merely held up by backpressure).
    let t = Instant::now();
    while huge.closed_connection_count() == 0 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        huge.closed_connection_count(),
        1,
        "the upstream was released"
    );
    assert!(huge.bytes_sent() < 1 << 30);
    // What the sockets held drains, then the connection ends: cut off.
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    assert!(
        ((n + rest.len()) as u64) < 1 << 30,
        "cut off before the end"
    );
}

/// A body the test feeds chunk by chunk; it ends when the sender goes.
struct Fed(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for Fed {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// An upstream (HTTP/1.1 or h2c) that answers at once and echoes each
/// piece of the request body as it arrives: a full-duplex peer.
async fn duplex_echo_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(req.into_body()))
                    },
                );
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let _ = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// Ten messages over one request, each sent only once the previous one
/// came back; returns each round trip's time.
async fn ping_pong(
    resp: http::Response<hyper::body::Incoming>,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> Vec<Duration> {
    use http_body_util::BodyExt;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut times = Vec::new();
    for i in 0..10 {
        let msg = format!("ping {i};");
        let t = Instant::now();
        tx.send(bytes::Bytes::from(msg.clone())).await.unwrap();
        let mut got = Vec::new();
        while got.len() < msg.len() {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .unwrap_or_else(|_| panic!("message {i} never came back: the exchange hung"))
                .expect("the body went on")
                .expect("no error");
            got.extend_from_slice(&frame.into_data().unwrap_or_default());
        }
        assert_eq!(got, msg.as_bytes());
        times.push(t.elapsed());
    }
    drop(tx);
    times
}

#[test]
fn a_full_duplex_exchange_works_through_the_proxy_over_http2_and_http1() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let upstream = duplex_echo_upstream().await;
        // HTTP/2 both ways: one stream, ten round trips.
        let p = Proxy::start(&["--http2-prior-knowledge", &format!("http://{upstream}/")]);
        let mut send = h2_client(&p.addr).await;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let req = http::Request::post(format!("http://{}/chat", p.addr))
            .body(Fed(rx))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
            .await
            .expect("no response head within 5 s: the exchange hung")
            .unwrap();
        let times = ping_pong(resp, tx).await;
        eprintln!("HTTP/2 round trips: {times:?}");

        // HTTP/1.1 both ways, chunked.
        let p = Proxy::start(&[&format!("http://{upstream}/")]);
        let tcp = tokio::net::TcpStream::connect(&p.addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let req = http::Request::post("/chat")
            .header("host", "proxy")
            .body(Fed(rx))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
            .await
            .expect("no response head within 5 s: the exchange hung")
            .unwrap();
        let times = ping_pong(resp, tx).await;
        eprintln!("HTTP/1.1 round trips: {times:?}");
    });
}

/// The files the process `pid` holds open under `dir`, with their modes.
#[cfg(target_os = "linux")]
fn open_files_under(pid: u32, dir: &std::path::Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if target.starts_with(dir) {
            let mode = std::fs::metadata(fd.path()).map_or(0, |m| m.permissions().mode() & 0o777);
            out.push((target.display().to_string(), mode));
        }
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn a_kept_body_is_an_unlinked_private_file_gone_with_its_request() {
    let temp = tempfile::tempdir().unwrap();
    // Reads the whole request, then never answers: the copy stays kept.
    let holds = Server::start(Behavior::BlackHole);
    let p = Proxy::start(&[
        "--replay-buffer",
        "64KiB",
        "--timeout",
        "60s",
        "--temp-dir",
        temp.path().to_str().unwrap(),
        &holds.url("/"),
    ]);
    let pid = p.child.id();
    let body = vec![7u8; 2 << 20];
    let mut tcp = TcpStream::connect(&p.addr).unwrap();
    tcp.write_all(
        format!(
            "PUT /blob HTTP/1.1\r\nhost: p\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    tcp.write_all(&body).unwrap();
    let t = Instant::now();
    let mut files = Vec::new();
    while files.is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
        files = open_files_under(pid, temp.path());
    }
    assert_eq!(files.len(), 1, "one file for the body: {files:?}");
    let (path, mode) = &files[0];
    assert!(path.ends_with("(deleted)"), "unlinked: {path}");
    assert_eq!(*mode, 0o600, "{path}");
    assert!(
        std::fs::read_dir(temp.path()).unwrap().next().is_none(),
        "nothing in the directory has a name"
    );
    // The client goes away: the request ends, and its file with it.
    drop(tcp);
    let t = Instant::now();
    while !open_files_under(pid, temp.path()).is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(open_files_under(pid, temp.path()), []);
}

#[test]
fn a_temp_dir_that_is_not_there_is_refused_at_start() {
    let up = Server::start(Behavior::ok("x"));
    let out = Command::new(env!("CARGO_BIN_EXE_fallback"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--temp-dir",
            "/nonexistent/spool",
        ])
        .arg(up.url("/"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--temp-dir") && err.contains("/nonexistent/spool"),
        "{err}"
    );
}

#[test]
fn a_failed_upgrade_reports_its_attempts_in_the_access_log_and_the_metrics() {
    let refused = Server::refused();
    let busy = Server::start(Behavior::status(503));
    let mut p = Proxy::start_with(
        &[
            "--access-log",
            "json",
            "--admin",
            "127.0.0.1:0",
            &refused.url("/"),
            &busy.url("/"),
        ],
        Stdio::piped(),
    );
    let out = raw_exchange(
        &p.addr,
        b"GET /chat HTTP/1.1\r\nhost: a\r\nconnection: upgrade, close\r\nupgrade: websocket\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    let mut log = BufReader::new(p.child.stderr.take().unwrap());
    let mut line = String::new();
    log.read_line(&mut line).unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["attempts"][0]["outcome"], "connect", "{entry}");
    assert_eq!(entry["attempts"][1]["outcome"], "status", "{entry}");
    assert_eq!(entry["attempts"][1]["status"], 503, "{entry}");
    assert!(
        entry["error"].as_str().is_some_and(|e| e.contains("503")),
        "{entry}"
    );
    let admin = p.admin.clone().unwrap();
    let (_, _, body) = request_to(&admin, "GET /metrics HTTP/1.1", b"");
    let text = String::from_utf8(body).unwrap();
    let tries = text
        .lines()
        .filter(|l| l.starts_with("fallback_attempts_total{"))
        .count();
    assert_eq!(tries, 2, "{text}");
}

#[test]
fn an_http2_client_that_stops_reading_one_stream_has_it_reset_and_the_upstream_released() {
    let huge = Server::start(Behavior::Huge {
        status: 200,
        len: 1 << 30,
        chunked: false,
    });
    let p = Proxy::start(&["--idle-timeout", "300ms", &huge.url("/")]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use http_body_util::BodyExt;
        let resp = h2_get(&p.addr, "/huge").await;
        assert_eq!(resp.status(), 200);
        // The stream's window fills and stays shut; the socket does not
        // block, so only the stream's own bound can end it.
        let t = Instant::now();
        while huge.closed_connection_count() == 0 && t.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            huge.closed_connection_count(),
            1,
            "the upstream was released"
        );
        let mut body = resp.into_body();
        let mut got = 0u64;
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(20), body.frame()).await {
                Err(_) => panic!("neither reset nor ended after 20 s"),
                Ok(Some(Ok(f))) => got += f.data_ref().map_or(0, |d| d.len() as u64),
                Ok(Some(Err(e))) => break e,
                Ok(None) => panic!("the whole 1 GiB came: the stream was never cut"),
            }
        };
        assert!(got < 1 << 30, "{got}");
        let mut chain = ended.to_string();
        let mut cause = std::error::Error::source(&ended);
        while let Some(c) = cause {
            chain = format!("{chain}: {c}");
            cause = c.source();
        }
        assert!(chain.contains("stream error received"), "reset: {chain}");
    });
}

/// An HTTP/2 (prior knowledge) client connection to `addr`.
async fn h2_client<B>(addr: &str) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

/// A GET of `path` over a new HTTP/2 connection to `addr`: the head.
async fn h2_get(addr: &str, path: &str) -> http::Response<hyper::body::Incoming> {
    let req = http::Request::builder()
        .uri(format!("http://{addr}{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    h2_client(addr).await.send_request(req).await.unwrap()
}

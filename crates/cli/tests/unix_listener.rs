//! `fallback serve --listen unix:/path`: the socket's mode, its removal on
//! exit, and what is done with a file already at the path.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fallback_chain_testserver::{Behavior, Server};

fn serve(listen: &Path, upstream: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fallback"));
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("unix:{}", listen.display()))
        .arg(upstream)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The proxy's ready line, once it is listening.
fn ready(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_owned()
}

fn get(sock: &Path) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn stop(child: &mut Child) {
    let pid = child.id().to_string();
    let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(ok.success());
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(20), "still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serves_on_a_socket_of_mode_0660_and_removes_it_on_exit() {
    let up = Server::start(Behavior::ok("over unix"));
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fallback.sock");
    let mut child = serve(&sock, &up.url("/"))
        .arg("--forwarded")
        .spawn()
        .unwrap();
    assert_eq!(
        ready(&mut child),
        format!("listening on unix:{}", sock.display())
    );
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let answer = get(&sock);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("over unix"), "{answer}");
    // The client has no address: Forwarded says so.
    assert_eq!(
        up.requests()[0].header("forwarded"),
        Some("for=unknown;proto=http")
    );
    stop(&mut child);
    assert!(!sock.exists(), "the socket is removed on exit");
}

#[test]
fn a_stale_socket_is_replaced() {
    let up = Server::start(Behavior::ok("fresh"));
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fallback.sock");
    // A socket whose process is gone: the file stays, nobody accepts.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let mut child = serve(&sock, &up.url("/")).spawn().unwrap();
    assert!(ready(&mut child).starts_with("listening on unix:"));
    assert!(get(&sock).ends_with("fresh"));
    stop(&mut child);
}

#[test]
fn a_file_or_a_live_socket_at_the_path_is_refused_and_left_alone() {
    let up = Server::start(Behavior::ok("x"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.txt");
    std::fs::write(&file, b"precious").unwrap();
    let out = serve(&file, &up.url("/")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a socket") && err.contains("data.txt"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");

    let sock = dir.path().join("taken.sock");
    let _held = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let out = serve(&sock, &up.url("/")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process"), "{err}");
    assert!(sock.exists());
}

//! `fallback serve` as a child process, and one-shot HTTP/1.1 requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running proxy; killed (by its PID) when dropped.
pub struct Proxy {
    pub child: Child,
    pub addr: String,
    pub admin: Option<String>,
}

impl Proxy {
    pub fn start(args: &[&str]) -> Proxy {
        Proxy::start_with(args, Stdio::null())
    }

    pub fn start_with(args: &[&str], stderr: Stdio) -> Proxy {
        Proxy::start_env(args, &[], stderr)
    }

    /// With these environment variables set.
    pub fn start_env(args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Proxy {
        // Another build may stand in, to run these tests against it.
        let bin = std::env::var_os("FALLBACK_TEST_BINARY")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_fallback").into());
        let mut child = Command::new(bin)
            .envs(env.iter().copied())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("run fallback serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("ready line: {line:?}"))
            .to_owned();
        let admin = args.contains(&"--admin").then(|| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix("admin on http://")
                .unwrap_or_else(|| panic!("admin line: {line:?}"))
                .to_owned()
        });
        Proxy { child, addr, admin }
    }

    /// One HTTP/1.1 request; the status, the headers (lower-cased) and the
    /// body.
    pub fn request(&self, head: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        request_to(&self.addr, head, body)
    }
}

pub fn request_to(addr: &str, head: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "{head}\r\nhost: proxy\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        tcp.write_all(req.as_bytes()).unwrap();
        tcp.write_all(body).unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, raw[split + 4..].to_vec())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The payload of a response body as `request_to` returns it: de-chunked
/// when the headers say `Transfer-Encoding: chunked`.
pub fn payload(headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    if header(headers, "transfer-encoding") != Some("chunked") {
        return body.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = std::str::from_utf8(&rest[..line]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[line + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

//! Instructions per call, chain against bare transport, counted by
//! `valgrind --tool=callgrind`: the noise-free version of the throughput
//! ratios. Each side runs `N` sequential calls in a child process under
//! callgrind, twice (`N` = 500 and 4,500); the difference of the two totals
//! over 4,000 is the cost of one call, with start-up and warm-up cancelled
//! out. Only user-space instructions count: the kernel's share is the same
//! for both sides (the same syscalls per call).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use fallback_chain::Chain;
use fallback_chain_testserver::Server;

use super::server::{HyperServer, Kind};
use super::{links, raw_hyper_op, Row};

/// The calls of one side, as a child process: `__icount SIDE URL... N`.
pub(super) fn child(side: &str, urls: &[String], n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let op = match side {
            "raw" => raw_hyper_op(&urls[0]),
            _ => super::chain_op(Chain::builder().links(links(urls)).build().expect("chain")),
        };
        // Warm up: pools filled, and a dead primary's breaker opened (five
        // failures, then skipped).
        for _ in 0..10 {
            op().await;
        }
        for _ in 0..n {
            assert!(op().await, "a call failed");
        }
    });
}

/// Serves the healthy JSON until stdin closes: `__serve_healthy`.
pub(super) fn serve_healthy() {
    let s = HyperServer::start(Kind::Healthy);
    println!("{}", s.addr.port());
    std::io::stdout().flush().expect("flush");
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
}

/// Total instructions of `__icount side urls n` under callgrind.
fn instructions(side: &str, urls: &[String], n: usize) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let dir = std::env::temp_dir();
    let out_file = dir.join(format!(
        "fallback-icount-{}-{side}-{n}.out",
        std::process::id()
    ));
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(exe)
        .arg("__icount")
        .arg(side);
    for u in urls {
        cmd.arg(u);
    }
    let out = cmd.arg(n.to_string()).stdout(Stdio::null()).output().ok()?;
    let _ = std::fs::remove_file(&out_file);
    if !out.status.success() {
        eprintln!(
            "  icount {side}: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    // "==PID== Collected : 123456789"
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse().ok())
}

fn per_call(side: &str, urls: &[String]) -> Option<f64> {
    let (lo, hi) = (500, 4500);
    let a = instructions(side, urls, lo)?;
    let b = instructions(side, urls, hi)?;
    Some(b.saturating_sub(a) as f64 / (hi - lo) as f64)
}

pub(super) fn group() -> Vec<Row> {
    eprintln!("instructions per call (callgrind): chain against raw hyper, one caller");
    let have = Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!("  skipped: valgrind is not installed");
        return Vec::new();
    }
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    // The server runs in a process of its own, outside callgrind.
    let Ok(mut server) = Command::new(exe)
        .arg("__serve_healthy")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    else {
        return Vec::new();
    };
    let mut line = String::new();
    if let Some(out) = server.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let healthy = format!("http://127.0.0.1:{}/item", line.trim());
    let refused = Server::refused();
    let mut rows = Vec::new();
    let raw = per_call("raw", std::slice::from_ref(&healthy));
    let cases = [
        ("icount_healthy", vec![healthy.clone()]),
        (
            "icount_skipped_primary",
            vec![refused.url("/item"), healthy.clone()],
        ),
    ];
    for (name, urls) in cases {
        if let (Some(ours), Some(base)) = (per_call("ours", &urls), raw) {
            eprintln!("  {name}: ours {ours:.0} instructions per call, raw hyper {base:.0}");
            rows.push(Row {
                scenario: name.into(),
                metric: "instructions_per_call",
                ours,
                baseline: base,
                ratio: ours / base,
                // The throughput goal (0.97 of raw hyper) in instructions.
                goal: 1.03,
                at_least: false,
            });
        }
    }
    drop(server.stdin.take());
    let _ = server.kill();
    let _ = server.wait();
    std::thread::sleep(Duration::from_millis(10));
    rows
}

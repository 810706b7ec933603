//! The `fair` group: failover proxies compared the way a skeptic would
//! accept.
//!
//! - Placement: each proxy alone on core 1 (`taskset -c 1`), with one
//!   worker (`fallback serve --workers 1`, nginx as one process that is
//!   its own worker, HAProxy `nbthread 1`, Caddy `GOMAXPROCS=1`); the load
//!   generator and the upstreams on core 0.
//! - Load from outside: `wrk` and `h2load --h1`, at 32 and 256
//!   connections, closed loop for throughput; `h2load --rps` at a fixed
//!   rate below every proxy's saturation for CPU time per request, read
//!   from `/proc/PID/stat`.
//! - Equal work: no access logs, the same upstream block (primary, then
//!   the backup), a 77-byte and a 16 KiB answer.
//! - Rounds: warmed up, then interleaved in a shuffled order each round;
//!   medians with min–max.

use std::process::Command;
use std::time::Duration;

use super::serve::{self, installed, Primaries, Primary, Running};
use super::server::{HyperServer, Kind};
use super::{median, Cfg, Row};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Ours,
    Nginx,
    Haproxy,
    Caddy,
    Direct,
}

impl Via {
    const ALL: [Via; 5] = [Via::Ours, Via::Nginx, Via::Haproxy, Via::Caddy, Via::Direct];

    fn name(self) -> &'static str {
        match self {
            Via::Ours => "fallback serve",
            Via::Nginx => "nginx",
            Via::Haproxy => "HAProxy",
            Via::Caddy => "Caddy",
            Via::Direct => "direct to backup",
        }
    }
}

/// A load generator run: which tool, how many connections, which answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Load {
    h2load: bool,
    conns: u32,
    big: bool,
}

impl Load {
    fn name(self) -> String {
        format!(
            "{} -c{} {}",
            if self.h2load { "h2load --h1" } else { "wrk" },
            self.conns,
            if self.big { "16 KiB" } else { "77 B" }
        )
    }
}

/// What one run of a load generator counted.
#[derive(Clone, Copy, Debug, Default)]
struct Counted {
    rate: f64,
    done: f64,
    /// Non-2xx answers and failed requests.
    bad: f64,
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// `wrk -t1 -cN -dS` on core 0.
fn wrk(port: u16, conns: u32, path: &str, run: Duration) -> Option<Counted> {
    let out = Command::new("taskset")
        .args(["-c", "0", "wrk", "-t1"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{}s", secs(run)))
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let num = |prefix: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.trim_end_matches(',').parse().ok())
    };
    let rate = num("Requests/sec:")?;
    let done: f64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let mut bad = num("Non-2xx or 3xx responses:").unwrap_or(0.0);
    if let Some(line) = text.lines().find(|l| l.contains("Socket errors:")) {
        bad += line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse::<f64>().ok())
            .sum::<f64>();
    }
    Some(Counted {
        // Only good answers count as throughput.
        rate: rate * (1.0 - bad / done.max(1.0)).max(0.0),
        done,
        bad,
    })
}

/// `h2load --h1 -t1 -cN -D S [--rps R]` on core 0.
fn h2load(port: u16, conns: u32, path: &str, run: Duration, rps: Option<u32>) -> Option<Counted> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0", "h2load", "--h1", "-t1"])
        .arg(format!("-c{conns}"))
        .arg("-D")
        .arg(secs(run).to_string());
    if let Some(r) = rps {
        cmd.arg(format!("--rps={r}"));
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())?;
    let field = |line: &str, name: &str| -> Option<f64> {
        let l = text.lines().find(|l| l.starts_with(line))?;
        l.split(", ")
            .find(|p| p.trim_start_matches(line).trim().ends_with(name))
            .and_then(|p| p.trim_start_matches(line).split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let done = field("requests:", "done").unwrap_or(0.0);
    let ok = field("status codes:", "2xx").unwrap_or(0.0);
    let bad = (done - ok).max(0.0) + field("requests:", "errored").unwrap_or(0.0);
    Some(Counted {
        rate: rate * (ok / done.max(1.0)),
        done,
        bad,
    })
}

fn start_caddy(primary: &str, backup: &str) -> Option<Running> {
    let exe = installed("caddy")?;
    let dir = serve::tempdir::Dir::new("caddy").ok()?;
    let port = serve::free_port();
    let hostport = |u: &str| u.trim_start_matches("http://").to_owned();
    let conf = format!(
        r#"{{
  admin off
  auto_https off
  storage file_system {dir}
}}
http://127.0.0.1:{port} {{
  reverse_proxy {primary} {backup} {{
    lb_policy first
    lb_try_duration 1s
    fail_duration 2s
    transport http {{
      dial_timeout 1s
      response_header_timeout 1s
    }}
  }}
}}
"#,
        dir = dir.path().display(),
        primary = hostport(primary),
        backup = hostport(backup),
    );
    let path = dir.path().join("Caddyfile");
    std::fs::write(&path, conf).ok()?;
    std::env::set_var("GOMAXPROCS", "1");
    std::env::set_var("XDG_DATA_HOME", dir.path());
    std::env::set_var("XDG_CONFIG_HOME", dir.path());
    serve::spawn_peer(
        exe,
        &[
            "--config".as_ref(),
            path.as_os_str(),
            "--adapter".as_ref(),
            "caddyfile".as_ref(),
        ],
        "run",
        dir,
        port,
    )
}

/// A small deterministic generator for the shuffles.
struct Shuffle(u64);

impl Shuffle {
    fn order(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            v.swap(i, (self.0 % (i as u64 + 1)) as usize);
        }
        v
    }
}

/// Pins this process (the upstreams, and the load generators it starts)
/// to core 0, or undoes that.
fn pin_self(core: Option<&str>) -> bool {
    Command::new("taskset")
        .args(["-a", "-p", "-c", core.unwrap_or("0-1023")])
        .arg(std::process::id().to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    let m = median(v);
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    (m, lo, hi)
}

pub(super) fn fair_group(cfg: Cfg, quick: bool) -> Vec<Row> {
    eprintln!("fair: each proxy alone on core 1, wrk and h2load on core 0, shuffled rounds");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tools = ["taskset", "wrk", "h2load"];
    if let Some(missing) = tools.iter().find(|t| installed(t).is_none()) {
        eprintln!("  skipped: {missing} is not installed");
        return Vec::new();
    }
    if cores < 2 || serve::fallback_exe().is_none() || !pin_self(Some("0")) {
        eprintln!("  skipped: needs two cores and the fallback binary");
        return Vec::new();
    }
    serve::pin_proxies(Some(1));
    let (rounds, run, warm) = if quick {
        (1, Duration::from_secs(1), Duration::from_secs(1))
    } else {
        (
            cfg.rounds.max(5),
            Duration::from_secs(10),
            Duration::from_secs(3),
        )
    };
    // A shorter lab run than the full one: FAIR_ROUNDS and FAIR_SECS.
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let rounds = env("FAIR_ROUNDS").map_or(rounds, |r| r.max(1) as usize);
    let run = env("FAIR_SECS").map_or(run, |s| Duration::from_secs(s.max(1)));
    let mut rows = Vec::new();
    let mut rng = Shuffle(0x9e37_79b9_7f4a_7c15);
    let mut table = Vec::new();
    let backup = HyperServer::start(Kind::Healthy);
    let backup_url = format!("http://{}", backup.addr);
    let primaries: &[Primary] = if quick {
        &[Primary::Healthy]
    } else {
        &Primary::ALL
    };
    let mut cpu_rows = Vec::new();
    for &primary in primaries {
        let upstreams = Primaries::start();
        let primary_url = upstreams.url(primary);
        let targets: Vec<(Via, Option<Running>)> = Via::ALL
            .iter()
            .map(|&via| {
                let r = match via {
                    Via::Ours => serve::start_ours(&primary_url, &backup_url),
                    Via::Nginx => serve::start_nginx(&primary_url, &backup_url),
                    Via::Haproxy => serve::start_haproxy(&primary_url, &backup_url),
                    Via::Caddy => start_caddy(&primary_url, &backup_url),
                    Via::Direct => Some(Running::direct(backup.addr.port())),
                };
                if r.is_none() {
                    eprintln!("  {}: not installed or did not start", via.name());
                }
                (via, r)
            })
            .collect();
        let loads: Vec<Load> = if primary == Primary::Healthy && !quick {
            vec![
                Load {
                    h2load: false,
                    conns: 32,
                    big: false,
                },
                Load {
                    h2load: false,
                    conns: 256,
                    big: false,
                },
                Load {
                    h2load: true,
                    conns: 32,
                    big: false,
                },
                Load {
                    h2load: true,
                    conns: 256,
                    big: false,
                },
                Load {
                    h2load: false,
                    conns: 32,
                    big: true,
                },
            ]
        } else {
            vec![Load {
                h2load: false,
                conns: 32,
                big: false,
            }]
        };
        // Warm-up: pools fill, breakers learn the primary is dead.
        for (_, r) in &targets {
            if let Some(r) = r {
                wrk(r.port(), 32, "/item", warm);
            }
        }
        // cells[load][via]: rates, CPU µs per request, bad answers.
        let mut rates = vec![vec![Vec::new(); targets.len()]; loads.len()];
        let mut cpus = vec![vec![Vec::new(); targets.len()]; loads.len()];
        let mut bad = vec![vec![0.0; targets.len()]; loads.len()];
        for _ in 0..rounds {
            for li in rng.order(loads.len()) {
                for vi in rng.order(targets.len()) {
                    let Some(r) = &targets[vi].1 else { continue };
                    let load = loads[li];
                    let path = if load.big { "/big" } else { "/item" };
                    let cpu0 = r.cpu_us();
                    let counted = if load.h2load {
                        h2load(r.port(), load.conns, path, run, None)
                    } else {
                        wrk(r.port(), load.conns, path, run)
                    };
                    let Some(c) = counted else { continue };
                    rates[li][vi].push(c.rate);
                    bad[li][vi] += c.bad;
                    if let (Some(a), Some(b)) = (cpu0, r.cpu_us()) {
                        cpus[li][vi].push((b - a) / c.done.max(1.0));
                    }
                }
            }
        }
        for (li, load) in loads.iter().enumerate() {
            let mut medians = vec![None; targets.len()];
            for (vi, (via, running)) in targets.iter().enumerate() {
                if running.is_none() || rates[li][vi].is_empty() {
                    continue;
                }
                let (m, lo, hi) = spread(&mut rates[li][vi]);
                medians[vi] = Some(m);
                let cpu = if *via == Via::Direct || cpus[li][vi].is_empty() {
                    "".to_owned()
                } else {
                    format!("{:.1}", median(&mut cpus[li][vi]))
                };
                let line = format!(
                    "| {} | {} | {} | {m:.0} | {lo:.0}–{hi:.0} | {cpu} | {} |",
                    primary.name(),
                    load.name(),
                    via.name(),
                    bad[li][vi]
                );
                eprintln!("  {line}");
                table.push(line);
            }
            if let (Some(ours), Some(nginx)) = (medians[0], medians[1]) {
                let scenario = format!(
                    "fair_{}_{}{}_{}_vs_nginx",
                    primary.name(),
                    if load.h2load { "h2load" } else { "wrk" },
                    load.conns,
                    if load.big { "16k" } else { "77b" }
                );
                rows.push(super::throughput_row(&scenario, (ours, nginx), 1.10));
            }
        }
        if primary == Primary::Healthy {
            cpu_rows = fixed_rate(&targets, rounds, run, &mut rng);
        }
    }
    serve::pin_proxies(None);
    pin_self(None);
    println!(
        "\n| primary | load | through | req/s (median) | min–max | proxy CPU µs/req | non-2xx + errors |\n| --- | --- | --- | ---: | ---: | ---: | ---: |"
    );
    for line in &table {
        println!("{line}");
    }
    rows.extend(cpu_rows);
    rows
}

/// CPU time per request at a fixed offered rate (8,000 req/s: 32
/// connections at 250 each), healthy primary.
fn fixed_rate(
    targets: &[(Via, Option<Running>)],
    rounds: usize,
    run: Duration,
    rng: &mut Shuffle,
) -> Vec<Row> {
    let mut cpus = vec![Vec::new(); targets.len()];
    for _ in 0..rounds {
        for vi in rng.order(targets.len()) {
            let (via, Some(r)) = (&targets[vi].0, &targets[vi].1) else {
                continue;
            };
            if *via == Via::Direct {
                continue;
            }
            let Some(a) = r.cpu_us() else { continue };
            let Some(c) = h2load(r.port(), 32, "/item", run, Some(250)) else {
                continue;
            };
            if let Some(b) = r.cpu_us() {
                cpus[vi].push((b - a) / c.done.max(1.0));
            }
        }
    }
    println!("\n| through, 8,000 req/s offered (h2load --h1 -c32 --rps 250) | proxy CPU µs/req (median) | min–max |\n| --- | ---: | ---: |");
    let mut medians = vec![None; targets.len()];
    for (vi, (via, _)) in targets.iter().enumerate() {
        if cpus[vi].is_empty() {
            continue;
        }
        let (m, lo, hi) = spread(&mut cpus[vi]);
        medians[vi] = Some(m);
        let line = format!("| {} | {m:.1} | {lo:.1}–{hi:.1} |", via.name());
        eprintln!("  {line}");
        println!("{line}");
    }
    let mut rows = Vec::new();
    if let (Some(ours), Some(nginx)) = (medians[0], medians[1]) {
        eprintln!(
            "  fair_cpu_per_req_vs_nginx: ours {ours:.1} µs, nginx {nginx:.1} µs, ratio {:.3}",
            ours / nginx
        );
        rows.push(Row {
            scenario: "fair_cpu_per_req_vs_nginx".into(),
            metric: "cpu_us_per_req",
            ours,
            baseline: nginx,
            ratio: ours / nginx,
            goal: 0.90,
            at_least: false,
        });
    }
    rows
}

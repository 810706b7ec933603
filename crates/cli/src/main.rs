//! `fallback`: curl with a chain of backups.
//!
//! A thin user of the `fallback` library: every flag maps onto a
//! `ChainBuilder` or `Link` setting.

mod config;
mod demo;
mod output;
mod print;
mod report;
mod units;

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use fallback::{Body, Chain, ChainBuilder, Classifier, Hedge, Link};
use indicatif::{ProgressBar, ProgressStyle};
use print::{err, errln, outln};

const EXAMPLES: &str = "\
Examples:
  fallback send https://primary.example/api https://backup.example/api
  fallback send --timeout 500ms --retries 1 --report text https://a.example/x https://b.example/x
  fallback send --json '{\"Name\": \"Random\", \"Amount\": 100}' -H 'Idempotency-Key: 42' URL1 URL2
  fallback send -c chain.toml -o out.json
  fallback check --config chain.toml
  fallback demo";

/// curl with a chain of backups: send one request along an ordered chain of
/// links and get the first success.
#[derive(Parser, Debug)]
#[command(name = "fallback", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send one request along the chain: config links first, then the URLs
    /// given here, in order. Exit 0: a link succeeded; 1: every link failed,
    /// a final status came back or the deadline expired; 2: invalid input
    /// (nothing was sent). A reader that goes away (`| head`) ends the output
    /// quietly and leaves the exit status as it would have been.
    #[command(after_help = "\
Examples:
  fallback send https://primary.example/api https://backup.example/api
  fallback send -X PUT -d @payload.bin -o answer.bin URL1 URL2
  fallback send --fail-on 5xx,429 --deadline 3s --report json URL1 URL2 URL3")]
    Send(Box<SendArgs>),
    /// Validate a config file and print the chain it describes. Sends nothing.
    #[command(after_help = "Example:\n  fallback check --config chain.toml")]
    Check {
        /// The TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Start misbehaving servers on 127.0.0.1 and show calls failing over
    /// through them (refused, timed out, 503, hedged, won). Takes a few seconds.
    Demo,
}

#[derive(Parser, Debug)]
struct SendArgs {
    /// URLs to try, in order, after any config links. Each gets the same
    /// request (method, headers, body).
    #[arg(value_name = "URL")]
    urls: Vec<String>,
    /// The method [default: GET, or POST when a body is given].
    #[arg(short = 'X', long, value_name = "M")]
    method: Option<String>,
    /// A header for every link, 'Name: value'. Repeatable.
    #[arg(short = 'H', long = "header", value_name = "'Name: value'")]
    headers: Vec<String>,
    /// Raw body. @path reads a file (binary-safe, re-read for each attempt);
    /// @- reads stdin.
    #[arg(short = 'd', long, value_name = "DATA", conflicts_with = "json")]
    data: Option<String>,
    /// Body sent as JSON (checked to be JSON; @path and @- work too); sets
    /// Content-Type and Accept to application/json.
    #[arg(long, value_name = "DATA")]
    json: Option<String>,
    /// Write the winner's body to FILE instead of stdout, through a
    /// temporary beside it renamed into place on success. On failure FILE is
    /// neither created nor changed.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Links from a TOML file (see `fallback check --help`); they come first.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Per-attempt timeout, e.g. 300ms, 2s, 1m [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    timeout: Option<Duration>,
    /// Bound on the whole call [default: none].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    deadline: Option<Duration>,
    /// Extra tries on the same link before moving on [default: 0].
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// Start the next link when the current one has not answered within DUR.
    /// The body is then buffered in memory (up to --max-body).
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    hedge: Option<Duration>,
    /// Statuses that fall back: non-2xx (the default) or a comma list of
    /// codes and classes, e.g. 5xx,429,408. Any other non-2xx status is the
    /// final answer.
    #[arg(long, value_name = "SPEC", value_parser = parse_fail_on)]
    fail_on: Option<String>,
    /// Allow re-sending a non-idempotent request (POST, PATCH) whose outcome
    /// is unknown.
    #[arg(long)]
    idempotent: bool,
    /// Largest response body accepted, e.g. 64KiB, 10MiB, 1GiB [default:
    /// 16MiB]. A larger one is a failed attempt (too_large) and falls back.
    #[arg(long, value_name = "SIZE", value_parser = units::size)]
    max_body: Option<u64>,
    /// The attempt report on stderr [default: text when stderr is a
    /// terminal, else none].
    #[arg(long, value_name = "FORMAT")]
    report: Option<ReportFormat>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
    None,
}

fn parse_fail_on(s: &str) -> Result<String, String> {
    Classifier::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Invalid input: exit 2, nothing sent.
struct Usage(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Send(args) => send(*args),
        Command::Check { config } => check(&config),
        Command::Demo => demo::run(),
    };
    match result {
        Ok(code) => code,
        Err(Usage(msg)) => {
            errln!("fallback: {msg}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Reads `@path` / `@-` arguments; a plain value is itself.
fn read_arg(flag: &str, value: &str) -> Result<Body, Usage> {
    match value.strip_prefix('@') {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Usage(format!("{flag} @-: cannot read stdin: {e}")))?;
            Ok(Body::bytes(buf))
        }
        // Re-opened for every attempt, never held whole in memory.
        Some(path) => Ok(Body::file(path)),
        None => Ok(Body::bytes(value.as_bytes().to_vec())),
    }
}

fn json_arg(value: &str) -> Result<Body, Usage> {
    let text = match value.strip_prefix('@') {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Usage(format!("--json @-: cannot read stdin: {e}")))?;
            s
        }
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| Usage(format!("--json @{path}: {e}")))?
        }
        None => value.to_owned(),
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| Usage(format!("--json: invalid JSON: {e}")))?;
    Ok(Body::bytes(text.into_bytes()))
}

fn split_header(h: &str) -> Result<(String, String), Usage> {
    match h.split_once(':') {
        Some((n, v)) if !n.trim().is_empty() => Ok((n.trim().to_owned(), v.trim().to_owned())),
        // Only the first word is echoed: without the colon, the rest may be
        // a secret value.
        _ => Err(Usage(format!(
            "invalid header {:?}: expected 'Name: value'",
            h.split_whitespace().next().unwrap_or("")
        ))),
    }
}

/// Builds the chain: config links first, then the command line's URLs.
fn build_chain(args: &SendArgs, cfg: &config::Config) -> Result<Chain, Usage> {
    let mut b: ChainBuilder = Chain::builder().breaker(None);
    if let Some(t) = args.timeout.or(cfg.timeout) {
        b = b.timeout(t);
    }
    if let Some(d) = args.deadline.or(cfg.deadline) {
        b = b.deadline(d);
    }
    if let Some(r) = args.retries.or(cfg.retries) {
        b = b.retries(r);
    }
    if let Some(h) = args.hedge.or(cfg.hedge) {
        b = b.hedge(Hedge::fixed(h));
    }
    if let Some(spec) = args.fail_on.as_deref().or(cfg.fail_on.as_deref()) {
        b = b.classifier(Classifier::parse(spec).map_err(|e| Usage(format!("--fail-on: {e}")))?);
    }
    if let Some(m) = args.max_body.or(cfg.max_body) {
        b = b.max_body(m);
    }
    for h in &args.headers {
        let (n, v) = split_header(h)?;
        b = b.header(n, v);
    }
    for name in &cfg.secret_headers {
        b = b.secret_header(name.clone());
    }
    let idempotent = args.idempotent || cfg.idempotent.unwrap_or(false);

    for ep in &cfg.endpoint {
        let has_body = ep.json.is_some() || ep.body.is_some();
        let method = ep
            .method
            .clone()
            .unwrap_or_else(|| if has_body { "POST" } else { "GET" }.into());
        let mut link = Link::new(method, ep.url.clone());
        if let Some(n) = &ep.name {
            link = link.name(n.clone());
        }
        for (n, v) in &ep.headers {
            link = link.header(n.clone(), v.clone());
        }
        if let Some(j) = &ep.json {
            link = link.json(j).header("Accept", "application/json");
        } else if let Some(body) = &ep.body {
            link = link.body(body.clone());
        }
        if let Some(t) = ep.timeout {
            link = link.timeout(t);
        }
        if let Some(r) = ep.retries {
            link = link.retries(r);
        }
        if idempotent {
            link = link.idempotent(true);
        }
        b = b.link(link);
    }

    let (body, is_json) = match (&args.data, &args.json) {
        (Some(d), _) => (Some(read_arg("-d", d)?), false),
        (None, Some(j)) => (Some(json_arg(j)?), true),
        (None, None) => (None, false),
    };
    if !args.urls.is_empty() {
        let method = args
            .method
            .clone()
            .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into());
        for url in &args.urls {
            let mut link = Link::new(method.clone(), url.clone());
            if let Some(body) = &body {
                link = link.body(body.clone());
            }
            if is_json {
                link = link
                    .header("Content-Type", "application/json")
                    .header("Accept", "application/json");
            }
            if idempotent {
                link = link.idempotent(true);
            }
            b = b.link(link);
        }
    }
    if cfg.endpoint.is_empty() && args.urls.is_empty() {
        return Err(Usage(
            "no URL given: pass one or more URLs, or --config FILE".into(),
        ));
    }
    b.build().map_err(|e| Usage(e.to_string()))
}

fn spinner(show: bool, msg: &str) -> Option<ProgressBar> {
    if !show {
        return None;
    }
    let p = ProgressBar::new_spinner();
    p.set_style(
        ProgressStyle::with_template("{spinner} {msg} {bytes} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    p.set_message(msg.to_owned());
    p.enable_steady_tick(Duration::from_millis(100));
    Some(p)
}

fn send(args: SendArgs) -> Result<ExitCode, Usage> {
    let cfg = match &args.config {
        Some(path) => config::load(path).map_err(Usage)?,
        None => config::Config::default(),
    };
    let chain = build_chain(&args, &cfg)?;
    let tty = std::io::stderr().is_terminal();
    let format = args.report.unwrap_or(if tty {
        ReportFormat::Text
    } else {
        ReportFormat::None
    });
    let progress = spinner(tty && format == ReportFormat::Text, "fallback");
    let hedged = args.hedge.or(cfg.hedge).is_some();

    let rt = runtime();
    // The outcome: (report, winner's status, error) and what to print.
    let (report, status, error, body_out): (
        fallback::Report,
        Option<u16>,
        Option<fallback::Error>,
        BodyOut,
    ) = rt.block_on(async {
        if let Some(dest) = &args.output {
            let sink = output::FileSink::new(dest, progress.clone())
                .map_err(|e| Usage(format!("-o {}: {e}", dest.display())))?;
            if hedged {
                return Ok(match chain.call().await {
                    Ok(resp) => {
                        let status = Some(resp.status().as_u16());
                        let write = sink.write_all_and_commit(resp.body());
                        (
                            resp.report().clone(),
                            status,
                            None,
                            BodyOut::Committed(write),
                        )
                    }
                    Err(e) => (
                        e.report().clone(),
                        e.status().map(|s| s.as_u16()),
                        Some(e),
                        BodyOut::None,
                    ),
                });
            }
            let mut sink = sink;
            return Ok(match chain.call_into(&mut sink).await {
                Ok(resp) => {
                    let status = Some(resp.status().as_u16());
                    (
                        resp.report().clone(),
                        status,
                        None,
                        BodyOut::Committed(sink.commit()),
                    )
                }
                Err(e) => (
                    e.report().clone(),
                    e.status().map(|s| s.as_u16()),
                    Some(e),
                    BodyOut::None,
                ),
            });
        }
        if hedged {
            return Ok(match chain.call().await {
                Ok(resp) => (
                    resp.report().clone(),
                    Some(resp.status().as_u16()),
                    None,
                    BodyOut::Bytes(resp.body().clone()),
                ),
                Err(e) => (
                    e.report().clone(),
                    e.status().map(|s| s.as_u16()),
                    Some(e),
                    BodyOut::None,
                ),
            });
        }
        let mut spool = output::Spool::new(progress.clone());
        Ok(match chain.call_into(&mut spool).await {
            Ok(resp) => (
                resp.report().clone(),
                Some(resp.status().as_u16()),
                None,
                BodyOut::Spool(spool),
            ),
            Err(e) => (
                e.report().clone(),
                e.status().map(|s| s.as_u16()),
                Some(e),
                BodyOut::None,
            ),
        })
    })?;
    if let Some(p) = &progress {
        p.finish_and_clear();
    }

    // stdout: the winner's body, or the last failure's body.
    let mut stdout = std::io::stdout().lock();
    let mut code = if error.is_none() { 0 } else { 1 };
    let written = match body_out {
        BodyOut::Spool(s) => s.copy_to(&mut stdout),
        BodyOut::Bytes(b) => stdout.write_all(&b).and_then(|_| stdout.flush()),
        BodyOut::Committed(Err(e)) => {
            errln!(
                "fallback: cannot write {}: {e}",
                args.output
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display()
            );
            code = 1;
            Ok(())
        }
        BodyOut::Committed(Ok(())) => Ok(()),
        BodyOut::None => match error.as_ref().and_then(|e| e.body()) {
            Some(b) => stdout.write_all(b).and_then(|_| stdout.flush()),
            None => Ok(()),
        },
    };
    if let Err(e) = written {
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            errln!("fallback: cannot write to stdout: {e}");
            code = 1;
        }
    }
    if let Some(e) = &error {
        if e.kind() == fallback::ErrorKind::MaybeProcessed {
            // The library's advice, in this command's terms.
            errln!(
                "fallback: {e}\nfallback: hint: pass --idempotent, or send an Idempotency-Key header, to allow re-sending"
            );
        } else {
            errln!("fallback: {e}");
        }
    }
    match format {
        ReportFormat::Text => err!("{}", report::text(&report, status)),
        ReportFormat::Json => errln!("{}", report::json(&report, status)),
        ReportFormat::None => {}
    }
    Ok(ExitCode::from(code))
}

enum BodyOut {
    None,
    Spool(output::Spool),
    Bytes(bytes::Bytes),
    Committed(std::io::Result<()>),
}

fn check(path: &std::path::Path) -> Result<ExitCode, Usage> {
    let cfg = config::load(path).map_err(Usage)?;
    if cfg.endpoint.is_empty() {
        return Err(Usage(format!(
            "config {}: no [[endpoint]] links",
            path.display()
        )));
    }
    let args = SendArgs::parse_from(["send"]);
    let chain = build_chain(&args, &cfg)?;
    outln!("{}: {} link(s), nothing sent", path.display(), chain.len());
    for l in chain.links() {
        outln!("[{}] {}  {} {}", l.index(), l.name(), l.method(), l.url());
        for (n, v) in l.headers() {
            outln!("      {n}: {v}");
        }
        outln!("      body: {}  idempotent: {}", l.body(), l.idempotent());
        if let Some(t) = l.timeout() {
            outln!("      timeout: {t:?}");
        }
        if let Some(r) = l.retries() {
            outln!("      retries: {r}");
        }
    }
    let show = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            outln!("{k}: {v}");
        }
    };
    show("timeout", cfg.timeout.map(|d| format!("{d:?}")));
    show("deadline", cfg.deadline.map(|d| format!("{d:?}")));
    show("retries", cfg.retries.map(|r| r.to_string()));
    show("hedge", cfg.hedge.map(|d| format!("{d:?}")));
    show("fail_on", cfg.fail_on.clone());
    show("idempotent", cfg.idempotent.map(|b| b.to_string()));
    show("max_body", cfg.max_body.map(|b| format!("{b} bytes")));
    if !cfg.secret_headers.is_empty() {
        show("secret_headers", Some(cfg.secret_headers.join(", ")));
    }
    Ok(ExitCode::SUCCESS)
}

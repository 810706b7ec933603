//! `fallback`: curl with a chain of backups.
//!
//! A thin user of the `fallback` library: every flag maps onto a
//! `ChainBuilder` or `Link` setting. This library half of the binary is not
//! an API: the command line is. It exists so the fuzz targets (feature
//! `fuzzing`) can reach the command's parsers in-process.

#![forbid(unsafe_code)]
mod build;
mod config;
#[cfg(feature = "demo")]
mod demo;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod output;
mod print;
mod report;
mod serve;
mod verbose;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use fallback_chain::{Classifier, Policy};
use fallback_chain_proxy::{units, Net};
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
    /// Serve the chain as a local failover proxy: plain HTTP in, every
    /// request tried along the upstreams (breakers on, sticky). Prints
    /// `listening on http://IP:PORT` when ready; SIGTERM or SIGINT drains
    /// and exits 0.
    #[command(
        after_help = "Example:\n  fallback serve --listen 127.0.0.1:7070 http://primary:8080 http://backup:8080"
    )]
    Serve(Box<serve::ServeArgs>),
    /// Start misbehaving servers on 127.0.0.1 and show calls failing over
    /// through them (refused, timed out, 503, hedged, won). Takes a few seconds.
    #[cfg(feature = "demo")]
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
    /// Body sent as JSON (checked to be JSON first; @path streams a file, @- reads stdin); sets
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
    #[command(flatten)]
    policy: PolicyArgs,
    /// Largest response body accepted, e.g. 64KiB, 10MiB, 1GiB [default:
    /// 16MiB]. A larger one is a failed attempt (too_large) and falls back.
    #[arg(long, value_name = "SIZE", value_parser = units::size)]
    max_body: Option<u64>,
    /// The attempt report on stderr [default: text when stderr is a
    /// terminal, else none].
    #[arg(long, value_name = "FORMAT")]
    report: Option<ReportFormat>,
    #[command(flatten)]
    net: NetArgs,
    /// Follow redirects within a link.
    #[arg(short = 'L', long)]
    location: bool,
    /// The most redirects followed per link, with -L [default: 10].
    #[arg(long, value_name = "N")]
    max_redirs: Option<u32>,
    /// Connect the command line's URLs to this Unix socket instead of
    /// their host, as curl's --unix-socket (http:// URLs only; the URL
    /// still gives Host, path and query).
    #[arg(long, value_name = "PATH")]
    unix_socket: Option<PathBuf>,
    /// Ask for a compressed answer and decode it.
    #[arg(long)]
    compressed: bool,
    /// Basic credentials for every link, USER:PASS. Never printed.
    #[arg(short = 'u', long, value_name = "USER:PASS")]
    user: Option<String>,
    /// The User-Agent [default: fallback/VERSION].
    #[arg(short = 'A', long, value_name = "UA")]
    user_agent: Option<String>,
    /// The winner's status line and headers before its body on stdout.
    #[arg(short = 'i', long)]
    include: bool,
    /// Send HEAD and print the winner's status line and headers.
    #[arg(short = 'I', long, conflicts_with_all = ["data", "json"])]
    head: bool,
    /// No progress and no report on stderr (errors still print).
    #[arg(short = 's', long, conflicts_with = "verbose")]
    silent: bool,
    /// The text report, and each attempt's request and response head on
    /// stderr (secrets redacted).
    #[arg(short = 'v', long)]
    verbose: bool,
}

/// The chain settings of the command line, shared by `send` and `serve`:
/// a layer laid over the config file's, and under a route's.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct PolicyArgs {
    /// Per-attempt timeout, e.g. 300ms, 2s, 1m [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    timeout: Option<Duration>,
    /// Bound on the whole call, every failover included [default: none].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    deadline: Option<Duration>,
    /// Bound between two reads of the winner's body once it streams (to
    /// the output, or to the proxy's client; `serve` also aborts a client
    /// that stops reading for this long) [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    idle_timeout: Option<Duration>,
    /// Extra tries on the same link before moving on [default: 0].
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// Start the next link when the current one has not answered within
    /// DUR (`send` then buffers the body in memory, up to --max-body).
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    hedge: Option<Duration>,
    /// Statuses that fall back, a comma list of codes and classes, e.g.
    /// 5xx,429,408, or non-2xx; any other status is the final answer
    /// [default: send: non-2xx; serve: 5xx,408,429, as a proxy passes
    /// redirects, 304 and client errors through].
    #[arg(long, value_name = "SPEC", value_parser = parse_fail_on)]
    fail_on: Option<Classifier>,
    /// gRPC codes that fall back when a gRPC answer's head carries them
    /// (a trailers-only answer), by name or number, comma-separated; any
    /// other code but OK is the final answer [default: UNAVAILABLE].
    #[arg(long, value_name = "CODES", value_parser = parse_grpc_codes)]
    grpc_fail_on: Option<GrpcCodes>,
    /// Allow re-sending a non-idempotent request (POST, PATCH) whose
    /// outcome is unknown.
    #[arg(long)]
    idempotent: bool,
}

impl PolicyArgs {
    /// The flags given, as a policy layer.
    pub(crate) fn policy(&self) -> Policy {
        let mut p = Policy::new();
        p.timeout = self.timeout;
        p.deadline = self.deadline;
        p.idle_timeout = self.idle_timeout;
        p.retries = self.retries;
        p.hedge = self.hedge;
        p.fail_on = self.fail_on.clone();
        p.grpc_fail_on = self.grpc_fail_on.clone().map(|c| c.0);
        p.idempotent = self.idempotent.then_some(true);
        p
    }
}

/// How to reach servers: TLS, proxies, h2c, connect timeout. Shared by
/// `send` and `serve`.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct NetArgs {
    /// Extra trusted root certificates (PEM), besides the system's.
    #[arg(long, value_name = "FILE")]
    pub(crate) cacert: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// Do not verify server certificates. Every attempt made so is marked in
    /// the report.
    #[arg(short = 'k', long)]
    pub(crate) insecure: bool,
    /// HTTP/2 without upgrade (h2c) to http:// links.
    #[arg(long)]
    pub(crate) http2_prior_knowledge: bool,
    /// Use this http:// proxy (http://user:pass@host:port) instead of the
    /// HTTP_PROXY, HTTPS_PROXY and ALL_PROXY variables.
    #[arg(short = 'x', long, value_name = "URL")]
    pub(crate) proxy: Option<String>,
    /// Hosts that bypass the proxy (comma-separated; replaces NO_PROXY).
    #[arg(long, value_name = "LIST")]
    pub(crate) noproxy: Option<String>,
    /// Bound on establishing a connection [default: 2s].
    #[arg(long, value_name = "DUR", value_parser = units::duration)]
    pub(crate) connect_timeout: Option<Duration>,
    /// A pooled connection this old takes no new request and closes when
    /// idle, so connections follow DNS changes (0: any age) [default: 5m].
    #[arg(long, value_name = "DUR", value_parser = units::duration_or_zero)]
    pub(crate) max_connection_age: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
    None,
}

/// `--grpc-fail-on`'s list, as one value.
#[derive(Clone, Debug)]
struct GrpcCodes(Vec<fallback_chain::grpc::Code>);

fn parse_grpc_codes(s: &str) -> Result<GrpcCodes, String> {
    fallback_chain_proxy::config::grpc_codes(s).map(GrpcCodes)
}

fn parse_fail_on(s: &str) -> Result<Classifier, String> {
    Classifier::parse(s).map_err(|e| e.to_string())
}

impl NetArgs {
    /// The flags given, as network keys.
    pub(crate) fn net(&self) -> Net {
        let mut net = Net::default();
        net.ca_cert = self.cacert.clone();
        net.client_cert = self.cert.clone();
        net.client_key = self.key.clone();
        net.insecure = self.insecure.then_some(true);
        net.proxy = self.proxy.clone();
        net.no_proxy = self.noproxy.clone();
        net.http2_prior_knowledge = self.http2_prior_knowledge.then_some(true);
        net.connect_timeout = self.connect_timeout;
        net.max_connection_age = self.max_connection_age;
        net
    }
}

/// Every flag of `send` and `serve` also read from `FALLBACK_<FLAG>`
/// (`--connect-timeout` from `FALLBACK_CONNECT_TIMEOUT`); the command line
/// wins. `--help` names each variable but never shows its value: a header
/// or a proxy's URL may hold a secret.
fn with_env_vars(cmd: clap::Command) -> clap::Command {
    let mut cmd = cmd;
    for sub in ["send", "serve"] {
        cmd = cmd.mut_subcommand(sub, |sub| {
            let longs: Vec<(clap::Id, String)> = sub
                .get_arguments()
                .filter_map(|a| Some((a.get_id().clone(), a.get_long()?.to_owned())))
                .filter(|(_, long)| long != "help" && long != "version")
                .collect();
            longs.into_iter().fold(sub, |sub, (id, long)| {
                sub.mut_arg(id, |a| {
                    let a = a.env(env_var(&long)).hide_env_values(true);
                    // A switch set from the environment takes 1/0, yes/no,
                    // on/off as well as true/false.
                    match a.get_action() {
                        clap::ArgAction::SetTrue => {
                            a.value_parser(clap::builder::BoolishValueParser::new())
                        }
                        _ => a,
                    }
                })
            })
        });
    }
    cmd
}

/// The `FALLBACK_<FLAG>` variable a refused value came from: the flag
/// clap names is not on the command line, and its variable is set.
fn env_culprit(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let on_line = std::env::args_os()
        .filter_map(|a| a.into_string().ok())
        .any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
    let var = env_var(long);
    (!on_line && std::env::var_os(&var).is_some()).then_some(var)
}

/// The variable of the flag `--LONG`: `FALLBACK_LONG`, `-` as `_`.
fn env_var(long: &str) -> String {
    format!("FALLBACK_{}", long.replace('-', "_").to_ascii_uppercase())
}

/// Invalid input: exit 2, nothing sent.
struct Usage(String);

/// The `fallback` command, on this process's arguments.
pub fn main() -> ExitCode {
    let matches = match with_env_vars(Cli::command()).try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let from_env = env_culprit(&e);
            let _ = e.print();
            if let Some(var) = from_env {
                errln!("fallback: that value came from the environment variable {var}");
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Send(args) => send(*args),
        Command::Check { config } => check(&config),
        #[cfg(feature = "demo")]
        Command::Demo => demo::run(),
        Command::Serve(args) => serve::run(*args),
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
    let chain = build::chain(&args, &cfg, args.verbose.then_some(verbose::Verbose))?;
    let tty = std::io::stderr().is_terminal();
    let format = if args.silent {
        ReportFormat::None
    } else if args.verbose {
        args.report.unwrap_or(ReportFormat::Text)
    } else {
        args.report.unwrap_or(if tty {
            ReportFormat::Text
        } else {
            ReportFormat::None
        })
    };
    let progress = spinner(
        tty && !args.silent && !args.verbose && format == ReportFormat::Text,
        "fallback",
    );
    let show_head = args.include || args.head;

    let rt = runtime();
    let done = rt.block_on(async {
        let head =
            |v, s, h: &http::HeaderMap| show_head.then(|| verbose::status_and_headers(v, s, h));
        let failed = |e: fallback_chain::Error| Done {
            report: e.report().clone(),
            status: e.status().map(|s| s.as_u16()),
            head: match (e.version(), e.status(), e.headers()) {
                (Some(v), Some(s), Some(h)) => head(v, s, h),
                _ => None,
            },
            error: Some(e),
            body: BodyOut::None,
        };
        let won =
            |r: &fallback_chain::Report, v, s: http::StatusCode, h: &http::HeaderMap, body| Done {
                report: r.clone(),
                status: Some(s.as_u16()),
                head: head(v, s, h),
                error: None,
                body,
            };
        if let Some(dest) = &args.output {
            let mut sink = output::FileSink::new(dest, progress.clone())
                .map_err(|e| Usage(format!("-o {}: {e}", dest.display())))?;
            return Ok(match chain.call_into(&mut sink).await {
                Ok(resp) => {
                    let mut d = won(
                        resp.report(),
                        resp.version(),
                        resp.status(),
                        resp.headers(),
                        BodyOut::None,
                    );
                    // With -i, curl writes the head into the file too.
                    d.body = BodyOut::Committed(sink.commit(d.head.take().as_deref()));
                    d
                }
                Err(e) => failed(e),
            });
        }
        let mut spool = output::Spool::new(progress.clone());
        Ok(match chain.call_into(&mut spool).await {
            Ok(resp) => won(
                resp.report(),
                resp.version(),
                resp.status(),
                resp.headers(),
                BodyOut::Spool(spool),
            ),
            Err(e) => failed(e),
        })
    })?;
    if let Some(p) = &progress {
        p.finish_and_clear();
    }
    let Done {
        report,
        status,
        error,
        head,
        body: body_out,
    } = done;

    // stdout: the winner's body, or the last failure's body, after the
    // head with -i or -I.
    let mut stdout = std::io::stdout().lock();
    let mut code = if error.is_none() { 0 } else { 1 };
    let head_written = match &head {
        Some(h) => stdout.write_all(h),
        None => Ok(()),
    };
    let written = head_written.and_then(|()| match body_out {
        BodyOut::Spool(s) => s.copy_to(&mut stdout),
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
        BodyOut::Committed(Ok(())) => stdout.flush(),
        BodyOut::None => match error.as_ref().and_then(|e| e.body()) {
            Some(b) => stdout.write_all(b).and_then(|_| stdout.flush()),
            None => stdout.flush(),
        },
    });
    if let Err(e) = written {
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            errln!("fallback: cannot write to stdout: {e}");
            code = 1;
        }
    }
    if let Some(e) = &error {
        if e.kind() == fallback_chain::ErrorKind::MaybeProcessed {
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

/// How a call ended, and what goes to stdout.
struct Done {
    report: fallback_chain::Report,
    status: Option<u16>,
    error: Option<fallback_chain::Error>,
    /// The status line and headers, for -i and -I.
    head: Option<Vec<u8>>,
    body: BodyOut,
}

enum BodyOut {
    None,
    Spool(output::Spool),
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
    let chain = build::chain(&args, &cfg, None)?;
    // Every value from the environment is written back as its `${NAME}`.
    let say = |line: String| outln!("{}", cfg.env.mask(&line));
    say(format!(
        "{}: {} link(s), nothing sent",
        path.display(),
        chain.len()
    ));
    for l in chain.links() {
        say(format!(
            "[{}] {}  {} {}",
            l.index(),
            l.name(),
            l.method(),
            l.url()
        ));
        for (n, v) in l.headers() {
            say(format!("      {n}: {v}"));
        }
        say(format!(
            "      body: {}  idempotent: {}",
            l.body(),
            l.idempotent()
        ));
        if let Some(t) = l.timeout() {
            say(format!("      timeout: {t:?}"));
        }
        if let Some(r) = l.retries() {
            say(format!("      retries: {r}"));
        }
    }
    let show = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            say(format!("{k}: {v}"));
        }
    };
    show("timeout", cfg.timeout.map(|d| format!("{d:?}")));
    show("deadline", cfg.deadline.map(|d| format!("{d:?}")));
    show("idle_timeout", cfg.idle_timeout.map(|d| format!("{d:?}")));
    show("retries", cfg.retries.map(|r| r.to_string()));
    show("hedge", cfg.hedge.map(|d| format!("{d:?}")));
    show("fail_on", cfg.fail_on.as_ref().map(ToString::to_string));
    show("idempotent", cfg.idempotent.map(|b| b.to_string()));
    show("max_body", cfg.max_body.map(|b| format!("{b} bytes")));
    if !cfg.secret_headers.is_empty() {
        show("secret_headers", Some(cfg.secret_headers.join(", ")));
    }
    Ok(ExitCode::SUCCESS)
}

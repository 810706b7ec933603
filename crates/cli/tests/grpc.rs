//! gRPC through `fallback serve`, end to end: tonic servers behind the
//! real binary, and tonic clients in front of it, over h2c on loopback.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use fallback_chain_testserver::grpc::{GrpcServer, Mode, Msg};
use http::uri::PathAndQuery;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

mod common;
use common::proxy::Proxy;

async fn client(addr: &str) -> tonic::client::Grpc<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the proxy");
    tonic::client::Grpc::new(channel)
}

fn codec() -> ProstCodec<Msg, Msg> {
    ProstCodec::default()
}

async fn say(addr: &str, text: &str, timeout: Option<Duration>) -> Result<String, Status> {
    let mut g = client(addr).await;
    g.ready().await.unwrap();
    let mut req = tonic::Request::new(Msg::new(text));
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    let path = PathAndQuery::from_static("/test.Echo/Say");
    Ok(g.unary(req, path, codec()).await?.into_inner().text)
}

/// `fallback serve` in front of these servers, h2c to each.
fn serve(servers: &[&GrpcServer], extra: &[&str], stderr: Stdio) -> Proxy {
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
    let mut args = vec!["--http2-prior-knowledge"];
    args.extend_from_slice(extra);
    args.extend(urls.iter().map(String::as_str));
    Proxy::start_with(&args, stderr)
}

#[tokio::test]
async fn a_primary_answering_unavailable_falls_over_and_the_log_says_why() {
    let primary = GrpcServer::start("primary", Mode::Fail(14, "draining".into()));
    let backup = GrpcServer::start("backup", Mode::Serve);
    let mut p = serve(
        &[&primary, &backup],
        &["--access-log", "json"],
        Stdio::piped(),
    );
    for i in 0..3 {
        let got = say(&p.addr, &format!("hi {i}"), None).await;
        assert_eq!(got.unwrap(), format!("backup: hi {i}"));
    }
    let mut log = BufReader::new(p.child.stderr.take().unwrap());
    let mut line = String::new();
    log.read_line(&mut line).unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    let first = &entry["attempts"][0];
    assert_eq!(first["outcome"], "grpc", "{entry}");
    assert_eq!(first["grpc_status"], 14, "{entry}");
    assert_eq!(first["grpc_message"], "draining", "{entry}");
    assert_eq!(entry["attempts"][1]["outcome"], "ok", "{entry}");
    // The winner's status came in its trailers.
    assert_eq!(entry["attempts"][1]["grpc_status"], 0, "{entry}");
}

#[tokio::test]
async fn another_code_is_the_clients_answer_and_the_backup_is_not_asked() {
    let primary = GrpcServer::start("primary", Mode::Fail(5, "no such order".into()));
    let backup = GrpcServer::start("backup", Mode::Serve);
    let p = serve(&[&primary, &backup], &[], Stdio::null());
    let status = say(&p.addr, "hi", None).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no such order");
    assert!(backup.calls().is_empty());
}

#[tokio::test]
async fn grpc_fail_on_widens_the_set() {
    let primary = GrpcServer::start("primary", Mode::Fail(8, "quota".into()));
    let backup = GrpcServer::start("backup", Mode::Serve);
    let p = serve(
        &[&primary, &backup],
        &["--grpc-fail-on", "UNAVAILABLE,resource_exhausted"],
        Stdio::null(),
    );
    assert_eq!(say(&p.addr, "hi", None).await.unwrap(), "backup: hi");

    let dir = tempfile::tempdir().unwrap();
    let config = common::write(
        dir.path(),
        "grpc.toml",
        format!(
            "grpc_fail_on = [\"UNAVAILABLE\", 8]\n\
             [[upstream]]\nurl = \"{}\"\nh2c = true\n\
             [[upstream]]\nurl = \"{}\"\nh2c = true\n",
            primary.url(),
            backup.url()
        )
        .as_bytes(),
    );
    let p = Proxy::start(&["--config", &config]);
    assert_eq!(say(&p.addr, "hi", None).await.unwrap(), "backup: hi");

    let bad = common::write(dir.path(), "bad.toml", b"grpc_fail_on = [\"UNAVAILABL\"]\n");
    let out = common::run(&["serve", "--config", &bad]);
    assert_ne!(common::code(&out), 0);
    let err = common::stderr(&out);
    assert!(
        err.contains("UNAVAILABL") && err.contains("grpc_fail_on"),
        "{err}"
    );
}

#[tokio::test]
async fn refused_and_silent_primaries_fail_over() {
    let refused = fallback_chain_testserver::Server::refused();
    let hangs = GrpcServer::start("hangs", Mode::Hang);
    let backup = GrpcServer::start("backup", Mode::Serve);
    let refused_url = refused.url("");
    let p = Proxy::start(&[
        "--http2-prior-knowledge",
        "--timeout",
        "300ms",
        // A gRPC call is a POST: a silent primary may have processed it,
        // so only a route marked idempotent re-sends it elsewhere.
        "--idempotent",
        &refused_url,
        &hangs.url(),
        &backup.url(),
    ]);
    assert_eq!(say(&p.addr, "hi", None).await.unwrap(), "backup: hi");
    assert_eq!(hangs.calls().len(), 1);
}

#[tokio::test]
async fn a_silent_primary_is_not_resent_unless_idempotent() {
    let hangs = GrpcServer::start("hangs", Mode::Hang);
    let backup = GrpcServer::start("backup", Mode::Serve);
    let p = serve(&[&hangs, &backup], &["--timeout", "300ms"], Stdio::null());
    let status = say(&p.addr, "hi", None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("hangs") || status.message().contains("attempts"),
        "{status:?}"
    );
    assert!(backup.calls().is_empty());
}

#[tokio::test]
async fn every_upstream_down_is_unavailable_in_grpc_terms_naming_each_attempt() {
    let a = fallback_chain_testserver::Server::refused();
    let b = fallback_chain_testserver::Server::refused();
    let (a_url, b_url) = (a.url(""), b.url(""));
    let p = Proxy::start(&["--http2-prior-knowledge", &a_url, &b_url]);
    let status = say(&p.addr, "hi", None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let msg = status.message();
    assert!(msg.contains(&a.addr().to_string()), "{msg}");
    assert!(msg.contains(&b.addr().to_string()), "{msg}");
    assert!(msg.contains("connect"), "{msg}");
    assert_eq!(
        status
            .metadata()
            .get("x-fallback-error")
            .map(|v| v.to_str().unwrap()),
        Some("upstream")
    );
}

#[tokio::test]
async fn the_deadline_comes_back_as_deadline_exceeded() {
    let hangs = GrpcServer::start("hangs", Mode::Hang);
    let p = serve(&[&hangs], &["--deadline", "300ms"], Stdio::null());
    let status = say(&p.addr, "hi", None).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn the_clients_deadline_travels_upstream_as_the_time_left() {
    let primary = GrpcServer::start("primary", Mode::Fail(14, String::new()));
    let backup = GrpcServer::start("backup", Mode::Serve);
    let p = serve(&[&primary, &backup], &[], Stdio::null());
    let got = say(&p.addr, "hi", Some(Duration::from_secs(3))).await;
    assert_eq!(got.unwrap(), "backup: hi");
    for s in [&primary, &backup] {
        let sent = s.calls()[0]
            .timeout
            .clone()
            .expect("a grpc-timeout upstream");
        let left = fallback_chain::grpc::parse_timeout(&sent).unwrap();
        assert!(left <= Duration::from_secs(3), "{sent}");
        assert!(left >= Duration::from_secs(1), "{sent}");
    }
    // A client deadline shorter than the work bounds the call: the
    // client's own timer and the proxy's answer race to end it, and the
    // server is told no more than the client waits.
    let hangs = GrpcServer::start("hangs", Mode::Hang);
    let p = serve(&[&hangs], &[], Stdio::null());
    let status = say(&p.addr, "hi", Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    let sent = hangs.calls()[0].timeout.clone().unwrap();
    let told = fallback_chain::grpc::parse_timeout(&sent).unwrap();
    assert!(told <= Duration::from_millis(300), "{sent}");
}

#[tokio::test]
async fn no_route_is_unimplemented() {
    let backup = GrpcServer::start("backup", Mode::Serve);
    let dir = tempfile::tempdir().unwrap();
    let config = common::write(
        dir.path(),
        "routes.toml",
        format!(
            "http2_prior_knowledge = true\n[[upstream]]\nname = \"b\"\nurl = \"{}\"\n\
             [[route]]\nprefix = \"/other.Service/\"\nupstreams = [\"b\"]\n",
            backup.url()
        )
        .as_bytes(),
    );
    let p = Proxy::start(&["--config", &config]);
    let status = say(&p.addr, "hi", None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

#[tokio::test]
async fn streams_pass_through_each_way() {
    let primary = GrpcServer::start("primary", Mode::Fail(14, String::new()));
    let backup = GrpcServer::start("backup", Mode::Serve);
    let p = serve(&[&primary, &backup], &["--idempotent"], Stdio::null());

    // Server streaming.
    let mut g = client(&p.addr).await;
    g.ready().await.unwrap();
    let path = PathAndQuery::from_static("/test.Echo/Count");
    let mut stream = g
        .server_streaming(tonic::Request::new(Msg::new("4")), path, codec())
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        got.push(m.text);
    }
    assert_eq!(got, ["backup 0", "backup 1", "backup 2", "backup 3"]);

    // Client streaming.
    g.ready().await.unwrap();
    let path = PathAndQuery::from_static("/test.Echo/Gather");
    let msgs = tokio_stream::iter(["a", "b", "c"].map(Msg::new));
    let got = g
        .client_streaming(tonic::Request::new(msgs), path, codec())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.text, "backup: a+b+c");

    // Bidirectional: each answer comes before the next message is sent.
    g.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
    let path = PathAndQuery::from_static("/test.Echo/Chat");
    tx.send(Msg::new("one")).await.unwrap();
    let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut answers = g
        .streaming(tonic::Request::new(outbound), path, codec())
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), answers.next())
        .await
        .expect("an answer while the request stream is still open");
    assert_eq!(first.unwrap().unwrap().text, "backup: one");
    tx.send(Msg::new("two")).await.unwrap();
    assert_eq!(answers.next().await.unwrap().unwrap().text, "backup: two");
    drop(tx);
    assert!(answers.next().await.is_none());
}

#[tokio::test]
async fn a_stream_that_fails_in_its_trailers_reaches_the_client_and_opens_the_breaker() {
    let primary = GrpcServer::start("primary", Mode::StreamThenFail(2, 14));
    let backup = GrpcServer::start("backup", Mode::Serve);
    let p = serve(&[&primary, &backup], &[], Stdio::null());
    let mut g = client(&p.addr).await;
    let path = PathAndQuery::from_static("/test.Echo/Count");
    // The breaker's default: five failures in a row open it.
    for _ in 0..5 {
        g.ready().await.unwrap();
        let mut stream = g
            .server_streaming(tonic::Request::new(Msg::new("5")), path.clone(), codec())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stream.message().await.unwrap().unwrap().text, "primary 0");
        assert_eq!(stream.message().await.unwrap().unwrap().text, "primary 1");
        let status = stream.message().await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }

    // The primary's breaker opened on those streams' trailers.
    g.ready().await.unwrap();
    let mut stream = g
        .server_streaming(tonic::Request::new(Msg::new("1")), path, codec())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().text, "backup 0");
    assert_eq!(primary.calls().len(), 5);
}

#[tokio::test]
async fn a_primary_that_closes_connections_with_goaway_costs_idempotent_calls_nothing() {
    // tonic's max_connection_age: GOAWAY, then the connection closes once
    // its streams are done. A stream the proxy opened as the server closed
    // the socket ends in a broken pipe, which says nothing of whether the
    // server took it: only a route marked idempotent re-sends it.
    let primary = GrpcServer::start_with("primary", Mode::Serve, Some(Duration::from_millis(50)));
    let p = serve(&[&primary], &["--idempotent"], Stdio::null());
    let mut g = client(&p.addr).await;
    let path = PathAndQuery::from_static("/test.Echo/Say");
    for i in 0..200 {
        g.ready().await.unwrap();
        let got = g
            .unary(
                tonic::Request::new(Msg::new(format!("{i}"))),
                path.clone(),
                codec(),
            )
            .await;
        assert_eq!(got.unwrap().into_inner().text, format!("primary: {i}"));
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
}

#[tokio::test]
async fn a_grpc_health_probe_readmits_a_recovered_primary() {
    let primary = GrpcServer::start("primary", Mode::Fail(14, "down".into()));
    let backup = GrpcServer::start("backup", Mode::Serve);
    let dir = tempfile::tempdir().unwrap();
    let config = common::write(
        dir.path(),
        "probe.toml",
        format!(
            "http2_prior_knowledge = true\n\
             [[upstream]]\nname = \"primary\"\nurl = \"{}\"\nprobe = \"grpc:test.Echo\"\n\
             [[upstream]]\nname = \"backup\"\nurl = \"{}\"\n",
            primary.url(),
            backup.url()
        )
        .as_bytes(),
    );
    let p = Proxy::start(&["--config", &config]);
    // Five failures in a row open the primary's breaker (the default).
    for _ in 0..5 {
        assert_eq!(say(&p.addr, "hi", None).await.unwrap(), "backup: hi");
    }
    primary.set_mode(Mode::Serve);
    // After the break (5 s by default) the health check, not a client's
    // call, finds the primary serving again.
    let back = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if say(&p.addr, "hi", None).await.unwrap() == "primary: hi" {
                break;
            }
        }
    })
    .await;
    assert!(back.is_ok(), "the primary came back");
    let calls = primary.calls();
    let check = calls
        .iter()
        .position(|c| c.path == "/grpc.health.v1.Health/Check")
        .expect("a health check");
    assert!(
        calls[check..].iter().any(|c| c.path == "/test.Echo/Say"),
        "calls resumed after the check: {calls:?}"
    );
    assert_eq!(
        calls[..check]
            .iter()
            .filter(|c| c.path == "/test.Echo/Say")
            .count(),
        5,
        "no client call was spent finding out: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_calls_share_an_upstream_connection_without_breaking_it() {
    // A client ends its request with an empty DATA frame; passed on as
    // one, an HTTP/2 server (h2, and so tonic) counts it as abuse and
    // closes the connection after 100, failing every call in flight.
    let primary = GrpcServer::start("primary", Mode::Serve);
    let p = serve(&[&primary], &[], Stdio::null());
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", p.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let callers: Vec<_> = (0..8)
        .map(|c| {
            let channel = channel.clone();
            tokio::spawn(async move {
                let mut failed = Vec::new();
                for i in 0..60 {
                    let mut g = tonic::client::Grpc::new(channel.clone());
                    g.ready().await.unwrap();
                    let path = PathAndQuery::from_static("/test.Echo/Say");
                    let req = tonic::Request::new(Msg::new(format!("{c}.{i}")));
                    if let Err(e) = g.unary(req, path, codec()).await {
                        failed.push(e);
                    }
                }
                failed
            })
        })
        .collect();
    for c in callers {
        let failed = c.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} failed, first: {:?}",
            failed.len(),
            failed.first()
        );
    }
    assert_eq!(primary.calls().len(), 480);
}

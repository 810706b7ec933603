//! The original Go package's own test scenarios, against real loopback
//! servers.

use std::sync::{Arc, Mutex};

use fallback_chain::{Attempt, Chain, ErrorKind, Link, Outcome};
use fallback_chain_testserver::{Behavior, Reply, Server};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Debug, PartialEq)]
struct BasicResponse {
    #[serde(rename = "Text")]
    text: String,
    #[serde(rename = "Detail")]
    detail: String,
}

#[derive(Deserialize, Debug, PartialEq)]
struct BasicError {
    #[serde(rename = "Code")]
    code: u16,
    #[serde(rename = "Message")]
    message: String,
}

#[derive(Serialize)]
struct PostBody {
    #[serde(rename = "Name")]
    name: &'static str,
    #[serde(rename = "Amount")]
    amount: u32,
}

const PASS: &str = r#"{"Text": "pass", "Detail": "ok"}"#;

#[tokio::test]
async fn single_healthy_get() {
    let pass = Server::start(Behavior::ok_json(PASS));
    let chain = Chain::builder()
        .link(Link::get(pass.url("/get-basic")).name("PASS"))
        .build()
        .unwrap();
    let resp = chain.call_json::<BasicResponse>().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().text, "pass");
    assert_eq!(resp.winner(), 0);
    assert_eq!(resp.report().attempts().len(), 1);
    assert_eq!(resp.report().attempts()[0].name(), "PASS");
    let reqs = pass.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, "/get-basic");
}

#[tokio::test]
async fn simple_fallback_400_then_200() {
    let fail = Server::start(Reply::json(400, r#"{"Code": 400, "Message": "bad"}"#));
    let pass = Server::start(Behavior::ok_json(PASS));
    let chain = Chain::builder()
        .link(Link::get(fail.url("/fail-basic")).name("FAIL"))
        .link(Link::get(pass.url("/get-basic")).name("PASS"))
        .build()
        .unwrap();
    let resp = chain.call_json::<BasicResponse>().await.unwrap();
    assert_eq!(resp.body().detail, "ok");
    assert_eq!(resp.winner(), 1);
    let a = resp.report().attempts();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].outcome(), Outcome::Status);
    assert_eq!(a[0].status().map(|s| s.as_u16()), Some(400));
    assert_eq!(a[1].outcome(), Outcome::Ok);
    assert_eq!(fail.request_count(), 1);
    assert_eq!(pass.request_count(), 1);
}

#[tokio::test]
async fn complex_chain_get_400_post_500_get_200() {
    let fail1 = Server::start(Behavior::status(400));
    let fail2 = Server::start(Reply::json(500, r#"{"Code": 500, "Message": "down"}"#));
    let pass = Server::start(Behavior::ok_json(PASS));
    let body = PostBody {
        name: "Random",
        amount: 100,
    };
    let chain = Chain::builder()
        .link(Link::get(fail1.url("/fail-basic")).name("FAIL1"))
        .link(
            Link::post(fail2.url("/fail-basic-post"))
                .name("FAIL2")
                .json(&body),
        )
        .link(Link::get(pass.url("/get-basic")).name("PASS"))
        .build()
        .unwrap();
    let resp = chain.call_json::<BasicResponse>().await.unwrap();
    assert_eq!(resp.winner(), 2);
    assert_eq!(resp.body().text, "pass");

    // The POST arrived intact, as JSON.
    let posted = fail2.requests();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].method, "POST");
    assert_eq!(posted[0].header("content-type"), Some("application/json"));
    let sent: serde_json::Value = serde_json::from_slice(&posted[0].body).unwrap();
    assert_eq!(sent, serde_json::json!({"Name": "Random", "Amount": 100}));

    let outcomes: Vec<_> = resp
        .report()
        .attempts()
        .iter()
        .map(|a| (a.link(), a.outcome(), a.status().map(|s| s.as_u16())))
        .collect();
    assert_eq!(
        outcomes,
        [
            (0, Outcome::Status, Some(400)),
            (1, Outcome::Status, Some(500)),
            (2, Outcome::Ok, Some(200))
        ]
    );
}

#[tokio::test]
async fn all_fail_returns_last_status_decoded_as_custom_error() {
    let fail1 = Server::start(Behavior::status(400));
    let fail2 = Server::start(Reply::json(
        503,
        r#"{"Code": 503, "Message": "maintenance"}"#,
    ));
    let chain = Chain::builder()
        .link(Link::get(fail1.url("/a")))
        .link(Link::get(fail2.url("/b")))
        .build()
        .unwrap();
    let fail = chain.call_json::<BasicResponse>().await.unwrap_err();
    assert_eq!(fail.kind(), ErrorKind::Exhausted);
    assert_eq!(fail.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(
        fail.json::<BasicError>().unwrap().unwrap(),
        BasicError {
            code: 503,
            message: "maintenance".into()
        }
    );
    // The whole trail, not only the last error.
    assert_eq!(fail.report().attempts().len(), 2);
    assert_eq!(
        fail.report().attempts()[0].status().map(|s| s.as_u16()),
        Some(400)
    );
    assert!(fail.to_string().contains("every link failed"), "{fail}");
}

#[tokio::test]
async fn unparsable_error_body_is_reported_not_lost() {
    let fail = Server::start(Reply::new(500).body("<html>oops</html>"));
    let chain = Chain::builder()
        .link(Link::get(fail.url("/")))
        .build()
        .unwrap();
    let f = chain.call_json::<BasicResponse>().await.unwrap_err();
    assert!(f.json::<BasicError>().unwrap().is_err());
    assert_eq!(f.body().map(|b| &b[..]), Some(&b"<html>oops</html>"[..]));
}

#[tokio::test]
async fn builder_made_chain_with_default_headers() {
    let fail = Server::start(Behavior::status(502));
    let pass = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .header("X-Team", "chain")
        .header("X-Trace", "t-1")
        .links([
            Link::get(fail.url("/one")),
            Link::new("put", pass.url("/two"))
                .header("X-Team", "link")
                .body("payload"),
        ])
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(&resp.body()[..], b"payload");
    assert_eq!(resp.headers()["x-echo-method"], "PUT");
    // A link's header replaces the chain's default of the same name.
    let got = &pass.requests()[0];
    assert_eq!(got.header("x-team"), Some("link"));
    assert_eq!(got.header("x-trace"), Some("t-1"));
    assert_eq!(fail.requests()[0].header("x-team"), Some("chain"));
    // Default names are the URL's host and port.
    assert_eq!(resp.report().attempts()[0].name(), fail.addr().to_string());
}

#[tokio::test]
async fn logger_receives_the_failure_message() {
    let fail = Server::start(Behavior::status(400));
    let pass = Server::start(Behavior::ok_json(PASS));
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = log.clone();
    let chain = Chain::builder()
        .link(Link::get(fail.url("/")).name("LOGGER"))
        .link(Link::get(pass.url("/")).name("PASS"))
        .observer(move |a: &Attempt| {
            sink.lock()
                .unwrap()
                .push(a.error().unwrap_or("ok").to_owned())
        })
        .build()
        .unwrap();
    chain.call().await.unwrap();
    let log = log.lock().unwrap();
    assert_eq!(*log, ["LOGGER returned HTTP Error: 400", "ok"]);
}

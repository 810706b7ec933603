//! Redirects within a link (opt-in), on loopback servers.

use fallback_chain::{Chain, ErrorKind, Link, Outcome};
use fallback_chain_testserver::{Behavior, Reply, Server};

/// `/start` redirects with `status` to `target`; anything else echoes.
fn redirecting(status: u16, target: String) -> Server {
    Server::start(Behavior::custom(move |req, _| {
        if req.path == "/start" {
            Reply::new(status).header("location", &target).into()
        } else {
            Behavior::Echo
        }
    }))
}

fn outcomes(r: &fallback_chain::Report) -> Vec<(Outcome, Option<u16>)> {
    r.attempts()
        .iter()
        .map(|a| (a.outcome(), a.status().map(|s| s.as_u16())))
        .collect()
}

#[tokio::test]
async fn methods_change_by_status_as_rfc_9110_says() {
    for (status, method, body) in [
        (301, "GET", ""),
        (302, "GET", ""),
        (303, "GET", ""),
        (307, "POST", "order"),
        (308, "POST", "order"),
    ] {
        let s = redirecting(status, "/end".into());
        let chain = Chain::builder()
            .follow_redirects(5)
            .link(
                Link::post(s.url("/start"))
                    .body("order")
                    .header("content-type", "text/plain"),
            )
            .build()
            .unwrap();
        let resp = chain.call().await.unwrap();
        assert_eq!(resp.headers()["x-echo-method"], method, "{status}");
        assert_eq!(&resp.body()[..], body.as_bytes(), "{status}");
        assert_eq!(
            outcomes(resp.report()),
            [(Outcome::Redirect, Some(status)), (Outcome::Ok, Some(200))],
            "{status}"
        );
        let hop = &resp.report().attempts()[0];
        assert!(hop.error().unwrap().contains("redirected to"), "{hop}");
        let end = &s.requests()[1];
        assert_eq!(end.path, "/end");
        if method == "GET" {
            assert_eq!(end.header("content-type"), None, "{status}");
        }
    }
    // A HEAD stays a HEAD.
    let s = redirecting(303, "/end".into());
    let chain = Chain::builder()
        .follow_redirects(5)
        .link(Link::head(s.url("/start")))
        .build()
        .unwrap();
    chain.call().await.unwrap();
    assert_eq!(s.requests()[1].method, "HEAD");
}

#[tokio::test]
async fn redirects_are_off_by_default_and_a_3xx_falls_back() {
    let s = redirecting(302, "/end".into());
    let backup = Server::start(Behavior::ok("backup"));
    let chain = Chain::builder()
        .link(Link::get(s.url("/start")))
        .link(Link::get(backup.url("/")))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(resp.winner(), 1);
    assert_eq!(outcomes(resp.report())[0], (Outcome::Status, Some(302)));
    assert_eq!(s.request_count(), 1);
}

#[tokio::test]
async fn loops_and_too_many_hops_fail_the_link() {
    let looping = Server::start(Behavior::custom(|req, _| {
        let next = if req.path == "/a" { "/b" } else { "/a" };
        Reply::new(302).header("location", next).into()
    }));
    let endless = Server::start(Behavior::custom(|req, _| {
        let n: u32 = req.path.trim_start_matches("/n").parse().unwrap_or(0);
        Reply::new(307)
            .header("location", &format!("/n{}", n + 1))
            .into()
    }));
    let backup = Server::start(Behavior::ok("backup"));
    let chain = Chain::builder()
        .follow_redirects(3)
        .link(Link::get(looping.url("/a")).name("looping"))
        .link(Link::get(endless.url("/n0")).name("endless"))
        .link(Link::get(backup.url("/")))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(resp.winner(), 2);
    let lines: Vec<String> = resp
        .report()
        .attempts()
        .iter()
        .map(|a| a.to_string())
        .collect();
    let failed: Vec<_> = resp
        .report()
        .attempts()
        .iter()
        .filter(|a| a.outcome() == Outcome::Status)
        .collect();
    assert_eq!(failed.len(), 2, "{lines:#?}");
    assert!(
        failed[0].error().unwrap().contains("redirect loop"),
        "{lines:#?}"
    );
    assert!(
        failed[1]
            .error()
            .unwrap()
            .contains("too many redirects: more than 3"),
        "{lines:#?}"
    );
    assert_eq!(
        endless.request_count(),
        4,
        "the link's request and three hops"
    );
}

#[tokio::test]
async fn credentials_are_dropped_when_the_origin_changes() {
    let other = Server::start(Behavior::Echo);
    let s = redirecting(302, other.url("/elsewhere"));
    let same = redirecting(302, "/end".into());
    for (server, keeps) in [(&s, false), (&same, true)] {
        let chain = Chain::builder()
            .follow_redirects(5)
            .secret_header("x-tenant")
            .link(
                Link::get(server.url("/start"))
                    .header("Authorization", "Bearer t0ken")
                    .header("Cookie", "sid=1")
                    .header("X-Api-Key", "k")
                    .header("X-Tenant", "acme")
                    .header("Accept", "application/json"),
            )
            .build()
            .unwrap();
        chain.call().await.unwrap();
        let hop = if keeps {
            same.requests()[1].clone()
        } else {
            other.requests()[0].clone()
        };
        assert_eq!(hop.header("accept"), Some("application/json"));
        for h in ["authorization", "cookie", "x-api-key", "x-tenant"] {
            assert_eq!(hop.header(h).is_some(), keeps, "{h}, same origin: {keeps}");
        }
    }
}

#[tokio::test]
async fn a_post_turned_into_a_get_is_not_re_sent_to_the_backup() {
    // The POST was answered (303 See Other); its result page then fails.
    let s = Server::start(Behavior::custom(|req, _| {
        if req.path == "/orders" {
            Reply::new(303).header("location", "/orders/7").into()
        } else {
            Behavior::status(503)
        }
    }));
    let backup = Server::start(Behavior::Echo);
    let chain = Chain::builder()
        .follow_redirects(5)
        .link(Link::post(s.url("/orders")).body("order"))
        .link(Link::post(backup.url("/orders")).body("order"))
        .build()
        .unwrap();
    let e = chain.call().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Processed, "{e}");
    assert_eq!(backup.request_count(), 0);
}

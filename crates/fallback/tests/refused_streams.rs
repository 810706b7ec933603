//! HTTP/2 streams a server refused without processing them (RFC 9113,
//! section 8.7), on real loopback sockets against an h2 server that
//! refuses on purpose: re-sent at once on a new connection, whatever the
//! method, as the same try; not a failure of the link.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use fallback_chain::{BreakerConfig, Chain, Link, Outcome, RetryBudget};

/// An h2c server: the first `refuse` streams it is sent are reset with
/// `REFUSED_STREAM` before their body is read; every other one is echoed
/// back whole. Returns its address and the number of requests it processed.
async fn refusing_server(refuse: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let processed = Arc::new(AtomicUsize::new(0));
    let done = processed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (seen, done) = (seen.clone(), done.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    if seen.fetch_add(1, Ordering::SeqCst) < refuse {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let done = done.clone();
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        let mut got = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            got.extend_from_slice(&chunk);
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                        let resp = http::Response::new(());
                        let Ok(mut send) = respond.send_response(resp, false) else {
                            return;
                        };
                        let _ = send.send_data(Bytes::from(got), true);
                    });
                }
            });
        }
    });
    (addr, processed)
}

fn post_chain(addr: &str) -> Chain {
    Chain::builder()
        .link(Link::post(format!("http://{addr}/orders")).body("order 42"))
        .http2_prior_knowledge(true)
        .breaker(BreakerConfig::new().consecutive_failures(1))
        // An empty budget: a re-send that drew from it would be refused.
        .retry_budget(RetryBudget::new().ratio(0.0).min_per_sec(0.0))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_refused_post_is_re_sent_on_a_new_connection_as_the_same_try() {
    let (addr, processed) = refusing_server(2).await;
    let chain = post_chain(&addr);
    let resp = chain.call().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&resp.body()[..], b"order 42");
    let lines: Vec<_> = resp
        .report()
        .attempts()
        .iter()
        .map(|a| (a.outcome(), a.try_number()))
        .collect();
    assert_eq!(
        lines,
        [
            (Outcome::RefusedStream, 1),
            (Outcome::RefusedStream, 1),
            (Outcome::Ok, 1)
        ]
    );
    let why = resp.report().attempts()[0].error().unwrap();
    assert!(why.contains("refused the request unprocessed"), "{why}");
    assert_eq!(processed.load(Ordering::SeqCst), 1, "processed once");
    let health = &chain.health()[0];
    assert_eq!(health.failures(), 0, "not a failure of the link");
    assert_eq!(health.successes(), 1);
}

#[tokio::test]
async fn a_server_that_refuses_every_stream_fails_the_try_and_the_post_falls_over() {
    let (addr, processed) = refusing_server(usize::MAX).await;
    let (backup, backup_processed) = refusing_server(0).await;
    let chain = Chain::builder()
        .link(Link::post(format!("http://{addr}/orders")).body("order 42"))
        .link(Link::post(format!("http://{backup}/orders")).body("order 42"))
        .http2_prior_knowledge(true)
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&resp.body()[..], b"order 42");
    assert_eq!(resp.winner(), 1, "a POST nobody processed may fall over");
    let outcomes: Vec<_> = resp
        .report()
        .attempts()
        .iter()
        .map(|a| a.outcome())
        .collect();
    assert_eq!(outcomes.len(), 5, "{outcomes:?}");
    assert!(outcomes[..4].iter().all(|&o| o == Outcome::RefusedStream));
    assert_eq!(processed.load(Ordering::SeqCst), 0);
    assert_eq!(backup_processed.load(Ordering::SeqCst), 1);
}

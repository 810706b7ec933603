//! The proxy embedded in a program, through its public API only: built
//! from a typed config, served on a listener the program binds, stopped
//! by the program's own future.

use std::time::Duration;

use fallback_chain_proxy::{Config, Proxy, Route, Upstream};
use fallback_chain_testserver::{Behavior, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn upstream(name: &str, server: &Server) -> Upstream {
    let mut u = Upstream::new(server.url(""));
    u.name = Some(name.into());
    u
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn an_embedded_proxy_falls_over_and_stops_when_told() {
    let primary = Server::refused();
    let backup = Server::start(Behavior::ok("from the backup"));
    let mut config = Config::default();
    config.upstreams = vec![upstream("primary", &primary), upstream("backup", &backup)];
    let proxy = Proxy::new(config).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            proxy
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
        }
    });

    let answer = get(addr, "/orders?id=7").await;
    let lower = answer.to_ascii_lowercase();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        lower.contains("x-fallback-upstream: backup\r\n"),
        "{answer}"
    );
    assert!(lower.contains("x-fallback-attempts: 2\r\n"), "{answer}");
    assert!(answer.ends_with("from the backup"), "{answer}");
    let seen = backup.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/orders?id=7");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("serve returns once its shutdown future ends")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[test]
fn a_config_naming_an_unknown_upstream_is_refused_with_its_name() {
    let backup = Server::start(Behavior::ok("unused"));
    let mut config = Config::default();
    config.upstreams = vec![upstream("backup", &backup)];
    config.routes = vec![Route::new("/api", ["nowhere".to_owned()])];
    let err = Proxy::new(config).unwrap_err().to_string();
    assert!(err.contains("nowhere"), "{err}");
    assert!(backup.requests().is_empty());
}

#[tokio::test]
async fn a_reload_serves_the_new_upstreams_from_the_next_request() {
    let old = Server::start(Behavior::ok("old"));
    let new = Server::start(Behavior::ok("new"));
    let mut config = Config::default();
    config.upstreams = vec![upstream("old", &old)];
    let proxy = Proxy::new(config.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.serve(listener, std::future::pending::<()>()).await }
    });

    assert!(get(addr, "/").await.ends_with("old"));
    config.upstreams = vec![upstream("new", &new)];
    let reloaded = proxy.reload(&config).unwrap();
    assert_eq!((reloaded.upstreams, reloaded.routes), (1, 1));
    assert!(get(addr, "/").await.ends_with("new"));
    assert_eq!(old.requests().len(), 1);
    serving.abort();
}

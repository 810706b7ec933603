//! The failover proxy inside a Rust program: a primary that refuses
//! connections, a backup that answers, and one request through the proxy,
//! which falls over to the backup. Then a graceful shutdown.
//!
//! ```text
//! cargo run -p fallback-chain-proxy --example embed
//! ```

use fallback_chain_proxy::{Config, Proxy, Upstream};
use fallback_chain_testserver::{Behavior, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let primary = Server::refused();
    let backup = Server::start(Behavior::ok("hello from the backup\n"));

    let mut config = Config::default();
    let mut first = Upstream::new(primary.url(""));
    first.name = Some("primary".into());
    let mut second = Upstream::new(backup.url(""));
    second.name = Some("backup".into());
    config.upstreams = vec![first, second];
    let proxy = Proxy::new(config)?;

    // Port 0: the system picks one; the config's `listen` is only what the
    // `fallback serve` command binds.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
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

    let mut conn = TcpStream::connect(addr).await?;
    conn.write_all(b"GET /greeting HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await?;
    print!("{answer}");

    // Stops accepting, lets requests in flight finish, then returns.
    let _ = stop.send(());
    serving.await?;
    Ok(())
}

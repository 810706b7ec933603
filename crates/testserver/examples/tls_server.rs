//! A private-CA HTTPS server on loopback, for trying the command line by
//! hand: `cargo run -p fallback-chain-testserver --features tls --example
//! tls_server -- ca.pem` writes the CA certificate to `ca.pem`, prints the
//! server's URL, and serves (echoing each request's body) until killed.

use fallback_chain_testserver::tls::{HttpServer, TestCa};

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "ca.pem".into());
    let ca = TestCa::new();
    std::fs::write(&path, ca.cert_pem()).expect("write the CA certificate");
    let server = HttpServer::builder().tls(&ca).start();
    println!("{}", server.url("/"));
    loop {
        std::thread::park();
    }
}

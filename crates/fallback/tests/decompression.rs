//! Compressed answers, decoded as they stream in (feature `compression`).
#![cfg(feature = "compression")]

use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder};
use fallback_chain::{Chain, Link, Outcome};
use fallback_chain_testserver::{Behavior, Reply, Server};
use tokio::io::AsyncReadExt;

async fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => GzipEncoder::new(data).read_to_end(&mut out).await,
        "deflate" => ZlibEncoder::new(data).read_to_end(&mut out).await,
        "br" => BrotliEncoder::new(data).read_to_end(&mut out).await,
        _ => ZstdEncoder::new(data).read_to_end(&mut out).await,
    }
    .unwrap();
    out
}

#[tokio::test]
async fn gzip_deflate_br_and_zstd_are_decoded() {
    let text = "the same words again and again ".repeat(200);
    for coding in ["gzip", "deflate", "br", "zstd"] {
        let packed = compress(coding, text.as_bytes()).await;
        let s = Server::start(
            Reply::new(200)
                .header("content-encoding", coding)
                .body(packed.clone()),
        );
        let chain = Chain::builder()
            .decompress(true)
            .link(Link::get(s.url("/")))
            .build()
            .unwrap();
        let resp = chain.call().await.unwrap();
        assert_eq!(resp.body(), text.as_bytes(), "{coding}");
        assert!(resp.headers().get("content-encoding").is_none(), "{coding}");
        assert_eq!(
            s.requests()[0].header("accept-encoding"),
            Some("gzip, deflate, br, zstd")
        );
        // Off (the default), the bytes come as they were sent.
        let raw = Chain::builder()
            .link(Link::get(s.url("/")))
            .build()
            .unwrap();
        let resp = raw.call().await.unwrap();
        assert_eq!(&resp.body()[..], &packed[..], "{coding}");
        assert_eq!(s.requests()[1].header("accept-encoding"), None);
    }
}

#[tokio::test]
async fn a_decompression_bomb_is_too_large_and_falls_back() {
    // 64 MiB of zeros, some 64 KiB on the wire.
    let zeros = vec![0u8; 64 << 20];
    let bomb = compress("gzip", &zeros).await;
    drop(zeros);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let s = Server::start(
        Reply::new(200)
            .header("content-encoding", "gzip")
            .body(bomb),
    );
    let backup = Server::start(Behavior::ok("backup"));
    let chain = Chain::builder()
        .decompress(true)
        .max_body(1 << 20)
        .link(Link::get(s.url("/")))
        .link(Link::get(backup.url("/")))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(resp.winner(), 1);
    assert_eq!(resp.report().attempts()[0].outcome(), Outcome::TooLarge);
}

#[tokio::test]
async fn a_body_that_does_not_decompress_fails_the_link() {
    let s = Server::start(
        Reply::new(200)
            .header("content-encoding", "gzip")
            .body("this is not gzip at all"),
    );
    let backup = Server::start(Behavior::ok("backup"));
    let chain = Chain::builder()
        .decompress(true)
        .link(Link::get(s.url("/")))
        .link(Link::get(backup.url("/")))
        .build()
        .unwrap();
    let resp = chain.call().await.unwrap();
    assert_eq!(resp.winner(), 1);
    let first = &resp.report().attempts()[0];
    assert_eq!(first.outcome(), Outcome::Io, "{first}");
    assert!(
        first
            .error()
            .unwrap()
            .contains("gzip body does not decompress"),
        "{first}"
    );
}

#[tokio::test]
async fn a_failure_s_compressed_body_is_decoded_for_the_caller() {
    let packed = compress("gzip", br#"{"message": "maintenance"}"#).await;
    let s = Server::start(
        Reply::new(503)
            .header("content-encoding", "gzip")
            .body(packed),
    );
    let chain = Chain::builder()
        .decompress(true)
        .link(Link::get(s.url("/")))
        .build()
        .unwrap();
    let e = chain.call().await.unwrap_err();
    let body: serde_json::Value = e.json().unwrap().unwrap();
    assert_eq!(body["message"], "maintenance");
}

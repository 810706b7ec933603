//! `fallback serve` between the software our users run: nginx upstreams
//! (from the system's packages) and real clients, each exchange one that
//! once went wrong.

mod common;
use common::nginx::Nginx;
use common::proxy::{header, payload, request_to, Proxy};

/// A page nginx's stock gzip settings compress (text/html, > 20 bytes).
fn page() -> Vec<u8> {
    let mut page = b"<!doctype html><title>orders</title><ul>".to_vec();
    for i in 0..3000 {
        page.extend_from_slice(format!("<li>order {i}: shipped</li>\n").as_bytes());
    }
    page
}

/// nginx with gzip on and everything else stock (`gzip_proxied off`).
fn gzip_nginx(page: &[u8]) -> Nginx {
    Nginx::start("", "gzip on;", "", &[("index.html", page)])
}

#[test]
fn an_nginx_upstream_compresses_for_clients_behind_the_proxy_as_for_direct_ones() {
    let page = page();
    let nginx = gzip_nginx(&page);
    let get = "GET /index.html HTTP/1.1\r\naccept-encoding: gzip";
    let (status, direct_headers, direct) = request_to(&nginx.addr(), get, b"");
    let direct = payload(&direct_headers, &direct);
    assert_eq!(status, 200);
    assert_eq!(header(&direct_headers, "content-encoding"), Some("gzip"));
    assert!(direct.len() < page.len() / 5, "{} bytes", direct.len());

    let p = Proxy::start(&[&nginx.url("/")]);
    let (status, headers, proxied) = p.request(get, b"");
    let proxied = payload(&headers, &proxied);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-encoding"),
        Some("gzip"),
        "compressed behind the proxy too"
    );
    assert_eq!(proxied, direct, "the same bytes on the wire");

    // With --via, nginx's gzip_proxied off sees a proxied request: the
    // documented trade-off.
    let p = Proxy::start(&["--via", &nginx.url("/")]);
    let (status, headers, with_via) = p.request(get, b"");
    let with_via = payload(&headers, &with_via);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), None);
    assert_eq!(with_via.len(), page.len());
}

/// What Java's `HttpClient` sends on its first request to an `http://`
/// URL: an h2c upgrade offer, here on a POST with a body.
const H2C_OFFER_POST: &str =
    "POST /orders HTTP/1.1\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n\
     http2-settings: AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA\r\n\
     content-type: application/json\r\nidempotency-key: k-1";

#[test]
fn an_h2c_upgrade_offer_on_a_post_goes_upstream_as_a_plain_post_with_its_body() {
    use fallback_chain_testserver::{Behavior, Server};
    let body = r#"{"order": 42, "items": ["a", "b"]}"#;
    let down = Server::start(Behavior::status(503));
    let echo = Server::start(Behavior::Echo);
    let p = Proxy::start(&[&down.url("/"), &echo.url("/")]);
    let (status, headers, got) = p.request(H2C_OFFER_POST, body.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&got));
    assert_eq!(got, body.as_bytes(), "the backup echoed the whole body");
    assert_eq!(header(&headers, "x-fallback-attempts"), Some("2"));
    for seen in [&down.requests()[0], &echo.requests()[0]] {
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.body, body.as_bytes(), "each upstream got the body");
        assert_eq!(seen.header("upgrade"), None);
        assert_eq!(seen.header("http2-settings"), None);
        assert_eq!(seen.header("connection"), None);
    }
}

#[test]
fn java_httpclient_posts_through_the_proxy_with_its_body() {
    use fallback_chain_testserver::{Behavior, Server};
    let echo = Server::start(Behavior::Echo);
    let p = Proxy::start(&[&echo.url("/")]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Post.java");
    std::fs::write(
        &src,
        r#"
import java.net.URI;
import java.net.http.*;
public class Post {
    public static void main(String[] a) throws Exception {
        // The default client: HTTP/2 preferred, so an h2c upgrade offer.
        HttpClient c = HttpClient.newHttpClient();
        HttpRequest r = HttpRequest.newBuilder(URI.create(a[0]))
            .POST(HttpRequest.BodyPublishers.ofString(a[1])).build();
        HttpResponse<String> resp = c.send(r, HttpResponse.BodyHandlers.ofString());
        System.out.println(resp.statusCode());
        System.out.print(resp.body());
    }
}
"#,
    )
    .unwrap();
    let body = "hello from java, 42 items";
    let out = std::process::Command::new("java")
        .arg(&src)
        .arg(format!("http://{}/orders", p.addr))
        .arg(body)
        .output()
        .expect("these tests need a JDK's java on the PATH");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, format!("200\n{body}"));
    let seen = &echo.requests()[0];
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.header("upgrade"), None);
}

#[test]
fn an_h2c_nginx_that_closes_connections_with_goaway_costs_clients_nothing() {
    // nginx ends an HTTP/2 connection with GOAWAY after keepalive_requests
    // (1,000 by default; 20 here, to see it often). Streams above its
    // last stream id were never processed, and are re-sent.
    let nginx = Nginx::start(
        "http2",
        "keepalive_requests 20;",
        "location / { return 200 \"ok\\n\"; }",
        &[],
    );
    let p = Proxy::start(&["--http2-prior-knowledge", &nginx.url("/")]);
    let addr = p.addr.clone();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                for i in 0..50 {
                    // POSTs too: a refused stream was not processed.
                    let (head, body): (&str, &[u8]) = if i % 2 == 0 {
                        ("GET /x HTTP/1.1", b"")
                    } else {
                        ("POST /x HTTP/1.1", b"{\"order\": 1}")
                    };
                    let (status, _, got) = request_to(&addr, head, body);
                    if status != 200 || got != b"ok\n" {
                        bad.push(format!(
                            "client {c}, request {i}: {status} {}",
                            String::from_utf8_lossy(&got)
                        ));
                    }
                }
                bad
            })
        })
        .collect();
    let bad: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        bad.is_empty(),
        "{} of 400 failed, the first: {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
    let _ = nginx.error_log();
}

/// A chunked upload of `body`, with an Idempotency-Key; the status, the
/// headers and the de-chunked body of the answer.
fn chunked_post(addr: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    tcp.write_all(
        b"POST /upload HTTP/1.1\r\nhost: proxy\r\nconnection: close\r\n\
          idempotency-key: upload-7\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .unwrap();
    for chunk in body.chunks(64 * 1024) {
        // The upstream may answer (and the proxy fail over) before all of
        // it is written.
        if tcp
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .and_then(|()| tcp.write_all(chunk))
            .and_then(|()| tcp.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = payload(&headers, &raw[split + 4..]);
    (status, headers, body)
}

#[test]
fn a_5_mib_upload_an_nginx_primary_refuses_fails_over_whole_from_disk() {
    use fallback_chain_testserver::{Behavior, Server};
    // nginx answers 503 as soon as it has the head, and discards the body.
    let nginx = Nginx::start("", "", "location / { return 503; }", &[]);
    let backup = Server::start(Behavior::Echo);
    let temp = tempfile::tempdir().unwrap();
    let p = Proxy::start(&[
        "--temp-dir",
        temp.path().to_str().unwrap(),
        &nginx.url("/"),
        &backup.url("/"),
    ]);
    let body: Vec<u8> = (0..5 << 20).map(|i| (i % 253) as u8).collect();
    let (status, headers, got) = chunked_post(&p.addr, &body);
    assert_eq!(
        status,
        200,
        "{}",
        String::from_utf8_lossy(&got[..got.len().min(300)])
    );
    assert_eq!(header(&headers, "x-fallback-attempts"), Some("2"));
    let seen = &backup.requests()[0];
    assert_eq!(seen.body.len(), body.len(), "the backup got all 5 MiB");
    assert!(seen.body == body, "byte for byte");
    assert_eq!(got.len(), body.len());
    assert!(
        std::fs::read_dir(temp.path()).unwrap().next().is_none(),
        "no temporary file has a name"
    );
}

#[test]
fn an_nginx_upstream_on_a_unix_socket_gets_the_configured_host_and_a_dead_socket_falls_over() {
    let sockets = tempfile::tempdir().unwrap();
    let sock = sockets.path().join("orders.sock");
    // nginx also listens on a Unix socket, and says which Host it got.
    let nginx = Nginx::start(
        "",
        "",
        &format!(
            "listen unix:{};\n    location / {{ return 200 \"host=$host uri=$request_uri\"; }}",
            sock.display()
        ),
        &[],
    );
    let cfg = sockets.path().join("proxy.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[upstream]]\nname = \"gone\"\nurl = \"unix:{gone}\"\n\
             [[upstream]]\nname = \"orders\"\nurl = \"unix:{sock}\"\nhost = \"orders.internal\"\n\
             [[upstream]]\nname = \"tcp\"\nurl = \"{tcp}\"\n",
            gone = sockets.path().join("gone.sock").display(),
            sock = sock.display(),
            tcp = nginx.url("/"),
        ),
    )
    .unwrap();
    let p = Proxy::start(&["--config", cfg.to_str().unwrap()]);
    for _ in 0..3 {
        // A POST: the dead socket never took it, so it may fall over.
        let (status, headers, body) = p.request("POST /orders/42?x=1 HTTP/1.1", b"hi");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(
            String::from_utf8_lossy(&body),
            "host=orders.internal uri=/orders/42?x=1"
        );
        assert_eq!(header(&headers, "x-fallback-upstream"), Some("orders"));
    }
}

#[test]
fn send_reaches_an_nginx_on_a_unix_socket_as_curl_s_unix_socket_does() {
    let sockets = tempfile::tempdir().unwrap();
    let sock = sockets.path().join("web.sock");
    let _nginx = Nginx::start(
        "",
        "",
        &format!(
            "listen unix:{};\n    location / {{ return 200 \"host=$host uri=$request_uri\"; }}",
            sock.display()
        ),
        &[],
    );
    let path = sock.to_str().unwrap();
    let o = common::run(&[
        "send",
        "--unix-socket",
        path,
        "http://orders.internal/orders/42?x=1",
    ]);
    assert_eq!(common::code(&o), 0, "{}", common::stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "host=orders.internal uri=/orders/42?x=1"
    );
    // TLS does not go over a socket here: refused before anything is sent.
    let o = common::run(&["send", "--unix-socket", path, "https://orders.internal/"]);
    assert_eq!(common::code(&o), 2);
    assert!(
        common::stderr(&o).contains("only http://"),
        "{}",
        common::stderr(&o)
    );
}

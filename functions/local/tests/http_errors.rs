//! Requests the HTTP layer refuses before any handler runs still get Zaqar's JSON error bodies:
//! raw bytes over TCP to the real local server (no DynamoDB needed: none of these reaches storage).

use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zaqar::clock::Clock;
use zaqar::config::Config;
use zaqar::App;

async fn server() -> SocketAddr {
    // A client for an endpoint nobody listens on: a request reaching storage would fail, not hang.
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let app = App::new(Config::for_tests("http-errors"), aws_sdk_dynamodb::Client::from_conf(conf), Clock::System);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(zaqar_local::server::serve(app, listener));
    addr
}

/// Sends raw bytes, reads until the server closes; returns (status, lower-cased head, body).
async fn exchange(addr: SocketAddr, request: Vec<u8>) -> (u16, String, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    // The server may answer (and close) before reading everything: write in the background.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), rd.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server neither answered nor closed the connection");
    drop(writer);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head in {text:?}"));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn assert_zaqar_error(status: u16, head: &str, body: &str, expected: u16, title: &str) {
    assert_eq!(status, expected, "{head}\n\n{body}");
    assert!(head.contains("\r\ncontent-type: application/json"), "{head}");
    assert!(head.contains("\r\nx-openstack-request-id: req-"), "{head}");
    let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert_eq!(json["title"], title, "{body}");
    assert!(json["description"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
}

#[tokio::test]
async fn a_well_formed_request_is_served() {
    let addr = server().await;
    let (status, head, body) = exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()).await;
    assert_eq!(status, 300, "{body}");
    assert!(head.contains("x-openstack-request-id: req-"));
    assert!(body.contains("\"versions\""));
}

#[tokio::test]
async fn unparsable_heads_get_json_400() {
    let addr = server().await;
    for request in [
        &b"GET /v2/ping HTTP/1.1 trailing\r\nHost: x\r\n\r\n"[..],
        b"G(T /v2/ping HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v2/ping HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
        b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n{}",
    ] {
        let (status, head, body) = exchange(addr, request.to_vec()).await;
        assert_zaqar_error(status, &head, &body, 400, "400 Bad Request");
    }
}

#[tokio::test]
async fn broken_chunked_bodies_get_json_400() {
    let addr = server().await;
    let request =
        b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\nClient-ID: 3381af92-2b9e-11e3-b191-71861300734c\r\n\
X-Project-ID: p\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
    let (status, head, body) = exchange(addr, request.to_vec()).await;
    assert_zaqar_error(status, &head, &body, 400, "400 Bad Request");
    assert!(body.contains("framing"), "{body}");
}

#[tokio::test]
async fn an_overlong_uri_gets_json_414() {
    let addr = server().await;
    let request = format!("GET /v2/queues/{} HTTP/1.1\r\nHost: x\r\n\r\n", "q".repeat(70_000));
    let (status, head, body) = exchange(addr, request.into_bytes()).await;
    assert_zaqar_error(status, &head, &body, 414, "414 URI Too Long");
}

#[tokio::test]
async fn oversized_header_fields_get_json_431() {
    let addr = server().await;
    // More fields than the server reads.
    let many: String = (0..150).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    let (status, head, body) =
        exchange(addr, format!("GET /v2/ping HTTP/1.1\r\nHost: x\r\n{many}\r\n").into_bytes()).await;
    assert_zaqar_error(status, &head, &body, 431, "431 Request Header Fields Too Large");
    // One field larger than the server's head buffer.
    let big = format!("GET /v2/ping HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(500 * 1024));
    let (status, head, body) = exchange(addr, big.into_bytes()).await;
    assert_zaqar_error(status, &head, &body, 431, "431 Request Header Fields Too Large");
}

#[tokio::test]
async fn an_oversized_body_gets_json_413() {
    let addr = server().await;
    let len = 10 * 1024 * 1024 + 1;
    let mut request = format!(
        "POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\
Connection: close\r\n\r\n"
    )
    .into_bytes();
    request.resize(request.len() + len, b' ');
    let (status, head, body) = exchange(addr, request).await;
    assert_zaqar_error(status, &head, &body, 413, "413 Payload Too Large");
}

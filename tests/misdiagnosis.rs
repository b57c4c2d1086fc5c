//! Failures explained by what arrived, not by what a parser choked on: an
//! upstream that answers the HTTP/2 preface with something that is not
//! HTTP/2 (`python -m http.server`'s HTML page), an HTTP/2-only upstream
//! sent HTTP/1.1, and a plaintext HTTP/2 client on a TLS port.

mod proxy_support;
mod support;

use std::net::SocketAddr;
use std::process::Stdio;

use proxy_support::{front, front_with, start};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

fn torii_error(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("x-torii-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// What `python3 -m http.server` sends for `PRI * HTTP/2.0`: its 505 page
/// HTTP/0.9-style, without a status line (the request line's version is
/// refused before the response version is set).
const HTTP_SERVER_ANSWER: &[u8] = b"<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n        <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        <p>Error code: 505</p>\n    </body>\n</html>\n";

/// A server that answers whatever arrives first with `answer` and closes.
async fn answering(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Bounded: each test makes a handful of connections.
        for _ in 0..64 {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(answer).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

fn assert_mismatch_not_reset(err: &tonic::Status, shows: &str) {
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(torii_error(err), "upstream_protocol_mismatch", "{err:?}");
    let m = err.message();
    assert!(!m.contains("FRAME_SIZE_ERROR"), "{m}");
    assert!(!m.contains("reset"), "{m}");
    assert!(m.contains(shows), "the message shows what arrived: {m}");
    assert!(m.contains("not HTTP/2"), "{m}");
}

#[tokio::test]
async fn html_without_a_status_line_is_a_protocol_mismatch_showing_it() {
    let addr = answering(HTTP_SERVER_ANSWER).await;
    let proxy = front(&[addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let err = client
        .unary(EchoRequest::default())
        .await
        .expect_err("not an HTTP/2 upstream");
    assert_mismatch_not_reset(&err, "<!DOCTYPE HTML>");
    assert_eq!(
        proxy.metric(
            "torii_upstream_errors_total",
            &["reason=\"upstream_protocol_mismatch\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        proxy.metric(
            "torii_upstream_errors_total",
            &["reason=\"upstream_reset\""]
        ),
        None
    );
}

#[tokio::test]
async fn binary_garbage_is_a_protocol_mismatch_with_escaped_bytes() {
    let addr = answering(b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\xff").await;
    let proxy = front(&[addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let err = client
        .unary(EchoRequest::default())
        .await
        .expect_err("not an HTTP/2 upstream");
    assert_mismatch_not_reset(&err, "\\x01\\x02\\x03");
}

/// `python3 -m http.server` itself, the peer of the report.
#[tokio::test]
async fn python_http_server_upstream_is_a_protocol_mismatch() {
    let dir = TempDir::new("http-server");
    let mut child = tokio::process::Command::new("python3")
        .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (the test machine has Python 3)");
    // Its readiness line: "Serving HTTP on 127.0.0.1 port 41234 (http://…) ...".
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("http.server says where it listens")
        .unwrap()
        .expect("a readiness line");
    let port: u16 = line
        .split(" port ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let proxy = front(&[format!("127.0.0.1:{port}")]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let err = client
        .unary(EchoRequest::default())
        .await
        .expect_err("http.server does not speak HTTP/2");
    assert_mismatch_not_reset(&err, "<!DOCTYPE HTML>");
    let _ = child.kill().await;
}

#[tokio::test]
async fn http1_request_to_an_http2_only_upstream_is_a_protocol_mismatch() {
    // tonic serves HTTP/2 only: it answers an HTTP/1.1 request with its
    // SETTINGS frame, which hyper calls "invalid HTTP version parsed".
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let answer = raw_exchange(
        proxy.addr("plain"),
        b"GET /page HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(
        answer.contains("x-torii-error: upstream_protocol_mismatch"),
        "{answer}"
    );
    assert!(!answer.contains("invalid HTTP version"), "{answer}");
    assert!(answer.contains("HTTP/2 frames"), "{answer}");
    assert!(answer.contains("protocol: h2c"), "{answer}");
    assert_eq!(
        proxy.metric(
            "torii_upstream_errors_total",
            &["reason=\"upstream_protocol_mismatch\""]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn http1_cluster_to_an_http2_only_upstream_is_a_protocol_mismatch_for_grpc_too() {
    let echo = start_echo().await;
    let proxy = front_with(&[echo.addr.to_string()], "    protocol: http1").await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let err = client
        .unary(EchoRequest::default())
        .await
        .expect_err("HTTP/1.1 to an HTTP/2-only server");
    assert_eq!(torii_error(&err), "upstream_protocol_mismatch", "{err:?}");
    assert!(
        !err.message().contains("invalid HTTP version"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("HTTP/2 frames"), "{}", err.message());
}

/// Frames (type, payload) read from `bytes`, a server's whole answer.
fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        if bytes.len() < 9 + len {
            break;
        }
        out.push((bytes[3], bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    out
}

#[tokio::test]
async fn plaintext_http2_on_a_tls_port_gets_goaway_saying_it_expects_tls() {
    let dir = TempDir::new("h2c-on-tls");
    let pki = TestPki::new("h2c on tls CA");
    pki.server_cert(&["localhost"])
        .write_to(dir.path(), "server")
        .unwrap();
    let proxy = start(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates: [{ cert: server.crt, key: server.key }]
    routes: [{ direct_response: { status: 200, body: "hi" } }]
"#,
        dir,
    )
    .await;
    let addr = proxy.addr("tls");

    // A gRPC client without TLS credentials: preface, SETTINGS, HEADERS.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 0x04, 0, 0, 0, 0, 0]);
    // HEADERS on stream 1 (END_STREAM | END_HEADERS): GET http /.
    hello.extend_from_slice(&[0, 0, 3, 0x01, 0x05, 0, 0, 0, 1, 0x82, 0x86, 0x84]);
    tcp.write_all(&hello).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("torii closes the connection")
        .expect("no reset before the answer is read");
    let frames = frames(&answer);
    assert_eq!(
        frames.first().map(|f| f.0),
        Some(0x04),
        "SETTINGS first: {answer:?}"
    );
    // The request is answered on its stream (not gRPC here: a 400 and the
    // sentence as its body), then the GOAWAY.
    assert!(frames.iter().any(|f| f.0 == 0x01), "HEADERS: {answer:?}");
    let body: Vec<u8> = frames
        .iter()
        .filter(|f| f.0 == 0x00)
        .flat_map(|f| f.1.clone())
        .collect();
    assert!(
        String::from_utf8_lossy(&body).contains("This port expects TLS"),
        "{answer:?}"
    );
    let goaway = frames
        .iter()
        .find(|f| f.0 == 0x07)
        .unwrap_or_else(|| panic!("a GOAWAY: {answer:?}"));
    let last = u32::from_be_bytes(goaway.1[0..4].try_into().unwrap());
    assert_eq!(
        last, 1,
        "the request counts as taken: clients fail it with these words instead of retrying it"
    );
    let code = u32::from_be_bytes(goaway.1[4..8].try_into().unwrap());
    assert_eq!(code, 1, "PROTOCOL_ERROR");
    let debug = String::from_utf8_lossy(&goaway.1[8..]);
    assert!(debug.contains("This port expects TLS"), "{debug}");
    assert!(debug.contains("plaintext HTTP/2"), "{debug}");
    assert_eq!(
        proxy.metric(
            "torii_tls_handshakes_total",
            &["reason=\"plaintext_http\"", "result=\"failure\""]
        ),
        Some(1.0)
    );

    // A gRPC client without TLS credentials (tonic) gets UNAVAILABLE with
    // that sentence as its message.
    let mut client = h2c_client(addr).await;
    let err = client
        .unary(EchoRequest::default())
        .await
        .expect_err("a TLS port");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("This port expects TLS"), "{err:?}");
    assert_eq!(torii_error(&err), "plaintext_on_tls_port");
}

/// Health checks explain a failure the same way: an endpoint that answers
/// HTTP/2 with an HTML page is unhealthy because it does not speak HTTP/2,
/// in those words, not because of a FRAME_SIZE_ERROR.
#[tokio::test]
async fn a_health_check_on_a_non_http2_endpoint_says_what_arrived() {
    let addr = answering(HTTP_SERVER_ANSWER).await;
    let dir = TempDir::new("health-misdiagnosis");
    let config = dir.path().join("torii.yaml");
    std::fs::write(
        &config,
        format!(
            r#"access_log: off
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes: [{{ cluster: up }}]
clusters:
  - name: up
    endpoints: ["{addr}"]
    health_check: {{ type: grpc, interval: 100ms, unhealthy_threshold: 1 }}
"#
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_torii"))
        .args(["serve", "--workers", "1", "-c"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the torii binary runs");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let line = loop {
        match tokio::time::timeout(PATIENCE * 2, lines.next_line()).await {
            Ok(Ok(Some(l))) => {
                seen.push(l.clone());
                if l.contains("endpoint is unhealthy") {
                    break l;
                }
            }
            _ => panic!("no unhealthy line:\n{}", seen.join("\n")),
        }
    };
    assert!(line.contains("not HTTP/2"), "{line}");
    assert!(line.contains("<!DOCTYPE HTML>"), "{line}");
    assert!(!line.contains("FRAME_SIZE_ERROR"), "{line}");
    let _ = child.kill().await;
}

/// An HTTP/2 upstream that breaks the protocol after a valid SETTINGS (here
/// a frame far above the allowed size) is not "resetting the stream":
/// torii closed the connection because of what it sent.
#[tokio::test]
async fn an_upstream_breaking_http2_after_settings_is_not_called_a_reset() {
    const BAD: &[u8] = &[
        0, 0, 0, 0x04, 0, 0, 0, 0, 0, // SETTINGS
        0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0, 1, // DATA of 16 MiB on stream 1
    ];
    let addr = answering(BAD).await;
    let proxy = front(&[addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let err = client
        .unary(EchoRequest::default())
        .await
        .expect_err("a broken upstream");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let m = err.message();
    assert!(m.contains("not valid HTTP/2"), "{m}");
    assert!(m.contains("torii closed the connection"), "{m}");
    assert!(!m.contains("reset the stream"), "{m}");
}

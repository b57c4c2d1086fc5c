//! gRPC-Web and CORS: a browser's gRPC calls through any HTTP listener
//! (HTTP/1.1, h2c, TLS), binary and base64 text, with every answer —
//! the upstream's and torii's own failures — in gRPC-Web shape, and CORS
//! answered by torii.

mod proxy_support;
mod support;

use std::net::SocketAddr;

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use proxy_support::{start, Proxy};
use support::*;
use tokio::net::{TcpListener, TcpStream};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const UNARY: &str = "/torii.echo.v1.Echo/Unary";
const STREAM: &str = "/torii.echo.v1.Echo/ServerStream";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Wire {
    H1,
    H2,
}

/// Sends `req` over a new connection to `addr`, plaintext or TLS.
async fn send(
    addr: SocketAddr,
    tls: Option<&TlsClient>,
    wire: Wire,
    req: Request<Full<Bytes>>,
) -> Response<Incoming> {
    let fut = async {
        match tls {
            None => {
                let tcp = TcpStream::connect(addr).await.unwrap();
                over(TokioIo::new(tcp), wire, req).await
            }
            Some(t) => {
                let alpn: &[&str] = if wire == Wire::H2 {
                    &["h2"]
                } else {
                    &["http/1.1"]
                };
                let stream = t.clone().with_alpn(alpn).handshake(addr).await.unwrap();
                over(TokioIo::new(stream), wire, req).await
            }
        }
    };
    tokio::time::timeout(PATIENCE, fut)
        .await
        .expect("the response head in time")
}

async fn over<IO>(io: IO, wire: Wire, req: Request<Full<Bytes>>) -> Response<Incoming>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    match wire {
        Wire::H1 => {
            let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            s.send_request(req).await.unwrap()
        }
        Wire::H2 => {
            let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut req = req;
            *req.version_mut() = http::Version::HTTP_2;
            s.send_request(req).await.unwrap()
        }
    }
}

/// A gRPC-Web request for `path` carrying `body` (already framed, and
/// base64 when `content_type` says text).
fn web_request(path: &str, content_type: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(format!("http://localhost{path}"))
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .header("x-user-agent", "grpc-web-javascript/0.1")
        .header("host", "localhost")
        .body(Full::new(body.into()))
        .unwrap()
}

/// What a gRPC-Web answer holds: messages and the trailers frame.
#[derive(Debug, Default)]
struct WebAnswer {
    status: u16,
    headers: HeaderMap,
    messages: Vec<EchoResponse>,
    trailers: Vec<(String, String)>,
}

impl WebAnswer {
    fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits decoded gRPC-Web bytes into messages and the trailers frame.
fn parse_frames(mut buf: Bytes, answer: &mut WebAnswer) {
    while buf.len() >= 5 {
        let flag = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        assert!(buf.len() >= 5 + len, "a truncated frame");
        buf.advance(5);
        let payload = buf.split_to(len);
        if flag & 0x80 != 0 {
            assert!(answer.trailers.is_empty(), "one trailers frame");
            let text = std::str::from_utf8(&payload).unwrap();
            for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                let (n, v) = line.split_once(':').expect("name: value");
                assert_eq!(n, n.to_ascii_lowercase(), "lower-case trailer names");
                answer.trailers.push((n.to_string(), v.trim().to_string()));
            }
        } else {
            assert!(answer.trailers.is_empty(), "no message after the trailers");
            answer.messages.push(EchoResponse::decode(payload).unwrap());
        }
    }
    assert!(buf.is_empty(), "bytes after the last frame");
}

async fn read_answer(resp: Response<Incoming>) -> WebAnswer {
    let (parts, body) = resp.into_parts();
    let text = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/grpc-web-text"));
    let body = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("the body in time")
        .unwrap();
    assert!(body.trailers().is_none(), "gRPC-Web sends no HTTP trailers");
    let bytes = body.to_bytes();
    let decoded = if text {
        // Each flush is padded on its own: decode group by group.
        decode_padded_chunks(&bytes)
    } else {
        bytes
    };
    let mut answer = WebAnswer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        ..Default::default()
    };
    parse_frames(decoded, &mut answer);
    answer
}

fn decode_padded_chunks(text: &[u8]) -> Bytes {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = match rest.iter().position(|&b| b == b'=') {
            Some(i) => {
                let mut e = i;
                while e < rest.len() && rest[e] == b'=' {
                    e += 1;
                }
                e
            }
            None => rest.len(),
        };
        out.extend(B64.decode(&rest[..end]).unwrap());
        rest = &rest[end..];
    }
    out.into()
}

fn echo_frame(req: &EchoRequest) -> Bytes {
    grpc_frame(req)
}

async fn echo_proxy(extra_listener: &str, extra_route: &str) -> (EchoServer, Proxy) {
    let echo = start_echo().await;
    let yaml = format!(
        "listeners:\n  - name: plain\n    address: 127.0.0.1:0\n{extra_listener}    routes:\n      - match: {{ prefix: / }}\n        cluster: echo\n{extra_route}clusters:\n  - name: echo\n    endpoints: [\"{}\"]\n",
        echo.addr
    );
    let proxy = start(&yaml, TempDir::new("grpc-web")).await;
    (echo, proxy)
}

fn unary_req(msg: &str) -> EchoRequest {
    EchoRequest {
        message: msg.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn unary_binary_and_text_over_http1_and_h2c() {
    let (_echo, proxy) = echo_proxy("", "").await;
    let addr = proxy.addr("plain");
    for wire in [Wire::H1, Wire::H2] {
        for ct in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "Application/GRPC-Web-Text+proto; charset=utf-8",
        ] {
            let text = ct.to_ascii_lowercase().contains("-text");
            let frame = echo_frame(&unary_req("hi"));
            let body = if text {
                Bytes::from(B64.encode(&frame))
            } else {
                frame
            };
            let answer =
                read_answer(send(addr, None, wire, web_request(UNARY, ct, body)).await).await;
            let what = format!("{wire:?} {ct}");
            assert_eq!(answer.status, 200, "{what}");
            // As the upstream named it (tonic: application/grpc).
            let want_ct = if text {
                "application/grpc-web-text"
            } else {
                "application/grpc-web"
            };
            let got_ct = answer.headers["content-type"].to_str().unwrap();
            assert_eq!(got_ct.trim_end_matches("+proto"), want_ct, "{what}");
            assert_eq!(answer.messages.len(), 1, "{what}");
            assert_eq!(answer.messages[0].message, "hi");
            assert_eq!(
                answer.trailer("grpc-status"),
                Some("0"),
                "{what}: {answer:?}"
            );
            // What the upstream saw: gRPC, no gRPC-Web-only headers.
            let seen = &answer.messages[0].headers;
            assert!(
                seen["content-type"].starts_with("application/grpc"),
                "{seen:?}"
            );
            assert!(!seen["content-type"].contains("web"), "{seen:?}");
            assert_eq!(seen.get("te").map(String::as_str), Some("trailers"));
            assert!(!seen.contains_key("x-grpc-web"), "{seen:?}");
            assert!(!seen.contains_key("x-user-agent"), "{seen:?}");
        }
    }
    let m = proxy.metrics();
    assert!(m.contains("protocol=\"grpc-web\""), "{m}");
    assert!(m.contains("protocol=\"grpc-web-text\""), "{m}");
}

#[tokio::test]
async fn accept_chooses_the_answer_encoding_and_grpc_timeout_is_kept() {
    let (_echo, proxy) = echo_proxy("", "").await;
    let mut req = web_request(
        UNARY,
        "application/grpc-web+proto",
        echo_frame(&unary_req("x")),
    );
    req.headers_mut()
        .insert("accept", "application/grpc-web-text".parse().unwrap());
    req.headers_mut()
        .insert("grpc-timeout", "5S".parse().unwrap());
    let answer = read_answer(send(proxy.addr("plain"), None, Wire::H1, req).await).await;
    assert!(answer.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/grpc-web-text"));
    assert_eq!(answer.messages[0].headers["grpc-timeout"], "5S");
    assert_eq!(answer.trailer("grpc-status"), Some("0"));
}

#[tokio::test]
async fn over_tls_http1_and_h2() {
    let echo = start_echo().await;
    let pki = TestPki::new("grpc-web CA");
    let dir = TempDir::new("grpc-web-tls");
    pki.server_cert(&["localhost"])
        .write_to(dir.path(), "server")
        .unwrap();
    let yaml = format!(
        "listeners:\n  - name: tls\n    address: 127.0.0.1:0\n    tls:\n      certificates: [{{cert: server.crt, key: server.key}}]\n    routes: [{{cluster: echo}}]\nclusters:\n  - name: echo\n    endpoints: [\"{}\"]\n",
        echo.addr
    );
    let proxy = start(&yaml, dir).await;
    let client = TlsClient::new(pki.ca_cert_pem());
    for wire in [Wire::H1, Wire::H2] {
        for ct in [
            "application/grpc-web+proto",
            "application/grpc-web-text+proto",
        ] {
            let frame = echo_frame(&unary_req("tls"));
            let body = if ct.contains("text") {
                Bytes::from(B64.encode(&frame))
            } else {
                frame
            };
            let resp = send(
                proxy.addr("tls"),
                Some(&client),
                wire,
                web_request(UNARY, ct, body),
            )
            .await;
            let answer = read_answer(resp).await;
            assert_eq!(answer.messages[0].message, "tls", "{wire:?} {ct}");
            assert_eq!(answer.trailer("grpc-status"), Some("0"));
        }
    }
}

/// Server streaming: message 1 reaches the client while the server still
/// waits to send message 2.
#[tokio::test]
async fn server_streaming_flushes_per_message() {
    let (echo, proxy) = echo_proxy("", "").await;
    for (wire, text) in [(Wire::H1, false), (Wire::H1, true), (Wire::H2, true)] {
        let req = EchoRequest {
            message: "s".into(),
            count: 2,
            sleep_ms: 30_000,
            ..Default::default()
        };
        let frame = echo_frame(&req);
        let (ct, body) = if text {
            ("application/grpc-web-text", Bytes::from(B64.encode(&frame)))
        } else {
            ("application/grpc-web", frame)
        };
        let resp = send(
            proxy.addr("plain"),
            None,
            wire,
            web_request(STREAM, ct, body),
        )
        .await;
        let mut body = resp.into_body();
        let mut got = BytesMut::new();
        let first = tokio::time::timeout(PATIENCE, async {
            loop {
                let frame = body.frame().await.expect("more body").unwrap();
                if let Ok(d) = frame.into_data() {
                    got.extend_from_slice(&d);
                    let bytes = if text {
                        decode_padded_chunks(&got)
                    } else {
                        got.clone().freeze()
                    };
                    if bytes.len() >= 5 {
                        let len =
                            u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
                        if bytes.len() >= 5 + len {
                            return EchoResponse::decode(&bytes[5..5 + len]).unwrap();
                        }
                    }
                }
            }
        })
        .await
        .expect("message 1 arrives while the server sleeps before message 2");
        assert_eq!(first.message, "s");
        assert_eq!(
            echo.stats.snapshot().completed,
            0,
            "the stream is still open"
        );
    }
}

#[tokio::test]
async fn server_streaming_to_the_end_with_trailers() {
    let (_echo, proxy) = echo_proxy("", "").await;
    let req = EchoRequest {
        message: "m".into(),
        count: 3,
        ..Default::default()
    };
    let body = Bytes::from(B64.encode(echo_frame(&req)));
    let resp = send(
        proxy.addr("plain"),
        None,
        Wire::H1,
        web_request(STREAM, "application/grpc-web-text", body),
    )
    .await;
    let answer = read_answer(resp).await;
    assert_eq!(answer.messages.len(), 3);
    assert_eq!(answer.trailer("grpc-status"), Some("0"));
}

/// An upstream error before any message (tonic answers Trailers-Only):
/// HTTP 200, the status moved from the head into the trailers frame.
#[tokio::test]
async fn trailers_only_answer_is_valid_grpc_web() {
    let (_echo, proxy) = echo_proxy("", "").await;
    for wire in [Wire::H1, Wire::H2] {
        let req = EchoRequest {
            status_code: 5,
            status_message: "no such thing: ü".into(),
            ..Default::default()
        };
        let resp = send(
            proxy.addr("plain"),
            None,
            wire,
            web_request(UNARY, "application/grpc-web+proto", echo_frame(&req)),
        )
        .await;
        let answer = read_answer(resp).await;
        assert_eq!(answer.status, 200);
        assert!(answer.headers.get("grpc-status").is_none(), "{answer:?}");
        assert!(answer.messages.is_empty());
        assert_eq!(answer.trailer("grpc-status"), Some("5"), "{answer:?}");
        let msg = answer.trailer("grpc-message").unwrap();
        assert_eq!(
            percent_encoding::percent_decode_str(msg)
                .decode_utf8()
                .unwrap(),
            "no such thing: ü"
        );
    }
}

/// Base64 as clients send it: padded flushes mid-stream, quanta split
/// across reads (an HTTP/2 client's DATA frames).
#[tokio::test]
async fn base64_padding_mid_stream_and_split_quanta() {
    let (_echo, proxy) = echo_proxy("", "").await;
    // One message in two padded flushes: header, then payload.
    let frame = echo_frame(&unary_req("abcde"));
    let (head, rest) = frame.split_at(5);
    let text = format!("{}{}", B64.encode(head), B64.encode(rest));
    assert!(
        text[..text.len() - 1].contains('='),
        "padding mid-stream: {text}"
    );
    let answer = read_answer(
        send(
            proxy.addr("plain"),
            None,
            Wire::H1,
            web_request(UNARY, "application/grpc-web-text", text.clone()),
        )
        .await,
    )
    .await;
    assert_eq!(answer.messages[0].message, "abcde");

    // The same text in 1-byte DATA frames over h2c.
    let tcp = TcpStream::connect(proxy.addr("plain")).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = Request::post(format!("http://localhost{UNARY}"))
        .header("content-type", "application/grpc-web-text")
        .body(())
        .unwrap();
    let (resp, mut stream) = client.send_request(req, false).unwrap();
    for (i, b) in text.as_bytes().iter().enumerate() {
        stream
            .send_data(Bytes::copy_from_slice(&[*b]), i + 1 == text.len())
            .unwrap();
    }
    let resp = tokio::time::timeout(PATIENCE, resp).await.unwrap().unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(d) = body.data().await {
        let d = d.unwrap();
        body.flow_control().release_capacity(d.len()).unwrap();
        got.extend_from_slice(&d);
    }
    let mut answer = WebAnswer::default();
    parse_frames(decode_padded_chunks(&got), &mut answer);
    assert_eq!(answer.messages[0].message, "abcde");
    assert_eq!(answer.trailer("grpc-status"), Some("0"));
}

#[tokio::test]
async fn malformed_requests_are_grpc_web_invalid() {
    let (_echo, proxy) = echo_proxy("", "").await;
    let frame = echo_frame(&unary_req("x"));
    let cases: Vec<(&str, &str, Bytes)> = vec![
        (
            "bad base64",
            "application/grpc-web-text",
            Bytes::from_static(b"AAAA!!!!"),
        ),
        (
            "partial quantum",
            "application/grpc-web-text",
            Bytes::from_static(b"AAAAAAA"),
        ),
        (
            "truncated frame",
            "application/grpc-web",
            frame.slice(..frame.len() - 1),
        ),
        (
            "trailers frame",
            "application/grpc-web",
            Bytes::from_static(&[0x80, 0, 0, 0, 0]),
        ),
        (
            "bad flag",
            "application/grpc-web",
            Bytes::from_static(&[7, 0, 0, 0, 0]),
        ),
    ];
    for wire in [Wire::H1, Wire::H2] {
        for (what, ct, body) in &cases {
            let resp = send(
                proxy.addr("plain"),
                None,
                wire,
                web_request(UNARY, ct, body.clone()),
            )
            .await;
            let answer = read_answer(resp).await;
            assert_eq!(answer.status, 200, "{what}");
            assert_eq!(
                answer.trailer("grpc-status"),
                Some("3"),
                "{what} {wire:?}: {answer:?}"
            );
            assert_eq!(
                answer.trailer("x-torii-error"),
                Some("grpc_web_invalid"),
                "{what}"
            );
            assert!(
                answer
                    .trailer("grpc-message")
                    .unwrap()
                    .contains("malformed"),
                "{what}: {answer:?}"
            );
        }
    }
    // Not a POST.
    let req = Request::get(format!("http://localhost{UNARY}"))
        .header("content-type", "application/grpc-web")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = read_answer(send(proxy.addr("plain"), None, Wire::H1, req).await).await;
    assert_eq!(answer.trailer("x-torii-error"), Some("grpc_web_invalid"));
}

/// Client and bidi streaming cannot work over gRPC-Web: a second request
/// message gets UNIMPLEMENTED with the reason; one message goes through.
#[tokio::test]
async fn client_and_bidi_streaming_are_unimplemented() {
    let (_echo, proxy) = echo_proxy("", "").await;
    let one = echo_frame(&unary_req("a"));
    let two: Bytes = [one.clone(), echo_frame(&unary_req("b"))].concat().into();
    for wire in [Wire::H1, Wire::H2] {
        for path in [
            "/torii.echo.v1.Echo/ClientStream",
            "/torii.echo.v1.Echo/Bidi",
        ] {
            for text in [false, true] {
                let (ct, body) = if text {
                    ("application/grpc-web-text", Bytes::from(B64.encode(&two)))
                } else {
                    ("application/grpc-web", two.clone())
                };
                let resp = send(proxy.addr("plain"), None, wire, web_request(path, ct, body)).await;
                let answer = read_answer(resp).await;
                assert_eq!(answer.status, 200, "{path} {wire:?}");
                assert_eq!(
                    answer.trailer("grpc-status"),
                    Some("12"),
                    "{path} {wire:?} {answer:?}"
                );
                assert_eq!(answer.trailer("x-torii-error"), Some("grpc_web_streaming"));
                let message = answer.trailer("grpc-message").unwrap();
                assert!(message.contains("native gRPC"), "{message}");
            }
        }
        // One message on a client-streaming method is a valid call.
        let resp = send(
            proxy.addr("plain"),
            None,
            wire,
            web_request(
                "/torii.echo.v1.Echo/ClientStream",
                "application/grpc-web",
                one.clone(),
            ),
        )
        .await;
        let answer = read_answer(resp).await;
        assert_eq!(
            answer.trailer("grpc-status"),
            Some("0"),
            "{wire:?} {answer:?}"
        );
        assert_eq!(answer.messages.len(), 1, "{answer:?}");
    }
}

/// torii's own failures reach a gRPC-Web client as gRPC-Web statuses.
#[tokio::test]
async fn torii_failures_in_grpc_web_shape() {
    let (refused, _h) = spawn_refusing().await;
    let echo = start_echo().await;
    let yaml = format!(
        "listeners:\n  - name: plain\n    address: 127.0.0.1:0\n    routes:\n      - match: {{ grpc_service: torii.echo.v1.Echo }}\n        cluster: echo\n      - match: {{ grpc_service: gone.Svc }}\n        cluster: gone\nclusters:\n  - name: echo\n    endpoints: [\"{}\"]\n  - name: gone\n    endpoints: [\"{refused}\"]\n",
        echo.addr
    );
    let proxy = start(&yaml, TempDir::new("grpc-web-fail")).await;
    let addr = proxy.addr("plain");
    let frame = echo_frame(&unary_req("x"));
    let slow = EchoRequest {
        sleep_ms: 30_000,
        ..Default::default()
    };
    let mut deadline = web_request(
        UNARY,
        "application/grpc-web-text",
        B64.encode(echo_frame(&slow)),
    );
    deadline
        .headers_mut()
        .insert("grpc-timeout", "100m".parse().unwrap());
    let cases = vec![
        (
            "no_route",
            "12",
            web_request("/nope.Svc/M", "application/grpc-web", frame.clone()),
        ),
        (
            "upstream_connect_refused",
            "14",
            web_request(
                "/gone.Svc/M",
                "application/grpc-web-text",
                B64.encode(&frame),
            ),
        ),
        ("deadline_exceeded", "4", deadline),
    ];
    for (code, status, req) in cases {
        let answer = read_answer(send(addr, None, Wire::H1, req).await).await;
        assert_eq!(answer.status, 200, "{code}");
        assert_eq!(
            answer.trailer("grpc-status"),
            Some(status),
            "{code}: {answer:?}"
        );
        assert_eq!(answer.trailer("x-torii-error"), Some(code));
        assert!(!answer.trailer("grpc-message").unwrap_or("").is_empty());
    }
}

/// An HTTP/2 server that answers every request 502 with an HTML page, as
/// a load balancer in front of a gRPC server might.
async fn spawn_html_502() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(502)
                            .header("content-type", "text/html")
                            .body(Full::new(Bytes::from_static(b"<html>Bad Gateway</html>")))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn html_502_from_upstream_becomes_a_grpc_web_status() {
    let html = spawn_html_502().await;
    let yaml = format!(
        "listeners:\n  - name: plain\n    address: 127.0.0.1:0\n    routes: [{{cluster: lb}}]\nclusters:\n  - name: lb\n    endpoints: [\"{html}\"]\n"
    );
    let proxy = start(&yaml, TempDir::new("grpc-web-502")).await;
    let resp = send(
        proxy.addr("plain"),
        None,
        Wire::H1,
        web_request(
            UNARY,
            "application/grpc-web-text",
            B64.encode(echo_frame(&unary_req("x"))),
        ),
    )
    .await;
    let answer = read_answer(resp).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.trailer("grpc-status"), Some("14"), "{answer:?}");
    assert_eq!(
        answer.trailer("x-torii-error"),
        Some("upstream_protocol_mismatch")
    );
    let msg = answer.trailer("grpc-message").unwrap();
    assert!(msg.contains("502") && msg.contains("text/html"), "{msg}");
}

#[tokio::test]
async fn grpc_web_false_passes_requests_through_untouched() {
    let (_echo, proxy) = echo_proxy("    grpc_web: false\n", "").await;
    let resp = send(
        proxy.addr("plain"),
        None,
        Wire::H2,
        web_request(UNARY, "application/grpc-web", echo_frame(&unary_req("x"))),
    )
    .await;
    // tonic itself refuses the content type it does not speak.
    assert_ne!(
        resp.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/grpc-web+proto")
    );
}

const CORS: &str = "    cors:\n      allow_origins: [\"https://app.example.com\", \"https://*.example.org\"]\n      allow_headers: [x-custom]\n      expose_headers: [x-trace]\n      max_age: 10m\n";

fn with_origin(mut req: Request<Full<Bytes>>, origin: &str) -> Request<Full<Bytes>> {
    req.headers_mut().insert("origin", origin.parse().unwrap());
    req
}

#[tokio::test]
async fn cors_allowed_and_disallowed_origins() {
    let (echo, proxy) = echo_proxy(CORS, "").await;
    let addr = proxy.addr("plain");
    // Preflight, allowed: answered by torii, never forwarded.
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri(format!("http://localhost{UNARY}"))
            .header("host", "localhost")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-grpc-web,x-user-agent,x-custom,x-evil",
            )
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let before = echo.stats.snapshot().started;
    let resp = send(addr, None, Wire::H1, preflight("https://app.example.com")).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "POST");
    assert_eq!(
        h["access-control-allow-headers"],
        "content-type, x-grpc-web, x-user-agent, x-custom"
    );
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h["vary"].to_str().unwrap().contains("Origin"));
    assert!(h.get("access-control-allow-credentials").is_none());
    // Wildcard suffix.
    let resp = send(addr, None, Wire::H2, preflight("https://a.b.example.org")).await;
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://a.b.example.org"
    );
    // Disallowed: no CORS headers.
    let resp = send(addr, None, Wire::H1, preflight("https://evil.example.com")).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert_eq!(
        echo.stats.snapshot().started,
        before,
        "preflights are never forwarded"
    );

    // The call itself, allowed: status headers exposed.
    let req = with_origin(
        web_request(UNARY, "application/grpc-web", echo_frame(&unary_req("c"))),
        "https://app.example.com",
    );
    let answer = read_answer(send(addr, None, Wire::H1, req).await).await;
    let h = &answer.headers;
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(
        h["access-control-expose-headers"],
        "grpc-status, grpc-message, grpc-status-details-bin, x-trace"
    );
    assert_eq!(h["vary"], "Origin");
    // Disallowed origin on the call: answered, without CORS headers.
    let req = with_origin(
        web_request(UNARY, "application/grpc-web", echo_frame(&unary_req("c"))),
        "https://evil.example.com",
    );
    let answer = read_answer(send(addr, None, Wire::H1, req).await).await;
    assert!(answer.headers.get("access-control-allow-origin").is_none());
    assert_eq!(answer.headers["vary"], "Origin");
}

/// CORS headers on torii's own failures; a route's own policy in place of
/// the listener's; credentials.
#[tokio::test]
async fn cors_on_failures_route_override_and_credentials() {
    let echo = start_echo().await;
    let yaml = format!(
        "listeners:\n  - name: plain\n    address: 127.0.0.1:0\n    cors:\n      allow_origins: [\"*\"]\n    routes:\n      - match: {{ grpc_service: torii.echo.v1.Echo, grpc_method: Unary }}\n        cluster: echo\n        cors:\n          allow_origins: [\"https://app.example.com\"]\n          allow_credentials: true\n      - match: {{ grpc_service: torii.echo.v1.Echo }}\n        cluster: echo\nclusters:\n  - name: echo\n    endpoints: [\"{}\"]\n",
        echo.addr
    );
    let proxy = start(&yaml, TempDir::new("grpc-web-cors")).await;
    let addr = proxy.addr("plain");
    // No route: the listener's policy ("*"), on the gRPC-Web error.
    let req = with_origin(
        web_request(
            "/nope.Svc/M",
            "application/grpc-web",
            echo_frame(&unary_req("c")),
        ),
        "https://anyone.example",
    );
    let answer = read_answer(send(addr, None, Wire::H1, req).await).await;
    assert_eq!(answer.trailer("x-torii-error"), Some("no_route"));
    assert_eq!(answer.headers["access-control-allow-origin"], "*");
    assert!(answer.headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("grpc-status"));
    // The route's own policy: its origin only, with credentials, echoed.
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri(format!("http://localhost{UNARY}"))
        .header("host", "localhost")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send(addr, None, Wire::H1, preflight).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
    let req = with_origin(
        web_request(UNARY, "application/grpc-web", echo_frame(&unary_req("c"))),
        "https://anyone.example",
    );
    let answer = read_answer(send(addr, None, Wire::H1, req).await).await;
    assert!(answer.headers.get("access-control-allow-origin").is_none());
    // Another method of the service: the listener's "*" again.
    let req = with_origin(
        web_request(STREAM, "application/grpc-web", echo_frame(&unary_req("c"))),
        "https://anyone.example",
    );
    let answer = read_answer(send(addr, None, Wire::H1, req).await).await;
    assert_eq!(answer.headers["access-control-allow-origin"], "*");
}

#[test]
fn cors_config_errors_name_the_line() {
    let dir = TempDir::new("grpc-web-config");
    let file = dir.path().join("torii.yaml");
    let yaml = "listeners:\n  - name: a\n    address: 127.0.0.1:0\n    cors:\n      allow_origins: [\"https://ok.example\", \"*\"]\n      allow_credentials: true\n    routes:\n      - cluster: c\n        cors:\n          allow_origins: [\"app.example.com\"]\n          max_age: soon\nclusters:\n  - name: c\n    endpoints: [\"127.0.0.1:1\"]\n";
    let problems = torii::config::load_str(yaml, &file).unwrap_err();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let star = problems
        .iter()
        .find(|p| p.message.contains("allow_credentials"))
        .unwrap_or_else(|| panic!("{text:#?}"));
    assert_eq!((star.line, star.column), (5, 45), "{text:#?}");
    assert!(star.message.contains("every web site"), "{}", star.message);
    assert!(
        problems
            .iter()
            .any(|p| p.line == 10 && p.message.contains("scheme")),
        "{text:#?}"
    );
    assert!(problems.iter().any(|p| p.line == 11), "{text:#?}");
    // Without credentials "*" is fine.
    let ok = yaml.replace("allow_credentials: true", "allow_credentials: false");
    let ok = ok.replace("[\"app.example.com\"]", "[\"https://app.example.com\"]");
    let ok = ok.replace("max_age: soon", "max_age: 1h");
    let loaded = torii::config::load_str(&ok, &file).unwrap();
    assert!(loaded.config.listeners[0].grpc_web);
}

/// A disallowed origin is logged once, naming the origin and what to add.
#[tokio::test]
async fn a_disallowed_origin_is_logged_once_with_the_fix() {
    let dir = TempDir::new("grpc-web-cors-log");
    let config = dir.path().join("torii.yaml");
    std::fs::write(
        &config,
        "access_log: off\nlisteners:\n  - name: plain\n    address: 127.0.0.1:0\n    cors:\n      allow_origins: [\"https://app.example.com\"]\n    routes: [{ direct_response: { status: 200, body: ok } }]\n",
    )
    .unwrap();
    let mut torii = support::process::ToriiProcess::serve(&config);
    let addr = support::process::ToriiProcess::address(
        &torii
            .wait_for(&["listening", "listener=plain "], PATIENCE * 3)
            .await,
    );
    for origin in [
        "https://evil.example",
        "https://evil.example",
        "https://other.example",
    ] {
        let req = Request::get("http://localhost/x")
            .header("host", "localhost")
            .header("origin", origin)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send(addr, None, Wire::H1, req).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("access-control-allow-origin").is_none());
    }
    let line = torii
        .wait_for(&["CORS", "\"https://other.example\""], PATIENCE)
        .await;
    assert!(
        line.contains("add \"https://other.example\" to cors.allow_origins"),
        "{line}"
    );
    let evil = torii
        .seen
        .iter()
        .filter(|l| l.contains("\"https://evil.example\" is not allowed"))
        .count();
    assert_eq!(evil, 1, "once per origin:\n{}", torii.seen.join("\n"));
}

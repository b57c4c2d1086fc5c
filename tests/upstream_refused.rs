//! Streams an upstream did not process — refused with REFUSED_STREAM, or
//! above the last stream id of its GOAWAY (RFC 9113 §8.7) — are sent
//! again, to another endpoint when there is one, with the same body; the
//! client never sees the refusal. A body still streaming in is sent again
//! too, what went out first followed by the rest, unless more than torii
//! keeps (64 KiB) had gone out: then the client gets UNAVAILABLE saying so.

mod proxy_support;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response};
use proxy_support::{front, Proxy};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One gRPC message: "hello".
const MESSAGE: &[u8] = b"\0\0\0\0\x05hello";

/// What an upstream does with the streams it gets, by their order of
/// arrival across all its connections (0 is the first).
#[derive(Clone, Copy)]
enum Refuse {
    /// Refuses the first `n` streams with REFUSED_STREAM, answers the rest.
    First(usize),
    /// Refuses every stream.
    All,
    /// Reads this many bytes of the first stream's body, then refuses it;
    /// answers the rest.
    FirstAfter(usize),
}

/// An h2c upstream that refuses streams as told and answers the others
/// with their request body echoed and `grpc-status: 0`. Sends on the
/// channel each stream's order of arrival, whether it was refused, and (for
/// answered ones) the body it received.
async fn refusing(refuse: Refuse) -> (SocketAddr, mpsc::UnboundedReceiver<(usize, Option<Bytes>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve_h2(tcp, refuse, seen.clone(), tx.clone()));
        }
    });
    (addr, rx)
}

async fn serve_h2(
    tcp: TcpStream,
    refuse: Refuse,
    seen: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<(usize, Option<Bytes>)>,
) {
    let Ok(mut conn) = h2::server::handshake(tcp).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let refused = match refuse {
            Refuse::First(k) => n < k,
            Refuse::All => true,
            Refuse::FirstAfter(bytes) if n == 0 => {
                // Its own task: the connection must go on (WINDOW_UPDATEs).
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut body = req.into_body();
                    let mut got = 0;
                    while got < bytes {
                        let Some(Ok(d)) = body.data().await else {
                            break;
                        };
                        let _ = body.flow_control().release_capacity(d.len());
                        got += d.len();
                    }
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    let _ = tx.send((n, None));
                });
                continue;
            }
            Refuse::FirstAfter(_) => false,
        };
        if refused {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            let _ = tx.send((n, None));
            continue;
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut body = req.into_body();
            let mut got = BytesMut::new();
            while let Some(d) = body.data().await {
                let Ok(d) = d else { return };
                let _ = body.flow_control().release_capacity(d.len());
                got.extend_from_slice(&d);
            }
            let got = got.freeze();
            let _ = tx.send((n, Some(got.clone())));
            let response = Response::builder()
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            let mut send = respond.send_response(response, false).unwrap();
            send.send_data(got, false).unwrap();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            send.send_trailers(trailers).unwrap();
        });
    }
}

/// How a call through torii ended.
#[derive(Debug)]
struct Outcome {
    status: u16,
    body: Bytes,
    grpc_status: String,
    grpc_message: String,
}

/// A unary gRPC call through torii's `plain` listener with [`MESSAGE`],
/// sent whole (`end`) or with the request stream left open.
async fn call(proxy: &Proxy, end: bool) -> (Outcome, h2::SendStream<Bytes>) {
    let send = raw_h2(proxy.addr("plain")).await;
    let (response, mut body) =
        raw_grpc_call(send, "example.test", "/torii.echo.v1.Echo/Unary").await;
    body.send_data(Bytes::from_static(MESSAGE), end).unwrap();
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("a response within PATIENCE")
        .expect("a response");
    let status = response.status().as_u16();
    // A trailers-only answer carries grpc-status in its head.
    let head = response.headers().clone();
    let mut recv = response.into_body();
    let mut data = BytesMut::new();
    while let Some(d) = recv.data().await {
        data.extend_from_slice(&d.unwrap());
    }
    let trailers = recv.trailers().await.unwrap().unwrap_or(head);
    let text = |k: &str| {
        trailers
            .get(k)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let outcome = Outcome {
        status,
        body: data.freeze(),
        grpc_status: text("grpc-status"),
        grpc_message: text("grpc-message"),
    };
    (outcome, body)
}

fn retries(proxy: &Proxy, reason: &str) -> f64 {
    let label = format!("reason=\"{reason}\"");
    proxy
        .metric("torii_upstream_retries_total", &[&label])
        .unwrap_or(0.0)
}

/// Everything an upstream reported so far (it reports before answering, so
/// after a call has ended its streams are all in).
fn drain(rx: &mut mpsc::UnboundedReceiver<(usize, Option<Bytes>)>) -> Vec<(usize, Option<Bytes>)> {
    let mut out = Vec::new();
    while let Ok(x) = rx.try_recv() {
        out.push(x);
    }
    out
}

#[tokio::test]
async fn a_refused_stream_is_sent_again_with_its_body() {
    let (upstream, mut seen) = refusing(Refuse::First(1)).await;
    let proxy = front(&[upstream.to_string()]).await;

    let (out, _body) = call(&proxy, true).await;
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.grpc_status, "0", "{out:?}");
    assert_eq!(&out.body[..], MESSAGE, "the echo of the body sent again");
    assert_eq!(
        drain(&mut seen),
        vec![(0, None), (1, Some(Bytes::from_static(MESSAGE)))],
        "refused once, then the same body answered"
    );
    assert_eq!(retries(&proxy, "refused_stream"), 1.0);

    // The connection the upstream refused a stream on stays in use.
    let (out, _body) = call(&proxy, true).await;
    assert_eq!(out.grpc_status, "0", "{out:?}");
    assert_eq!(retries(&proxy, "refused_stream"), 1.0);
}

#[tokio::test]
async fn a_refused_request_goes_to_the_endpoint_that_takes_it() {
    let (refuses, mut refused) = refusing(Refuse::All).await;
    let (answers, mut answered) = refusing(Refuse::First(0)).await;
    let proxy = front(&[refuses.to_string(), answers.to_string()]).await;

    for _ in 0..6 {
        let (out, _body) = call(&proxy, true).await;
        assert_eq!(out.grpc_status, "0", "{out:?}");
        assert_eq!(&out.body[..], MESSAGE);
    }
    let refused = drain(&mut refused);
    assert_eq!(drain(&mut answered).len(), 6, "every call answered once");
    assert!(
        !refused.is_empty(),
        "round robin sent some calls to the refusing endpoint first"
    );
    assert!(
        refused.len() <= 6,
        "each call refused at most once: {refused:?}"
    );
    assert_eq!(retries(&proxy, "refused_stream"), refused.len() as f64);
}

#[tokio::test]
async fn refused_on_every_attempt_is_unavailable_and_says_so() {
    let (upstream, mut seen) = refusing(Refuse::All).await;
    let proxy = front(&[upstream.to_string()]).await;

    let (out, _body) = call(&proxy, true).await;
    assert_eq!(out.grpc_status, "14", "UNAVAILABLE: {out:?}");
    assert!(
        out.grpc_message.contains("REFUSED_STREAM") && out.grpc_message.contains("attempt 3"),
        "the message names the refusal and the attempts: {}",
        out.grpc_message
    );
    assert_eq!(drain(&mut seen).len(), 3, "sent three times, no more");
    assert_eq!(retries(&proxy, "refused_stream"), 2.0);
}

#[tokio::test]
async fn a_body_still_streaming_when_refused_is_sent_again_with_the_rest() {
    let (upstream, mut seen) = refusing(Refuse::First(1)).await;
    let proxy = front(&[upstream.to_string()]).await;
    let send = raw_h2(proxy.addr("plain")).await;
    let (response, mut body) =
        raw_grpc_call(send, "example.test", "/torii.echo.v1.Echo/Unary").await;
    body.send_data(Bytes::from_static(MESSAGE), false).unwrap();

    // Refused while the request stream is open; then the body goes on.
    let first = tokio::time::timeout(PATIENCE, seen.recv()).await.unwrap();
    assert_eq!(first, Some((0, None)));
    body.send_data(Bytes::from_static(MESSAGE), true).unwrap();

    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut recv = response.into_body();
    let mut echoed = BytesMut::new();
    while let Some(d) = recv.data().await {
        echoed.extend_from_slice(&d.unwrap());
    }
    let trailers = recv.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    let both = [MESSAGE, MESSAGE].concat();
    assert_eq!(&echoed[..], &both[..], "what went out first, then the rest");
    assert_eq!(drain(&mut seen), vec![(1, Some(Bytes::from(both)))]);
    assert_eq!(retries(&proxy, "refused_stream"), 1.0);
}

#[tokio::test]
async fn a_body_longer_than_torii_keeps_is_not_sent_again() {
    const SENT: usize = 80 * 1024;
    let (upstream, mut seen) = refusing(Refuse::FirstAfter(SENT)).await;
    let proxy = front(&[upstream.to_string()]).await;
    let send = raw_h2(proxy.addr("plain")).await;
    let (response, mut body) =
        raw_grpc_call(send, "example.test", "/torii.echo.v1.Echo/Unary").await;
    // More than torii keeps, with the request stream left open.
    let mut message = BytesMut::from(&b"\0\0\x01\x40\0"[..]);
    message.resize(SENT, b'x');
    body.reserve_capacity(SENT);
    body.send_data(message.freeze(), false).unwrap();

    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .unwrap()
        .unwrap();
    let head = response.headers().clone();
    let grpc_status = head
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string());
    let message = head
        .get("grpc-message")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    assert_eq!(grpc_status.as_deref(), Some("14"), "UNAVAILABLE: {head:?}");
    assert!(
        message.contains("REFUSED_STREAM") && message.contains("64 KiB"),
        "the message says why it was not sent again: {message}"
    );
    drop(body);
    assert_eq!(drain(&mut seen), vec![(0, None)], "sent once");
    assert_eq!(retries(&proxy, "refused_stream"), 0.0);
}

/// An upstream whose first connection answers the first HEADERS with
/// GOAWAY (last stream id 0: nothing processed) and then closes; later
/// connections are served by [`serve_h2`], answering everything. Counts
/// the streams the first connection got.
async fn goaway_first() -> (SocketAddr, mpsc::UnboundedReceiver<(usize, Option<Bytes>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(goaway_on_first_headers(tcp));
        let seen = Arc::new(AtomicUsize::new(0));
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve_h2(tcp, Refuse::First(0), seen.clone(), tx.clone()));
        }
    });
    (addr, rx)
}

async fn goaway_on_first_headers(mut tcp: TcpStream) {
    let mut preface = [0u8; 24];
    if tcp.read_exact(&mut preface).await.is_err() {
        return;
    }
    // Our SETTINGS (empty).
    let _ = tcp.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]).await;
    loop {
        let mut head = [0u8; 9];
        if tcp.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if tcp.read_exact(&mut payload).await.is_err() {
            return;
        }
        match head[3] {
            // SETTINGS (not an ACK): acknowledge.
            0x4 if head[4] & 1 == 0 => {
                let _ = tcp.write_all(&[0, 0, 0, 0x4, 0x1, 0, 0, 0, 0]).await;
            }
            // HEADERS: GOAWAY, last stream id 0, NO_ERROR; then close.
            0x1 => {
                let mut goaway = vec![0, 0, 8, 0x7, 0, 0, 0, 0, 0];
                goaway.extend_from_slice(&[0; 8]);
                let _ = tcp.write_all(&goaway).await;
                let _ = tcp.shutdown().await;
                // Read until torii closes its side.
                let mut sink = Vec::new();
                let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut sink)).await;
                return;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn streams_above_the_goaway_last_stream_id_are_sent_again() {
    let (upstream, mut seen) = goaway_first().await;
    let proxy = front(&[upstream.to_string()]).await;

    let (out, _body) = call(&proxy, true).await;
    assert_eq!(out.grpc_status, "0", "{out:?}");
    assert_eq!(&out.body[..], MESSAGE);
    assert_eq!(
        drain(&mut seen),
        vec![(0, Some(Bytes::from_static(MESSAGE)))]
    );
    assert_eq!(retries(&proxy, "goaway"), 1.0);
}

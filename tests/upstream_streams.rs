//! Request bodies on upstream HTTP/2 streams: a body still streaming when
//! the upstream has answered is stopped (RST_STREAM CANCEL), not left open
//! on the upstream; a complete body goes out with its request.

mod proxy_support;
mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use proxy_support::front;
use support::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the raw upstream saw of one request's body.
#[derive(Debug, PartialEq)]
enum BodyEnd {
    /// Ended by END_STREAM after this many bytes.
    Ended(usize),
    /// Reset by torii with this reason.
    Reset(h2::Reason),
}

/// An h2c upstream that answers every stream at once — headers, then
/// trailers with `grpc-status` 9 — without waiting for the request body,
/// then reports how that body ended.
async fn answers_early() -> (SocketAddr, mpsc::UnboundedReceiver<BodyEnd>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let response = Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let mut send = respond.send_response(response, false).unwrap();
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static("9"));
                        trailers.insert("grpc-message", HeaderValue::from_static("answered early"));
                        send.send_trailers(trailers).unwrap();
                        let mut body = req.into_body();
                        let mut bytes = 0;
                        let end = loop {
                            match body.data().await {
                                Some(Ok(d)) => {
                                    bytes += d.len();
                                    let _ = body.flow_control().release_capacity(d.len());
                                }
                                Some(Err(e)) => {
                                    break BodyEnd::Reset(
                                        e.reason().unwrap_or(h2::Reason::NO_ERROR),
                                    )
                                }
                                None => break BodyEnd::Ended(bytes),
                            }
                        };
                        let _ = tx.send(end);
                    });
                }
            });
        }
    });
    (addr, rx)
}

/// One gRPC call through torii to [`answers_early`]: sends one 7-byte
/// message (ending the request stream if `end`) and waits for the response
/// head. Returns it with the open request stream, the upstream's reports and
/// the proxy (the caller keeps it alive).
async fn call(
    path: &str,
    end: bool,
) -> (
    Response<h2::RecvStream>,
    h2::SendStream<Bytes>,
    mpsc::UnboundedReceiver<BodyEnd>,
    proxy_support::Proxy,
) {
    let (upstream, ends) = answers_early().await;
    let proxy = front(&[upstream.to_string()]).await;
    let send = raw_h2(proxy.addr("plain")).await;
    let (response, mut body) = raw_grpc_call(send, "example.test", path).await;
    body.send_data(Bytes::from_static(b"\0\0\0\0\x02hi"), end)
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    (response, body, ends, proxy)
}

#[tokio::test]
async fn a_body_still_streaming_is_cancelled_upstream_when_the_answer_is_complete() {
    // The client gets the upstream's answer while its own stream is open.
    let (response, body, mut ends, _proxy) = call("/torii.echo.v1.Echo/ClientStream", false).await;
    let mut recv = response.into_body();
    while let Some(d) = recv.data().await {
        d.unwrap();
    }
    let trailers = recv.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "9");

    // torii stopped sending the request body upstream: the stream is reset,
    // not left half-open on the upstream.
    let end = tokio::time::timeout(PATIENCE, ends.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, BodyEnd::Reset(h2::Reason::CANCEL));
    drop(body);
}

#[tokio::test]
async fn a_complete_body_goes_out_with_the_request() {
    let (_response, _body, mut ends, _proxy) = call("/torii.echo.v1.Echo/Unary", true).await;
    let end = tokio::time::timeout(PATIENCE, ends.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, BodyEnd::Ended(7));
}

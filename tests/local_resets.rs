//! A client that breaks HTTP/2 rules on its own stream makes torii reset
//! that stream, and cancel the upstream stream behind it. That cancel is
//! torii's doing, on the client's account: it must never count as the
//! upstream's failure — not as `upstream_reset`, not in
//! `torii_upstream_errors_total`, not towards outlier detection. Before,
//! five such requests ejected a healthy endpoint for 10 s (a cluster of one
//! endpoint went into panic mode), each logged as "upstream … reset the
//! stream (CANCEL)".
//!
//! Each abuse is one of the issue's: a WINDOW_UPDATE of 0 on the stream, a
//! body longer than its content-length, a DATA frame over 16 KiB (a
//! connection error), each sent right behind the request's head, on a
//! connection to the upstream that is already open: the exchange then
//! fails at once, before torii has noticed that the client's stream is
//! gone, and its outcome is recorded — as the upstream's fault, before.

mod proxy_support;
#[path = "support/raw_h2.rs"]
mod raw_h2;
mod support;

use bytes::BytesMut;

use proxy_support::{front, Proxy};
use raw_h2::*;
use support::*;

const BIDI: &str = "/torii.echo.v1.Echo/Bidi";

fn echo_request(message: &str) -> bytes::Bytes {
    grpc_frame(&EchoRequest {
        message: message.into(),
        ..Default::default()
    })
}

/// Waits until the client's stream (or connection) ends.
async fn ended(conn: &mut Conn) {
    let end = conn
        .r
        .until(|f| (f.stream == 1 && f.kind == RST_STREAM) || f.kind == GOAWAY)
        .await;
    assert!(end.is_some(), "torii ended the broken stream");
}

fn assert_not_blamed(proxy: &Proxy, what: &str) {
    let metrics = proxy.metrics();
    let blamed: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            (l.starts_with("torii_upstream_errors_total")
                || l.starts_with("torii_endpoint_ejections"))
                && !l.ends_with(" 0")
        })
        .collect();
    assert!(
        blamed.is_empty(),
        "{what}: the client's broken streams were blamed on the upstream:\n{}",
        blamed.join("\n")
    );
}

async fn abuse_eight_times(proxy: &Proxy, what: &str, head: fn() -> Block, abuse: &[u8]) {
    let addr = proxy.addr("plain");
    let call = |message: &'static str| async move {
        let mut client = h2c_client(addr).await;
        let reply = client
            .unary(EchoRequest {
                message: message.into(),
                ..Default::default()
            })
            .await
            .expect("the endpoint serves");
        assert_eq!(reply.get_ref().message, message);
    };
    // The upstream connection is open (pooled) from here on.
    call("warm").await;
    for _ in 0..8 {
        let mut conn = Conn::connect(addr, &[]).await;
        let mut out = BytesMut::new();
        headers(&mut out, 1, &head().0, false);
        out.extend_from_slice(abuse);
        conn.write(&out).await;
        ended(&mut conn).await;
    }
    // The exchanges wind down on their own tasks: a fresh call that
    // succeeds after them comes after their outcome was recorded.
    call("healthy").await;
    assert_not_blamed(proxy, what);
}

fn bidi() -> Block {
    Block::grpc(BIDI)
}

#[tokio::test]
async fn window_update_zero_is_not_the_upstreams_fault() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut wu = BytesMut::new();
    frame(&mut wu, WINDOW_UPDATE, 0, 1, &0u32.to_be_bytes());
    abuse_eight_times(&proxy, "WINDOW_UPDATE 0", bidi, &wu).await;
}

#[tokio::test]
async fn a_body_longer_than_its_content_length_is_not_the_upstreams_fault() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    fn head() -> Block {
        Block::grpc(BIDI).field("content-length", "5")
    }
    let mut more = BytesMut::new();
    frame(&mut more, DATA, 0, 1, &echo_request("this is too long"));
    abuse_eight_times(&proxy, "body over content-length", head, &more).await;
}

#[tokio::test]
async fn an_oversized_data_frame_is_not_the_upstreams_fault() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut big = BytesMut::new();
    frame(&mut big, DATA, 0, 1, &vec![0u8; 20_000]);
    abuse_eight_times(&proxy, "a 20,000-byte DATA frame", bidi, &big).await;
}

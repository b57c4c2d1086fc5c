//! gRPC calls of every shape through torii to a real tonic server: unary,
//! server/client/bidi streaming with 10,000 messages, 4 MiB messages,
//! metadata and `-bin` trailers, every status code with a unicode message.

mod proxy_support;
mod support;

use std::time::Duration;

use proxy_support::front;
use support::*;
use tonic::metadata::BinaryMetadataValue;
use tonic::Code;

fn req(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn unary_reaches_the_upstream_with_forwarding_headers() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let resp = client
        .unary(req("hello"))
        .await
        .expect("unary through torii");
    let body = resp.get_ref();
    assert_eq!(body.message, "hello");
    assert_eq!(
        body.headers.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(
        body.headers.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );
    assert_eq!(body.headers.get("x-request-id").map(|v| v.len()), Some(36));
    assert_eq!(body.headers.get("te").map(String::as_str), Some("trailers"));
    assert!(!body.headers.contains_key("x-forwarded-client-cert"));
    assert_eq!(
        proxy.metric(
            "torii_requests_total",
            &["grpc_status=\"OK\"", "grpc_method=\"Unary\""]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn server_streaming_10k_messages() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let mut r = req("s");
    r.count = 10_000;
    let mut stream = client.server_stream(r).await.unwrap().into_inner();
    let mut n = 0u64;
    while let Some(msg) = stream.message().await.expect("stream ends OK") {
        n += 1;
        assert_eq!(msg.received, n);
    }
    assert_eq!(n, 10_000);
}

#[tokio::test]
async fn client_streaming_10k_messages() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let msgs: Vec<EchoRequest> = (0..10_000)
        .map(|i| EchoRequest {
            payload: vec![7u8; (i % 100) as usize],
            ..Default::default()
        })
        .collect();
    let total: usize = msgs.iter().map(|m| m.payload.len()).sum();
    let resp = client
        .client_stream(tokio_stream::iter(msgs))
        .await
        .expect("client stream through torii")
        .into_inner();
    assert_eq!(resp.received, 10_000);
    assert_eq!(resp.message, total.to_string());
}

#[tokio::test]
async fn bidi_streaming_10k_each_way() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let msgs: Vec<EchoRequest> = (0..10_000).map(|i| req(&i.to_string())).collect();
    let mut stream = client
        .bidi(tokio_stream::iter(msgs))
        .await
        .expect("bidi through torii")
        .into_inner();
    let mut n = 0u64;
    while let Some(msg) = stream.message().await.expect("bidi ends OK") {
        assert_eq!(msg.message, n.to_string());
        n += 1;
    }
    assert_eq!(n, 10_000);
}

#[tokio::test]
async fn bidi_ping_pong_interleaves() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut stream = client
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // Each answer must arrive before the next message is sent: nothing
    // may be buffered until the end of the stream.
    for i in 0..100 {
        tx.send(req(&format!("ping {i}"))).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("an answer per message, not at the end")
            .unwrap()
            .unwrap();
        assert_eq!(got.message, format!("ping {i}"));
    }
    drop(tx);
    assert!(stream.message().await.unwrap().is_none());
}

#[tokio::test]
async fn four_mib_messages_both_ways() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let big = vec![0x5au8; 4 * 1024 * 1024];
    let resp = client
        .unary(EchoRequest {
            payload: big.clone(),
            ..Default::default()
        })
        .await
        .expect("4 MiB unary");
    assert_eq!(resp.get_ref().payload.len(), big.len());
    assert!(resp.get_ref().payload == big);

    let msgs: Vec<EchoRequest> = (0..3)
        .map(|_| EchoRequest {
            payload: big.clone(),
            ..Default::default()
        })
        .collect();
    let mut stream = client
        .bidi(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(m) = stream.message().await.unwrap() {
        assert_eq!(m.payload.len(), big.len());
        n += 1;
    }
    assert_eq!(n, 3);
}

#[tokio::test]
async fn metadata_and_binary_trailers_pass_through() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let mut request = tonic::Request::new(req("meta"));
    request
        .metadata_mut()
        .insert("x-echo-plain", "value-1".parse().unwrap());
    let bin = BinaryMetadataValue::from_bytes(&[0u8, 1, 2, 254, 255]);
    request
        .metadata_mut()
        .insert_bin("x-echo-trailer-bin", bin.clone());
    let resp = client.unary(request).await.expect("unary with metadata");
    let md = resp.metadata();
    assert_eq!(md.get("x-echo-plain").unwrap(), "value-1");
    assert_eq!(md.get_bin("x-echo-trailer-bin").unwrap(), &bin);

    // Streaming: the binary trailer arrives as a trailer.
    let mut request = tonic::Request::new(tokio_stream::iter(vec![req("a"), req("b")]));
    request
        .metadata_mut()
        .insert_bin("x-echo-trailer-bin", bin.clone());
    let mut stream = client.bidi(request).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers.get_bin("x-echo-trailer-bin").unwrap(), &bin);
}

#[tokio::test]
async fn every_status_code_and_unicode_message_pass_through() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    for code in 1..=16 {
        let message = format!("état {code} — ✓ 日本語 100%");
        let err = client
            .unary(EchoRequest {
                status_code: code,
                status_message: message.clone(),
                ..Default::default()
            })
            .await
            .expect_err("a non-OK status");
        assert_eq!(err.code(), Code::from_i32(code), "code {code}");
        assert_eq!(err.message(), message);
        assert!(
            err.metadata().get("x-torii-error").is_none(),
            "upstream statuses are not torii's"
        );
    }
    assert_eq!(
        proxy.metric("torii_requests_total", &["grpc_status=\"NOT_FOUND\""]),
        Some(1.0)
    );
}

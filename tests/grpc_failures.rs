//! What a gRPC client sees when things go wrong: cancels reach the
//! upstream, deadlines are enforced, upstream deaths are never OK, and
//! torii's own failures are gRPC statuses with reason codes.

mod proxy_support;
mod support;

use std::time::{Duration, Instant};

use proxy_support::{front, front_with, start};
use support::*;
use tonic::Code;

fn torii_error(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("x-torii-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn client_cancel_resets_the_upstream_stream() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(EchoRequest {
        message: "first".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    // Cancel: drop the response stream and the request sender.
    drop(stream);
    drop(tx);
    let seen = echo
        .stats
        .wait_for(PATIENCE, |s| s.cancelled >= 1)
        .await
        .expect("the upstream sees the cancel");
    assert_eq!(seen.completed, 0);
}

/// On a multi-threaded runtime torii gives each client stream its own task
/// (on the single-threaded one, as in the test above, streams run inside
/// their connection's task): cancelling must reach the upstream either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_sleeping_unary_reaches_the_upstream() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let call = tokio::spawn(async move {
        client
            .unary(EchoRequest {
                sleep_ms: 30_000,
                ..Default::default()
            })
            .await
    });
    echo.stats
        .wait_for(PATIENCE, |s| s.started >= 1)
        .await
        .expect("the call reaches the upstream");
    call.abort();
    echo.stats
        .wait_for(PATIENCE, |s| s.cancelled >= 1)
        .await
        .expect("aborting the client call cancels the upstream call");
}

/// A unary call on a raw HTTP/2 connection with a `grpc-timeout` header:
/// tonic's client enforces deadlines itself, which would hide torii's.
/// Returns the final status headers (trailers, or the trailers-only head).
async fn raw_unary_with_timeout(
    addr: std::net::SocketAddr,
    timeout: &str,
    msg: EchoRequest,
) -> http::HeaderMap {
    let mut send = raw_h2(addr).await.ready().await.unwrap();
    let request = http::Request::post(format!("http://{addr}/torii.echo.v1.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .unwrap();
    let (resp, mut body) = send.send_request(request, false).unwrap();
    body.send_data(grpc_frame(&msg), true).unwrap();
    let resp = resp.await.unwrap();
    if resp.headers().contains_key("grpc-status") {
        return resp.headers().clone();
    }
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    body.trailers().await.unwrap().expect("trailers")
}

#[tokio::test]
async fn grpc_timeout_expires_with_deadline_exceeded_and_cancels_upstream() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let start = Instant::now();
    let status = raw_unary_with_timeout(
        proxy.addr("plain"),
        "100m",
        EchoRequest {
            sleep_ms: 10_000,
            ..Default::default()
        },
    )
    .await;
    let took = start.elapsed();
    assert_eq!(status["grpc-status"], "4", "{status:?}");
    assert_eq!(status["x-torii-error"], "deadline_exceeded");
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    echo.stats
        .wait_for(PATIENCE, |s| s.cancelled >= 1)
        .await
        .expect("the upstream call is cancelled when the deadline expires");
}

#[tokio::test]
async fn grpc_timeout_during_a_stream_ends_it_with_deadline_exceeded() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let mut request = tonic::Request::new(EchoRequest {
        count: 1000,
        sleep_ms: 50,
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(300));
    let mut stream = client.server_stream(request).await.unwrap().into_inner();
    let mut got = 0;
    let err = loop {
        match stream.message().await {
            Ok(Some(_)) => got += 1,
            Ok(None) => panic!("a stream cut by its deadline must not end OK"),
            Err(e) => break e,
        }
    };
    assert!(got >= 1, "messages before the deadline arrive");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(torii_error(&err), "deadline_exceeded");
}

#[tokio::test]
async fn long_streams_without_a_deadline_are_not_cut() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    // 40 messages 50 ms apart: two seconds with no deadline set.
    let mut stream = client
        .server_stream(EchoRequest {
            count: 40,
            sleep_ms: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while stream.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 40);
}

#[tokio::test]
async fn upstream_dying_mid_stream_is_never_ok() {
    let (addr, _backend) = spawn_dies_mid_stream(3).await;
    let proxy = front(&[addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let mut stream = client
        .server_stream(EchoRequest {
            count: 100,
            ..Default::default()
        })
        .await
        .expect("headers arrive before the upstream dies")
        .into_inner();
    let mut got = 0;
    let err = loop {
        match stream.message().await {
            Ok(Some(_)) => got += 1,
            Ok(None) => panic!("the stream ended OK after {got} messages, but the upstream died"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, 3);
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(torii_error(&err), "upstream_reset");
}

#[tokio::test]
async fn no_route_is_unimplemented() {
    let echo = start_echo().await;
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ grpc_service: other.Service }}
        cluster: up
clusters:
  - name: up
    endpoints: ["{}"]
"#,
        echo.addr
    );
    let proxy = start(&yaml, TempDir::new("noroute")).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let err = client
        .unary(EchoRequest::default())
        .await
        .expect_err("no route");
    assert_eq!(err.code(), Code::Unimplemented);
    assert_eq!(torii_error(&err), "no_route");
    assert!(
        err.message().contains("torii.echo.v1.Echo"),
        "{}",
        err.message()
    );
    assert_eq!(echo.stats.snapshot().started, 0);
    assert_eq!(
        proxy.metric(
            "torii_requests_total",
            &["grpc_status=\"UNIMPLEMENTED\"", "error=\"no_route\""]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn refused_connection_is_unavailable() {
    let (addr, _guard) = spawn_refusing().await;
    let proxy = front(&[addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let err = client
        .unary(EchoRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(torii_error(&err), "upstream_connect_refused");
    assert!(err.message().contains("refused"), "{}", err.message());
    assert_eq!(
        proxy.metric(
            "torii_upstream_errors_total",
            &["reason=\"upstream_connect_refused\""]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn refused_endpoint_fails_over_to_the_next() {
    let (dead, _guard) = spawn_refusing().await;
    let echo = start_echo().await;
    let proxy = front(&[dead.to_string(), echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    for _ in 0..10 {
        client
            .unary(EchoRequest::default())
            .await
            .expect("the live endpoint answers");
    }
}

#[tokio::test]
async fn silent_upstream_is_bounded_by_the_call_deadline() {
    // Accepts TCP, never answers: only the call's own deadline ends it.
    let (addr, _guard) = spawn_blackhole().await;
    let proxy = front_with(&[addr.to_string()], "    connect_timeout: 200ms").await;
    let status = raw_unary_with_timeout(proxy.addr("plain"), "300m", EchoRequest::default()).await;
    assert_eq!(status["grpc-status"], "4", "{status:?}");
    assert_eq!(status["x-torii-error"], "deadline_exceeded");
}

#[tokio::test]
async fn http1_only_upstream_is_a_protocol_mismatch() {
    let (addr, _backend) = spawn_http1_only().await;
    let proxy = front(&[addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let err = client
        .unary(EchoRequest::default())
        .await
        .expect_err("mismatch");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(torii_error(&err), "upstream_protocol_mismatch");
    assert!(err.message().contains("HTTP/1.1"), "{}", err.message());
    assert!(err.message().contains("h2c"), "{}", err.message());
}

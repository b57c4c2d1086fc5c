//! Graceful drain: /ready turns 503 while the admin listener keeps
//! answering, new connections are refused, and an open bidi stream may
//! finish within the drain timeout.

mod proxy_support;
mod support;

use std::time::Duration;

use proxy_support::start;
use support::*;

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    raw_exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn sigterm_style_drain_lets_open_streams_finish() {
    let echo = start_echo().await;
    let yaml = format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
drain_timeout: 10s
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes: [{{ match: {{ grpc_service: torii.echo.v1.Echo }}, cluster: echo }}]
clusters:
  - name: echo
    endpoints: ["{}"]
"#,
        echo.addr
    );
    let proxy = start(&yaml, TempDir::new("drain")).await;
    let addr = proxy.addr("plain");
    let admin = proxy.running.admin.unwrap();
    assert!(get(admin, "/ready").await.starts_with("HTTP/1.1 200"));

    let mut client = h2c_client(addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(EchoRequest::default()).await.unwrap();
    let mut stream = client
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());

    let proxy_support::Proxy { running, dir: _dir } = proxy;
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        running.shutdown().await;
        let _ = done_tx.send(());
    });

    // Draining: /ready is 503, and the admin listener still answers.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = get(admin, "/ready").await;
        if r.starts_with("HTTP/1.1 503") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/ready never turned 503: {r}"
        );
        tokio::task::yield_now().await;
    }
    // New connections are refused (the listening socket is closed).
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "new connections must be refused while draining");

    // The open stream keeps working, then ends OK.
    tx.send(EchoRequest {
        message: "during drain".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let m = stream
        .message()
        .await
        .expect("stream alive during drain")
        .unwrap();
    assert_eq!(m.message, "during drain");
    assert!(
        done_rx.try_recv().is_err(),
        "shutdown waits for the open stream"
    );
    drop(tx);
    assert!(stream.message().await.expect("ends OK").is_none());
    tokio::time::timeout(PATIENCE, done_rx)
        .await
        .expect("shutdown finishes once the stream is done")
        .unwrap();
}

#[tokio::test]
async fn drain_timeout_bounds_the_wait() {
    let echo = start_echo().await;
    let yaml = format!(
        "drain_timeout: 300ms\nlisteners:\n  - name: plain\n    address: 127.0.0.1:0\n    routes: [{{cluster: echo}}]\nclusters:\n  - name: echo\n    endpoints: [\"{}\"]\n",
        echo.addr
    );
    let proxy = start(&yaml, TempDir::new("drain-timeout")).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let (_tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let _stream = client
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    proxy.running.shutdown().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "took {took:?}"
    );
}

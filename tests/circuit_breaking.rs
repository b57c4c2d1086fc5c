//! A cluster's `limits`: 2,000 concurrent requests against an upstream
//! that holds every request until the test opens its gate. Exactly the
//! requests past each limit are refused at once with `overloaded`, and
//! every admitted one is answered once the gate opens.

mod proxy_support;
mod resilience_support;
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use proxy_support::{start, Proxy};
use resilience_support::{eventually, spawn_gated_http1, spawn_scripted, Act};
use support::*;

const CONCURRENT: usize = 2000;
const WAIT: Duration = Duration::from_secs(60);

fn overloaded(p: &Proxy, limit: &str) -> f64 {
    p.metric("torii_overloaded_total", &[&format!("limit=\"{limit}\"")])
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_refuses_exactly_the_overflow() {
    let up = spawn_scripted(|_, _| Act::Gate).await;
    let yaml = format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: up
clusters:
  - name: up
    endpoints: ["{}"]
    limits: {{ max_requests: 100 }}
"#,
        up.addr
    );
    let p = start(&yaml, TempDir::new("cb-requests")).await;
    // Two client connections: 2,000 streams are more than one may carry.
    let clients = [
        h2c_client(p.addr("plain")).await,
        h2c_client(p.addr("plain")).await,
    ];
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CONCURRENT {
        let mut client = clients[i % 2].clone();
        calls.spawn(async move { client.unary(EchoRequest::default()).await });
    }
    assert!(
        eventually(WAIT, || overloaded(&p, "max_requests") >= 1900.0
            && up.waiting.load(Ordering::SeqCst) == 100)
        .await,
        "refused {}, waiting upstream {}",
        overloaded(&p, "max_requests"),
        up.waiting.load(Ordering::SeqCst)
    );
    let admin = p.running.admin.expect("admin listener");
    let clusters = admin_get(admin, "/clusters").await;
    let body = clusters.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
    let use_of = &json["clusters"][0]["limits"]["max_requests"];
    assert_eq!(use_of["in_use"], 100, "{clusters}");
    assert_eq!(use_of["limit"], 100, "{clusters}");
    up.open_gate();
    let (mut ok, mut refused) = (0, 0);
    while let Some(done) = calls.join_next().await {
        match done.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                let code = status.metadata().get("x-torii-error").unwrap();
                assert_eq!(code, "overloaded");
                assert!(
                    status.message().contains("max_requests: 100"),
                    "{}",
                    status.message()
                );
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (100, 1900));
    assert_eq!(overloaded(&p, "max_requests"), 1900.0);
}

/// A GET over an HTTP/2 connection to torii: the status and
/// `x-torii-error`.
async fn get(send: h2::client::SendRequest<Bytes>, addr: std::net::SocketAddr) -> (u16, String) {
    let mut send = send.ready().await.expect("connection ready");
    let req = http::Request::get(format!("http://{addr}/slow"))
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).expect("send");
    let resp = resp.await.expect("an answer");
    let code = resp
        .headers()
        .get("x-torii-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the body");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_connections_are_capped_and_the_waiting_bounded() {
    let up = spawn_gated_http1().await;
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: up
clusters:
  - name: up
    endpoints: ["{}"]
    protocol: http1
    limits: {{ max_connections: 10, max_pending_requests: 40 }}
"#,
        up.addr
    );
    let p = start(&yaml, TempDir::new("cb-h1")).await;
    let addr = p.addr("plain");
    let conns = [raw_h2(addr).await, raw_h2(addr).await];
    let mut calls = tokio::task::JoinSet::new();
    // First fill the ten connections, so that every later request finds
    // them busy.
    for i in 0..10 {
        calls.spawn(get(conns[i % 2].clone(), addr));
    }
    assert!(
        eventually(WAIT, || up.waiting.load(Ordering::SeqCst) == 10).await,
        "ten requests at the upstream"
    );
    for i in 0..CONCURRENT {
        calls.spawn(get(conns[i % 2].clone(), addr));
    }
    let refused = CONCURRENT - 40;
    assert!(
        eventually(WAIT, || overloaded(&p, "max_pending_requests")
            >= refused as f64)
        .await,
        "refused {}",
        overloaded(&p, "max_pending_requests")
    );
    // While everything waits: ten connections, no more.
    assert_eq!(up.max_connections.load(Ordering::SeqCst), 10);
    assert_eq!(up.open.load(Ordering::SeqCst), 10);
    up.open_gate();
    let (mut ok, mut over) = (0, 0);
    while let Some(done) = calls.join_next().await {
        match done.unwrap() {
            (200, _) => ok += 1,
            (503, code) if code == "overloaded" => over += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((ok, over), (10 + 40, refused));
    assert_eq!(overloaded(&p, "max_pending_requests"), refused as f64);
}

//! Health: torii's own grpc.health.v1 next to HTTP probes on one port,
//! active health checks with thresholds and panic mode, and passive
//! ejection of failing endpoints.

mod proxy_support;
mod support;

use std::time::Duration;

use proxy_support::start;
use support::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::ServingStatus as Status;

async fn health_client(addr: std::net::SocketAddr) -> HealthClient<tonic::transport::Channel> {
    HealthClient::new(h2c_channel(addr).await.unwrap())
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

/// Waits (bounded) until `pred` holds for the cluster's endpoints.
async fn wait_endpoints(
    proxy: &proxy_support::Proxy,
    cluster: &str,
    pred: impl Fn(&[std::sync::Arc<torii::upstream::pool::Endpoint>]) -> bool,
) {
    let c = proxy.running.clusters()[cluster].clone();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        if pred(&c.endpoints()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "endpoints never reached the expected state"
        );
        tick.tick().await;
    }
}

#[tokio::test]
async fn torii_serves_grpc_health_beside_http_probes() {
    let echo = start_echo().await;
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ grpc_service: torii.echo.v1.Echo }}
        cluster: echo
clusters:
  - name: echo
    endpoints: ["{}"]
"#,
        echo.addr
    );
    let proxy = start(&yaml, TempDir::new("health")).await;
    let addr = proxy.addr("plain");
    let probe = raw_exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");

    let mut h = health_client(addr).await;
    let own = h
        .check(check(""))
        .await
        .expect("torii's own health")
        .into_inner();
    assert_eq!(own.status, ServingStatus::Serving as i32);
    let svc = h
        .check(check("torii.echo.v1.Echo"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(svc.status, ServingStatus::Serving as i32);
    let unknown = h
        .check(check("no.Such"))
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut stream = h.watch(check("")).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    // The upstream itself was never asked: torii answered.
    assert_eq!(echo.stats.snapshot().started, 0);

    let mut client = h2c_client(addr).await;
    client
        .unary(EchoRequest::default())
        .await
        .expect("gRPC on the same port");
}

fn checked_cluster(eps: &[std::net::SocketAddr], extra: &str) -> String {
    let eps: Vec<String> = eps.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes: [{{ match: {{ grpc_service: torii.echo.v1.Echo }}, cluster: echo }}]
clusters:
  - name: echo
    endpoints: [{}]
    health_check: {{ type: grpc, interval: 50ms, timeout: 1s, jitter: 0s, healthy_threshold: 1, unhealthy_threshold: 1 }}
{extra}
"#,
        eps.join(", ")
    )
}

#[tokio::test]
async fn not_serving_endpoint_gets_no_traffic_and_comes_back() {
    let a = start_echo().await;
    let b = start_echo().await;
    let proxy = start(
        &checked_cluster(&[a.addr, b.addr], ""),
        TempDir::new("active"),
    )
    .await;
    let mut client = h2c_client(proxy.addr("plain")).await;

    a.health.set_service_status("", Status::NotServing).await;
    wait_endpoints(&proxy, "echo", |eps| {
        eps.iter().filter(|e| e.available()).count() == 1
    })
    .await;
    let before = a.stats.snapshot().started;
    for _ in 0..20 {
        client.unary(EchoRequest::default()).await.unwrap();
    }
    assert_eq!(
        a.stats.snapshot().started,
        before,
        "the NOT_SERVING endpoint got traffic"
    );
    assert!(proxy
        .metrics()
        .lines()
        .any(|l| l.starts_with("torii_endpoint_healthy")
            && l.contains(&a.addr.to_string())
            && l.ends_with(" 0")));

    a.health.set_service_status("", Status::Serving).await;
    wait_endpoints(&proxy, "echo", |eps| eps.iter().all(|e| e.available())).await;
    for _ in 0..20 {
        client.unary(EchoRequest::default()).await.unwrap();
    }
    assert!(
        a.stats.snapshot().started > before,
        "the endpoint is back in rotation"
    );
}

#[tokio::test]
async fn all_endpoints_unhealthy_is_panic_mode_not_an_outage() {
    let a = start_echo().await;
    let b = start_echo().await;
    let proxy = start(
        &checked_cluster(&[a.addr, b.addr], ""),
        TempDir::new("panic"),
    )
    .await;
    a.health.set_service_status("", Status::NotServing).await;
    b.health.set_service_status("", Status::NotServing).await;
    wait_endpoints(&proxy, "echo", |eps| eps.iter().all(|e| !e.available())).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    for _ in 0..10 {
        client
            .unary(EchoRequest::default())
            .await
            .expect("panic mode sends to all endpoints");
    }
    assert!(a.stats.snapshot().started > 0 && b.stats.snapshot().started > 0);
    // torii's own health of the service reflects it (no route sends
    // grpc.health.v1 upstream here, so torii answers).
    let mut h = health_client(proxy.addr("plain")).await;
    let verdict = h
        .check(check("torii.echo.v1.Echo"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict.status, ServingStatus::NotServing as i32);
}

#[tokio::test]
async fn http_and_tcp_checks() {
    let (h1, _backend) = spawn_http1_only().await;
    let (dead, _guard) = spawn_refusing().await;
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes: [{{ cluster: web }}]
clusters:
  - name: web
    endpoints: ["{h1}", "{dead}"]
    protocol: http1
    health_check: {{ type: http, path: /healthz, interval: 50ms, unhealthy_threshold: 1, healthy_threshold: 1 }}
  - name: tcp
    endpoints: ["{h1}", "{dead}"]
    health_check: {{ type: tcp, interval: 50ms, unhealthy_threshold: 1 }}
"#
    );
    let proxy = start(&yaml, TempDir::new("httpcheck")).await;
    for cluster in ["web", "tcp"] {
        wait_endpoints(&proxy, cluster, |eps| {
            eps.iter()
                .find(|e| e.addr == dead)
                .is_some_and(|e| !e.available())
                && eps
                    .iter()
                    .find(|e| e.addr == h1)
                    .is_some_and(|e| e.available())
        })
        .await;
    }
}

#[tokio::test]
async fn failing_endpoint_is_ejected_passively() {
    let (dead, _guard) = spawn_refusing().await;
    let echo = start_echo().await;
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes: [{{ cluster: echo }}]
clusters:
  - name: echo
    endpoints: ["{dead}", "{}"]
    outlier_detection: {{ consecutive_failures: 2, base_ejection_time: 30s }}
"#,
        echo.addr
    );
    let proxy = start(&yaml, TempDir::new("eject")).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    for _ in 0..10 {
        client
            .unary(EchoRequest::default())
            .await
            .expect("failover hides the dead endpoint");
    }
    let c = proxy.running.clusters()["echo"].clone();
    let ep = c
        .endpoints()
        .iter()
        .find(|e| e.addr == dead)
        .cloned()
        .unwrap();
    assert!(
        ep.ejected_for().is_some(),
        "the refusing endpoint is ejected"
    );
    assert_eq!(ep.ejections(), 1);
    assert_eq!(
        proxy.metric("torii_endpoint_ejections_total", &[&dead.to_string()]),
        Some(1.0)
    );
}

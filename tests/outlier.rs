//! Outlier detection beyond failures in a row: an endpoint whose success
//! rate is far below its peers' is ejected, and `max_ejection_percent`
//! keeps ejections from taking more than their share of the endpoints.

mod proxy_support;
mod resilience_support;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_support::{start, Proxy};
use resilience_support::{spawn_scripted, Act, Scripted};
use support::*;

fn config(endpoints: &[SocketAddr], outlier: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
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
    endpoints: [{}]
    outlier_detection: {outlier}
"#,
        eps.join(", ")
    )
}

/// `good` endpoints that answer OK and `bad` ones that answer UNAVAILABLE.
async fn endpoints(good: usize, bad: usize) -> (Vec<Scripted>, Vec<Scripted>) {
    let mut g = Vec::new();
    for _ in 0..good {
        g.push(spawn_scripted(|_, _| Act::Ok).await);
    }
    let mut b = Vec::new();
    for _ in 0..bad {
        b.push(spawn_scripted(|_, _| Act::TrailersOnly(14, None)).await);
    }
    (g, b)
}

fn ejections(p: &Proxy, ep: SocketAddr) -> f64 {
    p.metric(
        "torii_endpoint_ejections_total",
        &[&format!("endpoint=\"{ep}\"")],
    )
    .unwrap_or(0.0)
}

/// Sends unary calls one after another until `done` holds (at most
/// `max` calls and a minute).
async fn load_until(p: &Proxy, max: u64, done: impl Fn() -> bool) -> u64 {
    let mut client = h2c_client(p.addr("plain")).await;
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    while sent.load(Ordering::Relaxed) < max && started.elapsed() < Duration::from_secs(60) {
        if done() {
            break;
        }
        let _ = client.unary(EchoRequest::default()).await;
        sent.fetch_add(1, Ordering::Relaxed);
    }
    sent.load(Ordering::Relaxed)
}

#[tokio::test]
async fn one_bad_endpoint_of_five_is_ejected_by_success_rate() {
    let (good, bad) = endpoints(4, 1).await;
    let mut all: Vec<SocketAddr> = good.iter().map(|s| s.addr).collect();
    let bad_addr = bad[0].addr;
    all.push(bad_addr);
    let p = start(
        &config(
            &all,
            "{ consecutive_failures: 0, interval: 300ms, success_rate_min_requests: 10 }",
        ),
        TempDir::new("outlier-rate"),
    )
    .await;
    let sent = load_until(&p, 3000, || ejections(&p, bad_addr) >= 1.0).await;
    assert_eq!(ejections(&p, bad_addr), 1.0, "after {sent} calls");
    for g in &good {
        assert_eq!(ejections(&p, g.addr), 0.0, "a good endpoint was ejected");
    }
    // Ejected: the calls that follow all go to the four good ones.
    let before = bad[0].hits();
    let mut client = h2c_client(p.addr("plain")).await;
    for _ in 0..20 {
        client
            .unary(EchoRequest::default())
            .await
            .expect("a good endpoint answers");
    }
    assert_eq!(bad[0].hits(), before);
}

#[tokio::test]
async fn max_ejection_percent_keeps_half_of_the_endpoints() {
    let (good, bad) = endpoints(1, 3).await;
    let mut all: Vec<SocketAddr> = good.iter().map(|s| s.addr).collect();
    all.extend(bad.iter().map(|s| s.addr));
    let p = start(
        &config(
            &all,
            "{ consecutive_failures: 2, success_rate_min_requests: 0, max_ejection_percent: 50 }",
        ),
        TempDir::new("outlier-percent"),
    )
    .await;
    let total = |p: &Proxy| -> f64 { all.iter().map(|a| ejections(p, *a)).sum() };
    let sent = load_until(&p, 400, || total(&p) >= 2.0).await;
    assert_eq!(total(&p), 2.0, "after {sent} calls");
    // Many more failures in a row from the third bad endpoint: still two.
    load_until(&p, 60, || false).await;
    assert_eq!(total(&p), 2.0, "never more than half of four");
    let admin = p.running.admin.expect("admin");
    let clusters = admin_get(admin, "/clusters").await;
    let body = clusters.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
    let ejected = json["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["ejected_for_ms"].is_null())
        .count();
    assert_eq!(ejected, 2, "{clusters}");
}

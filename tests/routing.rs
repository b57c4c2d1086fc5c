//! Routing and request rewriting: host/path/header matching, path
//! normalisation, rewrites, header edits, weighted clusters, route timeouts,
//! and HTTP/1.1 ↔ HTTP/2 translation towards upstreams.

mod proxy_support;
mod support;

use proxy_support::start;
use support::*;

/// Status line, head and body of a raw HTTP/1.1 exchange.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

async fn get(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str("host: test\r\n");
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("connection: close\r\n\r\n");
    let raw = raw_exchange(addr, req.as_bytes()).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Un-chunk the simple case: one chunk.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split("\r\n").nth(1).unwrap_or("").to_string()
    } else {
        body.to_string()
    };
    Reply {
        status,
        head: head.to_string(),
        body,
    }
}

#[tokio::test]
async fn host_path_and_header_matching() {
    let yaml = r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: { host: api.example.com }
        direct_response: { status: 200, body: "api" }
      - match: { host: "*.example.com" }
        direct_response: { status: 200, body: "wild" }
      - match: { path: /exact }
        direct_response: { status: 200, body: "exact" }
      - match: { regex: "^/v[0-9]+/" }
        direct_response: { status: 200, body: "regex" }
      - match: { prefix: /canary, headers: [{ name: x-canary, value: "1" }] }
        direct_response: { status: 200, body: "canary" }
      - match: { prefix: /canary, headers: [{ name: x-canary, invert: true }] }
        direct_response: { status: 200, body: "no-canary-header" }
      - match: { prefix: / }
        direct_response: { status: 418, body: "default" }
"#;
    let proxy = start(yaml, TempDir::new("match")).await;
    let a = proxy.addr("plain");
    let body = |r: Reply| (r.status, r.body);
    assert_eq!(
        body(get(a, "/", &[("host", "API.Example.com:8080")]).await),
        (200, "api".into())
    );
    assert_eq!(
        body(get(a, "/", &[("host", "x.example.com")]).await),
        (200, "wild".into())
    );
    assert_eq!(
        body(get(a, "/", &[("host", "example.com")]).await),
        (418, "default".into())
    );
    assert_eq!(body(get(a, "/exact", &[]).await), (200, "exact".into()));
    assert_eq!(
        body(get(a, "/exact/more", &[]).await),
        (418, "default".into())
    );
    assert_eq!(body(get(a, "/v2/users", &[]).await), (200, "regex".into()));
    assert_eq!(
        body(get(a, "/canary", &[("x-canary", "1")]).await),
        (200, "canary".into())
    );
    assert_eq!(
        body(get(a, "/canary", &[("x-canary", "2")]).await),
        (418, "default".into())
    );
    assert_eq!(
        body(get(a, "/canary", &[]).await),
        (200, "no-canary-header".into())
    );
}

async fn http1_front(routes: &str, cluster_extra: &str) -> (proxy_support::Proxy, BackendHandle) {
    let (addr, handle) = spawn_http1_only().await;
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
{routes}
clusters:
  - name: web
    endpoints: ["{addr}"]
{cluster_extra}
"#
    );
    (start(&yaml, TempDir::new("http1")).await, handle)
}

#[tokio::test]
async fn paths_are_normalised_before_routing_and_forwarded_as_matched() {
    let routes = r#"      - match: { prefix: /admin }
        direct_response: { status: 403, body: "admin is off limits" }
      - match: { prefix: / }
        cluster: web"#;
    let (proxy, _backend) = http1_front(routes, "").await;
    let a = proxy.addr("plain");
    for sneaky in [
        "/public/../admin",
        "//admin",
        "/%61dmin",
        "/public/%2e%2e/admin",
    ] {
        let r = get(a, sneaky, &[]).await;
        assert_eq!(r.status, 403, "{sneaky} must be routed as /admin");
    }
    let r = get(a, "/a/./b//c", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["path"],
        "/a/b/c",
        "the upstream gets the path that was matched"
    );
    let r = get(a, "/%2Fadmin", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-torii-error").as_deref(), Some("invalid_path"));
    assert!(r.body.contains("encoded slash"), "{}", r.body);
}

#[tokio::test]
async fn prefix_rewrite_and_header_edits() {
    let routes = r#"      - match: { prefix: /api/ }
        cluster: web
        prefix_rewrite: /v2/
        request_headers: { add: { x-env: prod }, remove: [x-debug] }
        response_headers: { add: { x-served-by: torii }, remove: [content-type] }"#;
    let (proxy, _backend) = http1_front(routes, "").await;
    let r = get(
        proxy.addr("plain"),
        "/api/users?id=7",
        &[("x-debug", "1"), ("x-keep", "yes")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    let j = r.json();
    assert_eq!(j["path"], "/v2/users");
    assert_eq!(j["headers"]["x-env"], "prod");
    assert_eq!(j["headers"]["x-keep"], "yes");
    assert!(j["headers"].get("x-debug").is_none());
    assert_eq!(r.header("x-served-by").as_deref(), Some("torii"));
    assert_eq!(r.header("content-type"), None);
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (proxy, _backend) = http1_front("      - cluster: web", "").await;
    let r = get(
        proxy.addr("plain"),
        "/",
        &[
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("x-forwarded-for", "1.2.3.4"),
        ],
    )
    .await;
    let h = &r.json()["headers"];
    assert!(h.get("keep-alive").is_none());
    assert!(h.get("proxy-connection").is_none());
    assert_eq!(h["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(h["host"], "test", "Host is preserved");
    let r = get(
        proxy.addr("plain"),
        "/",
        &[("connection", "x-secret"), ("x-secret", "1")],
    )
    .await;
    assert!(
        r.json()["headers"].get("x-secret").is_none(),
        "headers named in Connection are hop-by-hop"
    );
}

#[tokio::test]
async fn http1_upstream_connections_are_kept_alive() {
    let (proxy, backend) = http1_front("      - cluster: web", "").await;
    for _ in 0..20 {
        assert_eq!(get(proxy.addr("plain"), "/", &[]).await.status, 200);
    }
    assert_eq!(
        backend.connections(),
        1,
        "one pooled upstream connection serves all 20 requests"
    );
}

#[tokio::test]
async fn http2_client_to_http1_upstream_gets_host_from_authority() {
    let (proxy, _backend) = http1_front("      - cluster: web", "").await;
    let addr = proxy.addr("plain");
    // protocol: auto — the h2 client's request goes h2c first; the HTTP/1.1
    // upstream refuses, torii falls back to HTTP/1.1 for this cluster.
    for _ in 0..3 {
        let mut send = raw_h2(addr).await.ready().await.unwrap();
        let req = http::Request::get("http://app.example.com:81/x")
            .body(())
            .unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        let j: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(j["headers"]["host"], "app.example.com:81");
        assert_eq!(j["version"], "HTTP/1.1");
    }
}

#[tokio::test]
async fn route_timeout_bounds_plain_http_requests() {
    let (addr, _hole) = spawn_blackhole().await;
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - cluster: hole
        timeout: 200ms
clusters:
  - name: hole
    endpoints: ["{addr}"]
    protocol: http1
"#
    );
    let proxy = start(&yaml, TempDir::new("timeout")).await;
    let started = std::time::Instant::now();
    let r = get(proxy.addr("plain"), "/", &[]).await;
    assert_eq!(r.status, 504, "{}", r.head);
    assert_eq!(
        r.header("x-torii-error").as_deref(),
        Some("upstream_timeout")
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn weighted_clusters_split_traffic() {
    let a = start_echo().await;
    let b = start_echo().await;
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - weighted_clusters: [{{cluster: a, weight: 1}}, {{cluster: b, weight: 1}}]
clusters:
  - name: a
    endpoints: ["{}"]
  - name: b
    endpoints: ["{}"]
"#,
        a.addr, b.addr
    );
    let proxy = start(&yaml, TempDir::new("weighted")).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    for _ in 0..200 {
        client.unary(EchoRequest::default()).await.unwrap();
    }
    let (na, nb) = (a.stats.snapshot().started, b.stats.snapshot().started);
    assert_eq!(na + nb, 200);
    assert!(na >= 50 && nb >= 50, "a={na} b={nb}");
}

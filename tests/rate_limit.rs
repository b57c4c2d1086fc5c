//! A route's `rate_limit:`: a burst over the bucket gets exactly the
//! expected number of RESOURCE_EXHAUSTED / 429 answers with `retry-after`
//! (and `grpc-retry-pushback-ms` for gRPC and gRPC-Web); buckets per client
//! IP (clients bound to 127.0.0.2, 127.0.0.3) and per mTLS identity are
//! independent; the metric and the access log say so; a reload keeps the
//! buckets of an unchanged route. Refill rates are tiny (one token every
//! 100 s) so that no test depends on time passing.

mod proxy_support;
mod support;

use std::net::SocketAddr;

use proxy_support::{start, Proxy};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP/1.1 exchange from a client socket bound to `local`; None when
/// this machine cannot bind that address (the caller skips).
async fn http_from(local: &str, addr: SocketAddr, request: &str) -> Option<String> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    if let Err(e) = sock.bind(format!("{local}:0").parse().unwrap()) {
        eprintln!("cannot bind {local}: {e}");
        return None;
    }
    let mut tcp = tokio::time::timeout(PATIENCE, sock.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut out)).await;
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
}

fn status(resp: &str) -> &str {
    resp.split(' ').nth(1).unwrap_or("")
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Access-log lines, once there are `n` (bounded wait: written off the
/// request path).
async fn log_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_grpc_burst_over_the_bucket_gets_exactly_the_excess_refused() {
    let echo = start_echo().await;
    let dir = TempDir::new("rate-limit-grpc");
    let log = dir.path().join("access.log");
    let yaml = format!(
        r#"
access_log: {}
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - name: echo-limited
        match: {{ grpc_service: torii.echo.v1.Echo }}
        cluster: echo
        rate_limit: {{ requests_per_second: 0.01, burst: 5 }}
clusters:
  - name: echo
    endpoints: ["{}"]
"#,
        log.display(),
        echo.addr
    );
    let proxy = start(&yaml, dir).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let mut refused = Vec::new();
    let mut ok = 0;
    for _ in 0..8 {
        match client.unary(EchoRequest::default()).await {
            Ok(_) => ok += 1,
            Err(status) => refused.push(status),
        }
    }
    assert_eq!((ok, refused.len()), (5, 3));
    for s in &refused {
        assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
        assert!(
            s.message().starts_with(
                "route echo-limited is over its rate limit of 0.01 requests per second (burst 5); retry in "
            ),
            "{}",
            s.message()
        );
        let md = s.metadata();
        let after: u64 = md
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let pushback: u64 = md
            .get("grpc-retry-pushback-ms")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // One token every 100 s: the next is 100 s away, less the test's
        // own time so far; retry-after is that in whole seconds, rounded up.
        assert!((90_000..=100_000).contains(&pushback), "{pushback}");
        assert_eq!(after, pushback.div_ceil(1000));
        assert_eq!(md.get("x-torii-error").unwrap(), "rate_limited");
    }
    assert_eq!(
        proxy.metric(
            "torii_rate_limited_total",
            &["listener=\"plain\"", "route=\"echo-limited\""]
        ),
        Some(3.0)
    );
    assert_eq!(
        proxy.metric(
            "torii_requests_total",
            &[
                "error=\"rate_limited\"",
                "grpc_status=\"RESOURCE_EXHAUSTED\""
            ]
        ),
        Some(3.0)
    );
    let lines = log_lines(&log, 8).await;
    let limited: Vec<_> = lines
        .iter()
        .filter(|l| l["error"] == "rate_limited")
        .collect();
    assert_eq!(limited.len(), 3, "{lines:?}");
    for l in limited {
        assert_eq!(l["route"], "echo-limited");
        assert_eq!(l["grpc_status"], 8);
        assert!(l.get("cluster").is_none(), "refused before a cluster: {l}");
    }
}

#[tokio::test]
async fn client_ips_have_buckets_of_their_own_and_http_gets_429() {
    let dir = TempDir::new("rate-limit-ip");
    let yaml = r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - name: per-ip
        direct_response: { status: 200, body: ok }
        rate_limit: { requests_per_second: 0.01, burst: 2, per: client_ip }
"#;
    let proxy = start(yaml, dir).await;
    let addr = proxy.addr("plain");
    let Some(first) = http_from("127.0.0.2", addr, &get("/a")).await else {
        skip("client sockets cannot bind 127.0.0.2 here (Linux routes all of 127/8 to lo)");
        return;
    };
    assert_eq!(status(&first), "200", "{first}");
    let second = http_from("127.0.0.2", addr, &get("/a")).await.unwrap();
    assert_eq!(status(&second), "200");
    let third = http_from("127.0.0.2", addr, &get("/a")).await.unwrap();
    assert_eq!(status(&third), "429", "{third}");
    assert_eq!(header(&third, "x-torii-error"), Some("rate_limited"));
    assert_eq!(header(&third, "retry-after"), Some("100"));
    assert!(header(&third, "grpc-retry-pushback-ms").is_none());
    assert!(
        third.contains("client 127.0.0.2 is over route per-ip's rate limit of 0.01 requests per second (burst 2) per client IP; retry in "),
        "{third}"
    );
    // Another address: a full bucket of its own.
    for _ in 0..2 {
        let r = http_from("127.0.0.3", addr, &get("/b")).await.unwrap();
        assert_eq!(status(&r), "200", "{r}");
    }
    let r = http_from("127.0.0.3", addr, &get("/b")).await.unwrap();
    assert_eq!(status(&r), "429");
    assert_eq!(
        proxy.metric("torii_rate_limited_total", &["route=\"per-ip\""]),
        Some(2.0)
    );
}

#[tokio::test]
async fn grpc_web_gets_the_status_in_its_trailers_frame() {
    let echo = start_echo().await;
    let dir = TempDir::new("rate-limit-web");
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - name: web
        match: {{ grpc_service: torii.echo.v1.Echo }}
        cluster: echo
        rate_limit: {{ requests_per_second: 0.01, burst: 1 }}
clusters:
  - name: echo
    endpoints: ["{}"]
"#,
        echo.addr
    );
    let proxy = start(&yaml, dir).await;
    let call = "POST /torii.echo.v1.Echo/Unary HTTP/1.1\r\nhost: t\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: 5\r\nconnection: close\r\n\r\n\0\0\0\0\0";
    let addr = proxy.addr("plain");
    let first = http_from("127.0.0.1", addr, call).await.unwrap();
    assert!(
        first.contains("grpc-status: 0") || first.contains("grpc-status:0"),
        "{first}"
    );
    let second = http_from("127.0.0.1", addr, call).await.unwrap();
    assert_eq!(status(&second), "200", "{second}");
    assert_eq!(header(&second, "retry-after"), Some("100"));
    assert_eq!(header(&second, "x-torii-error"), Some("rate_limited"));
    let body = second.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(body.contains("grpc-status: 8\r\n"), "{body:?}");
    assert!(body.contains("grpc-retry-pushback-ms: "), "{body:?}");
    assert!(
        body.contains("route web is over its rate limit"),
        "{body:?}"
    );
}

async fn mtls_proxy(echo: SocketAddr) -> (Proxy, TestPki) {
    let dir = TempDir::new("rate-limit-mtls");
    let pki = TestPki::new("rate limit CA");
    write_server_and_ca(&pki, dir.path());
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: server.crt, key: server.key }}
      client_auth:
        ca: ca.crt
        required: false
    routes:
      - name: per-caller
        cluster: echo
        rate_limit: {{ requests_per_second: 0.01, burst: 2, per: identity }}
clusters:
  - name: echo
    endpoints: ["{echo}"]
"#
    );
    (start(&yaml, dir).await, pki)
}

#[tokio::test]
async fn identities_have_buckets_of_their_own() {
    let echo = start_echo().await;
    let (proxy, pki) = mtls_proxy(echo.addr).await;
    let addr = proxy.addr("tls");
    let caller = |uri: &str| {
        TlsClient::new(pki.ca_cert_pem()).with_client_cert(pki.client_cert(&[], &[uri]))
    };
    let mut a = caller("spiffe://example.org/a")
        .echo_client(addr)
        .await
        .unwrap();
    let mut b = caller("spiffe://example.org/b")
        .echo_client(addr)
        .await
        .unwrap();
    for _ in 0..2 {
        a.unary(EchoRequest::default()).await.unwrap();
    }
    let err = a.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message()
            .starts_with("caller spiffe://example.org/a is over route per-caller's rate limit"),
        "{}",
        err.message()
    );
    // Same address, another identity: its own bucket.
    for _ in 0..2 {
        b.unary(EchoRequest::default()).await.unwrap();
    }
    assert_eq!(
        b.unary(EchoRequest::default()).await.unwrap_err().code(),
        tonic::Code::ResourceExhausted
    );
    // No client certificate: the client IP's bucket, apart from both.
    let mut anon = TlsClient::new(pki.ca_cert_pem())
        .echo_client(addr)
        .await
        .unwrap();
    anon.unary(EchoRequest::default()).await.unwrap();
    anon.unary(EchoRequest::default()).await.unwrap();
    let err = anon.unary(EchoRequest::default()).await.unwrap_err();
    assert!(
        err.message().starts_with("client 127.0.0.1 (no identity"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_reload_keeps_the_buckets_of_an_unchanged_route() {
    let dir = TempDir::new("rate-limit-reload");
    let config = |burst: u32, extra: &str| {
        format!(
            r#"access_log: off
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:{extra}
      - name: limited
        direct_response: {{ status: 200, body: ok }}
        rate_limit: {{ requests_per_second: 0.01, burst: {burst} }}
"#
        )
    };
    let proxy = start(&config(2, ""), dir).await;
    let addr = proxy.addr("plain");
    let file = proxy.dir.path().join("torii.yaml");
    let code = |r: String| status(&r).to_string();
    assert_eq!(
        code(http_from("127.0.0.1", addr, &get("/")).await.unwrap()),
        "200"
    );
    assert_eq!(
        code(http_from("127.0.0.1", addr, &get("/")).await.unwrap()),
        "200"
    );
    assert_eq!(
        code(http_from("127.0.0.1", addr, &get("/")).await.unwrap()),
        "429"
    );
    // A route added above it: same name, same policy, same bucket (empty).
    let above = "\n      - match: { prefix: /other }\n        direct_response: { status: 204 }";
    std::fs::write(&file, config(2, above)).unwrap();
    proxy.running.reload_file(&file).await.unwrap();
    assert_eq!(
        code(http_from("127.0.0.1", addr, &get("/")).await.unwrap()),
        "429"
    );
    // A new policy: a new, full bucket.
    std::fs::write(&file, config(3, above)).unwrap();
    proxy.running.reload_file(&file).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            code(http_from("127.0.0.1", addr, &get("/")).await.unwrap()),
            "200"
        );
    }
    assert_eq!(
        code(http_from("127.0.0.1", addr, &get("/")).await.unwrap()),
        "429"
    );
}

#[test]
fn check_reports_bad_limits_with_their_place() {
    let dir = TempDir::new("rate-limit-check");
    let file = dir.path().join("torii.yaml");
    std::fs::write(
        &file,
        r#"listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - direct_response: { status: 200 }
        rate_limit: { requests_per_second: 0, burst: 0, per: clientip }
      - direct_response: { status: 200 }
        rate_limit: { requests_per_second: 100, burst: 10 }
"#,
    )
    .unwrap();
    let out = torii_check(&file);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    let at = |line: usize, col: usize| format!("{}:{line}:{col}: ", file.display());
    for (where_, what) in [
        (at(6, 44), "listeners[0].routes[0].rate_limit.requests_per_second is 0; it must be more than 0"),
        (at(6, 54), "listeners[0].routes[0].rate_limit.burst is 0; it must be at least 1"),
        (at(6, 62), "listeners[0].routes[0].rate_limit.per \"clientip\" is not one of the allowed values; write one of: route, client_ip, identity (did you mean \"client_ip\"?)"),
        (at(8, 56), "listeners[0].routes[1].rate_limit.burst 10 is below listeners[0].routes[1].rate_limit.requests_per_second 100"),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&where_) && l.contains(what)),
            "want {where_}…{what}\n{text}"
        );
    }
}

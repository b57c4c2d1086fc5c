//! Metrics and the access log after known traffic: gRPC requests counted by
//! service, method and status (from trailers, trailers-only answers and
//! torii-made failures alike), scraped over HTTP from the admin listener.

mod proxy_support;
mod support;

use proxy_support::start;
use support::*;

#[tokio::test]
async fn metrics_and_access_log_after_known_traffic() {
    let echo = start_echo().await;
    let (dead, _guard) = spawn_refusing().await;
    let dir = TempDir::new("observe");
    let log = dir.path().join("access.log");
    let yaml = format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {}
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ grpc_method: ClientStream }}
        cluster: dead
      - match: {{ grpc_service: torii.echo.v1.Echo }}
        cluster: echo
clusters:
  - name: echo
    endpoints: ["{}"]
  - name: dead
    endpoints: ["{dead}"]
"#,
        log.display(),
        echo.addr
    );
    let proxy = start(&yaml, dir).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    for _ in 0..3 {
        client.unary(EchoRequest::default()).await.unwrap();
    }
    // NOT_FOUND from the upstream, in a trailers-only answer.
    let err = client
        .unary(EchoRequest {
            status_code: 5,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // NOT_FOUND in trailers after messages.
    let mut s = client
        .server_stream(EchoRequest {
            count: 2,
            status_code: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while let Ok(Some(_)) = s.message().await {}
    // torii-made UNAVAILABLE.
    let err = client
        .client_stream(tokio_stream::iter(vec![EchoRequest::default()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

    let admin = proxy.running.admin.expect("admin listener");
    let text = admin_get(admin, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let value = |labels: &[&str]| -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with("torii_requests_total{"))
            .find(|l| labels.iter().all(|want| l.contains(want)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        value(&[
            "grpc_method=\"Unary\"",
            "grpc_status=\"OK\"",
            "cluster=\"echo\"",
            "listener=\"plain\""
        ]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(&["grpc_method=\"Unary\"", "grpc_status=\"NOT_FOUND\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&["grpc_method=\"ServerStream\"", "grpc_status=\"NOT_FOUND\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&[
            "grpc_method=\"ClientStream\"",
            "grpc_status=\"UNAVAILABLE\"",
            "error=\"upstream_connect_refused\""
        ]),
        Some(1.0),
        "{text}"
    );
    for name in [
        "torii_request_duration_seconds_bucket",
        "torii_downstream_connections_active",
        "torii_upstream_errors_total",
        "torii_endpoint_healthy",
        "torii_upstream_connect_duration_seconds",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }

    let clusters = admin_get(admin, "/clusters").await;
    assert!(clusters.contains("\"available\": true"), "{clusters}");
    let config = admin_get(admin, "/config").await;
    assert!(config.contains("\"name\": \"plain\""), "{config}");
    let ready = admin_get(admin, "/ready").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    // The access log: one JSON object per request, written off the hot
    // path; wait (bounded) until all six requests are there.
    let deadline = std::time::Instant::now() + PATIENCE;
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        if lines.len() >= 6 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 6, "{lines:?}");
    let ok = &lines[0];
    for field in [
        "time",
        "listener",
        "client",
        "method",
        "authority",
        "path",
        "grpc_service",
        "grpc_method",
        "http_status",
        "grpc_status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream",
        "request_id",
    ] {
        assert!(ok.get(field).is_some(), "{field} missing in {ok}");
    }
    assert_eq!(ok["grpc_status"], 0);
    // How the connection was classified, and why.
    assert_eq!(ok["detected"], "http2", "{ok}");
    assert!(
        ok["detect_reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{ok}"
    );
    assert_eq!(ok["upstream"], echo.addr.to_string());
    let failed = lines
        .iter()
        .find(|l| l["grpc_method"] == "ClientStream")
        .unwrap();
    assert_eq!(failed["error"], "upstream_connect_refused");
    assert_eq!(failed["grpc_status"], 14);
}

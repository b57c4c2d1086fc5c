//! What torii logs reads as words, not as Rust: no `Some("…")`, `None`,
//! `ProtocolName(…)`, enum variant names like `TLSv1_3` or `RoundRobin`,
//! or float noise like `0.29467000000000004`. The binary runs at the debug
//! level through handshakes that succeed and fail, a request to a dead
//! cluster (ejection), protocol detection, a reload and a drain; then every
//! line it wrote is checked. `--log-format json` writes one JSON object per
//! line whose fields are plain strings, and `/config` uses the config's
//! own words.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use support::process::ToriiProcess;
use support::*;

/// A port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn write_config(dir: &Path, echo: SocketAddr, access_log: &str) -> std::path::PathBuf {
    let down = closed_port();
    let yaml = format!(
        r#"admin:
  address: 127.0.0.1:0
access_log: {access_log}
drain_timeout: 2s
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates: [{{ cert: server.crt, key: server.key }}]
      client_auth:
        ca: ca.crt
        allowed_sans: ["spiffe://good.example/*", "*.good.example"]
    routes:
      - cluster: echo
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: /down }}
        cluster: down
        timeout: 1500ms
      - cluster: echo
clusters:
  - name: echo
    endpoints: ["{echo}"]
    lb: least_request
  - name: down
    endpoints: ["127.0.0.1:{down}"]
    connect_timeout: 250ms
    outlier_detection: {{ consecutive_failures: 2, base_ejection_time: 1500ms }}
    health_check: {{ type: tcp, interval: 1s, timeout: 300ms }}
"#
    );
    let file = dir.join("torii.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

/// Runs torii through a bit of everything; returns every stderr line.
async fn exercise(format: &str) -> (Vec<String>, String) {
    let dir = TempDir::new("readable-logs");
    let pki = TestPki::new("readable logs CA");
    pki.server_cert(&["localhost"])
        .write_to(dir.path(), "server")
        .unwrap();
    pki.write_ca(dir.path(), "ca").unwrap();
    let echo = start_echo().await;
    let config = write_config(dir.path(), echo.addr, "off");
    let mut torii = ToriiProcess::serve_with(&config, &["--log-format", format], "debug");
    let admin = ToriiProcess::address(&torii.wait_for(&["admin listening"], PATIENCE * 3).await);
    let mut tls = None;
    let mut plain = None;
    while tls.is_none() || plain.is_none() {
        let line = torii
            .wait_for(&["listening", "address"], PATIENCE * 3)
            .await;
        if line.contains("listener=tls") || line.contains("\"listener\":\"tls\"") {
            tls = Some(ToriiProcess::address(&line));
        } else if line.contains("listener=plain") || line.contains("\"listener\":\"plain\"") {
            plain = Some(ToriiProcess::address(&line));
        }
    }
    let (tls, plain) = (tls.unwrap(), plain.unwrap());

    // mTLS: admitted (a gRPC call), a SAN not allowed, no certificate, no TLS.
    let good = TlsClient::new(pki.ca_cert_pem())
        .with_client_cert(pki.client_cert(&[], &["spiffe://good.example/a"]));
    let mut client = good.echo_client(tls).await.expect("an admitted client");
    client.unary(EchoRequest::default()).await.expect("a call");
    let bad =
        TlsClient::new(pki.ca_cert_pem()).with_client_cert(pki.client_cert(&["bad.example"], &[]));
    if let Ok(mut c) = bad.echo_client(tls).await {
        assert!(c.unary(EchoRequest::default()).await.is_err());
    }
    let none = TlsClient::new(pki.ca_cert_pem());
    if let Ok(mut c) = none.echo_client(tls).await {
        assert!(c.unary(EchoRequest::default()).await.is_err());
    }
    let _ = raw_exchange(tls, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    torii.wait_for(&["san_not_allowed"], PATIENCE).await;

    // Plaintext: HTTP/1.1 proxied, then a dead cluster until it is ejected.
    let answer = raw_exchange(
        plain,
        b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1"), "{answer}");
    for _ in 0..3 {
        let answer = raw_exchange(
            plain,
            b"GET /down HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 50"), "{answer}");
    }
    torii.wait_for(&["ejected"], PATIENCE).await;

    let config_json = admin_get(admin, "/config").await;

    // The process metrics Prometheus users expect, from the binary itself.
    let metrics = admin_get(admin, "/metrics").await;
    for name in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "torii_build_info{version=\"",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }

    // A reload that changes the access log, then a drain.
    write_config(dir.path(), echo.addr, "stdout");
    torii.signal("HUP");
    torii
        .wait_for(&["access log destination changed"], PATIENCE)
        .await;
    torii.signal("TERM");
    let lines = torii.finish(PATIENCE * 2).await;
    (lines, config_json)
}

/// What a line must not contain, and why.
fn rust_leaks(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    for bad in [
        "Some(",
        "None",
        "ProtocolName(",
        "TLSv1_",
        "RoundRobin",
        "LeastRequest",
    ] {
        if line.contains(bad) {
            found.push(bad.to_string());
        }
    }
    // An enum variant name: a word in CamelCase (two capitals with a lower
    // case letter between), like ApplicationVerificationFailure.
    for word in line.split(|c: char| !c.is_ascii_alphanumeric()) {
        let b = word.as_bytes();
        let camel = b.len() > 3
            && b[0].is_ascii_uppercase()
            && b.windows(2)
                .skip(1)
                .any(|w| w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase());
        // TLS's own message names are words of the protocol.
        if camel && !["ClientHello", "ServerHello"].contains(&word) {
            found.push(word.to_string());
        }
    }
    // Float noise: a number with more than 6 digits after the point.
    for word in line.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
        if let Some((_, frac)) = word.split_once('.') {
            if frac.len() > 6 && frac.bytes().all(|b| b.is_ascii_digit()) {
                found.push(word.to_string());
            }
        }
    }
    found
}

fn assert_readable(lines: &[String]) {
    let bad: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            let leaks = rust_leaks(l);
            (!leaks.is_empty()).then(|| format!("{leaks:?} in: {l}"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "log lines with Rust formatting:\n{}",
        bad.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_read_as_words() {
    let (lines, config) = exercise("text").await;
    // The events this test means to cover were all logged.
    for want in [
        "TLS handshake done",
        "sni=localhost",
        "alpn=h2",
        "version=TLSv1.3",
        "client_sans=URI:spiffe://good.example/a",
        "presented=DNS:bad.example",
        "allowed=spiffe://good.example/*,*.good.example",
        "connection classified",
        "ejected_for=",
        "draining",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "no line with {want:?}:\n{}",
            lines.join("\n")
        );
    }
    assert_readable(&lines);

    let body = &config[config.find("\r\n\r\n").expect("an HTTP answer") + 4..];
    let v: serde_json::Value = serde_json::from_str(body).expect("/config is JSON");
    let clusters = v["clusters"].as_array().unwrap();
    assert_eq!(clusters[0]["lb"], "least_request");
    assert_eq!(clusters[1]["lb"], "round_robin");
    assert_eq!(clusters[1]["protocol"], "auto");
    assert_eq!(clusters[1]["connect_timeout"], "250ms");
    assert_eq!(clusters[1]["health_check"]["type"], "tcp");
    assert_eq!(
        clusters[1]["outlier_detection"]["base_ejection_time"],
        "1.5s"
    );
    assert_eq!(v["listeners"][1]["routes"][0]["timeout"], "1.5s");
    assert_eq!(v["drain_timeout"], "2s");
    assert_readable(&[body.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_plain_values() {
    let (lines, _) = exercise("json").await;
    assert!(lines.len() > 10, "{lines:?}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    let handshake = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["message"] == "TLS handshake done")
        .expect("a handshake line");
    let f = &handshake;
    assert_eq!(f["listener"], "tls");
    assert_eq!(f["sni"], "localhost");
    assert_eq!(f["alpn"], "h2");
    assert_eq!(f["version"], "TLSv1.3");
    assert_readable(&lines);
    // A value is the text itself, not a quoted Rust string inside JSON.
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for (key, value) in v.as_object().unwrap() {
            if let Some(text) = value.as_str() {
                assert!(!text.starts_with('"'), "{key} is quoted twice: {line}");
            }
        }
    }
}

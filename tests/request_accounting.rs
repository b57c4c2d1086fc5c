//! How requests are counted and told: a client's cancel is CANCELLED / 499
//! (not `NONE` / 0); gRPC names a client makes up do not each become a
//! series; a failed request's access log line carries the sentence and the
//! upstream endpoint; upstream failures are logged at info, rate-limited.

mod proxy_support;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;
use proxy_support::{front, start, Proxy};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Polls (bounded) until `metric` with `labels` reaches `want`.
async fn wait_metric(proxy: &Proxy, metric: &str, labels: &[&str], want: f64) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while proxy.metric(metric, labels) != Some(want) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        proxy.metric(metric, labels),
        Some(want),
        "{metric}{labels:?}:\n{}",
        proxy.metrics()
    );
}

#[tokio::test]
async fn a_cancelled_grpc_call_is_counted_as_cancelled() {
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
        .expect("the cancel reaches the upstream");
    wait_metric(
        &proxy,
        "torii_requests_total",
        &[
            "grpc_method=\"Unary\"",
            "grpc_status=\"CANCELLED\"",
            "http_status=\"499\"",
        ],
        1.0,
    )
    .await;
    assert!(
        !proxy.metrics().contains("grpc_status=\"NONE\""),
        "{}",
        proxy.metrics()
    );
}

/// Accepts connections and reads, never answers.
async fn silent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_http_client_that_goes_away_is_counted_499() {
    let up = silent().await;
    let proxy = front_with_log(&[up.to_string()]).await;
    let mut tcp = TcpStream::connect(proxy.addr("plain")).await.unwrap();
    tcp.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // The request is under way once torii has connected upstream.
    wait_metric(
        &proxy,
        "torii_upstream_connect_duration_seconds_count",
        &[],
        1.0,
    )
    .await;
    drop(tcp);
    wait_metric(
        &proxy,
        "torii_requests_total",
        &["http_status=\"499\""],
        1.0,
    )
    .await;
    let line = log_line(&proxy, |l| l["path"] == "/slow").await;
    assert_eq!(line["http_status"], 499, "{line}");
    assert!(
        line["error_message"]
            .as_str()
            .is_some_and(|m| m.contains("cancelled")),
        "{line}"
    );
}

async fn front_with_log(endpoints: &[String]) -> Proxy {
    let dir = TempDir::new("accounting");
    let log = dir.path().join("access.log");
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let yaml = format!(
        r#"access_log: {}
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ grpc_service: torii.echo.v1.Echo }}
        cluster: up
      - match: {{ prefix: /slow }}
        cluster: up
      - match: {{ prefix: /any/ }}
        cluster: up
clusters:
  - name: up
    endpoints: [{}]
"#,
        log.display(),
        eps.join(", ")
    );
    start(&yaml, dir).await
}

/// The first access log line `pick` accepts (waits, bounded).
async fn log_line(proxy: &Proxy, pick: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let file = proxy.dir.path().join("access.log");
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| pick(l));
        if let Some(l) = found {
            return l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no such access log line:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_failed_request_logs_its_sentence_and_upstream() {
    let (dead, _guard) = spawn_refusing().await;
    let proxy = front_with_log(&[dead.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let err = client.unary(EchoRequest::default()).await.unwrap_err();
    let line = log_line(&proxy, |l| l["grpc_method"] == "Unary").await;
    assert_eq!(line["error"], "upstream_connect_refused", "{line}");
    assert_eq!(line["upstream"], dead.to_string(), "{line}");
    let sentence = line["error_message"].as_str().unwrap_or_default();
    assert!(sentence.contains("refused the connection"), "{line}");
    assert_eq!(sentence, err.message(), "the client's words");
}

#[tokio::test]
async fn made_up_grpc_names_do_not_each_make_a_series() {
    let echo = start_echo().await;
    let proxy = front_with_log(&[echo.addr.to_string()]).await;
    let send = raw_h2(proxy.addr("plain")).await;
    // Unrouted names: one series, whatever the names.
    for i in 0..40 {
        let (resp, _body) = raw_grpc_call(send.clone(), "x", &format!("/scan{i}.Svc/M{i}")).await;
        let resp = resp.await.expect("an answer");
        assert_eq!(resp.headers()["grpc-status"], "12");
    }
    // Routed (a prefix route) to a server that does not know them.
    for i in 0..40 {
        let (resp, mut body) =
            raw_grpc_call(send.clone(), "x", &format!("/any/p{i}.Svc/M{i}")).await;
        body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .unwrap();
        let resp = resp.await.expect("an answer");
        let (_, mut recv) = resp.into_parts();
        while let Some(chunk) = recv.data().await {
            let _ = chunk;
        }
        let _ = recv.trailers().await;
    }
    let metrics = proxy.metrics();
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("torii_requests_total{"))
        .collect();
    assert!(
        series
            .iter()
            .all(|l| !l.contains("scan") && !l.contains("p1.Svc")),
        "{series:#?}"
    );
    assert!(series.len() <= 3, "{series:#?}");
    assert_eq!(
        proxy.metric(
            "torii_requests_total",
            &["grpc_service=\"unrouted\"", "grpc_method=\"unrouted\""]
        ),
        Some(40.0),
        "{metrics}"
    );
    // The access log keeps the names the client sent.
    let line = log_line(&proxy, |l| l["path"] == "/scan7.Svc/M7").await;
    assert_eq!(line["grpc_service"], "scan7.Svc", "{line}");
}

/// A server that takes HTTP/2, then answers every request with GOAWAY
/// ENHANCE_YOUR_CALM "too_many_pings" (as gRPC servers do to a client that
/// pings too often).
async fn calming() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                // Until a HEADERS frame (type 1) shows up after the preface.
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if has_headers(&seen) {
                        break;
                    }
                }
                let debug = b"too_many_pings";
                let mut goaway = vec![0, 0, (8 + debug.len()) as u8, 7, 0, 0, 0, 0, 0];
                goaway.extend_from_slice(&1u32.to_be_bytes());
                goaway.extend_from_slice(&11u32.to_be_bytes());
                goaway.extend_from_slice(debug);
                let _ = tcp.write_all(&goaway).await;
                let _ = tcp.shutdown().await;
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn has_headers(seen: &[u8]) -> bool {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let Some(mut rest) = seen.strip_prefix(&preface[..]) else {
        return false;
    };
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        if rest[3] == 1 {
            return true;
        }
        if rest.len() < 9 + len {
            return false;
        }
        rest = &rest[9 + len..];
    }
    false
}

/// The binary, with stderr lines on a channel.
async fn serve(
    config: &Path,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_torii"))
        .args(["serve", "--workers", "1", "-c"])
        .arg(config)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the torii binary runs");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            let _ = tx.send(l);
        }
    });
    (child, rx)
}

async fn next_with(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    part: &str,
) -> String {
    loop {
        match tokio::time::timeout(PATIENCE * 2, rx.recv()).await {
            Ok(Some(l)) => {
                seen.push(l.clone());
                if l.contains(part) {
                    return l;
                }
            }
            _ => panic!("no line with {part:?}:\n{}", seen.join("\n")),
        }
    }
}

#[tokio::test]
async fn upstream_failures_are_logged_at_info_once_in_a_while_in_plain_words() {
    let up = calming().await;
    let dir = TempDir::new("info-log");
    let config = dir.path().join("torii.yaml");
    std::fs::write(
        &config,
        format!(
            r#"access_log: off
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes: [{{ cluster: up }}]
clusters:
  - name: up
    endpoints: ["{up}"]
"#
        ),
    )
    .unwrap();
    let (child, mut rx) = serve(&config).await;
    let mut seen = Vec::new();
    let line = next_with(&mut rx, &mut seen, "listening listener=").await;
    let addr: SocketAddr = line
        .split("address=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap();
    let mut client = h2c_client(addr).await;
    for _ in 0..5 {
        let err = client.unary(EchoRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    }
    // Everything logged for those calls is written by now; a SIGHUP marks
    // the end of it.
    let pid = child.id().expect("running") as i32;
    assert_eq!(kill(pid, "HUP"), Some(0));
    next_with(&mut rx, &mut seen, "reloaded (SIGHUP)").await;
    let info: Vec<&String> = seen.iter().filter(|l| l.contains(" INFO ")).collect();
    let failures: Vec<&&String> = info
        .iter()
        .filter(|l| l.contains("request failed (upstream_reset)"))
        .collect();
    assert_eq!(failures.len(), 1, "rate-limited:\n{}", seen.join("\n"));
    let f = failures[0];
    assert!(
        f.contains("cluster=\"up\"") || f.contains("cluster=up"),
        "{f}"
    );
    assert!(f.contains(&up.to_string()), "{f}");
    let ended: Vec<&&String> = info
        .iter()
        .filter(|l| l.contains("HTTP/2 connection to upstream"))
        .collect();
    assert_eq!(
        ended.len(),
        1,
        "once per endpoint and kind:\n{}",
        seen.join("\n")
    );
    assert!(ended[0].contains("GOAWAY"), "{}", ended[0]);
}

/// `kill -SIGNAL pid` through the kill(1) command (no unsafe code here).
fn kill(pid: i32, signal: &str) -> Option<i32> {
    std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .ok()
        .and_then(|s| s.code())
}

//! A route's retry policy against upstreams that fail on cue: each gRPC
//! status in Trailers-Only and in trailers, resets, refused connections,
//! pushback, per-try timeouts, gRPC's rule that nothing is retried once a
//! message reached the client, request bodies up to and over the replay
//! buffer, and the cluster's retry budget under a bounded load.

mod proxy_support;
mod resilience_support;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proxy_support::{start, Proxy};
use resilience_support::{eventually, spawn_scripted, Act};
use support::*;
use tonic::Code;

fn config(endpoints: &[SocketAddr], retry: &str, cluster_extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: up
        retry: {retry}
clusters:
  - name: up
    endpoints: [{}]
    outlier_detection: {{ consecutive_failures: 0 }}
{cluster_extra}
"#,
        eps.join(", ")
    )
}

async fn proxy(endpoints: &[SocketAddr], retry: &str, cluster_extra: &str) -> Proxy {
    start(
        &config(endpoints, retry, cluster_extra),
        TempDir::new("retries"),
    )
    .await
}

/// A unary call carrying `x-call` (the upstream counts attempts per call)
/// and `x-case` (what the script does with it).
fn call(id: &str, case: &str, payload: usize) -> tonic::Request<EchoRequest> {
    let mut req = tonic::Request::new(EchoRequest {
        payload: vec![7; payload],
        ..Default::default()
    });
    req.metadata_mut().insert("x-call", id.parse().unwrap());
    req.metadata_mut().insert("x-case", case.parse().unwrap());
    req
}

/// Cases `only-N`, `trailers-N`, `msg-N`, `reset`, `hang`, `pushback-V`:
/// the first attempt of each call fails so, later ones succeed.
fn first_fails(parts: &http::request::Parts, n: u64) -> Act {
    let case = parts
        .headers
        .get("x-case")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if n > 1 {
        return Act::Ok;
    }
    let code = |s: &str| s.parse::<i32>().unwrap();
    if let Some(c) = case.strip_prefix("only-") {
        Act::TrailersOnly(code(c), None)
    } else if let Some(c) = case.strip_prefix("trailers-") {
        Act::Trailers(code(c), None)
    } else if let Some(c) = case.strip_prefix("msg-") {
        Act::MessageThen(code(c))
    } else if case == "reset" {
        Act::Reset
    } else if case == "hang" {
        Act::Hang
    } else if case == "pushback-stop" {
        Act::TrailersOnly(14, Some("-1"))
    } else if case == "pushback-300" {
        Act::Trailers(14, Some("300"))
    } else {
        Act::Ok
    }
}

fn retries(p: &Proxy, reason: &str) -> f64 {
    p.metric(
        "torii_upstream_retries_total",
        &[&format!("reason=\"{reason}\"")],
    )
    .unwrap_or(0.0)
}

fn skipped(p: &Proxy, reason: &str) -> f64 {
    p.metric(
        "torii_upstream_retries_skipped_total",
        &[&format!("reason=\"{reason}\"")],
    )
    .unwrap_or(0.0)
}

const STATUSES: &[(&str, i32)] = &[
    ("cancelled", 1),
    ("unknown", 2),
    ("deadline_exceeded", 4),
    ("resource_exhausted", 8),
    ("aborted", 10),
    ("internal", 13),
    ("unavailable", 14),
];

#[tokio::test]
async fn every_named_status_is_retried_from_trailers_only_and_from_trailers() {
    let up = spawn_scripted(first_fails).await;
    let p = proxy(
        &[up.addr],
        "{ on: [cancelled, unknown, deadline_exceeded, resource_exhausted, aborted, internal, unavailable], attempts: 2, backoff: { base: 1ms, max: 2ms } }",
        // 14 retries in well under a second: past the default budget's 10.
        "    retry_budget: { min_per_second: 100 }",
    )
    .await;
    let mut client = h2c_client(p.addr("plain")).await;
    for (name, code) in STATUSES {
        for shape in ["only", "trailers"] {
            let id = format!("{shape}-{name}");
            let got = client
                .unary(call(&id, &format!("{shape}-{code}"), 10))
                .await;
            assert!(got.is_ok(), "{id}: {got:?}");
        }
        assert_eq!(retries(&p, name), 2.0, "{name}: one retry per shape");
    }
    assert_eq!(up.hits(), 2 * 2 * STATUSES.len() as u64);
}

#[tokio::test]
async fn resets_are_retried_but_a_stream_that_sent_a_message_never_is() {
    let up = spawn_scripted(first_fails).await;
    let p = proxy(
        &[up.addr],
        "{ on: [unavailable, reset], attempts: 3, backoff: { base: 1ms, max: 2ms } }",
        "",
    )
    .await;
    let mut client = h2c_client(p.addr("plain")).await;
    client
        .unary(call("r", "reset", 10))
        .await
        .expect("a reset before the head is retried");
    assert_eq!(retries(&p, "reset"), 1.0);

    // A status the policy does not name goes to the client as it is.
    let status = client
        .unary(call("i", "only-13", 10))
        .await
        .expect_err("INTERNAL is not retried here");
    assert_eq!(status.code(), Code::Internal);

    // A6: a message reached the client, so the UNAVAILABLE after it is final.
    let before = up.hits();
    let mut req = tonic::Request::new(EchoRequest::default());
    req.metadata_mut().insert("x-call", "m".parse().unwrap());
    req.metadata_mut()
        .insert("x-case", "msg-14".parse().unwrap());
    let mut stream = client.server_stream(req).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some(), "the message");
    let end = stream.message().await.expect_err("then UNAVAILABLE");
    assert_eq!(end.code(), Code::Unavailable);
    assert_eq!(up.hits() - before, 1, "never sent again");
    assert_eq!(retries(&p, "unavailable"), 0.0);
}

#[tokio::test]
async fn refused_connections_are_retried_and_the_error_names_every_attempt() {
    let (a, _ha) = spawn_refusing().await;
    let (b, _hb) = spawn_refusing().await;
    let dir = TempDir::new("retries-log");
    let log = dir.path().join("access.log");
    let yaml = format!(
        "access_log: {}\n{}",
        log.display(),
        config(
            &[a, b],
            "{ on: [connect_failure], attempts: 3, backoff: { base: 1ms, max: 2ms } }",
            ""
        )
    );
    let p = start(&yaml, dir).await;
    let mut client = h2c_client(p.addr("plain")).await;
    let status = client
        .unary(call("c", "ok", 10))
        .await
        .expect_err("nothing listens");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("torii made 3 attempts: 1: "),
        "{}",
        status.message()
    );
    assert_eq!(retries(&p, "connect_failure"), 2.0);
    let deadline = Instant::now() + PATIENCE;
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("\"attempts\"")) {
            break l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no access-log line with attempts"
        );
        // Polling a file the log writer fills off the request path.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(line.contains("\"attempts\":3"), "{line}");
    assert!(line.contains("connect_failure\""), "{line}");
}

#[tokio::test]
async fn pushback_is_honoured_and_a_negative_one_stops() {
    let up = spawn_scripted(first_fails).await;
    let p = proxy(
        &[up.addr],
        "{ on: [unavailable], attempts: 3, backoff: { base: 1ms, max: 2ms } }",
        "",
    )
    .await;
    let mut client = h2c_client(p.addr("plain")).await;
    let status = client
        .unary(call("s", "pushback-stop", 10))
        .await
        .expect_err("the upstream said stop");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(skipped(&p, "pushback"), 1.0);
    assert_eq!(up.hits(), 1);

    let t = Instant::now();
    client
        .unary(call("w", "pushback-300", 10))
        .await
        .expect("retried after the pushback");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(retries(&p, "unavailable"), 1.0);
}

#[tokio::test]
async fn an_attempt_past_its_per_try_timeout_is_retried() {
    let up = spawn_scripted(first_fails).await;
    let p = proxy(
        &[up.addr],
        "{ on: [unavailable], attempts: 2, per_try_timeout: 200ms, backoff: { base: 1ms, max: 2ms } }",
        "",
    )
    .await;
    let mut client = h2c_client(p.addr("plain")).await;
    client
        .unary(call("h", "hang", 10))
        .await
        .expect("the second attempt answers");
    assert_eq!(retries(&p, "per_try_timeout"), 1.0);
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn bodies_up_to_the_replay_buffer_are_replayed_larger_ones_are_not() {
    let up = spawn_scripted(first_fails).await;
    let p = proxy(
        &[up.addr],
        "{ on: [unavailable], attempts: 2, backoff: { base: 1ms, max: 2ms } }",
        "",
    )
    .await;
    let mut client = h2c_client(p.addr("plain")).await;
    // 60,000 payload bytes: with the message's framing still under 64 KiB.
    client
        .unary(call("small", "only-14", 60_000))
        .await
        .expect("replayed");
    let bodies = up.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0], bodies[1], "the whole body both times");
    assert!(bodies[0] > 60_000 && bodies[0] <= 64 * 1024);

    let status = client
        .unary(call("big", "only-14", 70_000))
        .await
        .expect_err("not retried");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(up.hits(), 3);
    assert_eq!(skipped(&p, "body_too_large"), 1.0);
}

#[tokio::test]
async fn a_body_still_streaming_in_is_sent_again_whole_then_the_rest() {
    // The first attempt is answered UNAVAILABLE before the upstream reads
    // anything, while the client has sent only part of its body: the retry
    // sends what torii had sent, then the rest as the client sends it.
    let up = spawn_scripted(|_, n| match n {
        1 => Act::EarlyTrailersOnly(14),
        _ => Act::Ok,
    })
    .await;
    let p = proxy(
        &[up.addr],
        "{ on: [unavailable], attempts: 2, backoff: { base: 1ms, max: 2ms } }",
        "",
    )
    .await;
    let conn = raw_h2(p.addr("plain")).await;
    let (response, mut body) = raw_grpc_call(conn, "streaming", "/test.Echo/Collect").await;
    let first = Bytes::from(vec![1u8; 3000]);
    let rest = Bytes::from(vec![2u8; 5000]);
    body.send_data(first, false).unwrap();
    // The retry reached the upstream, and waits there for the rest.
    assert!(
        eventually(PATIENCE, || up.hits() == 2).await,
        "the call was retried while its body was still arriving"
    );
    body.send_data(rest, true).unwrap();
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("answered")
        .expect("a response");
    let mut recv = response.into_body();
    while let Some(chunk) = recv.data().await {
        chunk.expect("the answer's message");
    }
    let trailers = recv.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        *up.bodies.lock().unwrap(),
        vec![8000],
        "the retry got the whole body (the first attempt read none of it)"
    );
    assert_eq!(retries(&p, "unavailable"), 1.0);
}

#[tokio::test]
async fn the_budget_caps_retries_under_a_bounded_load() {
    // Every attempt fails; the budget allows 3 retries a second and no
    // share of the (few) requests.
    let up = spawn_scripted(|_, _| Act::TrailersOnly(14, None)).await;
    let p = proxy(
        &[up.addr],
        "{ on: [unavailable], attempts: 3, backoff: { base: 1ms, max: 1ms } }",
        "    retry_budget: { ratio: 0, min_per_second: 3 }",
    )
    .await;
    let mut client = h2c_client(p.addr("plain")).await;
    const REQUESTS: u64 = 20;
    let t = Instant::now();
    for i in 0..REQUESTS {
        let status = client
            .unary(call(&i.to_string(), "x", 10))
            .await
            .expect_err("always UNAVAILABLE");
        assert_eq!(status.code(), Code::Unavailable);
    }
    let elapsed = t.elapsed();
    let sent = retries(&p, "unavailable") as u64;
    let refused = skipped(&p, "budget") as u64;
    // Three a second: the run spans one or two of the budget's windows.
    let windows = 1 + elapsed.as_secs() + 1;
    assert!(
        sent >= 3 && sent <= 3 * windows,
        "{sent} retries in {elapsed:?}"
    );
    assert_eq!(
        up.hits(),
        REQUESTS + sent,
        "every retry sent reached the upstream"
    );
    // Each request stops at its first refused retry: those that got both
    // of theirs were never refused.
    assert!(refused >= REQUESTS - sent / 2, "{refused} refused");
    assert!(refused <= REQUESTS);
}

/// A plain HTTP upstream speaking HTTP/1.1 and h2c on one port: the first
/// request to each path gets `503`, later ones `200` saying how many body
/// bytes arrived.
async fn spawn_busy_once() -> SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let path = req.uri().path().to_string();
                            let n = {
                                let mut s = seen.lock().unwrap();
                                let n = s.entry(path).or_insert(0);
                                *n += 1;
                                *n
                            };
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let (status, text) = match n {
                                1 => (503, "busy".to_string()),
                                _ => (200, format!("got {} bytes", body.len())),
                            };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Full::new(Bytes::from(text)))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn plain_http_5xx_is_retried_with_its_body_over_http1_and_h2c() {
    // Over HTTP/1.1 the request is copied for the retry; over h2c the
    // upstream connection keeps it and gives it back.
    let up = spawn_busy_once().await;
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: /one }}
        cluster: h1
        retry: {{ on: [5xx], attempts: 2, backoff: {{ base: 1ms, max: 2ms }} }}
      - match: {{ prefix: /two }}
        cluster: h2
        retry: {{ on: [5xx], attempts: 2, backoff: {{ base: 1ms, max: 2ms }} }}
clusters:
  - name: h1
    endpoints: ["{up}"]
    protocol: http1
  - name: h2
    endpoints: ["{up}"]
    protocol: h2c
"#
    );
    let p = start(&yaml, TempDir::new("retries-5xx")).await;
    for path in ["/one", "/two"] {
        let answer = raw_exchange(
            p.addr("plain"),
            format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
                .as_bytes(),
        )
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert!(answer.ends_with("got 5 bytes"), "{path}: {answer}");
    }
    for cluster in ["h1", "h2"] {
        let n = p.metric(
            "torii_upstream_retries_total",
            &[&format!("cluster=\"{cluster}\""), "reason=\"5xx\""],
        );
        assert_eq!(n, Some(1.0), "{cluster}");
    }
}

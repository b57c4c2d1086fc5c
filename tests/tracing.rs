//! Tracing end to end: a test OTLP collector (a tonic server of the
//! opentelemetry-proto TraceService), torii in-process, and upstreams that
//! report the `traceparent` they got. The client's trace continues through
//! torii's SERVER span and one CLIENT span per attempt (retries included)
//! to the upstream, over gRPC, gRPC-Web and HTTP/1.1; failures make ERROR spans;
//! `trace_id` is in the access log; a collector that is down changes
//! nothing for requests and its spans are counted as dropped.

mod proxy_support;
mod resilience_support;
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use proxy_support::{start, Proxy};
use resilience_support::{spawn_scripted, Act};
use support::*;

/// The client's trace and span.
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in req.into_inner().resource_spans {
            for kv in rs.resource.iter().flat_map(|r| &r.attributes) {
                if let (true, Some(Value::StringValue(s))) = (
                    kv.key == "service.name",
                    kv.value.as_ref().and_then(|v| v.value.clone()),
                ) {
                    self.services.lock().unwrap().push(s);
                }
            }
            for ss in rs.scope_spans {
                self.spans.lock().unwrap().extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start() -> (Collector, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let c = Collector::default();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(c.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        tokio::spawn(server);
        (c, addr)
    }

    /// Waits (bounded) until the spans of `trace` number `n`.
    async fn wait(&self, trace: &str, n: usize) -> Vec<Span> {
        let until = Instant::now() + PATIENCE;
        loop {
            let spans: Vec<Span> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| hex(&s.trace_id) == trace)
                .cloned()
                .collect();
            if spans.len() >= n || Instant::now() > until {
                assert_eq!(spans.len(), n, "spans of trace {trace}: {spans:#?}");
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn attrs(s: &Span) -> HashMap<String, String> {
    s.attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                Some(Value::StringValue(s)) => s,
                Some(Value::IntValue(i)) => i.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn status(s: &Span) -> i32 {
    s.status.as_ref().map_or(0, |s| s.code)
}

fn config(collector: SocketAddr, ratio: f64, up: SocketAddr, h1: SocketAddr, log: &str) -> String {
    format!(
        r#"
access_log: {log}
tracing:
  otlp: {{ endpoint: "http://{collector}" }}
  sample_ratio: {ratio}
  service_name: edge-proxy
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - name: h1
        match: {{ prefix: /h1 }}
        cluster: h1
      - name: dead
        match: {{ prefix: /dead. }}
        cluster: dead
      - name: grpc
        match: {{ prefix: / }}
        cluster: up
        retry: {{ on: [unavailable], attempts: 3, backoff: {{ base: 1ms, max: 2ms }} }}
clusters:
  - name: up
    endpoints: ["{up}"]
    outlier_detection: {{ consecutive_failures: 0 }}
  - name: h1
    protocol: http1
    endpoints: ["{h1}"]
  - name: dead
    endpoints: ["127.0.0.1:1"]
"#
    )
}

/// A unary call with the client's `traceparent` (if any) and `x-case`.
async fn call(
    proxy: &Proxy,
    path_service: Option<&str>,
    traceparent: Option<&str>,
    case: &str,
) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(EchoRequest::default());
    if let Some(tp) = traceparent {
        req.metadata_mut()
            .insert("traceparent", tp.parse().unwrap());
        req.metadata_mut()
            .insert("tracestate", "vendor=opaque".parse().unwrap());
    }
    req.metadata_mut().insert("x-call", case.parse().unwrap());
    req.metadata_mut().insert("x-case", case.parse().unwrap());
    let addr = proxy.addr("plain");
    match path_service {
        None => h2c_client(addr).await.unary(req).await.map(|_| ()),
        Some(service) => {
            // A service no upstream has: the route to the dead cluster.
            let channel = h2c_channel(addr).await.unwrap();
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let path = format!("/{service}/Unary").parse().unwrap();
            let codec = tonic_prost::ProstCodec::<EchoRequest, EchoResponse>::default();
            grpc.unary(req, path, codec).await.map(|_| ())
        }
    }
}

#[tokio::test]
async fn the_clients_trace_continues_through_each_attempt_to_the_upstream() {
    let (collector, caddr) = Collector::start().await;
    // The upstream notes each traceparent; `retry` fails its first attempt.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let up = spawn_scripted(move |parts, n| {
        let tp = parts.headers.get("traceparent");
        s.lock().unwrap().push(
            tp.map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
        );
        match parts.headers.get("x-case").map(|v| v.to_str().unwrap()) {
            // The status in trailers after a head: read where it lies.
            Some("retry") if n == 1 => Act::Trailers(14, None),
            _ => Act::Ok,
        }
    })
    .await;
    let (h1, _h1) = spawn_http1_only().await;
    let dir = TempDir::new("tracing");
    let log = dir.path().join("access.log");
    let proxy = start(
        &config(caddr, 0.0, up.addr, h1, &log.display().to_string()),
        dir,
    )
    .await;

    // gRPC with a retry: SERVER span, two CLIENT spans, two traceparents.
    let parent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    call(&proxy, None, Some(&parent), "retry").await.unwrap();
    let spans = collector.wait(TRACE, 3).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(server.name, "torii.echo.v1.Echo/Unary");
    assert_eq!(server.trace_state, "vendor=opaque");
    let a = attrs(server);
    assert_eq!(a["rpc.system"], "grpc");
    assert_eq!(a["rpc.service"], "torii.echo.v1.Echo");
    assert_eq!(a["rpc.method"], "Unary");
    assert_eq!(a["rpc.grpc.status_code"], "0");
    assert_eq!(a["http.response.status_code"], "200");
    assert_eq!(a["torii.route"], "grpc");
    assert_eq!(a["torii.cluster"], "up");
    assert_ne!(status(server), StatusCode::Error as i32);
    let mut clients: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    clients.sort_by_key(|s| attrs(s)["torii.retry"].clone());
    assert_eq!(clients.len(), 2);
    let sent = seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(c.parent_span_id, server.span_id);
        let a = attrs(c);
        assert_eq!(a["torii.retry"], i.to_string());
        assert_eq!(a["server.address"], "127.0.0.1");
        assert_eq!(a["server.port"], up.addr.port().to_string());
        assert_eq!(a["torii.cluster"], "up");
        // What the upstream saw names this attempt's span as its parent.
        assert_eq!(sent[i], format!("00-{TRACE}-{}-01", hex(&c.span_id)));
    }
    assert_eq!(status(clients[0]), StatusCode::Error as i32);
    assert_eq!(attrs(clients[0])["rpc.grpc.status_code"], "14");
    assert_ne!(status(clients[1]), StatusCode::Error as i32);
    assert_eq!(collector.services.lock().unwrap()[0], "edge-proxy");

    // torii's own failure: ERROR spans naming its x-torii-error code.
    let dead_trace = "1af7651916cd43dd8448eb211c80319c";
    let err = call(
        &proxy,
        Some("dead.Svc"),
        Some(&format!("00-{dead_trace}-{CLIENT_SPAN}-01")),
        "dead",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let spans = collector.wait(dead_trace, 2).await;
    for s in &spans {
        assert_eq!(status(s), StatusCode::Error as i32, "{s:?}");
        assert_eq!(attrs(s)["torii.error"], "upstream_connect_refused");
    }

    // HTTP/1.1: the upstream gets the CLIENT span's traceparent too.
    let h1_trace = "2af7651916cd43dd8448eb211c80319c";
    let req = format!(
        "GET /h1/x HTTP/1.1\r\nhost: a\r\ntraceparent: 00-{h1_trace}-{CLIENT_SPAN}-01\r\nconnection: close\r\n\r\n"
    );
    let resp = raw_exchange(proxy.addr("plain"), req.as_bytes())
        .await
        .unwrap();
    let spans = collector.wait(h1_trace, 2).await;
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    let want = format!(
        "\"traceparent\":\"00-{h1_trace}-{}-01\"",
        hex(&client.span_id)
    );
    assert!(resp.contains(&want), "{want} in {resp}");
    assert!(spans.iter().all(|s| s.name == "GET h1"), "{spans:?}");

    // gRPC-Web over HTTP/1.1, made gRPC: the same.
    seen.lock().unwrap().clear();
    let web_trace = "4af7651916cd43dd8448eb211c80319c";
    let mut req = format!(
        "POST /torii.echo.v1.Echo/Unary HTTP/1.1\r\nhost: a\r\ncontent-type: application/grpc-web+proto\r\n\
         x-call: web\r\ntraceparent: 00-{web_trace}-{CLIENT_SPAN}-01\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(&[0, 0, 0, 0, 0]);
    let resp = raw_exchange(proxy.addr("plain"), &req).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let spans = collector.wait(web_trace, 2).await;
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [format!("00-{web_trace}-{}-01", hex(&client.span_id))]
    );

    // Not sampled: passed on untouched, nothing recorded; no parent at
    // ratio 0: nothing added.
    seen.lock().unwrap().clear();
    let unsampled = format!("00-3af7651916cd43dd8448eb211c80319c-{CLIENT_SPAN}-00");
    call(&proxy, None, Some(&unsampled), "plain").await.unwrap();
    call(&proxy, None, None, "none").await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [unsampled.clone(), String::new()]);

    // Every access-log line names its trace (none for the untraced call).
    let until = Instant::now() + PATIENCE;
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 6 || Instant::now() > until {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ids: Vec<Option<String>> = lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.get("trace_id").map(|t| t.as_str().unwrap().to_string())
        })
        .collect();
    let want: Vec<Option<String>> = [TRACE, dead_trace, h1_trace, web_trace, &unsampled[3..35]]
        .into_iter()
        .map(|t| Some(t.to_string()))
        .chain([None])
        .collect();
    assert_eq!(ids, want);
    let exported = proxy
        .metric("torii_trace_spans_exported_total", &[])
        .unwrap();
    assert!(exported >= 9.0, "{exported}");
}

#[tokio::test]
async fn a_collector_that_is_down_costs_only_the_spans() {
    // An address where nothing listens.
    let (down, _refusing) = spawn_refusing().await;
    let echo = start_echo().await;
    let (h1, _h1) = spawn_http1_only().await;
    let proxy = start(
        &config(down, 1.0, echo.addr, h1, "off"),
        TempDir::new("tracing-down"),
    )
    .await;
    const CALLS: usize = 50;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let t = Instant::now();
    for _ in 0..CALLS {
        client.unary(EchoRequest::default()).await.unwrap();
    }
    assert!(t.elapsed() < PATIENCE);
    // Two spans each (SERVER, CLIENT), dropped when the export fails.
    let until = Instant::now() + PATIENCE;
    let dropped = loop {
        let d: f64 = ["export_failed", "queue_full"]
            .iter()
            .filter_map(|r| {
                proxy.metric(
                    "torii_trace_spans_dropped_total",
                    &[&format!("reason=\"{r}\"")],
                )
            })
            .sum();
        if d >= (2 * CALLS) as f64 || Instant::now() > until {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dropped, (2 * CALLS) as f64);
    assert_eq!(
        proxy.metric("torii_trace_spans_exported_total", &[]),
        Some(0.0)
    );
}

//! The tracer on requests' headers: what it records, what it forwards.

use super::*;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn finish() -> Finish {
    Finish {
        listener: Arc::from("edge"),
        grpc: None,
        route: Some(Arc::from("api")),
        cluster: Some(Arc::from("app")),
        upstream: Some("127.0.0.1:5001".parse().unwrap()),
        http_status: 200,
        grpc_status: None,
        error: None,
    }
}

#[test]
fn a_sampled_parent_is_continued_with_one_client_span_per_attempt() {
    let (tracer, queue) = Tracer::with_queue(0.0, Arc::new(Metrics::new()));
    let mut h = headers(&[("traceparent", PARENT), ("tracestate", "a=1,b=2")]);
    let mut t = tracer
        .begin(&mut h, &Method::GET)
        .expect("a sampled parent");
    assert!(t.recording());
    assert_eq!(
        std::str::from_utf8(&t.trace_id_hex()).unwrap(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let mut seen = Vec::new();
    for _ in 0..2 {
        t.attempt(&mut h);
        let sent = context::parse(h[&TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(sent.trace_id, t.trace_id);
        assert!(sent.sampled());
        seen.push(sent.span_id);
        if seen.len() == 1 {
            t.attempt_ended(AttemptEnd {
                retried: Some("unavailable"),
                ..Default::default()
            });
        }
    }
    assert_ne!(seen[0], seen[1], "each attempt its own span");
    // tracestate goes on untouched.
    assert_eq!(h[&TRACESTATE], "a=1,b=2");
    t.finish(finish());
    let f = queue.take().pop().unwrap();
    assert_eq!(f.spans(), 3);
    assert_eq!(
        f.parent,
        Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
    );
    assert_eq!(f.tracestate.as_deref(), Some("a=1,b=2"));
    let ids: Vec<_> = f.attempts.iter().map(|a| a.span_id).collect();
    assert_eq!(ids, seen);
    assert_eq!(f.attempts[0].retry, 0);
    assert_eq!(f.attempts[1].retry, 1);
    assert_eq!(f.attempts[1].how.endpoint, finish().upstream);
    let spans = decoded(&[f]);
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[2].name, "GET api");
    assert_eq!(spans[0].parent_span_id, spans[2].span_id);
}

/// What `otlp::request` wrote, read back with opentelemetry-proto's
/// generated types: the spans, after checking the resource and scope.
fn decoded(requests: &[Finished]) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let bytes = otlp::request("svc", requests).to_vec();
    let mut req = <ExportTraceServiceRequest as prost::Message>::decode(&bytes[..]).unwrap();
    assert_eq!(req.resource_spans.len(), 1);
    let mut rs = req.resource_spans.remove(0);
    let attrs = rs.resource.unwrap().attributes;
    assert_eq!(attrs.len(), 1);
    assert_eq!(attrs[0].key, "service.name");
    assert_eq!(rs.scope_spans.len(), 1);
    let ss = rs.scope_spans.remove(0);
    assert_eq!(ss.scope.unwrap().name, "torii");
    ss.spans
}

#[test]
fn the_otlp_written_by_hand_decodes_as_the_generated_types() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    let (tracer, queue) = Tracer::with_queue(1.0, Arc::new(Metrics::new()));
    let mut h = headers(&[("traceparent", PARENT), ("tracestate", "k=v")]);
    let mut t = tracer.begin(&mut h, &Method::POST).unwrap();
    t.attempt(&mut h);
    t.attempt_ended(AttemptEnd {
        endpoint: Some("[::1]:7000".parse().unwrap()),
        http_status: Some(200),
        grpc_status: Some(14),
        retried: Some("unavailable"),
        ..Default::default()
    });
    t.attempt(&mut h);
    let uri: http::Uri = "/pkg.Svc/Do".parse().unwrap();
    t.finish(Finish {
        grpc: GrpcName::new(&uri, uri.path()),
        grpc_status: Some(14),
        error: Some(ErrorCode::UpstreamConnectRefused),
        ..finish()
    });
    let spans = decoded(&queue.take());
    assert_eq!(spans.len(), 3);
    let attrs = |s: &opentelemetry_proto::tonic::trace::v1::Span| -> Vec<(String, String)> {
        s.attributes
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.clone()).unwrap() {
                    Value::StringValue(s) => s,
                    Value::IntValue(i) => i.to_string(),
                    other => panic!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    };
    let (first, server) = (&spans[0], &spans[2]);
    assert_eq!(server.name, "pkg.Svc/Do");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(first.kind, SpanKind::Client as i32);
    assert_eq!(
        server.trace_id,
        hex_bytes("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(server.parent_span_id, hex_bytes("00f067aa0ba902b7"));
    assert_eq!(server.trace_state, "k=v");
    assert_eq!(server.flags, 0x301);
    assert_eq!(first.flags, 0x101);
    assert_eq!(first.parent_span_id, server.span_id);
    assert!(
        server.start_time_unix_nano > 0 && server.end_time_unix_nano >= server.start_time_unix_nano
    );
    let s = server.status.as_ref().unwrap();
    assert_eq!(
        (s.code, s.message.as_str()),
        (StatusCode::Error as i32, "upstream_connect_refused")
    );
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        attrs(server),
        [
            kv("rpc.system", "grpc"),
            kv("rpc.service", "pkg.Svc"),
            kv("rpc.method", "Do"),
            kv("http.request.method", "POST"),
            kv("torii.route", "api"),
            kv("torii.cluster", "app"),
            kv("torii.listener", "edge"),
            kv("http.response.status_code", "200"),
            kv("rpc.grpc.status_code", "14"),
            kv("torii.error", "upstream_connect_refused"),
        ]
    );
    assert_eq!(
        attrs(first)[6..],
        [
            kv("torii.retry", "0"),
            kv("server.address", "::1"),
            kv("server.port", "7000"),
            kv("http.response.status_code", "200"),
            kv("rpc.grpc.status_code", "14"),
            kv("torii.retried", "unavailable"),
        ]
    );
    assert_eq!(
        first.status.as_ref().unwrap().message,
        "retried: unavailable"
    );
    let second = attrs(&spans[1]);
    assert!(second.contains(&kv("torii.retry", "1")), "{second:?}");
}

fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn an_unsampled_parent_passes_on_untouched() {
    let (tracer, queue) = Tracer::with_queue(1.0, Arc::new(Metrics::new()));
    let unsampled = PARENT.replace("-01", "-00");
    let mut h = headers(&[("traceparent", &unsampled)]);
    let mut t = tracer.begin(&mut h, &Method::GET).expect("logged");
    assert!(!t.recording());
    t.attempt(&mut h);
    assert_eq!(h[&TRACEPARENT], unsampled.as_str());
    t.finish(finish());
    assert!(queue.take().is_empty(), "nothing recorded");
}

#[test]
fn without_a_valid_parent_the_ratio_decides() {
    let metrics = Arc::new(Metrics::new());
    let (never, _rx) = Tracer::with_queue(0.0, metrics.clone());
    let mut h = headers(&[("traceparent", "00-bogus"), ("tracestate", "a=1")]);
    assert!(never.begin(&mut h, &Method::GET).is_none());
    assert_eq!(h[&TRACEPARENT], "00-bogus", "not sampled: left as it came");

    let (always, _rx) = Tracer::with_queue(1.0, metrics);
    let mut t = always.begin(&mut h, &Method::GET).expect("sampled");
    assert!(
        h.get(&TRACESTATE).is_none(),
        "the invalid parent's state goes"
    );
    t.attempt(&mut h);
    let sent = context::parse(h[&TRACEPARENT].as_bytes()).unwrap();
    assert_eq!(sent.trace_id, t.trace_id);
    // Two traceparent fields are invalid too.
    let mut two = headers(&[("traceparent", PARENT), ("traceparent", PARENT)]);
    let t = always.begin(&mut two, &Method::GET).unwrap();
    assert_ne!(&t.trace_id_hex()[..], b"4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn a_full_queue_drops_and_counts() {
    let metrics = Arc::new(Metrics::new());
    let (tracer, _rx) = Tracer::with_queue(1.0, metrics.clone());
    for _ in 0..QUEUE_REQUESTS + 10 {
        let mut h = HeaderMap::new();
        let mut t = tracer.begin(&mut h, &Method::GET).unwrap();
        t.attempt(&mut h);
        t.finish(finish());
    }
    let dropped = metrics
        .trace
        .dropped
        .get_or_create(&DropLabels {
            reason: "queue_full",
        })
        .get();
    assert_eq!(dropped, 20, "two spans each of the ten that did not fit");
}

/// The request path's tracing work, per request: at `sample_ratio: 0`
/// without a parent (the header looked for, nothing else), and sampled
/// (ids, the `traceparent` written, both spans built and queued; the
/// queue read on another thread as the exporter would). Then the export
/// task's part, off the request's thread: OTLP messages built and
/// encoded. Timing, so not run by default:
/// `cargo test --release --lib -- --ignored --nocapture tracing_cost`.
#[test]
#[ignore]
fn tracing_cost() {
    const N: u32 = 200_000;
    let metrics = Arc::new(Metrics::new());
    let base = headers(&[
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "grpc-go/1.60"),
        ("x-request-id", "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"),
    ]);
    let run = |ratio: f64| {
        let (tracer, queue) = Tracer::with_queue(ratio, metrics.clone());
        // The export task's part, on another thread: take what waits
        // every millisecond (it does so every 100 ms).
        let q = queue.clone();
        let drain = std::thread::spawn(move || loop {
            let closed = q.is_closed();
            drop(q.take());
            if closed {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        });
        let mut h = base.clone();
        let t0 = std::time::Instant::now();
        for _ in 0..N {
            if let Some(mut t) = tracer.begin(&mut h, &Method::POST) {
                t.attempt(&mut h);
                t.finish(finish());
            }
        }
        let per = t0.elapsed() / N;
        drop(tracer);
        drain.join().unwrap();
        per
    };
    let off = run(0.0);
    let on = run(1.0);
    let dropped = metrics
        .trace
        .dropped
        .get_or_create(&DropLabels {
            reason: "queue_full",
        })
        .get();
    // The export task's part, off the request's thread: a gRPC call's
    // spans made OTLP messages and encoded.
    const M: u32 = 2000;
    let (tracer, queue) = Tracer::with_queue(1.0, metrics.clone());
    let uri: http::Uri = "/torii.echo.v1.Echo/Unary".parse().unwrap();
    // The best of a few rounds: the first touches fresh memory.
    let (mut export, mut size) = (std::time::Duration::MAX, 0);
    for _ in 0..5 {
        for _ in 0..M {
            let mut h = base.clone();
            let mut t = tracer.begin(&mut h, &Method::POST).unwrap();
            t.attempt(&mut h);
            t.finish(Finish {
                grpc: GrpcName::new(&uri, uri.path()),
                grpc_status: Some(0),
                ..finish()
            });
        }
        let taken = queue.take();
        let t0 = std::time::Instant::now();
        let bytes = otlp::request("torii", &taken).to_vec();
        drop(taken);
        export = export.min(t0.elapsed() / M);
        size = bytes.len() / M as usize;
    }
    eprintln!("the export task per request: {export:?} ({size} bytes of OTLP each)");
    eprintln!(
        "tracing per request: sample_ratio 0 {off:?}, sampled {on:?} ({dropped} of {N} dropped)"
    );
    assert!(off < std::time::Duration::from_nanos(200), "{off:?}");
    assert!(on < std::time::Duration::from_micros(3), "{on:?}");
}

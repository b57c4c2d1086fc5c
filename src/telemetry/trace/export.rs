//! The export task: requests' spans from the bounded queue, in batches,
//! to the collector over OTLP/gRPC (`TraceService/Export`, h2c). A
//! failed export drops its batch (counted) and the task waits before the
//! next, doubling the wait up to [`MAX_BACKOFF`]; meanwhile the queue
//! fills and further spans are dropped as `queue_full`. Requests never
//! wait for any of this.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use tonic::transport::{Channel, Endpoint};

use super::{Attempt, Finished, Queue};
use crate::config::Tracing;
use crate::telemetry::Metrics;

/// Requests whose spans wait for export at most (each one SERVER span
/// and a CLIENT span per attempt): a second of 2,000 sampled requests.
pub const QUEUE_REQUESTS: usize = 2048;
/// A batch is sent when it holds this many spans...
pub const BATCH_SPANS: usize = 512;
/// ... or this long after its first request ended (at most a [`TICK`]
/// more).
pub const BATCH_DELAY: Duration = Duration::from_secs(1);
/// How often the task looks at the queue.
pub const TICK: Duration = Duration::from_millis(100);
/// The longest one export may take (connecting included).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub(super) fn spawn(
    config: &Tracing,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| format!("tracing.otlp.endpoint {}: {e}", config.endpoint))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(EXPORT_TIMEOUT);
    let channel = endpoint.connect_lazy();
    let resource = Resource {
        attributes: vec![kv_str("service.name", &config.service_name)],
        ..Default::default()
    };
    let exporter = Exporter {
        client: TraceServiceClient::new(channel),
        resource,
        metrics,
        endpoint: config.endpoint.clone(),
    };
    tokio::spawn(exporter.run(queue));
    Ok(())
}

struct Exporter {
    client: TraceServiceClient<Channel>,
    resource: Resource,
    metrics: Arc<Metrics>,
    endpoint: String,
}

impl Exporter {
    async fn run(mut self, queue: Arc<Queue>) {
        let mut backoff = MIN_BACKOFF;
        let mut failing = false;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut spans: Vec<Span> = Vec::new();
        // When the oldest span waiting was taken from the queue.
        let mut since = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let closed = queue.is_closed();
            let taken = queue.take();
            if spans.is_empty() && !taken.is_empty() {
                since = tokio::time::Instant::now();
            }
            for f in taken {
                convert(f, &mut spans);
            }
            let due = closed || since.elapsed() >= BATCH_DELAY || spans.len() >= BATCH_SPANS;
            while due && !spans.is_empty() {
                let batch: Vec<Span> = spans.drain(..spans.len().min(BATCH_SPANS)).collect();
                if self.send(batch, &mut failing).await.is_err() {
                    // What waits now is dropped too; the queue fills
                    // meanwhile and drops as `queue_full`.
                    let n = spans.len() as u64;
                    spans.clear();
                    self.metrics.trace.drop_spans("export_failed", n);
                    if !closed {
                        tokio::time::sleep(backoff).await;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                } else {
                    backoff = MIN_BACKOFF;
                }
            }
            if closed {
                return;
            }
        }
    }

    /// Exports one batch, counting its spans as exported or dropped.
    async fn send(&mut self, batch: Vec<Span>, failing: &mut bool) -> Result<(), ()> {
        let n = batch.len() as u64;
        match self.export(batch).await {
            Ok(rejected) => {
                let rejected = rejected.min(n);
                self.metrics.trace.exported.inc_by(n - rejected);
                if rejected > 0 {
                    self.metrics.trace.drop_spans("rejected", rejected);
                }
                if *failing {
                    tracing::info!(endpoint = %self.endpoint, "the OTLP collector takes spans again");
                }
                *failing = false;
                Ok(())
            }
            Err(status) => {
                self.metrics.trace.drop_spans("export_failed", n);
                if !*failing {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        error = %status.message(),
                        "cannot export spans to the OTLP collector; dropping them (torii_trace_spans_dropped_total) and trying again later"
                    );
                }
                *failing = true;
                Err(())
            }
        }
    }

    /// Sends one batch; Ok with the number of spans the collector rejected.
    async fn export(&mut self, spans: Vec<Span>) -> Result<u64, tonic::Status> {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "torii".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let resp = self.client.export(request).await?.into_inner();
        Ok(resp
            .partial_success
            .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0)))
    }
}

/// gRPC statuses that make a SERVER span an error (OpenTelemetry's gRPC
/// conventions): UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS. A CLIENT span is an error on any non-OK status.
const SERVER_ERRORS: [i32; 6] = [2, 4, 12, 13, 14, 15];

/// A request's spans in OTLP's form.
pub(super) fn convert(f: Finished, out: &mut Vec<Span>) {
    let grpc = f.finish.grpc.as_ref();
    let name = match (grpc, &f.finish.route) {
        (Some(g), _) => format!("{}/{}", g.service(), g.method()),
        (None, Some(route)) => format!("{} {route}", f.method),
        (None, None) => f.method.to_string(),
    };
    // What both kinds of span say.
    let mut common = Vec::with_capacity(8);
    if let Some(g) = grpc {
        common.push(kv_str("rpc.system", "grpc"));
        common.push(kv_str("rpc.service", g.service()));
        common.push(kv_str("rpc.method", g.method()));
    }
    common.push(kv_str("http.request.method", f.method.as_str()));
    if let Some(r) = &f.finish.route {
        common.push(kv_str("torii.route", r));
    }
    if let Some(c) = &f.finish.cluster {
        common.push(kv_str("torii.cluster", c));
    }
    let trace_id = f.trace_id.to_vec();
    for a in &f.attempts {
        out.push(client_span(a, &f, &trace_id, &name, &common));
    }
    let fin = &f.finish;
    let mut attributes = common;
    attributes.push(kv_str("torii.listener", &fin.listener));
    attributes.push(kv_int("http.response.status_code", fin.http_status.into()));
    if let Some(s) = fin.grpc_status {
        attributes.push(kv_int("rpc.grpc.status_code", s.into()));
    }
    if let Some(e) = fin.error {
        attributes.push(kv_str("torii.error", e.as_str()));
    }
    let failed = match (fin.error, fin.grpc_status) {
        (Some(e), _) => Some(e.as_str().to_string()),
        (None, Some(s)) => SERVER_ERRORS
            .contains(&s)
            .then(|| crate::grpc::status::code_name(s).to_string()),
        _ => (fin.http_status >= 500).then(|| format!("HTTP {}", fin.http_status)),
    };
    out.push(Span {
        trace_id,
        span_id: f.span_id.to_vec(),
        trace_state: f.tracestate.as_deref().unwrap_or_default().to_string(),
        parent_span_id: f.parent.map(|p| p.to_vec()).unwrap_or_default(),
        // Sampled; whether the parent is remote is known (bit 8), and it
        // is when there is one (bit 9).
        flags: 0x101 | u32::from(f.parent.is_some()) << 9,
        name,
        kind: SpanKind::Server as i32,
        start_time_unix_nano: f.start,
        end_time_unix_nano: f.end,
        attributes,
        status: Some(status(failed)),
        ..Default::default()
    });
}

fn client_span(
    a: &Attempt,
    f: &Finished,
    trace_id: &[u8],
    name: &str,
    common: &[KeyValue],
) -> Span {
    let how = &a.how;
    let mut attributes = common.to_vec();
    attributes.push(kv_int("torii.retry", a.retry.into()));
    if let Some(ep) = how.endpoint {
        attributes.push(kv_str("server.address", &ep.ip().to_string()));
        attributes.push(kv_int("server.port", ep.port().into()));
    }
    if let Some(s) = how.http_status {
        attributes.push(kv_int("http.response.status_code", s.into()));
    }
    if let Some(s) = how.grpc_status {
        attributes.push(kv_int("rpc.grpc.status_code", s.into()));
    }
    if let Some(e) = how.error {
        attributes.push(kv_str("torii.error", e.as_str()));
    }
    if let Some(why) = how.retried {
        attributes.push(kv_str("torii.retried", why));
    }
    let failed = if let Some(why) = how.retried {
        Some(format!("retried: {why}"))
    } else if let Some(e) = how.error {
        Some(e.as_str().to_string())
    } else if let Some(s) = how.grpc_status.filter(|s| *s != 0) {
        Some(crate::grpc::status::code_name(s).to_string())
    } else {
        how.http_status
            .filter(|s| *s >= 400)
            .map(|s| format!("HTTP {s}"))
    };
    Span {
        trace_id: trace_id.to_vec(),
        span_id: a.span_id.to_vec(),
        trace_state: f.tracestate.as_deref().unwrap_or_default().to_string(),
        parent_span_id: f.span_id.to_vec(),
        // Sampled; its parent (torii's SERVER span) is local.
        flags: 0x101,
        name: name.to_string(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: a.start,
        end_time_unix_nano: a.end,
        attributes,
        status: Some(status(failed)),
        ..Default::default()
    }
}

fn status(failed: Option<String>) -> Status {
    match failed {
        Some(message) => Status {
            message,
            code: StatusCode::Error as i32,
        },
        None => Status::default(),
    }
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

//! Tracing: W3C trace context in, spans out over OTLP/gRPC (`tracing:`).
//!
//! A request with a sampled `traceparent` (or, without one, sampled by
//! `sample_ratio`) gets one SERVER span, and one CLIENT span per attempt
//! upstream; each attempt's request carries a `traceparent` naming its
//! CLIENT span as the parent. The spans of one request are queued
//! together when it ends ([`RequestTrace::finish`]) into a bounded queue
//! that a batching task empties every [`TICK`] and exports ([`export`]);
//! a full queue drops, never waits, and a request never wakes the task
//! (a wake-up per request, a futex call, cost more than the rest of the
//! tracing work together). Without `tracing:` no [`Tracer`] exists and a request does no
//! tracing work: its `traceparent` passes through as the client sent it.

pub mod context;
mod export;
mod otlp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::config::Tracing;
use crate::error::ErrorCode;
use crate::grpc::GrpcName;
use crate::telemetry::Metrics;
use context::{Decision, Ratio, SpanId, TraceId, SAMPLED};

pub use export::{BATCH_DELAY, BATCH_SPANS, QUEUE_REQUESTS, TICK};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest `tracestate` a span keeps (the header itself passes on
/// untouched, whatever its length): W3C asks to propagate at least 512
/// characters.
pub const MAX_TRACESTATE: usize = 512;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `queue_full`, `export_failed` or `rejected` (the collector refused
    /// them).
    pub reason: &'static str,
}

/// `torii_trace_spans_exported_total`, `torii_trace_spans_dropped_total`.
pub struct TraceMetrics {
    pub exported: Counter,
    pub dropped: Family<DropLabels, Counter>,
}

impl TraceMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let exported = Counter::default();
        registry.register(
            "trace_spans_exported",
            "Spans the OTLP collector accepted",
            exported.clone(),
        );
        let dropped = Family::<DropLabels, Counter>::default();
        registry.register(
            "trace_spans_dropped",
            "Spans not exported (reason: queue_full, export_failed, rejected)",
            dropped.clone(),
        );
        TraceMetrics { exported, dropped }
    }

    fn drop_spans(&self, reason: &'static str, n: u64) {
        self.dropped.get_or_create(&DropLabels { reason }).inc_by(n);
    }
}

/// `tracing:` at work: the sampler and the export queue. Cheap to clone;
/// the exporting task ends once the last clone is gone (a reload that
/// changes `tracing:` starts a new one).
#[derive(Clone)]
pub struct Tracer(Arc<Inner>);

struct Inner {
    config: Tracing,
    ratio: Ratio,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last clone is gone: the task sends what is left and ends.
        self.queue.close();
    }
}

/// The requests whose spans wait for export: at most [`QUEUE_REQUESTS`].
/// A mutex held for a push or a swap, no more.
#[derive(Default)]
pub(crate) struct Queue {
    items: std::sync::Mutex<Vec<Finished>>,
    closed: std::sync::atomic::AtomicBool,
}

impl Queue {
    /// False when full (`f` is dropped).
    fn push(&self, f: Finished) -> bool {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if items.len() >= QUEUE_REQUESTS {
            return false;
        }
        items.push(f);
        true
    }

    /// Everything waiting, leaving the queue empty.
    fn take(&self) -> Vec<Finished> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *items)
    }

    fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Tracer {
    /// Starts exporting to `config`'s collector (a task on the current
    /// tokio runtime). Connecting is lazy: a collector that is down costs
    /// only the spans it does not get.
    pub fn start(config: &Tracing, metrics: Arc<Metrics>) -> Result<Tracer, String> {
        let queue = Arc::new(Queue::default());
        export::spawn(config, queue.clone(), metrics.clone())?;
        Ok(Tracer(Arc::new(Inner {
            config: config.clone(),
            ratio: Ratio::new(config.sample_ratio),
            queue,
            metrics,
        })))
    }

    /// A tracer whose queue the caller reads (tests, benchmarks).
    #[cfg(test)]
    fn with_queue(ratio: f64, metrics: Arc<Metrics>) -> (Tracer, Arc<Queue>) {
        let queue = Arc::new(Queue::default());
        let config = Tracing {
            endpoint: "http://127.0.0.1:1".into(),
            sample_ratio: ratio,
            service_name: "torii".into(),
        };
        let inner = Inner {
            config,
            ratio: Ratio::new(ratio),
            queue: queue.clone(),
            metrics,
        };
        (Tracer(Arc::new(inner)), queue)
    }

    pub fn config(&self) -> &Tracing {
        &self.0.config
    }

    /// The trace of a request arriving with `headers`: None when there is
    /// none (no sampled parent, and the ratio did not sample a new one).
    /// A trace restarted because the client's `traceparent` is invalid
    /// loses the client's `tracestate` too (W3C: it belongs to that
    /// parent).
    pub fn begin(&self, headers: &mut HeaderMap, method: &Method) -> Option<Box<RequestTrace>> {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        let (first, more) = (values.next(), values.next().is_some());
        // Several traceparent fields are invalid.
        let parent = first
            .filter(|_| !more)
            .and_then(|v| context::parse(v.as_bytes()));
        let decision = context::decide(parent, &self.0.ratio, new_trace_id);
        let (trace_id, parent) = match decision {
            Decision::None => return None,
            Decision::PassOn { trace_id } => {
                return Some(Box::new(RequestTrace {
                    trace_id,
                    rec: None,
                }))
            }
            Decision::Record { trace_id, parent } => (trace_id, parent),
        };
        let tracestate = match parent {
            Some(_) => tracestate(headers),
            None => {
                if first.is_some() {
                    headers.remove(&TRACESTATE);
                }
                None
            }
        };
        Some(Box::new(RequestTrace {
            trace_id,
            rec: Some(Recording {
                tracer: self.clone(),
                span_id: new_span_id(),
                parent,
                tracestate,
                start: now_nanos(),
                method: method.clone(),
                open: None,
                ended: Vec::new(),
                attempts: 0,
            }),
        }))
    }

    fn enqueue(&self, f: Finished) {
        let spans = f.spans();
        if !self.0.queue.push(f) {
            self.0.metrics.trace.drop_spans("queue_full", spans);
        }
    }
}

/// The client's `tracestate` for the span, when short enough to keep.
fn tracestate(headers: &HeaderMap) -> Option<Box<str>> {
    let mut out = String::new();
    for v in headers.get_all(&TRACESTATE) {
        let v = v.to_str().ok()?;
        if out.len() + v.len() + 1 > MAX_TRACESTATE {
            return None;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(v);
    }
    (!out.is_empty()).then(|| out.into_boxed_str())
}

thread_local! {
    /// Ids come from a small fast generator per thread, seeded from the
    /// operating system's randomness through rand's thread generator (as
    /// OpenTelemetry's SDKs do): ids must be unique and unguessable
    /// enough to not collide, not secret. ChaCha's refills were a fifth
    /// of a sampled request's own tracing work.
    static IDS: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::SeedableRng::from_rng(&mut rand::rng()));
}

fn random_id<const N: usize>() -> [u8; N] {
    IDS.with(|g| {
        let mut g = g.borrow_mut();
        loop {
            let id: [u8; N] = rand::Rng::random(&mut *g);
            if id != [0; N] {
                return id;
            }
        }
    })
}

fn new_trace_id() -> TraceId {
    random_id()
}

fn new_span_id() -> SpanId {
    random_id()
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One request's trace, kept in its outcome.
pub struct RequestTrace {
    pub trace_id: TraceId,
    /// None: the caller's trace is not sampled; torii records nothing and
    /// passes the `traceparent` on as it came.
    rec: Option<Recording>,
}

struct Recording {
    tracer: Tracer,
    /// torii's SERVER span.
    span_id: SpanId,
    parent: Option<SpanId>,
    tracestate: Option<Box<str>>,
    start: u64,
    method: Method,
    /// The attempt upstream under way (its CLIENT span).
    open: Option<Open>,
    /// Attempts that were retried.
    ended: Vec<Attempt>,
    attempts: u32,
}

struct Open {
    span_id: SpanId,
    start: u64,
    retry: u32,
}

/// How an attempt upstream ended, as far as its CLIENT span tells.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptEnd {
    pub endpoint: Option<SocketAddr>,
    pub http_status: Option<u16>,
    pub grpc_status: Option<i32>,
    pub error: Option<ErrorCode>,
    /// Why the retry policy tried again (`unavailable`, `reset`, ...).
    pub retried: Option<&'static str>,
}

/// One CLIENT span.
pub struct Attempt {
    span_id: SpanId,
    start: u64,
    end: u64,
    retry: u32,
    how: AttemptEnd,
}

/// What the request's end tells its spans (from its outcome).
pub struct Finish {
    pub listener: Arc<str>,
    pub grpc: Option<GrpcName>,
    pub route: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    pub upstream: Option<SocketAddr>,
    pub http_status: u16,
    pub grpc_status: Option<i32>,
    pub error: Option<ErrorCode>,
}

/// A request's spans, queued for export as one.
pub struct Finished {
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    tracestate: Option<Box<str>>,
    start: u64,
    end: u64,
    method: Method,
    finish: Finish,
    attempts: Vec<Attempt>,
}

impl Finished {
    fn spans(&self) -> u64 {
        1 + self.attempts.len() as u64
    }
}

impl RequestTrace {
    /// Whether torii records spans for this request.
    pub fn recording(&self) -> bool {
        self.rec.is_some()
    }

    /// The trace id as the access log writes it.
    pub fn trace_id_hex(&self) -> [u8; 32] {
        context::trace_id_hex(&self.trace_id)
    }

    /// An attempt upstream begins: a CLIENT span, named in the request's
    /// `traceparent` as the upstream's parent. Not recording: nothing
    /// changes.
    pub fn attempt(&mut self, headers: &mut HeaderMap) {
        let Some(rec) = self.rec.as_mut() else {
            return;
        };
        if rec.open.is_some() {
            // An attempt nobody ended (not expected): it ended now.
            rec.end_open(AttemptEnd::default());
        }
        let span_id = new_span_id();
        let value = context::format(&self.trace_id, &span_id, SAMPLED);
        if let Ok(v) = HeaderValue::from_bytes(&value) {
            headers.insert(TRACEPARENT, v);
        }
        rec.open = Some(Open {
            span_id,
            start: now_nanos(),
            retry: rec.attempts,
        });
        rec.attempts += 1;
    }

    /// The attempt under way ended and another follows (a retry, or the
    /// HTTP/1.1 resend of an `auto` cluster).
    pub fn attempt_ended(&mut self, how: AttemptEnd) {
        if let Some(rec) = self.rec.as_mut() {
            rec.end_open(how);
        }
    }

    /// The request ended: its SERVER span, and the CLIENT span of the
    /// attempt whose answer the client got, go to the export queue.
    pub fn finish(self, f: Finish) {
        let Some(mut rec) = self.rec else {
            return;
        };
        if rec.open.is_some() {
            let how = AttemptEnd {
                endpoint: f.upstream,
                // A status torii made (its error) is not the upstream's.
                http_status: f.error.is_none().then_some(f.http_status),
                grpc_status: f.grpc_status,
                error: f.error,
                retried: None,
            };
            rec.end_open(how);
        }
        let tracer = rec.tracer;
        tracer.enqueue(Finished {
            trace_id: self.trace_id,
            span_id: rec.span_id,
            parent: rec.parent,
            tracestate: rec.tracestate,
            start: rec.start,
            end: now_nanos(),
            method: rec.method,
            finish: f,
            attempts: rec.ended,
        });
    }
}

impl Recording {
    fn end_open(&mut self, how: AttemptEnd) {
        if let Some(o) = self.open.take() {
            self.ended.push(Attempt {
                span_id: o.span_id,
                start: o.start,
                end: now_nanos(),
                retry: o.retry,
                how,
            });
        }
    }
}

#[cfg(test)]
mod tests;

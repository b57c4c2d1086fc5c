//! What happened to one request, recorded once when it ends: the metrics
//! and the access log read the same facts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::body::grpc_web::InvalidSlot;
use crate::error::ErrorCode;
use crate::grpc::status::code_name;
use crate::grpc::GrpcName;
use crate::telemetry::access_log::{self, AccessLogger, Record};
use crate::telemetry::metrics::RequestKey;
use crate::telemetry::Metrics;

pub struct Outcome {
    pub metrics: Arc<Metrics>,
    pub listener: Arc<str>,
    pub cluster: Option<Arc<str>>,
    /// Service and method of a gRPC request.
    pub grpc: Option<GrpcName>,
    pub start: Instant,
    pub http_status: u16,
    pub grpc_status: Option<i32>,
    pub error: Option<ErrorCode>,
    pub upstream: Option<SocketAddr>,
    /// The request came as gRPC (also when its path names no method).
    pub grpc_request: bool,
    /// A route (or torii's own health service, or the original
    /// destination) took the request: its gRPC names are not just
    /// whatever a client sent to no avail.
    pub routed: bool,
    /// Why it failed, in words (access log only; set only when logging).
    pub message: Option<String>,
    pub bytes_out: u64,
    /// Request body bytes, counted as they stream (access log only).
    pub bytes_in: Option<Arc<AtomicU64>>,
    /// A JSON-transcoded unary call: the client's HTTP status is the one
    /// its gRPC status maps to (google/rpc/code.proto), not the upstream's.
    pub json_unary: bool,
    /// The access log record being filled in; None when the log is off.
    pub log: Option<Box<Record>>,
    /// What the client spoke: the `protocol` label.
    pub protocol: Protocol,
    /// A browser's request (gRPC-Web, CORS): what answering it needs.
    pub browser: Option<Box<Browser>>,
    logger: AccessLogger,
    recorded: bool,
}

impl Outcome {
    pub fn new(
        metrics: Arc<Metrics>,
        listener: Arc<str>,
        start: Instant,
        logger: &AccessLogger,
    ) -> Self {
        Outcome {
            metrics,
            listener,
            cluster: None,
            grpc: None,
            start,
            http_status: 0,
            grpc_status: None,
            error: None,
            upstream: None,
            grpc_request: false,
            routed: false,
            json_unary: false,
            message: None,
            bytes_out: 0,
            bytes_in: None,
            log: logger.enabled().then(Box::default),
            protocol: Protocol::Http1,
            browser: None,
            logger: logger.clone(),
            recorded: false,
        }
    }

    /// Records the request in the metrics and the access log. Called once;
    /// later calls do nothing.
    pub fn record(&mut self) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        if let (true, Some(code)) = (self.json_unary, self.grpc_status) {
            self.http_status = crate::transcode::response::http_status(code);
        }
        let elapsed = self.start.elapsed();
        let cluster = self.cluster.clone().unwrap_or_else(empty);
        let grpc_status = match (self.grpc_status, self.grpc.is_some()) {
            (Some(code), _) => code_name(code),
            (None, true) => "NONE",
            (None, false) => "",
        };
        // Label values clients choose are bounded (see metrics_names).
        let (service, method) = self.metrics_names();
        self.metrics.record_request(
            RequestKey {
                listener: &self.listener,
                cluster: &cluster,
                grpc_service: service,
                grpc_method: method,
                grpc_status,
                http_status: self.http_status,
                error: self.error.map(ErrorCode::as_str).unwrap_or(""),
                protocol: self.protocol.as_str(),
            },
            elapsed.as_secs_f64(),
        );
        if let Some(mut r) = self.log.take() {
            r.time = access_log::now();
            r.listener = self.listener.to_string();
            if let Some(g) = &self.grpc {
                r.grpc_service = Some(g.service().to_string());
                r.grpc_method = Some(g.method().to_string());
            }
            r.http_status = self.http_status;
            r.grpc_status = self.grpc_status;
            r.bytes_in = self
                .bytes_in
                .as_ref()
                .map_or(0, |b| b.load(Ordering::Relaxed));
            r.bytes_out = self.bytes_out;
            r.duration_ms = elapsed.as_secs_f64() * 1000.0;
            r.cluster = self.cluster.as_deref().map(str::to_string);
            r.upstream = self.upstream.map(|a| a.to_string());
            r.error = self.error.map(ErrorCode::as_str);
            r.error_message = self.message.take();
            self.logger.log(*r);
        }
    }

    /// The `grpc_service` and `grpc_method` labels: the request's names
    /// when a route took it and the method exists; `unrouted` when no
    /// route did (a scanner's every path would otherwise be a series);
    /// `unknown` when the answer was UNIMPLEMENTED (the names are not a
    /// real method). The metrics cap how many distinct names get series
    /// (past it: `other`).
    fn metrics_names(&self) -> (&str, &str) {
        let Some(g) = &self.grpc else {
            return ("", "");
        };
        if !self.routed {
            ("unrouted", "unrouted")
        } else if self.grpc_status == Some(12) {
            ("unknown", "unknown")
        } else {
            (g.service(), g.method())
        }
    }
}

/// What the client spoke, as the metrics' and access log's `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Grpc,
    GrpcWeb,
    GrpcWebText,
    /// HTTP/JSON, transcoded to a gRPC call.
    Json,
}

impl Protocol {
    /// gRPC, natively or as gRPC-Web.
    #[inline]
    pub fn is_grpc(self) -> bool {
        matches!(
            self,
            Protocol::Grpc | Protocol::GrpcWeb | Protocol::GrpcWebText
        )
    }

    /// For gRPC-Web: whether it came base64 (`-text`).
    #[inline]
    pub fn web_text(self) -> Option<bool> {
        match self {
            Protocol::GrpcWeb => Some(false),
            Protocol::GrpcWebText => Some(true),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::GrpcWebText => "grpc-web-text",
            Protocol::Json => "json",
        }
    }
}

/// A gRPC-Web call: how its answer is encoded, and where a malformed body
/// leaves its reason.
pub struct WebCall {
    /// Answer in base64 (`application/grpc-web-text`).
    pub text_out: bool,
    /// Where the request body leaves why it is malformed.
    pub invalid: InvalidSlot,
}

/// What answering a browser's request needs: its gRPC-Web shape, and the
/// CORS headers its origin gets.
#[derive(Default)]
pub struct Browser {
    pub web: Option<WebCall>,
    /// Added to every answer, torii's own and the upstream's.
    pub cors: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// What a request that ends without a response head was: the client
/// cancelled it (reset the stream, closed the connection) while torii or
/// the upstream worked on it.
pub const CLIENT_CLOSED: u16 = 499;

/// The empty label value, allocated once.
fn empty() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.recorded && self.http_status == 0 {
            // Every answer sets its status before the outcome is dropped;
            // none means the request's future was dropped first: the
            // client cancelled. Counted as nginx does (499) and, for gRPC,
            // as the CANCELLED the client itself reports.
            self.http_status = CLIENT_CLOSED;
            if self.grpc_request || self.grpc.is_some() {
                self.grpc_status = Some(crate::grpc::status::Code::Cancelled.as_i32());
            }
            if self.log.is_some() {
                self.message =
                    Some("the client cancelled the request before the response began".into());
            }
        }
        self.record();
    }
}

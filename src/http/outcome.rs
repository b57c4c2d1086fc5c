//! What happened to one request, recorded once when it ends: the metrics
//! and the access log read the same facts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

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
    pub bytes_out: u64,
    /// Request body bytes, counted as they stream (access log only).
    pub bytes_in: Option<Arc<AtomicU64>>,
    /// The access log record being filled in; None when the log is off.
    pub log: Option<Box<Record>>,
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
            bytes_out: 0,
            bytes_in: None,
            log: logger.enabled().then(Box::default),
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
        let elapsed = self.start.elapsed();
        let cluster = self.cluster.clone().unwrap_or_else(empty);
        let grpc_status = match (self.grpc_status, self.grpc.is_some()) {
            (Some(code), _) => code_name(code),
            (None, true) => "NONE",
            (None, false) => "",
        };
        let (service, method) = match &self.grpc {
            Some(g) => (g.service(), g.method()),
            None => ("", ""),
        };
        self.metrics.record_request(
            RequestKey {
                listener: &self.listener,
                cluster: &cluster,
                grpc_service: service,
                grpc_method: method,
                grpc_status,
                http_status: self.http_status,
                error: self.error.map(ErrorCode::as_str).unwrap_or(""),
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
            self.logger.log(*r);
        }
    }
}

/// The empty label value, allocated once.
fn empty() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.record();
    }
}

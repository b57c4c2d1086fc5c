//! What happened to one request, recorded once when it ends: the metrics
//! and (later) the access log read the same facts.

use std::sync::Arc;
use std::time::Instant;

use crate::error::ErrorCode;
use crate::grpc::status::code_name;
use crate::telemetry::metrics::{DurationLabels, RequestLabels};
use crate::telemetry::Metrics;

pub struct Outcome {
    pub metrics: Arc<Metrics>,
    pub listener: Arc<str>,
    pub cluster: Option<Arc<str>>,
    /// (service, method) of a gRPC request.
    pub grpc: Option<(String, String)>,
    pub start: Instant,
    pub http_status: u16,
    pub grpc_status: Option<i32>,
    pub error: Option<ErrorCode>,
    recorded: bool,
}

impl Outcome {
    pub fn new(metrics: Arc<Metrics>, listener: Arc<str>, start: Instant) -> Self {
        Outcome {
            metrics,
            listener,
            cluster: None,
            grpc: None,
            start,
            http_status: 0,
            grpc_status: None,
            error: None,
            recorded: false,
        }
    }

    /// Records the request in the metrics. Called once; later calls do nothing.
    pub fn record(&mut self) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let cluster = self.cluster.as_deref().unwrap_or("").to_string();
        let (service, method) = self.grpc.clone().unwrap_or_default();
        let grpc_status = match (self.grpc_status, self.grpc.is_some()) {
            (Some(code), _) => code_name(code).to_string(),
            (None, true) => "NONE".to_string(),
            (None, false) => String::new(),
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                listener: self.listener.to_string(),
                cluster: cluster.clone(),
                grpc_service: service,
                grpc_method: method,
                grpc_status,
                http_status: self.http_status.to_string(),
                error: self
                    .error
                    .map(|e| e.as_str().to_string())
                    .unwrap_or_default(),
            })
            .inc();
        self.metrics
            .request_duration
            .get_or_create(&DurationLabels {
                listener: self.listener.to_string(),
                cluster,
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.record();
    }
}

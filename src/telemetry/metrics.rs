//! The metrics registry. Names and labels are a public contract
//! (`shared/docs/interface.md`): users alert on them.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// Built once per request: shared and static values, so recording a
/// request allocates nothing when its label set has been seen before.
pub struct RequestLabels {
    pub listener: Arc<str>,
    pub cluster: Arc<str>,
    pub grpc_service: String,
    pub grpc_method: String,
    pub grpc_status: &'static str,
    pub http_status: u16,
    /// The `x-torii-error` code when torii failed the request, else empty.
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub listener: Arc<str>,
    pub cluster: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabels {
    pub listener: String,
    pub result: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectionLabels {
    pub listener: String,
    pub declared: String,
    pub detected: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub cluster: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub cluster: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone)]
pub struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        // 100 µs … ~105 s.
        Histogram::new(exponential_buckets(0.0001, 2.0, 21))
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<DurationLabels, Histogram, LatencyBuckets>,
    pub downstream_connections_active: Family<ListenerLabels, Gauge>,
    pub tls_handshakes: Family<TlsLabels, Counter>,
    pub protocol_detections: Family<DetectionLabels, Counter>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub endpoint_healthy: Family<EndpointLabels, Gauge>,
    pub endpoint_ejections: Family<EndpointLabels, Counter>,
    pub upstream_connect_duration: Family<ClusterLabels, Histogram, LatencyBuckets>,
    pub tls_handshake_duration: Family<ListenerLabels, Histogram, LatencyBuckets>,
    pub access_log_dropped: Counter,
    pub config_reloads: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("torii");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests handled, by outcome", requests.clone());
        let request_duration =
            Family::<DurationLabels, Histogram, LatencyBuckets>::new_with_constructor(
                LatencyBuckets,
            );
        registry.register(
            "request_duration_seconds",
            "Time from request headers to the end of the response",
            request_duration.clone(),
        );
        let downstream_connections_active = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "downstream_connections_active",
            "Client connections open now",
            downstream_connections_active.clone(),
        );
        let tls_handshakes = Family::<TlsLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on listeners, by result and failure reason",
            tls_handshakes.clone(),
        );
        let protocol_detections = Family::<DetectionLabels, Counter>::default();
        registry.register(
            "protocol_detections",
            "Connections classified by their first bytes",
            protocol_detections.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Failures talking to upstreams, by reason code",
            upstream_errors.clone(),
        );
        let endpoint_healthy = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_healthy",
            "1 when the endpoint receives traffic, 0 when it is held out",
            endpoint_healthy.clone(),
        );
        let endpoint_ejections = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "endpoint_ejections",
            "Times an endpoint was ejected after failing requests in a row",
            endpoint_ejections.clone(),
        );
        let upstream_connect_duration =
            Family::<ClusterLabels, Histogram, LatencyBuckets>::new_with_constructor(
                LatencyBuckets,
            );
        registry.register(
            "upstream_connect_duration_seconds",
            "Time to open a connection to an upstream (TCP, TLS and HTTP handshake)",
            upstream_connect_duration.clone(),
        );
        let tls_handshake_duration =
            Family::<ListenerLabels, Histogram, LatencyBuckets>::new_with_constructor(
                LatencyBuckets,
            );
        registry.register(
            "tls_handshake_duration_seconds",
            "Time to complete a TLS handshake with a client",
            tls_handshake_duration.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer could not keep up",
            access_log_dropped.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by result",
            config_reloads.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            downstream_connections_active,
            tls_handshakes,
            protocol_detections,
            upstream_errors,
            endpoint_healthy,
            endpoint_ejections,
            upstream_connect_duration,
            tls_handshake_duration,
            access_log_dropped,
            config_reloads,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn tls_handshake(&self, listener: &str, result: &str, reason: &str) {
        self.tls_handshakes
            .get_or_create(&TlsLabels {
                listener: listener.to_string(),
                result: result.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn upstream_error(&self, cluster: &str, reason: &str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                cluster: cluster.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }
}

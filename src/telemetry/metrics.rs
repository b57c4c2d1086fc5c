//! The metrics registry. Names and labels are a public contract
//! (docs/metrics.md): users alert on them.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// Built only for a label set a thread has not recorded lately (see
/// [`Metrics::record_request`]).
pub struct RequestLabels {
    pub listener: Arc<str>,
    pub cluster: Arc<str>,
    pub grpc_service: String,
    pub grpc_method: String,
    pub grpc_status: &'static str,
    pub http_status: u16,
    /// The `x-torii-error` code when torii failed the request, else empty.
    pub error: &'static str,
    /// What the client spoke: `grpc`, `grpc-web`, `grpc-web-text`, `json`
    /// (transcoded), `http1`, `http2`.
    pub protocol: &'static str,
}

/// A request's labels, borrowed: what [`Metrics::record_request`] takes.
pub struct RequestKey<'a> {
    pub listener: &'a Arc<str>,
    pub cluster: &'a Arc<str>,
    pub grpc_service: &'a str,
    pub grpc_method: &'a str,
    pub grpc_status: &'static str,
    pub http_status: u16,
    pub error: &'static str,
    pub protocol: &'static str,
}

impl RequestLabels {
    fn is(&self, k: &RequestKey<'_>) -> bool {
        self.http_status == k.http_status
            && self.grpc_status == k.grpc_status
            && self.error == k.error
            && self.protocol == k.protocol
            && self.grpc_method == k.grpc_method
            && self.grpc_service == k.grpc_service
            && *self.cluster == **k.cluster
            && *self.listener == **k.listener
    }
}

/// The metrics of a label set recorded lately on this thread.
struct Recent {
    metrics: u64,
    labels: RequestLabels,
    requests: Counter,
    duration: Histogram,
}

/// Label sets a thread recorded lately. A proxy sees the same few over and
/// over (one service, one method, OK); finding one here is a few compares,
/// where the registry's families hash the whole set (SipHash) under a lock
/// and need it owned.
const RECENT: usize = 16;

thread_local! {
    static RECENT_SETS: RefCell<(Vec<Recent>, usize)> = const { RefCell::new((Vec::new(), 0)) };
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
pub struct RouteLabels {
    pub listener: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

/// A certificate file torii uses: where (a listener or a cluster; the
/// other label is empty), as what, and which file.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub listener: String,
    pub cluster: String,
    /// `server` (a listener's certificate), `client_ca` (a listener's
    /// client_auth.ca), `ca` (a cluster's tls.ca), `client` (a cluster's
    /// client certificate).
    pub role: &'static str,
    pub file: String,
    /// The subject of the certificate that expires first in the file.
    pub subject: String,
}

/// `torii_auth_total`: one per request on a route with `auth:`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub listener: Arc<str>,
    /// `jwt`, `api_key`, `mtls`.
    pub method: &'static str,
    /// `allowed`, `unauthenticated`, `denied`.
    pub result: &'static str,
    /// `ok`, or which check failed (`expired`, `audience`, `no_rule`, …).
    pub reason: &'static str,
    /// `enforce`, or `audit` (a denial only counted and logged).
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// `torii_xds_updates_total`: an xDS response, by resource type
/// (`listener`, `route`, `cluster`, `endpoint`) and whether torii ACKed
/// or NACKed it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XdsLabels {
    pub r#type: &'static str,
    pub result: &'static str,
}

#[derive(Clone)]
pub struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        // 100 µs … ~105 s.
        Histogram::new(exponential_buckets(0.0001, 2.0, 21))
    }
}

/// Distinct (grpc_service, grpc_method) pairs that get series of their own;
/// past this, new pairs are counted as `other`. Routes and the upstream's
/// UNIMPLEMENTED already keep scanners out (see `Outcome`); this bounds a
/// catch-all route to a server that answers every name.
pub const MAX_GRPC_NAMES: usize = 1000;

pub struct Metrics {
    /// The gRPC name pairs that have series (at most MAX_GRPC_NAMES).
    grpc_names: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// Tells registries apart in the per-thread cache of label sets (tests
    /// run many in one process).
    id: u64,
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<DurationLabels, Histogram, LatencyBuckets>,
    pub downstream_connections_active: Family<ListenerLabels, Gauge>,
    pub tls_handshakes: Family<TlsLabels, Counter>,
    pub protocol_detections: Family<DetectionLabels, Counter>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub upstream_retries: Family<UpstreamErrorLabels, Counter>,
    pub endpoint_healthy: Family<EndpointLabels, Gauge>,
    pub endpoint_ejections: Family<EndpointLabels, Counter>,
    pub upstream_connect_duration: Family<ClusterLabels, Histogram, LatencyBuckets>,
    pub tls_handshake_duration: Family<ListenerLabels, Histogram, LatencyBuckets>,
    pub access_log_dropped: Counter,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    pub rate_limited: Family<RouteLabels, Counter>,
    pub resilience: super::resilience::ResilienceMetrics,
    pub trace: super::trace::TraceMetrics,
    pub auth: Family<AuthLabels, Counter>,
    pub xds_updates: Family<XdsLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        super::process::mark_start();
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
        let upstream_retries = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Requests sent again: because an upstream did not process them (reason: refused_stream, goaway, not_sent), or by a route's retry policy (reason: the gRPC status, connect_failure, reset, 5xx, gateway_error, per_try_timeout)",
            upstream_retries.clone(),
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
            "Times an endpoint was ejected: after failing requests in a row, or for a success rate far below its peers'",
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
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_seconds",
            "When the certificate in use that expires first in each file does (notAfter, Unix time in seconds); alert on torii_certificate_expiry_seconds - time() < 14 * 86400",
            certificate_expiry.clone(),
        );
        let rate_limited = Family::<RouteLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused because the route's rate limit (its token bucket) was empty",
            rate_limited.clone(),
        );
        let resilience = super::resilience::ResilienceMetrics::register(&mut registry);
        let trace = super::trace::TraceMetrics::register(&mut registry);
        let auth = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth",
            "Authentication and authorization decisions on routes with auth:, by credential method, result and reason",
            auth.clone(),
        );
        let xds_updates = Family::<XdsLabels, Counter>::default();
        registry.register(
            "xds_updates",
            "xDS responses, by resource type and whether torii ACKed or NACKed them",
            xds_updates.clone(),
        );
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Metrics {
            resilience,
            trace,
            grpc_names: Default::default(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            requests,
            request_duration,
            downstream_connections_active,
            tls_handshakes,
            protocol_detections,
            upstream_errors,
            upstream_retries,
            endpoint_healthy,
            endpoint_ejections,
            upstream_connect_duration,
            tls_handshake_duration,
            access_log_dropped,
            config_reloads,
            certificate_expiry,
            rate_limited,
            auth,
            xds_updates,
        }
    }

    /// Sets `torii_certificate_expiry_seconds` to the certificates of
    /// `config`, the one in effect (series of files no longer used go).
    pub fn set_certificates(&self, config: &crate::config::Config) {
        self.certificate_expiry.clear();
        let set = |listener: &str,
                   cluster: &str,
                   role,
                   file: &std::path::Path,
                   certs: &[rustls_pki_types::CertificateDer<'_>]| {
            let Some((not_after, subject)) = first_expiry(certs) else {
                return;
            };
            self.certificate_expiry
                .get_or_create(&CertificateLabels {
                    listener: listener.to_string(),
                    cluster: cluster.to_string(),
                    role,
                    file: file.display().to_string(),
                    subject,
                })
                .set(not_after);
        };
        for l in &config.listeners {
            let Some(tls) = &l.tls else { continue };
            for c in &tls.certificates {
                set(&l.name, "", "server", &c.cert_path, &c.chain);
            }
            if let Some(ca) = &tls.client_auth {
                set(&l.name, "", "client_ca", &ca.ca_path, &ca.roots);
            }
        }
        for c in &config.clusters {
            let Some(tls) = &c.tls else { continue };
            if let Some(path) = &tls.ca_path {
                set("", &c.name, "ca", path, &tls.roots);
            }
            if let (Some(path), Some((chain, _))) = (&tls.cert_path, &tls.client_cert) {
                set("", &c.name, "client", path, chain);
            }
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        // The process families go before OpenMetrics' closing "# EOF".
        let eof = out.rfind("# EOF").unwrap_or(out.len());
        let tail = out.split_off(eof);
        super::process::encode(&mut out);
        out.push_str(&tail);
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

    /// Counts a finished request in `torii_requests_total` and its time in
    /// `torii_request_duration_seconds`.
    pub fn record_request(&self, key: RequestKey<'_>, seconds: f64) {
        RECENT_SETS.with(|cell| {
            let (recent, next) = &mut *cell.borrow_mut();
            if let Some(r) = recent
                .iter()
                .find(|r| r.metrics == self.id && r.labels.is(&key))
            {
                r.requests.inc();
                r.duration.observe(seconds);
                return;
            }
            let labels = RequestLabels {
                listener: key.listener.clone(),
                cluster: key.cluster.clone(),
                grpc_service: key.grpc_service.to_string(),
                grpc_method: key.grpc_method.to_string(),
                grpc_status: key.grpc_status,
                http_status: key.http_status,
                error: key.error,
                protocol: key.protocol,
            };
            // The cache remembers the names as sent; the series may be `other`.
            let requests = if self.grpc_names_allowed(key.grpc_service, key.grpc_method) {
                self.requests.get_or_create(&labels).clone()
            } else {
                let other = RequestLabels {
                    grpc_service: "other".to_string(),
                    grpc_method: "other".to_string(),
                    ..labels.clone()
                };
                self.requests.get_or_create(&other).clone()
            };
            let duration = self
                .request_duration
                .get_or_create(&DurationLabels {
                    listener: key.listener.clone(),
                    cluster: key.cluster.clone(),
                })
                .clone();
            requests.inc();
            duration.observe(seconds);
            let entry = Recent {
                metrics: self.id,
                labels,
                requests,
                duration,
            };
            if recent.len() < RECENT {
                recent.push(entry);
            } else {
                recent[*next] = entry;
                *next = (*next + 1) % RECENT;
            }
        })
    }

    /// Whether these gRPC names get series of their own (see MAX_GRPC_NAMES).
    fn grpc_names_allowed(&self, service: &str, method: &str) -> bool {
        if service.is_empty() && method.is_empty() {
            return true;
        }
        let mut names = self.grpc_names.lock().unwrap_or_else(|p| p.into_inner());
        let key = (service.to_string(), method.to_string());
        if names.contains(&key) {
            return true;
        }
        if names.len() >= MAX_GRPC_NAMES {
            return false;
        }
        names.insert(key);
        true
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

/// The notAfter (Unix seconds) and subject of the certificate in `certs`
/// that expires first.
fn first_expiry(certs: &[rustls_pki_types::CertificateDer<'_>]) -> Option<(i64, String)> {
    certs
        .iter()
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
            Some((
                cert.validity().not_after.timestamp(),
                cert.subject().to_string(),
            ))
        })
        .min_by_key(|(t, _)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(m: &Metrics, method: &str, http_status: u16) {
        let (listener, cluster) = (Arc::from("l"), Arc::from("c"));
        m.record_request(
            RequestKey {
                listener: &listener,
                cluster: &cluster,
                grpc_service: "pkg.Echo",
                grpc_method: method,
                grpc_status: "OK",
                http_status,
                error: "",
                protocol: "grpc",
            },
            0.001,
        );
    }

    fn count(m: &Metrics, method: &str, http_status: u16) -> Option<String> {
        let series =
            format!("grpc_method=\"{method}\",grpc_status=\"OK\",http_status=\"{http_status}\"");
        m.encode()
            .lines()
            .find(|l| l.starts_with("torii_requests_total{") && l.contains(&series))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    }

    /// Past MAX_GRPC_NAMES distinct names, requests count as `other`.
    #[test]
    fn grpc_names_are_capped() {
        let m = Metrics::new();
        for i in 0..MAX_GRPC_NAMES + 5 {
            record(&m, &format!("M{i}"), 200);
        }
        record(&m, "M0", 200);
        assert_eq!(count(&m, "M0", 200).as_deref(), Some("2"));
        assert_eq!(count(&m, "other", 200).as_deref(), Some("5"));
        let series = m
            .encode()
            .lines()
            .filter(|l| l.starts_with("torii_requests_total{"))
            .count();
        assert_eq!(series, MAX_GRPC_NAMES + 1);
    }

    /// The per-thread cache of label sets must send every request to its
    /// own registry and series, however many sets and registries there are.
    #[test]
    fn recent_label_sets_reach_the_right_series() {
        let (a, b) = (Metrics::new(), Metrics::new());
        record(&a, "Unary", 200);
        record(&a, "Unary", 200);
        record(&b, "Unary", 200);
        record(&a, "Unary", 503);
        for i in 0..2 * RECENT {
            record(&a, &format!("M{i}"), 200);
        }
        record(&a, "Unary", 200);
        assert_eq!(count(&a, "Unary", 200).as_deref(), Some("3"));
        assert_eq!(count(&b, "Unary", 200).as_deref(), Some("1"));
        assert_eq!(count(&a, "Unary", 503).as_deref(), Some("1"));
        assert_eq!(count(&a, "M0", 200).as_deref(), Some("1"));
        assert_eq!(count(&b, "M0", 200), None);
        assert!(a
            .encode()
            .contains("torii_request_duration_seconds_count{listener=\"l\",cluster=\"c\"} 36"));
    }
}

//! Pitfalls seen at run time, logged once with the code `torii check` and
//! `torii lint` use for them.

use std::sync::OnceLock;

use super::connect::Wire;
use crate::telemetry::log_once::LogOnce;

/// The wire for a cluster with `protocol: http1`. The first gRPC request
/// that goes out over HTTP/1.1 anyway (a catch-all route, or a gRPC route
/// the check warned about) is logged once per cluster with the code
/// `grpc-upstream-http1`: the call will fail, and the log says why.
pub fn http1_wire(grpc_request: bool, cluster: &str) -> Wire {
    static SEEN: OnceLock<LogOnce> = OnceLock::new();
    if grpc_request && SEEN.get_or_init(LogOnce::default).first(cluster) {
        tracing::warn!(
                code = "grpc-upstream-http1",
                cluster,
                "warning[grpc-upstream-http1]: a gRPC request goes to cluster {cluster:?} over HTTP/1.1 because the cluster has protocol: http1; gRPC needs HTTP/2, so such calls fail. Remove protocol from the cluster (auto sends gRPC over HTTP/2) or set it to h2c (h2 with tls). Logged once per cluster."
            );
    }
    Wire::Http1
}

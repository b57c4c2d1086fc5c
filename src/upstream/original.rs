//! Upstreams that are not configured but found: the original destinations
//! of connections redirected to an original-destination listener. Each
//! destination address gets a one-endpoint cluster of its own (so HTTP/2
//! and HTTP/1.1 connections to it are pooled and reused like any other),
//! created on first use and dropped when the table is full and it is idle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::dns::Dns;
use super::ClusterRuntime;
use crate::config::{
    Cluster, EndpointAddr, Keepalive, LbPolicy, OutlierDetection, UpstreamProtocol,
    DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT, DEFAULT_MAX_STREAMS_PER_CONNECTION,
};
use crate::telemetry::Metrics;

/// The cluster name original destinations appear under in metrics and
/// messages (one label value, whatever the number of destinations).
pub const ORIGINAL_DESTINATION: &str = "original_destination";
/// Connect timeout to an original destination. Longer than a cluster's
/// default: the destination can be anywhere (across the internet), and
/// there is no other endpoint to fail over to, so waiting beats failing.
pub const ORIGINAL_DESTINATION_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Destinations remembered with their connection pools. Past this, idle
/// ones are forgotten (their pooled connections close).
const MAX_DESTINATIONS: usize = 1024;

pub struct OriginalDestinations {
    by_addr: Mutex<HashMap<SocketAddr, Arc<ClusterRuntime>>>,
    metrics: Arc<Metrics>,
}

impl OriginalDestinations {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        OriginalDestinations {
            by_addr: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The cluster for `addr`, created on first use.
    pub fn get(&self, addr: SocketAddr) -> Result<Arc<ClusterRuntime>, String> {
        let mut map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&addr) {
            return Ok(c.clone());
        }
        if map.len() >= MAX_DESTINATIONS {
            // Forget destinations nobody is using right now.
            map.retain(|_, c| Arc::strong_count(c) > 1);
        }
        let cluster = ClusterRuntime::new(
            Arc::new(cluster_for(addr)),
            &Dns::getaddrinfo(),
            self.metrics.clone(),
        )?;
        if map.len() < MAX_DESTINATIONS {
            map.insert(addr, cluster.clone());
        }
        Ok(cluster)
    }
}

/// A cluster of one IP endpoint, spoken to as `protocol: auto` does: gRPC
/// over HTTP/2 (h2c), other requests as the client spoke.
pub(super) fn cluster_for(addr: SocketAddr) -> Cluster {
    Cluster {
        name: ORIGINAL_DESTINATION.to_string(),
        endpoints: vec![EndpointAddr {
            host: addr.ip().to_string(),
            port: addr.port(),
            weight: 1,
        }],
        protocol: UpstreamProtocol::Auto,
        tls: None,
        lb: LbPolicy::RoundRobin,
        connect_timeout: ORIGINAL_DESTINATION_CONNECT_TIMEOUT,
        max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
        max_connections_per_endpoint: DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
        health_check: None,
        // One endpoint: ejecting it would change nothing (panic mode).
        outlier_detection: OutlierDetection {
            consecutive_failures: 0,
            success_rate_min_requests: 0,
            ..OutlierDetection::default()
        },
        http2_keepalive: Keepalive::default(),
        retry_budget: Default::default(),
        limits: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_cluster_per_destination() {
        let table = OriginalDestinations::new(Arc::new(Metrics::new()));
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "[fd00::1]:80".parse().unwrap();
        let ca = table.get(a).unwrap();
        assert!(Arc::ptr_eq(&ca, &table.get(a).unwrap()));
        let cb = table.get(b).unwrap();
        assert!(!Arc::ptr_eq(&ca, &cb));
        assert_eq!(cb.endpoints()[0].addr, b);
        assert_eq!(ca.config.name, ORIGINAL_DESTINATION);
    }

    #[tokio::test]
    async fn the_table_is_bounded() {
        let table = OriginalDestinations::new(Arc::new(Metrics::new()));
        let held = table.get("10.0.0.1:1".parse().unwrap()).unwrap();
        for port in 2..=(MAX_DESTINATIONS as u16 + 10) {
            table.get(SocketAddr::from(([10, 0, 0, 1], port))).unwrap();
        }
        let len = table.by_addr.lock().unwrap().len();
        assert!(len <= MAX_DESTINATIONS, "{len}");
        // The one in use survived the clean-up.
        assert!(Arc::ptr_eq(
            &held,
            &table.get("10.0.0.1:1".parse().unwrap()).unwrap()
        ));
    }
}

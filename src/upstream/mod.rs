//! Clusters, their endpoints, and sending a request to one of them.
//! Routing picks a cluster; the cluster picks a healthy endpoint and the
//! endpoint lends a connection.

pub mod budget;
pub mod connect;
pub mod dns;
pub mod failures;
pub mod h2client;
pub mod health;
pub mod limits;
pub mod original;
mod outlier;
pub mod pitfall;
pub use pitfall::http1_wire;
pub mod pool;
mod send;
pub use send::client_cancelled;
pub mod stream;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;

use crate::body::Body;
use crate::config::{Cluster, LbPolicy};
use crate::error::{ErrorCode, ProxyError};
use crate::telemetry::metrics::EndpointLabels;
use crate::telemetry::Metrics;
use connect::Connector;
pub use connect::Wire;
use dns::Dns;
use pool::{CountGuard, Endpoint};

/// At most this many endpoints are tried for one request when connecting
/// fails (the request has not been sent, so trying another is safe).
const MAX_CONNECT_ATTEMPTS: usize = 3;
pub struct ClusterRuntime {
    pub config: Arc<Cluster>,
    /// The cluster's name, shared (a metric label of every request).
    pub name: Arc<str>,
    pub metrics: Arc<Metrics>,
    connector: Arc<Connector>,
    /// True while no endpoint is available and traffic goes to all of them.
    in_panic: AtomicBool,
    /// Set when this `auto` cluster's upstream answered h2c with HTTP/1.1:
    /// its later non-gRPC requests use HTTP/1.1.
    pub h2_refused: AtomicBool,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Why the last DNS resolution failed, per name, for error messages.
    dns_errors: Mutex<HashMap<String, String>>,
    rr: AtomicUsize,
    /// True once every DNS name was looked up at least once.
    resolved: tokio::sync::watch::Sender<bool>,
    /// How many retries the cluster's retry policies may send.
    pub budget: budget::Budget,
}

/// What keeps an exchange's bookkeeping alive until its response body ends.
pub struct ExchangeGuard {
    _active: CountGuard,
    /// The endpoint and its cluster, to report how the exchange ended.
    pub ep: Arc<Endpoint>,
    pub cluster: Arc<ClusterRuntime>,
    _stream: Option<CountGuard>,
    /// HTTP/1.1: the connection goes back to `ep`'s pool once the body is read.
    h1: Option<(
        hyper::client::conn::http1::SendRequest<Body>,
        connect::FirstBytes,
    )>,
    /// Holds one of the cluster's `max_requests` places.
    admitted: bool,
}

impl ExchangeGuard {
    /// Call when the response body was read to its end.
    pub fn complete(&mut self) {
        if let Some((send, first)) = self.h1.take() {
            let waiters = self.cluster.connector.load.pending.load(Ordering::Relaxed) > 0;
            self.ep.release_h1(send, first, waiters);
        }
    }
}

impl Drop for ExchangeGuard {
    fn drop(&mut self) {
        if self.admitted {
            self.cluster
                .connector
                .load
                .requests
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ClusterRuntime {
    pub fn new(
        config: Arc<Cluster>,
        dns: &Dns,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let connector = Arc::new(Connector::new(&config, metrics.clone())?);
        let mut statics = Vec::new();
        let mut names = Vec::new();
        for ep in &config.endpoints {
            match ep.host.parse::<IpAddr>() {
                Ok(ip) => statics.push(Arc::new(Endpoint::new(
                    SocketAddr::new(ip, ep.port),
                    ep.host.clone(),
                    config.max_streams_per_connection,
                    config.max_connections_per_endpoint,
                ))),
                Err(_) => names.push((ep.host.clone(), ep.port)),
            }
        }
        let budget = budget::Budget::new(config.retry_budget);
        let rt = Arc::new(ClusterRuntime {
            name: Arc::from(config.name.as_str()),
            config,
            metrics,
            connector,
            in_panic: AtomicBool::new(false),
            h2_refused: AtomicBool::new(false),
            endpoints: ArcSwap::from_pointee(statics.clone()),
            dns_errors: Mutex::new(HashMap::new()),
            rr: AtomicUsize::new(0),
            resolved: tokio::sync::watch::Sender::new(names.is_empty()),
            budget,
        });
        for ep in &statics {
            rt.set_healthy_gauge(ep, true);
        }
        if !names.is_empty() {
            tokio::spawn(resolve_loop(
                Arc::downgrade(&rt),
                dns.clone(),
                statics,
                names,
            ));
        }
        if rt.config.health_check.is_some() {
            health::spawn(&rt);
        }
        if rt.config.outlier_detection.success_rate_min_requests > 0 {
            outlier::spawn(&rt);
        }
        Ok(rt)
    }

    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// Takes over the endpoints `old` also had (their pooled connections
    /// and passive health), for a cluster whose only change is its
    /// endpoint list (an xDS endpoint update, a file reload that adds an
    /// endpoint). Not for actively health-checked clusters, whose checks
    /// run on this runtime's own endpoints.
    pub fn adopt_endpoints(&self, old: &ClusterRuntime) {
        if self.config.health_check.is_some() {
            return;
        }
        let before = old.endpoints.load_full();
        let eps: Vec<Arc<Endpoint>> = self
            .endpoints
            .load_full()
            .iter()
            .map(|e| {
                before
                    .iter()
                    .find(|o| o.addr == e.addr && o.host == e.host)
                    .cloned()
                    .unwrap_or_else(|| e.clone())
            })
            .collect();
        self.endpoints.store(Arc::new(eps));
    }

    /// Waits until every DNS name has been looked up once (start-up, tests).
    pub async fn wait_resolved(&self, timeout: std::time::Duration) {
        let mut rx = self.resolved.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|done| *done)).await;
    }

    pub fn connector(&self) -> &Arc<Connector> {
        &self.connector
    }

    fn pick(&self, exclude: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let all = self.endpoints.load();
        // The common case, every endpoint in rotation and none excluded:
        // pick among them all without collecting candidates.
        if exclude.is_empty() && !all.is_empty() && all.iter().all(|e| e.available()) {
            self.panic_over();
            let i = self.choose(all.len(), |i| all[i].active.load(Ordering::Relaxed));
            return Some(all[i].clone());
        }
        let mut candidates: Vec<&Arc<Endpoint>> = all
            .iter()
            .filter(|e| e.available() && !exclude.contains(&e.addr))
            .collect();
        if candidates.is_empty() && exclude.is_empty() && !all.is_empty() {
            // Panic mode: when no endpoint is known healthy, try them all
            // rather than fail every request.
            if !self.in_panic.swap(true, Ordering::Relaxed) {
                tracing::warn!(cluster = %self.config.name, endpoints = all.len(), "no endpoint of the cluster is healthy: sending to all of them (panic mode) rather than failing every request");
            }
        } else if !candidates.is_empty() && exclude.is_empty() {
            self.panic_over();
        }
        if candidates.is_empty() {
            candidates = all.iter().filter(|e| !exclude.contains(&e.addr)).collect();
        }
        if candidates.is_empty() {
            return None;
        }
        let i = self.choose(candidates.len(), |i| {
            candidates[i].active.load(Ordering::Relaxed)
        });
        Some(candidates[i].clone())
    }

    /// Ends panic mode (logged once) when an endpoint is healthy again.
    fn panic_over(&self) {
        if self.in_panic.load(Ordering::Relaxed) && self.in_panic.swap(false, Ordering::Relaxed) {
            tracing::info!(cluster = %self.config.name, "an endpoint is healthy again: panic mode over");
        }
    }

    /// The index of the endpoint to use among `n` candidates, by the
    /// cluster's policy; `load(i)` is candidate i's active requests.
    fn choose(&self, n: usize, load: impl Fn(usize) -> usize) -> usize {
        match self.config.lb {
            LbPolicy::RoundRobin => self.rr.fetch_add(1, Ordering::Relaxed) % n,
            LbPolicy::Random => rand::random_range(0..n),
            LbPolicy::LeastRequest => {
                // Power of two choices: two random endpoints, the less busy wins.
                let a = rand::random_range(0..n);
                let b = rand::random_range(0..n);
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        }
    }

    fn no_endpoint_error(&self) -> ProxyError {
        let dns = self
            .dns_errors
            .lock()
            .map(|e| e.values().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        if !dns.is_empty() {
            ProxyError::new(
                ErrorCode::UpstreamDnsFailed,
                format!(
                    "cluster {} has no endpoints: {}",
                    self.config.name,
                    dns.join("; ")
                ),
            )
        } else {
            ProxyError::new(
                ErrorCode::NoHealthyUpstream,
                format!("cluster {} has no endpoints to send to", self.config.name),
            )
        }
    }

    /// Records how a request to `ep` went, for passive health (ejection).
    pub fn report(&self, ep: &Endpoint, ok: bool, why: &str) {
        let o = &self.config.outlier_detection;
        if o.success_rate_min_requests > 0 {
            ep.count_outcome(ok);
        }
        if ok {
            ep.record_success();
            return;
        }
        if ep.record_failure(o.consecutive_failures) {
            self.eject(
                ep,
                &format!("{} failures in a row (last: {why})", o.consecutive_failures),
            );
        }
    }

    pub fn endpoint_labels(&self, ep: &Endpoint) -> EndpointLabels {
        EndpointLabels {
            cluster: self.config.name.clone(),
            endpoint: ep.addr.to_string(),
        }
    }

    pub fn set_healthy_gauge(&self, ep: &Endpoint, healthy: bool) {
        self.metrics
            .endpoint_healthy
            .get_or_create(&self.endpoint_labels(ep))
            .set(i64::from(healthy));
    }
}

/// Keeps DNS-named endpoints fresh, re-resolving each name when its TTL runs
/// out. Endpoints whose address did not change keep their connections.
async fn resolve_loop(
    cluster: Weak<ClusterRuntime>,
    dns: Dns,
    statics: Vec<Arc<Endpoint>>,
    names: Vec<(String, u16)>,
) {
    let mut resolved: HashMap<(String, u16), Vec<SocketAddr>> = HashMap::new();
    loop {
        let mut next = crate::config::DNS_MAX_TTL;
        let mut errors = HashMap::new();
        for (host, port) in &names {
            match dns.resolve(host, *port).await {
                Ok((addrs, ttl)) => {
                    next = next.min(ttl);
                    resolved.insert((host.clone(), *port), addrs);
                }
                Err(e) => {
                    // Keep the last good answer; retry soon.
                    next = next.min(crate::config::DNS_MIN_TTL * 5);
                    errors.insert(host.clone(), e);
                }
            }
        }
        let Some(c) = cluster.upgrade() else { return };
        let old = c.endpoints.load_full();
        let mut eps = statics.clone();
        for ((host, _), addrs) in &resolved {
            for addr in addrs {
                let kept = old
                    .iter()
                    .find(|e| e.addr == *addr && &e.host == host)
                    .cloned();
                eps.push(kept.unwrap_or_else(|| {
                    let ep = Arc::new(Endpoint::new(
                        *addr,
                        host.clone(),
                        c.config.max_streams_per_connection,
                        c.config.max_connections_per_endpoint,
                    ));
                    c.set_healthy_gauge(&ep, true);
                    ep
                }));
            }
        }
        eps.sort_by_key(|e| e.addr);
        eps.dedup_by_key(|e| e.addr);
        c.endpoints.store(Arc::new(eps));
        if let Ok(mut e) = c.dns_errors.lock() {
            *e = errors;
        }
        c.resolved.send_replace(true);
        drop(c);
        tokio::time::sleep(next).await;
    }
}

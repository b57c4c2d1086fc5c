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
pub mod send;
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
    /// True when some endpoint's weight is not 1: the weighted choices
    /// (all weights 1 keep the plain, lock-free ones).
    weighted: bool,
    /// Held while weighted round robin updates the endpoints' scores.
    wrr: Mutex<()>,
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
                    ep.weight,
                    config.max_streams_per_connection,
                    config.max_connections_per_endpoint,
                ))),
                Err(_) => names.push((ep.host.clone(), ep.port, ep.weight)),
            }
        }
        let budget = budget::Budget::new(config.retry_budget);
        let weighted = config.endpoints.iter().any(|e| e.weight != 1);
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
            weighted,
            wrr: Mutex::new(()),
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
                    .find(|o| o.addr == e.addr && o.host == e.host && o.weight == e.weight)
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
            let i = if self.weighted {
                self.choose_weighted(&all)
            } else {
                self.choose(all.len(), |i| all[i].active.load(Ordering::Relaxed))
            };
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
        let i = if self.weighted {
            self.choose_weighted(&candidates)
        } else {
            self.choose(candidates.len(), |i| {
                candidates[i].active.load(Ordering::Relaxed)
            })
        };
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

    /// `choose` for endpoints of different weights: smooth weighted round
    /// robin (each pick adds every candidate's weight to its score, takes
    /// the highest and subtracts the total from it: exact proportions,
    /// interleaved), weighted random, or the less busy of two random
    /// candidates by requests in flight per unit of weight.
    fn choose_weighted<E: AsRef<Endpoint>>(&self, candidates: &[E]) -> usize {
        let weight = |i: usize| i64::from(candidates[i].as_ref().weight);
        match self.config.lb {
            LbPolicy::RoundRobin => {
                let _turn = self.wrr.lock().unwrap_or_else(|p| p.into_inner());
                let (mut best, mut best_score, mut total) = (0, i64::MIN, 0);
                for (i, e) in candidates.iter().enumerate() {
                    let e = e.as_ref();
                    let score = e.wrr_current.load(Ordering::Relaxed) + weight(i);
                    e.wrr_current.store(score, Ordering::Relaxed);
                    total += weight(i);
                    if score > best_score {
                        (best, best_score) = (i, score);
                    }
                }
                candidates[best]
                    .as_ref()
                    .wrr_current
                    .fetch_sub(total, Ordering::Relaxed);
                best
            }
            LbPolicy::Random => {
                let total: i64 = (0..candidates.len()).map(weight).sum();
                let mut r = rand::random_range(0..total.max(1));
                for i in 0..candidates.len() {
                    r -= weight(i);
                    if r < 0 {
                        return i;
                    }
                }
                candidates.len() - 1
            }
            LbPolicy::LeastRequest => {
                let n = candidates.len();
                let (a, b) = (rand::random_range(0..n), rand::random_range(0..n));
                // (requests + 1) / weight, compared without dividing; the
                // +1 lets weight decide between idle endpoints.
                let busy =
                    |i: usize| candidates[i].as_ref().active.load(Ordering::Relaxed) as i64 + 1;
                if busy(b) * weight(a) < busy(a) * weight(b) {
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
    names: Vec<(String, u16, u32)>,
) {
    let mut resolved: HashMap<(String, u16, u32), Vec<SocketAddr>> = HashMap::new();
    loop {
        let mut next = crate::config::DNS_MAX_TTL;
        let mut errors = HashMap::new();
        for (host, port, weight) in &names {
            match dns.resolve(host, *port).await {
                Ok((addrs, ttl)) => {
                    next = next.min(ttl);
                    resolved.insert((host.clone(), *port, *weight), addrs);
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
        for ((host, _, weight), addrs) in &resolved {
            for addr in addrs {
                let kept = old
                    .iter()
                    .find(|e| e.addr == *addr && &e.host == host && e.weight == *weight)
                    .cloned();
                eps.push(kept.unwrap_or_else(|| {
                    let ep = Arc::new(Endpoint::new(
                        *addr,
                        host.clone(),
                        *weight,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointAddr;

    /// A cluster of endpoints 10.0.0.1:80, 10.0.0.2:80, … of `weights`.
    fn cluster(lb: LbPolicy, weights: &[u32]) -> Arc<ClusterRuntime> {
        let mut config = original::cluster_for("10.0.0.1:80".parse().unwrap());
        config.lb = lb;
        config.endpoints = (1..)
            .zip(weights)
            .map(|(i, &weight)| EndpointAddr {
                host: format!("10.0.0.{i}"),
                port: 80,
                weight,
            })
            .collect();
        ClusterRuntime::new(Arc::new(config), &Dns::system(), Arc::new(Metrics::new())).unwrap()
    }

    /// Picks `n` times (excluding `exclude`); how many each endpoint got.
    fn picks(c: &ClusterRuntime, n: usize, exclude: &[SocketAddr]) -> Vec<usize> {
        let all = c.endpoints();
        let mut counts = vec![0; all.len()];
        for _ in 0..n {
            let ep = c.pick(exclude).unwrap();
            counts[all.iter().position(|e| e.addr == ep.addr).unwrap()] += 1;
        }
        counts
    }

    #[tokio::test]
    async fn equal_weights_keep_the_unweighted_choice() {
        let c = cluster(LbPolicy::RoundRobin, &[1, 1, 1]);
        assert!(!c.weighted);
        assert_eq!(picks(&c, 300, &[]), vec![100, 100, 100]);
    }

    #[tokio::test]
    async fn weighted_round_robin_is_exact_and_interleaved() {
        let c = cluster(LbPolicy::RoundRobin, &[3, 1, 1]);
        assert!(c.weighted);
        // Every run of 5 picks (the weights' sum) holds each endpoint
        // exactly its weight's times: 3 + 1 + 1, never a burst of one.
        for _ in 0..100 {
            assert_eq!(picks(&c, 5, &[]), vec![3, 1, 1]);
        }
        let order: Vec<_> = (0..5).map(|_| c.pick(&[]).unwrap().addr.ip()).collect();
        assert!(
            order.windows(3).all(|w| w[0] != w[1] || w[1] != w[2]),
            "{order:?}"
        );
        // An excluded endpoint leaves the others in their proportions.
        let a = c.endpoints()[0].addr;
        let rest = picks(&c, 200, &[a]);
        assert_eq!(rest, vec![0, 100, 100]);
    }

    #[tokio::test]
    async fn weighted_random_follows_the_weights() {
        let c = cluster(LbPolicy::Random, &[3, 1]);
        let counts = picks(&c, 4000, &[]);
        let share = counts[0] as f64 / 4000.0;
        assert!((0.70..0.80).contains(&share), "{counts:?}");
    }

    #[tokio::test]
    async fn weighted_least_request_divides_requests_by_weight() {
        let c = cluster(LbPolicy::LeastRequest, &[2, 1]);
        // Idle: the heavier wins whenever both are drawn (3 in 4).
        let counts = picks(&c, 4000, &[]);
        let share = counts[0] as f64 / 4000.0;
        assert!((0.70..0.80).contains(&share), "{counts:?}");
        // 4 requests at weight 2 is busier than 1 at weight 1: (4+1)/2 > (1+1)/1.
        let all = c.endpoints();
        all[0].active.store(4, Ordering::Relaxed);
        all[1].active.store(1, Ordering::Relaxed);
        let counts = picks(&c, 4000, &[]);
        let share = counts[1] as f64 / 4000.0;
        assert!((0.70..0.80).contains(&share), "{counts:?}");
    }
}

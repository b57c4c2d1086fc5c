//! Clusters, their endpoints, and sending a request to one of them.
//! Routing picks a cluster; the cluster picks a healthy endpoint and the
//! endpoint lends a connection.

pub mod connect;
pub mod dns;
pub mod original;
pub mod pool;
pub mod stream;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::config::{Cluster, LbPolicy};
use crate::error::{ErrorCode, ProxyError};
use crate::http::body::Body;
use connect::Connector;
pub use connect::Wire;
use dns::Dns;
use pool::{CountGuard, Endpoint, Lease};

/// At most this many endpoints are tried for one request when connecting
/// fails (the request has not been sent, so trying another is safe).
const MAX_CONNECT_ATTEMPTS: usize = 3;

pub struct ClusterRuntime {
    pub config: Arc<Cluster>,
    connector: Connector,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Why the last DNS resolution failed, per name, for error messages.
    dns_errors: Mutex<HashMap<String, String>>,
    rr: AtomicUsize,
    /// True once every DNS name was looked up at least once.
    resolved: tokio::sync::watch::Sender<bool>,
}

/// What keeps an exchange's bookkeeping alive until its response body ends.
pub struct ExchangeGuard {
    _active: CountGuard,
    _stream: Option<CountGuard>,
    /// HTTP/1.1: the connection goes back to the pool once the body is read.
    h1: Option<(Arc<Endpoint>, hyper::client::conn::http1::SendRequest<Body>)>,
    pub endpoint: SocketAddr,
    pub wire: Wire,
    /// Where the h2 connection's first bytes are kept, to explain failures.
    pub first: Option<connect::FirstBytes>,
}

impl ExchangeGuard {
    /// Call when the response body was read to its end.
    pub fn complete(&mut self) {
        if let Some((ep, send)) = self.h1.take() {
            ep.release_h1(send);
        }
    }
}

impl ClusterRuntime {
    pub fn new(config: Arc<Cluster>, dns: &Dns) -> Result<Arc<Self>, String> {
        let connector = Connector::new(&config)?;
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
        let rt = Arc::new(ClusterRuntime {
            config,
            connector,
            endpoints: ArcSwap::from_pointee(statics.clone()),
            dns_errors: Mutex::new(HashMap::new()),
            rr: AtomicUsize::new(0),
            resolved: tokio::sync::watch::Sender::new(names.is_empty()),
        });
        if !names.is_empty() {
            tokio::spawn(resolve_loop(
                Arc::downgrade(&rt),
                dns.clone(),
                statics,
                names,
            ));
        }
        Ok(rt)
    }

    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// Waits until every DNS name has been looked up once (start-up, tests).
    pub async fn wait_resolved(&self, timeout: std::time::Duration) {
        let mut rx = self.resolved.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|done| *done)).await;
    }

    fn pick(&self, exclude: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let all = self.endpoints.load();
        let mut candidates: Vec<&Arc<Endpoint>> = all
            .iter()
            .filter(|e| e.healthy.load(Ordering::Relaxed) && !exclude.contains(&e.addr))
            .collect();
        if candidates.is_empty() {
            // Panic mode: when no endpoint is known healthy, try them all
            // rather than fail every request.
            candidates = all.iter().filter(|e| !exclude.contains(&e.addr)).collect();
        }
        if candidates.is_empty() {
            return None;
        }
        let n = candidates.len();
        let i = match self.config.lb {
            LbPolicy::RoundRobin => self.rr.fetch_add(1, Ordering::Relaxed) % n,
            LbPolicy::Random => rand::random_range(0..n),
            LbPolicy::LeastRequest => {
                // Power of two choices: two random endpoints, the less busy wins.
                let a = rand::random_range(0..n);
                let b = rand::random_range(0..n);
                let load = |i: usize| candidates[i].active.load(Ordering::Relaxed);
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        };
        Some(candidates[i].clone())
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

    /// Sends `req` to an endpoint, trying others when connecting fails.
    /// Returns the response head with a guard that must live as long as the
    /// response body.
    pub async fn send(
        &self,
        mut req: Request<Body>,
        wire: Wire,
    ) -> Result<(Response<Incoming>, ExchangeGuard), ProxyError> {
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last_err = None;
        let attempts = MAX_CONNECT_ATTEMPTS.min(self.endpoints.load().len().max(1));
        // Stale pooled connections give the request back unsent: those retries
        // do not count as attempts, but are bounded too.
        let mut stale_retries = 4;
        while tried.len() < attempts {
            let Some(ep) = self.pick(&tried) else { break };
            let active = CountGuard::new(&ep.active);
            let lease = match ep.lease(&self.connector, wire).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(cluster = %self.config.name, endpoint = %ep.addr, error = %e, "connect failed; trying another endpoint");
                    tried.push(ep.addr);
                    last_err = Some(e);
                    continue;
                }
            };
            match lease {
                Lease::H2 {
                    mut send,
                    first,
                    guard,
                } => match send.try_send_request(req).await {
                    Ok(resp) => {
                        return Ok((
                            resp,
                            ExchangeGuard {
                                _active: active,
                                _stream: Some(guard),
                                h1: None,
                                endpoint: ep.addr,
                                wire,
                                first: Some(first),
                            },
                        ))
                    }
                    Err(mut e) => match e.take_message() {
                        Some(back) if stale_retries > 0 => {
                            stale_retries -= 1;
                            req = back;
                            continue;
                        }
                        _ => {
                            return Err(connect::explain_h2_failure(
                                e.error(),
                                &first,
                                ep.addr,
                                &self.config.name,
                            ))
                        }
                    },
                },
                Lease::H1(mut send) => match send.try_send_request(req).await {
                    Ok(resp) => {
                        return Ok((
                            resp,
                            ExchangeGuard {
                                _active: active,
                                _stream: None,
                                h1: Some((ep.clone(), send)),
                                endpoint: ep.addr,
                                wire,
                                first: None,
                            },
                        ))
                    }
                    Err(mut e) => match e.take_message() {
                        Some(back) if stale_retries > 0 => {
                            stale_retries -= 1;
                            req = back;
                            continue;
                        }
                        _ => {
                            return Err(connect::reset_error(
                                e.error(),
                                ep.addr,
                                &self.config.name,
                                false,
                            ))
                        }
                    },
                },
            }
        }
        Err(last_err.unwrap_or_else(|| self.no_endpoint_error()))
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
                    Arc::new(Endpoint::new(
                        *addr,
                        host.clone(),
                        c.config.max_streams_per_connection,
                        c.config.max_connections_per_endpoint,
                    ))
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

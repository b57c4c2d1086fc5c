//! One endpoint and the connections torii keeps to it: a few HTTP/2
//! connections shared by many streams (more are opened when streams pile
//! up), and a keep-alive pool of HTTP/1.1 connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use hyper::client::conn::http1;

use super::connect::{Connected, Connector, FirstBytes, Wire};
use super::h2client::H2Client;
use crate::body::Body;
use crate::error::{ErrorCode, ProxyError};

pub struct Endpoint {
    pub addr: SocketAddr,
    /// The name the endpoint came from (DNS name or IP), for SNI and messages.
    pub host: String,
    /// Its share of the cluster's traffic relative to the others' (1: even).
    pub weight: u32,
    /// Weighted round robin's running score (smooth weighted round robin),
    /// updated under the cluster's lock.
    pub(super) wrr_current: AtomicI64,
    /// Requests in flight, for least_request balancing.
    pub active: Arc<AtomicUsize>,
    /// The active health check's verdict (true until a check says otherwise).
    pub active_ok: AtomicBool,
    /// Passive health: ejected until this many ms after [`epoch`]; 0 = not.
    ejected_until_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// Requests since the last success-rate look: the total in the low
    /// 32 bits, the successful ones in the high 32 (one add per request).
    outcomes: AtomicU64,
    h2: Arc<Mutex<Vec<H2Conn>>>,
    /// The HTTP/2 connect under way, if any: every request that needs a
    /// new connection meanwhile waits for this one's outcome.
    h2_connecting: Arc<Mutex<Option<Attempt>>>,
    h1_idle: Mutex<Vec<(http1::SendRequest<Body>, FirstBytes)>>,
    max_streams: usize,
    max_conns: usize,
}

/// A connect shared by the requests waiting for it.
type Attempt = Shared<BoxFuture<'static, Result<H2Conn, ProxyError>>>;

/// New connections a request may wait for before it queues on a full one.
const CONNECTS_PER_LEASE: usize = 3;

#[derive(Clone)]
struct H2Conn {
    send: H2Client,
    streams: Arc<AtomicUsize>,
    first: FirstBytes,
}

/// A connection ready for one request.
pub enum Lease {
    /// With the first bytes the upstream sent on it, to explain failures.
    H1(http1::SendRequest<Body>, FirstBytes),
    H2 {
        send: H2Client,
        first: FirstBytes,
        guard: CountGuard,
    },
}

/// Decrements a counter when dropped: held for the whole life of a stream.
pub struct CountGuard(Arc<AtomicUsize>);

impl CountGuard {
    pub fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        CountGuard(counter.clone())
    }
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Endpoint {
    pub fn new(
        addr: SocketAddr,
        host: String,
        weight: u32,
        max_streams: usize,
        max_conns: usize,
    ) -> Self {
        Endpoint {
            addr,
            host,
            weight,
            wrr_current: AtomicI64::new(0),
            active: Arc::new(AtomicUsize::new(0)),
            active_ok: AtomicBool::new(true),
            ejected_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            outcomes: AtomicU64::new(0),
            h2: Arc::new(Mutex::new(Vec::new())),
            h2_connecting: Arc::new(Mutex::new(None)),
            h1_idle: Mutex::new(Vec::new()),
            max_streams,
            max_conns,
        }
    }

    /// Whether new requests may go here: the active check passes and the
    /// endpoint is not ejected. An ejection whose time is up ends here.
    pub fn available(&self) -> bool {
        if !self.active_ok.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if now_ms() >= until {
            // Back in rotation; the next failure streak starts from zero.
            let _ = self.ejected_until_ms.compare_exchange(
                until,
                0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return true;
        }
        false
    }

    /// Ejected (passive health) right now, and for how much longer.
    pub fn ejected_for(&self) -> Option<Duration> {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failed request; true when this failure completes a streak
    /// of `threshold` (0 = never) and the endpoint is not ejected already.
    pub fn record_failure(&self, threshold: u32) -> bool {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if threshold == 0 || n < threshold || self.ejected_for().is_some() {
            return false;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        true
    }

    /// Counts a request's outcome for success-rate ejection.
    #[inline]
    pub fn count_outcome(&self, ok: bool) {
        self.outcomes
            .fetch_add(1 | (u64::from(ok) << 32), Ordering::Relaxed);
    }

    /// The requests and successes since the last call.
    pub fn take_outcomes(&self) -> (u64, u64) {
        let v = self.outcomes.swap(0, Ordering::Relaxed);
        (v & 0xffff_ffff, v >> 32)
    }

    /// Ejects the endpoint, longer each time; returns for how long.
    pub fn eject(&self, base: Duration, max: Duration) -> Duration {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let times = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        // Longer each time it happens again, up to the maximum.
        let time = base.saturating_mul(times).min(max);
        self.ejected_until_ms
            .store(now_ms() + time.as_millis() as u64, Ordering::Relaxed);
        time
    }

    pub async fn lease(&self, connector: &Arc<Connector>, wire: Wire) -> Result<Lease, ProxyError> {
        match wire {
            Wire::Http2 => self.lease_h2(connector).await,
            Wire::Http1 => self.lease_h1(connector).await,
        }
    }

    /// Picks the least busy open connection with room, if any; at
    /// max_connections_per_endpoint, also one past max_streams (the
    /// threshold for spreading streams), but not one the upstream's own
    /// stream limit fills: then another connection is opened (up to the
    /// cluster's max_connections) rather than queueing streams that may
    /// never get a slot — long-lived streams (watches, subscriptions)
    /// would otherwise wait for good behind 8 × the upstream's limit. An
    /// upstream that allows no streams at all (0) is waited for.
    fn pick_h2(&self) -> Option<Lease> {
        let mut conns = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| !c.send.is_closed());
        let best = conns
            .iter()
            .min_by_key(|c| c.streams.load(Ordering::Relaxed))?;
        let load = best.streams.load(Ordering::Relaxed);
        let limit = best.send.peer_max_streams() as usize;
        let upstream_full = limit > 0 && load >= limit;
        if upstream_full || (load >= self.max_streams && conns.len() < self.max_conns) {
            return None;
        }
        Some(Lease::H2 {
            send: best.send.clone(),
            first: best.first.clone(),
            guard: CountGuard::new(&best.streams),
        })
    }

    /// The least busy open connection, however busy.
    fn pick_h2_any(&self) -> Option<Lease> {
        let mut conns = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| !c.send.is_closed());
        let best = conns
            .iter()
            .min_by_key(|c| c.streams.load(Ordering::Relaxed))?;
        Some(Lease::H2 {
            send: best.send.clone(),
            first: best.first.clone(),
            guard: CountGuard::new(&best.streams),
        })
    }

    async fn lease_h2(&self, connector: &Arc<Connector>) -> Result<Lease, ProxyError> {
        let mut waited = 0;
        loop {
            if let Some(l) = self.pick_h2() {
                return Ok(l);
            }
            // No connection with room (or none at all) and fewer than
            // max_connections: wait for a new one. A burst shares it; when
            // it fills before this request's turn, another is opened, up to
            // CONNECTS_PER_LEASE, then the stream queues on it.
            let load = &connector.load;
            let pending = load.wait("a new HTTP/2 connection is being opened for them")?;
            let conn = match self.connect_h2(connector).await {
                Ok(conn) => conn,
                // At the cluster's max_connections: share what is open.
                Err(e) if e.code == ErrorCode::Overloaded => {
                    return self.pick_h2_any().ok_or_else(|| {
                        let max = load.limits.max_connections;
                        load.refuse(
                            "max_connections",
                            format!(
                                "{} connections are open to its endpoints (max_connections: {max}), none to {}",
                                load.connections_open(),
                                self.addr
                            ),
                        )
                    });
                }
                Err(e) => return Err(e),
            };
            drop(pending);
            waited += 1;
            if waited == CONNECTS_PER_LEASE {
                return Ok(Lease::H2 {
                    guard: CountGuard::new(&conn.streams),
                    send: conn.send,
                    first: conn.first,
                });
            }
        }
    }

    /// The connect under way, or a new one. It runs as a task of its own
    /// and puts the connection in the pool whoever still waits: the
    /// request that started it may be cancelled (a client's reset, a
    /// deadline) and the ones behind it use the connection instead of
    /// starting over — tied to its request, a flood of cancelled requests
    /// became a flood of half-made connections to the upstream. A failed
    /// connect fails every request waiting for it at once, rather than
    /// each in turn after its own connect_timeout.
    fn connect_h2(&self, connector: &Arc<Connector>) -> Attempt {
        let mut slot = self.h2_connecting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(attempt) = &*slot {
            return attempt.clone();
        }
        let Some(conn_slot) = connector.load.connection() else {
            let at_cap = ProxyError::new(ErrorCode::Overloaded, "max_connections");
            return futures_util::future::ready(Err(at_cap)).boxed().shared();
        };
        let connector = connector.clone();
        let (addr, host) = (self.addr, self.host.clone());
        let (conns, connecting) = (self.h2.clone(), self.h2_connecting.clone());
        // The slot is set before the task can clear it: the task takes
        // the same lock, held until this function returns.
        let task = tokio::spawn(async move {
            let result = match connector.connect(addr, &host, Wire::Http2, conn_slot).await {
                Ok(Connected::H2(send, first)) => {
                    let conn = H2Conn {
                        send,
                        streams: Arc::new(AtomicUsize::new(0)),
                        first,
                    };
                    conns
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(conn.clone());
                    Ok(conn)
                }
                Ok(Connected::H1(..)) => unreachable!("asked for HTTP/2"),
                Err(e) => Err(e),
            };
            *connecting.lock().unwrap_or_else(|p| p.into_inner()) = None;
            result
        });
        let attempt = async move {
            task.await.unwrap_or_else(|e| {
                Err(ProxyError::new(
                    ErrorCode::Internal,
                    format!("connecting to upstream {addr}: {e}"),
                ))
            })
        }
        .boxed()
        .shared();
        *slot = Some(attempt.clone());
        attempt
    }

    async fn lease_h1(&self, connector: &Connector) -> Result<Lease, ProxyError> {
        let load = &connector.load;
        let mut waiting = None;
        let conn_slot = loop {
            loop {
                let idle = self.h1_idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some((mut send, first)) = idle else { break };
                if send.is_closed() {
                    continue;
                }
                if send.ready().await.is_ok() {
                    return Ok(Lease::H1(send, first));
                }
            }
            if let Some(slot) = load.connection() {
                break slot;
            }
            // Every connection the cluster may have is open and busy: wait
            // for one to come free, as a pending request.
            if waiting.is_none() {
                let max = load.limits.max_connections;
                waiting = Some(load.wait(&format!(
                    "all {} HTTP/1.1 connections it may have are busy (max_connections: {max})",
                    load.connections_open()
                ))?);
            }
            load.freed.notified().await;
        };
        let _pending = match waiting {
            Some(w) => w,
            None => load.wait("a new HTTP/1.1 connection is being opened for them")?,
        };
        match Box::pin(connector.connect(self.addr, &self.host, Wire::Http1, conn_slot)).await? {
            Connected::H1(send, first) => Ok(Lease::H1(send, first)),
            Connected::H2(..) => unreachable!("asked for HTTP/2"),
        }
    }

    /// Returns an HTTP/1.1 connection whose response was read to the end.
    /// While requests wait for a connection at the cluster's
    /// `max_connections`, it is closed instead, so that any endpoint's
    /// waiter can open one.
    pub fn release_h1(&self, send: http1::SendRequest<Body>, first: FirstBytes, waiters: bool) {
        if waiters {
            return;
        }
        if !send.is_closed() {
            let mut idle = self.h1_idle.lock().unwrap_or_else(|p| p.into_inner());
            // Bound the idle pool; extra connections just close.
            if idle.len() < 64 {
                idle.push((send, first));
            }
        }
    }

    /// Open HTTP/2 connections and their stream counts (for /clusters).
    pub fn h2_connections(&self) -> Vec<usize> {
        self.h2
            .lock()
            .map(|c| {
                c.iter()
                    .map(|c| c.streams.load(Ordering::Relaxed))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Milliseconds since the first call (never 0, so 0 can mean "not set").
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

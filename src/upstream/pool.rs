//! One endpoint and the connections torii keeps to it: a few HTTP/2
//! connections shared by many streams (more are opened when streams pile
//! up), and a keep-alive pool of HTTP/1.1 connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1;

use super::connect::{Connected, Connector, FirstBytes, Wire};
use super::h2client::H2Client;
use crate::error::{ErrorCode, ProxyError};
use crate::http::body::Body;

pub struct Endpoint {
    pub addr: SocketAddr,
    /// The name the endpoint came from (DNS name or IP), for SNI and messages.
    pub host: String,
    /// Requests in flight, for least_request balancing.
    pub active: Arc<AtomicUsize>,
    /// The active health check's verdict (true until a check says otherwise).
    pub active_ok: AtomicBool,
    /// Passive health: ejected until this many ms after [`epoch`]; 0 = not.
    ejected_until_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    h2: Arc<Mutex<Vec<H2Conn>>>,
    /// Held by the one HTTP/2 connect in progress (its task owns it).
    h2_connecting: Arc<tokio::sync::Mutex<()>>,
    h1_idle: Mutex<Vec<http1::SendRequest<Body>>>,
    max_streams: usize,
    max_conns: usize,
}

#[derive(Clone)]
struct H2Conn {
    send: H2Client,
    streams: Arc<AtomicUsize>,
    first: FirstBytes,
}

/// A connection ready for one request.
pub enum Lease {
    H1(http1::SendRequest<Body>),
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
    pub fn new(addr: SocketAddr, host: String, max_streams: usize, max_conns: usize) -> Self {
        Endpoint {
            addr,
            host,
            active: Arc::new(AtomicUsize::new(0)),
            active_ok: AtomicBool::new(true),
            ejected_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            h2: Arc::new(Mutex::new(Vec::new())),
            h2_connecting: Arc::new(tokio::sync::Mutex::new(())),
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

    /// Counts a failed request; returns the ejection time when this failure
    /// completes a streak of `threshold` (0 = never eject).
    pub fn record_failure(
        &self,
        threshold: u32,
        base: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if threshold == 0 || n < threshold || self.ejected_for().is_some() {
            return None;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let times = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        // Longer each time it happens again, up to the maximum.
        let time = base.saturating_mul(times).min(max);
        self.ejected_until_ms
            .store(now_ms() + time.as_millis() as u64, Ordering::Relaxed);
        Some(time)
    }

    pub async fn lease(&self, connector: &Arc<Connector>, wire: Wire) -> Result<Lease, ProxyError> {
        match wire {
            Wire::Http2 => self.lease_h2(connector).await,
            Wire::Http1 => self.lease_h1(connector).await,
        }
    }

    /// Picks the least busy open connection with room, if any. With
    /// `any_open`, also one that is full (h2 queues the stream until the
    /// upstream's concurrency limit allows it).
    fn pick_h2(&self, any_open: bool) -> Option<Lease> {
        let mut conns = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| !c.send.is_closed());
        let best = conns
            .iter()
            .min_by_key(|c| c.streams.load(Ordering::Relaxed))?;
        let load = best.streams.load(Ordering::Relaxed);
        if load >= self.max_streams && !(any_open && conns.len() >= self.max_conns) {
            return None;
        }
        Some(Lease::H2 {
            send: best.send.clone(),
            first: best.first.clone(),
            guard: CountGuard::new(&best.streams),
        })
    }

    async fn lease_h2(&self, connector: &Arc<Connector>) -> Result<Lease, ProxyError> {
        if let Some(l) = self.pick_h2(false) {
            return Ok(l);
        }
        // One connect at a time per endpoint: a burst of requests shares
        // the connection the first of them opens.
        let connecting = self.h2_connecting.clone().lock_owned().await;
        if let Some(l) = self.pick_h2(true) {
            return Ok(l);
        }
        // The connect is a task of its own, holding the connecting lock
        // until the connection is in the pool: the request that started it
        // may be cancelled (a client's reset, a deadline) and the next one
        // uses the connection instead of starting over. Tied to the
        // request, a flood of cancelled requests became a flood of
        // half-made connections to the upstream.
        let connector = connector.clone();
        let (addr, host, conns) = (self.addr, self.host.clone(), self.h2.clone());
        let connect = tokio::spawn(async move {
            let _connecting = connecting;
            match connector.connect(addr, &host, Wire::Http2).await? {
                Connected::H2(send, first) => {
                    let conn = H2Conn {
                        send,
                        streams: Arc::new(AtomicUsize::new(0)),
                        first,
                    };
                    let lease = Lease::H2 {
                        send: conn.send.clone(),
                        first: conn.first.clone(),
                        guard: CountGuard::new(&conn.streams),
                    };
                    conns.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
                    Ok(lease)
                }
                Connected::H1(_) => unreachable!("asked for HTTP/2"),
            }
        });
        connect.await.unwrap_or_else(|e| {
            Err(ProxyError::new(
                ErrorCode::Internal,
                format!("connecting to upstream {}: {e}", self.addr),
            ))
        })
    }

    async fn lease_h1(&self, connector: &Connector) -> Result<Lease, ProxyError> {
        loop {
            let idle = self.h1_idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(mut send) = idle else { break };
            if send.is_closed() {
                continue;
            }
            if send.ready().await.is_ok() {
                return Ok(Lease::H1(send));
            }
        }
        match Box::pin(connector.connect(self.addr, &self.host, Wire::Http1)).await? {
            Connected::H1(send) => Ok(Lease::H1(send)),
            Connected::H2(..) => unreachable!("asked for HTTP/1.1"),
        }
    }

    /// Returns an HTTP/1.1 connection whose response was read to the end.
    pub fn release_h1(&self, send: http1::SendRequest<Body>) {
        if !send.is_closed() {
            let mut idle = self.h1_idle.lock().unwrap_or_else(|p| p.into_inner());
            // Bound the idle pool; extra connections just close.
            if idle.len() < 64 {
                idle.push(send);
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

//! One endpoint and the connections torii keeps to it: a few HTTP/2
//! connections shared by many streams (more are opened when streams pile
//! up), and a keep-alive pool of HTTP/1.1 connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hyper::client::conn::{http1, http2};

use super::connect::{Connected, Connector, FirstBytes, Wire};
use crate::error::ProxyError;
use crate::http::body::Body;

pub struct Endpoint {
    pub addr: SocketAddr,
    /// The name the endpoint came from (DNS name or IP), for SNI and messages.
    pub host: String,
    /// Requests in flight, for least_request balancing.
    pub active: Arc<AtomicUsize>,
    pub healthy: AtomicBool,
    h2: Mutex<Vec<H2Conn>>,
    h2_connecting: tokio::sync::Mutex<()>,
    h1_idle: Mutex<Vec<http1::SendRequest<Body>>>,
    max_streams: usize,
    max_conns: usize,
}

#[derive(Clone)]
struct H2Conn {
    send: http2::SendRequest<Body>,
    streams: Arc<AtomicUsize>,
    first: FirstBytes,
}

/// A connection ready for one request.
pub enum Lease {
    H1(http1::SendRequest<Body>),
    H2 {
        send: http2::SendRequest<Body>,
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
            healthy: AtomicBool::new(true),
            h2: Mutex::new(Vec::new()),
            h2_connecting: tokio::sync::Mutex::new(()),
            h1_idle: Mutex::new(Vec::new()),
            max_streams,
            max_conns,
        }
    }

    pub async fn lease(&self, connector: &Connector, wire: Wire) -> Result<Lease, ProxyError> {
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

    async fn lease_h2(&self, connector: &Connector) -> Result<Lease, ProxyError> {
        if let Some(l) = self.pick_h2(false) {
            return Ok(l);
        }
        // One connect at a time per endpoint: a burst of requests shares
        // the connection the first of them opens.
        let _connecting = self.h2_connecting.lock().await;
        if let Some(l) = self.pick_h2(true) {
            return Ok(l);
        }
        match connector
            .connect(self.addr, &self.host, Wire::Http2)
            .await?
        {
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
                self.h2.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
                Ok(lease)
            }
            Connected::H1(_) => unreachable!("asked for HTTP/2"),
        }
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
        match connector
            .connect(self.addr, &self.host, Wire::Http1)
            .await?
        {
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

//! Circuit breaking: a cluster's `limits` and their use now. A request past
//! `max_requests`, or one that would wait for a connection when
//! `max_pending_requests` already do, is refused at once with
//! `overloaded`; connections past `max_connections` are not opened.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Limits;
use crate::error::{ErrorCode, ProxyError};
use crate::telemetry::resilience::OverloadLabels;
use crate::telemetry::Metrics;

/// A cluster's limits and what is in use.
pub struct Load {
    pub limits: Limits,
    cluster: String,
    metrics: Arc<Metrics>,
    /// Requests in flight (from sending to the end of the response).
    pub requests: AtomicUsize,
    /// Requests waiting for a connection.
    pub pending: AtomicUsize,
    /// Connections open (or being opened) to the cluster's endpoints.
    pub connections: Arc<AtomicUsize>,
    /// Told when a connection closes or an HTTP/1.1 one comes free.
    pub freed: Arc<Notify>,
}

/// One connection's place under `max_connections`, given back when the
/// connection's task ends.
pub struct ConnSlot {
    count: Arc<AtomicUsize>,
    freed: Arc<Notify>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.freed.notify_one();
    }
}

/// A request's place under `max_requests` or `max_pending_requests`.
pub struct Slot<'a>(&'a AtomicUsize);

impl Slot<'_> {
    /// The place is kept; whoever holds the request now gives it back
    /// (see `ExchangeGuard`).
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Load {
    pub fn new(limits: Limits, cluster: &str, metrics: Arc<Metrics>) -> Self {
        Load {
            limits,
            cluster: cluster.to_string(),
            metrics,
            requests: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            connections: Arc::new(AtomicUsize::new(0)),
            freed: Arc::new(Notify::new()),
        }
    }

    /// A place for one more request in flight, or `overloaded`.
    #[inline]
    pub fn admit(&self) -> Result<Slot<'_>, ProxyError> {
        let max = self.limits.max_requests;
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(&self.requests);
        if n >= max {
            drop(slot);
            return Err(self.refuse(
                "max_requests",
                format!("{n} requests are in flight to it (max_requests: {max})"),
            ));
        }
        Ok(slot)
    }

    /// A place among the requests waiting for a connection, or
    /// `overloaded`; `why` says what they wait for.
    pub fn wait(&self, why: &str) -> Result<Slot<'_>, ProxyError> {
        let max = self.limits.max_pending_requests;
        let n = self.pending.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(&self.pending);
        if n >= max {
            drop(slot);
            return Err(self.refuse(
                "max_pending_requests",
                format!(
                    "{n} requests already wait for a connection (max_pending_requests: {max}); {why}"
                ),
            ));
        }
        Ok(slot)
    }

    /// A place for one more connection, or None at `max_connections`.
    pub fn connection(&self) -> Option<ConnSlot> {
        let n = self.connections.fetch_add(1, Ordering::Relaxed);
        if n >= self.limits.max_connections {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnSlot {
            count: self.connections.clone(),
            freed: self.freed.clone(),
        })
    }

    /// Connections open now, for messages.
    pub fn connections_open(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// The `overloaded` error for `limit`, counted.
    pub fn refuse(&self, limit: &'static str, what: String) -> ProxyError {
        self.metrics
            .resilience
            .overloaded
            .get_or_create(&OverloadLabels {
                cluster: self.cluster.clone(),
                limit,
            })
            .inc();
        ProxyError::new(
            ErrorCode::Overloaded,
            format!(
                "cluster {} is at its limit: {what}; the request was not sent. Raise the cluster's limits.{limit} if the upstream can take more",
                self.cluster
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_given_back() {
        let limits = Limits {
            max_connections: 1,
            max_pending_requests: 0,
            max_requests: 1,
        };
        let load = Load::new(limits, "c", Arc::new(Metrics::new()));
        let first = load.admit().expect("one fits");
        let err = load.admit().err().expect("the second does not");
        assert_eq!(err.code, ErrorCode::Overloaded);
        assert!(err.message.contains("max_requests: 1"), "{}", err.message);
        drop(first);
        assert!(load.admit().is_ok());
        assert!(load.wait("x").is_err(), "no one may wait");
        let conn = load.connection().expect("one connection");
        assert!(load.connection().is_none());
        drop(conn);
        assert!(load.connection().is_some());
    }

    /// What the success path adds per request for retries, limits and
    /// outlier detection: the budget's request count, a max_requests
    /// place taken and given back, the success-rate count.
    /// `cargo test --release --lib -- --ignored --nocapture success_path_bookkeeping_cost`
    #[test]
    #[ignore]
    fn success_path_bookkeeping_cost() {
        let load = Load::new(Limits::default(), "c", Arc::new(Metrics::new()));
        let budget = super::super::budget::Budget::new(Default::default());
        let ep =
            super::super::pool::Endpoint::new("127.0.0.1:1".parse().unwrap(), "h".into(), 1, 1, 1);
        const N: u32 = 10_000_000;
        for round in 0..3 {
            let t = std::time::Instant::now();
            for _ in 0..N {
                budget.note_request();
                let slot = std::hint::black_box(load.admit().unwrap());
                drop(slot);
                ep.count_outcome(std::hint::black_box(true));
            }
            let ns = t.elapsed().as_nanos() as f64 / f64::from(N);
            eprintln!("round {round}: {ns:.1} ns of bookkeeping per request");
        }
    }
}

//! A cluster's retry budget (`retry_budget`): retries may add at most
//! `ratio` of the requests per second, and `min_per_second` retries are
//! always allowed. Requests are counted with one relaxed add; the window
//! is looked at only when a retry asks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RetryBudget;

const WINDOW: Duration = Duration::from_secs(1);

pub struct Budget {
    config: RetryBudget,
    /// Requests sent to the cluster, ever.
    requests: AtomicU64,
    window: Mutex<Window>,
}

struct Window {
    start: Instant,
    /// `requests` when the window started.
    requests_at_start: u64,
    /// Requests in the window before this one (so a new window does not
    /// start with an allowance of min_per_second only).
    previous: u64,
    retries: u64,
}

impl Budget {
    pub fn new(config: RetryBudget) -> Self {
        Budget {
            config,
            requests: AtomicU64::new(0),
            window: Mutex::new(Window {
                start: Instant::now(),
                requests_at_start: 0,
                previous: 0,
                retries: 0,
            }),
        }
    }

    /// Counts a request to the cluster (its first attempt).
    #[inline]
    pub fn note_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn allow(&self) -> bool {
        let now = Instant::now();
        let total = self.requests.load(Ordering::Relaxed);
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.duration_since(w.start);
        if elapsed >= WINDOW {
            // A window that ended long ago says nothing about the last second.
            w.previous = if elapsed < WINDOW * 2 {
                total - w.requests_at_start
            } else {
                0
            };
            w.start = now;
            w.requests_at_start = total;
            w.retries = 0;
        }
        let requests = (total - w.requests_at_start).max(w.previous);
        let allowed = (self.config.ratio * requests as f64) as u64;
        if w.retries < allowed.max(u64::from(self.config.min_per_second)) {
            w.retries += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_then_the_ratio() {
        let b = Budget::new(RetryBudget {
            ratio: 0.5,
            min_per_second: 2,
        });
        assert!(b.allow() && b.allow());
        assert!(!b.allow(), "two a second with no requests");
        for _ in 0..10 {
            b.note_request();
        }
        let granted = (0..10).filter(|_| b.allow()).count();
        assert_eq!(granted, 3, "half of 10 requests, 2 taken already");
    }
}

//! Warnings logged once per cause.

use std::collections::HashSet;
use std::sync::Mutex;

/// Logs a warning the first time each cause is seen, then only at debug
/// level: one misconfigured client must not flood the log.
#[derive(Default)]
pub struct LogOnce(Mutex<HashSet<String>>);

/// Causes remembered by a [`LogOnce`]; keys can name destinations, so the
/// set is bounded (past it, everything logs at debug only).
const LOG_ONCE_MAX_KEYS: usize = 4096;

impl LogOnce {
    pub fn first(&self, key: &str) -> bool {
        self.0
            .lock()
            .map(|mut s| s.len() < LOG_ONCE_MAX_KEYS && s.insert(key.to_string()))
            .unwrap_or(false)
    }
}

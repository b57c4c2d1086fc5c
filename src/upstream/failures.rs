//! Upstream failures at info level, in plain words, with cluster and
//! endpoint: protocol errors, resets, GOAWAYs and connections that end
//! badly. Each kind of failure of each endpoint is logged at most once per
//! [`EVERY`]; the next line says how many were left out meanwhile, so a
//! failing endpoint under load costs a line every few seconds, not one
//! per request (every failure is still counted in the metrics).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line per endpoint and kind this often.
pub const EVERY: Duration = Duration::from_secs(10);
/// Endpoint and kind pairs remembered; past this the memory starts over.
const MAX_KEYS: usize = 1024;

#[derive(Default)]
pub struct FailureLog {
    seen: Mutex<HashMap<(SocketAddr, &'static str), Seen>>,
}

struct Seen {
    logged: Instant,
    left_out: u64,
}

impl FailureLog {
    /// Logs `sentence` (which names the endpoint and cluster) at info,
    /// unless a failure of this `kind` of `endpoint` was logged within
    /// [`EVERY`].
    pub fn note(&self, cluster: &str, endpoint: SocketAddr, kind: &'static str, sentence: &str) {
        let now = Instant::now();
        let left_out = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() >= MAX_KEYS && !seen.contains_key(&(endpoint, kind)) {
                seen.clear();
            }
            match seen.get_mut(&(endpoint, kind)) {
                Some(s) if now.duration_since(s.logged) < EVERY => {
                    s.left_out += 1;
                    tracing::debug!(cluster, %endpoint, kind, "{sentence}");
                    return;
                }
                Some(s) => {
                    s.logged = now;
                    std::mem::take(&mut s.left_out)
                }
                None => {
                    seen.insert(
                        (endpoint, kind),
                        Seen {
                            logged: now,
                            left_out: 0,
                        },
                    );
                    0
                }
            }
        };
        if left_out > 0 {
            tracing::info!(cluster, %endpoint, kind, "{sentence} ({left_out} more like it since the last line, not logged)");
        } else {
            tracing::info!(cluster, %endpoint, kind, "{sentence}");
        }
    }
}

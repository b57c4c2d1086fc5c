//! Outlier ejection beyond failures in a row: every `interval`, the
//! endpoints that had at least `success_rate_min_requests` are compared,
//! when there are at least `success_rate_min_endpoints` of them; one whose
//! success rate is below mean − `success_rate_stdev_factor` × stdev is
//! ejected (as Envoy does). No ejection, of either kind, takes the share of
//! ejected endpoints to `max_ejection_percent` or past it.

use std::sync::{Arc, Weak};

use super::pool::Endpoint;
use super::ClusterRuntime;

/// Starts the cluster's success-rate task; it ends with the cluster.
pub fn spawn(rt: &Arc<ClusterRuntime>) {
    let weak = Arc::downgrade(rt);
    let every = rt.config.outlier_detection.interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            if !compare(&weak) {
                return;
            }
        }
    });
}

/// One look at the success rates; false once the cluster is gone.
fn compare(weak: &Weak<ClusterRuntime>) -> bool {
    let Some(rt) = weak.upgrade() else {
        return false;
    };
    let o = &rt.config.outlier_detection;
    let endpoints = rt.endpoints();
    let mut rates: Vec<(&Arc<Endpoint>, f64, u64)> = Vec::new();
    for ep in endpoints.iter() {
        let (total, ok) = ep.take_outcomes();
        if total >= u64::from(o.success_rate_min_requests) && total > 0 {
            rates.push((ep, ok as f64 / total as f64, total));
        }
    }
    if rates.len() < o.success_rate_min_endpoints as usize {
        return true;
    }
    let n = rates.len() as f64;
    let mean = rates.iter().map(|r| r.1).sum::<f64>() / n;
    let variance = rates.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / n;
    let threshold = mean - f64::from(o.success_rate_stdev_factor) / 1000.0 * variance.sqrt();
    for (ep, rate, total) in rates {
        if rate < threshold {
            rt.eject(
                ep,
                &format!(
                    "success rate {:.1}% over {total} requests, below the cluster's {:.1}% (threshold {:.1}%: mean − {} × stdev)",
                    rate * 100.0,
                    mean * 100.0,
                    threshold * 100.0,
                    f64::from(o.success_rate_stdev_factor) / 1000.0
                ),
            );
        }
    }
    true
}

impl ClusterRuntime {
    /// Ejects `ep` for `reason`, unless that would take the ejected share
    /// to max_ejection_percent; logged either way. True if ejected.
    pub(super) fn eject(&self, ep: &Endpoint, reason: &str) -> bool {
        if ep.ejected_for().is_some() {
            return false;
        }
        let o = &self.config.outlier_detection;
        let all = self.endpoints.load();
        let ejected = all.iter().filter(|e| e.ejected_for().is_some()).count();
        if ejected * 100 >= o.max_ejection_percent as usize * all.len() {
            // At most a line per endpoint every few seconds.
            self.connector.failures.note(
                &self.config.name,
                ep.addr,
                "ejection_capped",
                &format!(
                    "endpoint {} of cluster {} not ejected ({reason}): {ejected} of {} endpoints are ejected already, and max_ejection_percent is {}",
                    ep.addr,
                    self.config.name,
                    all.len(),
                    o.max_ejection_percent
                ),
            );
            return false;
        }
        let time = ep.eject(o.base_ejection_time, o.max_ejection_time);
        tracing::warn!(
            cluster = %self.config.name, endpoint = %ep.addr, ejected_for = %crate::config::duration::display(time),
            "endpoint ejected: {reason}; it gets no new requests until then"
        );
        self.metrics
            .endpoint_ejections
            .get_or_create(&self.endpoint_labels(ep))
            .inc();
        self.set_healthy_gauge(ep, false);
        true
    }
}

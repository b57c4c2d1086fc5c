//! The metrics of retries, retry budgets, circuit breaking and outlier
//! ejection, registered with the others in [`super::Metrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    pub cluster: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverloadLabels {
    pub cluster: String,
    /// `max_connections`, `max_pending_requests` or `max_requests`.
    pub limit: &'static str,
}

pub struct ResilienceMetrics {
    /// Retries a policy wanted but did not send (reason: budget,
    /// body_too_large, pushback, deadline).
    pub retries_skipped: Family<SkipLabels, Counter>,
    pub overloaded: Family<OverloadLabels, Counter>,
}

impl ResilienceMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let retries_skipped = Family::<SkipLabels, Counter>::default();
        registry.register(
            "upstream_retries_skipped",
            "Retries a route's retry policy wanted but torii did not send (reason: budget, body_too_large, pushback, deadline)",
            retries_skipped.clone(),
        );
        let overloaded = Family::<OverloadLabels, Counter>::default();
        registry.register(
            "overloaded",
            "Requests refused at once because a cluster limit was reached (limit: max_connections, max_pending_requests, max_requests)",
            overloaded.clone(),
        );
        ResilienceMetrics {
            retries_skipped,
            overloaded,
        }
    }
}

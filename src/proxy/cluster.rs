//! Phase 9, cluster: the route's cluster, or one of its weighted clusters
//! picked at random by weight.

use std::sync::Arc;

use super::Pipeline;
use crate::config::{Route, RouteAction};
use crate::error::{ErrorCode, ProxyError};
use crate::upstream::ClusterRuntime;

impl Pipeline {
    #[inline]
    pub(super) fn cluster(&self, route: &Route) -> Result<Arc<ClusterRuntime>, ProxyError> {
        let name = match &route.action {
            RouteAction::Cluster(c) => c.name.as_str(),
            RouteAction::Weighted(list) => pick_weighted(list),
            // Answered by the direct-response phase before this one.
            RouteAction::Direct { .. } => "",
        };
        self.clusters.get(name).cloned().ok_or_else(|| {
            ProxyError::new(
                ErrorCode::Internal,
                format!("cluster {name} is not running"),
            )
        })
    }
}

fn pick_weighted(list: &[(Arc<crate::config::Cluster>, u32)]) -> &str {
    let total: u64 = list.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut n = rand::random_range(0..total.max(1));
    for (c, w) in list {
        if n < u64::from(*w) {
            return &c.name;
        }
        n -= u64::from(*w);
    }
    &list[0].0.name
}

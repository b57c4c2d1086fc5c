//! Phase 4, route: the first of the listener's routes that matches the
//! normalized request; on an `original_destination` listener, what no route
//! claims goes where it was headed; a `grpc.health.v1` call no route takes
//! is torii's own to answer; anything else is `no_route`.

use std::sync::{Arc, OnceLock};

use http::HeaderMap;

use super::conn_info::ConnInfo;
use super::grpc_health;
use super::normalize::Normalized;
use super::outcome::Outcome;
use super::{Pipeline, Step};
use crate::config::Route;
use crate::error::{ErrorCode, ProxyError};
use crate::route::RequestFacts;
use crate::upstream::ClusterRuntime;

/// Where routing sent a request.
pub(super) enum Routed {
    /// The listener's route at this index.
    Route(usize),
    /// No route took it; the cluster of the destination it was headed to.
    Original(Arc<ClusterRuntime>),
    /// torii's own `grpc.health.v1.Health` (Check, or Watch when true).
    OwnHealth { watch: bool },
}

impl Pipeline {
    #[inline]
    pub(super) fn route(
        &self,
        req: &Normalized<'_>,
        headers: &HeaderMap,
        conn: &ConnInfo,
        outcome: &mut Outcome,
    ) -> Result<Routed, Step> {
        let grpc_names = req.grpc_names();
        let facts = RequestFacts {
            host: &req.host,
            path: &req.path,
            headers,
            grpc: grpc_names,
        };
        if let Some(index) = self.routes.find(&self.config.routes, &facts) {
            outcome.routed = true;
            outcome.route = Some(self.config.routes[index].name.clone());
            return Ok(Routed::Route(index));
        }
        if let Some(dst) = conn.original_dst {
            if let Some(cluster) = self.original_destination(dst) {
                outcome.routed = true;
                return Ok(Routed::Original(cluster?));
            }
        }
        // torii's own health answers native gRPC only.
        let native = outcome.protocol == super::outcome::Protocol::Grpc;
        if native && (req.path == grpc_health::CHECK || req.path == grpc_health::WATCH) {
            outcome.routed = true;
            outcome.http_status = 200;
            outcome.grpc_status = Some(0);
            return Ok(Routed::OwnHealth {
                watch: req.path == grpc_health::WATCH,
            });
        }
        let what = match grpc_names {
            Some((s, m)) => format!("gRPC service {s} method {m}"),
            None => format!("path {}", req.path),
        };
        Err(ProxyError::new(
            ErrorCode::NoRoute,
            format!(
                "no route on listener {} matches {what} (host {}); add a route for it",
                self.name,
                if req.host.is_empty() {
                    "none"
                } else {
                    &req.host
                }
            ),
        )
        .into())
    }
}

/// The route requests to an original destination take: no rewrites, no
/// header edits, no timeout of torii's own.
pub(super) fn passthrough_route() -> &'static Route {
    static ROUTE: OnceLock<Route> = OnceLock::new();
    ROUTE
        .get_or_init(|| Route::direct("original_destination", Default::default(), 0, String::new()))
}

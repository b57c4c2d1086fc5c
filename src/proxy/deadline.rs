//! Phase 10, deadline: a gRPC call carries its own (`grpc-timeout`); other
//! requests get their route's `timeout`. A gRPC call is never cut by a
//! route timeout: long streams would die.

use std::time::Duration;

use http::HeaderMap;

use crate::config::duration::display;
use crate::error::{ErrorCode, ProxyError};
use crate::grpc;

/// How long the exchange with the upstream may take, and the error when
/// it takes longer.
pub(super) struct Deadline {
    pub limit: Option<Duration>,
    pub err: ProxyError,
}

#[inline]
pub(super) fn deadline(
    headers: &HeaderMap,
    grpc_req: bool,
    route_timeout: Option<Duration>,
) -> Deadline {
    let grpc_deadline = if grpc_req {
        headers
            .get(&grpc::GRPC_TIMEOUT)
            .and_then(|v| grpc::timeout::parse(v.as_bytes()))
    } else {
        None
    };
    match (grpc_deadline, route_timeout) {
        (Some(d), _) => Deadline {
            limit: Some(d),
            err: ProxyError::new(
                ErrorCode::DeadlineExceeded,
                format!(
                    "the call's deadline (grpc-timeout {}) expired before the upstream finished",
                    display(d)
                ),
            ),
        },
        (None, Some(t)) if !grpc_req => Deadline {
            limit: Some(t),
            err: ProxyError::new(
                ErrorCode::UpstreamTimeout,
                format!(
                    "the upstream did not finish within the route timeout {}",
                    display(t)
                ),
            ),
        },
        _ => Deadline {
            limit: None,
            err: ProxyError::new(ErrorCode::Internal, ""),
        },
    }
}

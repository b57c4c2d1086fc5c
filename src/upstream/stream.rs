//! Plain TCP connections to a cluster's endpoints, for bytes torii does not
//! interpret (TLS passthrough, opaque TCP): the same balancing and failover
//! as requests, without TLS or HTTP on top.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::pool::CountGuard;
use super::{ClusterRuntime, MAX_CONNECT_ATTEMPTS};
use crate::error::ProxyError;

/// A connected upstream stream; counts as an active request on its endpoint
/// (for least_request balancing) while it lives.
pub struct UpstreamStream {
    pub stream: TcpStream,
    pub endpoint: SocketAddr,
    _active: CountGuard,
}

impl ClusterRuntime {
    /// Connects to an endpoint, trying others when connecting fails (nothing
    /// has been sent yet, so that is always safe).
    pub async fn connect_stream(&self) -> Result<UpstreamStream, ProxyError> {
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last_err = None;
        let attempts = MAX_CONNECT_ATTEMPTS.min(self.endpoints.load().len().max(1));
        while tried.len() < attempts {
            let Some(ep) = self.pick(&tried) else { break };
            let active = CountGuard::new(&ep.active);
            match self.connector.tcp(ep.addr).await {
                Ok(stream) => {
                    return Ok(UpstreamStream {
                        stream,
                        endpoint: ep.addr,
                        _active: active,
                    })
                }
                Err(e) => {
                    tracing::debug!(cluster = %self.config.name, endpoint = %ep.addr, error = %e, "connect failed; trying another endpoint");
                    tried.push(ep.addr);
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| self.no_endpoint_error()))
    }
}

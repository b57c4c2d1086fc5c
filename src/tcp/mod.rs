//! Bytes torii forwards without interpreting them: opaque TCP, TLS passed
//! through by SNI, and anything headed to an original destination that is
//! not HTTP. Connect (with the cluster's failover), relay both ways with
//! half-close and an idle timeout, say in plain words what went wrong.

pub mod relay;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::telemetry::log_once::LogOnce;
use crate::telemetry::Metrics;
use crate::upstream::ClusterRuntime;
pub use relay::{relay, Relayed};

/// What is being forwarded, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Opaque,
    TlsPassthrough,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Opaque => "opaque TCP",
            Kind::TlsPassthrough => "TLS passthrough",
        }
    }
}

/// Who is forwarding, and where to report.
pub struct Forward<'a> {
    pub listener: &'a str,
    pub peer: SocketAddr,
    pub kind: Kind,
    pub idle_timeout: Duration,
    pub metrics: &'a Metrics,
    pub log_once: &'a LogOnce,
}

/// Connects to `cluster` and relays `client` to it until both sides close,
/// one fails, or the connection idles out. `None` when connecting failed
/// (the client connection is then closed: opaque bytes have no way to
/// carry an error).
pub async fn forward<C>(client: C, cluster: &ClusterRuntime, f: Forward<'_>) -> Option<Relayed>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let name = &cluster.config.name;
    let upstream = match cluster.connect_stream().await {
        Ok(u) => u,
        Err(e) => {
            f.metrics.upstream_error(name, e.code.as_str());
            let what = f.kind.describe();
            if f.log_once.first(&format!("tcp:{name}:{}", e.code)) {
                tracing::warn!(listener = f.listener, client = %f.peer, cluster = %name, code = %e.code, "{what}: {e}; closed the client connection (logged once per cluster and cause; counted in torii_upstream_errors_total)");
            } else {
                tracing::debug!(listener = f.listener, client = %f.peer, cluster = %name, code = %e.code, "{what}: {e}; closed the client connection");
            }
            return None;
        }
    };
    let endpoint = upstream.endpoint;
    tracing::debug!(listener = f.listener, client = %f.peer, cluster = %name, %endpoint, kind = f.kind.describe(), "relaying");
    let relayed = relay(client, upstream.stream, f.idle_timeout).await;
    tracing::debug!(
        listener = f.listener, client = %f.peer, cluster = %name, %endpoint,
        kind = f.kind.describe(), bytes_sent = relayed.bytes_sent,
        bytes_received = relayed.bytes_received, duration = %crate::config::duration::display(relayed.duration),
        "connection ended: {}", relayed.end
    );
    Some(relayed)
}

//! An xDS v3 client: listeners, routes, clusters and endpoints from a
//! control plane over one ADS stream (delta xDS first, state of the world
//! when the server does not implement delta).
//!
//! Resources are translated into torii's own config model
//! (`translate_*`), kept per type in a [`cache::Cache`], and assembled
//! into a [`Snapshot`] of whole listeners and clusters — a listener only
//! once its routes, their clusters and those clusters' endpoints have
//! arrived (make-before-break). The app applies a snapshot through the
//! same path as a file reload; the client ACKs what applied and NACKs,
//! per resource, what did not (gRPC proposal A46).

mod cache;
mod client;
mod connect;
mod status;
mod translate_cluster;
mod translate_listener;
mod translate_route;
mod translate_tls;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};

use crate::config::{Cluster, Listener, XdsSource};
use crate::telemetry::Metrics;

pub use status::Status;

/// What the control plane describes now, ready to apply.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Arc<Cluster>>,
}

/// Applies a snapshot (the app merges it with the file's configuration);
/// `Err` says why it could not be, and the update is NACKed with it.
pub type Apply =
    Arc<dyn Fn(Snapshot) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The four resource types torii asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Cluster, Kind::Endpoint, Kind::Listener, Kind::Route];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Kind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// The `type` label of `torii_xds_updates_total`, and the word in messages.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::Endpoint => "endpoint",
            Kind::Listener => "listener",
            Kind::Route => "route",
        }
    }

    /// The message's name, as NACKs name the resource.
    pub fn message(self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::Endpoint => "ClusterLoadAssignment",
            Kind::Listener => "Listener",
            Kind::Route => "RouteConfiguration",
        }
    }

    /// Listeners and clusters are asked for all at once (wildcard); routes
    /// and endpoints by the names the others refer to.
    pub fn wildcard(self) -> bool {
        matches!(self, Kind::Cluster | Kind::Listener)
    }
}

/// Starts the client: it runs until the handle is aborted, reconnecting
/// with backoff while the server is away.
pub fn spawn(
    source: XdsSource,
    metrics: Arc<Metrics>,
    apply: Apply,
) -> (tokio::task::JoinHandle<()>, Arc<Status>) {
    let status = Arc::new(Status::new(&source));
    let task = tokio::spawn(client::run(source, status.clone(), metrics, apply));
    (task, status)
}

/// Decodes an `Any` as `M`, saying what it holds when it is not one.
pub fn decode<M: prost::Message + Default>(any: &Any, want: &str) -> Result<M, String> {
    let expected = format!("type.googleapis.com/{want}");
    if any.type_url != expected {
        return Err(format!(
            "holds a {} where torii expects {want}",
            any.type_url.rsplit('/').next().unwrap_or(&any.type_url)
        ));
    }
    M::decode(any.value.as_slice()).map_err(|e| format!("does not decode as {want}: {e}"))
}

/// A protobuf Duration; `None` when negative or out of range.
pub fn duration(d: &PbDuration) -> Option<Duration> {
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    Some(Duration::from_secs(secs) + Duration::from_nanos(u64::from(nanos)))
}

//! A scripted xDS v3 control plane for the tests: an ADS server (delta
//! and state of the world, or state of the world only) whose resources a
//! test sets and removes, and which records every ACK and NACK.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use futures_util::Stream;
use prost::{Message, Name};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

pub fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn socket(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port.into())),
            ..Default::default()
        })),
    }
}

/// An EDS cluster (its assignment named after it).
pub fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig::default()),
        ..Default::default()
    }
}

pub fn assignment(cluster: &str, endpoints: &[SocketAddr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints
                .iter()
                .map(|a| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(&a.ip().to_string(), a.port())),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A listener on 127.0.0.1:0 whose routes come by RDS.
pub fn rds_listener(name: &str, route_config: &str) -> Listener {
    let router = HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router".into(),
            value: Vec::new(),
        })),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: route_config.into(),
            config_source: None,
        })),
        http_filters: vec![router],
        ..Default::default()
    };
    Listener {
        name: name.into(),
        address: Some(socket("127.0.0.1", 0)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Every request (any host, any path) to `cluster`.
pub fn routes_to(name: &str, cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.into(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// What a client answered to one response.
#[derive(Debug, Clone)]
pub struct Answer {
    pub type_url: String,
    /// The NACK's error_detail message; None for an ACK.
    pub error: Option<String>,
}

#[derive(Default)]
struct World {
    /// type URL → name → (version, resource).
    resources: BTreeMap<String, BTreeMap<String, (u64, Any)>>,
    next_version: u64,
    answers: Vec<Answer>,
    /// Requests seen per stream kind ("delta", "sotw").
    streams: Vec<&'static str>,
}

/// The control plane: clone it into the test to script it.
#[derive(Clone)]
pub struct ControlPlane {
    world: Arc<Mutex<World>>,
    changed: watch::Sender<u64>,
    /// Bumped by `stop`: streams of an earlier epoch end with UNAVAILABLE.
    epoch: watch::Sender<u64>,
    delta: bool,
}

impl ControlPlane {
    /// `delta: false` answers DeltaAggregatedResources with UNIMPLEMENTED.
    pub fn new(delta: bool) -> Self {
        ControlPlane {
            world: Arc::default(),
            changed: watch::Sender::new(0),
            epoch: watch::Sender::new(0),
            delta,
        }
    }

    pub fn set<M: Message + Name>(&self, name: &str, m: &M) {
        let mut w = self.world.lock().unwrap();
        w.next_version += 1;
        let v = w.next_version;
        w.resources
            .entry(M::type_url())
            .or_default()
            .insert(name.into(), (v, any(m)));
        drop(w);
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn remove(&self, type_url: &str, name: &str) {
        let mut w = self.world.lock().unwrap();
        if let Some(m) = w.resources.get_mut(type_url) {
            m.remove(name);
        }
        drop(w);
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn answers(&self) -> Vec<Answer> {
        self.world.lock().unwrap().answers.clone()
    }

    pub fn streams(&self) -> Vec<&'static str> {
        self.world.lock().unwrap().streams.clone()
    }

    /// Serves on `listener` until `stop` (or the sender is dropped).
    pub fn serve(&self, listener: TcpListener) -> oneshot::Sender<()> {
        let (stop, stopped) = oneshot::channel::<()>();
        let epoch = self.epoch.clone();
        let stopped = async move {
            let _ = stopped.await;
            // As a crash: open streams end too, not only the listener.
            epoch.send_modify(|e| *e += 1);
        };
        let svc = AggregatedDiscoveryServiceServer::new(self.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped)
                .await;
        });
        stop
    }

    /// (name, version, resource) of `type_url`, for `names` (None: all).
    fn current(&self, type_url: &str, names: Option<&BTreeSet<String>>) -> Vec<(String, u64, Any)> {
        let w = self.world.lock().unwrap();
        w.resources
            .get(type_url)
            .into_iter()
            .flatten()
            .filter(|(n, _)| names.is_none_or(|s| s.contains(*n)))
            .map(|(n, (v, a))| (n.clone(), *v, a.clone()))
            .collect()
    }

    fn record(&self, type_url: &str, nonce: &str, error: Option<String>) {
        if nonce.is_empty() {
            return;
        }
        self.world.lock().unwrap().answers.push(Answer {
            type_url: type_url.into(),
            error,
        });
    }
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What one stream subscribed to: None = wildcard.
type Subs = HashMap<String, Option<BTreeSet<String>>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for ControlPlane {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.world.lock().unwrap().streams.push("sotw");
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let cp = self.clone();
        tokio::spawn(async move {
            let mut changed = cp.changed.subscribe();
            let mut epoch = cp.epoch.subscribe();
            let mut subs: Subs = HashMap::new();
            // What was last sent per type: (name, version) pairs.
            let mut sent: HashMap<String, Vec<(String, u64)>> = HashMap::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    req = incoming.message() => {
                        let Ok(Some(req)) = req else { return };
                        cp.record(&req.type_url, &req.response_nonce, req.error_detail.map(|e| e.message));
                        let names: BTreeSet<String> = req.resource_names.into_iter().collect();
                        let wildcard = names.is_empty() && (req.type_url == CLUSTER || req.type_url == LISTENER);
                        subs.insert(req.type_url.clone(), (!wildcard).then_some(names));
                    }
                    c = changed.changed() => { if c.is_err() { return } }
                    _ = epoch.changed() => {
                        let _ = tx.send(Err(Status::unavailable("the control plane stopped"))).await;
                        return;
                    }
                }
                for (type_url, names) in &subs {
                    let now = cp.current(type_url, names.as_ref());
                    let key: Vec<(String, u64)> =
                        now.iter().map(|(n, v, _)| (n.clone(), *v)).collect();
                    if sent.get(type_url) == Some(&key) {
                        continue;
                    }
                    sent.insert(type_url.clone(), key);
                    nonce += 1;
                    let version = now.iter().map(|r| r.1).max().unwrap_or(0);
                    let resp = DiscoveryResponse {
                        version_info: format!("v{version}"),
                        resources: now.into_iter().map(|r| r.2).collect(),
                        type_url: type_url.clone(),
                        nonce: format!("n{nonce}"),
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        if !self.delta {
            return Err(Status::unimplemented("delta xDS is not implemented here"));
        }
        self.world.lock().unwrap().streams.push("delta");
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let cp = self.clone();
        tokio::spawn(async move {
            let mut changed = cp.changed.subscribe();
            let mut epoch = cp.epoch.subscribe();
            let mut subs: Subs = HashMap::new();
            // Per type: name → version sent.
            let mut sent: HashMap<String, BTreeMap<String, u64>> = HashMap::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    req = incoming.message() => {
                        let Ok(Some(req)) = req else { return };
                        cp.record(&req.type_url, &req.response_nonce, req.error_detail.map(|e| e.message));
                        let first = !subs.contains_key(&req.type_url);
                        let entry = subs.entry(req.type_url.clone()).or_insert_with(|| {
                            if req.resource_names_subscribe.is_empty() { None } else { Some(BTreeSet::new()) }
                        });
                        if let Some(set) = entry {
                            set.extend(req.resource_names_subscribe.iter().cloned());
                            for n in &req.resource_names_unsubscribe {
                                set.remove(n);
                                sent.entry(req.type_url.clone()).or_default().remove(n);
                            }
                        }
                        if first {
                            // What the client already has (after a reconnect).
                            let known = sent.entry(req.type_url.clone()).or_default();
                            for (n, v) in &req.initial_resource_versions {
                                if let Some(v) = v.strip_prefix('v').and_then(|v| v.parse().ok()) {
                                    known.insert(n.clone(), v);
                                }
                            }
                        }
                    }
                    c = changed.changed() => { if c.is_err() { return } }
                    _ = epoch.changed() => {
                        let _ = tx.send(Err(Status::unavailable("the control plane stopped"))).await;
                        return;
                    }
                }
                for (type_url, names) in &subs {
                    let now = cp.current(type_url, names.as_ref());
                    let known = sent.entry(type_url.clone()).or_default();
                    let mut resources = Vec::new();
                    for (n, v, a) in &now {
                        if known.get(n) != Some(v) {
                            known.insert(n.clone(), *v);
                            resources.push(Resource {
                                name: n.clone(),
                                version: format!("v{v}"),
                                resource: Some(a.clone()),
                                ..Default::default()
                            });
                        }
                    }
                    let present: BTreeSet<&String> = now.iter().map(|r| &r.0).collect();
                    let removed: Vec<String> = known
                        .keys()
                        .filter(|n| !present.contains(n))
                        .cloned()
                        .collect();
                    for n in &removed {
                        known.remove(n);
                    }
                    if resources.is_empty() && removed.is_empty() {
                        continue;
                    }
                    nonce += 1;
                    let resp = DeltaDiscoveryResponse {
                        resources,
                        removed_resources: removed,
                        type_url: type_url.clone(),
                        nonce: format!("n{nonce}"),
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A TLS connection as tonic's server takes it.
struct TlsIo(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl ControlPlane {
    /// Serves over TLS (ALPN h2) with `config` on `listener`; the number of
    /// handshakes that completed is counted in the returned watch.
    pub fn serve_tls(
        &self,
        listener: TcpListener,
        mut config: rustls::ServerConfig,
    ) -> watch::Receiver<u64> {
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (handshakes, seen) = watch::channel(0u64);
        let (tx, rx) = mpsc::channel::<Result<TlsIo, std::io::Error>>(4);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, tx, handshakes) = (acceptor.clone(), tx.clone(), handshakes.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        handshakes.send_modify(|n| *n += 1);
                        let _ = tx.send(Ok(TlsIo(tls))).await;
                    }
                });
            }
        });
        let svc = AggregatedDiscoveryServiceServer::new(self.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(ReceiverStream::new(rx))
                .await;
        });
        seen
    }
}

//! The resources the control plane sent, translated, and their assembly
//! into whole listeners and clusters (make-before-break: a listener is
//! used only once its routes, their clusters and those clusters'
//! endpoints are all here; until then its last applied version serves).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;

use super::decode;
use super::translate_cluster::{self, XCluster};
use super::translate_listener::{self, Routes, XListener};
use super::translate_route::{self, Target, XRoute};
use super::{Kind, Snapshot};
use crate::config::{
    Cluster, EndpointAddr, Listener, ListenerProtocol, RouteAction, Traffic,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_HEALTH_PATH,
};

/// A resource as translated.
#[derive(Debug)]
pub enum Value {
    Cluster(Box<XCluster>),
    Endpoint(Vec<EndpointAddr>),
    Listener(XListener),
    Route(Vec<XRoute>),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub version: String,
    /// The resource as it came, to tell a resend from a change.
    pub bytes: Arc<[u8]>,
    pub value: Arc<Value>,
}

/// A resource that did not translate: its name when it decoded that far.
#[derive(Debug)]
pub struct Rejected {
    pub name: Option<String>,
    pub why: String,
}

/// Decodes and translates one resource. `Ok` carries the fields torii
/// ignored.
pub fn translate(kind: Kind, any: &Any) -> Result<(String, Value, Vec<String>), Rejected> {
    use envoy_types::pb::envoy::config::{cluster, endpoint, listener, route};
    let mut ignored = Vec::new();
    let bad = |name: &str, why: String| Rejected {
        name: Some(name.to_string()).filter(|n| !n.is_empty()),
        why,
    };
    let undecodable = |why: String| Rejected { name: None, why };
    let full = &kind.type_url()["type.googleapis.com/".len()..];
    let (name, value) = match kind {
        Kind::Cluster => {
            let c: cluster::v3::Cluster = decode(any, full).map_err(undecodable)?;
            let x = translate_cluster::cluster(&c, &mut ignored).map_err(|e| bad(&c.name, e))?;
            (c.name, Value::Cluster(Box::new(x)))
        }
        Kind::Endpoint => {
            let c: endpoint::v3::ClusterLoadAssignment = decode(any, full).map_err(undecodable)?;
            if c.cluster_name.is_empty() {
                return Err(bad("", "cluster_name is empty".into()));
            }
            let eps = translate_cluster::endpoints(&c, &mut ignored)
                .map_err(|e| bad(&c.cluster_name, e))?;
            (c.cluster_name, Value::Endpoint(eps))
        }
        Kind::Listener => {
            let l: listener::v3::Listener = decode(any, full).map_err(undecodable)?;
            let x = translate_listener::listener(&l, &mut ignored).map_err(|e| bad(&l.name, e))?;
            (l.name, Value::Listener(x))
        }
        Kind::Route => {
            let r: route::v3::RouteConfiguration = decode(any, full).map_err(undecodable)?;
            if r.name.is_empty() {
                return Err(bad("", "name is empty".into()));
            }
            let x = translate_route::route_configuration(&r, &mut ignored)
                .map_err(|e| bad(&r.name, e))?;
            (r.name, Value::Route(x))
        }
    };
    Ok((name, value, ignored))
}

#[derive(Debug, Clone, Default)]
pub struct Cache {
    pub resources: BTreeMap<Kind, BTreeMap<String, Entry>>,
    /// What the last applied snapshot held, by name.
    applied_listeners: Arc<HashMap<String, Listener>>,
    applied_clusters: Arc<HashMap<String, Arc<Cluster>>>,
}

/// A snapshot and what it still waits for.
pub struct Assembled {
    pub snapshot: Snapshot,
    /// Why listeners or clusters are not (yet, or not in this version) used.
    pub waiting: Vec<String>,
}

impl Cache {
    pub fn get(&self, kind: Kind, name: &str) -> Option<&Entry> {
        self.resources.get(&kind).and_then(|m| m.get(name))
    }

    pub fn insert(&mut self, kind: Kind, name: String, entry: Entry) {
        self.resources.entry(kind).or_default().insert(name, entry);
    }

    pub fn remove(&mut self, kind: Kind, name: &str) -> bool {
        self.resources
            .get_mut(&kind)
            .is_some_and(|m| m.remove(name).is_some())
    }

    pub fn names(&self, kind: Kind) -> Vec<String> {
        self.resources
            .get(&kind)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn values(&self, kind: Kind) -> impl Iterator<Item = (&String, &Value)> {
        self.resources
            .get(&kind)
            .into_iter()
            .flatten()
            .map(|(n, e)| (n, &*e.value))
    }

    /// The names of `kind` the cached resources refer to: route
    /// configurations (RDS) of listeners, assignments (EDS) of clusters.
    pub fn wanted(&self, kind: Kind) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        match kind {
            Kind::Route => {
                for (_, v) in self.values(Kind::Listener) {
                    if let Value::Listener(XListener {
                        routes: Routes::Rds(n),
                        ..
                    }) = v
                    {
                        out.insert(n.clone());
                    }
                }
            }
            Kind::Endpoint => {
                for (_, v) in self.values(Kind::Cluster) {
                    if let Value::Cluster(x) = v {
                        let Some(n) = &x.eds else { continue };
                        out.insert(n.clone());
                    }
                }
            }
            Kind::Cluster | Kind::Listener => {}
        }
        out
    }

    /// Remembers what was applied: a listener that later waits for a
    /// resource keeps serving as it was.
    pub fn applied(&mut self, snapshot: &Snapshot) {
        self.applied_listeners = Arc::new(
            snapshot
                .listeners
                .iter()
                .map(|l| (l.name.clone(), l.clone()))
                .collect(),
        );
        self.applied_clusters = Arc::new(
            snapshot
                .clusters
                .iter()
                .map(|c| (c.name.clone(), c.clone()))
                .collect(),
        );
    }

    pub fn assemble(&self) -> Assembled {
        let mut waiting = Vec::new();
        let mut clusters: BTreeMap<String, Arc<Cluster>> = BTreeMap::new();
        for (name, v) in self.values(Kind::Cluster) {
            let Value::Cluster(x) = v else { continue };
            let cluster = match &x.eds {
                None => Arc::new(x.cluster.clone()),
                Some(service) => match self.get(Kind::Endpoint, service).map(|e| &*e.value) {
                    Some(Value::Endpoint(eps)) => Arc::new(Cluster {
                        endpoints: eps.clone(),
                        ..x.cluster.clone()
                    }),
                    _ => {
                        waiting.push(format!(
                            "cluster {name:?} waits for its ClusterLoadAssignment {service:?}"
                        ));
                        match self.applied_clusters.get(name) {
                            Some(old) => old.clone(),
                            None => continue,
                        }
                    }
                },
            };
            clusters.insert(name.clone(), cluster);
        }
        let mut listeners = Vec::new();
        for (name, v) in self.values(Kind::Listener) {
            let Value::Listener(x) = v else { continue };
            match self.listener(x, &clusters) {
                Ok(l) => listeners.push(l),
                Err(why) => {
                    waiting.push(format!("listener {name:?} waits for {why}"));
                    if let Some(old) = self.applied_listeners.get(name) {
                        // Its clusters stay until it no longer needs them.
                        for c in route_clusters(old) {
                            clusters.entry(c.name.clone()).or_insert(c);
                        }
                        listeners.push(old.clone());
                    }
                }
            }
        }
        Assembled {
            snapshot: Snapshot {
                listeners,
                clusters: clusters.into_values().collect(),
            },
            waiting,
        }
    }

    /// The listener, if everything it refers to is here; else what it waits for.
    fn listener(
        &self,
        x: &XListener,
        clusters: &BTreeMap<String, Arc<Cluster>>,
    ) -> Result<Listener, String> {
        let routes = match &x.routes {
            Routes::Inline(r) => r,
            Routes::Rds(name) => match self.get(Kind::Route, name).map(|e| &*e.value) {
                Some(Value::Route(r)) => r,
                _ => return Err(format!("its RouteConfiguration {name:?}")),
            },
        };
        let find = |c: &str| {
            clusters
                .get(c)
                .cloned()
                .ok_or_else(|| format!("cluster {c:?} (named by its routes)"))
        };
        let mut out = Vec::with_capacity(routes.len());
        for r in routes {
            let mut route = r.route.clone();
            match &r.target {
                Target::Direct => {}
                Target::Cluster(c) => route.action = RouteAction::Cluster(find(c)?),
                Target::Weighted(w) => {
                    let mut picks = Vec::with_capacity(w.len());
                    for (c, weight) in w {
                        picks.push((find(c)?, *weight));
                    }
                    route.action = RouteAction::Weighted(picks);
                }
            }
            out.push(route);
        }
        Ok(Listener {
            name: x.name.clone(),
            address: x.address,
            protocol: ListenerProtocol::Auto,
            tls: x.tls.as_deref().cloned(),
            health_path: DEFAULT_HEALTH_PATH.to_string(),
            allow_encoded_slashes: false,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            routes: out,
            traffic: Traffic::default(),
            json_transcoding: None,
            grpc_web: true,
            cors: None,
        })
    }
}

fn route_clusters(l: &Listener) -> Vec<Arc<Cluster>> {
    let mut out = Vec::new();
    for r in &l.routes {
        match &r.action {
            RouteAction::Cluster(c) => out.push(c.clone()),
            RouteAction::Weighted(w) => out.extend(w.iter().map(|(c, _)| c.clone())),
            RouteAction::Direct { .. } => {}
        }
    }
    out
}

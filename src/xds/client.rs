//! The ADS stream: delta xDS first, state of the world when the server
//! answers UNIMPLEMENTED; ACK/NACK per response; reconnects with
//! exponential backoff, the cache (and what it applied) kept meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{node::UserAgentVersionType, Node};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

use super::cache::{translate, Cache, Entry};
use super::{connect, Apply, Kind, Status};
use crate::config::XdsSource;
use crate::telemetry::metrics::XdsLabels;
use crate::telemetry::Metrics;

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Large route tables and endpoint lists come in one message.
const MAX_MESSAGE: usize = 64 << 20;
const RESOURCE_WRAPPER: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";
/// Requests for the wildcard types first, clusters before listeners, as
/// Envoy asks (a listener's clusters are then known sooner).
const ORDER: [Kind; 4] = [Kind::Cluster, Kind::Endpoint, Kind::Listener, Kind::Route];

type Client = AggregatedDiscoveryServiceClient<Channel>;

pub async fn run(source: XdsSource, status: Arc<Status>, metrics: Arc<Metrics>, apply: Apply) {
    let mut engine = Engine {
        cache: Cache::default(),
        status,
        metrics,
        apply,
        listeners_answered: false,
    };
    let mut sotw = false;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let (why, answered) = session(&source, &mut engine, &mut sotw).await;
        if answered {
            backoff = FIRST_BACKOFF;
        }
        tracing::warn!(server = %source.server, retry_in = ?backoff, "xDS: {why}");
        engine.status.down(why);
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// ±20%, so a fleet that lost its control plane does not return in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.8..1.2))
}

fn node(source: &XdsSource) -> Node {
    Node {
        id: source.node_id.clone(),
        cluster: source.node_cluster.clone(),
        user_agent_name: "torii".into(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").into(),
        )),
        ..Default::default()
    }
}

fn error_detail(why: Option<String>) -> Option<RpcStatus> {
    why.map(|message| RpcStatus {
        code: Code::InvalidArgument as i32,
        message,
        details: Vec::new(),
    })
}

fn describe(s: &tonic::Status) -> String {
    format!("the stream ended: {:?}: {}", s.code(), s.message())
}

/// One connection; returns why it ended and whether the server answered.
async fn session(source: &XdsSource, engine: &mut Engine, sotw: &mut bool) -> (String, bool) {
    let channel = match connect::channel(source).await {
        Ok(c) => c,
        Err(e) => return (e, false),
    };
    let mut client = Client::new(channel).max_decoding_message_size(MAX_MESSAGE);
    if !*sotw {
        match delta(&mut client, source, engine).await {
            Some(ended) => return ended,
            None => {
                tracing::info!(server = %source.server, "xDS: the server does not implement delta xDS; using state of the world");
                *sotw = true;
            }
        }
    }
    state_of_the_world(&mut client, source, engine).await
}

/// A delta stream; `None` when the server does not implement delta xDS.
async fn delta(
    client: &mut Client,
    source: &XdsSource,
    engine: &mut Engine,
) -> Option<(String, bool)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut subscribed: BTreeMap<Kind, BTreeSet<String>> = BTreeMap::new();
    let mut first = Some(node(source));
    for kind in ORDER {
        let names = if kind.wildcard() {
            BTreeSet::new()
        } else {
            engine.cache.wanted(kind)
        };
        if !kind.wildcard() && names.is_empty() {
            continue;
        }
        let initial = engine
            .cache
            .resources
            .get(&kind)
            .into_iter()
            .flatten()
            .map(|(n, e)| (n.clone(), e.version.clone()))
            .collect();
        let _ = tx.send(DeltaDiscoveryRequest {
            node: first.take(),
            type_url: kind.type_url().into(),
            resource_names_subscribe: names.iter().cloned().collect(),
            initial_resource_versions: initial,
            ..Default::default()
        });
        subscribed.insert(kind, names);
    }
    let mut stream = match client
        .delta_aggregated_resources(UnboundedReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == Code::Unimplemented => return None,
        Err(s) => return Some((describe(&s), false)),
    };
    engine.status.connected("delta");
    tracing::info!(server = %source.server, "xDS: connected (delta)");
    let mut answered = false;
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Some(("the server ended the stream".into(), answered)),
            Err(s) if s.code() == Code::Unimplemented && !answered => return None,
            Err(s) => return Some((describe(&s), answered)),
        };
        answered = true;
        let result = match Kind::from_type_url(&msg.type_url) {
            None => Err(format!("torii did not ask for {}", msg.type_url)),
            Some(kind) => {
                let updates = msg
                    .resources
                    .iter()
                    .filter_map(|r: &Resource| {
                        r.resource.as_ref().map(|any| Update {
                            name: Some(r.name.as_str()),
                            version: r.version.as_str(),
                            any,
                        })
                    })
                    .collect();
                engine
                    .update(kind, updates, &msg.removed_resources, false)
                    .await
            }
        };
        let _ = tx.send(DeltaDiscoveryRequest {
            type_url: msg.type_url.clone(),
            response_nonce: msg.nonce.clone(),
            error_detail: error_detail(result.err()),
            ..Default::default()
        });
        for kind in [Kind::Endpoint, Kind::Route] {
            let want = engine.cache.wanted(kind);
            let have = subscribed.entry(kind).or_default();
            if want == *have {
                continue;
            }
            let gone: Vec<String> = have.difference(&want).cloned().collect();
            for name in &gone {
                engine.forget(kind, name);
            }
            let _ = tx.send(DeltaDiscoveryRequest {
                type_url: kind.type_url().into(),
                resource_names_subscribe: want.difference(have).cloned().collect(),
                resource_names_unsubscribe: gone,
                ..Default::default()
            });
            *have = want;
        }
    }
}

#[derive(Default)]
struct Sotw {
    /// The last version ACKed, and the last nonce seen.
    version: String,
    nonce: String,
    names: BTreeSet<String>,
}

async fn state_of_the_world(
    client: &mut Client,
    source: &XdsSource,
    engine: &mut Engine,
) -> (String, bool) {
    let (tx, rx) = mpsc::unbounded_channel();
    let node = node(source);
    let mut types: BTreeMap<Kind, Sotw> = BTreeMap::new();
    for kind in ORDER {
        let names = engine.cache.wanted(kind);
        if !kind.wildcard() && names.is_empty() {
            continue;
        }
        let _ = tx.send(DiscoveryRequest {
            node: Some(node.clone()),
            type_url: kind.type_url().into(),
            resource_names: names.iter().cloned().collect(),
            ..Default::default()
        });
        types.insert(
            kind,
            Sotw {
                names,
                ..Default::default()
            },
        );
    }
    let mut stream = match client
        .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return (describe(&s), false),
    };
    engine.status.connected("state of the world");
    tracing::info!(server = %source.server, "xDS: connected (state of the world)");
    let mut answered = false;
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return ("the server ended the stream".into(), answered),
            Err(s) => return (describe(&s), answered),
        };
        answered = true;
        let Some(kind) = Kind::from_type_url(&msg.type_url) else {
            let _ = tx.send(DiscoveryRequest {
                node: Some(node.clone()),
                type_url: msg.type_url.clone(),
                response_nonce: msg.nonce.clone(),
                error_detail: error_detail(Some(format!("torii did not ask for {}", msg.type_url))),
                ..Default::default()
            });
            continue;
        };
        let unwrapped: Vec<Any> = msg.resources.iter().map(unwrap).collect();
        let updates = unwrapped
            .iter()
            .map(|any| Update {
                name: None,
                version: msg.version_info.as_str(),
                any,
            })
            .collect();
        let result = engine.update(kind, updates, &[], kind.wildcard()).await;
        let st = types.entry(kind).or_default();
        st.nonce = msg.nonce.clone();
        if result.is_ok() {
            st.version = msg.version_info.clone();
        }
        let _ = tx.send(DiscoveryRequest {
            node: Some(node.clone()),
            version_info: st.version.clone(),
            resource_names: st.names.iter().cloned().collect(),
            type_url: msg.type_url.clone(),
            response_nonce: msg.nonce.clone(),
            error_detail: error_detail(result.err()),
            ..Default::default()
        });
        for kind in [Kind::Endpoint, Kind::Route] {
            let want = engine.cache.wanted(kind);
            let st = types.entry(kind).or_default();
            if want == st.names {
                continue;
            }
            for name in st.names.difference(&want) {
                engine.forget(kind, name);
            }
            st.names = want;
            let _ = tx.send(DiscoveryRequest {
                node: Some(node.clone()),
                version_info: st.version.clone(),
                resource_names: st.names.iter().cloned().collect(),
                type_url: kind.type_url().into(),
                response_nonce: st.nonce.clone(),
                ..Default::default()
            });
        }
    }
}

/// A resource wrapped in `envoy.service.discovery.v3.Resource` (allowed
/// in state-of-the-world responses) is taken out of its wrapper.
fn unwrap(any: &Any) -> Any {
    if any.type_url == RESOURCE_WRAPPER {
        if let Some(inner) = Resource::decode(any.value.as_slice())
            .ok()
            .and_then(|r| r.resource)
        {
            return inner;
        }
    }
    any.clone()
}

struct Update<'a> {
    /// Delta names each resource; state of the world leaves it to the body.
    name: Option<&'a str>,
    version: &'a str,
    any: &'a Any,
}

struct Engine {
    cache: Cache,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    apply: Apply,
    /// Listeners were answered once: until then torii is not ready.
    listeners_answered: bool,
}

impl Engine {
    /// A resource no longer subscribed to.
    fn forget(&mut self, kind: Kind, name: &str) {
        self.cache.remove(kind, name);
        self.status.removed(kind, name);
    }

    /// Takes one response's resources: valid ones are applied (with what
    /// the cache holds of the other types), invalid ones keep their last
    /// valid version and are reported. `Err`: the NACK's error_detail.
    async fn update(
        &mut self,
        kind: Kind,
        updates: Vec<Update<'_>>,
        removed: &[String],
        full_set: bool,
    ) -> Result<(), String> {
        let before = self.cache.clone();
        let mut errors = Vec::new();
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        let mut seen = BTreeSet::new();
        let mut changed = false;
        for u in updates {
            match translate(kind, u.any) {
                Ok((name, value, ignored)) => {
                    if let Some(given) = u.name.filter(|g| *g != name) {
                        let why = format!(
                            "{} {given:?}: the resource inside is named {name:?}",
                            kind.message()
                        );
                        rejected.push((given.to_string(), u.version.to_string(), why.clone()));
                        errors.push(why);
                        continue;
                    }
                    seen.insert(name.clone());
                    let same = self
                        .cache
                        .get(kind, &name)
                        .is_some_and(|e| *e.bytes == *u.any.value);
                    if !same {
                        for field in &ignored {
                            tracing::warn!(
                                version = u.version,
                                "xDS: {} {name:?}: torii ignores {field}",
                                kind.message()
                            );
                        }
                        self.cache.insert(
                            kind,
                            name.clone(),
                            Entry {
                                version: u.version.to_string(),
                                bytes: Arc::from(u.any.value.as_slice()),
                                value: Arc::new(value),
                            },
                        );
                        changed = true;
                    }
                    accepted.push((name, u.version.to_string()));
                }
                Err(rejection) => {
                    let name = rejection.name.or(u.name.map(str::to_string));
                    if let Some(n) = &name {
                        seen.insert(n.clone());
                    }
                    let shown = name.clone().unwrap_or_else(|| "(unnamed)".into());
                    let why = format!("{} {shown:?}: {}", kind.message(), rejection.why);
                    errors.push(why.clone());
                    tracing::warn!(
                        version = u.version,
                        "xDS: rejected {} {shown:?}: {}",
                        kind.message(),
                        rejection.why
                    );
                    if let Some(n) = name {
                        rejected.push((n, u.version.to_string(), why));
                    }
                }
            }
        }
        let mut gone: Vec<String> = removed.to_vec();
        if full_set {
            gone.extend(
                self.cache
                    .names(kind)
                    .into_iter()
                    .filter(|n| !seen.contains(n)),
            );
        }
        for name in &gone {
            if self.cache.remove(kind, name) {
                tracing::info!("xDS: {} {name:?} removed by the server", kind.message());
                changed = true;
            }
        }
        let assembled = self.cache.assemble();
        let mut applied = true;
        if changed {
            match (self.apply)(assembled.snapshot.clone()).await {
                Ok(()) => self.cache.applied(&assembled.snapshot),
                Err(e) => {
                    applied = false;
                    self.cache = before;
                    let why = format!("the update could not be applied: {e}");
                    tracing::warn!("xDS: {why}");
                    for (name, version) in accepted.drain(..) {
                        rejected.push((name, version, why.clone()));
                    }
                    errors.push(why);
                }
            }
        }
        let detail = errors.join("; ");
        for (name, version) in &accepted {
            self.status.accepted(kind, name, version);
        }
        for (name, version, why) in &rejected {
            self.status.rejected(kind, name, version, why);
        }
        if applied {
            for name in &gone {
                self.status.removed(kind, name);
            }
        }
        if kind == Kind::Listener {
            self.listeners_answered = true;
        }
        let waiting = self.cache.assemble().waiting;
        self.status
            .progress(self.listeners_answered && waiting.is_empty(), waiting);
        let result = if errors.is_empty() { "ack" } else { "nack" };
        self.metrics
            .xds_updates
            .get_or_create(&XdsLabels {
                r#type: kind.label(),
                result,
            })
            .inc();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(detail)
        }
    }
}

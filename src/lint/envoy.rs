//! Envoy v3: listeners (TLS contexts, HTTP connection managers and their
//! routes) and the clusters those routes lead to, across every document
//! read (a bootstrap's static_resources, or standalone resources).

use std::collections::HashMap;

use super::tree::{Node, Pos};
use super::{finding, human, seconds, Doc, Finding, Kind};

/// A standalone Envoy resource's kind, by its `@type` or its keys.
pub fn kind_of(node: &Node) -> Option<Kind> {
    if let Some(t) = node.str_at("@type") {
        return match t.rsplit('.').next() {
            Some("Bootstrap") => Some(Kind::EnvoyBootstrap),
            Some("Listener") => Some(Kind::EnvoyListener),
            Some("Cluster") => Some(Kind::EnvoyCluster),
            Some("RouteConfiguration") => Some(Kind::EnvoyRoutes),
            _ => None,
        };
    }
    if node.get("static_resources").is_some() || node.get("dynamic_resources").is_some() {
        Some(Kind::EnvoyBootstrap)
    } else if node.get("filter_chains").is_some() || node.get("default_filter_chain").is_some() {
        Some(Kind::EnvoyListener)
    } else if node.get("virtual_hosts").is_some() {
        Some(Kind::EnvoyRoutes)
    } else if node.get("name").is_some()
        && ["load_assignment", "lb_policy", "connect_timeout", "hosts"]
            .iter()
            .any(|k| node.get(k).is_some())
    {
        Some(Kind::EnvoyCluster)
    } else {
        None
    }
}

struct Located<'a> {
    file: &'a str,
    /// The bootstrap it came from (its clusters are looked up there first).
    scope: Option<usize>,
    node: &'a Node,
}

/// Why a cluster is known to carry gRPC: the first route that sends it some.
struct GrpcUse {
    file: String,
    pos: Pos,
    why: String,
}

/// Clusters by name, a bootstrap's own first.
struct Clusters<'a> {
    all: Vec<Located<'a>>,
}

impl<'a> Clusters<'a> {
    fn find(&self, scope: Option<usize>, name: &str) -> Option<usize> {
        let named = |c: &&Located| c.node.str_at("name") == Some(name);
        let position =
            |pred: &dyn Fn(&Located) -> bool| self.all.iter().position(|c| named(&c) && pred(c));
        position(&|c| c.scope == scope)
            .or_else(|| position(&|c| c.scope.is_none()))
            .or_else(|| position(&|_| true))
    }
}

pub fn check(docs: &[Doc], out: &mut Vec<Finding>) {
    let mut listeners = Vec::new();
    let mut clusters = Clusters { all: Vec::new() };
    let mut route_configs: HashMap<&str, Located> = HashMap::new();
    for (i, doc) in docs.iter().enumerate() {
        let file = doc.file.as_str();
        let node = &doc.node;
        match doc.kind {
            Kind::EnvoyBootstrap => {
                let scope = Some(i);
                let statics = node.get("static_resources");
                for l in statics
                    .and_then(|s| s.get("listeners"))
                    .map_or(&[][..], Node::items)
                {
                    listeners.push(Located {
                        file,
                        scope,
                        node: l,
                    });
                }
                for c in statics
                    .and_then(|s| s.get("clusters"))
                    .map_or(&[][..], Node::items)
                {
                    clusters.all.push(Located {
                        file,
                        scope,
                        node: c,
                    });
                }
            }
            Kind::EnvoyListener => listeners.push(Located {
                file,
                scope: None,
                node,
            }),
            Kind::EnvoyCluster => clusters.all.push(Located {
                file,
                scope: None,
                node,
            }),
            Kind::EnvoyRoutes => {
                if let Some(name) = node.str_at("name") {
                    route_configs.insert(
                        name,
                        Located {
                            file,
                            scope: None,
                            node,
                        },
                    );
                }
            }
            _ => {}
        }
    }
    let mut grpc_clusters: Vec<(usize, GrpcUse)> = Vec::new();

    for l in &listeners {
        let chains = l
            .node
            .get("filter_chains")
            .map_or(&[][..], Node::items)
            .iter()
            .chain(l.node.get("default_filter_chain"));
        for chain in chains {
            if let Some(ts) = chain.get("transport_socket") {
                tls_alpn(l.file, ts, out);
            }
            for filter in chain.get("filters").map_or(&[][..], Node::items) {
                let Some(hcm) = http_connection_manager(filter) else {
                    continue;
                };
                let grpc_filter = grpc_filter(hcm);
                if let Some((file, routes)) = route_config(l.file, hcm, &route_configs) {
                    let at = Scope {
                        file,
                        scope: l.scope,
                        clusters: &clusters,
                    };
                    routes_of(&at, routes, grpc_filter.as_deref(), &mut grpc_clusters, out);
                }
                if grpc_filter.is_some() {
                    hcm_timeouts(l.file, hcm, out);
                }
            }
        }
    }

    let mut reported: Vec<usize> = Vec::new();
    for (index, why) in grpc_clusters {
        if reported.contains(&index) {
            continue;
        }
        reported.push(index);
        let c = &clusters.all[index];
        if speaks_http2(c.node) {
            continue;
        }
        let name = c.node.str_at("name").unwrap_or_default();
        let pos = c.node.key_pos("name").unwrap_or(c.node.pos);
        out.push(finding(
            c.file,
            pos,
            "grpc-upstream-http1",
            format!(
                "cluster {name:?} gets gRPC from the route at {}:{}:{} ({}) but has no HTTP/2 protocol options, so Envoy sends it HTTP/1.1: \
                 clients see 'upstream connect error or disconnect/reset before headers. reset reason: protocol error'",
                why.file, why.pos.line, why.pos.column, why.why
            ),
            "add to the cluster: typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: \
             {\"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, \
             explicit_http_config: {http2_protocol_options: {}}}} (or http2_protocol_options: {} on Envoy before 1.21)"
                .into(),
        ));
    }
}

/// Where a route configuration is, and which clusters its names mean.
struct Scope<'s, 'a> {
    file: &'s str,
    scope: Option<usize>,
    clusters: &'s Clusters<'a>,
}

fn type_of(node: &Node) -> Option<&str> {
    node.get("typed_config").and_then(|t| t.str_at("@type"))
}

/// A `DownstreamTlsContext` that advertises no ALPN or none with h2.
fn tls_alpn(file: &str, ts: &Node, out: &mut Vec<Finding>) {
    let named_tls = ts
        .str_at("name")
        .is_some_and(|n| n.ends_with("transport_sockets.tls") || n == "tls");
    let typed = type_of(ts).is_some_and(|t| t.ends_with("DownstreamTlsContext"));
    if !(typed || named_tls && type_of(ts).is_none_or(|t| !t.contains("Upstream"))) {
        return;
    }
    let Some((typed_key, ctx)) = ts.entry("typed_config") else {
        return;
    };
    let common = ctx.entry("common_tls_context");
    let alpn = common.and_then(|(_, c)| c.entry("alpn_protocols"));
    const SEEN: &str = "Python, C++ and Ruby gRPC clients (C-core) fail with 'Cannot check peer: missing selected ALPN property' \
                        (Go and Java clients still work, which hides the problem)";
    match alpn {
        None => {
            let pos = common.map_or(typed_key.pos, |(k, _)| k.pos);
            out.push(finding(
                file,
                pos,
                "tls-no-alpn",
                format!("this TLS listener advertises no ALPN (Envoy offers none unless alpn_protocols is set): {SEEN}"),
                "add alpn_protocols: [h2, http/1.1] under common_tls_context".into(),
            ));
        }
        Some((key, list)) => {
            let protocols: Vec<&str> = match list.str() {
                Some(text) => text.split(',').map(str::trim).collect(),
                None => list.items().iter().filter_map(Node::str).collect(),
            };
            if !protocols.contains(&"h2") {
                out.push(finding(
                    file,
                    key.pos,
                    "tls-no-alpn",
                    format!(
                        "this TLS listener advertises ALPN [{}] without h2, so gRPC clients cannot select HTTP/2: {SEEN}",
                        protocols.join(", ")
                    ),
                    "put h2 first: alpn_protocols: [h2, http/1.1]".into(),
                ));
            }
        }
    }
}

fn http_connection_manager(filter: &Node) -> Option<&Node> {
    let by_name = filter
        .str_at("name")
        .is_some_and(|n| n.ends_with("http_connection_manager"));
    let by_type = type_of(filter).is_some_and(|t| t.ends_with("HttpConnectionManager"));
    (by_name || by_type).then(|| filter.get("typed_config").or(filter.get("config")))?
}

/// The name of an HTTP filter that means the traffic is gRPC (gRPC-Web,
/// JSON transcoding, the HTTP/1.1 bridge, gRPC stats), if any. The reverse
/// bridge is left out: it turns gRPC into HTTP/1.1 on purpose.
fn grpc_filter(hcm: &Node) -> Option<String> {
    hcm.get("http_filters")
        .map_or(&[][..], Node::items)
        .iter()
        .filter_map(|f| f.str_at("name").or_else(|| type_of(f)))
        .find(|n| {
            [
                "grpc_web",
                "grpc_json_transcoder",
                "grpc_http1_bridge",
                "grpc_stats",
                "GrpcWeb",
                "GrpcJsonTranscoder",
            ]
            .iter()
            .any(|g| n.contains(g))
                && !n.contains("reverse_bridge")
        })
        .map(str::to_string)
}

fn route_config<'a>(
    file: &'a str,
    hcm: &'a Node,
    named: &'a HashMap<&str, Located<'a>>,
) -> Option<(&'a str, &'a Node)> {
    if let Some(inline) = hcm.get("route_config") {
        return Some((file, inline));
    }
    let name = hcm.get("rds").and_then(|r| r.str_at("route_config_name"))?;
    named.get(name).map(|l| (l.file, l.node))
}

/// Whether a route's match is for gRPC: `grpc: {}` or a content-type header
/// that names application/grpc.
fn grpc_match(m: &Node) -> bool {
    if m.get("grpc").is_some() {
        return true;
    }
    m.get("headers")
        .map_or(&[][..], Node::items)
        .iter()
        .any(|h| {
            h.str_at("name")
                .is_some_and(|n| n.eq_ignore_ascii_case("content-type"))
                && text_of(h).contains("application/grpc")
        })
}

/// Every scalar under a node, joined (for a header matcher of any shape).
fn text_of(node: &Node) -> String {
    match node.str() {
        Some(s) => s.to_string(),
        None => node
            .entries()
            .iter()
            .map(|(_, v)| text_of(v))
            .chain(node.items().iter().map(text_of))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// A cluster that announces gRPC itself: a gRPC health check, or a name
/// that says so.
fn grpc_cluster(c: &Node) -> bool {
    let name = c.str_at("name").unwrap_or_default().to_ascii_lowercase();
    let health = c
        .get("health_checks")
        .map_or(&[][..], Node::items)
        .iter()
        .any(|h| h.get("grpc_health_check").is_some());
    health || name.contains("grpc")
}

fn routes_of(
    at: &Scope,
    config: &Node,
    grpc_filter: Option<&str>,
    grpc_clusters: &mut Vec<(usize, GrpcUse)>,
    out: &mut Vec<Finding>,
) {
    for vh in config.get("virtual_hosts").map_or(&[][..], Node::items) {
        for route in vh.get("routes").map_or(&[][..], Node::items) {
            let Some((action_key, action)) = route.entry("route") else {
                continue;
            };
            let mut targets: Vec<&str> = action.str_at("cluster").into_iter().collect();
            if let Some(w) = action.get("weighted_clusters") {
                targets.extend(
                    w.get("clusters")
                        .map_or(&[][..], Node::items)
                        .iter()
                        .filter_map(|c| c.str_at("name")),
                );
            }
            let found: Vec<usize> = targets
                .iter()
                .filter_map(|t| at.clusters.find(at.scope, t))
                .collect();
            let by_match = route.get("match").is_some_and(grpc_match);
            let by_cluster = found
                .iter()
                .find(|i| grpc_cluster(at.clusters.all[**i].node));
            let why = match (grpc_filter, by_match, by_cluster) {
                (Some(f), _, _) => format!("its connection manager has the {f} filter"),
                (None, true, _) => "the route matches gRPC".to_string(),
                (None, false, Some(_)) => {
                    "the cluster has a gRPC health check or a gRPC name".to_string()
                }
                (None, false, None) => continue,
            };
            let pos = route.key_pos("match").unwrap_or(route.pos);
            for i in found {
                grpc_clusters.push((
                    i,
                    GrpcUse {
                        file: at.file.to_string(),
                        pos,
                        why: why.clone(),
                    },
                ));
            }
            route_timeout(at.file, action_key.pos, action, &targets, out);
        }
    }
}

/// A route to a gRPC cluster must turn Envoy's 15 s default route timeout
/// off with `timeout: 0s`.
fn route_timeout(
    file: &str,
    action_pos: Pos,
    action: &Node,
    targets: &[&str],
    out: &mut Vec<Finding>,
) {
    let names = targets
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    match action.entry("timeout") {
        None => out.push(finding(
            file,
            action_pos,
            "stream-timeout",
            format!(
                "this route sends gRPC to {names} without a timeout, so Envoy's default of 15s applies: \
                 every stream (and every slow call) is cut after 15 seconds with 'upstream request timeout' (UNAVAILABLE or DEADLINE_EXCEEDED at the client)"
            ),
            "add timeout: 0s to the route (no route timeout: gRPC calls carry their own deadline in grpc-timeout)".into(),
        )),
        Some((key, value)) => {
            if let Some(s) = seconds(value).filter(|s| *s > 0.0) {
                out.push(finding(
                    file,
                    key.pos,
                    "stream-timeout",
                    format!(
                        "this route sends gRPC to {names} with timeout {}: every stream longer than that is cut with 'upstream request timeout'",
                        human(s)
                    ),
                    "set timeout: 0s (gRPC calls carry their own deadline in grpc-timeout)".into(),
                ));
            }
        }
    }
}

/// Connection-manager timeouts that end streams: `request_timeout` (the
/// whole request) and a short `stream_idle_timeout`.
fn hcm_timeouts(file: &str, hcm: &Node, out: &mut Vec<Finding>) {
    if let Some((key, value)) = hcm.entry("request_timeout") {
        if let Some(s) = seconds(value).filter(|s| *s > 0.0) {
            out.push(finding(
                file,
                key.pos,
                "stream-timeout",
                format!(
                    "request_timeout {} on a connection manager that carries gRPC ends every stream older than that, however busy",
                    human(s)
                ),
                "remove request_timeout (or set it to 0s); bound calls with their grpc-timeout".into(),
            ));
        }
    }
    if let Some((key, value)) = hcm.entry("stream_idle_timeout") {
        if let Some(s) = seconds(value).filter(|s| *s > 0.0 && *s < 300.0) {
            out.push(finding(
                file,
                key.pos,
                "stream-timeout",
                format!(
                    "stream_idle_timeout {} resets any gRPC stream that is quiet that long (a subscription waiting for its next event): \
                     clients see CANCELLED or UNAVAILABLE",
                    human(s)
                ),
                "raise stream_idle_timeout above the longest quiet time of your streams (Envoy's default is 5m), or send keepalive messages".into(),
            ));
        }
    }
}

/// Whether Envoy speaks HTTP/2 to this cluster's endpoints.
fn speaks_http2(c: &Node) -> bool {
    if c.get("http2_protocol_options").is_some() {
        return true;
    }
    let tls = c.get("transport_socket").is_some();
    c.get("typed_extension_protocol_options")
        .map_or(&[][..], Node::entries)
        .iter()
        .any(|(_, opts)| {
            let explicit = opts
                .get("explicit_http_config")
                .is_some_and(|e| e.get("http2_protocol_options").is_some());
            // ALPN picks HTTP/2 only over TLS; in plaintext auto_config is HTTP/1.1.
            let auto = opts.get("auto_config").is_some() && tls;
            explicit || auto || opts.get("use_downstream_protocol_config").is_some()
        })
}

//! Translation of each resource type into torii's model, each reason for
//! a NACK, and the make-before-break assembly.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy as PbLb,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster as PbCluster;
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, HealthStatus, SocketAddress, TransportSocket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, Filter, FilterChain, Listener as PbListener,
};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, weighted_cluster::ClusterWeight, QueryParameterMatcher,
    RedirectAction, Route as PbRoute, RouteAction as PbRouteAction, RouteConfiguration,
    RouteMatch as PbRouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value};
use prost::{Message, Name};

use super::cache::{translate, Cache, Entry};
use super::translate_route::Target;
use super::Kind;
use crate::config::{HostMatch, LbPolicy, PathMatch, RouteAction, UpstreamProtocol};

fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn sock(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn lb(ip: &str, port: u32, health: HealthStatus) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(sock(ip, port)),
            ..Default::default()
        })),
        health_status: health as i32,
        ..Default::default()
    }
}

fn cla(name: &str, groups: Vec<(u32, Vec<LbEndpoint>)>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: groups
            .into_iter()
            .map(|(priority, lb_endpoints)| LocalityLbEndpoints {
                priority,
                lb_endpoints,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn cluster(name: &str, kind: DiscoveryType) -> PbCluster {
    PbCluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
        ..Default::default()
    }
}

fn route_to(prefix: &str, cluster: &str) -> PbRoute {
    PbRoute {
        r#match: Some(PbRouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(PbRouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn vhost(name: &str, domains: &[&str], routes: Vec<PbRoute>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn rc(name: &str, vhosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vhosts,
        ..Default::default()
    }
}

fn filter_of(type_url: &str, optional: bool) -> HttpFilter {
    HttpFilter {
        name: type_url.rsplit('.').next().unwrap().into(),
        is_optional: optional,
        config_type: Some(http_filter::ConfigType::TypedConfig(Any {
            type_url: type_url.into(),
            value: Vec::new(),
        })),
        ..Default::default()
    }
}

const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

fn listener(name: &str, routes: RouteSpecifier, filters: Vec<HttpFilter>) -> PbListener {
    let hcm = HttpConnectionManager {
        route_specifier: Some(routes),
        http_filters: filters,
        ..Default::default()
    };
    PbListener {
        name: name.into(),
        address: Some(sock("127.0.0.1", 0)),
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

fn rds(name: &str) -> RouteSpecifier {
    RouteSpecifier::Rds(Rds {
        route_config_name: name.into(),
        config_source: None,
    })
}

/// The NACK reason for `m`, which must be rejected.
#[track_caller]
fn rejected<M: Message + Name>(kind: Kind, m: &M) -> String {
    match translate(kind, &any(m)) {
        Err(r) => r.why,
        Ok((name, v, _)) => panic!("{name} was accepted: {v:?}"),
    }
}

#[test]
fn clusters_translate() {
    let mut c = cluster("svc", DiscoveryType::Eds);
    c.eds_cluster_config = Some(EdsClusterConfig {
        service_name: "svc-eds".into(),
        eds_config: None,
    });
    c.lb_policy = PbLb::LeastRequest as i32;
    c.connect_timeout = Some(PbDuration {
        seconds: 2,
        nanos: 0,
    });
    #[allow(deprecated)]
    {
        c.http2_protocol_options = Some(Default::default());
    }
    let (name, v, ignored) = translate(Kind::Cluster, &any(&c)).unwrap();
    let super::cache::Value::Cluster(x) = v else {
        panic!()
    };
    assert_eq!(name, "svc");
    assert_eq!(x.eds.as_deref(), Some("svc-eds"));
    assert_eq!(x.cluster.lb, LbPolicy::LeastRequest);
    assert_eq!(x.cluster.protocol, UpstreamProtocol::H2c);
    assert_eq!(x.cluster.connect_timeout, std::time::Duration::from_secs(2));
    assert!(ignored.is_empty(), "{ignored:?}");

    // STATIC takes its endpoints inline; an unsupported lb_policy is noted.
    let mut s = cluster("static", DiscoveryType::Static);
    s.load_assignment = Some(cla(
        "static",
        vec![(0, vec![lb("10.0.0.1", 80, HealthStatus::Unknown)])],
    ));
    s.lb_policy = PbLb::RingHash as i32;
    let (_, v, ignored) = translate(Kind::Cluster, &any(&s)).unwrap();
    let super::cache::Value::Cluster(x) = v else {
        panic!()
    };
    assert_eq!(x.cluster.endpoints.len(), 1);
    assert!(x.eds.is_none());
    assert_eq!(x.cluster.lb, LbPolicy::RoundRobin);
    assert!(ignored[0].contains("RING_HASH"), "{ignored:?}");

    // Outlier detection and circuit breakers, Envoy's defaults for what is
    // left out, torii's for limits not given.
    use envoy_types::pb::envoy::config::cluster::v3::{
        circuit_breakers, CircuitBreakers, OutlierDetection,
    };
    let mut o = cluster("o", DiscoveryType::Eds);
    o.outlier_detection = Some(OutlierDetection {
        consecutive_5xx: Some(UInt32Value { value: 3 }),
        enforcing_success_rate: Some(UInt32Value { value: 0 }),
        ..Default::default()
    });
    o.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            max_requests: Some(UInt32Value { value: 50 }),
            ..Default::default()
        }],
        ..Default::default()
    });
    let (_, v, _) = translate(Kind::Cluster, &any(&o)).unwrap();
    let super::cache::Value::Cluster(x) = v else {
        panic!()
    };
    let od = &x.cluster.outlier_detection;
    assert_eq!((od.consecutive_failures, od.max_ejection_percent), (3, 10));
    assert_eq!(od.base_ejection_time, std::time::Duration::from_secs(30));
    assert_eq!(
        od.success_rate_min_requests, 0,
        "success-rate ejection not enforced"
    );
    assert_eq!(x.cluster.limits.max_requests, 50);

    use envoy_types::pb::envoy::config::core::v3::health_check::{self, HealthChecker};
    let mut h = cluster("h", DiscoveryType::Eds);
    h.health_checks = vec![envoy_types::pb::envoy::config::core::v3::HealthCheck {
        interval: Some(PbDuration {
            seconds: 2,
            nanos: 0,
        }),
        timeout: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        unhealthy_threshold: Some(UInt32Value { value: 2 }),
        health_checker: Some(HealthChecker::GrpcHealthCheck(
            health_check::GrpcHealthCheck {
                service_name: "pkg.Svc".into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }];
    let (_, v, _) = translate(Kind::Cluster, &any(&h)).unwrap();
    let super::cache::Value::Cluster(x) = v else {
        panic!()
    };
    let hc = x.cluster.health_check.as_ref().unwrap();
    assert_eq!(hc.kind, crate::config::HealthCheckType::Grpc);
    assert_eq!(
        (
            hc.service.as_str(),
            hc.unhealthy_threshold,
            hc.healthy_threshold
        ),
        ("pkg.Svc", 2, 1)
    );
    h.health_checks[0].timeout = None;
    let why = rejected(Kind::Cluster, &h);
    assert!(why.contains("health_checks[0].timeout"), "{why}");
    assert_eq!(
        x.cluster.limits.max_connections,
        crate::config::Limits::default().max_connections
    );
}

#[test]
fn clusters_nack_what_would_change_meaning() {
    let why = rejected(Kind::Cluster, &cluster("o", DiscoveryType::OriginalDst));
    assert!(why.contains("ORIGINAL_DST"), "{why}");
    let mut tls = cluster("t", DiscoveryType::Eds);
    tls.transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: None,
    });
    let why = rejected(Kind::Cluster, &tls);
    assert!(
        why.starts_with("transport_socket \"envoy.transport_sockets.tls\""),
        "{why}"
    );
    let why = rejected(Kind::Cluster, &cluster("s", DiscoveryType::Static));
    assert!(why.contains("load_assignment is missing"), "{why}");
    let why = rejected(Kind::Cluster, &cluster("", DiscoveryType::Eds));
    assert!(why.contains("name is empty"), "{why}");
}

#[test]
fn upstream_tls_from_inline_pem_and_sds_refused() {
    use envoy_types::pb::envoy::config::core::v3::{data_source, transport_socket, DataSource};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType, CertificateValidationContext, CommonTlsContext,
        SdsSecretConfig, UpstreamTlsContext,
    };
    let ca = rcgen::generate_simple_self_signed(vec!["xds-tls-ca".to_string()])
        .unwrap()
        .cert
        .pem();
    let inline = |s: &str| DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.into())),
        ..Default::default()
    };
    let mut ctx = UpstreamTlsContext {
        sni: "backend.internal".into(),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline(&ca)),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    let socket = |ctx: &UpstreamTlsContext| TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(ctx))),
    };
    let mut c = cluster("tls", DiscoveryType::Eds);
    #[allow(deprecated)]
    {
        c.http2_protocol_options = Some(Default::default());
    }
    c.transport_socket = Some(socket(&ctx));
    let (_, v, _) = translate(Kind::Cluster, &any(&c)).unwrap();
    let super::cache::Value::Cluster(x) = v else {
        panic!()
    };
    let tls = x.cluster.tls.as_ref().unwrap();
    assert_eq!(tls.roots.len(), 1);
    assert_eq!(tls.server_name.as_deref(), Some("backend.internal"));
    assert_eq!(x.cluster.protocol, UpstreamProtocol::H2, "HTTP/2 over TLS");

    ctx.common_tls_context
        .as_mut()
        .unwrap()
        .tls_certificate_sds_secret_configs = vec![SdsSecretConfig::default()];
    c.transport_socket = Some(socket(&ctx));
    let why = rejected(Kind::Cluster, &c);
    assert!(why.contains("not from SDS"), "{why}");
}

#[test]
fn endpoints_fail_over_by_priority_and_skip_unhealthy() {
    let a = cla(
        "svc",
        vec![
            (
                0,
                vec![
                    lb("10.0.0.1", 80, HealthStatus::Unhealthy),
                    lb("10.0.0.2", 80, HealthStatus::Draining),
                ],
            ),
            (
                1,
                vec![
                    lb("10.0.1.1", 80, HealthStatus::Healthy),
                    lb("::1", 81, HealthStatus::Unknown),
                ],
            ),
        ],
    );
    let (_, v, _) = translate(Kind::Endpoint, &any(&a)).unwrap();
    let super::cache::Value::Endpoint(eps) = v else {
        panic!()
    };
    let hosts: Vec<String> = eps
        .iter()
        .map(|e| format!("{}:{}", e.host, e.port))
        .collect();
    assert_eq!(hosts, ["10.0.1.1:80", "::1:81"]);

    let mut named = cla(
        "svc",
        vec![(0, vec![lb("10.0.0.1", 80, HealthStatus::Healthy)])],
    );
    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) =
        &mut named.endpoints[0].lb_endpoints[0].host_identifier
    else {
        panic!()
    };
    if let Some(address::Address::SocketAddress(sa)) =
        ep.address.as_mut().and_then(|a| a.address.as_mut())
    {
        sa.port_specifier = Some(socket_address::PortSpecifier::NamedPort("http".into()));
    }
    let why = rejected(Kind::Endpoint, &named);
    assert!(why.contains("endpoints[0].lb_endpoints[0]"), "{why}");
    assert!(why.contains("port_value"), "{why}");
}

#[test]
fn virtual_hosts_keep_envoys_order() {
    let r = rc(
        "main",
        vec![
            vhost("any", &["*"], vec![route_to("/", "fallback")]),
            vhost("wild", &["*.example.com"], vec![route_to("/", "wild")]),
            vhost(
                "api",
                &["api.example.com", "API.example.com:8080"],
                vec![route_to("/v1/", "api")],
            ),
        ],
    );
    let (_, v, _) = translate(Kind::Route, &any(&r)).unwrap();
    let super::cache::Value::Route(routes) = v else {
        panic!()
    };
    let shown: Vec<String> = routes
        .iter()
        .map(|x| {
            let host = match &x.route.matcher.host {
                Some(HostMatch::Exact(h)) => h.clone(),
                Some(HostMatch::Suffix(s)) => format!("*{s}"),
                None => "*".into(),
            };
            let to = match &x.target {
                Target::Cluster(c) => c.clone(),
                Target::Direct => "404".into(),
                Target::Weighted(_) => "weighted".into(),
            };
            format!("{host} {to}")
        })
        .collect();
    // The port-qualified domain is the same host; a host's routes end
    // with a 404 so it does not fall through to the wildcard's.
    assert_eq!(
        shown,
        [
            "api.example.com api",
            "api.example.com 404",
            "*.example.com wild",
            "*.example.com 404",
            "* fallback"
        ]
    );
    assert!(matches!(
        routes[0].route.matcher.path,
        Some(PathMatch::Prefix(ref p)) if p == "/v1/"
    ));
    assert!(matches!(
        routes[1].route.action,
        RouteAction::Direct { status: 404, .. }
    ));
}

#[test]
fn routes_translate_matches_and_actions() {
    let mut insensitive = route_to("/Api", "c");
    let m = insensitive.r#match.as_mut().unwrap();
    m.case_sensitive = Some(BoolValue { value: false });
    m.grpc = Some(Default::default());
    let mut weighted = route_to("/w", "");
    weighted.action = Some(route::Action::Route(PbRouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster {
                clusters: vec![
                    ClusterWeight {
                        name: "a".into(),
                        weight: Some(UInt32Value { value: 90 }),
                        ..Default::default()
                    },
                    ClusterWeight {
                        name: "b".into(),
                        weight: Some(UInt32Value { value: 10 }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        )),
        timeout: Some(PbDuration {
            seconds: 3,
            nanos: 0,
        }),
        prefix_rewrite: "/x".into(),
        ..Default::default()
    }));
    let r = rc("r", vec![vhost("v", &["*"], vec![insensitive, weighted])]);
    let (_, v, _) = translate(Kind::Route, &any(&r)).unwrap();
    let super::cache::Value::Route(routes) = v else {
        panic!()
    };
    let Some(PathMatch::Regex(re)) = &routes[0].route.matcher.path else {
        panic!("{:?}", routes[0].route.matcher.path)
    };
    assert!(re.is_match("/api/x") && re.is_match("/API") && !re.is_match("/x/api"));
    assert_eq!(routes[0].route.matcher.headers[0].name, "content-type");
    assert!(matches!(&routes[1].target, Target::Weighted(w) if w.len() == 2 && w[0].1 == 90));
    assert_eq!(
        routes[1].route.timeout,
        Some(std::time::Duration::from_secs(3))
    );
    assert_eq!(routes[1].route.prefix_rewrite.as_deref(), Some("/x"));
    assert!(routes[0].route.retry.is_none());
}

#[test]
fn retry_policies_translate() {
    use envoy_types::pb::envoy::config::route::v3::RetryPolicy;
    let mut r = route_to("/", "c");
    if let Some(route::Action::Route(a)) = &mut r.action {
        a.retry_policy = Some(RetryPolicy {
            retry_on: "unavailable,resource-exhausted,connect-failure,retriable-4xx".into(),
            num_retries: Some(UInt32Value { value: 2 }),
            per_try_timeout: Some(PbDuration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        });
    }
    let mut vh = vhost("v", &["*"], vec![r, route_to("/other", "c")]);
    vh.retry_policy = Some(RetryPolicy {
        retry_on: "5xx".into(),
        ..Default::default()
    });
    let (_, v, ignored) = translate(Kind::Route, &any(&rc("r", vec![vh]))).unwrap();
    let super::cache::Value::Route(routes) = v else {
        panic!()
    };
    let p = routes[0].route.retry.as_ref().unwrap();
    assert_eq!(p.attempts, 3);
    assert_eq!(p.per_try_timeout, Some(std::time::Duration::from_secs(1)));
    assert!(
        p.on.connect_failure && p.on.grpc_status(14).is_some() && p.on.grpc_status(8).is_some()
    );
    assert!(
        ignored.iter().any(|i| i.contains("retriable-4xx")),
        "{ignored:?}"
    );
    // The virtual host's policy is the default of a route without one.
    let p = routes[1].route.retry.as_ref().unwrap();
    assert!(p.on.http_5xx && p.attempts == 2);
}

#[test]
fn routes_nack_what_torii_cannot_honour() {
    let with = |f: &dyn Fn(&mut PbRoute)| {
        let mut r = route_to("/", "c");
        f(&mut r);
        rejected(Kind::Route, &rc("r", vec![vhost("v", &["*"], vec![r])]))
    };
    let why = with(&|r| {
        r.r#match.as_mut().unwrap().query_parameters = vec![QueryParameterMatcher::default()]
    });
    assert!(
        why.contains("virtual_hosts[0] (\"v\").routes[0].match.query_parameters"),
        "{why}"
    );
    let why = with(&|r| r.action = Some(route::Action::Redirect(RedirectAction::default())));
    assert!(why.contains(".redirect"), "{why}");
    let why = with(&|r| {
        r.action = Some(route::Action::Route(PbRouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::ClusterHeader("x".into())),
            ..Default::default()
        }))
    });
    assert!(why.contains("cluster_header"), "{why}");
    let why = rejected(
        Kind::Route,
        &rc("r", vec![vhost("v", &["foo.*"], vec![route_to("/", "c")])]),
    );
    assert!(
        why.contains("domains[0] \"foo.*\": prefix wildcards"),
        "{why}"
    );
}

#[test]
fn listeners_translate_and_nack() {
    let ok = listener("in", rds("routes"), vec![filter_of(ROUTER, false)]);
    let (name, v, _) = translate(Kind::Listener, &any(&ok)).unwrap();
    assert_eq!(name, "in");
    assert!(matches!(
        v,
        super::cache::Value::Listener(ref x) if matches!(x.routes, super::translate_listener::Routes::Rds(ref n) if n == "routes")
    ));

    // An optional filter torii lacks is skipped; a required one refuses.
    let fault = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
    let optional = listener(
        "in",
        rds("r"),
        vec![filter_of(fault, true), filter_of(ROUTER, false)],
    );
    let (_, _, ignored) = translate(Kind::Listener, &any(&optional)).unwrap();
    assert!(ignored[0].contains(fault), "{ignored:?}");
    let why = rejected(
        Kind::Listener,
        &listener(
            "in",
            rds("r"),
            vec![filter_of(fault, false), filter_of(ROUTER, false)],
        ),
    );
    assert!(
        why.contains("http_filters[0]") && why.contains(fault),
        "{why}"
    );
    let why = rejected(Kind::Listener, &listener("in", rds("r"), vec![]));
    assert!(why.contains("no router"), "{why}");

    let mut two = ok.clone();
    two.filter_chains.push(two.filter_chains[0].clone());
    let why = rejected(Kind::Listener, &two);
    assert!(
        why.starts_with("filter_chains: torii serves one filter chain"),
        "{why}"
    );
    let mut tls = ok.clone();
    tls.filter_chains[0].transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: None,
    });
    let why = rejected(Kind::Listener, &tls);
    assert!(why.contains("filter_chains[0].transport_socket"), "{why}");
    let mut host = ok.clone();
    host.address = Some(sock("localhost", 80));
    let why = rejected(Kind::Listener, &host);
    assert!(why.contains("not an IP address"), "{why}");
}

fn put<M: Message + Name>(cache: &mut Cache, kind: Kind, m: &M) {
    let a = any(m);
    let (name, value, _) = translate(kind, &a).unwrap();
    cache.insert(
        kind,
        name,
        Entry {
            version: "1".into(),
            bytes: Arc::from(a.value.as_slice()),
            value: Arc::new(value),
        },
    );
}

#[test]
fn a_listener_waits_for_its_routes_clusters_and_endpoints() {
    let mut cache = Cache::default();
    put(
        &mut cache,
        Kind::Listener,
        &listener("in", rds("routes"), vec![filter_of(ROUTER, false)]),
    );
    let a = cache.assemble();
    assert!(a.snapshot.listeners.is_empty());
    assert!(
        a.waiting[0].contains("RouteConfiguration \"routes\""),
        "{:?}",
        a.waiting
    );

    put(
        &mut cache,
        Kind::Route,
        &rc(
            "routes",
            vec![vhost("v", &["*"], vec![route_to("/", "svc")])],
        ),
    );
    let a = cache.assemble();
    assert!(
        a.snapshot.listeners.is_empty(),
        "never routes to an unknown cluster"
    );
    assert!(a.waiting[0].contains("cluster \"svc\""), "{:?}", a.waiting);

    put(
        &mut cache,
        Kind::Cluster,
        &cluster("svc", DiscoveryType::Eds),
    );
    let a = cache.assemble();
    assert!(a.snapshot.listeners.is_empty() && a.snapshot.clusters.is_empty());
    assert!(
        a.waiting[0].contains("ClusterLoadAssignment \"svc\""),
        "{:?}",
        a.waiting
    );

    put(
        &mut cache,
        Kind::Endpoint,
        &cla(
            "svc",
            vec![(0, vec![lb("10.0.0.1", 80, HealthStatus::Healthy)])],
        ),
    );
    let a = cache.assemble();
    assert!(a.waiting.is_empty(), "{:?}", a.waiting);
    assert_eq!(a.snapshot.listeners.len(), 1);
    assert_eq!(a.snapshot.clusters[0].endpoints.len(), 1);
    cache.applied(&a.snapshot);

    // The routes move to a cluster not sent yet: the applied listener
    // (and the cluster it uses) keep serving meanwhile.
    put(
        &mut cache,
        Kind::Route,
        &rc(
            "routes",
            vec![vhost("v", &["*"], vec![route_to("/", "next")])],
        ),
    );
    cache.remove(Kind::Cluster, "svc");
    let a = cache.assemble();
    assert_eq!(a.snapshot.listeners.len(), 1);
    assert_eq!(a.snapshot.clusters.len(), 1);
    assert_eq!(a.snapshot.clusters[0].name, "svc");
    assert!(a.waiting[0].contains("cluster \"next\""), "{:?}", a.waiting);
}

#[test]
fn listener_tls_alpn_client_auth_and_refusals() {
    use envoy_types::pb::envoy::config::core::v3::DataSource;
    use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, transport_socket};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType as V, CertificateValidationContext,
        CommonTlsContext, DownstreamTlsContext, TlsCertificate,
    };
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = |s: String| {
        Some(DataSource {
            specifier: Some(Specifier::InlineString(s)),
            ..Default::default()
        })
    };
    let mut common = CommonTlsContext {
        tls_certificates: vec![TlsCertificate {
            certificate_chain: pem(cert.cert.pem()),
            private_key: pem(cert.signing_key.serialize_pem()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let tls = |common: &CommonTlsContext, require: bool| {
        let ctx = DownstreamTlsContext {
            common_tls_context: Some(common.clone()),
            require_client_certificate: Some(BoolValue { value: require }),
            ..Default::default()
        };
        let ts = TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
        };
        super::translate_tls::downstream_tls(&ts, "l", &mut Vec::new())
    };
    let t = tls(&common, false).unwrap().unwrap();
    assert_eq!(
        t.alpn,
        [b"h2".to_vec(), b"http/1.1".to_vec()],
        "default ALPN"
    );
    assert!(t.client_auth.is_none());
    let why = tls(&common, true).unwrap_err();
    assert!(why.contains("require_client_certificate"), "{why}");
    common.alpn_protocols = vec!["h2".into()];
    let mut v = CertificateValidationContext {
        trusted_ca: pem(cert.cert.pem()),
        ..Default::default()
    };
    common.validation_context_type = Some(V::ValidationContext(v.clone()));
    let t = tls(&common, true).unwrap().unwrap();
    assert_eq!(t.alpn, [b"h2".to_vec()]);
    assert!(t.client_auth.as_ref().is_some_and(|c| c.required));
    v.match_typed_subject_alt_names = vec![Default::default()];
    common.validation_context_type = Some(V::ValidationContext(v));
    let why = tls(&common, true).unwrap_err();
    assert!(why.contains("match_typed_subject_alt_names"), "{why}");
    common.validation_context_type = None;
    common.tls_certificates[0].private_key =
        pem(rcgen::generate_simple_self_signed(vec!["x".to_string()])
            .unwrap()
            .signing_key
            .serialize_pem());
    let why = tls(&common, false).unwrap_err();
    assert!(why.contains("does not belong to the certificate"), "{why}");
}

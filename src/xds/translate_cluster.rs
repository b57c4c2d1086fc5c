//! Cluster and ClusterLoadAssignment → torii's [`Cluster`] model. A field
//! torii cannot honour is either ignored (noted, logged once per version)
//! or, where ignoring it would change where traffic goes or how it is
//! protected, a rejection naming the field and what torii needs instead.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy as PbLbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers as PbCircuitBreakers, Cluster as PbCluster, OutlierDetection as PbOutlier,
};
use envoy_types::pb::envoy::config::core::v3::health_check::HealthChecker;
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, HealthCheck as PbHealthCheck, HealthStatus,
};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::UpstreamProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

use super::{decode, duration};

use crate::config::{
    Cluster, EndpointAddr, HealthCheck, HealthCheckType, Keepalive, LbPolicy, Limits,
    OutlierDetection, RetryBudget, UpstreamProtocol, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT, DEFAULT_MAX_STREAMS_PER_CONNECTION, MAX_ENDPOINT_WEIGHT,
};

/// The key of the protocol options torii reads from
/// `typed_extension_protocol_options`.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// A cluster as the control plane sent it: complete, or waiting for the
/// ClusterLoadAssignment named `eds`.
#[derive(Debug, Clone)]
pub struct XCluster {
    pub cluster: Cluster,
    pub eds: Option<String>,
}

#[allow(deprecated)] // read only to say they are ignored
pub fn cluster(c: &PbCluster, ignored: &mut Vec<String>) -> Result<XCluster, String> {
    if c.name.is_empty() {
        return Err("name is empty; every cluster needs a name routes can refer to".into());
    }
    let kind = match &c.cluster_discovery_type {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => {
            DiscoveryType::try_from(*t).map_err(|_| format!("type {t} is not a discovery type"))?
        }
        Some(ClusterDiscoveryType::ClusterType(custom)) => {
            return Err(format!(
                "cluster_type {:?}: torii has no custom cluster types; use type EDS, STATIC, \
                 STRICT_DNS or LOGICAL_DNS",
                custom.name
            ))
        }
    };
    let (endpoints, eds) = match kind {
        DiscoveryType::Eds => {
            let service = c
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| c.name.clone());
            (Vec::new(), Some(service))
        }
        DiscoveryType::Static | DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
            let Some(cla) = &c.load_assignment else {
                return Err(format!(
                    "load_assignment is missing; a {} cluster lists its endpoints there",
                    kind.as_str_name()
                ));
            };
            (
                endpoints(cla, ignored).map_err(|e| format!("load_assignment.{e}"))?,
                None,
            )
        }
        DiscoveryType::OriginalDst => {
            return Err(
                "type ORIGINAL_DST: torii does not take original-destination clusters from \
                 xDS; use EDS or STATIC (or an original_destination listener in the file)"
                    .into(),
            )
        }
    };
    let lb = match PbLbPolicy::try_from(c.lb_policy) {
        Ok(PbLbPolicy::RoundRobin) => LbPolicy::RoundRobin,
        Ok(PbLbPolicy::LeastRequest) => LbPolicy::LeastRequest,
        Ok(PbLbPolicy::Random) => LbPolicy::Random,
        other => {
            let name = other.map_or("unknown", |p| p.as_str_name());
            ignored.push(format!(
                "lb_policy {name} (torii balances it ROUND_ROBIN; it has ROUND_ROBIN, \
                 LEAST_REQUEST and RANDOM)"
            ));
            LbPolicy::RoundRobin
        }
    };
    if c.load_balancing_policy.is_some() {
        ignored.push("load_balancing_policy (lb_policy is used)".into());
    }
    let connect_timeout = match &c.connect_timeout {
        None => DEFAULT_CONNECT_TIMEOUT,
        Some(d) => match duration(d) {
            Some(d) if !d.is_zero() => d,
            _ => return Err("connect_timeout must be a positive duration".into()),
        },
    };
    let tls = match &c.transport_socket {
        Some(ts) => super::translate_tls::upstream_tls(ts, ignored)?,
        None => None,
    };
    if !c.transport_socket_matches.is_empty() {
        return Err(
            "transport_socket_matches: torii does not choose TLS per endpoint; leave it empty"
                .into(),
        );
    }
    let protocol = match (protocol(c)?, &tls) {
        (UpstreamProtocol::H2c, Some(_)) => UpstreamProtocol::H2,
        (p, _) => p,
    };
    for (set, field) in [
        (c.lb_subset_config.is_some(), "lb_subset_config"),
        (c.common_lb_config.is_some(), "common_lb_config"),
        (c.upstream_bind_config.is_some(), "upstream_bind_config"),
        (!c.filters.is_empty(), "filters"),
        (
            c.max_requests_per_connection.is_some(),
            "max_requests_per_connection",
        ),
    ] {
        if set {
            ignored.push(field.to_string());
        }
    }
    Ok(XCluster {
        cluster: Cluster {
            name: c.name.clone(),
            endpoints,
            protocol,
            tls,
            lb,
            connect_timeout,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            max_connections_per_endpoint: DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
            health_check: match c.health_checks.as_slice() {
                [] => None,
                [first, rest @ ..] => {
                    if !rest.is_empty() {
                        ignored.push("health_checks beyond the first".into());
                    }
                    Some(health_check(first).map_err(|e| format!("health_checks[0].{e}"))?)
                }
            },
            outlier_detection: c
                .outlier_detection
                .as_ref()
                .map_or_else(OutlierDetection::default, |o| outlier(o, ignored)),
            http2_keepalive: Keepalive::default(),
            retry_budget: RetryBudget::default(),
            limits: c
                .circuit_breakers
                .as_ref()
                .map_or_else(Limits::default, |cb| limits(cb, ignored)),
        },
        eds,
    })
}

/// Envoy's active health check (gRPC, HTTP, TCP) as torii's.
fn health_check(h: &PbHealthCheck) -> Result<HealthCheck, String> {
    let d = |v: &Option<PbDuration>, field: &str| {
        v.as_ref()
            .and_then(duration)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{field} must be a positive duration"))
    };
    let interval = d(&h.interval, "interval")?;
    let timeout = d(&h.timeout, "timeout")?;
    let threshold = |v: Option<&UInt32Value>| v.map_or(1, |v| v.value.clamp(1, 1000));
    let mut check = HealthCheck {
        kind: HealthCheckType::Tcp,
        interval,
        timeout,
        jitter: h
            .interval_jitter
            .as_ref()
            .and_then(duration)
            .unwrap_or(interval / 10),
        service: String::new(),
        path: String::new(),
        expected_statuses: Vec::new(),
        healthy_threshold: threshold(h.healthy_threshold.as_ref()),
        unhealthy_threshold: threshold(h.unhealthy_threshold.as_ref()),
    };
    match &h.health_checker {
        Some(HealthChecker::GrpcHealthCheck(g)) => {
            check.kind = HealthCheckType::Grpc;
            check.service = g.service_name.clone();
        }
        Some(HealthChecker::HttpHealthCheck(http)) => {
            check.kind = HealthCheckType::Http;
            if !http.path.starts_with('/') {
                return Err(format!(
                    "http_health_check.path {:?} must be a path starting with /",
                    http.path
                ));
            }
            check.path = http.path.clone();
            for r in &http.expected_statuses {
                // Envoy's ranges are half-open: [start, end).
                let (Ok(start), Ok(end)) = (u16::try_from(r.start), u16::try_from(r.end)) else {
                    return Err("http_health_check.expected_statuses: ranges of HTTP statuses".into());
                };
                check
                    .expected_statuses
                    .extend((start..end).filter(|s| (100..=599).contains(s)));
            }
        }
        Some(HealthChecker::TcpHealthCheck(t)) if t.send.is_none() && t.receive.is_empty() => {}
        Some(HealthChecker::TcpHealthCheck(_)) => {
            return Err("tcp_health_check: torii checks that a TCP connection opens; send and receive payloads are not supported".into())
        }
        _ => {
            return Err("health_checker: torii has gRPC, HTTP and TCP health checks".into())
        }
    }
    Ok(check)
}

/// Envoy's outlier detection as torii's passive health: consecutive 5xx
/// (torii counts connect failures, resets and UNAVAILABLE too) and success
/// rates, with Envoy's defaults for what is left out.
fn outlier(o: &PbOutlier, ignored: &mut Vec<String>) -> OutlierDetection {
    let n = |v: Option<&UInt32Value>, default: u32| v.map_or(default, |v| v.value);
    let d = |v: &Option<PbDuration>, default: Duration| {
        v.as_ref()
            .and_then(duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(default)
    };
    if o.failure_percentage_threshold.is_some() || o.consecutive_gateway_failure.is_some() {
        ignored.push("outlier_detection failure_percentage / consecutive_gateway_failure".into());
    }
    let consecutive = n(o.enforcing_consecutive_5xx.as_ref(), 100) > 0;
    let success_rate = n(o.enforcing_success_rate.as_ref(), 100) > 0;
    OutlierDetection {
        consecutive_failures: if consecutive {
            n(o.consecutive_5xx.as_ref(), 5)
        } else {
            0
        },
        base_ejection_time: d(&o.base_ejection_time, Duration::from_secs(30)),
        max_ejection_time: d(&o.max_ejection_time, Duration::from_secs(300))
            .max(d(&o.base_ejection_time, Duration::from_secs(30))),
        max_ejection_percent: n(o.max_ejection_percent.as_ref(), 10).min(100),
        interval: d(&o.interval, Duration::from_secs(10)),
        success_rate_min_requests: if success_rate {
            n(o.success_rate_request_volume.as_ref(), 100)
        } else {
            0
        },
        success_rate_min_endpoints: n(o.success_rate_minimum_hosts.as_ref(), 5),
        success_rate_stdev_factor: n(o.success_rate_stdev_factor.as_ref(), 1900),
    }
}

/// The DEFAULT priority's thresholds as the cluster's limits; a threshold
/// left out keeps torii's (far higher) default rather than Envoy's 1024.
fn limits(cb: &PbCircuitBreakers, ignored: &mut Vec<String>) -> Limits {
    let mut out = Limits::default();
    if cb.thresholds.iter().any(|t| t.priority != 0) || !cb.per_host_thresholds.is_empty() {
        ignored.push("circuit_breakers beyond the DEFAULT priority's thresholds".into());
    }
    if let Some(t) = cb.thresholds.iter().find(|t| t.priority == 0) {
        let v = |w: Option<&UInt32Value>, default: usize| w.map_or(default, |w| w.value as usize);
        out.max_connections = v(t.max_connections.as_ref(), out.max_connections);
        out.max_pending_requests = v(t.max_pending_requests.as_ref(), out.max_pending_requests);
        out.max_requests = v(t.max_requests.as_ref(), out.max_requests);
    }
    out
}

/// HTTP/2 to the upstream when the cluster asks for it (the deprecated
/// `http2_protocol_options`, or the typed `HttpProtocolOptions`); HTTP/1.1
/// when it asks for that; otherwise torii's `auto` (HTTP/2 for gRPC).
#[allow(deprecated)]
fn protocol(c: &PbCluster) -> Result<UpstreamProtocol, String> {
    if c.http2_protocol_options.is_some() {
        return Ok(UpstreamProtocol::H2c);
    }
    let Some(any) = c
        .typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
    else {
        return Ok(UpstreamProtocol::Auto);
    };
    let opts: HttpProtocolOptions = decode(any, HTTP_PROTOCOL_OPTIONS)
        .map_err(|e| format!("typed_extension_protocol_options[{HTTP_PROTOCOL_OPTIONS:?}] {e}"))?;
    Ok(match opts.upstream_protocol_options {
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
            Some(ProtocolConfig::Http2ProtocolOptions(_)) => UpstreamProtocol::H2c,
            Some(ProtocolConfig::HttpProtocolOptions(_)) => UpstreamProtocol::Http1,
            Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                return Err(format!(
                    "typed_extension_protocol_options[{HTTP_PROTOCOL_OPTIONS:?}]: torii has no \
                     HTTP/3 to upstreams; ask for http2_protocol_options"
                ))
            }
            None => UpstreamProtocol::Auto,
        },
        _ => UpstreamProtocol::Auto,
    })
}

/// The endpoints of one locality, each with its weight.
type Weighted = Vec<(u32, Vec<EndpointAddr>)>;

/// The endpoints torii sends to: the lowest priority that has any healthy
/// (HEALTHY or UNKNOWN) endpoint, as Envoy fails over by priority. Each
/// endpoint's weight is its share of that priority's traffic: its
/// locality's share of the localities' weights times its own share of its
/// locality's endpoint weights, scaled so that the smallest share is 1
/// (and the largest at most 128). A locality of weight 0 gets no traffic.
pub fn endpoints(
    cla: &ClusterLoadAssignment,
    ignored: &mut Vec<String>,
) -> Result<Vec<EndpointAddr>, String> {
    // The lowest priority yet: its localities, each with its weight.
    let mut best: Option<(u32, Vec<(u32, Weighted)>)> = None;
    for (i, group) in cla.endpoints.iter().enumerate() {
        let mut usable = Vec::new();
        for (j, lb) in group.lb_endpoints.iter().enumerate() {
            let at = format!("endpoints[{i}].lb_endpoints[{j}]");
            let ep = match &lb.host_identifier {
                Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep,
                _ => return Err(format!("{at}.endpoint is missing")),
            };
            let addr = match ep.address.as_ref().and_then(|a| a.address.as_ref()) {
                Some(address::Address::SocketAddress(sa)) => sa,
                Some(_) => {
                    return Err(format!(
                        "{at}.endpoint.address: torii connects to socket addresses only (not pipes \
                         or internal addresses)"
                    ))
                }
                None => return Err(format!("{at}.endpoint.address is missing")),
            };
            let port = match addr.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => p,
                _ => {
                    return Err(format!(
                        "{at}.endpoint.address.socket_address needs port_value (named ports are not resolved)"
                    ))
                }
            };
            let text = if addr.address.contains(':') {
                format!("[{}]:{port}", addr.address)
            } else {
                format!("{}:{port}", addr.address)
            };
            let parsed = crate::config::endpoint(&text)
                .map_err(|why| format!("{at}.endpoint.address {text:?}: {why}"))?;
            let weight = lb.load_balancing_weight.map_or(1, |w| w.value.max(1));
            if let Ok(HealthStatus::Unknown | HealthStatus::Healthy) =
                HealthStatus::try_from(lb.health_status)
            {
                usable.push((weight, vec![parsed]));
            }
        }
        let locality_weight = group.load_balancing_weight.map_or(1, |w| w.value);
        if usable.is_empty() || locality_weight == 0 {
            continue;
        }
        let locality = (locality_weight, usable);
        match &mut best {
            Some((p, groups)) if *p == group.priority => groups.push(locality),
            Some((p, _)) if *p < group.priority => {}
            _ => best = Some((group.priority, vec![locality])),
        }
    }
    if cla.endpoints.iter().any(|g| g.priority > 0) {
        ignored.push(
            "priority beyond failover (the lowest priority with a healthy endpoint takes all traffic)"
                .into(),
        );
    }
    Ok(best.map(|(_, groups)| weigh(groups)).unwrap_or_default())
}

/// The endpoints of localities `(weight, [(endpoint weight, [endpoint])])`
/// with each endpoint's weight its share of the traffic, the smallest 1.
fn weigh(localities: Vec<(u32, Weighted)>) -> Vec<EndpointAddr> {
    let total: f64 = localities.iter().map(|(w, _)| f64::from(*w)).sum();
    let mut shares = Vec::new();
    for (locality_weight, eps) in localities {
        let inside: f64 = eps.iter().map(|(w, _)| f64::from(*w)).sum();
        for (weight, addrs) in eps {
            let share = f64::from(locality_weight) / total * f64::from(weight) / inside;
            shares.extend(addrs.into_iter().map(|a| (a, share)));
        }
    }
    let smallest = shares.iter().map(|(_, s)| *s).fold(f64::INFINITY, f64::min);
    let ratios: Vec<f64> = shares.iter().map(|(_, s)| s / smallest).collect();
    let largest = ratios.iter().copied().fold(1.0, f64::max);
    let max = f64::from(MAX_ENDPOINT_WEIGHT);
    // Whole ratios up to 128 (3 : 1) are kept as they are; others (1.5 :
    // 1) are scaled so that the largest is 128, rounded, and reduced.
    let whole = largest <= max && ratios.iter().all(|r| (r - r.round()).abs() < 1e-9);
    let scale = if whole { 1.0 } else { max / largest };
    let weights: Vec<u32> = ratios
        .iter()
        .map(|r| ((r * scale).round() as u32).clamp(1, MAX_ENDPOINT_WEIGHT))
        .collect();
    let common = weights.iter().copied().fold(0, gcd).max(1);
    shares
        .into_iter()
        .zip(weights)
        .map(|((addr, _), weight)| EndpointAddr {
            weight: weight / common,
            ..addr
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
    use envoy_types::pb::envoy::config::endpoint::v3::{Endpoint, LbEndpoint, LocalityLbEndpoints};

    use super::*;

    /// Endpoint 10.0.0.`i`:80 of `weight` (none: unset).
    fn ep(i: u32, weight: Option<u32>) -> LbEndpoint {
        let address = SocketAddress {
            address: format!("10.0.0.{i}"),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(80)),
            ..Default::default()
        };
        LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(address)),
                }),
                ..Default::default()
            })),
            load_balancing_weight: weight.map(|value| UInt32Value { value }),
            ..Default::default()
        }
    }

    fn locality(weight: Option<u32>, lb_endpoints: Vec<LbEndpoint>) -> LocalityLbEndpoints {
        LocalityLbEndpoints {
            lb_endpoints,
            load_balancing_weight: weight.map(|value| UInt32Value { value }),
            ..Default::default()
        }
    }

    fn weights(localities: Vec<LocalityLbEndpoints>) -> Vec<(String, u32)> {
        let cla = ClusterLoadAssignment {
            endpoints: localities,
            ..Default::default()
        };
        let mut ignored = Vec::new();
        let eps = endpoints(&cla, &mut ignored).unwrap();
        assert!(ignored.is_empty(), "{ignored:?}");
        eps.into_iter().map(|e| (e.host, e.weight)).collect()
    }

    fn hosts(pairs: &[(u32, u32)]) -> Vec<(String, u32)> {
        pairs
            .iter()
            .map(|(i, w)| (format!("10.0.0.{i}"), *w))
            .collect()
    }

    #[test]
    fn endpoint_weights_times_locality_weights() {
        // No weights anywhere: all 1, the unweighted balancing.
        let plain = weights(vec![locality(None, vec![ep(1, None), ep(2, None)])]);
        assert_eq!(plain, hosts(&[(1, 1), (2, 1)]));
        // Endpoint weights alone.
        let w = weights(vec![locality(None, vec![ep(1, Some(3)), ep(2, Some(1))])]);
        assert_eq!(w, hosts(&[(1, 3), (2, 1)]));
        // Two localities of equal weight, one with one endpoint, one with
        // two: the lone endpoint takes half, the other two a quarter each.
        let w = weights(vec![
            locality(Some(5), vec![ep(1, None)]),
            locality(Some(5), vec![ep(2, None), ep(3, None)]),
        ]);
        assert_eq!(w, hosts(&[(1, 2), (2, 1), (3, 1)]));
        // Locality 3:1, endpoints 1:1 inside the first: 1.5 : 1.5 : 1,
        // scaled so that the largest is 128.
        let w = weights(vec![
            locality(Some(3), vec![ep(1, None), ep(2, None)]),
            locality(Some(1), vec![ep(3, Some(7))]),
        ]);
        assert_eq!(w, hosts(&[(1, 128), (2, 128), (3, 85)]));
        // Equal shares in unequal localities: all 1 again.
        let w = weights(vec![
            locality(Some(2), vec![ep(1, None), ep(2, None)]),
            locality(Some(1), vec![ep(3, None)]),
        ]);
        assert_eq!(w, hosts(&[(1, 1), (2, 1), (3, 1)]));
        // A locality of weight 0 gets nothing.
        let w = weights(vec![
            locality(Some(0), vec![ep(1, None)]),
            locality(Some(1), vec![ep(2, None)]),
        ]);
        assert_eq!(w, hosts(&[(2, 1)]));
        // Beyond 128 to 1, scaled down to 128 at most.
        let w = weights(vec![locality(
            None,
            vec![ep(1, Some(1000)), ep(2, Some(1))],
        )]);
        assert_eq!(w, hosts(&[(1, 128), (2, 1)]));
    }
}

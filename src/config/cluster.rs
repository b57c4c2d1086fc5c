//! Clusters: endpoints, upstream protocol and TLS, balancing, limits; and
//! the name → cluster table that routes resolve against.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use super::context::{one_of, Ctx};
use super::locate::join;
use super::model::*;
use super::patterns::valid_hostname;
use super::problem::{did_you_mean, list};
use super::raw::{RawCluster, RawEndpoint, RawKeepalive, RawUpstreamTls};
use super::tls;

/// Every cluster the file defines, valid or not: a route naming a cluster
/// that exists but has problems is not reported again as "unknown".
pub struct Clusters {
    names: Vec<String>,
    by_name: HashMap<String, Option<Arc<Cluster>>>,
    all: Vec<Option<Arc<Cluster>>>,
}

impl Clusters {
    /// The cluster a route names, or a problem listing the defined ones.
    pub fn resolve(&self, cx: &mut Ctx, path: &str, name: &str) -> Option<Arc<Cluster>> {
        if let Some(cluster) = self.by_name.get(name) {
            return cluster.clone();
        }
        let mut message = format!("{path} names cluster {name:?}, which is not defined");
        if self.names.is_empty() {
            message += "; no clusters are defined: add one under clusters:";
        } else {
            message += &format!("; defined clusters: {}", list(&self.names));
            if let Some(near) = did_you_mean(name, self.names.iter().map(String::as_str)) {
                message += &format!("; did you mean {near:?}?");
            }
        }
        cx.error(path, message);
        None
    }

    /// All clusters, if every one of them is valid.
    pub fn into_valid(self) -> Option<Vec<Arc<Cluster>>> {
        self.all.into_iter().collect()
    }
}

pub fn clusters(cx: &mut Ctx, raw: Vec<RawCluster>) -> Clusters {
    let mut set = Clusters {
        names: Vec::new(),
        by_name: HashMap::new(),
        all: Vec::new(),
    };
    for (i, raw) in raw.into_iter().enumerate() {
        let path = format!("clusters[{i}]");
        let name = raw.name.clone().filter(|n| !n.trim().is_empty());
        let cluster = cluster(cx, &path, raw).map(Arc::new);
        if let Some(name) = name {
            if set.by_name.contains_key(&name) {
                let at = join(&path, "name");
                cx.error(
                    &at,
                    format!("cluster name {name:?} is used twice; names must be unique"),
                );
            } else {
                set.names.push(name.clone());
                set.by_name.insert(name, cluster.clone());
            }
        }
        set.all.push(cluster);
    }
    set
}

fn cluster(cx: &mut Ctx, path: &str, raw: RawCluster) -> Option<Cluster> {
    let name = cx.required(
        &join(path, "name"),
        &raw.name,
        "give the cluster a unique name, like hello",
    );
    let endpoints = endpoints(cx, &join(path, "endpoints"), raw.endpoints);
    let protocol = protocol(cx, &join(path, "protocol"), raw.protocol.as_deref());
    let tls = raw.tls.map(|t| upstream_tls(cx, &join(path, "tls"), t));
    let lb = lb(cx, &join(path, "lb"), raw.lb.as_deref());
    let connect_timeout = cx.duration(
        &join(path, "connect_timeout"),
        &raw.connect_timeout,
        Some(DEFAULT_CONNECT_TIMEOUT),
        true,
    );
    let max_streams = at_least_one(
        cx,
        &join(path, "max_streams_per_connection"),
        raw.max_streams_per_connection,
        DEFAULT_MAX_STREAMS_PER_CONNECTION,
    );
    let max_connections = at_least_one(
        cx,
        &join(path, "max_connections_per_endpoint"),
        raw.max_connections_per_endpoint,
        DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
    );
    let health_check = raw
        .health_check
        .map(|h| super::health::health_check(cx, &join(path, "health_check"), h));
    let outlier_detection = super::health::outlier_detection(
        cx,
        &join(path, "outlier_detection"),
        raw.outlier_detection,
    );
    let http2_keepalive = keepalive(cx, &join(path, "http2_keepalive"), raw.http2_keepalive);
    let retry_budget =
        super::retry::retry_budget(cx, &join(path, "retry_budget"), raw.retry_budget);
    let limits = super::retry::limits(cx, &join(path, "limits"), raw.limits);
    match (protocol, &tls) {
        (Some(UpstreamProtocol::H2), None) => cx.error(
            &join(path, "protocol"),
            format!(
                "{path}.protocol h2 means HTTP/2 over TLS, but the cluster has no tls; \
                 add tls: {{ca: ...}}, or write h2c for cleartext HTTP/2"
            ),
        ),
        (Some(UpstreamProtocol::H2c), Some(_)) => cx.error(
            &join(path, "protocol"),
            format!(
                "{path}.protocol h2c means cleartext HTTP/2, but the cluster has tls; \
                 write h2 for HTTP/2 over TLS, or remove tls"
            ),
        ),
        _ => {}
    }
    Some(Cluster {
        name: name?.to_string(),
        endpoints: endpoints?,
        protocol: protocol?,
        tls: match tls {
            Some(t) => Some(t?),
            None => None,
        },
        lb: lb?,
        connect_timeout: connect_timeout??,
        max_streams_per_connection: max_streams?,
        max_connections_per_endpoint: max_connections?,
        health_check: match health_check {
            Some(h) => Some(h?),
            None => None,
        },
        outlier_detection: outlier_detection?,
        http2_keepalive: http2_keepalive?,
        retry_budget: retry_budget?,
        limits: limits?,
    })
}

fn keepalive(cx: &mut Ctx, path: &str, raw: Option<RawKeepalive>) -> Option<Keepalive> {
    let raw = raw.unwrap_or_default();
    let interval = cx.duration(
        &join(path, "interval"),
        &raw.interval,
        Some(DEFAULT_KEEPALIVE_INTERVAL),
        true,
    );
    let timeout = cx.duration(
        &join(path, "timeout"),
        &raw.timeout,
        Some(DEFAULT_KEEPALIVE_TIMEOUT),
        true,
    );
    Some(Keepalive {
        interval: interval??,
        timeout: timeout??,
        while_idle: raw.while_idle.unwrap_or(false),
    })
}

fn endpoints(cx: &mut Ctx, path: &str, raw: Option<Vec<RawEndpoint>>) -> Option<Vec<EndpointAddr>> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        cx.error(
            path,
            format!("{path} is empty or missing; list at least one host:port, like [app:9090]"),
        );
        return None;
    }
    let parsed: Vec<Option<EndpointAddr>> = raw
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let at = format!("{path}[{i}]");
            let (text, weight) = match raw {
                RawEndpoint::Plain(text) => (text, None),
                RawEndpoint::Full(f) => {
                    let Some(text) = &f.address else {
                        let why = format!(
                            "{at} has no address; write {{ address: host:port, weight: N }}"
                        );
                        cx.error(&at, why);
                        return None;
                    };
                    (text, f.weight)
                }
            };
            let weight = match weight {
                None => Some(1),
                Some(w) if (1..=i64::from(MAX_ENDPOINT_WEIGHT)).contains(&w) => Some(w as u32),
                Some(w) => {
                    let weight_at = join(&at, "weight");
                    let why = format!(
                        "{weight_at} is {w}; it must be from 1 to {MAX_ENDPOINT_WEIGHT} (the \
                         endpoint's share of the traffic relative to the others')"
                    );
                    cx.error(&weight_at, why);
                    None
                }
            };
            let address_at = match raw {
                RawEndpoint::Plain(_) => at.clone(),
                RawEndpoint::Full(_) => join(&at, "address"),
            };
            let addr = endpoint(text.trim())
                .map_err(|why| cx.error(&address_at, format!("{at} {text:?}: {why}")))
                .ok();
            Some(EndpointAddr {
                weight: weight?,
                ..addr?
            })
        })
        .collect();
    parsed.into_iter().collect()
}

/// `host:port`, with IPv6 in brackets. The host is kept as written, minus
/// the brackets of an IPv6 literal.
pub fn endpoint(text: &str) -> Result<EndpointAddr, String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address needs its closing bracket, like [::1]:9090")?;
        ip.parse::<Ipv6Addr>()
            .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
        let port = after
            .strip_prefix(':')
            .ok_or("add the port after the brackets, like [::1]:9090")?;
        (ip, port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or("add the port: write host:port, like app:9090")?;
        if host.contains(':') {
            return Err("write an IPv6 address in brackets, like [::1]:9090".into());
        }
        if !valid_hostname(host) {
            return Err(format!("{host:?} is not a valid host name or IP address"));
        }
        (host, port)
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("port {port:?} must be a number from 1 to 65535")),
    };
    Ok(EndpointAddr {
        host: host.to_string(),
        port,
        weight: 1,
    })
}

fn protocol(cx: &mut Ctx, path: &str, text: Option<&str>) -> Option<UpstreamProtocol> {
    match text.map(str::trim) {
        None | Some("auto") => Some(UpstreamProtocol::Auto),
        Some("http1") => Some(UpstreamProtocol::Http1),
        Some("h2c") => Some(UpstreamProtocol::H2c),
        Some("h2") => Some(UpstreamProtocol::H2),
        Some(other) => {
            cx.error(path, one_of(path, other, &["auto", "http1", "h2c", "h2"]));
            None
        }
    }
}

fn lb(cx: &mut Ctx, path: &str, text: Option<&str>) -> Option<LbPolicy> {
    match text.map(str::trim) {
        None | Some("round_robin") => Some(LbPolicy::RoundRobin),
        Some("least_request") => Some(LbPolicy::LeastRequest),
        Some("random") => Some(LbPolicy::Random),
        Some(other) => {
            let allowed = ["round_robin", "least_request", "random"];
            cx.error(path, one_of(path, other, &allowed));
            None
        }
    }
}

fn at_least_one(cx: &mut Ctx, path: &str, value: Option<i64>, default: usize) -> Option<usize> {
    match value {
        None => Some(default),
        Some(n) if n >= 1 => usize::try_from(n).ok(),
        Some(n) => {
            cx.error(
                path,
                format!("{path} is {n}; it must be at least 1 (default {default})"),
            );
            None
        }
    }
}

pub(super) fn upstream_tls(cx: &mut Ctx, path: &str, raw: RawUpstreamTls) -> Option<UpstreamTls> {
    let ca_path = join(path, "ca");
    let roots = match &raw.ca {
        Some(ca) => tls::read_certs(cx, &ca_path, ca, "CA certificate"),
        None => {
            cx.error(
                &ca_path,
                format!(
                    "{path} needs a ca: a PEM file with the CA certificate(s) that signed the \
                     upstream's certificate (torii does not use the system's root certificates yet)"
                ),
            );
            None
        }
    };
    let server_name = raw.server_name.as_deref().map(str::trim);
    if let Some(name) = server_name {
        if rustls_pki_types::ServerName::try_from(name).is_err() {
            let at = join(path, "server_name");
            cx.error(
                &at,
                format!("{at} {name:?} is not a valid DNS name or IP address"),
            );
        }
    }
    let client_cert = match (&raw.cert, &raw.key) {
        (None, None) => Some(None),
        (Some(cert), Some(key)) => {
            tls::certified_key(cx, &join(path, "cert"), cert, &join(path, "key"), key).map(Some)
        }
        (Some(_), None) | (None, Some(_)) => {
            cx.error(
                path,
                format!(
                    "{path} has only one of cert and key; mutual TLS to the upstream needs both \
                     (or neither)"
                ),
            );
            None
        }
    };
    let (ca_file, roots) = roots?;
    let client_cert = client_cert?;
    Some(UpstreamTls {
        roots,
        server_name: server_name.map(str::to_string),
        ca_path: Some(ca_file),
        cert_path: client_cert.as_ref().map(|(p, _, _)| p.clone()),
        client_cert: client_cert.map(|(_, chain, key)| (chain, Arc::new(key))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: u16) -> EndpointAddr {
        EndpointAddr {
            host: host.into(),
            port,
            weight: 1,
        }
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(endpoint("app:9090"), Ok(ep("app", 9090)));
        assert_eq!(endpoint("10.0.0.2:9090"), Ok(ep("10.0.0.2", 9090)));
        assert_eq!(endpoint("[::1]:9090"), Ok(ep("::1", 9090)));
        assert_eq!(endpoint("a.b-c.internal:1"), Ok(ep("a.b-c.internal", 1)));
    }

    #[test]
    fn bad_endpoints_say_why() {
        let cases = [
            ("app", "add the port"),
            ("app:0", "from 1 to 65535"),
            ("app:70000", "from 1 to 65535"),
            ("app:http", "from 1 to 65535"),
            ("::1:9090", "in brackets"),
            ("[::1]", "add the port"),
            ("[::1:9090", "closing bracket"),
            ("[nope]:1", "not an IPv6"),
            ("a b:1", "not a valid host"),
            (":9090", "not a valid host"),
        ];
        for (text, why) in cases {
            let err = endpoint(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}

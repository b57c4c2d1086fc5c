//! Pitfalls in a configuration that loads (ALPN without h2 and expired
//! certificates are reported where they are read, in `tls`): it runs, but not as meant. Each
//! warning carries a code shared with `torii lint` and the change to make.
//! `torii check` prints them (`--strict` fails on them); `serve` logs them
//! at start and at every reload.
//!
//! The validated config keeps its file order (listeners, routes, clusters,
//! passthrough rules), so `listeners[i].routes[j]` here is the same entry
//! the file has there.

use std::time::Duration;

use super::locate::{join, Target};
use super::model::*;
use super::problem::Findings;

/// Certificates that expire sooner than this are reported.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86400);

pub fn pitfalls(config: &Config, findings: &mut Findings) {
    for (l, listener) in config.listeners.iter().enumerate() {
        let path = format!("listeners[{l}]");
        if let Some(tls) = &listener.tls {
            certificates(findings, &path, tls);
        }
        let mut shadows = Shadows::default();
        for (r, route) in listener.routes.iter().enumerate() {
            let at = format!("{path}.routes[{r}]");
            grpc_to_http1(findings, &at, route, config);
            timeout(findings, &at, route);
            health_shadowed(findings, &at, route, &listener.health_path);
            let earlier = shadows.first_covering(&route.matcher);
            shadows.add(r, &route.matcher);
            if let Some(earlier) = earlier {
                findings.pitfall(
                    &join(&at, "match"),
                    Target::Key,
                    "route-shadowed",
                    format!(
                        "{at} can never match: the earlier {path}.routes[{earlier}] matches every request it would (routes are tried in order, the first match wins)"
                    ),
                    format!("move {at} above {path}.routes[{earlier}], or narrow the earlier route's match"),
                );
            }
        }
        let rules = &listener.traffic.tls_passthrough;
        for (i, rule) in rules.iter().enumerate() {
            if let Some(earlier) = rules[..i]
                .iter()
                .position(|e| sni_covers(&e.sni, &rule.sni))
            {
                let at = format!("{path}.tls_passthrough[{i}]");
                findings.pitfall(
                    &join(&at, "sni"),
                    Target::Value,
                    "passthrough-shadowed",
                    format!(
                        "{at} can never match: the earlier {path}.tls_passthrough[{earlier}] takes every ClientHello it would (first match wins), so its connections go to cluster {:?}, not {:?}",
                        rules[earlier].cluster.name, rule.cluster.name
                    ),
                    format!("move {at} above {path}.tls_passthrough[{earlier}]"),
                );
            }
        }
    }
    for (c, cluster) in config.clusters.iter().enumerate() {
        if let Some(tls) = &cluster.tls {
            let path = format!("clusters[{c}].tls");
            for cert in &tls.roots {
                expiring(findings, &join(&path, "ca"), cert);
            }
            for cert in tls.client_cert.iter().flat_map(|(chain, _)| chain) {
                expiring(findings, &join(&path, "cert"), cert);
            }
        }
    }
}

fn certificates(findings: &mut Findings, path: &str, tls: &ServerTls) {
    for (i, c) in tls.certificates.iter().enumerate() {
        for cert in &c.chain {
            expiring(
                findings,
                &format!("{path}.tls.certificates[{i}].cert"),
                cert,
            );
        }
    }
    if let Some(auth) = &tls.client_auth {
        for cert in &auth.roots {
            expiring(findings, &format!("{path}.tls.client_auth.ca"), cert);
        }
    }
}

/// A certificate still valid that expires within [`EXPIRY_WARNING`]. (One
/// already expired is reported as the file is read.)
fn expiring(findings: &mut Findings, at: &str, der: &[u8]) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return;
    };
    let not_after = cert.validity().not_after.timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let left = not_after - now;
    if left < 0 || left > EXPIRY_WARNING.as_secs() as i64 {
        return;
    }
    let days = left / 86400;
    let when = match days {
        0 => "in less than a day".to_string(),
        1 => "in 1 day".to_string(),
        n => format!("in {n} days"),
    };
    findings.pitfall(
        at,
        Target::Value,
        "cert-expiry",
        format!(
            "certificate {} expires {when} ({}): after that clients refuse the TLS handshake",
            cert.subject(),
            cert.validity().not_after.to_datetime().date()
        ),
        "renew it and replace the file; torii picks up the new file without a restart".into(),
    );
}

/// A route for gRPC specifically (not merely one gRPC could reach).
fn grpc_route(m: &RouteMatch) -> bool {
    m.grpc_service.is_some() || m.grpc_method.is_some() || m.headers.iter().any(|h| {
        h.name == "content-type"
            && !h.invert
            && matches!(&h.value, HeaderValueMatch::Exact(v) if v.starts_with("application/grpc"))
    })
}

fn grpc_to_http1(findings: &mut Findings, at: &str, route: &Route, config: &Config) {
    if !grpc_route(&route.matcher) {
        return;
    }
    let targets: Vec<(String, &Cluster)> = match &route.action {
        RouteAction::Cluster(c) => vec![(join(at, "cluster"), c)],
        RouteAction::Weighted(list) => list
            .iter()
            .enumerate()
            .map(|(i, (c, _))| (format!("{at}.weighted_clusters[{i}].cluster"), &**c))
            .collect(),
        RouteAction::Direct { .. } => Vec::new(),
    };
    for (path, cluster) in targets {
        if cluster.protocol != UpstreamProtocol::Http1 {
            continue;
        }
        let index = config
            .clusters
            .iter()
            .position(|c| c.name == cluster.name)
            .unwrap_or(0);
        findings.pitfall(
            &path,
            Target::Value,
            "grpc-upstream-http1",
            format!(
                "{at} is a gRPC route, but cluster {:?} has protocol: http1 (clusters[{index}].protocol): gRPC needs HTTP/2, so its calls fail (torii sends them as HTTP/1.1 and the upstream cannot answer them as gRPC)",
                cluster.name
            ),
            format!(
                "remove protocol from clusters[{index}] (auto sends gRPC over HTTP/2) or set it to h2c (h2 with tls)"
            ),
        );
    }
}

fn timeout(findings: &mut Findings, at: &str, route: &Route) {
    let Some(t) = route.timeout else { return };
    // Only routes written for gRPC: on a catch-all the timeout is what
    // bounds the web requests, and torii never applies it to gRPC anyway.
    if !grpc_route(&route.matcher) {
        return;
    }
    findings.pitfall(
        &join(at, "timeout"),
        Target::Key,
        "stream-timeout",
        format!(
            "{at}.timeout {t:?} does not apply to the gRPC calls of this route: torii never cuts a gRPC call with a route timeout (long streams would die), it honours the call's own grpc-timeout; the timeout bounds only non-gRPC requests"
        ),
        "remove timeout from this route and set deadlines in the gRPC clients (they travel as grpc-timeout)".into(),
    );
}

fn health_shadowed(findings: &mut Findings, at: &str, route: &Route, health: &str) {
    let hit = match &route.matcher.path {
        Some(PathMatch::Exact(p)) => p == health,
        Some(PathMatch::Prefix(p)) => p == health,
        _ => false,
    };
    if !hit {
        return;
    }
    let key = if matches!(route.matcher.path, Some(PathMatch::Exact(_))) {
        "path"
    } else {
        "prefix"
    };
    findings.pitfall(
        &format!("{at}.match.{key}"),
        Target::Value,
        "health-path-shadowed",
        format!(
            "GET and HEAD {health} are answered by this listener's own health check (health.path), so {at} never gets them: the upstream's health endpoint cannot be reached through this route"
        ),
        "set the listener's health.path to another path (like /torii/healthz), or route the upstream's health check under another path".into(),
    );
}

/// Whether every request `b` matches is matched by `a` too (conservative:
/// `false` when unsure). What `Shadows` finds by lookups; the tests hold
/// the two to the same answers.
#[cfg(test)]
fn covers(a: &RouteMatch, b: &RouteMatch) -> bool {
    if !a.headers.is_empty() {
        return false;
    }
    let host = match (&a.host, &b.host) {
        (None, _) => true,
        (Some(x), Some(y)) => x == y,
        _ => false,
    };
    let path = match (&a.path, &b.path) {
        (None, _) => true,
        (Some(PathMatch::Prefix(p)), _) if p == "/" => true,
        (Some(PathMatch::Prefix(p)), Some(PathMatch::Prefix(q) | PathMatch::Exact(q))) => {
            q.starts_with(p.as_str())
        }
        (Some(PathMatch::Exact(p)), Some(PathMatch::Exact(q))) => p == q,
        _ => false,
    };
    let service = a.grpc_service.is_none() || a.grpc_service == b.grpc_service;
    let method = a.grpc_method.is_none() || a.grpc_method == b.grpc_method;
    host && path && service && method
}

/// The routes seen so far, indexed so that the first one that covers a
/// route (`covers`) is found by a few lookups rather than by trying every
/// earlier route: a config of 10,000 routes (an xDS push) is checked in
/// milliseconds, not in 50 million comparisons.
///
/// A route covers another when each of its conditions is absent or holds
/// for everything the other matches: the same host, a path prefix of the
/// other's path (or no path), the same gRPC service and method (or none),
/// and no header conditions. So the index keys each route by those four
/// (path as "any", an exact path or a prefix), keeping the first route of
/// each key, and a route looks up every key that would cover it.
#[derive(Default)]
struct Shadows<'a> {
    first: std::collections::HashMap<Key<'a>, usize, foldhash::fast::RandomState>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key<'a> {
    host: Option<&'a HostMatch>,
    path: PathKey<'a>,
    service: Option<&'a str>,
    method: Option<&'a str>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum PathKey<'a> {
    Any,
    Exact(&'a str),
    Prefix(&'a str),
}

impl<'a> Shadows<'a> {
    fn add(&mut self, index: usize, m: &'a RouteMatch) {
        if !m.headers.is_empty() {
            return;
        }
        let path = match &m.path {
            None => PathKey::Any,
            Some(PathMatch::Prefix(p)) if p == "/" => PathKey::Any,
            Some(PathMatch::Prefix(p)) => PathKey::Prefix(p),
            Some(PathMatch::Exact(p)) => PathKey::Exact(p),
            Some(PathMatch::Regex(_)) => return,
        };
        let key = Key {
            host: m.host.as_ref(),
            path,
            service: m.grpc_service.as_deref(),
            method: m.grpc_method.as_deref(),
        };
        self.first.entry(key).or_insert(index);
    }

    /// The first route added that covers `b` (as `covers` decides).
    fn first_covering(&self, b: &'a RouteMatch) -> Option<usize> {
        let mut paths = vec![PathKey::Any];
        match &b.path {
            Some(PathMatch::Exact(q)) => {
                paths.push(PathKey::Exact(q));
                paths.extend(prefixes(q).map(PathKey::Prefix));
            }
            Some(PathMatch::Prefix(q)) => paths.extend(prefixes(q).map(PathKey::Prefix)),
            _ => {}
        }
        let mut best: Option<usize> = None;
        for host in [None, b.host.as_ref()] {
            for service in [None, b.grpc_service.as_deref()] {
                for method in [None, b.grpc_method.as_deref()] {
                    for &path in &paths {
                        let key = Key {
                            host,
                            path,
                            service,
                            method,
                        };
                        if let Some(&i) = self.first.get(&key) {
                            best = Some(best.map_or(i, |b| b.min(i)));
                        }
                    }
                    if b.grpc_method.is_none() {
                        break;
                    }
                }
                if b.grpc_service.is_none() {
                    break;
                }
            }
            if b.host.is_none() {
                break;
            }
        }
        best
    }
}

/// Every non-empty prefix of `q` that ends on a character boundary.
fn prefixes(q: &str) -> impl Iterator<Item = &str> {
    (1..=q.len())
        .filter(|&i| q.is_char_boundary(i))
        .map(|i| &q[..i])
}

fn sni_covers(a: &SniMatch, b: &SniMatch) -> bool {
    match (a, b) {
        (SniMatch::Any, _) => true,
        (SniMatch::Exact(x), SniMatch::Exact(y)) => x == y,
        (SniMatch::Suffix(s), SniMatch::Exact(y)) => y.len() > s.len() && y.ends_with(s.as_str()),
        (SniMatch::Suffix(s), SniMatch::Suffix(t)) => t.ends_with(s.as_str()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Shadows` finds the same first covering route as trying every
    /// earlier route with `covers`, over many mixes of conditions.
    #[test]
    fn the_index_finds_what_trying_every_route_finds() {
        let hosts = [
            None,
            Some(HostMatch::Exact("a.example".into())),
            Some(HostMatch::Exact("b.example".into())),
            Some(HostMatch::Suffix(".example".into())),
        ];
        let paths = [
            None,
            Some(PathMatch::Prefix("/".into())),
            Some(PathMatch::Prefix("/a".into())),
            Some(PathMatch::Prefix("/a/b".into())),
            Some(PathMatch::Exact("/a/b".into())),
            Some(PathMatch::Exact("/a".into())),
            Some(PathMatch::Prefix("/é".into())),
            Some(PathMatch::Regex(regex::Regex::new("^/a").unwrap())),
        ];
        let services = [None, Some("s1"), Some("s2")];
        let methods = [None, Some("m1")];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..200 {
            let routes: Vec<RouteMatch> = (0..40)
                .map(|_| RouteMatch {
                    host: hosts[next(hosts.len())].clone(),
                    path: paths[next(paths.len())].clone(),
                    grpc_service: services[next(services.len())].map(str::to_string),
                    grpc_method: methods[next(methods.len())].map(str::to_string),
                    headers: if next(8) == 0 {
                        vec![HeaderMatch {
                            name: "x".into(),
                            value: HeaderValueMatch::Present,
                            invert: false,
                        }]
                    } else {
                        Vec::new()
                    },
                })
                .collect();
            let mut shadows = Shadows::default();
            for (r, route) in routes.iter().enumerate() {
                let want = routes[..r].iter().position(|e| covers(e, route));
                assert_eq!(
                    shadows.first_covering(route),
                    want,
                    "{route:?} in {routes:?}"
                );
                shadows.add(r, route);
            }
        }
    }
}

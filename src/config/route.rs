//! Routes: what a request must look like (`match`), where it goes (one
//! action), and what changes on the way (rewrite, header edits, timeout).

use std::sync::Arc;

use super::cluster::Clusters;
use super::context::Ctx;
use super::headers::{edits, header_match};
use super::locate::join;
use super::model::*;
use super::patterns::{host_pattern, regex};
use super::raw::{RawDirectResponse, RawMatch, RawRoute, RawWeightedCluster};

/// A route's name: the one written (unique within its listener, checked by
/// the caller), or `LISTENER/INDEX`.
pub fn route(
    cx: &mut Ctx,
    path: &str,
    default_name: String,
    raw: RawRoute,
    clusters: &Clusters,
    auth: &super::auth::Registry,
) -> Option<Route> {
    let name = route_name(cx, &join(path, "name"), raw.name, default_name);
    let match_at = join(path, "match");
    let has_prefix = raw.matcher.as_ref().is_some_and(|m| m.prefix.is_some());
    let matcher = matcher(cx, &match_at, raw.matcher.unwrap_or_default());
    let action = action(
        cx,
        path,
        raw.cluster,
        raw.weighted_clusters,
        raw.direct_response,
        clusters,
    );
    let rewrite_at = join(path, "prefix_rewrite");
    let prefix_rewrite = match raw.prefix_rewrite {
        Some(r) if !r.starts_with('/') => {
            cx.error(
                &rewrite_at,
                format!("{rewrite_at} {r:?} must start with /, like /v2/"),
            );
            None
        }
        Some(_) if !has_prefix => {
            cx.error(
                &rewrite_at,
                format!(
                    "{rewrite_at} replaces the matched prefix, so the route needs a prefix match: \
                     add match: {{prefix: /...}}"
                ),
            );
            None
        }
        other => Some(other),
    };
    let request_headers = edits(cx, &join(path, "request_headers"), raw.request_headers);
    let response_headers = edits(cx, &join(path, "response_headers"), raw.response_headers);
    let timeout = cx.duration(&join(path, "timeout"), &raw.timeout, None, true);
    let cors = super::cors::cors(cx, &join(path, "cors"), raw.cors);
    let rate_limit = super::rate_limit::rate_limit(cx, &join(path, "rate_limit"), raw.rate_limit);
    let retry = raw
        .retry
        .map(|r| super::retry::retry(cx, &join(path, "retry"), r).map(Arc::new));
    let auth = super::auth::route_auth(cx, &join(path, "auth"), raw.auth, auth);
    Some(Route {
        name: name?,
        matcher: matcher?,
        action: action?,
        prefix_rewrite: prefix_rewrite?,
        request_headers: request_headers?,
        response_headers: response_headers?,
        timeout: timeout?,
        cors: cors?,
        rate_limit: rate_limit?,
        retry: match retry {
            Some(r) => Some(r?),
            None => None,
        },
        auth: auth?,
    })
}

fn route_name(
    cx: &mut Ctx,
    at: &str,
    written: Option<String>,
    default: String,
) -> Option<Arc<str>> {
    let Some(name) = written else {
        return Some(default.into());
    };
    if name.is_empty()
        || name.len() > 128
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        cx.error(
            at,
            format!(
                "{at} {name:?} must be 1 to 128 characters without spaces or control characters \
                 (it is a metric label and an access-log field)"
            ),
        );
        return None;
    }
    Some(name.into())
}

fn action(
    cx: &mut Ctx,
    path: &str,
    cluster: Option<String>,
    weighted: Option<Vec<RawWeightedCluster>>,
    direct: Option<RawDirectResponse>,
    clusters: &Clusters,
) -> Option<RouteAction> {
    const ACTIONS: &str = "cluster, weighted_clusters or direct_response";
    let given: Vec<&str> = [
        cluster.as_ref().map(|_| "cluster"),
        weighted.as_ref().map(|_| "weighted_clusters"),
        direct.as_ref().map(|_| "direct_response"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() != 1 {
        let message = if given.is_empty() {
            format!("{path} has no action; write one of {ACTIONS}")
        } else {
            format!(
                "{path} has {}; a route takes exactly one of {ACTIONS}",
                given.join(" and ")
            )
        };
        cx.error(path, message);
        return None;
    }
    if let Some(name) = cluster {
        return clusters
            .resolve(cx, &join(path, "cluster"), name.trim())
            .map(RouteAction::Cluster);
    }
    if let Some(weighted) = weighted {
        return weighted_clusters(cx, &join(path, "weighted_clusters"), weighted, clusters);
    }
    let direct = direct.unwrap_or_default();
    let at = format!("{path}.direct_response.status");
    match direct.status {
        Some(status @ 100..=599) => Some(RouteAction::Direct {
            status: status as u16,
            body: direct.body.unwrap_or_default(),
        }),
        Some(status) => {
            cx.error(
                &at,
                format!("{at} {status} is not an HTTP status; write 100 to 599"),
            );
            None
        }
        None => {
            cx.error(
                &at,
                format!("{at} is missing; write an HTTP status, like 200"),
            );
            None
        }
    }
}

fn weighted_clusters(
    cx: &mut Ctx,
    path: &str,
    raw: Vec<RawWeightedCluster>,
    clusters: &Clusters,
) -> Option<RouteAction> {
    if raw.is_empty() {
        cx.error(path, format!("{path} is empty; list clusters with weights, like [{{cluster: a, weight: 90}}, {{cluster: b, weight: 10}}]"));
        return None;
    }
    let mut out: Vec<Option<(Arc<Cluster>, u32)>> = Vec::new();
    for (i, w) in raw.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        let cluster_at = join(&at, "cluster");
        let cluster = cx
            .required(&cluster_at, &w.cluster, "write the name of a cluster")
            .and_then(|name| clusters.resolve(cx, &cluster_at, name.trim()));
        let weight_at = join(&at, "weight");
        let weight = match w.weight {
            Some(n) if n >= 1 => u32::try_from(n).ok(),
            Some(n) => {
                cx.error(
                    &weight_at,
                    format!("{weight_at} is {n}; weights must be 1 or more"),
                );
                None
            }
            None => {
                cx.error(
                    &weight_at,
                    format!("{weight_at} is missing; write a positive number, like 10"),
                );
                None
            }
        };
        if w.weight.is_some_and(|n| n > i64::from(u32::MAX)) {
            cx.error(
                &weight_at,
                format!("{weight_at} is too large; keep weights below 4294967296"),
            );
        }
        out.push(cluster.zip(weight));
    }
    out.into_iter()
        .collect::<Option<_>>()
        .map(RouteAction::Weighted)
}

fn matcher(cx: &mut Ctx, path: &str, raw: RawMatch) -> Option<RouteMatch> {
    let host = raw.host.as_deref().map(|h| {
        let at = join(path, "host");
        host_pattern(h)
            .map_err(|why| cx.error(&at, format!("{at} {h:?}: {why}")))
            .ok()
    });
    let path_match = path_match(cx, path, &raw);
    let grpc = grpc(
        cx,
        path,
        raw.grpc_service.as_deref(),
        raw.grpc_method.as_deref(),
    );
    let headers: Vec<Option<HeaderMatch>> = raw
        .headers
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, h)| header_match(cx, &format!("{path}.headers[{i}]"), h))
        .collect();
    let (grpc_service, grpc_method) = grpc?;
    Some(RouteMatch {
        host: host.map_or(Some(None), |h| h.map(Some))?,
        path: path_match?,
        grpc_service,
        grpc_method,
        headers: headers.into_iter().collect::<Option<_>>()?,
    })
}

fn path_match(cx: &mut Ctx, path: &str, raw: &RawMatch) -> Option<Option<PathMatch>> {
    let given: Vec<&str> = [
        raw.prefix.as_ref().map(|_| "prefix"),
        raw.path.as_ref().map(|_| "path"),
        raw.regex.as_ref().map(|_| "regex"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        cx.error(
            path,
            format!(
                "{path} has {}; write at most one of prefix, path and regex",
                given.join(" and ")
            ),
        );
        return None;
    }
    let check_slash = |cx: &mut Ctx, key: &str, value: &str| {
        let at = join(path, key);
        if value.starts_with('/') {
            Some(value.to_string())
        } else {
            cx.error(
                &at,
                format!(
                    "{at} {value:?} must start with /, like /{}",
                    value.trim_start_matches('/')
                ),
            );
            None
        }
    };
    if let Some(prefix) = &raw.prefix {
        return check_slash(cx, "prefix", prefix).map(|p| Some(PathMatch::Prefix(p)));
    }
    if let Some(exact) = &raw.path {
        return check_slash(cx, "path", exact).map(|p| Some(PathMatch::Exact(p)));
    }
    match &raw.regex {
        None => Some(None),
        Some(re) => regex(cx, &join(path, "regex"), re).map(|r| Some(PathMatch::Regex(r))),
    }
}

/// `(grpc_service, grpc_method)`: a `pkg.Service/Method` method is split so
/// that the router compares the service and the bare method name.
fn grpc(
    cx: &mut Ctx,
    path: &str,
    service: Option<&str>,
    method: Option<&str>,
) -> Option<(Option<String>, Option<String>)> {
    let service_at = join(path, "grpc_service");
    let method_at = join(path, "grpc_method");
    let service = match service.map(str::trim) {
        Some(s) if valid_service(s) => Some(Some(s.to_string())),
        Some(s) => {
            cx.error(&service_at, format!("{service_at} {s:?} must be a full service name like hello.HelloService (package and service, dots between, no slashes)"));
            None
        }
        None => Some(None),
    };
    let Some(method) = method.map(|m| m.trim().trim_start_matches('/')) else {
        return Some((service?, None));
    };
    let (from_method, name) = match method.split_once('/') {
        Some((s, m)) => (Some(s), m),
        None => (None, method),
    };
    if !valid_ident(name) || from_method.is_some_and(|s| !valid_service(s)) {
        cx.error(&method_at, format!("{method_at} {method:?} must be a method name like SayHello, or service/method like hello.HelloService/SayHello"));
        return None;
    }
    let service = service?;
    match (service, from_method) {
        (Some(s), Some(m)) if s != m => {
            cx.error(&method_at, format!("{method_at} names service {m:?} but grpc_service is {s:?}; write only the method name, or make them agree"));
            None
        }
        (service, from_method) => Some((
            service.or(from_method.map(str::to_string)),
            Some(name.to_string()),
        )),
    }
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_service(s: &str) -> bool {
    s.split('.').all(valid_ident)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert_eq!(
            host_pattern("API.Example.com"),
            Ok(HostMatch::Exact("api.example.com".into()))
        );
        assert_eq!(
            host_pattern("api.example.com:8443"),
            Ok(HostMatch::Exact("api.example.com".into()))
        );
        assert_eq!(
            host_pattern("*.example.com"),
            Ok(HostMatch::Suffix(".example.com".into()))
        );
        assert_eq!(
            host_pattern("[::1]:443"),
            Ok(HostMatch::Exact("[::1]".into()))
        );
        for bad in ["*", "a.*.com", "*.", "a b", "x:port", "*example.com", ""] {
            assert!(host_pattern(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn grpc_names() {
        assert!(valid_service("hello.HelloService"));
        assert!(valid_service("Greeter"));
        assert!(!valid_service("hello/HelloService"));
        assert!(!valid_service("hello..Svc"));
        assert!(!valid_service(".Svc"));
        assert!(valid_ident("SayHello"));
        assert!(!valid_ident("Say.Hello"));
    }
}

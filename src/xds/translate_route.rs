//! RouteConfiguration → torii's routes. Envoy picks a virtual host by the
//! most specific domain (exact, then the longest `*.suffix`, then `*`)
//! and then the first of its routes that matches; torii's routes are one
//! list where the first match wins, so the virtual hosts are laid out in
//! that order, one copy of their routes per domain, and a host's routes
//! end with a catch-all 404 when a less specific virtual host follows
//! (Envoy does not fall through to another virtual host either).

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RetryPolicy as PbRetryPolicy, Route as PbRoute, RouteConfiguration,
    RouteMatch as PbRouteMatch,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use regex::Regex;

use super::duration;
use crate::config::retry::{
    DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, MAX_RETRY_ATTEMPTS, RETRY_STATUSES,
};
use crate::config::{
    HeaderMatch, HeaderValueMatch, HostMatch, PathMatch, RetryOn, RetryPolicy, Route, RouteAction,
    RouteMatch,
};

/// Where a route sends requests, by cluster name (resolved when the
/// listener is assembled, once the clusters are known).
#[derive(Debug, Clone)]
pub enum Target {
    Cluster(String),
    Weighted(Vec<(String, u32)>),
    Direct,
}

/// A route whose `action` is final for direct responses and filled in
/// from `target` otherwise.
#[derive(Debug, Clone)]
pub struct XRoute {
    pub route: Route,
    pub target: Target,
}

/// How specific a domain is: exact names first, then suffixes (longest
/// first), then `*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Specificity {
    Exact,
    Suffix(std::cmp::Reverse<usize>),
    Any,
}

#[allow(deprecated)] // vh.cors, read only to say it is ignored
pub fn route_configuration(
    rc: &RouteConfiguration,
    ignored: &mut Vec<String>,
) -> Result<Vec<XRoute>, String> {
    if !rc.request_headers_to_add.is_empty() || !rc.response_headers_to_add.is_empty() {
        ignored.push("request_headers_to_add / response_headers_to_add".into());
    }
    if rc.vhds.is_some() {
        return Err("vhds: torii takes virtual hosts inline only; leave vhds unset".into());
    }
    // (specificity, host match, vhost index, domain)
    let mut hosts: Vec<(Specificity, Option<HostMatch>, usize)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut translated = Vec::new();
    for (v, vh) in rc.virtual_hosts.iter().enumerate() {
        let at = format!("virtual_hosts[{v}] ({:?})", vh.name);
        if vh.domains.is_empty() {
            return Err(format!(
                "{at}.domains is empty; list at least one (\"*\" for any)"
            ));
        }
        for (d, domain) in vh.domains.iter().enumerate() {
            let (spec, host) = domain_match(domain)
                .map_err(|why| format!("{at}.domains[{d}] {domain:?}: {why}"))?;
            if !seen.insert(host.clone()) {
                // The same host without its port, or written twice: the
                // first virtual host that names it keeps it.
                continue;
            }
            hosts.push((spec, host, v));
        }
        if vh.require_tls != 0 {
            return Err(format!(
                "{at}.require_tls: torii does not redirect to TLS; leave require_tls NONE"
            ));
        }
        for (set, field) in [
            (vh.cors.is_some(), "cors"),
            (!vh.rate_limits.is_empty(), "rate_limits"),
            (
                !vh.request_headers_to_add.is_empty() || !vh.response_headers_to_add.is_empty(),
                "request_headers_to_add / response_headers_to_add",
            ),
            (
                !vh.typed_per_filter_config.is_empty(),
                "typed_per_filter_config",
            ),
        ] {
            if set {
                ignored.push(format!("{at}.{field}"));
            }
        }
        let mut routes = Vec::new();
        for (r, route) in vh.routes.iter().enumerate() {
            let name = if route.name.is_empty() {
                format!("{}/{}/{r}", rc.name, vh.name)
            } else {
                route.name.clone()
            };
            routes.push(
                self::route(route, name, vh.retry_policy.as_ref(), ignored)
                    .map_err(|why| format!("{at}.routes[{r}]{why}"))?,
            );
        }
        translated.push(routes);
    }
    hosts.sort_by(|a, b| a.0.cmp(&b.0));
    let has_catch_all = |after: usize| hosts[after + 1..].iter().any(|h| h.0 != Specificity::Exact);
    let mut out = Vec::new();
    for (i, (_, host, v)) in hosts.iter().enumerate() {
        for x in &translated[*v] {
            let mut x = x.clone();
            x.route.matcher.host = host.clone();
            out.push(x);
        }
        if host.is_some() && has_catch_all(i) {
            out.push(not_found(
                host.clone(),
                &rc.name,
                &rc.virtual_hosts[*v].name,
            ));
        }
    }
    Ok(out)
}

/// A domain as Envoy writes it → torii's host match (None: any host).
/// Ports are dropped: torii matches the host without its port.
fn domain_match(domain: &str) -> Result<(Specificity, Option<HostMatch>), String> {
    let d = domain.trim().to_ascii_lowercase();
    if d == "*" {
        return Ok((Specificity::Any, None));
    }
    let host = match d.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') && h.contains(':') => {
            let _ = port;
            d.as_str()
        }
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) || port == "*" => h,
        _ => d.as_str(),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Some(suffix) = host.strip_prefix('*') {
        if suffix.is_empty() || suffix.contains('*') {
            return Err("torii matches exact hosts, *.suffix and \"*\"".into());
        }
        return Ok((
            Specificity::Suffix(std::cmp::Reverse(suffix.len())),
            Some(HostMatch::Suffix(suffix.to_string())),
        ));
    }
    if host.contains('*') {
        return Err(
            "prefix wildcards (like foo.*) are not supported; torii matches exact hosts, \
             *.suffix and \"*\""
                .into(),
        );
    }
    Ok((Specificity::Exact, Some(HostMatch::Exact(host.to_string()))))
}

fn not_found(host: Option<HostMatch>, rc: &str, vh: &str) -> XRoute {
    let mut route = blank(format!("{rc}/{vh}/no_route"));
    route.matcher.host = host;
    route.action = RouteAction::Direct {
        status: 404,
        body: format!("no route in virtual host {vh:?} of route configuration {rc:?} matches\n"),
    };
    XRoute {
        route,
        target: Target::Direct,
    }
}

fn blank(name: String) -> Route {
    Route::direct(&name, RouteMatch::default(), 500, String::new())
}

/// One route; errors start with the field's path below the route (`.match…`).
fn route(
    r: &PbRoute,
    name: String,
    vhost_retry: Option<&PbRetryPolicy>,
    ignored: &mut Vec<String>,
) -> Result<XRoute, String> {
    let mut route = blank(name);
    let m = r.r#match.as_ref().ok_or(".match is missing")?;
    route.matcher = matcher(m).map_err(|e| format!(".match.{e}"))?;
    for (set, field) in [
        (
            !r.request_headers_to_add.is_empty() || !r.response_headers_to_add.is_empty(),
            "request_headers_to_add / response_headers_to_add",
        ),
        (
            !r.typed_per_filter_config.is_empty(),
            "typed_per_filter_config",
        ),
        (r.decorator.is_some(), "decorator"),
    ] {
        if set {
            ignored.push(format!("route {:?}: {field}", route.name));
        }
    }
    let target = match &r.action {
        Some(Action::Route(a)) => {
            let target = match &a.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => Target::Cluster(c.clone()),
                Some(ClusterSpecifier::WeightedClusters(w)) => {
                    let mut out = Vec::new();
                    for (i, cw) in w.clusters.iter().enumerate() {
                        if cw.name.is_empty() {
                            return Err(format!(
                                ".route.weighted_clusters.clusters[{i}].name is empty; torii \
                                 needs a cluster name (cluster_header is not supported)"
                            ));
                        }
                        let weight = cw.weight.map_or(1, |w| w.value);
                        if weight > 0 {
                            out.push((cw.name.clone(), weight));
                        }
                    }
                    if out.is_empty() {
                        return Err(
                            ".route.weighted_clusters has no cluster with a weight above 0".into(),
                        );
                    }
                    Target::Weighted(out)
                }
                Some(ClusterSpecifier::ClusterHeader(_)) => {
                    return Err(
                        ".route.cluster_header: torii does not pick clusters from request \
                                headers; name the cluster"
                            .into(),
                    )
                }
                _ => {
                    return Err(".route: torii needs cluster or weighted_clusters (cluster \
                                specifier plugins are not supported)"
                        .into())
                }
            };
            if !a.prefix_rewrite.is_empty() {
                route.prefix_rewrite = Some(a.prefix_rewrite.clone());
            }
            if a.regex_rewrite.is_some() || a.path_rewrite_policy.is_some() {
                return Err(
                    ".route: torii rewrites paths by prefix_rewrite only; regex_rewrite \
                            and path_rewrite_policy would send requests elsewhere unrewritten"
                        .into(),
                );
            }
            route.timeout = a
                .timeout
                .as_ref()
                .and_then(duration)
                .filter(|d| !d.is_zero());
            let policy = a.retry_policy.as_ref().or(vhost_retry);
            route.retry = policy
                .and_then(|p| retry(p, &route.name, ignored))
                .map(Arc::new);
            for (set, field) in [
                (!a.hash_policy.is_empty(), "hash_policy"),
                (a.max_stream_duration.is_some(), "max_stream_duration"),
                (a.host_rewrite_specifier.is_some(), "host_rewrite"),
                (
                    !a.request_mirror_policies.is_empty(),
                    "request_mirror_policies",
                ),
            ] {
                if set {
                    ignored.push(format!("route {:?}: route.{field}", route.name));
                }
            }
            target
        }
        Some(Action::DirectResponse(d)) => {
            let status = u16::try_from(d.status)
                .ok()
                .filter(|s| (200..=599).contains(s))
                .ok_or_else(|| {
                    format!(
                        ".direct_response.status {} must be from 200 to 599",
                        d.status
                    )
                })?;
            let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                None => String::new(),
                Some(Specifier::InlineString(s)) => s.clone(),
                Some(Specifier::InlineBytes(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(_) => {
                    return Err(
                        ".direct_response.body: torii takes inline_string or inline_bytes \
                                (not files or environment variables)"
                            .into(),
                    )
                }
            };
            route.action = RouteAction::Direct { status, body };
            Target::Direct
        }
        Some(Action::Redirect(_)) => {
            return Err(
                ".redirect: torii does not answer with redirects; route to a cluster or \
                        use direct_response"
                    .into(),
            )
        }
        Some(_) => {
            return Err(
                ": torii needs route (cluster, weighted_clusters) or direct_response as \
                        the action"
                    .into(),
            )
        }
        None => return Err(": the action is missing".into()),
    };
    Ok(XRoute { route, target })
}

fn matcher(m: &PbRouteMatch) -> Result<RouteMatch, String> {
    let insensitive = m.case_sensitive.is_some_and(|c| !c.value);
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) if insensitive => Some(PathMatch::Regex(anchored(
            &format!("(?i){}.*", regex::escape(p)),
        )?)),
        Some(PathSpecifier::Prefix(p)) if p.is_empty() || p == "/" => None,
        Some(PathSpecifier::Prefix(p)) => Some(PathMatch::Prefix(p.clone())),
        Some(PathSpecifier::Path(p)) if insensitive => Some(PathMatch::Regex(anchored(&format!(
            "(?i){}",
            regex::escape(p)
        ))?)),
        Some(PathSpecifier::Path(p)) => Some(PathMatch::Exact(p.clone())),
        Some(PathSpecifier::SafeRegex(re)) => Some(PathMatch::Regex(
            anchored(&re.regex).map_err(|e| format!("safe_regex: {e}"))?,
        )),
        Some(_) => return Err("path_specifier: torii matches prefix, path and safe_regex".into()),
        None => {
            return Err("path_specifier is missing; write prefix: \"/\" to match every path".into())
        }
    };
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        headers.push(header(h).map_err(|e| format!("headers[{i}] ({:?}): {e}", h.name))?);
    }
    if m.grpc.is_some() {
        headers.push(HeaderMatch {
            name: "content-type".into(),
            value: HeaderValueMatch::Regex(anchored("application/grpc([+;].*)?")?),
            invert: false,
        });
    }
    for (set, field) in [
        (!m.query_parameters.is_empty(), "query_parameters"),
        (m.runtime_fraction.is_some(), "runtime_fraction"),
        (!m.cookies.is_empty(), "cookies"),
        (m.tls_context.is_some(), "tls_context"),
        (!m.dynamic_metadata.is_empty(), "dynamic_metadata"),
        (!m.filter_state.is_empty(), "filter_state"),
    ] {
        if set {
            return Err(format!(
                "{field}: torii cannot match on it, and ignoring it would route requests the \
                 route does not mean to take; leave it unset"
            ));
        }
    }
    Ok(RouteMatch {
        host: None,
        path,
        grpc_service: None,
        grpc_method: None,
        headers,
    })
}

/// Envoy's retry policy as torii's: the conditions torii has (gRPC
/// statuses, `5xx`, `gateway-error`, `reset`, `connect-failure`), Envoy's
/// `num_retries` (default 1) plus the first attempt, `per_try_timeout`
/// and the backoff. None when nothing torii can retry on is asked for.
fn retry(p: &PbRetryPolicy, route: &str, ignored: &mut Vec<String>) -> Option<RetryPolicy> {
    let mut on = RetryOn::default();
    for cond in p
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        match cond {
            "5xx" => on.http_5xx = true,
            "gateway-error" => on.gateway_error = true,
            "reset" | "reset-before-request" => on.reset = true,
            "connect-failure" => on.connect_failure = true,
            // torii sends refused streams again by itself.
            "refused-stream" => {}
            other => match RETRY_STATUSES
                .iter()
                .find(|(name, _)| *name == other.replace('-', "_"))
            {
                Some((_, code)) => on.grpc |= 1 << code,
                None => ignored.push(format!("route {route:?}: retry_on {other:?}")),
            },
        }
    }
    let retries = p.num_retries.map_or(1, |n| n.value);
    if on == RetryOn::default() || retries == 0 {
        return None;
    }
    let base = p
        .retry_back_off
        .as_ref()
        .and_then(|b| b.base_interval.as_ref())
        .and_then(duration)
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_BACKOFF_BASE);
    let max = p
        .retry_back_off
        .as_ref()
        .and_then(|b| b.max_interval.as_ref())
        .and_then(duration)
        .filter(|d| *d >= base)
        .unwrap_or(if base == DEFAULT_BACKOFF_BASE {
            DEFAULT_BACKOFF_MAX
        } else {
            base * 10
        });
    Some(RetryPolicy {
        on,
        attempts: retries.saturating_add(1).min(MAX_RETRY_ATTEMPTS),
        per_try_timeout: p
            .per_try_timeout
            .as_ref()
            .and_then(duration)
            .filter(|d| !d.is_zero()),
        backoff_base: base,
        backoff_max: max,
    })
}

/// Envoy's regexes match the whole value.
fn anchored(re: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("regex {re:?} does not compile: {e}"))
}

/// The deprecated matchers are read too: control planes still send them.
#[allow(deprecated)]
fn header(h: &HeaderMatcher) -> Result<HeaderMatch, String> {
    let name = h.name.to_ascii_lowercase();
    if name.starts_with(':') {
        return Err("torii matches regular headers, not pseudo-headers".into());
    }
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err("not a valid header name".into());
    }
    if h.treat_missing_header_as_empty {
        return Err("treat_missing_header_as_empty is not supported".into());
    }
    let value = match &h.header_match_specifier {
        None => HeaderValueMatch::Present,
        Some(HeaderMatchSpecifier::PresentMatch(true)) => HeaderValueMatch::Present,
        Some(HeaderMatchSpecifier::PresentMatch(false)) => {
            return Ok(HeaderMatch {
                name,
                value: HeaderValueMatch::Present,
                invert: !h.invert_match,
            })
        }
        Some(HeaderMatchSpecifier::ExactMatch(v)) => HeaderValueMatch::Exact(v.clone()),
        Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => {
            HeaderValueMatch::Regex(anchored(&re.regex)?)
        }
        Some(HeaderMatchSpecifier::PrefixMatch(p)) => {
            HeaderValueMatch::Regex(anchored(&format!("{}.*", regex::escape(p)))?)
        }
        Some(HeaderMatchSpecifier::SuffixMatch(s)) => {
            HeaderValueMatch::Regex(anchored(&format!(".*{}", regex::escape(s)))?)
        }
        Some(HeaderMatchSpecifier::ContainsMatch(s)) => {
            HeaderValueMatch::Regex(anchored(&format!(".*{}.*", regex::escape(s)))?)
        }
        Some(HeaderMatchSpecifier::StringMatch(sm)) => {
            let case = if sm.ignore_case { "(?i)" } else { "" };
            let re = match &sm.match_pattern {
                Some(MatchPattern::Exact(v)) if !sm.ignore_case => {
                    return Ok(HeaderMatch {
                        name,
                        value: HeaderValueMatch::Exact(v.clone()),
                        invert: h.invert_match,
                    })
                }
                Some(MatchPattern::Exact(v)) => format!("{case}{}", regex::escape(v)),
                Some(MatchPattern::Prefix(v)) => format!("{case}{}.*", regex::escape(v)),
                Some(MatchPattern::Suffix(v)) => format!("{case}.*{}", regex::escape(v)),
                Some(MatchPattern::Contains(v)) => format!("{case}.*{}.*", regex::escape(v)),
                Some(MatchPattern::SafeRegex(r)) => format!("{case}{}", r.regex),
                _ => return Err(
                    "string_match: torii matches exact, prefix, suffix, contains and safe_regex"
                        .into(),
                ),
            };
            HeaderValueMatch::Regex(anchored(&re)?)
        }
        Some(_) => return Err("range_match is not supported".into()),
    };
    Ok(HeaderMatch {
        name,
        value,
        invert: h.invert_match,
    })
}

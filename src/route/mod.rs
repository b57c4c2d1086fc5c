//! Route matching: picks the first route whose every condition holds.
//! Routing only chooses what to do; clusters and endpoints do the rest.

use std::borrow::Cow;

use http::HeaderMap;

mod index;
pub use index::Index;

use crate::config::{HeaderMatch, HeaderValueMatch, HostMatch, PathMatch, Route, RouteMatch};

/// What a route is matched against. The path is already normalised.
pub struct RequestFacts<'a> {
    /// Lower-cased, without port.
    pub host: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// (service, method) when the request is gRPC.
    pub grpc: Option<(&'a str, &'a str)>,
}

#[cfg(test)]
pub fn find<'r>(routes: &'r [Route], req: &RequestFacts<'_>) -> Option<&'r Route> {
    find_index(routes, req).map(|i| &routes[i])
}

/// The place of the first route that matches (first match wins).
pub fn find_index(routes: &[Route], req: &RequestFacts<'_>) -> Option<usize> {
    routes.iter().position(|r| matches(&r.matcher, req))
}

pub fn matches(m: &RouteMatch, req: &RequestFacts<'_>) -> bool {
    if let Some(host) = &m.host {
        if !host_matches(host, req.host) {
            return false;
        }
    }
    if let Some(path) = &m.path {
        let ok = match path {
            PathMatch::Exact(p) => req.path == p,
            PathMatch::Prefix(p) => prefix_matches(p, req.path),
            PathMatch::Regex(re) => re.is_match(req.path),
        };
        if !ok {
            return false;
        }
    }
    if m.grpc_service.is_some() || m.grpc_method.is_some() {
        let Some((service, method)) = req.grpc else {
            return false;
        };
        if let Some(want) = &m.grpc_service {
            if want != service {
                return false;
            }
        }
        if let Some(want) = &m.grpc_method {
            let ok = match want.split_once('/') {
                Some((s, meth)) => s == service && meth == method,
                None => want == method,
            };
            if !ok {
                return false;
            }
        }
    }
    m.headers.iter().all(|h| header_matches(h, req.headers))
}

/// Prefixes match whole bytes, as Envoy does: `/api` matches `/api`,
/// `/api/x` and `/apix`. Write `/api/` to stop at a segment boundary.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
}

pub fn host_matches(m: &HostMatch, host: &str) -> bool {
    match m {
        HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
        HostMatch::Suffix(suffix) => {
            host.len() > suffix.len()
                && host
                    .get(host.len() - suffix.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        }
    }
}

fn header_matches(m: &HeaderMatch, headers: &HeaderMap) -> bool {
    let values = headers.get_all(m.name.as_str());
    let hit = match &m.value {
        HeaderValueMatch::Present => values.iter().next().is_some(),
        HeaderValueMatch::Exact(want) => values.iter().any(|v| v.as_bytes() == want.as_bytes()),
        HeaderValueMatch::Regex(re) => values
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| re.is_match(v)),
    };
    hit != m.invert
}

/// Host from `:authority`/`Host`, lower-cased and without the port.
pub fn normalize_host(authority: &str) -> Cow<'_, str> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                authority
            }
        })
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteAction;

    /// A route that answers `body` itself (also for the index's tests).
    pub(super) fn route(m: RouteMatch, body: &str) -> Route {
        Route::direct("r", m, 200, body.into())
    }

    fn body(r: Option<&Route>) -> &str {
        match r.map(|r| &r.action) {
            Some(RouteAction::Direct { body, .. }) => body,
            _ => "none",
        }
    }

    #[test]
    fn first_match_wins_and_grpc_matching() {
        let routes = vec![
            route(
                RouteMatch {
                    grpc_service: Some("a.Svc".into()),
                    grpc_method: Some("Get".into()),
                    ..Default::default()
                },
                "get",
            ),
            route(
                RouteMatch {
                    grpc_service: Some("a.Svc".into()),
                    ..Default::default()
                },
                "svc",
            ),
            route(
                RouteMatch {
                    path: Some(PathMatch::Prefix("/".into())),
                    ..Default::default()
                },
                "web",
            ),
        ];
        let h = HeaderMap::new();
        let f = |path, grpc| RequestFacts {
            host: "x",
            path,
            headers: &h,
            grpc,
        };
        assert_eq!(
            body(find(&routes, &f("/a.Svc/Get", Some(("a.Svc", "Get"))))),
            "get"
        );
        assert_eq!(
            body(find(&routes, &f("/a.Svc/Put", Some(("a.Svc", "Put"))))),
            "svc"
        );
        assert_eq!(body(find(&routes, &f("/a.Svc/Put", None))), "web");
    }

    #[test]
    fn hosts() {
        assert!(host_matches(
            &HostMatch::Exact("api.example.com".into()),
            "api.example.com"
        ));
        assert!(host_matches(
            &HostMatch::Suffix(".example.com".into()),
            "api.example.com"
        ));
        assert!(!host_matches(
            &HostMatch::Suffix(".example.com".into()),
            "example.com"
        ));
        assert_eq!(normalize_host("API.Example.com:443"), "api.example.com");
        assert_eq!(normalize_host("[::1]:8080"), "::1");
        assert_eq!(normalize_host("example.com."), "example.com");
    }

    #[test]
    fn headers_and_invert() {
        let m = RouteMatch {
            headers: vec![HeaderMatch {
                name: "x-canary".into(),
                value: HeaderValueMatch::Exact("1".into()),
                invert: false,
            }],
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        fn facts(h: &HeaderMap) -> RequestFacts<'_> {
            RequestFacts {
                host: "",
                path: "/",
                headers: h,
                grpc: None,
            }
        }
        assert!(!matches(&m, &facts(&h)));
        h.insert("x-canary", "1".parse().unwrap());
        assert!(matches(&m, &facts(&h)));
        let inv = RouteMatch {
            headers: vec![HeaderMatch {
                name: "x-canary".into(),
                value: HeaderValueMatch::Present,
                invert: true,
            }],
            ..Default::default()
        };
        assert!(!matches(&inv, &facts(&h)));
    }
}

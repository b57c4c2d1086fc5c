//! Phase 11, upstream request: the wire the upstream gets (gRPC always
//! HTTP/2; other requests as the client spoke, unless the cluster says
//! otherwise), and the request rewritten for it: hop-by-hop headers and
//! client-set identity headers removed, `x-forwarded-*` and the verified
//! client certificate added, the route's header edits and prefix rewrite,
//! `:authority`/`Host` for the wire. A copy of the head is kept for the one
//! resend an `auto` cluster may need (an upstream that turns out not to
//! speak h2c), and the request body is counted when the access log is on.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::conn_info::ConnInfo;
use super::deadline::Deadline;
use super::headers::{self, apply_edits};
use super::normalize::Normalized;
use super::outcome::Outcome;
use super::{Forward, Pipeline, Step};
use crate::body::counting::Counting;
use crate::body::Received;
use crate::config::{PathMatch, Route, UpstreamProtocol};
use crate::error::{ErrorCode, ProxyError};
use crate::upstream::{ClusterRuntime, Wire};

/// What the earlier phases chose for a request that goes upstream.
pub(super) struct Chosen<'r> {
    pub route: &'r Route,
    /// The route's place in the listener's routes (its response header
    /// edits); None for the original-destination passthrough.
    pub index: Option<usize>,
    pub cluster: Arc<ClusterRuntime>,
    pub deadline: Deadline,
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) fn upstream_request(
        &self,
        mut parts: Parts,
        body: Received,
        conn: &ConnInfo,
        req: &Normalized<'_>,
        chosen: Chosen<'_>,
        grpc_req: bool,
        outcome: &mut Outcome,
    ) -> Result<Forward, Step> {
        let cluster = chosen.cluster;
        let wire = choose_wire(&cluster, grpc_req, parts.version);
        let client_version = parts.version;
        let client_body_empty = body.is_end_stream();
        self.rewrite_request(&mut parts, conn, chosen.route, req, &cluster, wire)?;

        let retry_parts = if wire == Wire::Http2
            && cluster.config.protocol == UpstreamProtocol::Auto
            && !grpc_req
            && client_body_empty
        {
            Some(Box::new(parts.clone()))
        } else {
            None
        };
        let body = match &outcome.log {
            Some(_) => {
                let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
                outcome.bytes_in = Some(count.clone());
                Counting::new(body, count).boxed_unsync()
            }
            None => body.boxed(),
        };
        Ok(Forward {
            req: Box::new(Request::from_parts(parts, body)),
            cluster,
            route: chosen.index,
            wire,
            client_version,
            limit: chosen.deadline.limit,
            limit_err: chosen.deadline.err,
            retry_parts,
        })
    }

    #[inline]
    fn rewrite_request(
        &self,
        parts: &mut Parts,
        conn: &ConnInfo,
        route: &Route,
        req: &Normalized<'_>,
        cluster: &ClusterRuntime,
        wire: Wire,
    ) -> Result<(), ProxyError> {
        self.rewrite_headers(parts, conn, route);
        let pq = rewritten_path(parts, route, &req.path)?;
        set_target(parts, pq, req.authority.unwrap_or(""), cluster, wire)
    }

    /// Hop-by-hop headers out, identity headers torii's own, the route's
    /// edits.
    #[inline]
    fn rewrite_headers(&self, parts: &mut Parts, conn: &ConnInfo, route: &Route) {
        let h = &mut parts.headers;
        if parts.version != Version::HTTP_2 {
            // Over HTTP/2 they never got this far: torii's HTTP/2 refuses
            // a head with a connection-specific field or a `te` other than
            // `trailers` as malformed (RFC 9113 §8.2.2).
            headers::strip_hop_by_hop(h);
        }
        // Identity headers are torii's to set, never the client's.
        h.remove(&headers::X_FORWARDED_CLIENT_CERT);
        if let Some(xfcc) = conn.tls.as_ref().and_then(|t| t.xfcc.clone()) {
            h.insert(headers::X_FORWARDED_CLIENT_CERT, xfcc);
        }
        headers::set_forwarded(h, &conn.peer_ip, self.scheme());
        apply_edits(h, &route.request_headers);
    }
}

/// The path and query the upstream gets: the route's prefix rewrite, else
/// the normalized path (the client's own bytes when normalizing changed
/// nothing).
#[inline]
fn rewritten_path(parts: &Parts, route: &Route, path: &str) -> Result<PathAndQuery, ProxyError> {
    let new_path = match (&route.prefix_rewrite, &route.matcher.path) {
        (Some(rewrite), Some(PathMatch::Prefix(prefix))) => Some(format!(
            "{rewrite}{}",
            &path[prefix.len().min(path.len())..]
        )),
        _ if parts.uri.path() == path => None,
        _ => Some(path.to_string()),
    };
    let pq = match (new_path, parts.uri.path_and_query()) {
        (None, Some(pq)) => Ok(pq.clone()),
        (new_path, _) => {
            let new_path = new_path.unwrap_or_else(|| path.to_string());
            let pq = match parts.uri.query() {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path,
            };
            PathAndQuery::try_from(pq)
        }
    };
    pq.map_err(|e| {
        ProxyError::new(
            ErrorCode::InvalidPath,
            format!("the rewritten path is not valid: {e}"),
        )
    })
}

/// The request's target for the wire: an absolute URI with `:authority`
/// for HTTP/2, an origin-form URI with `Host` for HTTP/1.1.
#[inline]
fn set_target(
    parts: &mut Parts,
    pq: PathAndQuery,
    authority: &str,
    cluster: &ClusterRuntime,
    wire: Wire,
) -> Result<(), ProxyError> {
    match wire {
        Wire::Http2 => {
            let scheme = if cluster.config.tls.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            };
            // The client's own :authority goes on as it is (no parse, no copy).
            let same = parts.uri.authority().filter(|a| a.as_str() == authority);
            let auth = match same {
                Some(a) => Ok(a.clone()),
                None => Authority::try_from(authority),
            }
            .or_else(|_| Authority::try_from(cluster.config.name.as_str()))
            .map_err(|e| ProxyError::new(ErrorCode::BadRequest, format!("bad authority: {e}")))?;
            parts.uri = Uri::builder()
                .scheme(scheme)
                .authority(auth)
                .path_and_query(pq)
                .build()
                .map_err(|e| ProxyError::new(ErrorCode::BadRequest, e.to_string()))?;
            parts.headers.remove(header::HOST);
            parts.version = Version::HTTP_2;
        }
        Wire::Http1 => {
            parts.uri = Uri::from(pq);
            if !authority.is_empty() {
                if let Ok(v) = HeaderValue::from_str(authority) {
                    parts.headers.insert(header::HOST, v);
                }
            }
            parts.version = Version::HTTP_11;
        }
    }
    Ok(())
}

fn choose_wire(cluster: &ClusterRuntime, grpc_req: bool, client: Version) -> Wire {
    match cluster.config.protocol {
        UpstreamProtocol::Http1 => crate::upstream::http1_wire(grpc_req, &cluster.config.name),
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => Wire::Http2,
        UpstreamProtocol::Auto => {
            // gRPC always needs HTTP/2; other requests go as the client
            // spoke, unless this upstream turned out not to speak h2c.
            let h2_client = client == Version::HTTP_2
                && !cluster
                    .h2_refused
                    .load(std::sync::atomic::Ordering::Relaxed);
            if grpc_req || h2_client {
                Wire::Http2
            } else {
                Wire::Http1
            }
        }
    }
}

/// Turns a request prepared for an HTTP/2 upstream into one for HTTP/1.1.
pub(super) fn to_http1(p: &mut Parts) {
    if let Some(auth) = p.uri.authority().cloned() {
        if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
            p.headers.insert(header::HOST, v);
        }
    }
    let pq = p
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    p.uri = Uri::from(pq);
    p.version = Version::HTTP_11;
}

//! The request pipeline, in the order a request lives it:
//! health → normalise path → route → rewrite headers → upstream → stream back.
//! Every failure on the way is answered by `respond`, in the client's protocol.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{self, Body};
use super::headers;
use super::outcome::Outcome;
use super::path;
use super::response_body::ResponseBody;
use crate::config::{HeaderEdits, Listener, Route, RouteAction, UpstreamProtocol};
use crate::error::{ErrorCode, ProxyError};
use crate::grpc;
use crate::respond;
use crate::route::{self, RequestFacts};
use crate::telemetry::Metrics;
use crate::upstream::original::{OriginalDestinations, ORIGINAL_DESTINATION};
use crate::upstream::{ClusterRuntime, Wire};

/// What torii knows about the client connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: Option<TlsFacts>,
    /// What the first bytes were classified as (`tls`, `http1`, `http2`,
    /// `tcp`: the `detected` label of `torii_protocol_detections_total`).
    pub detected: &'static str,
    /// Why, in plain words (for the access log).
    pub detect_reason: &'static str,
    /// Where the connection was headed before iptables redirected it (on an
    /// `original_destination` listener): requests no route takes go there.
    pub original_dst: Option<SocketAddr>,
}

impl ConnInfo {
    /// A plaintext connection not (yet) classified.
    pub fn new(peer: SocketAddr) -> Self {
        ConnInfo {
            peer,
            tls: None,
            detected: "",
            detect_reason: "",
            original_dst: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    pub sni: Option<String>,
    pub alpn: Option<String>,
    pub version: Option<String>,
    /// SANs of a verified client certificate (`DNS:…`, `URI:…`, `IP:…`).
    pub client_sans: Vec<String>,
    /// `x-forwarded-client-cert` for a verified client certificate.
    pub xfcc: Option<HeaderValue>,
}

/// Everything a listener needs to handle requests; immutable once built.
pub struct ListenerRuntime {
    pub name: Arc<str>,
    pub config: Listener,
    pub clusters: Arc<HashMap<String, Arc<ClusterRuntime>>>,
    pub metrics: Arc<Metrics>,
    /// Set when an `auto` cluster's upstream answered HTTP/2 with HTTP/1.1:
    /// later non-gRPC requests to it use HTTP/1.1.
    h2_refused: dashmap_lite::Flags,
    /// On an `original_destination` listener: one cluster per destination.
    original: Option<OriginalDestinations>,
}

mod dashmap_lite {
    //! A tiny set of per-cluster flags (clusters are few; a mutex is fine
    //! because it is touched only on the rare protocol fallback).
    use std::collections::HashSet;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Flags(Mutex<HashSet<String>>);

    impl Flags {
        pub fn set(&self, key: &str) {
            if let Ok(mut s) = self.0.lock() {
                s.insert(key.to_string());
            }
        }
        pub fn get(&self, key: &str) -> bool {
            self.0.lock().map(|s| s.contains(key)).unwrap_or(false)
        }
    }
}

impl ListenerRuntime {
    pub fn new(
        config: Listener,
        clusters: Arc<HashMap<String, Arc<ClusterRuntime>>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let original = config
            .traffic
            .original_destination
            .then(OriginalDestinations::default);
        ListenerRuntime {
            name: Arc::from(config.name.as_str()),
            config,
            clusters,
            metrics,
            h2_refused: Default::default(),
            original,
        }
    }

    /// The cluster standing for original destination `dst` (None unless
    /// this is an `original_destination` listener).
    pub fn original_destination(
        &self,
        dst: SocketAddr,
    ) -> Option<Result<Arc<ClusterRuntime>, ProxyError>> {
        let table = self.original.as_ref()?;
        Some(table.get(dst).map_err(|e| {
            ProxyError::new(
                ErrorCode::Internal,
                format!("cannot reach original destination {dst}: {e}"),
            )
        }))
    }

    fn scheme(&self) -> &'static str {
        if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Handles one request. Never fails: errors become responses.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Response<Body> {
        let start = Instant::now();
        let grpc_req = grpc::is_grpc(req.headers());
        let mut slot = Some(Outcome::new(self.metrics.clone(), self.name.clone(), start));
        match self.proxy(req, &conn, grpc_req, &mut slot).await {
            Ok(resp) => resp,
            Err(err) => {
                let Some(mut outcome) = slot else {
                    return respond::error_response(&err, grpc_req);
                };
                let resp = respond::error_response(&err, grpc_req);
                outcome.error = Some(err.code);
                outcome.http_status = resp.status().as_u16();
                if grpc_req {
                    outcome.grpc_status = Some(err.code.grpc_code().as_i32());
                }
                if let Some(cluster) = &outcome.cluster {
                    if err.code != ErrorCode::NoRoute {
                        self.metrics.upstream_error(cluster, err.code.as_str());
                    }
                }
                tracing::debug!(listener = %self.name, code = %err.code, error = %err.message, "request failed");
                resp
            }
        }
    }

    async fn proxy(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        grpc_req: bool,
        slot: &mut Option<Outcome>,
    ) -> Result<Response<Body>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let outcome = slot.as_mut().expect("the outcome is taken only on success");

        // Redirected traffic is headed elsewhere: its /healthz is not ours.
        if parts.uri.path() == self.config.health_path
            && conn.original_dst.is_none()
            && matches!(parts.method, Method::GET | Method::HEAD)
        {
            outcome.http_status = 200;
            return Ok(respond::text_response(200, "ok"));
        }

        let path = path::normalize(parts.uri.path(), self.config.allow_encoded_slashes)
            .map_err(|e| ProxyError::new(ErrorCode::InvalidPath, e.to_string()))?;
        let authority = request_authority(&parts);
        let host = route::normalize_host(authority.as_deref().unwrap_or(""));
        let grpc_names = if grpc_req {
            grpc::split_path(&path)
        } else {
            None
        };
        outcome.grpc = grpc_names.map(|(s, m)| (s.to_string(), m.to_string()));

        let facts = RequestFacts {
            host: &host,
            path: &path,
            headers: &parts.headers,
            grpc: grpc_names,
        };
        let found = route::find(&self.config.routes, &facts);
        // On an original-destination listener, what no route claims goes
        // where it was headed.
        let original = match (found, conn.original_dst) {
            (None, Some(dst)) => self.original_destination(dst).map(|c| (dst, c)),
            _ => None,
        };
        let (route, cluster, refusal_key) = if let Some((dst, cluster)) = original {
            let key = Cow::Owned(format!("{ORIGINAL_DESTINATION}/{dst}"));
            (passthrough_route(), cluster?, key)
        } else {
            let Some(route) = found else {
                let what = match grpc_names {
                    Some((s, m)) => format!("gRPC service {s} method {m}"),
                    None => format!("path {path}"),
                };
                return Err(ProxyError::new(
                    ErrorCode::NoRoute,
                    format!(
                        "no route on listener {} matches {what} (host {}); add a route for it",
                        self.name,
                        if host.is_empty() { "none" } else { &host }
                    ),
                ));
            };
            let cluster_name = match &route.action {
                RouteAction::Direct { status, body } => {
                    outcome.http_status = *status;
                    let mut resp = Response::new(body::full(body.clone()));
                    *resp.status_mut() =
                        http::StatusCode::from_u16(*status).unwrap_or(http::StatusCode::OK);
                    apply_edits(resp.headers_mut(), &route.response_headers);
                    return Ok(resp);
                }
                RouteAction::Cluster(c) => c.name.as_str(),
                RouteAction::Weighted(list) => pick_weighted(list),
            };
            let cluster = self.clusters.get(cluster_name).cloned().ok_or_else(|| {
                ProxyError::new(
                    ErrorCode::Internal,
                    format!("cluster {cluster_name} is not running"),
                )
            })?;
            (route, cluster, Cow::Borrowed(cluster_name))
        };
        let cluster_name = cluster.config.name.as_str();
        outcome.cluster = Some(Arc::from(cluster_name));

        // Deadline: gRPC carries its own; other requests get the route's.
        let grpc_deadline = if grpc_req {
            parts
                .headers
                .get("grpc-timeout")
                .and_then(|v| grpc::timeout::parse(v.as_bytes()))
        } else {
            None
        };
        let (limit, limit_err) = match (grpc_deadline, route.timeout) {
            (Some(d), _) => (
                Some(d),
                ProxyError::new(
                    ErrorCode::DeadlineExceeded,
                    format!("the call's deadline (grpc-timeout {d:?}) expired before the upstream finished"),
                ),
            ),
            (None, Some(t)) if !grpc_req => (
                Some(t),
                ProxyError::new(
                    ErrorCode::UpstreamTimeout,
                    format!("the upstream did not finish within the route timeout {t:?}"),
                ),
            ),
            _ => (None, ProxyError::new(ErrorCode::Internal, "")),
        };

        let wire = self.choose_wire(&cluster, &refusal_key, grpc_req, parts.version);
        let client_version = parts.version;
        let client_body_empty = body.is_end_stream();
        self.rewrite_request(
            &mut parts,
            conn,
            route,
            &path,
            authority.as_deref(),
            &cluster,
            wire,
        )?;

        let retry_parts = if wire == Wire::Http2
            && cluster.config.protocol == UpstreamProtocol::Auto
            && !grpc_req
            && client_body_empty
        {
            Some(parts.clone())
        } else {
            None
        };
        let upstream_req = Request::from_parts(parts, body::incoming(body));
        let send = cluster.send(upstream_req, wire);
        let result = match limit {
            Some(d) => match tokio::time::timeout(d, send).await {
                Ok(r) => r,
                Err(_) => return Err(limit_err),
            },
            None => send.await,
        };
        let (resp, guard) = match result {
            Ok(ok) => ok,
            Err(e) if e.code == ErrorCode::UpstreamProtocolMismatch && retry_parts.is_some() => {
                // An HTTP/1.1-only upstream behind `protocol: auto`: plain HTTP
                // requests fall back to HTTP/1.1 from now on.
                self.h2_refused.set(&refusal_key);
                tracing::info!(
                    cluster = cluster_name,
                    "upstream does not speak h2c; using HTTP/1.1 for its non-gRPC requests"
                );
                let mut p = retry_parts.expect("checked");
                to_http1(&mut p);
                cluster
                    .send(Request::from_parts(p, body::empty()), Wire::Http1)
                    .await?
            }
            Err(e) => return Err(e),
        };

        let (mut rparts, rbody) = resp.into_parts();
        headers::strip_hop_by_hop(&mut rparts.headers);
        apply_edits(&mut rparts.headers, &route.response_headers);
        rparts.version = client_version;
        outcome.http_status = rparts.status.as_u16();
        if let Some(code) = rparts
            .headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
        {
            outcome.grpc_status = Some(code);
        }
        let deadline = limit.map(|d| {
            let remaining = d.saturating_sub(outcome.start.elapsed());
            (Box::pin(tokio::time::sleep(remaining)), limit_err)
        });
        let outcome = slot.take().expect("present until here");
        let body = ResponseBody::new(
            rbody,
            grpc_req,
            deadline,
            guard,
            outcome,
            cluster_name.to_string(),
        );
        Ok(Response::from_parts(rparts, body.boxed_unsync()))
    }

    /// `refusal_key` names the upstream for the h2-refused memory (the
    /// cluster, or one original destination).
    fn choose_wire(
        &self,
        cluster: &ClusterRuntime,
        refusal_key: &str,
        grpc_req: bool,
        client: Version,
    ) -> Wire {
        match cluster.config.protocol {
            UpstreamProtocol::Http1 => Wire::Http1,
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => Wire::Http2,
            UpstreamProtocol::Auto => {
                // gRPC always needs HTTP/2; other requests go as the client
                // spoke, unless this upstream turned out not to speak h2c.
                let h2_client = client == Version::HTTP_2 && !self.h2_refused.get(refusal_key);
                if grpc_req || h2_client {
                    Wire::Http2
                } else {
                    Wire::Http1
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rewrite_request(
        &self,
        parts: &mut http::request::Parts,
        conn: &ConnInfo,
        route: &Route,
        path: &str,
        authority: Option<&str>,
        cluster: &ClusterRuntime,
        wire: Wire,
    ) -> Result<(), ProxyError> {
        let h = &mut parts.headers;
        headers::strip_hop_by_hop(h);
        // Identity headers are torii's to set, never the client's.
        h.remove(&headers::X_FORWARDED_CLIENT_CERT);
        if let Some(xfcc) = conn.tls.as_ref().and_then(|t| t.xfcc.clone()) {
            h.insert(headers::X_FORWARDED_CLIENT_CERT, xfcc);
        }
        headers::set_forwarded(h, conn.peer.ip(), self.scheme());
        headers::ensure_request_id(h);
        apply_edits(h, &route.request_headers);

        let new_path = match (&route.prefix_rewrite, &route.matcher.path) {
            (Some(rewrite), Some(crate::config::PathMatch::Prefix(prefix))) => {
                format!("{rewrite}{}", &path[prefix.len().min(path.len())..])
            }
            _ => path.to_string(),
        };
        let pq = match parts.uri.query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        let pq = PathAndQuery::try_from(pq).map_err(|e| {
            ProxyError::new(
                ErrorCode::InvalidPath,
                format!("the rewritten path is not valid: {e}"),
            )
        })?;
        let authority = authority.unwrap_or("");
        match wire {
            Wire::Http2 => {
                let scheme = if cluster_is_tls(cluster) {
                    Scheme::HTTPS
                } else {
                    Scheme::HTTP
                };
                let auth = Authority::try_from(authority)
                    .or_else(|_| Authority::try_from(cluster.config.name.as_str()))
                    .map_err(|e| {
                        ProxyError::new(ErrorCode::BadRequest, format!("bad authority: {e}"))
                    })?;
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
}

/// The route requests to an original destination take: no rewrites, no
/// header edits, no timeout of torii's own.
fn passthrough_route() -> &'static Route {
    static ROUTE: OnceLock<Route> = OnceLock::new();
    ROUTE.get_or_init(|| Route {
        matcher: Default::default(),
        action: RouteAction::Direct {
            status: 0,
            body: String::new(),
        },
        prefix_rewrite: None,
        request_headers: HeaderEdits::default(),
        response_headers: HeaderEdits::default(),
        timeout: None,
    })
}

fn cluster_is_tls(c: &ClusterRuntime) -> bool {
    c.config.tls.is_some()
}

/// Turns a request prepared for an HTTP/2 upstream into one for HTTP/1.1.
fn to_http1(p: &mut http::request::Parts) {
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

/// `:authority` for HTTP/2, `Host` for HTTP/1.1.
fn request_authority(parts: &http::request::Parts) -> Option<String> {
    if let Some(a) = parts.uri.authority() {
        return Some(a.as_str().to_string());
    }
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn apply_edits(h: &mut http::HeaderMap, edits: &HeaderEdits) {
    for name in &edits.remove {
        h.remove(name);
    }
    for (name, value) in &edits.add {
        h.insert(name.clone(), value.clone());
    }
}

fn pick_weighted(list: &[(Arc<crate::config::Cluster>, u32)]) -> &str {
    let total: u64 = list.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut n = rand::random_range(0..total.max(1));
    for (c, w) in list {
        if n < u64::from(*w) {
            return &c.name;
        }
        n -= u64::from(*w);
    }
    &list[0].0.name
}

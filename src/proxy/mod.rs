//! The request pipeline, in the order a request lives it:
//! health → normalise path → route → rewrite headers → upstream → stream back.
//! Every failure on the way is answered by `respond`, in the client's protocol.

pub mod grpc_health;
pub mod headers;
pub mod outcome;
pub mod path;
pub mod respond;
pub mod response_body;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use crate::body::{self, Body, Received};
use crate::config::{HeaderEdits, Listener, Route, RouteAction, UpstreamProtocol};
use crate::error::{ErrorCode, ProxyError};
use crate::grpc;
use crate::route::{self, RequestFacts};
use crate::telemetry::access_log::AccessLogger;
use crate::telemetry::Metrics;
use crate::upstream::original::OriginalDestinations;
use crate::upstream::{ClusterRuntime, Wire};
use outcome::Outcome;
use response_body::ResponseBody;

/// What [`ListenerRuntime::prepare`] decided for a request.
enum Step {
    /// torii answers it itself (its health path, a direct response).
    Answer(Response<Body>),
    /// torii's own `grpc.health.v1.Health`, for a request no route takes.
    Health {
        watch: bool,
        body: Received,
        host: String,
        headers: http::HeaderMap,
    },
    /// To a cluster.
    Forward(Forward),
}

/// A request ready to go upstream, and what answering from the upstream's
/// response needs.
struct Forward {
    /// Boxed: the request passes through the futures that send it, and an
    /// `async fn` keeps what it is given by value twice.
    req: Box<Request<Body>>,
    cluster: Arc<ClusterRuntime>,
    /// The route's place in the listener's routes (its response header
    /// edits); None for the original-destination passthrough.
    route: Option<usize>,
    wire: Wire,
    client_version: Version,
    limit: Option<std::time::Duration>,
    limit_err: ProxyError,
    /// For an HTTP/1.1 retry when an `auto` upstream turns out not to
    /// speak h2c (plain HTTP requests without a body).
    retry_parts: Option<Box<http::request::Parts>>,
}

/// A request being handled (see [`ListenerRuntime::handle`]): answered
/// already, or waiting for the upstream.
pub enum Handling {
    Ready(Option<Response<Body>>),
    Waiting(std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>),
}

impl std::future::Future for Handling {
    type Output = Response<Body>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Response<Body>> {
        match self.get_mut() {
            Handling::Ready(resp) => {
                std::task::Poll::Ready(resp.take().expect("a Handling is polled until ready, once"))
            }
            Handling::Waiting(fut) => fut.as_mut().poll(cx),
        }
    }
}

/// A response torii made itself: its size is known up front.
fn answered(resp: Response<Body>, mut outcome: Outcome) -> Response<Body> {
    outcome.bytes_out = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
    resp
}

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
    /// The peer's IP as a header value (`x-forwarded-for`), made once per
    /// connection rather than per request.
    pub peer_ip: HeaderValue,
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
            peer_ip: HeaderValue::from_str(&peer.ip().to_string())
                .expect("an IP address is a valid header value"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    pub sni: Option<String>,
    pub alpn: Option<std::borrow::Cow<'static, str>>,
    pub version: Option<std::borrow::Cow<'static, str>>,
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
    /// False while torii is starting or draining.
    pub ready: tokio::sync::watch::Receiver<bool>,
    pub logger: AccessLogger,
    /// On an `original_destination` listener: one cluster per destination.
    original: Option<OriginalDestinations>,
}

impl ListenerRuntime {
    pub fn new(
        config: Listener,
        clusters: Arc<HashMap<String, Arc<ClusterRuntime>>>,
        metrics: Arc<Metrics>,
        ready: tokio::sync::watch::Receiver<bool>,
        logger: AccessLogger,
    ) -> Self {
        let original = config
            .traffic
            .original_destination
            .then(|| OriginalDestinations::new(metrics.clone()));
        ListenerRuntime {
            name: Arc::from(config.name.as_str()),
            config,
            clusters,
            metrics,
            ready,
            logger,
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
    ///
    /// Everything up to sending upstream (health, path, route, header
    /// rewrites) happens here, synchronously; only the exchange with the
    /// upstream is a future, boxed. So the future a connection keeps per
    /// stream is small, and the boxed one holds only what lives across the
    /// upstream's answer: an `async fn` would keep its arguments twice (as
    /// captured and as moved into its body), and every local that a borrow
    /// keeps alive until an `.await`.
    pub fn handle(self: Arc<Self>, req: Request<Received>, conn: Arc<ConnInfo>) -> Handling {
        let start = Instant::now();
        let grpc_req = grpc::is_grpc(req.headers());
        let mut outcome =
            Outcome::new(self.metrics.clone(), self.name.clone(), start, &self.logger);
        outcome.grpc_request = grpc_req;
        match self.prepare(req, &conn, grpc_req, &mut outcome) {
            Ok(Step::Answer(resp)) => Handling::Ready(Some(answered(resp, outcome))),
            Err(err) => Handling::Ready(Some(self.failed(err, grpc_req, Some(outcome)))),
            Ok(Step::Health {
                watch,
                body,
                host,
                headers,
            }) => Handling::Waiting(Box::pin(async move {
                match self.serve_health(watch, body, host, headers).await {
                    Ok(resp) => answered(resp, outcome),
                    Err(err) => self.failed(err, grpc_req, Some(outcome)),
                }
            })),
            Ok(Step::Forward(fwd)) => {
                let mut slot = Some(outcome);
                Handling::Waiting(Box::pin(async move {
                    match self.forward(fwd, grpc_req, &mut slot).await {
                        Ok(resp) => resp,
                        Err(err) => self.failed(err, grpc_req, slot),
                    }
                }))
            }
        }
    }

    /// The error response for `err`, recorded in `outcome` (None once the
    /// response body owns it).
    fn failed(&self, err: ProxyError, grpc_req: bool, outcome: Option<Outcome>) -> Response<Body> {
        let resp = respond::error_response(&err, grpc_req);
        let Some(mut outcome) = outcome else {
            return resp;
        };
        outcome.bytes_out = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
        outcome.error = Some(err.code);
        if outcome.log.is_some() {
            outcome.message = Some(err.message.clone());
        }
        outcome.http_status = resp.status().as_u16();
        if grpc_req {
            outcome.grpc_status = Some(err.code.grpc_code().as_i32());
        }
        if let Some(cluster) = &outcome.cluster {
            if !matches!(err.code, ErrorCode::NoRoute | ErrorCode::ClientCancelled) {
                self.metrics.upstream_error(cluster, err.code.as_str());
            }
        }
        tracing::debug!(listener = %self.name, code = %err.code, error = %err.message, "request failed");
        resp
    }

    /// Health, path, route and header rewrites: what to do with `req`.
    fn prepare(
        &self,
        req: Request<Received>,
        conn: &ConnInfo,
        grpc_req: bool,
        outcome: &mut Outcome,
    ) -> Result<Step, ProxyError> {
        let (mut parts, body) = req.into_parts();
        headers::ensure_request_id(&mut parts.headers);
        if let Some(r) = outcome.log.as_deref_mut() {
            fill_log(r, &parts, conn);
        }

        // Redirected traffic is headed elsewhere: its /healthz is not ours.
        if parts.uri.path() == self.config.health_path
            && conn.original_dst.is_none()
            && matches!(parts.method, Method::GET | Method::HEAD)
        {
            // A load balancer should stop sending here while torii drains.
            let (status, text) = if *self.ready.borrow() {
                (200, "ok")
            } else {
                (503, "draining")
            };
            outcome.http_status = status;
            return Ok(Step::Answer(respond::text_response(status, text)));
        }

        // A cheap clone (shared bytes) so the path can be borrowed while
        // the request parts are rewritten.
        let uri = parts.uri.clone();
        let path = path::normalize(uri.path(), self.config.allow_encoded_slashes)
            .map_err(|e| ProxyError::new(ErrorCode::InvalidPath, e.to_string()))?;
        let authority = request_authority(&parts);
        let authority = authority.as_ref().map(RequestAuthority::as_str);
        let host = route::normalize_host(authority.unwrap_or(""));
        let grpc_names = if grpc_req {
            grpc::split_path(&path)
        } else {
            None
        };
        if let Some((service, _)) = grpc_names {
            outcome.grpc = Some(grpc::GrpcName::split(&uri, &path, service.len()));
        }

        let facts = RequestFacts {
            host: &host,
            path: &path,
            headers: &parts.headers,
            grpc: grpc_names,
        };
        let found = route::find_index(&self.config.routes, &facts);
        // On an original-destination listener, what no route claims goes
        // where it was headed.
        let original = match (found, conn.original_dst) {
            (None, Some(dst)) => self.original_destination(dst),
            _ => None,
        };
        outcome.routed = found.is_some() || original.is_some();
        // The route's place is kept for after the upstream answers (its
        // response header edits); None: the passthrough, which edits nothing.
        let (route, route_index, cluster) = if let Some(cluster) = original {
            (passthrough_route(), None, cluster?)
        } else {
            let Some(index) = found else {
                if grpc_req && (path == grpc_health::CHECK || path == grpc_health::WATCH) {
                    outcome.routed = true;
                    outcome.http_status = 200;
                    outcome.grpc_status = Some(0);
                    return Ok(Step::Health {
                        watch: path == grpc_health::WATCH,
                        body,
                        host: host.into_owned(),
                        headers: parts.headers,
                    });
                }
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
            let route = &self.config.routes[index];
            let cluster_name = match &route.action {
                RouteAction::Direct { status, body } => {
                    outcome.http_status = *status;
                    let mut resp = Response::new(body::full(body.clone()));
                    *resp.status_mut() =
                        http::StatusCode::from_u16(*status).unwrap_or(http::StatusCode::OK);
                    apply_edits(resp.headers_mut(), &route.response_headers);
                    return Ok(Step::Answer(resp));
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
            (route, Some(index), cluster)
        };
        outcome.cluster = Some(cluster.name.clone());

        // Deadline: gRPC carries its own; other requests get the route's.
        let grpc_deadline = if grpc_req {
            parts
                .headers
                .get(&grpc::GRPC_TIMEOUT)
                .and_then(|v| grpc::timeout::parse(v.as_bytes()))
        } else {
            None
        };
        let (limit, limit_err) = match (grpc_deadline, route.timeout) {
            (Some(d), _) => (
                Some(d),
                ProxyError::new(
                    ErrorCode::DeadlineExceeded,
                    format!("the call's deadline (grpc-timeout {}) expired before the upstream finished", crate::config::duration::display(d)),
                ),
            ),
            (None, Some(t)) if !grpc_req => (
                Some(t),
                ProxyError::new(
                    ErrorCode::UpstreamTimeout,
                    format!("the upstream did not finish within the route timeout {}", crate::config::duration::display(t)),
                ),
            ),
            _ => (None, ProxyError::new(ErrorCode::Internal, "")),
        };

        let wire = self.choose_wire(&cluster, grpc_req, parts.version);
        let client_version = parts.version;
        let client_body_empty = body.is_end_stream();
        self.rewrite_request(&mut parts, conn, route, &path, authority, &cluster, wire)?;

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
                crate::body::counting::Counting::new(body.boxed(), count).boxed_unsync()
            }
            None => body.boxed(),
        };
        Ok(Step::Forward(Forward {
            req: Box::new(Request::from_parts(parts, body)),
            cluster,
            route: route_index,
            wire,
            client_version,
            limit,
            limit_err,
            retry_parts,
        }))
    }

    /// Sends a prepared request upstream and makes the client's response
    /// of the upstream's. `slot` holds the request's outcome until the
    /// response body takes it.
    async fn forward(
        &self,
        fwd: Forward,
        grpc_req: bool,
        slot: &mut Option<Outcome>,
    ) -> Result<Response<Body>, ProxyError> {
        let cluster = &fwd.cluster;
        let cluster_name = cluster.config.name.as_str();
        // The endpoint tried last: a failed request's `upstream` in the log.
        let mut endpoint = None;
        let send = cluster.send_noting(fwd.req, fwd.wire, &mut endpoint);
        let result = match fwd.limit {
            Some(d) => tokio::time::timeout(d, send).await.ok(),
            None => Some(send.await),
        };
        if let (Some(Err(_)) | None, Some(o)) = (&result, slot.as_mut()) {
            o.upstream = endpoint;
        }
        let Some(result) = result else {
            return Err(fwd.limit_err);
        };
        let (resp, guard) = match result {
            Ok(ok) => ok,
            Err(e) if e.code == ErrorCode::UpstreamProtocolMismatch => {
                let Some(retry) = fwd.retry_parts else {
                    return Err(e);
                };
                // An HTTP/1.1-only upstream behind `protocol: auto`: plain HTTP
                // requests fall back to HTTP/1.1 from now on.
                cluster
                    .h2_refused
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    cluster = cluster_name,
                    "upstream does not speak h2c; using HTTP/1.1 for its non-gRPC requests"
                );
                let mut p = *retry;
                to_http1(&mut p);
                let req = Box::new(Request::from_parts(p, body::empty()));
                let mut endpoint = None;
                let sent = Box::pin(cluster.send_noting(req, Wire::Http1, &mut endpoint)).await;
                if let (Err(_), Some(o)) = (&sent, slot.as_mut()) {
                    o.upstream = endpoint;
                }
                sent?
            }
            Err(e) => return Err(e),
        };

        let outcome = slot.as_mut().expect("the outcome is taken only on success");
        outcome.upstream = Some(guard.ep.addr);
        let (mut rparts, rbody) = resp.into_parts();
        if rparts.version != Version::HTTP_2 {
            // As for requests: an HTTP/2 head has none (see rewrite_request).
            headers::strip_hop_by_hop(&mut rparts.headers);
        }
        if let Some(i) = fwd.route {
            apply_edits(&mut rparts.headers, &self.config.routes[i].response_headers);
        }
        rparts.version = fwd.client_version;
        outcome.http_status = rparts.status.as_u16();
        let head_grpc_status: Option<i32> = rparts
            .headers
            .get(&grpc::GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if let Some(code) = head_grpc_status {
            outcome.grpc_status = Some(code);
        }
        // Passive health: gateway errors and UNAVAILABLE count against the
        // endpoint. A gRPC stream's verdict comes with its trailers.
        let failed = matches!(rparts.status.as_u16(), 502..=504) || head_grpc_status == Some(14);
        let deferred = grpc_req && head_grpc_status.is_none() && !failed;
        if !deferred {
            guard.cluster.report(
                &guard.ep,
                !failed,
                "the upstream answered UNAVAILABLE or a gateway error",
            );
        }
        let deadline = fwd.limit.map(|d| {
            let remaining = d.saturating_sub(outcome.start.elapsed());
            (Box::pin(tokio::time::sleep(remaining)), fwd.limit_err)
        });
        let outcome = slot.take().expect("present until here");
        let body = ResponseBody::new(
            rbody,
            grpc_req,
            deadline,
            guard,
            outcome,
            cluster.name.clone(),
        );
        Ok(Response::from_parts(rparts, body.boxed_unsync()))
    }

    /// torii's own `grpc.health.v1.Health` for requests no route takes.
    async fn serve_health(
        self: &Arc<Self>,
        watch: bool,
        body: Received,
        host: String,
        headers: http::HeaderMap,
    ) -> Result<Response<Body>, ProxyError> {
        let service = grpc_health::read_request(body)
            .await
            .map_err(|e| ProxyError::new(ErrorCode::BadRequest, e))?;
        if watch {
            let me = self.clone();
            let ready = self.ready.clone();
            Ok(grpc_health::watch(
                move || me.service_health(&service, &host, &headers),
                ready,
            ))
        } else {
            let verdict = self.service_health(&service, &host, &headers);
            Ok(grpc_health::check(&service, verdict))
        }
    }

    /// "" is torii itself; a service is as healthy as the cluster its
    /// route on this listener leads to.
    fn service_health(
        &self,
        service: &str,
        host: &str,
        headers: &http::HeaderMap,
    ) -> grpc_health::Verdict {
        use grpc_health::Verdict;
        let ready = *self.ready.borrow();
        if service.is_empty() {
            return if ready {
                Verdict::Serving
            } else {
                Verdict::NotServing
            };
        }
        let path = format!("/{service}/Check");
        let facts = RequestFacts {
            host,
            path: &path,
            headers,
            grpc: Some((service, "Check")),
        };
        let Some(route) = route::find(&self.config.routes, &facts) else {
            return Verdict::Unknown;
        };
        let cluster_ok = |name: &str| {
            self.clusters
                .get(name)
                .is_some_and(|c| c.endpoints().iter().any(|e| e.available()))
        };
        let ok = match &route.action {
            RouteAction::Direct { .. } => true,
            RouteAction::Cluster(c) => cluster_ok(&c.name),
            RouteAction::Weighted(list) => list.iter().any(|(c, _)| cluster_ok(&c.name)),
        };
        if ok && ready {
            Verdict::Serving
        } else {
            Verdict::NotServing
        }
    }

    fn choose_wire(&self, cluster: &ClusterRuntime, grpc_req: bool, client: Version) -> Wire {
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

        let new_path = match (&route.prefix_rewrite, &route.matcher.path) {
            (Some(rewrite), Some(crate::config::PathMatch::Prefix(prefix))) => Some(format!(
                "{rewrite}{}",
                &path[prefix.len().min(path.len())..]
            )),
            // Unchanged by normalisation: the client's own bytes go on.
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
        let pq = pq.map_err(|e| {
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
                // The client's own :authority goes on as it is (no parse, no copy).
                let same = parts.uri.authority().filter(|a| a.as_str() == authority);
                let auth = match same {
                    Some(a) => Ok(a.clone()),
                    None => Authority::try_from(authority),
                }
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

/// The request's facts for the access log, taken before any rewriting.
fn fill_log(
    r: &mut crate::telemetry::access_log::Record,
    parts: &http::request::Parts,
    conn: &ConnInfo,
) {
    r.client = conn.peer.to_string();
    r.detected = conn.detected;
    r.detect_reason = conn.detect_reason;
    r.original_dst = conn.original_dst.map(|d| d.to_string());
    if let Some(t) = &conn.tls {
        r.tls_version = t.version.clone();
        r.sni = t.sni.clone();
        r.alpn = t.alpn.clone();
        r.client_san = t.client_sans.clone();
    }
    r.method = parts.method.to_string();
    r.authority = request_authority(parts)
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    r.path = parts.uri.path().to_string();
    r.protocol = format!("{:?}", parts.version);
    r.request_id = parts
        .headers
        .get(&headers::X_REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default()
        .to_string();
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

/// `:authority` for HTTP/2, `Host` for HTTP/1.1: shared with the request
/// (no copy), and kept while the request is rewritten.
enum RequestAuthority {
    Uri(Authority),
    Host(HeaderValue),
}

impl RequestAuthority {
    fn as_str(&self) -> &str {
        match self {
            RequestAuthority::Uri(a) => a.as_str(),
            // Only visible ASCII is kept (see request_authority).
            RequestAuthority::Host(v) => v.to_str().unwrap_or_default(),
        }
    }
}

fn request_authority(parts: &http::request::Parts) -> Option<RequestAuthority> {
    if let Some(a) = parts.uri.authority() {
        return Some(RequestAuthority::Uri(a.clone()));
    }
    parts
        .headers
        .get(header::HOST)
        .filter(|v| v.to_str().is_ok())
        .map(|v| RequestAuthority::Host(v.clone()))
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

#[cfg(test)]
mod size_tests {
    use super::*;

    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(Arc<ListenerRuntime>, Request<Received>, Arc<ConnInfo>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// hyper and tokio move each request's future several times; a large
    /// one costs memcpy on every request (the benchmark's profile showed
    /// it). Rare paths (connecting, health) are boxed to keep it small.
    #[test]
    fn request_future_stays_small() {
        let size = future_size(ListenerRuntime::handle);
        eprintln!("request future: {size} bytes");
        assert!(size <= 1024, "the request future grew to {size} bytes");
    }
}

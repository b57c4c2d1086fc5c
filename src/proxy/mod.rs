//! The request pipeline: what happens to one request between the server
//! that read its head and the upstream that answers it. [`Pipeline::handle`]
//! is the whole path, read top to bottom; each phase is a function in the
//! file named after it, and returns either what the next phase needs or
//! how the request ends here ([`Step`]: answered by torii, or failed).
//!
//! | # | phase | file | what it does |
//! |---|---|---|---|
//! | 1 | identify | `identify.rs` | `x-request-id`; the access log's facts as the client sent them |
//! | 2 | health path | `health_path.rs` | the listener's `/healthz`: 200, or 503 while draining |
//! | 2a | trace | `trace.rs` | `tracing:`: the W3C trace context, sampled or not; each attempt's CLIENT span (in forward) |
//! | 3 | normalize | `normalize.rs` | path, authority, host, gRPC service and method |
//! | 3a | CORS | `cors.rs` | preflights answered; the CORS headers every answer to the origin gets |
//! | 3b | gRPC-Web | `grpc_web.rs` | a gRPC-Web call becomes gRPC (head, decoded body); its answer gRPC-Web again |
//! | 3c | JSON transcoding | `transcode.rs` | a `json_transcoding` rule's HTTP/JSON request becomes a gRPC call (its own future) |
//! | 4 | route | `routing.rs` | first matching route; original destination; own `grpc.health.v1`; `no_route` |
//! | 5 | own health | `grpc_health.rs` | torii's `grpc.health.v1.Health` Check and Watch |
//! | 5a | auth | `auth.rs` | a route's `auth:`: JWT, API key, mTLS identity; `allow` rules |
//! | 5b | rate limit | `rate_limit.rs` | the route's token bucket (route, client IP or identity); `rate_limited` |
//! | 6 | direct response | `direct.rs` | a route's `direct_response` |
//! | 7 | cluster | `cluster.rs` | the route's cluster, or a weighted pick |
//! | 8 | deadline | `deadline.rs` | `grpc-timeout`, or the route's `timeout` for other requests |
//! | 9 | upstream request | `upstream_request.rs` | the wire (HTTP/2 for gRPC), header rewrites, the resend copy, body counting |
//! | 10 | forward | `forward.rs` | to the cluster within the deadline; HTTP/1.1 fallback for `auto`; the route's retry policy (`retry.rs`) |
//! | 11 | response | `response.rs` | the upstream's head for the client, passive health, the streamed body |
//! | — | failure | `respond.rs` | every failure, before or after the head, in the client's protocol |
//!
//! Slots for the phases to come, in this order (each one function, one
//! file, one line in `phases` below): JSON transcoding after CORS and
//! gRPC-Web, after *normalize* (they change what routing sees:
//! content type, path); authentication, authorization and rate limiting
//! after *route* (policies are per route) and before *direct response*
//! (a direct response is guarded like any other); retries and tracing in
//! *forward* (a retry resends, a span covers the exchange).

// A phase that ends the request returns the ending (`Step`) by value, as
// the single `prepare` before it did: the same bytes move either way.
// The phase functions have one call site each and are marked `#[inline]`:
// the phases compile as one function, as they did before the split (the
// per-request instruction count, bench/profile, showed the difference).
#![allow(clippy::result_large_err)]

mod auth;
mod cluster;
mod conn_info;
mod cors;
mod deadline;
mod direct;
mod forward;
pub mod grpc_health;
mod grpc_web;
pub mod headers;
mod health_path;
mod identify;
mod normalize;
pub mod outcome;
pub mod path;
mod rate_limit;
pub mod respond;
mod response;
pub mod response_body;
mod retry;
mod routing;
mod trace;
mod transcode;
mod transcode_stream;
mod upstream_request;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, Version};

pub use conn_info::{ConnInfo, TlsFacts};

use crate::body::{Body, Received};
use crate::config::Listener;
use crate::error::{ErrorCode, ProxyError};
use crate::grpc;
use crate::telemetry::access_log::AccessLogger;
use crate::telemetry::Metrics;
use crate::upstream::original::OriginalDestinations;
use crate::upstream::{ClusterRuntime, Wire};
use outcome::{Outcome, Protocol};
use routing::Routed;
use upstream_request::Chosen;

/// How a request ends in the synchronous phases, when it does not go
/// upstream.
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
    /// A phase refused it or could not go on.
    Fail(ProxyError),
    /// A JSON transcoding rule matched: the body is read and the call
    /// made in a future of its own ([`Pipeline::transcoded`]).
    Transcode(Box<transcode::Transcoding>),
}

impl From<ProxyError> for Step {
    fn from(e: ProxyError) -> Step {
        Step::Fail(e)
    }
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

/// A request being handled (see [`Pipeline::handle`]): answered
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
fn answered(mut resp: Response<Body>, mut outcome: Outcome) -> Response<Body> {
    outcome.bytes_out = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
    cors::apply(resp.headers_mut(), &outcome);
    resp
}

/// One listener's request pipeline: its routes, the clusters they lead
/// to, and where requests are counted and logged; immutable once built (a
/// reload builds a new one). A listener has one name per stage, each for
/// what it is there: `config::Listener` (what the file says),
/// `app::Bound` (a bound socket, its drain and task), `listener::Listening`
/// (what a new connection takes: TLS acceptor, servers, this pipeline) and
/// `proxy::Pipeline` (what every request runs through).
pub struct Pipeline {
    pub name: Arc<str>,
    pub config: Listener,
    pub clusters: Arc<HashMap<String, Arc<ClusterRuntime>>>,
    pub metrics: Arc<Metrics>,
    /// False while torii is starting or draining.
    pub ready: tokio::sync::watch::Receiver<bool>,
    pub logger: AccessLogger,
    /// On an `original_destination` listener: one cluster per destination.
    original: Option<OriginalDestinations>,
    /// The listener or one of its routes has a CORS policy.
    cors: bool,
    /// Finds the first matching route without testing every route.
    routes: crate::route::Index,
    /// Each route's rate limit, by index (empty: no route has one).
    rate_limits: Box<[Option<Arc<rate_limit::RouteLimit>>]>,
    /// `tracing:` (None: no tracing work at all).
    pub tracer: Option<crate::telemetry::trace::Tracer>,
}

impl Pipeline {
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
        let cors = config.cors.is_some() || config.routes.iter().any(|r| r.cors.is_some());
        Pipeline {
            cors,
            routes: crate::route::Index::new(&config.routes),
            rate_limits: rate_limit::build(&config, &metrics),
            name: Arc::from(config.name.as_str()),
            config,
            clusters,
            metrics,
            ready,
            logger,
            original,
            tracer: None,
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
    /// Every phase up to sending upstream runs here, synchronously; only
    /// the exchange with the upstream (and torii's own gRPC health) is a
    /// future, boxed. So the future a connection keeps per stream is
    /// small, and the boxed one holds only what lives across the
    /// upstream's answer: an `async fn` would keep its arguments twice (as
    /// captured and as moved into its body), and every local that a borrow
    /// keeps alive until an `.await`.
    pub fn handle(self: Arc<Self>, req: Request<Received>, conn: Arc<ConnInfo>) -> Handling {
        let start = Instant::now();
        let mut outcome =
            Outcome::new(self.metrics.clone(), self.name.clone(), start, &self.logger);
        // One look at the content type: gRPC, gRPC-Web (a gRPC call from
        // here on, answered in gRPC-Web), or anything else.
        outcome.protocol = match grpc::carries(req.headers()) {
            grpc::Carries::Grpc => Protocol::Grpc,
            grpc::Carries::GrpcWeb { text } if self.config.grpc_web => {
                if text {
                    Protocol::GrpcWebText
                } else {
                    Protocol::GrpcWeb
                }
            }
            _ if req.version() == Version::HTTP_2 => Protocol::Http2,
            _ => Protocol::Http1,
        };
        outcome.version = req.version();
        let grpc_req = outcome.protocol.is_grpc();
        outcome.grpc_request = grpc_req;
        // Matched as it comes back: a request that goes upstream is moved
        // once more only, into its boxed future (the profile counts each
        // move of a `Forward`).
        match self.phases(req, &conn, grpc_req, &mut outcome) {
            Err(Step::Answer(resp)) => Handling::Ready(Some(answered(resp, outcome))),
            Err(Step::Fail(err)) => {
                Handling::Ready(Some(self.failed(err, grpc_req, Some(outcome))))
            }
            Err(Step::Health {
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
            Err(Step::Transcode(t)) => {
                Handling::Waiting(Box::pin(self.transcoded(t, conn, outcome)))
            }
            Ok(fwd) => {
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

    /// The synchronous phases, in the order a request lives them. `Err`
    /// ends the request here: answered by torii, or failed.
    fn phases(
        &self,
        req: Request<Received>,
        conn: &ConnInfo,
        grpc_req: bool,
        outcome: &mut Outcome,
    ) -> Result<Forward, Step> {
        let (mut parts, body) = req.into_parts();
        identify::identify(&mut parts, conn, outcome);
        if let Some(resp) = self.health_path(&parts, conn, outcome) {
            return Err(Step::Answer(resp));
        }
        if let Some(tracer) = &self.tracer {
            trace::trace(tracer, &mut parts, outcome);
        }
        self.normalized_phases(parts, body, conn, grpc_req, outcome, true)
    }

    /// The phases from normalize on; a transcoded call comes back here as
    /// gRPC (`transcode: false`).
    #[inline]
    fn normalized_phases(
        &self,
        mut parts: http::request::Parts,
        body: Received,
        conn: &ConnInfo,
        grpc_req: bool,
        outcome: &mut Outcome,
        transcode: bool,
    ) -> Result<Forward, Step> {
        // Cheap clones (shared bytes): the normalized request borrows them
        // while the request's parts are rewritten.
        let uri = parts.uri.clone();
        let authority = normalize::request_authority(&parts);
        let allow_encoded = self.config.allow_encoded_slashes;
        let req = normalize::normalize(&uri, authority.as_ref(), allow_encoded, grpc_req, outcome)?;
        // A transcoded call comes back here (`transcode: false`) after
        // CORS looked at the client's request already.
        if self.cors && transcode {
            self.cors(&parts, &req, outcome)?;
        }
        let web_text = outcome.protocol.web_text();
        if let Some(text) = web_text {
            grpc_web::grpc_web(&mut parts, text, outcome)?;
        }
        if let Some(t) = &self.config.json_transcoding {
            if transcode && !grpc_req {
                if let Some(m) = transcode::transcode(t, &parts) {
                    let t = transcode::Transcoding::new(parts, body, t.clone(), m);
                    return Err(Step::Transcode(t));
                }
            }
        }
        let (route, index, cluster) = match self.route(&req, &parts.headers, conn, outcome)? {
            Routed::OwnHealth { watch } => {
                return Err(Step::Health {
                    watch,
                    body,
                    host: req.host.into_owned(),
                    headers: parts.headers,
                })
            }
            Routed::Original(cluster) => (routing::passthrough_route(), None, cluster),
            Routed::Route(index) => {
                let route = &self.config.routes[index];
                auth::auth(route, &mut parts, conn, outcome)?;
                // After auth: a caller it identified has their own bucket.
                let identity = outcome.identity.as_deref().or_else(|| conn.identity());
                self.rate_limit(index, identity, conn.peer.ip(), outcome.start)?;
                direct::direct_response(route, outcome)?;
                (route, Some(index), self.cluster(route)?)
            }
        };
        outcome.cluster = Some(cluster.name.clone());
        let deadline = deadline::deadline(&parts.headers, grpc_req, route.timeout);
        let chosen = Chosen {
            route,
            index,
            cluster,
            deadline,
        };
        let body = match web_text {
            Some(text) => grpc_web::request_body(body.boxed(), text, outcome),
            None => body.boxed(),
        };
        self.upstream_request(parts, body, conn, &req, chosen, grpc_req, outcome)
    }

    /// The error response for `err`, recorded in `outcome` (None once the
    /// response body owns it).
    fn failed(
        &self,
        mut err: ProxyError,
        grpc_req: bool,
        outcome: Option<Outcome>,
    ) -> Response<Body> {
        let web = outcome
            .as_ref()
            .and_then(|o| o.browser.as_deref())
            .and_then(|b| b.web.as_ref());
        let resp = match web {
            Some(call) => {
                // A malformed body reaches the upstream side as a
                // cancelled stream: the reason is the body's.
                if let Some(invalid) = call.invalid.get() {
                    err = invalid.clone();
                }
                respond::web_error_response(&err, call.text_out)
            }
            None => respond::error_response(&err, grpc_req),
        };
        self.note_failure(resp, err, grpc_req, outcome)
    }

    /// [`Pipeline::failed`] for a JSON-transcoded request.
    fn failed_json(&self, err: ProxyError, outcome: Option<Outcome>) -> Response<Body> {
        let resp = respond::error_json(&err);
        self.note_failure(resp, err, true, outcome)
    }

    fn note_failure(
        &self,
        mut resp: Response<Body>,
        err: ProxyError,
        grpc_req: bool,
        outcome: Option<Outcome>,
    ) -> Response<Body> {
        let Some(mut outcome) = outcome else {
            return resp;
        };
        cors::apply(resp.headers_mut(), &outcome);
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
}

#[cfg(test)]
mod size_tests {
    use super::*;

    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(Arc<Pipeline>, Request<Received>, Arc<ConnInfo>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// hyper and tokio move each request's future several times; a large
    /// one costs memcpy on every request (the benchmark's profile showed
    /// it). Rare paths (connecting, health) are boxed to keep it small.
    #[test]
    fn request_future_stays_small() {
        let size = future_size(Pipeline::handle);
        eprintln!("request future: {size} bytes");
        assert!(size <= 1024, "the request future grew to {size} bytes");
    }
}

//! Phase 12, forward: the request goes to the cluster (which picks an
//! endpoint, connects or reuses a connection, and fails over where the
//! request was never processed), within the deadline. An `auto` cluster
//! whose upstream turns out to speak only HTTP/1.1 gets the request again
//! over HTTP/1.1, and HTTP/1.1 from then on. A route's retry policy sends
//! it again where the policy says (`retry.rs`).

use http::{Request, Response};

use super::outcome::Outcome;
use super::response::Answering;
use super::retry::Retrying;
use super::upstream_request::to_http1;
use super::{Forward, Pipeline};
use crate::body::{self, Body};
use crate::error::{ErrorCode, ProxyError};
use crate::telemetry::trace::AttemptEnd;
use crate::upstream::Wire;

impl Pipeline {
    /// Sends a prepared request upstream and makes the client's response
    /// of the upstream's. `slot` holds the request's outcome until the
    /// response body takes it.
    pub(super) async fn forward(
        &self,
        fwd: Forward,
        grpc_req: bool,
        slot: &mut Option<Outcome>,
    ) -> Result<Response<Body>, ProxyError> {
        let Forward {
            mut req,
            cluster,
            route,
            wire,
            client_version,
            limit,
            limit_err,
            retry_parts,
        } = fwd;
        // The endpoint tried last: a failed request's `upstream` in the log.
        let mut endpoint = None;
        cluster.budget.note_request();
        let policy = route.and_then(|i| self.config.routes[i].retry.as_deref());
        // Kept here while attempts go out (each its CLIENT span), then
        // given back to the outcome.
        let mut trace = slot.as_mut().and_then(|o| o.trace.take());
        let result = match policy {
            None => {
                if let Some(t) = trace.as_deref_mut() {
                    t.attempt(req.headers_mut());
                }
                let send = cluster.send_noting(req, wire, &mut endpoint);
                match limit {
                    Some(d) => tokio::time::timeout(d, send).await.ok(),
                    None => Some(send.await),
                }
            }
            Some(policy) => {
                let start = slot.as_ref().map(|o| o.start);
                let r = Retrying {
                    policy,
                    cluster: &cluster,
                    wire,
                    grpc_req,
                    deadline: limit.zip(start).map(|(d, s)| s + d),
                    trace: trace.as_deref_mut(),
                };
                let mut notes = super::retry::Notes::default();
                let sent = self
                    .retrying(r, req, limit, &mut endpoint, &mut notes)
                    .await;
                if let Some(o) = slot.as_mut() {
                    o.attempts = notes;
                }
                sent
            }
        };
        if let Some(o) = slot.as_mut() {
            o.trace = trace;
        }
        if let (Some(Err(_)) | None, Some(o)) = (&result, slot.as_mut()) {
            o.upstream = endpoint;
        }
        let Some(result) = result else {
            return Err(limit_err);
        };
        let (resp, guard) = match result {
            Ok(ok) => ok,
            Err(e) if e.code == ErrorCode::UpstreamProtocolMismatch => {
                let Some(retry) = retry_parts else {
                    return Err(e);
                };
                // An HTTP/1.1-only upstream behind `protocol: auto`: plain HTTP
                // requests fall back to HTTP/1.1 from now on.
                cluster
                    .h2_refused
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    cluster = cluster.config.name.as_str(),
                    "upstream does not speak h2c; using HTTP/1.1 for its non-gRPC requests"
                );
                let mut p = *retry;
                to_http1(&mut p);
                if let Some(t) = slot.as_mut().and_then(|o| o.trace.as_deref_mut()) {
                    t.attempt_ended(AttemptEnd {
                        endpoint,
                        error: Some(e.code),
                        ..Default::default()
                    });
                    t.attempt(&mut p.headers);
                }
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
        let answering = Answering {
            cluster: &cluster,
            route,
            client_version,
            limit,
            limit_err,
        };
        Ok(self.response(resp, guard, answering, grpc_req, slot))
    }
}

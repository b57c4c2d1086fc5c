//! torii's own `grpc.health.v1.Health` (Check and Watch), served on every
//! HTTP listener whose routes do not send that service elsewhere. The empty
//! service name is torii's own readiness; a named service is healthy when
//! the cluster its routes lead to has an available endpoint.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::Frame;
use prost::Message;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::Pipeline;
use crate::body::{Body, Received};
use crate::config::RouteAction;
use crate::error::{ErrorCode, ProxyError};
use crate::grpc::status::Code;
use crate::proxy::respond::grpc_trailers_only;
use crate::route::RequestFacts;

pub const CHECK: &str = "/grpc.health.v1.Health/Check";
pub const WATCH: &str = "/grpc.health.v1.Health/Watch";
/// How often Watch re-evaluates cluster health (readiness changes are
/// pushed at once).
const WATCH_POLL: Duration = Duration::from_secs(1);

/// What a service name maps to right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Serving,
    NotServing,
    Unknown,
}

/// Reads the `HealthCheckRequest` (small; bounded).
pub async fn read_request(body: crate::body::Received) -> Result<String, String> {
    let bytes = Limited::new(body, 64 * 1024)
        .collect()
        .await
        .map_err(|e| format!("could not read the health check request: {e}"))?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(String::new());
    }
    let mut b = bytes;
    if b.len() < 5 {
        return Err("the health check request is not a gRPC message".into());
    }
    let compressed = b.get_u8();
    let len = b.get_u32() as usize;
    if compressed != 0 || b.len() < len {
        return Err("the health check request is compressed or truncated".into());
    }
    HealthCheckRequest::decode(b.slice(..len))
        .map(|r| r.service)
        .map_err(|e| format!("the health check request is not a HealthCheckRequest: {e}"))
}

fn frame(status: ServingStatus) -> Bytes {
    let msg = HealthCheckResponse {
        status: status as i32,
    }
    .encode_to_vec();
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(&msg);
    b.freeze()
}

fn serving(v: Verdict) -> ServingStatus {
    match v {
        Verdict::Serving => ServingStatus::Serving,
        Verdict::NotServing => ServingStatus::NotServing,
        Verdict::Unknown => ServingStatus::ServiceUnknown,
    }
}

fn ok_trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static("0"));
    t
}

fn grpc_head() -> http::response::Builder {
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/grpc")
}

/// Check: one answer; an unknown service is NOT_FOUND, as the spec says.
pub fn check(service: &str, verdict: Verdict) -> Response<Body> {
    if verdict == Verdict::Unknown {
        return grpc_trailers_only(
            Code::NotFound,
            &format!("no route on this listener leads to service {service:?}"),
            None,
        );
    }
    let frames = futures_util::stream::iter([
        Ok::<_, Infallible>(Frame::data(frame(serving(verdict)))),
        Ok(Frame::trailers(ok_trailers())),
    ]);
    grpc_head()
        .body(
            StreamBody::new(frames)
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .expect("static response")
}

/// Watch: the current status, then every change, until the client goes
/// away. `current` is asked again on each readiness change and poll tick.
pub fn watch<F>(mut current: F, mut ready: tokio::sync::watch::Receiver<bool>) -> Response<Body>
where
    F: FnMut() -> Verdict + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let now = current();
            if last != Some(now) {
                last = Some(now);
                if tx.send(Ok(Frame::data(frame(serving(now))))).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = tx.closed() => return,
                changed = ready.changed() => {
                    if changed.is_err() {
                        // torii is stopping: the last word is NOT_SERVING.
                        if last != Some(Verdict::NotServing) {
                            let _ = tx.send(Ok(Frame::data(frame(ServingStatus::NotServing)))).await;
                        }
                        let _ = tx.send(Ok(Frame::trailers(ok_trailers()))).await;
                        return;
                    }
                }
                _ = tokio::time::sleep(WATCH_POLL) => {}
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    grpc_head()
        .body(
            StreamBody::new(stream)
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .expect("static response")
}

impl Pipeline {
    /// torii's own `grpc.health.v1.Health` for requests no route takes.
    pub(super) async fn serve_health(
        self: &Arc<Self>,
        watch: bool,
        body: Received,
        host: String,
        headers: http::HeaderMap,
    ) -> Result<Response<Body>, ProxyError> {
        let service = read_request(body)
            .await
            .map_err(|e| ProxyError::new(ErrorCode::BadRequest, e))?;
        if watch {
            let me = self.clone();
            let ready = self.ready.clone();
            Ok(self::watch(
                move || me.service_health(&service, &host, &headers),
                ready,
            ))
        } else {
            let verdict = self.service_health(&service, &host, &headers);
            Ok(check(&service, verdict))
        }
    }

    /// "" is torii itself; a service is as healthy as the cluster its
    /// route on this listener leads to.
    fn service_health(&self, service: &str, host: &str, headers: &http::HeaderMap) -> Verdict {
        use Verdict;
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
        let Some(route) = self
            .routes
            .find(&self.config.routes, &facts)
            .map(|i| &self.config.routes[i])
        else {
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
}

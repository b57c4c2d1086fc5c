//! Phase 13, response: the upstream's answer becomes the client's —
//! hop-by-hop headers dropped, the route's response header edits, the
//! client's HTTP version; passive health hears a gateway error or
//! UNAVAILABLE (a gRPC stream's verdict waits for its trailers); and the
//! body streams back through [`ResponseBody`], which keeps the deadline and
//! turns a failure after the head into trailers the client can read.

use std::sync::Arc;
use std::time::Duration;

use http::{Response, Version};
use http_body_util::BodyExt;

use super::headers::{self, apply_edits};
use super::outcome::Outcome;
use super::response_body::ResponseBody;
use super::Pipeline;
use crate::body::grpc_web::WebResponse;
use crate::body::{Body, Received};
use crate::error::ProxyError;
use crate::grpc;
use crate::upstream::{ClusterRuntime, ExchangeGuard};

/// What answering the client needs from the request's forwarding.
pub(super) struct Answering<'c> {
    pub cluster: &'c Arc<ClusterRuntime>,
    /// The route's place in the listener's routes; None: the passthrough.
    pub route: Option<usize>,
    pub client_version: Version,
    pub limit: Option<Duration>,
    pub limit_err: ProxyError,
}

impl Pipeline {
    pub(super) fn response(
        &self,
        resp: Response<Received>,
        guard: ExchangeGuard,
        a: Answering<'_>,
        grpc_req: bool,
        slot: &mut Option<Outcome>,
    ) -> Response<Body> {
        let outcome = slot.as_mut().expect("the outcome is taken only on success");
        outcome.upstream = Some(guard.ep.addr);
        let (mut rparts, rbody) = resp.into_parts();
        if rparts.version != Version::HTTP_2 {
            // As for requests: an HTTP/2 head has none (see upstream_request).
            headers::strip_hop_by_hop(&mut rparts.headers);
        }
        if let Some(i) = a.route {
            apply_edits(&mut rparts.headers, &self.config.routes[i].response_headers);
        }
        rparts.version = a.client_version;
        super::cors::apply(&mut rparts.headers, outcome);
        let web = outcome
            .browser
            .as_deref()
            .and_then(|b| b.web.as_ref())
            .map(|w| w.text_out);
        if web.is_some() {
            if let Err(err) = super::grpc_web::check_answer(&rparts) {
                guard.cluster.report(&guard.ep, false, err.code.as_str());
                drop((rbody, guard));
                return self.failed(err, grpc_req, slot.take());
            }
        }
        outcome.http_status = rparts.status.as_u16();
        let head_grpc_status: Option<i32> = rparts
            .headers
            .get(&grpc::GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if let Some(code) = head_grpc_status {
            outcome.grpc_status = Some(code);
            // A Trailers-Only answer to a JSON-transcoded server stream is
            // answered like a unary one: the HTTP status its code maps to.
            if outcome.protocol == super::outcome::Protocol::Json {
                outcome.json_unary = true;
            }
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
        let deadline = a.limit.map(|d| {
            let remaining = d.saturating_sub(outcome.start.elapsed());
            (Box::pin(tokio::time::sleep(remaining)), a.limit_err)
        });
        let mut outcome = slot.take().expect("present until here");
        let body = match web {
            Some(text) => {
                let head_status = super::grpc_web::web_head(&mut rparts, text);
                outcome.http_status = 200;
                let body = ResponseBody::new(
                    rbody,
                    grpc_req,
                    deadline,
                    guard,
                    outcome,
                    a.cluster.name.clone(),
                );
                WebResponse::new(body.boxed_unsync(), text, head_status).boxed_unsync()
            }
            None => ResponseBody::new(
                rbody,
                grpc_req,
                deadline,
                guard,
                outcome,
                a.cluster.name.clone(),
            )
            .boxed_unsync(),
        };
        Response::from_parts(rparts, body)
    }
}

//! Phase 2a, trace (only with `tracing:`): the request's W3C trace
//! context — a sampled parent's trace continued, an unsampled one passed
//! on untouched, or a new trace when `sample_ratio` picks one. Forward
//! then gives each attempt upstream its CLIENT span and `traceparent`
//! ([`attempt_end`] says how a retried one ended); the outcome queues the
//! spans when the request is recorded.

use http::request::Parts;
use http::Response;

use super::outcome::Outcome;
use crate::body::Received;
use crate::error::ProxyError;
use crate::grpc;
use crate::telemetry::trace::{AttemptEnd, Tracer};

#[inline]
pub(super) fn trace(tracer: &Tracer, parts: &mut Parts, outcome: &mut Outcome) {
    outcome.trace = tracer.begin(&mut parts.headers, &parts.method);
}

/// What a retried attempt's answer tells its CLIENT span.
pub(super) fn attempt_end<G>(
    endpoint: Option<std::net::SocketAddr>,
    answer: &Result<(Response<Received>, G), ProxyError>,
    why: &'static str,
) -> AttemptEnd {
    let mut end = AttemptEnd {
        endpoint,
        retried: Some(why),
        ..Default::default()
    };
    match answer {
        Ok((resp, _)) => {
            end.http_status = Some(resp.status().as_u16());
            // Trailers-Only, or the trailers a held response read ahead.
            let held = match resp.body() {
                Received::Held(h) => h
                    .first
                    .as_ref()
                    .and_then(|f| f.as_ref().ok())
                    .and_then(|f| f.trailers_ref()),
                _ => None,
            };
            end.grpc_status = [Some(resp.headers()), held]
                .into_iter()
                .flatten()
                .find_map(grpc_status);
        }
        Err(e) => end.error = Some(e.code),
    }
    end
}

fn grpc_status(h: &http::HeaderMap) -> Option<i32> {
    h.get(&grpc::GRPC_STATUS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

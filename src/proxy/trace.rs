//! Phase 2a, trace (only with `tracing:`): the request's W3C trace
//! context — a sampled parent's trace continued, an unsampled one passed
//! on untouched, or a new trace when `sample_ratio` picks one. Forward
//! then gives each attempt upstream its CLIENT span and `traceparent`
//! (`forward.rs`, `retry.rs`); the outcome queues the spans when the
//! request is recorded.

use http::request::Parts;

use super::outcome::Outcome;
use crate::telemetry::trace::Tracer;

#[inline]
pub(super) fn trace(tracer: &Tracer, parts: &mut Parts, outcome: &mut Outcome) {
    outcome.trace = tracer.begin(&mut parts.headers, &parts.method);
}

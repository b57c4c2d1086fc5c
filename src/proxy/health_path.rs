//! Phase 2, the listener's health path: `GET /healthz` (or the configured
//! path) is answered by torii itself — 200 while it serves, 503 while it
//! drains, so a load balancer stops sending here first.

use http::request::Parts;
use http::{Method, Response};

use super::conn_info::ConnInfo;
use super::outcome::Outcome;
use super::respond;
use super::Pipeline;
use crate::body::Body;

impl Pipeline {
    #[inline]
    pub(super) fn health_path(
        &self,
        parts: &Parts,
        conn: &ConnInfo,
        outcome: &mut Outcome,
    ) -> Option<Response<Body>> {
        // Redirected traffic is headed elsewhere: its /healthz is not ours.
        if parts.uri.path() != self.config.health_path
            || conn.original_dst.is_some()
            || !matches!(parts.method, Method::GET | Method::HEAD)
        {
            return None;
        }
        let (status, text) = if *self.ready.borrow() {
            (200, "ok")
        } else {
            (503, "draining")
        };
        outcome.http_status = status;
        Some(respond::text_response(status, text))
    }
}

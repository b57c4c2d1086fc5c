//! Phase 1, identify: every request gets an `x-request-id` (the client's,
//! or a new one), and the access log takes the request's facts as the
//! client sent them, before any phase rewrites anything.

use http::request::Parts;

use super::conn_info::ConnInfo;
use super::headers;
use super::normalize::request_authority;
use super::outcome::Outcome;
use crate::telemetry::access_log::Record;

#[inline]
pub(super) fn identify(parts: &mut Parts, conn: &ConnInfo, outcome: &mut Outcome) {
    headers::ensure_request_id(&mut parts.headers);
    if let Some(r) = outcome.log.as_deref_mut() {
        fill_log(r, parts, conn);
    }
}

/// The request's facts for the access log, taken before any rewriting.
fn fill_log(r: &mut Record, parts: &Parts, conn: &ConnInfo) {
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

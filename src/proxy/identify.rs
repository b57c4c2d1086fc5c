//! Phase 1, identify: every request gets an `x-request-id` (the client's,
//! or a new one), and the access log takes the request's facts as the
//! client sent them, before any phase rewrites anything.

use http::request::Parts;

use super::conn_info::ConnInfo;
use super::headers;
use super::outcome::Outcome;
use crate::telemetry::access_log::Line;
use crate::telemetry::json_line::key;

#[inline]
pub(super) fn identify(parts: &mut Parts, conn: &ConnInfo, outcome: &mut Outcome) {
    headers::ensure_request_id(&mut parts.headers);
    if let Some(line) = outcome.log.as_mut() {
        fill_log(line, &outcome.listener, parts, conn);
    }
}

/// The request's facts for the access log, taken before any rewriting:
/// the line's head (after `time`) and its tail (`request_id`, last).
fn fill_log(line: &mut Line, listener: &str, parts: &Parts, conn: &ConnInfo) {
    let mut j = line.head();
    j.str(key!("listener"), listener);
    j.addr(key!("client"), conn.peer);
    j.str_nonempty(key!("detected"), conn.detected);
    j.str_nonempty(key!("detect_reason"), conn.detect_reason);
    if let Some(d) = conn.original_dst {
        j.addr(key!("original_dst"), d);
    }
    if let Some(t) = &conn.tls {
        if let Some(v) = &t.version {
            j.str(key!("tls_version"), v);
        }
        if let Some(sni) = &t.sni {
            j.str(key!("sni"), sni);
        }
        if let Some(alpn) = &t.alpn {
            j.str(key!("alpn"), alpn);
        }
        j.strs_nonempty(key!("client_san"), &t.client_sans);
    }
    j.str_nonempty(key!("method"), parts.method.as_str());
    let authority = match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default(),
    };
    j.str_nonempty(key!("authority"), authority);
    j.str_nonempty(key!("path"), parts.uri.path());
    // `protocol` goes first after the head: what the client spoke is known
    // for certain only once the phases that translate it have run.
    line.start_tail();
    if let Some(id) = parts.headers.get(&headers::X_REQUEST_ID) {
        if let Ok(id) = id.to_str() {
            line.head().str_nonempty(key!("request_id"), id);
        }
    }
}

//! Phase 5a, auth: a route's `auth:` — who the caller is (a JWT, an API
//! key, the mTLS client certificate) and whether its `allow:` rules let
//! them in (`src/auth/` decides; this phase gives it the request and acts
//! on the answer). Refusals are `unauthenticated` (401), `auth_unavailable`
//! (503: no key set to verify with) or `permission_denied` (403), through
//! `respond.rs` like every failure; `mode: audit` logs and counts them and
//! lets the request through. Then the claims a provider forwards replace
//! whatever the client sent under those headers, and an API-key set's
//! consumer goes upstream in its `consumer_header`.
//!
//! Never asked: CORS preflights, the listener's health path and torii's
//! own `grpc.health.v1` (all answered before routing); a route that
//! matches `grpc.health.v1` explicitly is guarded like any other.

use std::time::SystemTime;

use http::HeaderValue;

use super::conn_info::ConnInfo;
use super::outcome::{AuthNote, Outcome};
use crate::auth::{Decision, Policy, Presented, Verdict};
use crate::config::Route;
use crate::error::{ErrorCode, ProxyError};
use crate::telemetry::metrics::AuthLabels;

#[inline]
pub(super) fn auth(
    route: &Route,
    parts: &mut http::request::Parts,
    conn: &ConnInfo,
    outcome: &mut Outcome,
) -> Result<(), ProxyError> {
    let Some(policy) = &route.auth else {
        return Ok(());
    };
    let keyed = route
        .rate_limit
        .as_ref()
        .is_some_and(|l| l.per == crate::config::RateLimitPer::Identity);
    check(policy, &route.name, keyed, parts, conn, outcome)
}

/// Out of line: routes without `auth:` pay one branch.
#[inline(never)]
fn check(
    policy: &Policy,
    route: &str,
    keyed: bool,
    parts: &mut http::request::Parts,
    conn: &ConnInfo,
    outcome: &mut Outcome,
) -> Result<(), ProxyError> {
    let no_sans: &[String] = &[];
    let sans = conn.tls.as_ref().map_or(no_sans, |t| &t.client_sans[..]);
    let decision = {
        let presented = Presented {
            headers: &parts.headers,
            query: parts.uri.query(),
            ip: conn.peer.ip(),
            sans,
            grpc: outcome.grpc.as_ref().map(|g| (g.service(), g.method())),
        };
        policy.decide(&presented, route, SystemTime::now())
    };
    let mode = if policy.audit { "audit" } else { "enforce" };
    outcome
        .metrics
        .auth
        .get_or_create(&AuthLabels {
            listener: outcome.listener.clone(),
            method: decision.method,
            result: decision.verdict.as_str(),
            reason: decision.reason,
            mode,
        })
        .inc();
    let refused = decision.verdict != Verdict::Allowed;
    if outcome.log.is_some() {
        outcome.auth = Some(Box::new(AuthNote {
            identity: decision.describe(sans),
            decision: match (refused, policy.audit) {
                (true, true) => match decision.verdict {
                    Verdict::Denied => "audit_denied",
                    _ => "audit_unauthenticated",
                },
                _ => decision.verdict.as_str(),
            },
            reason: decision.reason,
        }));
    }
    if refused {
        let message = decision.message.clone().unwrap_or_default();
        if policy.audit {
            tracing::info!(
                route,
                reason = decision.reason,
                "auth audit: would refuse: {message}"
            );
        } else {
            let code = match decision.verdict {
                Verdict::Unavailable => ErrorCode::AuthUnavailable,
                Verdict::Denied => ErrorCode::PermissionDenied,
                _ => ErrorCode::Unauthenticated,
            };
            return Err(ProxyError::new(code, message));
        }
    }
    // The caller's bucket under `rate_limit: {per: identity}`: the JWT's
    // subject or the API key's consumer (else the rate limit falls back
    // to the mTLS identity, then the client IP).
    if keyed {
        let id = &decision.identity;
        outcome.identity = match (&id.token, &id.consumer) {
            (Some((p, t)), _) if t.sub.is_some() => {
                Some(format!("jwt:{}/{}", p.name, t.sub.as_deref().unwrap_or_default()).into())
            }
            (_, Some((set, c))) => Some(format!("api_key:{}/{c}", set.name).into()),
            _ => None,
        };
    }
    forward_identity(policy, &decision, &mut parts.headers);
    Ok(())
}

/// Claims and consumer names upstream: the client's own copies of those
/// headers go first, whatever was decided.
fn forward_identity(policy: &Policy, d: &Decision, headers: &mut http::HeaderMap) {
    for p in &policy.jwt {
        for (_, h) in &p.claims_to_headers {
            headers.remove(h);
        }
    }
    for s in &policy.api_keys {
        if let Some(h) = &s.consumer_header {
            headers.remove(h);
        }
    }
    if let Some((p, t)) = &d.identity.token {
        for (claim, h) in &p.claims_to_headers {
            if let Some(v) = crate::auth::jwt::claim_text(&t.claims, claim)
                .and_then(|v| HeaderValue::from_str(&v).ok())
            {
                headers.insert(h.clone(), v);
            }
        }
    }
    if let Some((s, c)) = &d.identity.consumer {
        if let Some(h) = &s.consumer_header {
            if let Ok(v) = HeaderValue::from_str(c) {
                headers.insert(h.clone(), v);
            }
        }
    }
}

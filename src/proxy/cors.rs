//! CORS (after normalize): browsers on other origins, under the
//! listener's `cors:` policy or a route's own. A preflight (`OPTIONS` with
//! `Origin` and `Access-Control-Request-Method`) is answered here and never
//! forwarded; every other answer to an allowed origin, torii's errors
//! included, carries the CORS headers that let the page read it — the gRPC
//! status headers always exposed, since a browser hides every header CORS
//! does not expose. A disallowed origin gets no CORS headers, and the log
//! says once which origin it was and what to add. Without any policy
//! torii adds nothing and forwards preflights as any request.

use std::sync::OnceLock;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};

use super::normalize::Normalized;
use super::outcome::Outcome;
use super::respond::text_response;
use super::{Pipeline, Step};
use crate::body;
use crate::config::Cors;
use crate::route::RequestFacts;
use crate::telemetry::log_once::LogOnce;

const VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);

/// Origins (and headers) already reported as refused: once each, bounded.
fn refused_log() -> &'static LogOnce {
    static LOG: OnceLock<LogOnce> = OnceLock::new();
    LOG.get_or_init(LogOnce::default)
}

impl Pipeline {
    /// The phase. Runs only on a listener with a CORS policy somewhere.
    #[inline(never)]
    pub(super) fn cors(
        &self,
        parts: &Parts,
        req: &Normalized<'_>,
        outcome: &mut Outcome,
    ) -> Result<(), Step> {
        let Some(origin) = parts.headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let preflight = parts.method == Method::OPTIONS
            && parts
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let Some(policy) = self.cors_policy(req, &parts.headers) else {
            return Ok(());
        };
        let origin_text = origin.to_str().unwrap_or("");
        let allowed = !origin_text.is_empty() && policy.allows(origin_text);
        if !allowed {
            self.log_refused(origin_text);
        }
        if preflight {
            let resp = if allowed {
                preflight_answer(policy, origin, &parts.headers, self, origin_text)
            } else {
                let mut r = text_response(
                    403,
                    &format!(
                        "origin {origin_text} may not call listener {}: its cors.allow_origins does not list it",
                        self.name
                    ),
                );
                r.headers_mut().insert(header::VARY, VARY_PREFLIGHT);
                r
            };
            outcome.http_status = resp.status().as_u16();
            return Err(Step::Answer(resp));
        }
        let mut cors = vec![(header::VARY, HeaderValue::from_static("Origin"))];
        if allowed {
            cors.push((
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                allow_origin(policy, origin),
            ));
            if policy.allow_credentials {
                cors.push((
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                ));
            }
            cors.push((
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                policy.expose_headers.clone(),
            ));
        }
        outcome.browser.get_or_insert_with(Box::default).cors = cors;
        Ok(())
    }

    /// The route's own policy when the request's route has one, else the
    /// listener's. A preflight names no content type: a path that reads as
    /// `/service/method` is matched as gRPC, as the call it precedes.
    fn cors_policy(&self, req: &Normalized<'_>, headers: &HeaderMap) -> Option<&Cors> {
        if self.config.routes.iter().any(|r| r.cors.is_some()) {
            let facts = RequestFacts {
                host: &req.host,
                path: &req.path,
                headers,
                grpc: crate::grpc::split_path(&req.path),
            };
            if let Some(i) = self.routes.find(&self.config.routes, &facts) {
                if let Some(c) = &self.config.routes[i].cors {
                    return Some(c);
                }
            }
        }
        self.config.cors.as_deref()
    }

    fn log_refused(&self, origin: &str) {
        let key = format!("cors {} {origin}", self.name);
        if refused_log().first(&key) {
            tracing::warn!(
                listener = %self.name,
                origin,
                "CORS: origin {origin:?} is not allowed on listener {}, so browsers on it cannot read the answers; if it should call, add \"{origin}\" to cors.allow_origins (of the listener, or of the route)",
                self.name
            );
        }
    }
}

fn allow_origin(policy: &Cors, origin: &HeaderValue) -> HeaderValue {
    if policy.any_origin() && !policy.allow_credentials {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    }
}

/// The answer to an allowed preflight: the method asked for, the headers
/// asked for that the policy allows, how long to keep the answer.
fn preflight_answer(
    policy: &Cors,
    origin: &HeaderValue,
    headers: &HeaderMap,
    pipeline: &Pipeline,
    origin_text: &str,
) -> Response<body::Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        allow_origin(policy, origin),
    );
    if policy.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(m) = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m.clone());
    }
    let mut allowed = Vec::new();
    for v in headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        for name in v.to_str().unwrap_or("").split(',') {
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            if policy.allow_headers.contains(&name) {
                allowed.push(name);
            } else {
                let key = format!("cors-header {} {origin_text} {name}", pipeline.name);
                if refused_log().first(&key) {
                    tracing::warn!(
                        listener = %pipeline.name,
                        origin = origin_text,
                        header = name.as_str(),
                        "CORS: a browser on {origin_text:?} asked to send header {name:?}, which cors.allow_headers of listener {} does not list, so the browser will not send the request; add {name:?} to cors.allow_headers if it should",
                        pipeline.name
                    );
                }
            }
        }
    }
    if !allowed.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
    }
    h.insert(header::ACCESS_CONTROL_MAX_AGE, policy.max_age.clone());
    h.insert(header::VARY, VARY_PREFLIGHT);
    resp
}

/// Adds the request's CORS headers (if any) to an answer.
pub(super) fn apply(h: &mut HeaderMap, outcome: &Outcome) {
    let Some(b) = outcome.browser.as_deref() else {
        return;
    };
    apply_headers(h, &b.cors);
}

/// Adds CORS headers taken from a request's [`Outcome`] before it was
/// spent; an answer that has them already is left as it is.
pub(super) fn apply_headers(h: &mut HeaderMap, cors: &[(http::HeaderName, HeaderValue)]) {
    for (name, value) in cors {
        if *name == header::VARY {
            if !h.get_all(header::VARY).iter().any(|v| v == value) {
                h.append(name.clone(), value.clone());
            }
        } else {
            h.insert(name.clone(), value.clone());
        }
    }
}

//! The one door every failure a client sees goes through, in the client's
//! own protocol, whether the response head has gone out or not:
//! - before the head, [`error_response`]: gRPC clients get HTTP 200
//!   trailers-only with `grpc-status` and a plain-words `grpc-message`;
//!   everyone else an HTTP status with a one-line body;
//! - after the head (the upstream failed mid-stream, the deadline passed),
//!   [`error_trailers`]: the same gRPC status fields as trailers;
//! - a JSON-transcoded request, before the head, [`error_json`] (and
//!   [`status_json_response`] for a gRPC status the upstream sent):
//!   `google.rpc.Status` JSON with the HTTP status its code maps to; after
//!   the head, the stream's last element (`transcode_stream.rs`);
//! - gRPC-Web clients, before the head, [`web_error_response`]: HTTP 200,
//!   the status as gRPC-Web's trailers frame, the body's only frame (which
//!   a browser lets the page read even when CORS exposes no header; the
//!   head keeps only `x-torii-error`); after the head, [`error_trailers`]
//!   becomes that frame on the way out;
//! - on a TLS port that got plaintext, before any request exists, the
//!   listener writes [`error_response`]'s status, fields and text itself.
//!
//! All carry `x-torii-error` with the stable reason code, and an error that
//! says when to try again (`rate_limited`) `retry-after` in seconds, rounded
//! up, plus `grpc-retry-pushback-ms` for gRPC and gRPC-Web clients (where
//! the status is: head or trailers frame).
//! All carry `x-torii-error` with the stable reason code; `unauthenticated`
//! also RFC 6750's `www-authenticate: Bearer error="invalid_token",
//! error_description="…"` (the same words), in every shape.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};
use crate::error::ProxyError;
use crate::grpc::status::{encode_message, Code};

pub const X_TORII_ERROR: &str = "x-torii-error";

/// Renders `err` for a client that spoke gRPC (`grpc == true`) or plain HTTP.
pub fn error_response(err: &ProxyError, grpc: bool) -> Response<Body> {
    let code = HeaderValue::from_static(err.code.as_str());
    let mut resp = if grpc {
        grpc_trailers_only(err.code.grpc_code(), &err.message, Some(code))
    } else {
        let mut resp = text_response(err.code.http_status(), &err.message);
        resp.headers_mut().insert(X_TORII_ERROR, code);
        resp
    };
    retry_fields(resp.headers_mut(), err, grpc);
    challenge(resp.headers_mut(), err);
    resp
}

/// `retry-after` (whole seconds, rounded up) and, for gRPC,
/// `grpc-retry-pushback-ms`, when `err` says when to try again.
fn retry_fields(h: &mut HeaderMap, err: &ProxyError, grpc: bool) {
    let Some(ms) = err.retry_after_ms else {
        return;
    };
    h.insert(
        header::RETRY_AFTER,
        HeaderValue::from(ms.get().div_ceil(1000)),
    );
    if grpc {
        h.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from(ms.get()));
    }
}

/// `www-authenticate` for an `unauthenticated` failure (RFC 6750 §3): the
/// `invalid_token` error and the message, unless no credential came at all.
fn challenge(h: &mut HeaderMap, err: &ProxyError) {
    if err.code != crate::error::ErrorCode::Unauthenticated {
        return;
    }
    let value = if err.message.starts_with(crate::auth::NO_CREDENTIAL) {
        "Bearer".to_string()
    } else {
        let description: String = err
            .message
            .chars()
            .map(|c| match c {
                '"' | '\\' => '\'',
                c if (' '..='~').contains(&c) => c,
                _ => '?',
            })
            .collect();
        format!("Bearer error=\"invalid_token\", error_description=\"{description}\"")
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(header::WWW_AUTHENTICATE, v);
    }
}

pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// Renders `err` for a JSON-transcoded request: `{"code","message"}` (a
/// `google.rpc.Status`) with the HTTP status the gRPC code maps to.
pub fn error_json(err: &ProxyError) -> Response<Body> {
    let code = err.code.grpc_code().as_i32();
    let mut resp = status_json_response(code, &err.message, None, None);
    resp.headers_mut()
        .insert(X_TORII_ERROR, HeaderValue::from_static(err.code.as_str()));
    retry_fields(resp.headers_mut(), err, false);
    challenge(resp.headers_mut(), err);
    resp
}

/// A gRPC status as a JSON client gets it: `google.rpc.Status` JSON (with
/// the details of `grpc-status-details-bin` whose types `pool` knows) and
/// the HTTP status of google/rpc/code.proto's table.
pub fn status_json_response(
    code: i32,
    message: &str,
    details_bin: Option<&[u8]>,
    pool: Option<&prost_reflect::DescriptorPool>,
) -> Response<Body> {
    let json = crate::transcode::response::status_json(code, message, details_bin, pool);
    let mut resp = Response::new(body::full(json));
    *resp.status_mut() = StatusCode::from_u16(crate::transcode::response::http_status(code))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Renders `err` for a gRPC-Web client: base64 (`text`) or binary.
pub fn web_error_response(err: &ProxyError, text: bool) -> Response<Body> {
    let code = HeaderValue::from_static(err.code.as_str());
    let mut resp = Response::new(body::empty());
    resp.headers_mut().insert(X_TORII_ERROR, code.clone());
    retry_fields(resp.headers_mut(), err, false);
    challenge(resp.headers_mut(), err);
    let mut status = HeaderMap::new();
    grpc_status_fields(&mut status, err.code.grpc_code(), &err.message, Some(code));
    if let Some(ms) = err.retry_after_ms {
        status.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from(ms.get()));
    }
    let frame = body::grpc_web::trailer_frame(&status);
    let frame = if text {
        body::grpc_web::base64_chunk(&frame)
    } else {
        frame
    };
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if text {
            "application/grpc-web-text+proto"
        } else {
            "application/grpc-web+proto"
        }),
    );
    *resp.body_mut() = body::full(frame);
    resp
}

/// The trailers that end a response whose head already went out, when
/// torii fails it: the gRPC status for `err`, and its reason code.
pub fn error_trailers(err: &ProxyError) -> HeaderMap {
    let mut t = HeaderMap::new();
    grpc_status_fields(
        &mut t,
        err.code.grpc_code(),
        &err.message,
        Some(HeaderValue::from_static(err.code.as_str())),
    );
    if let Some(ms) = err.retry_after_ms {
        t.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from(ms.get()));
    }
    t
}

/// A gRPC trailers-only response: status and message in the headers block.
pub fn grpc_trailers_only(
    status: Code,
    message: &str,
    torii_error: Option<HeaderValue>,
) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    grpc_status_fields(h, status, message, torii_error);
    resp
}

/// `grpc-status`, `grpc-message` (percent-encoded, left out when empty)
/// and `x-torii-error`: in a trailers-only head or in trailers alike.
fn grpc_status_fields(
    h: &mut HeaderMap,
    status: Code,
    message: &str,
    torii_error: Option<HeaderValue>,
) {
    h.insert(crate::grpc::GRPC_STATUS, status.as_header());
    if !message.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&encode_message(message)) {
            h.insert(crate::grpc::GRPC_MESSAGE, v);
        }
    }
    if let Some(code) = torii_error {
        h.insert(X_TORII_ERROR, code);
    }
}

/// A plain-text response with a one-line body.
pub fn text_response(status: u16, text: &str) -> Response<Body> {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    let mut resp = Response::new(body::full(line));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn grpc_shape() {
        let err = ProxyError::new(ErrorCode::NoRoute, "no route for /a.B/C");
        let r = error_response(&err, true);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "12");
        assert_eq!(r.headers()["grpc-message"], "no route for /a.B/C");
        assert_eq!(r.headers()["x-torii-error"], "no_route");
        assert_eq!(r.headers()["content-type"], "application/grpc");
    }

    #[test]
    fn json_shape() {
        let err = ProxyError::new(ErrorCode::NoRoute, "no route for GET /v1/x");
        let r = error_json(&err);
        assert_eq!(r.status(), 501);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["x-torii-error"], "no_route");
    }

    #[test]
    fn grpc_web_shape() {
        let err = ProxyError::new(ErrorCode::GrpcWebInvalid, "bad base64");
        let r = error_response(&err, true);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        let r = web_error_response(&err, false);
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("grpc-status").is_none(), "in the body only");
        assert_eq!(r.headers()["x-torii-error"], "grpc_web_invalid");
        assert_eq!(r.headers()["content-type"], "application/grpc-web+proto");
        let body = http_body::Body::size_hint(r.body()).exact().unwrap();
        let want =
            "grpc-status: 3\r\ngrpc-message: bad base64\r\nx-torii-error: grpc_web_invalid\r\n";
        assert_eq!(body as usize, 5 + want.len());
        let r = web_error_response(&err, true);
        assert_eq!(
            r.headers()["content-type"],
            "application/grpc-web-text+proto"
        );
    }

    #[test]
    fn rate_limited_says_when_to_retry_in_every_shape() {
        let err = ProxyError::new(ErrorCode::RateLimited, "slow down")
            .retry_after(std::time::Duration::from_micros(1_200_001));
        let r = error_response(&err, true);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(r.headers()["grpc-retry-pushback-ms"], "1201");
        let r = error_response(&err, false);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        assert!(r.headers().get("grpc-retry-pushback-ms").is_none());
        let r = error_json(&err);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        let r = web_error_response(&err, false);
        assert_eq!(r.headers()["retry-after"], "2");
        let want = "grpc-status: 8\r\ngrpc-message: slow down\r\nx-torii-error: rate_limited\r\ngrpc-retry-pushback-ms: 1201\r\n";
        let body = http_body::Body::size_hint(r.body()).exact().unwrap();
        assert_eq!(body as usize, 5 + want.len());
        assert_eq!(error_trailers(&err)["grpc-retry-pushback-ms"], "1201");
        // Under a second still says 1 (retry-after is whole seconds).
        let err = ProxyError::new(ErrorCode::RateLimited, "x")
            .retry_after(std::time::Duration::from_millis(3));
        assert_eq!(error_response(&err, false).headers()["retry-after"], "1");
    }

    #[test]
    fn unauthenticated_in_every_shape_carries_the_challenge() {
        let err = ProxyError::new(
            ErrorCode::Unauthenticated,
            "audience \"x\" not in [\"api\"]",
        );
        let want =
            "Bearer error=\"invalid_token\", error_description=\"audience 'x' not in ['api']\"";
        for r in [
            error_response(&err, true),
            error_response(&err, false),
            error_json(&err),
            web_error_response(&err, false),
        ] {
            assert_eq!(r.headers()["www-authenticate"], want);
            assert_eq!(r.headers()["x-torii-error"], "unauthenticated");
        }
        assert_eq!(error_response(&err, false).status(), 401);
        assert_eq!(error_json(&err).status(), 401);
        assert_eq!(error_response(&err, true).headers()["grpc-status"], "16");
        let missing = ProxyError::new(ErrorCode::Unauthenticated, "no credential: send a token");
        assert_eq!(
            error_response(&missing, false).headers()["www-authenticate"],
            "Bearer"
        );
        let denied = ProxyError::new(ErrorCode::PermissionDenied, "no allow rule");
        assert_eq!(error_json(&denied).status(), 403);
        assert_eq!(error_response(&denied, true).headers()["grpc-status"], "7");
        assert!(error_response(&denied, false)
            .headers()
            .get("www-authenticate")
            .is_none());
        let unavailable = ProxyError::new(ErrorCode::AuthUnavailable, "no keys");
        assert_eq!(error_response(&unavailable, false).status(), 503);
        assert_eq!(
            error_response(&unavailable, true).headers()["grpc-status"],
            "14"
        );
    }

    #[test]
    fn http_shape() {
        let err = ProxyError::new(ErrorCode::UpstreamConnectRefused, "refused");
        let r = error_response(&err, false);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["x-torii-error"], "upstream_connect_refused");
    }
}

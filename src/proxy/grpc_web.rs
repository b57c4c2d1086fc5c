//! gRPC-Web (after normalize, and in response): a browser's gRPC call,
//! over HTTP/1.1 or HTTP/2, becomes a gRPC call for the upstream and its
//! answer a gRPC-Web answer.
//!
//! - Request: `application/grpc-web[-text][+proto]` becomes
//!   `application/grpc[+proto]`, `te: trailers` is added, `content-length`
//!   (the length of what the browser sent, base64 or not) and the
//!   gRPC-Web-only headers (`x-grpc-web`, `x-user-agent`) go; the body is
//!   base64-decoded in text mode and its frames checked as they pass
//!   (`body::grpc_web::WebRequest`). A malformed body is `grpc_web_invalid`.
//! - Response: binary or text as `Accept` asks (else as the request came),
//!   every message as it arrives, the trailers as the last frame
//!   (`body::grpc_web::WebResponse`). A Trailers-Only answer (the status
//!   in the head, no body) gets its status moved into that frame: a browser
//!   shows a page a cross-origin head only as far as CORS exposes it, and
//!   connect-web refuses a body after a head that holds `grpc-status: 0`;
//!   both real clients read the frame. An upstream answer
//!   that is not gRPC (an HTML 502 from something in front of the server)
//!   becomes a gRPC-Web status saying so.
//!
//! Client and bidi streaming: a gRPC-Web request is one HTTP request whose
//! body the client sends whole before it reads (browsers cannot stream a
//! request body). torii cannot tell a method's kind without its
//! descriptors, so it forwards what arrives: a unary or server-streaming
//! call carries one message; a client-streaming call whose messages all
//! come in the one body works half-duplex; a bidi call that needs the
//! server's answer before it sends more cannot work over gRPC-Web at all.

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};

use super::outcome::{Outcome, Protocol, WebCall};
use crate::body::grpc_web::WebRequest;
use crate::body::Body;
use crate::error::{ErrorCode, ProxyError};
use crate::grpc;

const X_GRPC_WEB: HeaderName = HeaderName::from_static("x-grpc-web");
const X_USER_AGENT: HeaderName = HeaderName::from_static("x-user-agent");

/// The phase: rewrites the request's head for the upstream, and notes in
/// `outcome` how to answer.
#[inline(never)]
pub(super) fn grpc_web(
    parts: &mut Parts,
    text_in: bool,
    outcome: &mut Outcome,
) -> Result<(), ProxyError> {
    let text_out = match accept(&parts.headers) {
        Some(text) => text,
        None => text_in,
    };
    outcome.protocol = if text_in {
        Protocol::GrpcWebText
    } else {
        Protocol::GrpcWeb
    };
    let browser = outcome.browser.get_or_insert_with(Box::default);
    browser.web = Some(WebCall {
        text_out,
        invalid: Default::default(),
    });
    if parts.method != Method::POST {
        return Err(ProxyError::new(
            ErrorCode::GrpcWebInvalid,
            format!(
                "a gRPC-Web call is a POST request; this one is {}",
                parts.method
            ),
        ));
    }
    let h = &mut parts.headers;
    let suffix = h
        .get(header::CONTENT_TYPE)
        .map(|ct| subtype_suffix(ct.as_bytes()))
        .unwrap_or_default();
    let ct = match suffix.as_str() {
        "" => HeaderValue::from_static("application/grpc"),
        "+proto" => HeaderValue::from_static("application/grpc+proto"),
        other => HeaderValue::from_str(&format!("application/grpc{other}"))
            .unwrap_or(HeaderValue::from_static("application/grpc")),
    };
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    h.remove(header::CONTENT_LENGTH);
    h.remove(X_GRPC_WEB);
    h.remove(X_USER_AGENT);
    // The browser's Accept named gRPC-Web; the upstream speaks gRPC.
    h.remove(header::ACCEPT);
    Ok(())
}

/// The request body for the upstream: decoded and checked.
pub(super) fn request_body(body: Body, text_in: bool, outcome: &Outcome) -> Body {
    let invalid = outcome
        .browser
        .as_ref()
        .and_then(|b| b.web.as_ref())
        .map(|w| w.invalid.clone())
        .unwrap_or_default();
    http_body_util::BodyExt::boxed_unsync(WebRequest::new(body, text_in, invalid))
}

/// `Some(true)` when `Accept` asks for `application/grpc-web-text`,
/// `Some(false)` for `application/grpc-web`, None when it names neither.
fn accept(h: &HeaderMap) -> Option<bool> {
    let mut binary = false;
    for v in h.get_all(header::ACCEPT) {
        for item in v.to_str().ok()?.split(',') {
            let t = item.split(';').next().unwrap_or("").trim().as_bytes();
            match grpc::carries_bytes(t) {
                grpc::Carries::GrpcWeb { text: true } => return Some(true),
                grpc::Carries::GrpcWeb { text: false } => binary = true,
                _ => {}
            }
        }
    }
    binary.then_some(false)
}

/// What follows the media type's `application/grpc[-web[-text]]`:
/// `+proto`, `+json`, or nothing; parameters dropped.
fn subtype_suffix(ct: &[u8]) -> String {
    let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
    let ct = ct.split(';').next().unwrap_or("").trim();
    match ct.find('+') {
        Some(i) => ct[i..].to_string(),
        None => String::new(),
    }
}

/// The answer's content type for a gRPC-Web client.
fn web_content_type(text: bool, suffix: &str) -> HeaderValue {
    match (text, suffix) {
        (false, "") => HeaderValue::from_static("application/grpc-web"),
        (false, "+proto") => HeaderValue::from_static("application/grpc-web+proto"),
        (true, "") => HeaderValue::from_static("application/grpc-web-text"),
        (true, "+proto") => HeaderValue::from_static("application/grpc-web-text+proto"),
        (t, s) => HeaderValue::from_str(&format!(
            "application/grpc-web{}{s}",
            if t { "-text" } else { "" }
        ))
        .unwrap_or(HeaderValue::from_static("application/grpc-web")),
    }
}

/// The status fields of a head or trailers.
fn status_fields(h: &HeaderMap) -> HeaderMap {
    let mut t = HeaderMap::new();
    for name in [
        grpc::GRPC_STATUS,
        grpc::GRPC_MESSAGE,
        HeaderName::from_static("grpc-status-details-bin"),
        HeaderName::from_static(super::respond::X_TORII_ERROR),
    ] {
        if let Some(v) = h.get(&name) {
            t.insert(name, v.clone());
        }
    }
    t
}

/// An upstream answer a gRPC-Web client can be given: gRPC (its content
/// type, or a status in its head). Anything else — an HTML 502 from
/// something in front of the server — is refused in words.
pub(super) fn check_answer(parts: &http::response::Parts) -> Result<(), ProxyError> {
    let ct = parts.headers.get(header::CONTENT_TYPE);
    let is_grpc = ct.is_some_and(|ct| grpc::carries_value(ct) == grpc::Carries::Grpc);
    if is_grpc || parts.headers.contains_key(grpc::GRPC_STATUS) {
        return Ok(());
    }
    let ct = ct
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type");
    Err(ProxyError::new(
        ErrorCode::UpstreamProtocolMismatch,
        format!(
            "the upstream answered the gRPC-Web call with HTTP {} ({ct}), not gRPC: something in front of the gRPC server (a load balancer, a web server) answered it, or the server does not speak gRPC",
            parts.status.as_u16()
        ),
    ))
}

/// The head of a gRPC answer made gRPC-Web: its content type, status 200,
/// no length (the body is re-framed). Returns the status fields of a
/// Trailers-Only answer, taken out of the head, for the trailers frame.
pub(super) fn web_head(parts: &mut http::response::Parts, text: bool) -> Option<HeaderMap> {
    let suffix = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|ct| subtype_suffix(ct.as_bytes()))
        .unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, web_content_type(text, &suffix));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.status = StatusCode::OK;
    if !parts.headers.contains_key(grpc::GRPC_STATUS) {
        return None;
    }
    let status = status_fields(&parts.headers);
    for name in status.keys() {
        if name.as_str() != super::respond::X_TORII_ERROR {
            parts.headers.remove(name);
        }
    }
    Some(status)
}

//! Phase 3b, JSON transcoding (after normalize): an HTTP request that a
//! listener's `json_transcoding` rule matches becomes a gRPC call. The
//! phase itself only matches (the path template against the request's
//! path, for its HTTP method); a match ends the synchronous phases with
//! [`Step::Transcode`], and [`Pipeline::transcoded`] — a future of its own,
//! so native gRPC and plain HTTP requests keep theirs — reads the body,
//! builds the request message (`transcode::request`), sends it as gRPC
//! (`application/grpc`, `te: trailers`, one framed message) through the
//! remaining phases (route, cluster, deadline, forward), and answers in
//! JSON: one message, or a server stream framed as the client's `Accept`
//! asks (`transcode_stream.rs`). Every failure, torii's or the
//! upstream's, is `google.rpc.Status` JSON (`respond.rs`).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};

use super::conn_info::ConnInfo;
use super::outcome::{Outcome, Protocol};
use super::respond::{error_json, status_json_response};
use super::transcode_stream::{grpc_frames, whole_frame, JsonStream};
use super::{Pipeline, Step};
use crate::body::{self, Body, Received};
use crate::error::{ErrorCode, ProxyError};
use crate::grpc;
use crate::transcode::response::{message, Framing, Piece};
use crate::transcode::{request, Transcoder};

/// The largest JSON body read (gRPC's default message limit).
pub const MAX_BODY: usize = 4 << 20;
/// The largest unary response read whole before it is printed.
const MAX_RESPONSE: usize = 16 << 20;

/// A request a transcoding rule matched, waiting for its body.
pub(super) struct Transcoding {
    parts: Parts,
    body: Received,
    transcoder: Arc<Transcoder>,
    binding: usize,
    /// Each path variable (by its index in the template) and its value.
    vars: Vec<(usize, String)>,
}

/// The phase: the rule this request matches, if one does (its binding
/// and path variables); the caller ends the synchronous phases with
/// [`Step::Transcode`] then.
#[inline]
pub(super) fn transcode(transcoder: &Transcoder, parts: &Parts) -> Option<Matched> {
    let (b, vars) = transcoder.find(&parts.method, parts.uri.path())?;
    let binding = transcoder
        .bindings
        .iter()
        .position(|x| std::ptr::eq(x, b))
        .expect("a binding of this transcoder");
    let vars = vars
        .into_iter()
        .map(|(v, s)| {
            let i = b.template.variables.iter().position(|x| std::ptr::eq(x, v));
            (i.expect("a variable of this template"), s)
        })
        .collect();
    Some(Matched { binding, vars })
}

/// What the phase found: the binding, and each path variable (by its
/// index in the template) with its value.
pub(super) struct Matched {
    binding: usize,
    vars: Vec<(usize, String)>,
}

impl Transcoding {
    pub(super) fn new(
        parts: Parts,
        body: Received,
        transcoder: Arc<Transcoder>,
        m: Matched,
    ) -> Box<Transcoding> {
        Box::new(Transcoding {
            parts,
            body,
            transcoder,
            binding: m.binding,
            vars: m.vars,
        })
    }
}

/// Request headers that go upstream as gRPC metadata; the rest stay
/// behind. `grpc-metadata-NAME` goes as `NAME`.
fn metadata(from: &HeaderMap) -> HeaderMap {
    const KEEP: &[&str] = &[
        "authorization",
        "grpc-timeout",
        "traceparent",
        "tracestate",
        "baggage",
        "user-agent",
        "accept-language",
        "x-request-id",
        // The authority routes match on (HTTP/1.1's; HTTP/2's is in the URI).
        "host",
    ];
    let mut out = HeaderMap::with_capacity(from.len() + 2);
    for (name, value) in from {
        let n = name.as_str();
        if let Some(rest) = n.strip_prefix("grpc-metadata-") {
            if let Ok(name) = HeaderName::from_bytes(rest.as_bytes()) {
                out.append(name, value.clone());
            }
        } else if KEEP.contains(&n) || (n.starts_with("x-") && !n.starts_with("x-torii-")) {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    out.insert(header::TE, HeaderValue::from_static("trailers"));
    out
}

/// Response headers the client gets back: the upstream's metadata, not
/// its gRPC framing.
fn response_metadata(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let n = name.as_str();
        let framing = n.starts_with("grpc-")
            || matches!(n, "content-type" | "content-length" | "te" | "trailer");
        if !framing {
            to.append(name.clone(), value.clone());
        }
    }
}

/// `[0, len(4 bytes), message]`.
fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(msg.len() + 5);
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

fn grpc_status(h: &HeaderMap) -> Option<(i32, String, Option<Vec<u8>>)> {
    let code = h
        .get(&grpc::GRPC_STATUS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let message = h
        .get(&grpc::GRPC_MESSAGE)
        .map(|v| grpc::status::decode_message(v.as_bytes()))
        .unwrap_or_default();
    let details = h.get("grpc-status-details-bin").and_then(|v| {
        use base64::Engine;
        let text = v.as_bytes();
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(
                text.strip_suffix(b"==")
                    .or(text.strip_suffix(b"="))
                    .unwrap_or(text),
            )
            .ok()
    });
    Some((code, message, details))
}

enum Read {
    TooLarge,
    Failed(String),
}

/// A body read whole (up to `limit` bytes), with its trailers.
async fn read_all<B>(mut body: B, limit: usize) -> Result<(Bytes, Option<HeaderMap>), Read>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut out = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Read::Failed(e.to_string()))?;
        match frame.into_data() {
            Ok(d) => {
                if out.len() + d.len() > limit {
                    return Err(Read::TooLarge);
                }
                out.extend_from_slice(&d);
            }
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    Ok((out.freeze(), trailers))
}

/// A stream of google.api.HttpBody messages answers with the first
/// message's `content_type` (`application/octet-stream` if it has none):
/// the body is read up to that message (or its end), and what was read is
/// replayed in front of the rest.
async fn first_http_body(
    mut body: Body,
    transcoder: &Transcoder,
    binding: usize,
) -> (Body, HeaderValue) {
    let b = &transcoder.bindings[binding];
    let mut seen: Vec<Result<http_body::Frame<Bytes>, crate::error::BoxError>> = Vec::new();
    let mut buf = BytesMut::new();
    let mut ct = None;
    loop {
        // What was read is replayed whole. A frame torii cannot read ends
        // the wait too; the stream reports it.
        match whole_frame(&buf) {
            Ok(Some(end)) => {
                if let Ok(Piece::Raw { content_type, .. }) =
                    message(b, &buf[5..end], transcoder.print)
                {
                    ct = HeaderValue::from_str(&content_type)
                        .ok()
                        .filter(|v| !v.is_empty());
                }
                break;
            }
            Ok(None) => {}
            Err(_) => break,
        }
        match body.frame().await {
            Some(Ok(f)) => {
                let end = f.is_trailers();
                if let Some(d) = f.data_ref() {
                    buf.extend_from_slice(d);
                }
                seen.push(Ok(f));
                if end {
                    break;
                }
            }
            Some(Err(e)) => {
                seen.push(Err(e));
                break;
            }
            None => break,
        }
    }
    let replay = futures_util::stream::iter(seen).chain(http_body_util::BodyStream::new(body));
    let ct = ct.unwrap_or(HeaderValue::from_static("application/octet-stream"));
    (http_body_util::StreamBody::new(replay).boxed_unsync(), ct)
}

impl Pipeline {
    /// A matched request, from its body to the client's JSON answer, with
    /// the CORS headers the request's origin gets.
    pub(super) async fn transcoded(
        self: Arc<Self>,
        t: Box<Transcoding>,
        conn: Arc<ConnInfo>,
        outcome: Outcome,
    ) -> Response<Body> {
        let cors = outcome.browser.as_ref().map(|b| b.cors.clone());
        let mut resp = self.transcoded_answer(t, conn, outcome).await;
        if let Some(cors) = cors {
            super::cors::apply_headers(resp.headers_mut(), &cors);
        }
        resp
    }

    async fn transcoded_answer(
        self: Arc<Self>,
        t: Box<Transcoding>,
        conn: Arc<ConnInfo>,
        mut outcome: Outcome,
    ) -> Response<Body> {
        outcome.protocol = Protocol::Json;
        let Transcoding {
            mut parts,
            body,
            transcoder,
            binding,
            vars,
        } = *t;
        let b = &transcoder.bindings[binding];
        let bytes = match read_all(body, MAX_BODY).await {
            Ok((bytes, _)) => bytes,
            Err(Read::TooLarge) => {
                let message = format!("the request body is larger than {} MiB", MAX_BODY >> 20);
                let err = ProxyError::new(ErrorCode::TranscodingFailed, message);
                return self.failed_json(err, Some(outcome));
            }
            Err(Read::Failed(e)) => {
                let message = format!("the request body could not be read: {e}");
                let err = ProxyError::new(ErrorCode::ClientCancelled, message);
                return self.failed_json(err, Some(outcome));
            }
        };
        let vars = vars
            .into_iter()
            .map(|(i, s)| (&b.template.variables[i], s))
            .collect();
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let msg = match request::encode(b, vars, parts.uri.query(), &bytes, content_type) {
            Ok(m) => m,
            Err(e) => {
                let err = ProxyError::new(
                    ErrorCode::TranscodingFailed,
                    format!("{} {}: {e}", b.http_method, b.template.text),
                );
                return self.failed_json(err, Some(outcome));
            }
        };
        let framing = Framing::from_accept(
            parts
                .headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok()),
        );
        // The gRPC request: POST /package.Service/Method, gRPC metadata.
        let mut uri = parts.uri.clone().into_parts();
        uri.path_and_query = Some(b.grpc_path.parse().expect("a valid gRPC path"));
        parts.uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
        parts.method = Method::POST;
        parts.headers = metadata(&parts.headers);
        let body = Received::Buffered(Full::new(frame(&msg)));
        outcome.grpc_request = true;
        outcome.json_unary = !b.server_streaming();
        let fwd = match self.normalized_phases(parts, body, &conn, true, &mut outcome, false) {
            Ok(fwd) => fwd,
            Err(Step::Answer(resp)) => return resp,
            Err(Step::Fail(err)) => return self.failed_json(err, Some(outcome)),
            Err(_) => {
                let err = ProxyError::new(
                    ErrorCode::NoRoute,
                    format!("no route takes the transcoded call {}", b.grpc_path),
                );
                return self.failed_json(err, Some(outcome));
            }
        };
        let mut slot = Some(outcome);
        let resp = match self.forward(fwd, true, &mut slot).await {
            Ok(resp) => resp,
            Err(err) => return self.failed_json(err, slot),
        };
        let (head, body) = resp.into_parts();
        if let Some((code, message, details)) = grpc_status(&head.headers) {
            // Trailers-only: the upstream's status; if OK, no message.
            if code == 0 && b.server_streaming() {
                let mut resp = Response::new(body::full(framing.end(false, None)));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(framing.content_type()),
                );
                return resp;
            }
            return self.status_answer(&transcoder, code, &message, details, &head.headers);
        }
        let content_type = head.headers.get(header::CONTENT_TYPE);
        if head.status != StatusCode::OK
            || !content_type
                .and_then(|v| v.to_str().ok())
                .is_some_and(grpc::is_grpc_content_type)
        {
            let err = ProxyError::new(
                ErrorCode::UpstreamProtocolMismatch,
                format!(
                    "the upstream answered {} {} to the transcoded call {}, not gRPC",
                    head.status,
                    content_type
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("without a content type"),
                    b.grpc_path
                ),
            );
            return error_json(&err);
        }
        if b.server_streaming() {
            let (body, ct) = if crate::transcode::is_http_body(&b.method.output()) {
                first_http_body(body, &transcoder, binding).await
            } else {
                (body, HeaderValue::from_static(framing.content_type()))
            };
            let mut resp = Response::new(
                JsonStream::new(body, transcoder.clone(), binding, framing).boxed_unsync(),
            );
            response_metadata(&head.headers, resp.headers_mut());
            resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            return resp;
        }
        self.unary_answer(&transcoder, binding, head.headers, body)
            .await
    }

    async fn unary_answer(
        &self,
        transcoder: &Arc<Transcoder>,
        binding: usize,
        headers: HeaderMap,
        body: Body,
    ) -> Response<Body> {
        let b = &transcoder.bindings[binding];
        let (bytes, trailers) = match read_all(body, MAX_RESPONSE).await {
            Ok(c) => c,
            Err(e) => {
                let why = match e {
                    Read::TooLarge => format!("is larger than {} MiB", MAX_RESPONSE >> 20),
                    Read::Failed(e) => format!("could not be read: {e}"),
                };
                let err = ProxyError::new(
                    ErrorCode::UpstreamReset,
                    format!("the upstream's answer to {} {why}", b.grpc_path),
                );
                return error_json(&err);
            }
        };
        let trailers = trailers.unwrap_or_default();
        let mut data = BytesMut::from(bytes);
        let status = grpc_status(&trailers).unwrap_or((
            2,
            "the upstream ended the call without a grpc-status".into(),
            None,
        ));
        if status.0 != 0 {
            let (code, message, details) = status;
            return self.status_answer(transcoder, code, &message, details, &headers);
        }
        let first = match grpc_frames(&mut data) {
            Ok(Some(m)) => m,
            Ok(None) => Bytes::new(),
            Err(e) => return error_json(&ProxyError::new(ErrorCode::UpstreamProtocolMismatch, e)),
        };
        let (body, ct) = match message(b, &first, transcoder.print) {
            Ok(Piece::Json(j)) => (j.into(), HeaderValue::from_static("application/json")),
            Ok(Piece::Raw { content_type, data }) => (
                data,
                HeaderValue::from_str(&content_type)
                    .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            ),
            Err(e) => return error_json(&ProxyError::new(ErrorCode::Internal, e)),
        };
        let mut resp = Response::new(body::full(body));
        response_metadata(&headers, resp.headers_mut());
        response_metadata(&trailers, resp.headers_mut());
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
        resp
    }

    fn status_answer(
        &self,
        transcoder: &Transcoder,
        code: i32,
        message: &str,
        details: Option<Vec<u8>>,
        headers: &HeaderMap,
    ) -> Response<Body> {
        if code == 0 {
            let mut resp = Response::new(body::full("{}"));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return resp;
        }
        let mut resp =
            status_json_response(code, message, details.as_deref(), Some(&transcoder.pool));
        response_metadata(headers, resp.headers_mut());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

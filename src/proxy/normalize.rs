//! Phase 3, normalize: the path as routes compare it (dot segments,
//! percent-encoding; encoded slashes refused unless allowed), the
//! authority the client named, and the gRPC service and method.

use std::borrow::Cow;

use http::header;
use http::request::Parts;
use http::uri::Authority;
use http::{HeaderValue, Uri};

use super::outcome::Outcome;
use super::path;
use crate::error::{ErrorCode, ProxyError};
use crate::grpc;

/// The request as routing reads it. Borrows the request's URI and
/// authority (cheap clones the caller holds, so that the request's parts
/// can be rewritten meanwhile): nothing is copied for a request whose path
/// and host are already in normal form.
pub(super) struct Normalized<'u> {
    pub path: Cow<'u, str>,
    pub authority: Option<&'u str>,
    /// Lower-cased, without port; empty when the request named none.
    pub host: Cow<'u, str>,
    /// For a gRPC request with a well-formed path: where the slash
    /// between service and method is (the path is split once).
    grpc_slash: Option<usize>,
}

impl Normalized<'_> {
    /// `(service, method)` for a gRPC request with a well-formed path.
    pub fn grpc_names(&self) -> Option<(&str, &str)> {
        let slash = self.grpc_slash?;
        Some((&self.path[1..slash], &self.path[slash + 1..]))
    }
}

#[inline]
pub(super) fn normalize<'u>(
    uri: &'u Uri,
    authority: Option<&'u RequestAuthority>,
    allow_encoded_slashes: bool,
    grpc_req: bool,
    outcome: &mut Outcome,
) -> Result<Normalized<'u>, ProxyError> {
    let path = path::normalize(uri.path(), allow_encoded_slashes)
        .map_err(|e| ProxyError::new(ErrorCode::InvalidPath, e.to_string()))?;
    let authority = authority.map(RequestAuthority::as_str);
    let host = crate::route::normalize_host(authority.unwrap_or(""));
    let mut grpc_slash = None;
    if grpc_req {
        if let Some((service, _)) = grpc::split_path(&path) {
            grpc_slash = Some(1 + service.len());
            outcome.grpc = Some(grpc::GrpcName::split(uri, &path, service.len()));
        }
    }
    Ok(Normalized {
        path,
        authority,
        host,
        grpc_slash,
    })
}

/// `:authority` for HTTP/2, `Host` for HTTP/1.1: shared with the request
/// (no copy), and kept while the request is rewritten.
pub(super) enum RequestAuthority {
    Uri(Authority),
    Host(HeaderValue),
}

impl RequestAuthority {
    pub fn as_str(&self) -> &str {
        match self {
            RequestAuthority::Uri(a) => a.as_str(),
            // Only visible ASCII is kept (see request_authority).
            RequestAuthority::Host(v) => v.to_str().unwrap_or_default(),
        }
    }
}

pub(super) fn request_authority(parts: &Parts) -> Option<RequestAuthority> {
    if let Some(a) = parts.uri.authority() {
        return Some(RequestAuthority::Uri(a.clone()));
    }
    parts
        .headers
        .get(header::HOST)
        .filter(|v| v.to_str().is_ok())
        .map(|v| RequestAuthority::Host(v.clone()))
}

//! gRPC protocol helpers: status codes, `grpc-timeout`, request classification.

pub mod status;
pub mod timeout;
pub mod web;

use http::{HeaderMap, HeaderName, Uri};

/// gRPC's header names, made once: a `&str` name is parsed and checked on
/// every map lookup or insert.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// True when the request is gRPC (`application/grpc`, `application/grpc+proto`, …).
/// gRPC-Web (`application/grpc-web…`) is not gRPC on the wire.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(is_grpc_content_type)
        .unwrap_or(false)
}

/// What a request's content type says it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// `application/grpc[+…][;…]`.
    Grpc,
    /// `application/grpc-web[+…]` (binary); `text` for
    /// `application/grpc-web-text[+…]` (base64).
    GrpcWeb {
        text: bool,
    },
    Other,
}

/// Classifies a request by its content type: one look at one header. The
/// gRPC form most clients send (lower-case) is decided by the first
/// compare; gRPC-Web's names are compared without regard to case, and
/// parameters (`; charset=…`) are ignored.
#[inline]
pub fn carries(headers: &HeaderMap) -> Carries {
    match headers.get(http::header::CONTENT_TYPE) {
        Some(ct) => carries_bytes(ct.as_bytes()),
        None => Carries::Other,
    }
}

/// [`carries`] for one content-type value.
pub fn carries_value(ct: &http::HeaderValue) -> Carries {
    carries_bytes(ct.as_bytes())
}

/// [`carries`] for a media type's bytes.
#[inline]
pub fn carries_bytes(ct: &[u8]) -> Carries {
    const GRPC: &[u8] = b"application/grpc";
    let Some(head) = ct.get(..GRPC.len()) else {
        return Carries::Other;
    };
    if head != GRPC && !head.eq_ignore_ascii_case(GRPC) {
        return Carries::Other;
    }
    let rest = &ct[GRPC.len()..];
    let ends = |r: &[u8]| matches!(r.first(), None | Some(b'+' | b';' | b' '));
    if ends(rest) {
        return if head == GRPC {
            Carries::Grpc
        } else {
            Carries::Other
        };
    }
    match rest.get(..4) {
        Some(w) if w.eq_ignore_ascii_case(b"-web") => {}
        _ => return Carries::Other,
    }
    let rest = &rest[4..];
    if ends(rest) {
        return Carries::GrpcWeb { text: false };
    }
    match rest.get(..5) {
        Some(t) if t.eq_ignore_ascii_case(b"-text") && ends(&rest[5..]) => {
            Carries::GrpcWeb { text: true }
        }
        _ => Carries::Other,
    }
}

pub fn is_grpc_content_type(ct: &str) -> bool {
    let Some(rest) = ct.strip_prefix("application/grpc") else {
        return false;
    };
    rest.is_empty() || rest.starts_with('+') || rest.starts_with(';')
}

/// Splits a gRPC path `/pkg.Service/Method` into (service, method).
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

/// A gRPC request's service and method, kept for its metrics and access
/// log without copying: slices of the request's path as it arrived, or of
/// its normalised form when normalising changed it.
pub struct GrpcName {
    path: GrpcPath,
    /// Where the slash between service and method is.
    slash: usize,
}

enum GrpcPath {
    AsReceived(Uri),
    Normalised(Box<str>),
}

impl GrpcName {
    /// `path` is `uri`'s path normalised; None when it is not
    /// `/service/method`.
    pub fn new(uri: &Uri, path: &str) -> Option<Self> {
        let (service, _) = split_path(path)?;
        Some(Self::split(uri, path, service.len()))
    }

    /// As [`GrpcName::new`], for a `path` already split by [`split_path`]
    /// (its service `service_len` bytes long).
    pub fn split(uri: &Uri, path: &str, service_len: usize) -> Self {
        let path = if path == uri.path() {
            GrpcPath::AsReceived(uri.clone())
        } else {
            GrpcPath::Normalised(path.into())
        };
        GrpcName {
            path,
            slash: 1 + service_len,
        }
    }

    fn path(&self) -> &str {
        match &self.path {
            GrpcPath::AsReceived(uri) => uri.path(),
            GrpcPath::Normalised(p) => p,
        }
    }

    pub fn service(&self) -> &str {
        &self.path()[1..self.slash]
    }

    pub fn method(&self) -> &str {
        &self.path()[self.slash + 1..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_name_slices_the_path() {
        let uri: Uri = "/pkg.Echo/Unary?x=1".parse().unwrap();
        let n = GrpcName::new(&uri, uri.path()).unwrap();
        assert_eq!((n.service(), n.method()), ("pkg.Echo", "Unary"));
        let n = GrpcName::new(&uri, "/a.B/C").unwrap();
        assert_eq!((n.service(), n.method()), ("a.B", "C"));
        assert!(GrpcName::new(&uri, "/nope").is_none());
    }

    #[test]
    fn content_types() {
        assert!(is_grpc_content_type("application/grpc"));
        assert!(is_grpc_content_type("application/grpc+proto"));
        assert!(is_grpc_content_type("application/grpc;charset=utf-8"));
        assert!(!is_grpc_content_type("application/grpc-web"));
        assert!(!is_grpc_content_type("application/grpc-web-text+proto"));
        assert!(!is_grpc_content_type("application/json"));
    }

    #[test]
    fn paths() {
        assert_eq!(
            split_path("/hello.Hello/SayHi"),
            Some(("hello.Hello", "SayHi"))
        );
        assert_eq!(split_path("/hello.Hello/"), None);
        assert_eq!(split_path("/a/b/c"), None);
        assert_eq!(split_path("hello"), None);
    }
}

#[cfg(test)]
mod carries_tests {
    use super::*;

    fn of(ct: &str) -> Carries {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        carries(&h)
    }

    #[test]
    fn content_types() {
        assert_eq!(of("application/grpc"), Carries::Grpc);
        assert_eq!(of("application/grpc+proto"), Carries::Grpc);
        assert_eq!(of("application/grpc;x=1"), Carries::Grpc);
        assert_eq!(of("application/grpcx"), Carries::Other);
        assert_eq!(of("application/json"), Carries::Other);
        let bin = Carries::GrpcWeb { text: false };
        let text = Carries::GrpcWeb { text: true };
        assert_eq!(of("application/grpc-web"), bin);
        assert_eq!(of("application/grpc-web+proto"), bin);
        assert_eq!(of("Application/GRPC-Web+proto; charset=x"), bin);
        assert_eq!(of("application/grpc-web-text"), text);
        assert_eq!(of("application/grpc-web-text+proto"), text);
        assert_eq!(of("APPLICATION/GRPC-WEB-TEXT"), text);
        assert_eq!(of("application/grpc-webx"), Carries::Other);
        assert_eq!(of("application/grpc-web-textx"), Carries::Other);
    }
}

//! gRPC protocol helpers: status codes, `grpc-timeout`, request classification.

pub mod health;
pub mod status;
pub mod timeout;

use http::HeaderMap;

/// True when the request is gRPC (`application/grpc`, `application/grpc+proto`, …).
/// gRPC-Web (`application/grpc-web…`) is not gRPC on the wire.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(is_grpc_content_type)
        .unwrap_or(false)
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

#[cfg(test)]
mod tests {
    use super::*;

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

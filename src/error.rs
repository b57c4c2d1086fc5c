//! The one error type for failures torii itself produces while handling a
//! request. It carries a stable reason code (the `x-torii-error` header, the
//! access log and the metrics all use the same code) and a sentence for the
//! human reading a `grpc-message` or a log line.

use std::fmt;

use crate::grpc::status::Code;

/// Stable, machine-readable reasons. Renaming one breaks users' alerts: don't.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NoRoute,
    InvalidPath,
    BadRequest,
    UpstreamConnectRefused,
    UpstreamConnectTimeout,
    UpstreamConnectFailed,
    UpstreamDnsFailed,
    UpstreamProtocolMismatch,
    UpstreamTlsFailed,
    UpstreamReset,
    UpstreamTimeout,
    NoHealthyUpstream,
    /// A cluster limit (`limits`) refused the request: circuit breaking.
    Overloaded,
    DeadlineExceeded,
    /// The client abandoned the request before its response ended (reset
    /// its stream, or broke HTTP/2 rules on it and torii reset it): no
    /// fault of the upstream's.
    ClientCancelled,
    /// Plaintext HTTP arrived on a TLS listener: answered in words, before
    /// any request exists (so not in the access log).
    PlaintextOnTlsPort,
    /// A JSON-transcoded request whose body, path or query does not fit
    /// the gRPC method's request message.
    TranscodingFailed,
    /// A malformed gRPC-Web request: bad base64, a bad frame, not a POST.
    GrpcWebInvalid,
    /// A gRPC-Web request carrying more than one message: client or bidi
    /// streaming, which gRPC-Web cannot carry.
    GrpcWebStreaming,
    /// The route's rate limit (its token bucket, for the route, the
    /// client IP or the caller) is used up for now.
    RateLimited,
    /// No credential, or one that failed a check (a route's `auth:`).
    Unauthenticated,
    /// A JWT provider has no key set to verify with (fail closed).
    AuthUnavailable,
    /// Authenticated, but no `allow` rule of the route matched.
    PermissionDenied,
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of docs/errors.md (tests/docs.rs checks
    /// that each is documented there).
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::NoRoute,
        ErrorCode::InvalidPath,
        ErrorCode::BadRequest,
        ErrorCode::UpstreamConnectRefused,
        ErrorCode::UpstreamConnectTimeout,
        ErrorCode::UpstreamConnectFailed,
        ErrorCode::UpstreamDnsFailed,
        ErrorCode::UpstreamProtocolMismatch,
        ErrorCode::UpstreamTlsFailed,
        ErrorCode::UpstreamReset,
        ErrorCode::UpstreamTimeout,
        ErrorCode::NoHealthyUpstream,
        ErrorCode::Overloaded,
        ErrorCode::DeadlineExceeded,
        ErrorCode::ClientCancelled,
        ErrorCode::PlaintextOnTlsPort,
        ErrorCode::TranscodingFailed,
        ErrorCode::GrpcWebInvalid,
        ErrorCode::GrpcWebStreaming,
        ErrorCode::RateLimited,
        ErrorCode::Unauthenticated,
        ErrorCode::AuthUnavailable,
        ErrorCode::PermissionDenied,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NoRoute => "no_route",
            ErrorCode::InvalidPath => "invalid_path",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UpstreamConnectRefused => "upstream_connect_refused",
            ErrorCode::UpstreamConnectTimeout => "upstream_connect_timeout",
            ErrorCode::UpstreamConnectFailed => "upstream_connect_failed",
            ErrorCode::UpstreamDnsFailed => "upstream_dns_failed",
            ErrorCode::UpstreamProtocolMismatch => "upstream_protocol_mismatch",
            ErrorCode::UpstreamTlsFailed => "upstream_tls_failed",
            ErrorCode::UpstreamReset => "upstream_reset",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::NoHealthyUpstream => "no_healthy_upstream",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::ClientCancelled => "client_cancelled",
            ErrorCode::PlaintextOnTlsPort => "plaintext_on_tls_port",
            ErrorCode::TranscodingFailed => "transcoding_failed",
            ErrorCode::GrpcWebInvalid => "grpc_web_invalid",
            ErrorCode::GrpcWebStreaming => "grpc_web_streaming",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::AuthUnavailable => "auth_unavailable",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Internal => "internal_error",
        }
    }

    /// The gRPC status a gRPC client gets for this failure.
    pub fn grpc_code(self) -> Code {
        match self {
            ErrorCode::NoRoute | ErrorCode::GrpcWebStreaming => Code::Unimplemented,
            ErrorCode::InvalidPath
            | ErrorCode::BadRequest
            | ErrorCode::TranscodingFailed
            | ErrorCode::GrpcWebInvalid => Code::InvalidArgument,
            ErrorCode::DeadlineExceeded | ErrorCode::UpstreamTimeout => Code::DeadlineExceeded,
            ErrorCode::Internal => Code::Internal,
            ErrorCode::ClientCancelled => Code::Cancelled,
            ErrorCode::RateLimited => Code::ResourceExhausted,
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::PermissionDenied => Code::PermissionDenied,
            // Everything upstream-side is retryable from the client's view.
            _ => Code::Unavailable,
        }
    }

    /// The HTTP status a plain HTTP client gets for this failure.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::NoRoute => 404,
            ErrorCode::InvalidPath
            | ErrorCode::BadRequest
            | ErrorCode::PlaintextOnTlsPort
            | ErrorCode::TranscodingFailed
            | ErrorCode::GrpcWebInvalid => 400,
            ErrorCode::UpstreamProtocolMismatch
            | ErrorCode::UpstreamReset
            | ErrorCode::UpstreamTlsFailed => 502,
            ErrorCode::DeadlineExceeded | ErrorCode::UpstreamTimeout => 504,
            ErrorCode::Internal => 500,
            ErrorCode::GrpcWebStreaming => 501,
            // nginx's "client closed request".
            ErrorCode::ClientCancelled => 499,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            _ => 503,
        }
    }
}

/// A new variant must be added to [`ErrorCode::ALL`] too: this match stops
/// compiling until it is listed here, as a reminder.
const _: fn(ErrorCode) = |code| match code {
    ErrorCode::NoRoute
    | ErrorCode::InvalidPath
    | ErrorCode::BadRequest
    | ErrorCode::UpstreamConnectRefused
    | ErrorCode::UpstreamConnectTimeout
    | ErrorCode::UpstreamConnectFailed
    | ErrorCode::UpstreamDnsFailed
    | ErrorCode::UpstreamProtocolMismatch
    | ErrorCode::UpstreamTlsFailed
    | ErrorCode::UpstreamReset
    | ErrorCode::UpstreamTimeout
    | ErrorCode::NoHealthyUpstream
    | ErrorCode::Overloaded
    | ErrorCode::DeadlineExceeded
    | ErrorCode::ClientCancelled
    | ErrorCode::PlaintextOnTlsPort
    | ErrorCode::TranscodingFailed
    | ErrorCode::GrpcWebInvalid
    | ErrorCode::GrpcWebStreaming
    | ErrorCode::RateLimited
    | ErrorCode::Unauthenticated
    | ErrorCode::AuthUnavailable
    | ErrorCode::PermissionDenied
    | ErrorCode::Internal => {}
};

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure torii answers for: the code plus a plain-words explanation of
/// what was seen and what to change.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProxyError {
    pub code: ErrorCode,
    pub message: String,
    /// When the client may try again (`rate_limited`): `retry-after`, and
    /// `grpc-retry-pushback-ms` for gRPC. Milliseconds, rounded up; a
    /// `u32` keeps the error as small as it was.
    pub retry_after_ms: Option<std::num::NonZeroU32>,
}

impl ProxyError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProxyError {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// The same error, telling the client to wait `wait` before retrying.
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        let ms = wait.as_nanos().div_ceil(1_000_000).max(1);
        self.retry_after_ms = std::num::NonZeroU32::new(u32::try_from(ms).unwrap_or(u32::MAX));
        self
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

//! gRPC status codes and the `grpc-message` encoding (percent-encoding of
//! everything outside printable ASCII, per the gRPC HTTP/2 spec).

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The decimal form used in `grpc-status`.
    pub fn as_header(self) -> http::HeaderValue {
        http::HeaderValue::from(self as i32)
    }

    /// Upper-case name as gRPC documents it (`UNAVAILABLE`), for logs and labels.
    pub fn name(self) -> &'static str {
        code_name(self as i32)
    }
}

/// Name of a numeric gRPC status; unknown numbers are reported as `UNKNOWN`.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// Characters the gRPC spec says must be percent-encoded in `grpc-message`:
/// everything outside 0x20..=0x7E, and `%` itself.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

pub fn encode_message(msg: &str) -> String {
    utf8_percent_encode(msg, GRPC_MESSAGE).to_string()
}

pub fn decode_message(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip() {
        let m = "upstream said: 100% ✓ done\n";
        let enc = encode_message(m);
        assert!(enc.is_ascii());
        assert!(!enc.contains('\n'));
        assert_eq!(decode_message(enc.as_bytes()), m);
        assert_eq!(encode_message("plain words"), "plain words");
    }

    #[test]
    fn names() {
        assert_eq!(Code::Unavailable.name(), "UNAVAILABLE");
        assert_eq!(code_name(99), "UNKNOWN");
    }
}

//! HPACK (RFC 7541): header compression for torii's own HTTP/2.
//!
//! Every request and response passes through here several times (request headers in, request
//! headers out, response headers and trailers back), so both directions are written for few
//! instructions and few allocations per field:
//!
//! - [`Decoder`] hands out each field as a [`Field`]: names from the static table are `http`'s
//!   constants or the pseudo-header variants, values from the tables are `Bytes` clones (a static
//!   pointer or a reference count, never a copy), and literal values that are not stored in the
//!   dynamic table are carved out of a shared 1 KiB chunk. Huffman strings are decoded by a
//!   4-bits-at-a-time state machine.
//! - [`Encoder`] finds static entries by a `match` and dynamic ones through a small open-addressing
//!   map keyed by an Fx-style hash, and writes strings raw (no Huffman: CPU matters more than bytes
//!   on the proxy's links). Its indexing policy is one documented function.
//!
//! Errors from the decoder are all connection errors of type COMPRESSION_ERROR for the caller
//! (RFC 9113 §4.3); a field with a malformed name is not one of them: it comes out as
//! [`Name::Invalid`] so that the caller can reset only that stream while the HPACK state stays in
//! sync.

mod decoder;
mod encoder;
pub(crate) mod huffman;
mod table;

pub use decoder::{BlockInfo, DecodeError, Decoder};
pub use encoder::Encoder;

use bytes::Bytes;

/// A header field's name as HPACK carries it: a pseudo-header or a regular header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    /// `:authority`
    Authority,
    /// `:method`
    Method,
    /// `:path`
    Path,
    /// `:scheme`
    Scheme,
    /// `:status`
    Status,
    /// `:protocol` (RFC 8441, extended CONNECT)
    Protocol,
    /// A regular header field, with a valid lowercase name.
    Header(http::HeaderName),
    /// A name that is not a valid lowercase HTTP/2 field name (uppercase letters, bad chars, an unknown
    /// pseudo-header like ":foo"); carried raw so the caller can reject the stream (a stream error,
    /// not a compression error: the HPACK state stays in sync).
    Invalid(Bytes),
}

impl Name {
    /// The name as it goes on the wire (`":path"`, `"content-type"`, ...).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Authority => b":authority",
            Name::Method => b":method",
            Name::Path => b":path",
            Name::Scheme => b":scheme",
            Name::Status => b":status",
            Name::Protocol => b":protocol",
            Name::Header(name) => name.as_str().as_bytes(),
            Name::Invalid(raw) => raw,
        }
    }

    /// Whether this is one of the six pseudo-header fields.
    pub fn is_pseudo(&self) -> bool {
        !matches!(self, Name::Header(_) | Name::Invalid(_))
    }

    /// The pseudo-header variant for a name starting with `:`, if it is one of the six.
    fn pseudo(raw: &[u8]) -> Option<Name> {
        Some(match raw {
            b":authority" => Name::Authority,
            b":method" => Name::Method,
            b":path" => Name::Path,
            b":scheme" => Name::Scheme,
            b":status" => Name::Status,
            b":protocol" => Name::Protocol,
            _ => return None,
        })
    }
}

/// One decoded field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Name,
    pub value: Bytes,
    /// The field came as a never-indexed literal (RFC 7541 §6.2.3). An intermediary must send it
    /// on never-indexed too (§7.1.3): mark the `HeaderValue` built from it sensitive, and
    /// [`Encoder`] does.
    pub never_indexed: bool,
}

/// The size of a field for the dynamic table and the header list (RFC 7541 §4.1).
#[inline]
fn field_size(name_len: usize, value_len: usize) -> usize {
    name_len + value_len + 32
}

/// The HTTP/2 default for SETTINGS_HEADER_TABLE_SIZE (RFC 9113 §6.5.2), and the largest dynamic
/// table the encoder ever uses.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Appends an HPACK integer (RFC 7541 §5.1): `first` carries the representation's flag bits above
/// a `prefix`-bit prefix.
#[inline]
fn write_int(dst: &mut Vec<u8>, first: u8, prefix: u32, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        dst.push(first | value as u8);
        return;
    }
    dst.push(first | max as u8);
    value -= max;
    while value >= 128 {
        dst.push(value as u8 | 0x80);
        value >>= 7;
    }
    dst.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_of_rfc_7541_c_1() {
        let mut out = Vec::new();
        write_int(&mut out, 0xe0, 5, 10);
        assert_eq!(out, [0xea]);
        out.clear();
        write_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        out.clear();
        write_int(&mut out, 0, 8, 42);
        assert_eq!(out, [42]);
        out.clear();
        write_int(&mut out, 0x40, 6, 63);
        assert_eq!(out, [0x7f, 0x00]);
    }

    #[test]
    fn names() {
        assert_eq!(Name::pseudo(b":path"), Some(Name::Path));
        assert_eq!(Name::pseudo(b":foo"), None);
        assert_eq!(Name::Protocol.as_bytes(), b":protocol");
        assert!(Name::Status.is_pseudo());
        assert!(!Name::Header(http::header::ACCEPT).is_pseudo());
        assert_eq!(Name::Header(http::header::ACCEPT).as_bytes(), b"accept");
    }
}

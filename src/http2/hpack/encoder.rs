//! The HPACK encoder (RFC 7541 §4, §6).
//!
//! Strings are always sent raw, never Huffman-coded: Huffman saves about a fifth of the bytes of a
//! literal but costs a table lookup and bit shuffling per byte, and on a proxy's links CPU matters
//! more than those bytes (most fields of a steady connection are 1–2-byte indexes anyway).
//!
//! What a field costs: a `match` for the static table; for a field that may be indexed, one
//! Fx-style hash over name and value and a probe of a small map (a hit compares the entry's bytes
//! and writes 1–2 bytes; no allocation). Inserting clones the caller's `HeaderName` and
//! `HeaderValue` (reference counts), or copies a pseudo-header's value.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::table::{
    eq_bytes, finish, hash_bytes, idx, static_exact, static_name_index, static_pseudo_index,
    EncName, EncTable, EncValue, NameRef,
};
use super::{field_size, write_int, Name, DEFAULT_TABLE_SIZE};

/// One connection's HPACK encoding state.
pub struct Encoder {
    table: EncTable,
    /// The table size the peer's decoder currently assumes: 4096 until we signal otherwise.
    signalled: usize,
    /// The smallest maximum set since the last block began, if the maximum was set at all.
    pending_min: Option<usize>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

/// How a field that is not an exact static-table match goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// An index if the dynamic table has the field, else a literal with incremental indexing.
    Index,
    /// A literal without indexing (§6.2.2); `by_name`: whether the dynamic table may have the
    /// name (`content-length`, `date` and long `:path`s have static names).
    NoIndex { by_name: bool },
    /// A literal without indexing, its name by dynamic index; a literal with incremental indexing
    /// when the dynamic table does not have the name yet.
    NameOnly,
    /// A literal never indexed (§6.2.3).
    Never,
}

/// The encoder's indexing policy: what it does with a field that is not an exact static-table
/// match (those are always sent as an index, sensitive or not: a static index reveals nothing and
/// adds nothing to any table, so RFC 7541 §7.1.3 is kept):
///
/// 1. **Never indexed**: sensitive fields — `value.is_sensitive()`, and the names `authorization`,
///    `proxy-authorization`, `cookie`, `set-cookie`. Credentials kept out of the table cannot be
///    guessed through it (RFC 7541 §7.1), and the flag tells the next hop to do the same.
/// 2. **Name only**: fields whose value changes on every message but whose name is not in the
///    static table — `x-request-id`, `grpc-timeout`, `traceparent`, `x-b3-traceid`,
///    `x-b3-spanid`, `grpc-message`. Their values would only churn the table, evicting the
///    entries that do repeat, so they go as literals without indexing; but their name goes by
///    index: the first such field is sent with incremental indexing, which puts the name in the
///    table for the ones after it. A literal name costs the next hop's decoder a parse and an
///    allocation on every message (callgrind, a tonic backend: about 2,400 instructions per
///    field); an indexed one, a reference count.
/// 3. **Without indexing**: the other fields that change on every message — `content-length`,
///    `date` (names by static index); any value longer than 128 bytes; a `:path` longer than 64
///    bytes; and any field that would not fit in the table at all (after
///    `set_max_table_size(0)`, all).
/// 4. **Indexed**: everything else. The dynamic table is searched for the exact field first (an
///    index, 1–2 bytes); if absent, a literal with incremental indexing, its name by index when
///    the static or dynamic table has the name. `x-forwarded-for` is one of these: its value is
///    the same for every request of a client (one entry per client address), and a sidecar's
///    upstream connections carry a single client.
///
/// Fields of the third kind are not looked up in the dynamic table by value: the policy never puts
/// them there (their plan depends only on their name, length and sensitivity).
fn plan(
    name: &[u8],
    static_name: Option<usize>,
    value_len: usize,
    sensitive: bool,
    table_max: usize,
) -> Plan {
    if sensitive {
        return Plan::Never;
    }
    match static_name {
        Some(idx::AUTHORIZATION | idx::PROXY_AUTHORIZATION | idx::COOKIE | idx::SET_COOKIE) => {
            return Plan::Never
        }
        Some(idx::CONTENT_LENGTH | idx::DATE) => return Plan::NoIndex { by_name: false },
        Some(idx::PATH) if value_len > 64 => return Plan::NoIndex { by_name: false },
        None if churns(name) => {
            return if value_len <= 128 && field_size(name.len(), value_len) <= table_max {
                Plan::NameOnly
            } else {
                Plan::NoIndex { by_name: true }
            };
        }
        _ => {}
    }
    if value_len > 128 || field_size(name.len(), value_len) > table_max {
        return Plan::NoIndex {
            by_name: static_name.is_none(),
        };
    }
    Plan::Index
}

/// Names not in the static table whose values change on every message (not per client:
/// `x-forwarded-for` is indexed).
#[inline]
fn churns(name: &[u8]) -> bool {
    match name.len() {
        11 => eq_bytes(name, b"traceparent") || eq_bytes(name, b"x-b3-spanid"),
        12 => {
            eq_bytes(name, b"x-request-id")
                || eq_bytes(name, b"grpc-timeout")
                || eq_bytes(name, b"x-b3-traceid")
                || eq_bytes(name, b"grpc-message")
        }
        _ => false,
    }
}

impl Encoder {
    /// An encoder with a 4096-byte dynamic table (the HTTP/2 default).
    pub fn new() -> Self {
        Encoder {
            table: EncTable::new(DEFAULT_TABLE_SIZE),
            signalled: DEFAULT_TABLE_SIZE,
            pending_min: None,
        }
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE changed: the table shrinks to at most `n`, and the next
    /// block starts with a dynamic table size update (RFC 7541 §4.2 / §6.3), as needed. Call it
    /// between blocks. The table never grows past 4096 bytes, whatever the peer allows.
    pub fn set_max_table_size(&mut self, n: usize) {
        let size = n.min(DEFAULT_TABLE_SIZE);
        self.table.set_max_size(size);
        self.pending_min = Some(self.pending_min.map_or(size, |min| min.min(size)));
    }

    /// Call once at the start of each header block (emits a pending size update).
    pub fn begin_block(&mut self, dst: &mut Vec<u8>) {
        let Some(min) = self.pending_min.take() else {
            return;
        };
        let size = self.table.max_size();
        // If the table went below both the size the peer assumes and the final size, the peer
        // must evict as we did: signal the smallest first, then the final size (§4.2).
        let dipped = min < size && min < self.signalled;
        if dipped {
            write_int(dst, 0x20, 5, min);
        }
        if dipped || size != self.signalled {
            write_int(dst, 0x20, 5, size);
        }
        self.signalled = size;
    }

    /// Encodes a pseudo-header field. Meant for the pseudo variants; a `Name::Header` is encoded as
    /// a regular field, and a `Name::Invalid` as a literal without indexing.
    pub fn encode_pseudo(&mut self, name: Name, value: &[u8], dst: &mut Vec<u8>) {
        let name_str: &'static str = match name {
            Name::Authority => ":authority",
            Name::Method => ":method",
            Name::Path => ":path",
            Name::Scheme => ":scheme",
            Name::Status => ":status",
            Name::Protocol => ":protocol",
            Name::Header(header) => {
                let n = header.as_str().as_bytes();
                self.encode(
                    NameRef::Header(&header),
                    n,
                    static_name_index(n),
                    value,
                    false,
                    dst,
                    || EncName::Header(header.clone()),
                    || EncValue::Bytes(Bytes::copy_from_slice(value)),
                );
                return;
            }
            Name::Invalid(raw) => {
                write_literal(dst, 0x00, 4, None, &raw, value);
                return;
            }
        };
        let static_name = static_pseudo_index(&name);
        self.encode(
            NameRef::Pseudo(name_str),
            name_str.as_bytes(),
            static_name,
            value,
            false,
            dst,
            || EncName::Pseudo(name_str),
            || EncValue::Bytes(Bytes::copy_from_slice(value)),
        );
    }

    /// Encodes a regular header field.
    pub fn encode_header(&mut self, name: &HeaderName, value: &HeaderValue, dst: &mut Vec<u8>) {
        let n = name.as_str().as_bytes();
        self.encode(
            NameRef::Header(name),
            n,
            static_name_index(n),
            value.as_bytes(),
            value.is_sensitive(),
            dst,
            || EncName::Header(name.clone()),
            || EncValue::Header(value.clone()),
        );
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn encode(
        &mut self,
        key: NameRef<'_>,
        name: &[u8],
        static_name: Option<usize>,
        value: &[u8],
        sensitive: bool,
        dst: &mut Vec<u8>,
        entry_name: impl FnOnce() -> EncName,
        entry_value: impl FnOnce() -> EncValue,
    ) {
        if let Some(exact) = static_name.and_then(|i| static_exact(i, value)) {
            write_int(dst, 0x80, 7, exact);
            return;
        }
        let plan = plan(
            name,
            static_name,
            value.len(),
            sensitive,
            self.table.max_size(),
        );
        match plan {
            Plan::Index => {
                let name_state = hash_bytes(0, name);
                let name_hash = finish(name_state);
                let field_hash = finish(hash_bytes(name_state, value));
                if let Some(index) = self.table.find_field(key, value, field_hash) {
                    write_int(dst, 0x80, 7, index);
                    return;
                }
                let name_index = static_name.or_else(|| self.table.find_name(key, name_hash));
                write_literal(dst, 0x40, 6, name_index, name, value);
                self.table
                    .insert(entry_name(), entry_value(), name_hash, field_hash);
            }
            Plan::NameOnly => {
                let name_state = hash_bytes(0, name);
                let name_hash = finish(name_state);
                if let Some(index) = self.table.find_name(key, name_hash) {
                    write_literal(dst, 0x00, 4, Some(index), name, value);
                    return;
                }
                write_literal(dst, 0x40, 6, None, name, value);
                let field_hash = finish(hash_bytes(name_state, value));
                self.table
                    .insert(entry_name(), entry_value(), name_hash, field_hash);
            }
            Plan::NoIndex { by_name } => {
                let name_index = match static_name {
                    None if by_name => self.table.find_name(key, finish(hash_bytes(0, name))),
                    _ => static_name,
                };
                write_literal(dst, 0x00, 4, name_index, name, value);
            }
            Plan::Never => {
                let name_index =
                    static_name.or_else(|| self.table.find_name(key, finish(hash_bytes(0, name))));
                write_literal(dst, 0x10, 4, name_index, name, value);
            }
        }
    }
}

/// Appends a literal field: `first`'s flag bits with the name's index in a `prefix`-bit prefix
/// (or 0 and the name itself), then the value. Strings are raw (see the module's docs).
#[inline]
fn write_literal(
    dst: &mut Vec<u8>,
    first: u8,
    prefix: u32,
    name_index: Option<usize>,
    name: &[u8],
    value: &[u8],
) {
    dst.reserve(name.len() + value.len() + 12);
    match name_index {
        Some(index) => write_int(dst, first, prefix, index),
        None => {
            dst.push(first);
            write_int(dst, 0x00, 7, name.len());
            dst.extend_from_slice(name);
        }
    }
    write_int(dst, 0x00, 7, value.len());
    dst.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::hpack::{Decoder, Field};

    /// A field list as the tests write it: pseudo-headers first, by name.
    fn fields(list: &[(&str, &str)]) -> Vec<Field> {
        list.iter()
            .map(|&(n, v)| Field {
                name: Name::pseudo(n.as_bytes())
                    .unwrap_or_else(|| Name::Header(HeaderName::from_bytes(n.as_bytes()).unwrap())),
                value: Bytes::copy_from_slice(v.as_bytes()),
                never_indexed: false,
            })
            .collect()
    }

    fn encode_block(enc: &mut Encoder, list: &[Field]) -> Vec<u8> {
        let mut out = Vec::new();
        enc.begin_block(&mut out);
        for f in list {
            match &f.name {
                Name::Header(n) => {
                    // What a proxy does with a decoded field.
                    let mut value = HeaderValue::from_maybe_shared(f.value.clone()).unwrap();
                    value.set_sensitive(f.never_indexed);
                    enc.encode_header(n, &value, &mut out)
                }
                other => enc.encode_pseudo(other.clone(), &f.value, &mut out),
            }
        }
        out
    }

    /// Encodes, decodes, checks the fields and that both tables agree; returns the block.
    fn round_trip(enc: &mut Encoder, dec: &mut Decoder, list: &[Field]) -> Vec<u8> {
        let block = encode_block(enc, list);
        let mut got = Vec::new();
        let info = dec.decode(&block, usize::MAX, |f| got.push(f)).unwrap();
        assert!(!info.over_limit);
        assert_eq!(got, list);
        assert_eq!(enc.table.len(), dec.table_len());
        assert_eq!(enc.table.size(), dec.table_size());
        block
    }

    fn grpc_request() -> Vec<Field> {
        fields(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/torii.echo.v1.Echo/Say"),
            (":authority", "backend.internal:50051"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", "grpc-rust/0.14"),
            ("grpc-accept-encoding", "identity, deflate, gzip"),
            ("grpc-timeout", "4999m"),
            ("x-request-id", "3f2b8c1e-9d4a-4f6b-8e2a-7c5d1b0a9e3f"),
        ])
    }

    #[test]
    fn grpc_request_response_and_trailers_repeated() {
        let (mut req_enc, mut req_dec) = (Encoder::new(), Decoder::new(4096));
        let (mut resp_enc, mut resp_dec) = (Encoder::new(), Decoder::new(4096));
        let response = fields(&[
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-accept-encoding", "identity, deflate, gzip"),
            ("date", "Sat, 21 Nov 2026 09:33:24 GMT"),
        ]);
        let trailers = fields(&[("grpc-status", "0"), ("grpc-message", "")]);
        let mut sizes = Vec::new();
        for round in 0..3 {
            let mut request = grpc_request();
            // A fresh request id every time, as a client would send.
            request[9].value = Bytes::from(format!("3f2b8c1e-9d4a-4f6b-8e2a-7c5d1b0a9e3{round}"));
            let req = round_trip(&mut req_enc, &mut req_dec, &request);
            let resp = round_trip(&mut resp_enc, &mut resp_dec, &response);
            let trl = round_trip(&mut resp_enc, &mut resp_dec, &trailers);
            sizes.push((req.len(), resp.len(), trl.len()));
        }
        let (first, second, third) = (sizes[0], sizes[1], sizes[2]);
        assert_eq!(second, third);
        // The second request: 8 one-byte indexes, plus the two values that change every time
        // (literals whose names go by index: 2 bytes).
        let literals = (2 + 1 + 5) + (2 + 1 + 36);
        assert_eq!(second.0, 8 + literals);
        assert!(second.0 * 2 < first.0, "{sizes:?}");
        // The response: 3 indexes and the date literal (name by static index 33: 2 bytes).
        assert_eq!(second.1, 3 + (2 + 1 + 29));
        assert!(second.1 * 2 < first.1, "{sizes:?}");
        // Trailers: grpc-status by index, grpc-message literal (its name by index).
        assert_eq!(second.2, 1 + (2 + 1));
    }

    #[test]
    fn representations_chosen() {
        let mut enc = Encoder::new();
        let mut out = Vec::new();
        enc.encode_pseudo(Name::Method, b"POST", &mut out);
        enc.encode_pseudo(Name::Status, b"404", &mut out);
        enc.encode_header(
            &http::header::ACCEPT_ENCODING,
            &HeaderValue::from_static("gzip, deflate"),
            &mut out,
        );
        assert_eq!(out, [0x83, 0x8d, 0x90]);

        // Incremental indexing with the name by static index, then an index.
        out.clear();
        let grpc = HeaderValue::from_static("application/grpc");
        enc.encode_header(&http::header::CONTENT_TYPE, &grpc, &mut out);
        assert_eq!(out[..2], [0x40 | 31, 16]);
        out.clear();
        enc.encode_header(&http::header::CONTENT_TYPE, &grpc, &mut out);
        assert_eq!(out, [0x80 | 62]);

        // A new value for a name only the dynamic table has: the name by its dynamic index.
        let custom = HeaderName::from_static("x-custom");
        out.clear();
        enc.encode_header(&custom, &HeaderValue::from_static("a"), &mut out);
        assert_eq!(out[..3], [0x40, 8, b'x']);
        out.clear();
        enc.encode_header(&custom, &HeaderValue::from_static("b"), &mut out);
        assert_eq!(out, [0x40 | 62, 1, b'b']);

        // Churning names: without indexing, name by static index or literal.
        out.clear();
        enc.encode_header(
            &http::header::CONTENT_LENGTH,
            &HeaderValue::from_static("12"),
            &mut out,
        );
        assert_eq!(out, [0x0f, 28 - 15, 2, b'1', b'2']);
        out.clear();
        // A churning name without a static entry: the first time with incremental indexing (the
        // name goes in the table), then without indexing, the name by its dynamic index.
        let timeout = HeaderName::from_static("grpc-timeout");
        enc.encode_header(&timeout, &HeaderValue::from_static("1S"), &mut out);
        assert_eq!(out[..2], [0x40, 12]);
        out.clear();
        enc.encode_header(&timeout, &HeaderValue::from_static("2S"), &mut out);
        assert_eq!(out, [0x0f, 62 - 15, 2, b'2', b'S']);
        // Long values and paths.
        out.clear();
        enc.encode_pseudo(Name::Path, &[b'/'; 65], &mut out);
        assert_eq!(out[..3], [0x04, 65, b'/']);
        out.clear();
        enc.encode_pseudo(Name::Path, &[b'/'; 64], &mut out);
        assert_eq!(out[..3], [0x44, 64, b'/']);
        out.clear();
        let long = HeaderValue::from_bytes(&[b'v'; 129]).unwrap();
        enc.encode_header(&custom, &long, &mut out);
        // x-custom is now 64.
        assert_eq!(out[..2], [0x0f, 62 - 15 + 2]);
        // :protocol has no static entry: literal name.
        out.clear();
        enc.encode_pseudo(Name::Protocol, b"websocket", &mut out);
        assert_eq!(out[..2], [0x40, 9]);
    }

    #[test]
    fn policy() {
        let p = |name: &str, len: usize, sensitive: bool| {
            plan(
                name.as_bytes(),
                static_name_index(name.as_bytes()),
                len,
                sensitive,
                4096,
            )
        };
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
        ] {
            assert_eq!(p(name, 10, false), Plan::Never, "{name}");
        }
        assert_eq!(p("x-api-key", 10, true), Plan::Never);
        for name in [
            "x-request-id",
            "grpc-timeout",
            "traceparent",
            "x-b3-traceid",
            "x-b3-spanid",
            "grpc-message",
        ] {
            assert_eq!(p(name, 36, false), Plan::NameOnly, "{name}");
            // Too long to be worth an entry, or no room for one: the name may still be there.
            assert_eq!(
                p(name, 129, false),
                Plan::NoIndex { by_name: true },
                "{name}"
            );
            assert_eq!(
                plan(name.as_bytes(), None, 36, false, 40),
                Plan::NoIndex { by_name: true },
                "{name}"
            );
        }
        for name in ["content-length", "date"] {
            assert_eq!(
                p(name, 10, false),
                Plan::NoIndex { by_name: false },
                "{name}"
            );
        }
        // The same for every request of a client.
        assert_eq!(p("x-forwarded-for", 9, false), Plan::Index);
        assert_eq!(p("content-type", 16, false), Plan::Index);
        assert_eq!(p("x-custom", 128, false), Plan::Index);
        assert_eq!(p("x-custom", 129, false), Plan::NoIndex { by_name: true });
        assert_eq!(p("accept", 129, false), Plan::NoIndex { by_name: false });
        assert_eq!(plan(b":path", Some(4), 64, false, 4096), Plan::Index);
        assert_eq!(
            plan(b":path", Some(4), 65, false, 4096),
            Plan::NoIndex { by_name: false }
        );
        assert_eq!(
            plan(b"x-custom", None, 10, false, 49),
            Plan::NoIndex { by_name: true }
        );
        assert_eq!(plan(b"x-custom", None, 9, false, 49), Plan::Index);
    }

    #[test]
    fn sensitive_values_are_never_indexed() {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new(4096);
        let mut key = HeaderValue::from_static("s3cr3t");
        key.set_sensitive(true);
        let name = HeaderName::from_static("x-api-key");
        let mut block = Vec::new();
        enc.begin_block(&mut block);
        enc.encode_header(&name, &key, &mut block);
        enc.encode_header(
            &http::header::AUTHORIZATION,
            &HeaderValue::from_static("Bearer abc"),
            &mut block,
        );
        enc.encode_header(
            &http::header::COOKIE,
            &HeaderValue::from_static("a=b"),
            &mut block,
        );
        let mut expected = vec![0x10, 9];
        expected.extend_from_slice(b"x-api-key");
        expected.push(6);
        expected.extend_from_slice(b"s3cr3t");
        expected.extend_from_slice(&[0x1f, 23 - 15, 10]);
        expected.extend_from_slice(b"Bearer abc");
        expected.extend_from_slice(&[0x1f, 32 - 15, 3]);
        expected.extend_from_slice(b"a=b");
        assert_eq!(block, expected);
        let mut got = Vec::new();
        dec.decode(&block, usize::MAX, |f| got.push(f)).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].value, "s3cr3t");
        assert_eq!(dec.table_len(), 0);
        assert_eq!(enc.table.len(), 0);
        // The same value again: still literal, never indexed.
        let mut again = Vec::new();
        enc.encode_header(&name, &key, &mut again);
        assert_eq!(again[0], 0x10);
    }

    #[test]
    fn never_indexed_fields_stay_never_indexed_through_a_proxy() {
        // RFC 7541 C.2.3 ("password: secret", never indexed) from a client, passed on upstream.
        let mut from_client = Decoder::new(4096);
        let mut fields = Vec::new();
        let mut block = vec![0x10, 0x08];
        block.extend_from_slice(b"password");
        block.push(0x06);
        block.extend_from_slice(b"secret");
        from_client
            .decode(&block, usize::MAX, |f| fields.push(f))
            .unwrap();
        assert!(fields[0].never_indexed);
        let mut upstream = Encoder::new();
        let mut upstream_dec = Decoder::new(4096);
        let out = round_trip(&mut upstream, &mut upstream_dec, &fields);
        assert_eq!(out, block);
        assert_eq!(upstream.table.len(), 0);
    }

    #[test]
    fn size_updates() {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new(4096);
        let request = grpc_request();
        round_trip(&mut enc, &mut dec, &request);
        assert!(dec.table_len() > 0);

        // No change, no update.
        enc.set_max_table_size(4096);
        enc.set_max_table_size(65536);
        let block = round_trip(&mut enc, &mut dec, &request);
        assert_ne!(block[0] & 0xe0, 0x20);

        enc.set_max_table_size(0);
        assert_eq!(enc.table.len(), 0);
        let block = round_trip(&mut enc, &mut dec, &request);
        assert_eq!(block[0], 0x20);
        assert_eq!(dec.table_len(), 0);
        // With no table, nothing is inserted and nothing goes wrong.
        let block = round_trip(&mut enc, &mut dec, &request);
        assert_ne!(block[0] & 0xe0, 0x20);
        assert_eq!(dec.table_len(), 0);

        enc.set_max_table_size(256);
        let block = round_trip(&mut enc, &mut dec, &request);
        assert_eq!(block[..3], [0x3f, 0xe1, 0x01]);
        assert!(dec.table_len() > 0);
        assert!(dec.table_size() <= 256);

        // Down and up again between two blocks: both are signalled, smallest first.
        enc.set_max_table_size(100);
        enc.set_max_table_size(4096);
        let block = round_trip(&mut enc, &mut dec, &request);
        assert_eq!(block[..2], [0x3f, 100 - 31]);
        assert_eq!(block[2..5], [0x3f, 0xe1, 0x1f]);

        // Down twice: only the final size.
        enc.set_max_table_size(1000);
        enc.set_max_table_size(200);
        let block = round_trip(&mut enc, &mut dec, &request);
        assert_eq!(block[..3], [0x3f, 0xa9, 0x01]); // 200 = 31 + 41 + 128
        assert_ne!(block[3] & 0xe0, 0x20);
        assert!(dec.table_size() <= 200);
    }

    #[test]
    fn eviction_with_many_distinct_fields() {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new(4096);
        let names: Vec<String> = (0..40).map(|i| format!("x-field-{i}")).collect();
        let mut evicted_any = false;
        for block in 0..100 {
            let list: Vec<Field> = (0..12)
                .map(|i| {
                    let n = (block * 7 + i * 3) % names.len();
                    Field {
                        name: Name::Header(HeaderName::from_bytes(names[n].as_bytes()).unwrap()),
                        // Some values repeat across blocks, most do not.
                        value: Bytes::from(format!("value-{}-{}", n, (block + i) % 9)),
                        never_indexed: false,
                    }
                })
                .collect();
            let before = dec.table_len();
            round_trip(&mut enc, &mut dec, &list);
            evicted_any |= dec.table_len() <= before && block > 0;
            assert!(dec.table_size() <= 4096);
        }
        assert!(evicted_any);
        assert!(dec.table_len() > 50);
    }

    #[test]
    fn random_fields_and_table_sizes_round_trip() {
        // A deterministic xorshift: many blocks of fields drawn from a small vocabulary (so
        // that entries repeat, get evicted and come back), values of every length class, and
        // table-size changes between blocks; both tables must agree after every block.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let names = [
            "content-type",
            "te",
            "user-agent",
            "x-request-id",
            "x-custom-a",
            "x-custom-b",
            "authorization",
            "grpc-timeout",
            "accept-encoding",
            "cache-control",
        ];
        let (mut enc, mut dec) = (Encoder::new(), Decoder::new(4096));
        // The same blocks through a decoder with a small header-list limit: it emits a prefix
        // of the fields and keeps the same table.
        let mut limited = Decoder::new(4096);
        for _ in 0..400 {
            if next(10) == 0 {
                enc.set_max_table_size([0, 64, 256, 1000, 4096, 8192][next(6) as usize] as usize);
            }
            let mut list = Vec::new();
            for _ in 0..next(12) {
                let len = [0, 1, 5, 20, 64, 65, 128, 129, 300][next(9) as usize] as usize;
                let value: String = (0..len)
                    .map(|i| (b'a' + ((i as u64 + next(3)) % 26) as u8) as char)
                    .collect();
                let field = match next(14) {
                    0 => Field {
                        name: Name::Path,
                        value: Bytes::from(format!("/{value}")),
                        never_indexed: false,
                    },
                    1 => Field {
                        name: Name::Status,
                        value: Bytes::from_static([b"200", b"404", b"503"][next(3) as usize]),
                        never_indexed: false,
                    },
                    2 => Field {
                        name: Name::Authority,
                        value: Bytes::from(value),
                        never_indexed: false,
                    },
                    _ => Field {
                        name: Name::Header(HeaderName::from_static(
                            names[next(names.len() as u64) as usize],
                        )),
                        value: Bytes::from(value),
                        never_indexed: next(8) == 0,
                    },
                };
                list.push(field);
            }
            let block = encode_block(&mut enc, &list);
            let mut got = Vec::new();
            dec.decode(&block, usize::MAX, |f| got.push(f)).unwrap();
            let mut prefix = Vec::new();
            let limit = [0, 100, 400][next(3) as usize] as usize;
            let info = limited.decode(&block, limit, |f| prefix.push(f)).unwrap();
            assert_eq!(prefix[..], got[..prefix.len()]);
            assert_eq!(info.over_limit, prefix.len() < got.len());
            assert_eq!(limited.table_size(), dec.table_size());
            assert_eq!(limited.table_len(), dec.table_len());
            // Never-indexed comes back as sent, except for exact static matches (an index), and
            // also for the names the policy never indexes.
            for (g, f) in got.iter_mut().zip(&list) {
                if g.never_indexed && !f.never_indexed {
                    assert_eq!(g.name.as_bytes(), b"authorization");
                    g.never_indexed = false;
                }
                if f.never_indexed && !g.never_indexed {
                    let name = static_name_index(f.name.as_bytes()).unwrap();
                    assert!(static_exact(name, &f.value).is_some(), "{f:?}");
                    g.never_indexed = true;
                }
            }
            assert_eq!(got, list);
            assert_eq!(enc.table.len(), dec.table_len());
            assert_eq!(enc.table.size(), dec.table_size());
            assert!(dec.table_size() <= enc.table.max_size());
        }
    }

    #[test]
    fn non_pseudo_names_through_encode_pseudo() {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new(4096);
        let mut block = Vec::new();
        enc.encode_pseudo(Name::Header(http::header::TE), b"trailers", &mut block);
        enc.encode_pseudo(Name::Invalid(Bytes::from_static(b"Bad")), b"x", &mut block);
        let mut got = Vec::new();
        dec.decode(&block, usize::MAX, |f| got.push(f)).unwrap();
        assert_eq!(got[0].name, Name::Header(http::header::TE));
        assert_eq!(got[1].name, Name::Invalid(Bytes::from_static(b"Bad")));
        assert_eq!(dec.table_len(), 1);
    }
}

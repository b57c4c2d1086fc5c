//! A batch of requests' spans written straight into OTLP's wire form
//! (`ExportTraceServiceRequest`), with prost's encoding primitives and
//! the field numbers of opentelemetry-proto's generated types. Building
//! those types first cost two allocations per attribute and a length pass
//! per nesting level: about 8 µs per sampled gRPC call, four times the
//! request's own tracing work. The unit tests decode what this writes
//! with the generated types.

use bytes::BufMut;
use prost::encoding::{encoded_len_varint, WireType};

use super::{Attempt, Finished};

/// gRPC statuses that make a SERVER span an error (OpenTelemetry's gRPC
/// conventions): UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS. A CLIENT span is an error on any non-OK status.
const SERVER_ERRORS: [i32; 6] = [2, 4, 12, 13, 14, 15];

const KIND_SERVER: u64 = 2;
const KIND_CLIENT: u64 = 3;
const STATUS_ERROR: u64 = 2;
const SPAN_ATTRIBUTES: u32 = 9;

/// An encoded `ExportTraceServiceRequest`, sent as it is: its framing
/// (`head`) and the spans it frames, kept apart so that the spans are
/// not copied once more to put the framing before them.
#[derive(Debug, Default)]
pub struct Encoded {
    pub head: Vec<u8>,
    pub spans: Vec<u8>,
}

#[cfg(test)]
impl Encoded {
    /// The message's bytes in one piece.
    pub fn to_vec(&self) -> Vec<u8> {
        [self.head.as_slice(), &self.spans].concat()
    }
}

/// The request for `service_name`'s spans of `requests`.
pub fn request(service_name: &str, requests: &[Finished]) -> Encoded {
    // A gRPC call with one attempt takes about 720 bytes.
    let mut spans = Vec::with_capacity(requests.len() * 800);
    let mut scratch = Vec::with_capacity(1024);
    for f in requests {
        write_request_spans(f, &mut spans, &mut scratch);
    }
    // InstrumentationScope { name = 1, version = 2 }
    let mut scope = Vec::with_capacity(32);
    string(&mut scope, 1, "torii");
    string(&mut scope, 2, env!("CARGO_PKG_VERSION"));
    // ScopeSpans { scope = 1, spans = 2 (already framed) }
    let scope_spans_len = field_len(scope.len()) + spans.len();
    // Resource { attributes = 1 }
    let mut resource = Vec::with_capacity(64);
    kv_str(&mut resource, 1, "service.name", service_name);
    // ResourceSpans { resource = 1, scope_spans = 2 }
    let resource_spans_len = field_len(resource.len()) + field_len(scope_spans_len);
    let mut head = Vec::with_capacity(32 + resource.len() + scope.len());
    // ExportTraceServiceRequest { resource_spans = 1 }
    frame(&mut head, 1, resource_spans_len);
    message(&mut head, 1, &resource);
    frame(&mut head, 2, scope_spans_len);
    message(&mut head, 1, &scope);
    Encoded { head, spans }
}

/// One request's spans, each framed as ScopeSpans' field 2.
fn write_request_spans(f: &Finished, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    let grpc = f.finish.grpc.as_ref();
    let method = f.method.as_str();
    let route = f.finish.route.as_deref();
    let mut name = String::with_capacity(64);
    match (grpc, route) {
        (Some(g), _) => {
            name.push_str(g.service());
            name.push('/');
            name.push_str(g.method());
        }
        (None, Some(route)) => {
            name.push_str(method);
            name.push(' ');
            name.push_str(route);
        }
        (None, None) => name.push_str(method),
    }
    let tracestate = f.tracestate.as_deref().unwrap_or_default();
    // What both kinds of span say.
    let common = |s: &mut Vec<u8>| {
        if let Some(g) = grpc {
            kv_str(s, SPAN_ATTRIBUTES, "rpc.system", "grpc");
            kv_str(s, SPAN_ATTRIBUTES, "rpc.service", g.service());
            kv_str(s, SPAN_ATTRIBUTES, "rpc.method", g.method());
        }
        kv_str(s, SPAN_ATTRIBUTES, "http.request.method", method);
        if let Some(r) = route {
            kv_str(s, SPAN_ATTRIBUTES, "torii.route", r);
        }
        if let Some(c) = &f.finish.cluster {
            kv_str(s, SPAN_ATTRIBUTES, "torii.cluster", c);
        }
    };
    for a in &f.attempts {
        scratch.clear();
        head(scratch, f, &a.span_id, Some(&f.span_id), tracestate, &name);
        encode_key(6, WireType::Varint, scratch);
        encode_varint(KIND_CLIENT, scratch);
        times(scratch, a.start, a.end);
        common(scratch);
        client_attributes(scratch, a);
        if let Some(message) = client_failure(a) {
            status_error(scratch, &message);
        }
        // Sampled; its parent (torii's SERVER span) is local.
        fixed32(scratch, 16, 0x101);
        message(out, 2, scratch);
    }
    let fin = &f.finish;
    scratch.clear();
    head(scratch, f, &f.span_id, f.parent.as_ref(), tracestate, &name);
    encode_key(6, WireType::Varint, scratch);
    encode_varint(KIND_SERVER, scratch);
    times(scratch, f.start, f.end);
    common(scratch);
    kv_str(scratch, SPAN_ATTRIBUTES, "torii.listener", &fin.listener);
    kv_int(
        scratch,
        SPAN_ATTRIBUTES,
        "http.response.status_code",
        fin.http_status.into(),
    );
    if let Some(s) = fin.grpc_status {
        kv_int(scratch, SPAN_ATTRIBUTES, "rpc.grpc.status_code", s.into());
    }
    if let Some(e) = fin.error {
        kv_str(scratch, SPAN_ATTRIBUTES, "torii.error", e.as_str());
    }
    let failed = match (fin.error, fin.grpc_status) {
        (Some(e), _) => Some(e.as_str().to_string()),
        (None, Some(s)) => SERVER_ERRORS
            .contains(&s)
            .then(|| crate::grpc::status::code_name(s).to_string()),
        _ => (fin.http_status >= 500).then(|| format!("HTTP {}", fin.http_status)),
    };
    if let Some(message) = failed {
        status_error(scratch, &message);
    }
    // Sampled; whether the parent is remote is known (bit 8), and it is
    // when there is one (bit 9).
    fixed32(scratch, 16, 0x101 | u32::from(f.parent.is_some()) << 9);
    message(out, 2, scratch);
}

/// Span fields 1 to 5: ids, trace state, parent, name.
fn head(
    s: &mut Vec<u8>,
    f: &Finished,
    span_id: &[u8; 8],
    parent: Option<&[u8; 8]>,
    tracestate: &str,
    name: &str,
) {
    message(s, 1, &f.trace_id);
    message(s, 2, span_id);
    if !tracestate.is_empty() {
        string(s, 3, tracestate);
    }
    if let Some(p) = parent {
        message(s, 4, p);
    }
    string(s, 5, name);
}

fn times(s: &mut Vec<u8>, start: u64, end: u64) {
    encode_key(7, WireType::SixtyFourBit, s);
    s.put_u64_le(start);
    encode_key(8, WireType::SixtyFourBit, s);
    s.put_u64_le(end);
}

fn client_attributes(s: &mut Vec<u8>, a: &Attempt) {
    let how = &a.how;
    kv_int(s, SPAN_ATTRIBUTES, "torii.retry", a.retry.into());
    if let Some(ep) = how.endpoint {
        let mut ip = String::with_capacity(40);
        ip_text(&mut ip, ep.ip());
        kv_str(s, SPAN_ATTRIBUTES, "server.address", &ip);
        kv_int(s, SPAN_ATTRIBUTES, "server.port", ep.port().into());
    }
    if let Some(st) = how.http_status {
        kv_int(s, SPAN_ATTRIBUTES, "http.response.status_code", st.into());
    }
    if let Some(st) = how.grpc_status {
        kv_int(s, SPAN_ATTRIBUTES, "rpc.grpc.status_code", st.into());
    }
    if let Some(e) = how.error {
        kv_str(s, SPAN_ATTRIBUTES, "torii.error", e.as_str());
    }
    if let Some(why) = how.retried {
        kv_str(s, SPAN_ATTRIBUTES, "torii.retried", why);
    }
}

/// An IPv4 address written digit by digit (`Display` goes through the
/// formatting machinery, a tenth of a span's cost); IPv6 through `Display`.
fn ip_text(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

fn client_failure(a: &Attempt) -> Option<String> {
    let how = &a.how;
    if let Some(why) = how.retried {
        Some(format!("retried: {why}"))
    } else if let Some(e) = how.error {
        Some(e.as_str().to_string())
    } else if let Some(s) = how.grpc_status.filter(|s| *s != 0) {
        Some(crate::grpc::status::code_name(s).to_string())
    } else {
        how.http_status
            .filter(|s| *s >= 400)
            .map(|s| format!("HTTP {s}"))
    }
}

/// Status { message = 2, code = 3 } as Span field 15.
fn status_error(s: &mut Vec<u8>, message: &str) {
    let len = field_len(message.len()) + 1 + encoded_len_varint(STATUS_ERROR);
    frame(s, 15, len);
    string(s, 2, message);
    encode_key(3, WireType::Varint, s);
    encode_varint(STATUS_ERROR, s);
}

/// KeyValue { key = 1, value = 2: AnyValue { string_value = 1 } } as
/// field `tag` (a Resource's attributes are 1, a Span's 9).
fn kv_str(s: &mut Vec<u8>, tag: u32, key: &str, value: &str) {
    let any = field_len(value.len());
    let kv = field_len(key.len()) + field_len(any);
    frame(s, tag, kv);
    string(s, 1, key);
    frame(s, 2, any);
    string(s, 1, value);
}

/// KeyValue with AnyValue { int_value = 3 }.
fn kv_int(s: &mut Vec<u8>, tag: u32, key: &str, value: i64) {
    let any = 1 + encoded_len_varint(value as u64);
    let kv = field_len(key.len()) + field_len(any);
    frame(s, tag, kv);
    string(s, 1, key);
    frame(s, 2, any);
    encode_key(3, WireType::Varint, s);
    encode_varint(value as u64, s);
}

/// A length-delimited field's size: key, length, bytes.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn frame(s: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, s);
    encode_varint(len as u64, s);
}

fn message(s: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    frame(s, tag, bytes.len());
    s.extend_from_slice(bytes);
}

fn string(s: &mut Vec<u8>, tag: u32, text: &str) {
    message(s, tag, text.as_bytes());
}

fn fixed32(s: &mut Vec<u8>, tag: u32, v: u32) {
    encode_key(tag, WireType::ThirtyTwoBit, s);
    s.put_u32_le(v);
}

/// A field's key (prost's `encode_key`, for a Vec).
fn encode_key(tag: u32, wire_type: WireType, s: &mut Vec<u8>) {
    encode_varint(u64::from(tag << 3 | wire_type as u32), s);
}

/// prost's `encode_varint` for a Vec: most values here (keys, lengths,
/// small numbers) take one byte, pushed without the loop.
fn encode_varint(mut v: u64, s: &mut Vec<u8>) {
    if v < 0x80 {
        s.push(v as u8);
        return;
    }
    while v >= 0x80 {
        s.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    s.push(v as u8);
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.199.255",
            "9.99.100.109",
            "::1",
            "fd00::1:2",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = String::new();
            super::ip_text(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
    }

    #[test]
    fn varints_match_prosts() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX.into(),
            u64::MAX,
        ] {
            let mut ours = Vec::new();
            super::encode_varint(v, &mut ours);
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
        }
    }
}

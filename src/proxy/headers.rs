//! Header rewriting between the client and the upstream: hop-by-hop removal,
//! forwarding headers, request ids, client identity.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Headers that describe one connection and never travel past a proxy
/// (RFC 9110 §7.6.1). `te` is handled apart: `te: trailers` must reach a
/// gRPC upstream, which uses it to know the client understands trailers.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// A route's `request_headers` / `response_headers`: removals, then
/// additions (which replace any value already there).
pub fn apply_edits(h: &mut HeaderMap, edits: &crate::config::HeaderEdits) {
    for name in &edits.remove {
        h.remove(name);
    }
    for (name, value) in &edits.add {
        h.insert(name.clone(), value.clone());
    }
}

/// Removes hop-by-hop headers, including every header the `Connection`
/// header names, and any `te` value other than `trailers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Nearly every request and response has nothing to strip (gRPC sends
    // `te: trailers`): one look at the names, no map edits.
    let mut te = headers.get_all(header::TE).iter();
    let first_te = te.next();
    let te_trailers_only = te.next().is_none()
        && first_te.is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if te_trailers_only && !headers.keys().any(|n| HOP_BY_HOP.contains(n)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if name != header::TE {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let keeps_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str()
            .map(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
            .unwrap_or(false)
    });
    headers.remove(header::TE);
    if keeps_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Appends the peer address (`peer_ip`, the IP as a header value) to
/// `x-forwarded-for` and sets `x-forwarded-proto`.
pub fn set_forwarded(headers: &mut HeaderMap, peer_ip: &HeaderValue, scheme: &'static str) {
    let prev = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|p| !p.trim().is_empty());
    let xff = match prev {
        Some(prev) => {
            let peer = peer_ip.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{prev}, {peer}")).ok()
        }
        None => Some(peer_ip.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
}

/// Gives the request an id when the client sent none (read it back from
/// the headers: no copy is made for callers that do not need it).
pub fn ensure_request_id(headers: &mut HeaderMap) {
    if headers.get(&X_REQUEST_ID).is_some_and(|v| !v.is_empty()) {
        return;
    }
    headers.insert(X_REQUEST_ID, new_request_id());
}

/// A random UUIDv4 as text, formatted without intermediate strings (it is
/// made for every request that arrives without one).
pub fn new_request_id() -> HeaderValue {
    let n: u128 = rand::random();
    // Version 4, variant 10xx.
    let n =
        (n & !(0xF000u128 << 64) | (0x4000u128 << 64)) & !(0xC000u128 << 48) | (0x8000u128 << 48);
    // Two hex digits per byte, a dash after bytes 4, 6, 8 and 10
    // (8-4-4-4-12 digits).
    let mut buf = [b'-'; 36];
    let bytes = n.to_be_bytes();
    for (i, &at) in UUID_DIGITS.iter().enumerate() {
        let [hi, lo] = HEX_PAIRS[usize::from(bytes[i])];
        buf[at] = hi;
        buf[at + 1] = lo;
    }
    // Unique per request, yet not sensitive: HPACK sends the value as a
    // literal (its name by index) and keeps it out of the table, where it
    // would only evict entries that repeat (see the encoder's policy).
    HeaderValue::from_bytes(&buf).expect("hex and dashes are a valid header value")
}

/// Where each byte's two hex digits go in a UUID's text.
const UUID_DIGITS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// Each byte's two lowercase hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xF]];
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_removed_te_trailers_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-keep"], "1");
    }

    #[test]
    fn te_other_than_trailers_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert!(h.get(header::TE).is_none());
    }

    #[test]
    fn xff_appended() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        let peer = HeaderValue::from_static("10.0.0.1");
        set_forwarded(&mut h, &peer, "https");
        assert_eq!(h[X_FORWARDED_FOR], "1.2.3.4, 10.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &peer, "http");
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1");
    }

    #[test]
    fn nothing_to_strip_leaves_headers_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        // Two te headers are not the fast path: folded into one `trailers`.
        h.append(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get_all(header::TE).iter().count(), 1);
        // A hop-by-hop header alone is found.
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("proxy-connection").is_none());
        assert_eq!(h[header::TE], "trailers");
    }

    #[test]
    fn request_id_generated_once() {
        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        let id = h[&X_REQUEST_ID].clone();
        assert_eq!(id.len(), 36);
        let text = id.to_str().unwrap();
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"), "{text}");
        for (i, c) in text.char_indices() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{text}");
            } else {
                assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{text}");
            }
        }
        // Not a secret: the next hop may index its name (HPACK) and log it.
        assert!(!id.is_sensitive());
        ensure_request_id(&mut h);
        assert_eq!(h[&X_REQUEST_ID], id);
    }
}

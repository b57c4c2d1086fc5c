//! Protocol detection on a connection's first bytes: a TLS ClientHello
//! (with its SNI and offered ALPN, also when it spans several records or
//! reads), the HTTP/2 connection preface, an HTTP/1.x request line, or
//! anything else (opaque TCP).
//!
//! Pure functions over bytes: the listener reads, calls [`sniff`] after
//! every read until it answers, and calls [`give_up`] when the client stops
//! sending (detect timeout, end of stream). Nothing here trusts a port name
//! or a declaration: the bytes decide. Where bytes are ambiguous the answer
//! leans towards what cannot break the connection (opaque TCP forwards the
//! bytes untouched).

use std::borrow::Cow;

/// What a client sends first on an HTTP/2 cleartext connection.
pub use crate::http2::frame::PREFACE as H2_PREFACE;
/// Largest ClientHello read for its SNI: Envoy's tls_inspector limit.
/// Real ones are 200 B to 2 KiB (post-quantum key shares included); past
/// this the connection is still TLS, just not routed by name.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;
/// Longest HTTP/1.x request line waited for. Past this, bytes that still
/// look like a request line are taken as HTTP/1.x (the HTTP server applies
/// its own limits).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Longest method token: `PROPPATCH`, `VERSION-CONTROL` and friends fit.
const MAX_METHOD: usize = 32;
/// A TLS record carries at most 2^14 bytes of plaintext, plus expansion.
const MAX_RECORD: usize = 16 * 1024 + 2048;

/// What a connection was classified as. `as_str` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tls,
    Http1,
    Http2,
    /// Opaque: forwarded as bytes.
    Tcp,
}

impl Protocol {
    /// The `detected` label of `torii_protocol_detections_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tls => "tls",
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Tcp => "tcp",
        }
    }

    /// For sentences: "the client sent {describe}".
    pub fn describe(self) -> &'static str {
        match self {
            Protocol::Tls => "a TLS ClientHello",
            Protocol::Http1 => "plaintext HTTP/1.x",
            Protocol::Http2 => "plaintext HTTP/2 (h2c)",
            Protocol::Tcp => "bytes that are neither TLS nor HTTP",
        }
    }
}

/// The parts of a ClientHello that route a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// Lower-cased, without a trailing dot.
    pub sni: Option<String>,
    /// Offered ALPN protocols, in the client's order.
    pub alpn: Vec<String>,
}

/// A classification and why it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub protocol: Protocol,
    /// Plain words for the access log and debug logs.
    pub reason: &'static str,
    /// For TLS, when the ClientHello could be read.
    pub hello: Option<ClientHello>,
}

impl Detection {
    pub fn new(protocol: Protocol, reason: &'static str) -> Self {
        Detection {
            protocol,
            reason,
            hello: None,
        }
    }
}

/// The answer after one more read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    Done(Detection),
    /// The bytes so far fit more than one answer: read more.
    NeedMore,
}

/// Why detection stopped before [`sniff`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The detect timeout (or, for a started ClientHello, the handshake
    /// timeout) ran out.
    Timeout,
    /// The client closed its side.
    Eof,
}

/// Classifies `buf`, everything the client has sent so far.
pub fn sniff(buf: &[u8]) -> Sniff {
    if buf.is_empty() {
        return Sniff::NeedMore;
    }
    if buf[0] == 0x16 {
        return sniff_tls(buf);
    }
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return Sniff::NeedMore;
    }
    if buf.starts_with(H2_PREFACE) {
        return done(Protocol::Http2, "HTTP/2 connection preface");
    }
    match request_line(buf) {
        Line::Http1 => done(Protocol::Http1, "HTTP/1.x request line"),
        Line::NotHttp => done(Protocol::Tcp, "first bytes are neither TLS nor HTTP"),
        Line::Partial if buf.len() >= MAX_REQUEST_LINE => done(
            Protocol::Http1,
            "request line longer than 8 KiB that looks like HTTP/1.x",
        ),
        Line::Partial => Sniff::NeedMore,
    }
}

/// The best answer for `buf` when no more bytes are coming in time. Biased
/// towards opaque TCP: forwarding bytes untouched cannot break a protocol
/// that was misread, while an HTTP server would answer 400.
pub fn give_up(buf: &[u8], why: GiveUp) -> Detection {
    if let Sniff::Done(d) = sniff(buf) {
        return d;
    }
    let reason = match (buf.is_empty(), why) {
        (true, GiveUp::Timeout) => {
            "nothing arrived within the detect timeout (a server-first protocol, or a silent client)"
        }
        (true, GiveUp::Eof) => "the client closed its side without sending anything",
        (false, _) if is_tls(buf) => {
            return Detection::new(
                Protocol::Tls,
                "TLS record, but the ClientHello did not arrive in full",
            )
        }
        (false, GiveUp::Timeout) => "the first bytes stopped before they could be classified",
        (false, GiveUp::Eof) => "the client closed its side before its bytes could be classified",
    };
    Detection::new(Protocol::Tcp, reason)
}

/// For a listener that has no use for opaque TCP: bytes that cannot be TLS
/// go to the HTTP server at once, which tells HTTP/1.1 from h2c itself and
/// applies its own header timeout. The answer is the best guess so far.
pub fn hand_to_http(buf: &[u8]) -> Option<Detection> {
    if buf.is_empty() || buf[0] == 0x16 {
        return None;
    }
    let protocol = if H2_PREFACE.starts_with(buf) || buf.starts_with(H2_PREFACE) {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    Some(Detection::new(
        protocol,
        "not TLS; handed to the HTTP server as it arrived (the listener forwards no opaque TCP)",
    ))
}

/// Whether `buf` starts with a TLS handshake record header (the ClientHello
/// may still be incomplete).
pub fn is_tls(buf: &[u8]) -> bool {
    buf.len() >= 2 && buf[0] == 0x16 && buf[1] == 0x03
}

fn done(protocol: Protocol, reason: &'static str) -> Sniff {
    Sniff::Done(Detection::new(protocol, reason))
}

fn sniff_tls(buf: &[u8]) -> Sniff {
    if buf.len() < 2 {
        return Sniff::NeedMore;
    }
    if buf[1] != 0x03 {
        return done(Protocol::Tcp, "first bytes are neither TLS nor HTTP");
    }
    match parse_client_hello(buf) {
        Hello::Complete(hello) => Sniff::Done(Detection {
            protocol: Protocol::Tls,
            reason: "TLS ClientHello",
            hello: Some(hello),
        }),
        Hello::TooLarge => done(
            Protocol::Tls,
            "TLS ClientHello larger than 64 KiB (its SNI was not read)",
        ),
        Hello::Invalid(why) => done(Protocol::Tls, why),
        // Tiny records carry 5 bytes of header each: bound what is kept.
        Hello::Incomplete if buf.len() >= 2 * MAX_CLIENT_HELLO => done(
            Protocol::Tls,
            "TLS ClientHello larger than 64 KiB (its SNI was not read)",
        ),
        Hello::Incomplete => Sniff::NeedMore,
    }
}

/// The result of reading a ClientHello from the start of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    Complete(ClientHello),
    /// Read more.
    Incomplete,
    /// Longer than [`MAX_CLIENT_HELLO`].
    TooLarge,
    /// TLS records, but not a well-formed ClientHello: the reason.
    Invalid(&'static str),
}

/// Reads the ClientHello at the start of `buf` (TLS records of type
/// handshake, reassembled when the message spans several).
pub fn parse_client_hello(buf: &[u8]) -> Hello {
    let message = match handshake_message(buf) {
        Ok(Some(m)) => m,
        Ok(None) => return Hello::Incomplete,
        Err(Stop::TooLarge) => return Hello::TooLarge,
        Err(Stop::Invalid(why)) => return Hello::Invalid(why),
    };
    match client_hello_body(&message) {
        Ok(hello) => Hello::Complete(hello),
        Err(why) => Hello::Invalid(why),
    }
}

enum Stop {
    TooLarge,
    Invalid(&'static str),
}

/// The first handshake message's body, once every record carrying it has
/// arrived. Borrowed when one record holds it all (the usual case).
fn handshake_message(buf: &[u8]) -> Result<Option<Cow<'_, [u8]>>, Stop> {
    let mut joined: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(header) = buf.get(pos..pos + 5) else {
            return Ok(None);
        };
        if header[0] != 0x16 {
            return Err(Stop::Invalid(
                "TLS record, but a non-handshake record came before the ClientHello was complete",
            ));
        }
        if header[1] != 0x03 {
            return Err(Stop::Invalid("TLS record with an unknown record version"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Err(Stop::Invalid("TLS record with an impossible length"));
        }
        let start = pos + 5;
        let end = (start + len).min(buf.len());
        let fragment = &buf[start..end];
        let first = pos == 0;
        if !first {
            joined.extend_from_slice(fragment);
        }
        let so_far: &[u8] = if first { fragment } else { &joined };
        if so_far.len() >= 4 {
            if so_far[0] != 1 {
                return Err(Stop::Invalid(
                    "TLS record, but the first handshake message is not a ClientHello",
                ));
            }
            let total = u24(&so_far[1..4]) + 4;
            if total > MAX_CLIENT_HELLO {
                return Err(Stop::TooLarge);
            }
            if so_far.len() >= total {
                return Ok(Some(if first {
                    Cow::Borrowed(&fragment[4..total])
                } else {
                    Cow::Owned(joined[4..total].to_vec())
                }));
            }
        }
        if end < start + len {
            return Ok(None);
        }
        if first {
            joined.extend_from_slice(fragment);
        }
        pos = start + len;
    }
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// A cursor over a ClientHello body; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], &'static str> {
        if self.buf.len() < n {
            return Err(what);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<usize, &'static str> {
        Ok(usize::from(self.take(1, what)?[0]))
    }
    fn u16(&mut self, what: &'static str) -> Result<usize, &'static str> {
        let b = self.take(2, what)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    /// A vector with a 1-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], &'static str> {
        let n = self.u8(what)?;
        self.take(n, what)
    }
    /// A vector with a 2-byte length.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], &'static str> {
        let n = self.u16(what)?;
        self.take(n, what)
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn client_hello_body(body: &[u8]) -> Result<ClientHello, &'static str> {
    const BAD: &str = "TLS record, but the ClientHello is malformed";
    let mut r = Reader { buf: body };
    let version = r.take(2, BAD)?;
    if version[0] != 0x03 {
        return Err("TLS record, but the ClientHello has an unknown version");
    }
    r.take(32, BAD)?; // random
    if r.vec8(BAD)?.len() > 32 {
        return Err("TLS record, but the ClientHello's session id is longer than 32 bytes");
    }
    let suites = r.vec16(BAD)?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("TLS record, but the ClientHello's cipher suite list is malformed");
    }
    if r.vec8(BAD)?.is_empty() {
        return Err("TLS record, but the ClientHello offers no compression method");
    }
    let mut hello = ClientHello::default();
    if r.is_empty() {
        // Extensions are optional before TLS 1.3.
        return Ok(hello);
    }
    let mut exts = Reader { buf: r.vec16(BAD)? };
    if !r.is_empty() {
        return Err(BAD);
    }
    let mut seen_sni = false;
    let mut seen_alpn = false;
    while !exts.is_empty() {
        let kind = exts.u16(BAD)?;
        let data = exts.vec16(BAD)?;
        match kind {
            0 if seen_sni => {
                return Err("TLS record, but the ClientHello has two server_name extensions")
            }
            0 => {
                seen_sni = true;
                hello.sni = server_name(data)?;
            }
            16 if seen_alpn => {
                return Err("TLS record, but the ClientHello has two ALPN extensions")
            }
            16 => {
                seen_alpn = true;
                hello.alpn = alpn(data)?;
            }
            _ => {}
        }
    }
    Ok(hello)
}

/// The host_name entry of a server_name extension (RFC 6066 §3).
fn server_name(data: &[u8]) -> Result<Option<String>, &'static str> {
    const BAD: &str = "TLS record, but the ClientHello's server_name extension is malformed";
    let mut r = Reader { buf: data };
    let mut list = Reader { buf: r.vec16(BAD)? };
    if !r.is_empty() {
        return Err(BAD);
    }
    let mut found = None;
    while !list.is_empty() {
        let kind = list.u8(BAD)?;
        let name = list.vec16(BAD)?;
        if kind != 0 || found.is_some() {
            continue;
        }
        found = Some(
            host_name(name)
                .ok_or("TLS record, but the ClientHello's server name is not a valid host name")?,
        );
    }
    Ok(found)
}

fn host_name(raw: &[u8]) -> Option<String> {
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    ok.then(|| String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// The protocol list of an ALPN extension (RFC 7301 §3.1).
fn alpn(data: &[u8]) -> Result<Vec<String>, &'static str> {
    const BAD: &str = "TLS record, but the ClientHello's ALPN extension is malformed";
    let mut r = Reader { buf: data };
    let mut list = Reader { buf: r.vec16(BAD)? };
    if !r.is_empty() {
        return Err(BAD);
    }
    let mut out = Vec::new();
    while !list.is_empty() {
        let p = list.vec8(BAD)?;
        if p.is_empty() {
            return Err(BAD);
        }
        out.push(String::from_utf8_lossy(p).into_owned());
    }
    Ok(out)
}

/// What the fuzz target (`fuzz/fuzz_targets/client_hello.rs`) runs on each
/// input, and the seed-corpus regression test with it: every entry point,
/// with the invariants that must hold whatever the bytes.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    if let Hello::Complete(hello) = parse_client_hello(data) {
        if let Some(sni) = &hello.sni {
            assert!(!sni.is_empty() && !sni.bytes().any(|b| b.is_ascii_uppercase()));
        }
        assert!(hello.alpn.iter().all(|p| !p.is_empty()));
    }
    let sniffed = sniff(data);
    for why in [GiveUp::Timeout, GiveUp::Eof] {
        let d = give_up(data, why);
        if let Sniff::Done(s) = &sniffed {
            assert_eq!(&d, s, "giving up must not change a final answer");
        }
    }
    let _ = is_tls(data);
}

enum Line {
    Http1,
    NotHttp,
    Partial,
}

/// `METHOD SP request-target SP HTTP/1.x CRLF` (RFC 9112 §3), checked as
/// far as `buf` goes. The version is what tells HTTP from text protocols
/// that also start with a verb (`GET key` in Redis' inline syntax).
fn request_line(buf: &[u8]) -> Line {
    let method = buf.iter().take_while(|b| is_tchar(**b)).count();
    if method > MAX_METHOD {
        return Line::NotHttp;
    }
    if method == buf.len() {
        return Line::Partial;
    }
    if method == 0 || buf[method] != b' ' {
        return Line::NotHttp;
    }
    let rest = &buf[method + 1..];
    let target = rest
        .iter()
        .take_while(|b| (0x21..=0x7e).contains(*b))
        .count();
    if target == rest.len() {
        return Line::Partial;
    }
    if target == 0 || rest[target] != b' ' {
        return Line::NotHttp;
    }
    let version = &rest[target + 1..];
    const V: &[u8] = b"HTTP/1.";
    let n = version.len().min(V.len());
    if version[..n] != V[..n] {
        return Line::NotHttp;
    }
    match version.get(V.len()..V.len() + 2) {
        Some([d, b'\r' | b'\n']) if d.is_ascii_digit() => Line::Http1,
        Some(_) => Line::NotHttp,
        None => match version.get(V.len()) {
            None => Line::Partial,
            Some(d) if d.is_ascii_digit() => Line::Partial,
            Some(_) => Line::NotHttp,
        },
    }
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A real ClientHello: what a rustls client writes first.
    fn client_hello(sni: &str, alpn: &[&str], max_fragment: Option<usize>) -> Vec<u8> {
        let mut config = rustls::ClientConfig::builder_with_provider(crate::tls_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.max_fragment_size = max_fragment;
        let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    fn tls(d: Sniff) -> ClientHello {
        match d {
            Sniff::Done(Detection {
                protocol: Protocol::Tls,
                hello: Some(h),
                ..
            }) => h,
            other => panic!("not a parsed ClientHello: {other:?}"),
        }
    }

    fn protocol(buf: &[u8]) -> Option<Protocol> {
        match sniff(buf) {
            Sniff::Done(d) => Some(d.protocol),
            Sniff::NeedMore => None,
        }
    }

    #[test]
    fn client_hello_with_sni_and_alpn() {
        let bytes = client_hello("API.example.com", &["h2", "http/1.1"], None);
        let hello = tls(sniff(&bytes));
        assert_eq!(hello.sni.as_deref(), Some("api.example.com"));
        assert_eq!(hello.alpn, ["h2", "http/1.1"]);
    }

    #[test]
    fn client_hello_without_sni_or_alpn() {
        // rustls sends no SNI for an IP address.
        let bytes = client_hello("10.1.2.3", &[], None);
        let hello = tls(sniff(&bytes));
        assert_eq!(hello, ClientHello::default());
    }

    #[test]
    fn client_hello_split_over_reads() {
        let bytes = client_hello("split.test", &["h2"], None);
        for end in [1, 2, 5, 6, 40, bytes.len() - 1] {
            assert_eq!(sniff(&bytes[..end]), Sniff::NeedMore, "after {end} bytes");
        }
        assert_eq!(tls(sniff(&bytes)).sni.as_deref(), Some("split.test"));
        // Every prefix is either "read more" or the right answer.
        for end in 1..=bytes.len() {
            if let Sniff::Done(d) = sniff(&bytes[..end]) {
                assert_eq!(end, bytes.len(), "answered early: {d:?}");
            }
        }
    }

    #[test]
    fn client_hello_split_over_records() {
        // rustls fragments the handshake into 64-byte records.
        let bytes = client_hello("records.example.com", &["h2", "http/1.1"], Some(64));
        let records = count_records(&bytes);
        assert!(records > 3, "{records} records");
        let hello = tls(sniff(&bytes));
        assert_eq!(hello.sni.as_deref(), Some("records.example.com"));
        assert_eq!(hello.alpn, ["h2", "http/1.1"]);
        for end in 1..bytes.len() {
            assert_eq!(sniff(&bytes[..end]), Sniff::NeedMore, "after {end} bytes");
        }
    }

    fn count_records(mut b: &[u8]) -> usize {
        let mut n = 0;
        while b.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
            b = &b[(5 + len).min(b.len())..];
            n += 1;
        }
        n
    }

    #[test]
    fn bytes_after_the_client_hello_do_not_matter() {
        let mut bytes = client_hello("a.test", &["h2"], None);
        bytes.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
        assert_eq!(tls(sniff(&bytes)).sni.as_deref(), Some("a.test"));
    }

    #[test]
    fn broken_client_hellos_are_still_tls() {
        let good = client_hello("a.test", &["h2"], None);
        // Not a ClientHello (a ServerHello type byte).
        let mut b = good.clone();
        b[5] = 2;
        assert!(
            matches!(sniff(&b), Sniff::Done(d) if d.protocol == Protocol::Tls && d.hello.is_none())
        );
        // A handshake length that overruns the 64 KiB limit.
        let mut b = good.clone();
        b[6] = 0x7f;
        assert!(matches!(sniff(&b), Sniff::Done(d) if d.reason.contains("64 KiB")));
        // A session id longer than 32 bytes.
        let mut b = good.clone();
        b[5 + 4 + 2 + 32] = 40;
        assert!(
            matches!(sniff(&b), Sniff::Done(d) if d.protocol == Protocol::Tls && d.hello.is_none())
        );
        // A zero-length record.
        assert!(matches!(
            parse_client_hello(b"\x16\x03\x01\x00\x00"),
            Hello::Invalid(_)
        ));
        // An alert record in the middle of a fragmented hello.
        let frag = client_hello("a.test", &[], Some(64));
        let second = 5 + usize::from(u16::from_be_bytes([frag[3], frag[4]]));
        let mut b = frag[..second].to_vec();
        b.extend_from_slice(b"\x15\x03\x03\x00\x02\x02\x28");
        assert!(matches!(parse_client_hello(&b), Hello::Invalid(w) if w.contains("non-handshake")));
    }

    #[test]
    fn http2_preface() {
        assert_eq!(protocol(H2_PREFACE), Some(Protocol::Http2));
        let mut with_settings = H2_PREFACE.to_vec();
        with_settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(protocol(&with_settings), Some(Protocol::Http2));
        for end in 1..H2_PREFACE.len() {
            assert_eq!(protocol(&H2_PREFACE[..end]), None, "after {end} bytes");
        }
        // `PRI * HTTP/2.0` without the rest is not HTTP/1.x either.
        assert_eq!(
            protocol(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
            Some(Protocol::Tcp)
        );
    }

    #[test]
    fn http1_methods() {
        for method in [
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT",
            "PROPFIND", "M-SEARCH",
        ] {
            let line = format!("{method} /a?b=c HTTP/1.1\r\nhost: x\r\n\r\n");
            assert_eq!(protocol(line.as_bytes()), Some(Protocol::Http1), "{method}");
        }
        assert_eq!(protocol(b"GET / HTTP/1.0\r\n"), Some(Protocol::Http1));
        assert_eq!(protocol(b"GET / HTTP/1.1\n"), Some(Protocol::Http1));
        assert_eq!(
            protocol(b"CONNECT example.com:443 HTTP/1.1\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(protocol(b"OPTIONS * HTTP/1.1\r\n"), Some(Protocol::Http1));
        let line = b"POST /echo.Echo/Unary HTTP/1.1\r\n";
        for end in 1..line.len() - 1 {
            assert_eq!(protocol(&line[..end]), None, "after {end} bytes");
        }
    }

    #[test]
    fn text_protocols_that_are_not_http() {
        for text in [
            &b"GET key\r\n"[..],       // Redis inline command
            b"PING\r\n",               // Redis
            b"get k 0 0 1\r\n",        // memcached
            b"EHLO client.test\r\n",   // SMTP client
            b"GET / HTTP/2.0\r\n",     // not HTTP/1.x
            b"GET / HTTP/1.1 x\r\n",   // junk after the version
            b"GET  / HTTP/1.1\r\n",    // two spaces
            b"GET /\x01 HTTP/1.1\r\n", // control byte in the target
            b"SSH-2.0-OpenSSH_9.6\r\n",
        ] {
            assert_eq!(
                protocol(text),
                Some(Protocol::Tcp),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(protocol(&[b'A'; MAX_METHOD + 1]), Some(Protocol::Tcp));
    }

    #[test]
    fn binary_garbage() {
        // Postgres StartupMessage, MySQL-ish bytes, zeros, a stray 0x16.
        assert_eq!(
            protocol(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
            Some(Protocol::Tcp)
        );
        assert_eq!(protocol(&[0u8; 64]), Some(Protocol::Tcp));
        assert_eq!(protocol(b"\x16\x00\x00"), Some(Protocol::Tcp));
        assert_eq!(protocol(b"\x16"), None);
        assert_eq!(protocol(b"\xff\xfe\xfd"), Some(Protocol::Tcp));
    }

    #[test]
    fn long_request_lines() {
        let mut line = b"GET /".to_vec();
        line.resize(MAX_REQUEST_LINE - 1, b'a');
        assert_eq!(protocol(&line), None);
        line.push(b'a');
        assert_eq!(protocol(&line), Some(Protocol::Http1));
    }

    #[test]
    fn handing_partial_requests_to_the_http_server() {
        assert_eq!(hand_to_http(b""), None);
        assert_eq!(hand_to_http(b"\x16"), None);
        assert_eq!(hand_to_http(b"GET /in").unwrap().protocol, Protocol::Http1);
        assert_eq!(hand_to_http(b"PRI * HT").unwrap().protocol, Protocol::Http2);
    }

    #[test]
    fn nothing_at_all() {
        assert_eq!(sniff(b""), Sniff::NeedMore);
        let d = give_up(b"", GiveUp::Timeout);
        assert_eq!(d.protocol, Protocol::Tcp);
        assert!(d.reason.contains("server-first"), "{}", d.reason);
        let d = give_up(b"", GiveUp::Eof);
        assert_eq!(d.protocol, Protocol::Tcp);
        assert!(d.reason.contains("without sending"), "{}", d.reason);
    }

    #[test]
    fn giving_up_on_partial_bytes() {
        let hello = client_hello("a.test", &[], None);
        let d = give_up(&hello[..20], GiveUp::Timeout);
        assert_eq!((d.protocol, d.hello), (Protocol::Tls, None));
        // A half request line could be anything: forward it untouched.
        assert_eq!(
            give_up(b"GET /ind", GiveUp::Timeout).protocol,
            Protocol::Tcp
        );
        assert_eq!(give_up(b"PRI * HT", GiveUp::Eof).protocol, Protocol::Tcp);
        // Complete bytes keep their answer.
        assert_eq!(
            give_up(b"GET / HTTP/1.1\r\n", GiveUp::Eof).protocol,
            Protocol::Http1
        );
    }

    #[test]
    fn hand_made_hello_without_extensions() {
        // TLS 1.2-era ClientHello with no extensions block at all.
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut msg = vec![1, 0, 0, body.len() as u8];
        msg.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01, 0, msg.len() as u8];
        rec.extend_from_slice(&msg);
        assert_eq!(
            parse_client_hello(&rec),
            Hello::Complete(ClientHello::default())
        );
    }
}

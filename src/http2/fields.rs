//! Header blocks to request and response heads and back, with the checks
//! RFC 9113 §8 makes on them. A block that breaks them is "malformed": a
//! stream error (RST_STREAM PROTOCOL_ERROR), never passed on — these are
//! the checks that stop HTTP/2-to-HTTP/1.1 smuggling.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{request, response, Method, Request, Response, StatusCode, Uri, Version};

use super::hpack::{Encoder, Field, Name};
use super::maps;

/// Why a header block is malformed, in words for a log line.
pub type Malformed = &'static str;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Is `name` a connection-specific field, forbidden in HTTP/2 (§8.2.2)?
/// Compared as `HeaderName`s (a standard name against a custom one is one
/// tag compare), not as text: it runs for every field in and out.
fn connection_specific(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
}

/// Collects the regular fields of a block (after its pseudo-headers), in a
/// map from [`maps`].
struct Regular {
    headers: HeaderMap,
    content_length: Option<u64>,
    error: Option<Malformed>,
}

impl Default for Regular {
    fn default() -> Self {
        Regular {
            headers: maps::take(),
            content_length: None,
            error: None,
        }
    }
}

impl Regular {
    fn add(&mut self, name: HeaderName, value: Bytes, never_indexed: bool) {
        if self.error.is_some() {
            return;
        }
        if connection_specific(&name) {
            self.error = Some("a connection-specific header field (connection, keep-alive, proxy-connection, transfer-encoding or upgrade)");
            return;
        }
        if name == header::TE && value.as_ref() != b"trailers" {
            self.error = Some("a te header other than \"trailers\"");
            return;
        }
        let mut value = match HeaderValue::from_maybe_shared(value) {
            Ok(v) => v,
            Err(_) => {
                self.error = Some("a header value with a control character (CR, LF or NUL)");
                return;
            }
        };
        // A field the sender marked never-indexed stays so on the next hop
        // (RFC 7541 §7.1.3).
        if never_indexed {
            value.set_sensitive(true);
        }
        if name == header::CONTENT_LENGTH {
            // Digits only (`parse` would take "+12", which an HTTP/1.1
            // upstream might read differently).
            let digits = value.as_bytes();
            let n = if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
            } else {
                None
            };
            match (n, self.content_length) {
                (None, _) => {
                    self.error = Some("a content-length that is not a number");
                    return;
                }
                (Some(n), Some(m)) if n != m => {
                    self.error = Some("two different content-length values");
                    return;
                }
                (Some(n), _) => self.content_length = Some(n),
            }
        }
        self.headers.append(name, value);
    }
}

/// Builds a request head from the fields of a HEADERS block.
#[derive(Default)]
pub struct RequestHead {
    method: Option<Bytes>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    protocol: bool,
    regular: Regular,
    saw_regular: bool,
}

impl RequestHead {
    pub fn field(&mut self, f: Field) {
        if self.regular.error.is_some() {
            return;
        }
        let slot = match f.name {
            Name::Header(name) => {
                self.saw_regular = true;
                if matches!(f.value.first(), Some(b' ' | b'\t'))
                    || matches!(f.value.last(), Some(b' ' | b'\t'))
                {
                    // RFC 9113 §8.2.1. Checked on requests (a client's
                    // bytes must not reach an HTTP/1.1 upstream in a form
                    // it could read differently); upstreams' responses are
                    // taken as they are.
                    self.regular.error = Some("a header value with leading or trailing whitespace");
                    return;
                }
                self.regular.add(name, f.value, f.never_indexed);
                return;
            }
            Name::Invalid(_) => {
                self.regular.error = Some("an invalid header name (uppercase, or a character not allowed, or an unknown pseudo-header)");
                return;
            }
            Name::Status => {
                self.regular.error = Some(":status in a request");
                return;
            }
            Name::Protocol => {
                // Extended CONNECT (RFC 8441) is not offered.
                self.protocol = true;
                return;
            }
            Name::Method => &mut self.method,
            Name::Scheme => &mut self.scheme,
            Name::Authority => &mut self.authority,
            Name::Path => &mut self.path,
        };
        if self.saw_regular {
            self.regular.error = Some("a pseudo-header after a regular header");
        } else if slot.is_some() {
            self.regular.error = Some("a repeated pseudo-header");
        } else {
            *slot = Some(f.value);
        }
    }

    /// The request head, and the body length its content-length promises.
    pub fn finish(self) -> Result<(request::Parts, Option<u64>), Malformed> {
        if let Some(e) = self.regular.error {
            return Err(e);
        }
        if self.protocol {
            return Err(":protocol (extended CONNECT is not supported)");
        }
        let method = self.method.ok_or("no :method")?;
        let method = Method::from_bytes(&method).map_err(|_| "an invalid :method")?;
        let mut uri = http::uri::Parts::default();
        if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() {
                return Err("CONNECT with :scheme or :path");
            }
            let authority = self.authority.ok_or("CONNECT without :authority")?;
            uri.authority =
                Some(Authority::from_maybe_shared(authority).map_err(|_| "an invalid :authority")?);
        } else {
            let scheme = self.scheme.ok_or("no :scheme")?;
            let path = self.path.ok_or("no :path")?;
            if path.is_empty() {
                return Err("an empty :path");
            }
            uri.scheme = Some(match scheme.as_ref() {
                b"http" => Scheme::HTTP,
                b"https" => Scheme::HTTPS,
                other => Scheme::try_from(other).map_err(|_| "an invalid :scheme")?,
            });
            if let Some(a) = self.authority {
                uri.authority =
                    Some(Authority::from_maybe_shared(a).map_err(|_| "an invalid :authority")?);
            } else {
                // A URI with a scheme needs an authority; requests without
                // one (rare in HTTP/2) are routed by their host header.
                uri.scheme = None;
            }
            uri.path_and_query =
                Some(PathAndQuery::from_maybe_shared(path).map_err(|_| "an invalid :path")?);
        }
        let uri = Uri::from_parts(uri).map_err(|_| "an invalid request target")?;
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = method;
        parts.uri = uri;
        parts.version = Version::HTTP_2;
        parts.headers = self.regular.headers;
        Ok((parts, self.regular.content_length))
    }
}

/// Builds a response head from the fields of a HEADERS block.
#[derive(Default)]
pub struct ResponseHead {
    status: Option<Bytes>,
    regular: Regular,
    saw_regular: bool,
}

impl ResponseHead {
    pub fn field(&mut self, f: Field) {
        if self.regular.error.is_some() {
            return;
        }
        match f.name {
            Name::Header(name) => {
                self.saw_regular = true;
                self.regular.add(name, f.value, f.never_indexed);
            }
            Name::Status if self.saw_regular => {
                self.regular.error = Some("a pseudo-header after a regular header");
            }
            Name::Status if self.status.is_some() => {
                self.regular.error = Some("a repeated :status");
            }
            Name::Status => self.status = Some(f.value),
            Name::Invalid(_) => self.regular.error = Some("an invalid header name"),
            _ => self.regular.error = Some("a request pseudo-header in a response"),
        }
    }

    pub fn finish(self) -> Result<(response::Parts, Option<u64>), Malformed> {
        if let Some(e) = self.regular.error {
            return Err(e);
        }
        let status = self.status.ok_or("no :status")?;
        let status = StatusCode::from_bytes(&status).map_err(|_| "an invalid :status")?;
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = status;
        parts.version = Version::HTTP_2;
        parts.headers = self.regular.headers;
        Ok((parts, self.regular.content_length))
    }
}

/// Builds trailers from the fields of a HEADERS block that ends a stream.
#[derive(Default)]
pub struct Trailers {
    regular: Regular,
}

impl Trailers {
    pub fn field(&mut self, f: Field) {
        match f.name {
            Name::Header(name) => self.regular.add(name, f.value, f.never_indexed),
            _ if self.regular.error.is_some() => {}
            _ => self.regular.error = Some("a pseudo-header in trailers"),
        }
    }

    pub fn finish(self) -> Result<HeaderMap, Malformed> {
        match self.regular.error {
            Some(e) => Err(e),
            None => Ok(self.regular.headers),
        }
    }
}

/// Encodes the regular fields of `headers`, leaving out what HTTP/2 forbids.
fn encode_regular(enc: &mut Encoder, headers: &HeaderMap, dst: &mut Vec<u8>) {
    for (name, value) in headers {
        if connection_specific(name) || (name == header::TE && value != "trailers") {
            continue;
        }
        enc.encode_header(name, value, dst);
    }
}

pub fn encode_response(enc: &mut Encoder, head: &response::Parts, dst: &mut Vec<u8>) {
    enc.begin_block(dst);
    enc.encode_pseudo(Name::Status, head.status.as_str().as_bytes(), dst);
    encode_regular(enc, &head.headers, dst);
}

pub fn encode_request(enc: &mut Encoder, head: &request::Parts, dst: &mut Vec<u8>) {
    enc.begin_block(dst);
    enc.encode_pseudo(Name::Method, head.method.as_str().as_bytes(), dst);
    if head.method != Method::CONNECT {
        let scheme = head.uri.scheme_str().unwrap_or("http");
        enc.encode_pseudo(Name::Scheme, scheme.as_bytes(), dst);
        let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
        enc.encode_pseudo(Name::Path, path.as_bytes(), dst);
    }
    if let Some(a) = head.uri.authority() {
        enc.encode_pseudo(Name::Authority, a.as_str().as_bytes(), dst);
    }
    for (name, value) in &head.headers {
        // :authority carries the host.
        if name == header::HOST {
            continue;
        }
        if connection_specific(name) || (name == header::TE && value != "trailers") {
            continue;
        }
        enc.encode_header(name, value, dst);
    }
}

pub fn encode_trailers(enc: &mut Encoder, trailers: &HeaderMap, dst: &mut Vec<u8>) {
    enc.begin_block(dst);
    encode_regular(enc, trailers, dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::hpack::Decoder;

    fn decode(d: &mut Decoder, block: &[u8]) -> Vec<Field> {
        let mut out = Vec::new();
        d.decode(block, 1 << 20, |f| out.push(f)).unwrap();
        out
    }

    fn request(fields: &[(&str, &str)]) -> Result<(request::Parts, Option<u64>), Malformed> {
        let mut head = RequestHead::default();
        for (n, v) in fields {
            let name = match *n {
                ":method" => Name::Method,
                ":scheme" => Name::Scheme,
                ":path" => Name::Path,
                ":authority" => Name::Authority,
                ":status" => Name::Status,
                n if n.starts_with(':') || n.bytes().any(|b| b.is_ascii_uppercase()) => {
                    Name::Invalid(Bytes::copy_from_slice(n.as_bytes()))
                }
                n => Name::Header(HeaderName::from_bytes(n.as_bytes()).unwrap()),
            };
            head.field(Field {
                name,
                value: Bytes::copy_from_slice(v.as_bytes()),
                never_indexed: false,
            });
        }
        head.finish()
    }

    const GOOD: [(&str, &str); 5] = [
        (":method", "POST"),
        (":scheme", "https"),
        (":path", "/pkg.Svc/Method"),
        (":authority", "api.example.com"),
        ("content-type", "application/grpc"),
    ];

    #[test]
    fn a_grpc_request_head_is_built() {
        let (parts, len) = request(&GOOD).unwrap();
        assert_eq!(parts.method, Method::POST);
        assert_eq!(
            parts.uri.to_string(),
            "https://api.example.com/pkg.Svc/Method"
        );
        assert_eq!(parts.version, Version::HTTP_2);
        assert_eq!(parts.headers["content-type"], "application/grpc");
        assert_eq!(len, None);
    }

    #[test]
    fn malformed_request_heads_are_refused() {
        let with = |extra: (&'static str, &'static str)| {
            let mut f = GOOD.to_vec();
            f.push(extra);
            request(&f)
        };
        assert!(with(("connection", "keep-alive")).is_err());
        assert!(with(("transfer-encoding", "chunked")).is_err());
        assert!(with(("te", "gzip")).is_err());
        assert!(with(("te", "trailers")).is_ok());
        assert!(with(("X-Upper", "1")).is_err());
        assert!(with(("x-crlf", "a\r\nb")).is_err());
        assert!(with((":path", "/again")).is_err(), "pseudo after regular");
        assert!(with(("content-length", "12x")).is_err());
        assert!(with(("content-length", "+12")).is_err());
        assert_eq!(with(("content-length", "12")).unwrap().1, Some(12));
        assert!(request(&GOOD[1..]).is_err(), "no :method");
        assert!(
            request(&[GOOD[0], GOOD[1], GOOD[0], GOOD[2]]).is_err(),
            "repeated"
        );
        assert!(request(&[GOOD[0], GOOD[1], (":path", "")]).is_err());
        assert!(request(&[GOOD[0], GOOD[1], GOOD[2], (":status", "200")]).is_err());
    }

    #[test]
    fn heads_round_trip_through_hpack() {
        let (req, _) = request(&GOOD).unwrap();
        let mut enc = Encoder::new();
        let mut dec = Decoder::new(4096);
        let mut block = Vec::new();
        encode_request(&mut enc, &req, &mut block);
        let mut head = RequestHead::default();
        for f in decode(&mut dec, &block) {
            head.field(f);
        }
        let (back, _) = head.finish().unwrap();
        assert_eq!(back.uri, req.uri);
        assert_eq!(back.headers, req.headers);

        let (mut resp, ()) = Response::new(()).into_parts();
        resp.headers
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        resp.headers
            .insert("connection", HeaderValue::from_static("close"));
        let mut block = Vec::new();
        encode_response(&mut enc, &resp, &mut block);
        let mut head = ResponseHead::default();
        for f in decode(&mut dec, &block) {
            head.field(f);
        }
        let (back, _) = head.finish().unwrap();
        assert_eq!(back.status, StatusCode::OK);
        assert_eq!(back.headers.len(), 1, "connection is not sent");

        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        let mut block = Vec::new();
        encode_trailers(&mut enc, &t, &mut block);
        let mut tr = Trailers::default();
        for f in decode(&mut dec, &block) {
            tr.field(f);
        }
        assert_eq!(tr.finish().unwrap(), t);
    }
}

//! What torii knows about the client connection a request came on: set
//! by the listener (TLS facts, protocol detection, original destination)
//! and read by every phase.

use std::net::SocketAddr;

use http::HeaderValue;

/// What torii knows about the client connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: Option<TlsFacts>,
    /// What the first bytes were classified as (`tls`, `http1`, `http2`,
    /// `tcp`: the `detected` label of `torii_protocol_detections_total`).
    pub detected: &'static str,
    /// Why, in plain words (for the access log).
    pub detect_reason: &'static str,
    /// Where the connection was headed before iptables redirected it (on an
    /// `original_destination` listener): requests no route takes go there.
    pub original_dst: Option<SocketAddr>,
    /// The peer's IP as a header value (`x-forwarded-for`), made once per
    /// connection rather than per request.
    pub peer_ip: HeaderValue,
}

impl ConnInfo {
    /// A plaintext connection not (yet) classified.
    pub fn new(peer: SocketAddr) -> Self {
        ConnInfo {
            peer,
            tls: None,
            detected: "",
            detect_reason: "",
            original_dst: None,
            peer_ip: HeaderValue::from_str(&peer.ip().to_string())
                .expect("an IP address is a valid header value"),
        }
    }
}

impl ConnInfo {
    /// The caller's identity from its verified client certificate: the
    /// first URI SAN (a SPIFFE ID), else the first DNS SAN, else the first
    /// SAN of any kind, without its `URI:`/`DNS:` tag. None without mTLS.
    pub fn identity(&self) -> Option<&str> {
        let sans = &self.tls.as_ref()?.client_sans;
        let tagged = |tag: &str| sans.iter().find_map(|s| s.strip_prefix(tag));
        tagged("URI:").or_else(|| tagged("DNS:")).or_else(|| {
            sans.first()
                .map(|s| s.split_once(':').map_or(s.as_str(), |(_, v)| v))
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    pub sni: Option<String>,
    pub alpn: Option<std::borrow::Cow<'static, str>>,
    pub version: Option<std::borrow::Cow<'static, str>>,
    /// SANs of a verified client certificate (`DNS:…`, `URI:…`, `IP:…`).
    pub client_sans: Vec<String>,
    /// `x-forwarded-client-cert` for a verified client certificate.
    pub xfcc: Option<HeaderValue>,
}

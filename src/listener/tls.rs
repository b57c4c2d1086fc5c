//! TLS on listeners: certificates chosen by SNI, ALPN, client certificates
//! checked against a CA and an allow-list of SANs, and plain-words reasons
//! for every handshake that fails.

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderValue;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError, SignatureScheme,
};
use x509_parser::extensions::GeneralName;

use crate::config::{ClientAuth, SanPattern, ServerTls};
use crate::proxy::TlsFacts;

/// Builds the rustls server configuration for a listener.
pub fn server_config(tls: &ServerTls, listener: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = crate::tls_provider();
    let resolver = SniResolver::new(tls, &provider)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, listener, &provider)?),
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = tls.alpn.clone();
    // Session tickets make reconnecting clients skip the full handshake.
    cfg.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
    Ok(Arc::new(cfg))
}

/// Picks a certificate by SNI: exact names first, then `*.suffix`, then
/// the default (the first certificate without names, else the first one).
#[derive(Debug)]
struct SniResolver {
    exact: Vec<(String, Arc<CertifiedKey>)>,
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn new(tls: &ServerTls, provider: &rustls::crypto::CryptoProvider) -> Result<Self, String> {
        let mut exact = Vec::new();
        let mut wildcard = Vec::new();
        let mut keys = Vec::new();
        for c in &tls.certificates {
            let key = provider
                .key_provider
                .load_private_key(c.key.clone_key())
                .map_err(|e| format!("{}: {e}", c.cert_path.display()))?;
            let ck = Arc::new(CertifiedKey::new(c.chain.clone(), key));
            for name in &c.server_names {
                match name.strip_prefix('*') {
                    Some(suffix) => wildcard.push((suffix.to_string(), ck.clone())),
                    None => exact.push((name.clone(), ck.clone())),
                }
            }
            keys.push(ck);
        }
        let default_at = tls
            .certificates
            .iter()
            .position(|c| c.server_names.is_empty())
            .unwrap_or(0);
        let default = keys.get(default_at).cloned().ok_or("no certificates")?;
        Ok(SniResolver {
            exact,
            wildcard,
            default,
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            let sni = sni.to_ascii_lowercase();
            if let Some((_, ck)) = self.exact.iter().find(|(n, _)| *n == sni) {
                return Some(ck.clone());
            }
            if let Some((_, ck)) = self
                .wildcard
                .iter()
                .find(|(suffix, _)| sni.ends_with(suffix.as_str()) && sni.len() > suffix.len())
            {
                return Some(ck.clone());
            }
        }
        Some(self.default.clone())
    }
}

fn client_verifier(
    ca: &ClientAuth,
    listener: &str,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in &ca.roots {
        roots
            .add(c.clone())
            .map_err(|e| format!("client_auth.ca {}: {e}", ca.ca_path.display()))?;
    }
    let mut b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if !ca.required {
        b = b.allow_unauthenticated();
    }
    let inner = b.build().map_err(|e| format!("client_auth: {e}"))?;
    if ca.allowed_sans.is_empty() {
        return Ok(inner);
    }
    Ok(Arc::new(SanVerifier {
        inner,
        allowed: ca.san_patterns.clone(),
        listener: listener.to_string(),
    }))
}

/// The CA check, then: at least one SAN of the client certificate must
/// match an entry of the listener's `allowed_sans` (exact, `*.example.com`
/// or `spiffe://trust.domain/path/*`).
#[derive(Debug)]
struct SanVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<SanPattern>,
    listener: String,
}

impl ClientCertVerifier for SanVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let sans = cert_sans(end_entity);
        let allowed = sans
            .iter()
            .any(|(kind, value)| self.allowed.iter().any(|a| a.matches(kind, value)));
        if allowed {
            Ok(ok)
        } else {
            let shown: Vec<String> = sans.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            tracing::debug!(
                listener = %self.listener,
                presented = %shown.join(","),
                allowed = %self.allowed.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                "client certificate SANs are not in allowed_sans"
            );
            Err(TlsError::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// SANs of a certificate as (kind, value): ("DNS", name), ("URI", uri), ("IP", addr).
pub fn cert_sans(der: &CertificateDer<'_>) -> Vec<(&'static str, String)> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(("DNS", d.to_string())),
            GeneralName::URI(u) => Some(("URI", u.to_string())),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some((
                    "IP",
                    std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string(),
                )),
                16 => Some((
                    "IP",
                    std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string(),
                )),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Handshake facts for logs and upstream headers.
/// What the handshake on `conn` settled; `sni` as the ClientHello sent it
/// (rustls's unbuffered connection does not say).
pub fn facts(conn: &rustls::server::UnbufferedServerConnection, sni: Option<String>) -> TlsFacts {
    let mut f = TlsFacts {
        sni,
        // The common values are static strings: every connection keeps
        // these for its lifetime.
        alpn: conn.alpn_protocol().map(|p| match p {
            b"h2" => Cow::Borrowed("h2"),
            b"http/1.1" => Cow::Borrowed("http/1.1"),
            other => Cow::Owned(String::from_utf8_lossy(other).into_owned()),
        }),
        version: conn.protocol_version().map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => Cow::Borrowed("TLSv1.3"),
            rustls::ProtocolVersion::TLSv1_2 => Cow::Borrowed("TLSv1.2"),
            other => Cow::Owned(format!("{other:?}").replace('_', ".")),
        }),
        ..Default::default()
    };
    if let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) {
        let sans = cert_sans(leaf);
        f.client_sans = sans.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        f.xfcc = xfcc(leaf, &sans);
    }
    f
}

/// `x-forwarded-client-cert` in Envoy's format, so upstreams written for
/// Envoy read it unchanged: `Hash=<sha256>;Subject="…";URI=…;DNS=…`.
fn xfcc(leaf: &CertificateDer<'_>, sans: &[(&'static str, String)]) -> Option<HeaderValue> {
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    let mut v = String::from("Hash=");
    for b in digest.as_ref() {
        v.push_str(&format!("{b:02x}"));
    }
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) {
        let subject = cert.subject().to_string().replace('"', "\\\"");
        v.push_str(&format!(";Subject=\"{subject}\""));
    }
    for (kind, value) in sans {
        if *kind != "IP" {
            v.push_str(&format!(";{kind}={value}"));
        }
    }
    HeaderValue::from_str(&v).ok()
}

/// A short, stable reason for a failed handshake (the metrics label), and
/// the sentence an operator reads in the log.
pub fn classify(err: &std::io::Error) -> (&'static str, String) {
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) else {
        return match err.kind() {
            std::io::ErrorKind::UnexpectedEof => (
                "client_closed",
                "the client closed the connection during the TLS handshake (often: it did not trust torii's certificate)".into(),
            ),
            _ => ("io_error", format!("the TLS handshake failed: {err}")),
        };
    };
    match tls {
        TlsError::NoCertificatesPresented => (
            "no_client_cert",
            "the client sent no certificate, and this listener requires one (client_auth.required)".into(),
        ),
        TlsError::InvalidCertificate(CertificateError::UnknownIssuer) => (
            "untrusted_client_cert",
            "the client certificate is not signed by the listener's client_auth.ca".into(),
        ),
        TlsError::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            ("client_cert_expired", "the client certificate has expired".into())
        }
        TlsError::InvalidCertificate(CertificateError::ApplicationVerificationFailure) => (
            "san_not_allowed",
            "the client certificate is valid but none of its SANs is in client_auth.allowed_sans".into(),
        ),
        TlsError::InvalidCertificate(other) => ("bad_client_cert", format!("the client certificate was rejected: {other}")),
        TlsError::NoApplicationProtocol => (
            "no_common_alpn",
            "the client offered no ALPN protocol this listener advertises (tls.alpn)".into(),
        ),
        TlsError::PeerIncompatible(p) => ("incompatible", format!("the client's TLS is incompatible: {}", words(&format!("{p:?}")))),
        TlsError::InvalidMessage(_) => (
            "not_tls",
            "the client did not speak TLS".into(),
        ),
        TlsError::AlertReceived(a) => (
            "alert_received",
            format!("the client aborted the handshake with alert \"{}\" (it probably does not trust torii's certificate)", words(&format!("{a:?}"))),
        ),
        other => ("tls_error", format!("the TLS handshake failed: {other}")),
    }
}

/// rustls's enum names (`NoCipherSuitesInCommon`, `UnknownCA`) as words
/// (`no cipher suites in common`, `unknown CA`) for messages people read.
fn words(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 8);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.is_empty() {
            return;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        // An acronym (CA, ALPN) keeps its case; a word is lower-cased.
        if word.chars().filter(|c| c.is_uppercase()).count() > 1 {
            out.push_str(word);
        } else {
            out.push_str(&word.to_lowercase());
        }
        word.clear();
    };
    for (i, &c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1);
        let starts_word = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase() || (p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
            });
        if starts_word || !c.is_alphanumeric() {
            flush(&mut word, &mut out);
        }
        if c.is_alphanumeric() {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod words_tests {
    #[test]
    fn rustls_names_read_as_words() {
        assert_eq!(
            super::words("NoCipherSuitesInCommon"),
            "no cipher suites in common"
        );
        assert_eq!(super::words("UnknownCA"), "unknown CA");
        assert_eq!(super::words("BadCertificate"), "bad certificate");
        assert_eq!(super::words("Unknown(250)"), "unknown 250");
    }
}

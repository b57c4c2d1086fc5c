//! TLS settings: reading PEM certificates and keys (and checking that they
//! belong together and are in date), listener TLS with ALPN and client auth.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::context::Ctx;
use super::locate::join;
use super::model::*;
use super::patterns::host_pattern;
use super::raw::{RawCertificate, RawClientAuth, RawServerTls};

pub fn server(cx: &mut Ctx, path: &str, raw: RawServerTls) -> Option<ServerTls> {
    let certs_path = join(path, "certificates");
    let raw_certs = raw.certificates.unwrap_or_default();
    if raw_certs.is_empty() {
        cx.error(
            &certs_path,
            format!(
                "{certs_path} is empty or missing; a TLS listener needs at least one \
                 certificate: - {{cert: server.crt, key: server.key}}"
            ),
        );
    }
    let certificates: Vec<Option<CertifiedKeySource>> = raw_certs
        .into_iter()
        .enumerate()
        .map(|(i, c)| certificate(cx, &format!("{certs_path}[{i}]"), c))
        .collect();
    let certificates: Option<Vec<_>> = certificates.into_iter().collect();
    if let Some(certs) = &certificates {
        one_default(cx, &certs_path, certs);
    }
    let alpn = alpn(cx, &join(path, "alpn"), raw.alpn);
    let client_auth = raw
        .client_auth
        .map(|c| client_auth(cx, &join(path, "client_auth"), c));
    let certificates = certificates.filter(|c| !c.is_empty());
    Some(ServerTls {
        certificates: certificates?,
        alpn: alpn?,
        client_auth: match client_auth {
            Some(c) => Some(c?),
            None => None,
        },
    })
}

fn certificate(cx: &mut Ctx, path: &str, raw: RawCertificate) -> Option<CertifiedKeySource> {
    let cert_at = join(path, "cert");
    let key_at = join(path, "key");
    let cert = cx.required(
        &cert_at,
        &raw.cert,
        "write the PEM certificate chain file, like certs/server.crt",
    );
    let key = cx.required(
        &key_at,
        &raw.key,
        "write the PEM private key file, like certs/server.key",
    );
    let names_at = join(path, "server_names");
    let server_names: Vec<Option<String>> = raw
        .server_names
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let at = format!("{names_at}[{i}]");
            host_pattern(name)
                .map_err(|why| cx.error(&at, format!("{at} {name:?}: {why}")))
                .ok()
                .map(|_| name.trim().to_ascii_lowercase())
        })
        .collect();
    let (Some(cert), Some(key)) = (cert, key) else {
        // Still check the half that is there.
        if let Some(cert) = cert {
            read_certs(cx, &cert_at, cert, "certificate");
        }
        if let Some(key) = key {
            read_key(cx, &key_at, key);
        }
        return None;
    };
    let (cert_path, chain, key) = certified_key(cx, &cert_at, cert, &key_at, key)?;
    Some(CertifiedKeySource {
        cert_path,
        chain,
        key: Arc::new(key),
        server_names: server_names.into_iter().collect::<Option<_>>()?,
    })
}

/// Only one certificate may be the default (no `server_names`): with two,
/// the second would never be served.
fn one_default(cx: &mut Ctx, path: &str, certs: &[CertifiedKeySource]) {
    let defaults: Vec<usize> = (0..certs.len())
        .filter(|&i| certs[i].server_names.is_empty())
        .collect();
    if let [first, rest @ ..] = defaults.as_slice() {
        for i in rest {
            let at = format!("{path}[{i}]");
            cx.error(
                &at,
                format!(
                    "{at} has no server_names, and neither has {path}[{first}]; only one \
                     certificate can be the default: give this one server_names"
                ),
            );
        }
    }
    let mut seen = HashSet::new();
    for (i, cert) in certs.iter().enumerate() {
        for (j, name) in cert.server_names.iter().enumerate() {
            if !seen.insert(name.as_str()) {
                let at = format!("{path}[{i}].server_names[{j}]");
                cx.warning(&at, format!("server name {name:?} is listed for an earlier certificate too; the first one wins"));
            }
        }
    }
}

fn alpn(cx: &mut Ctx, path: &str, raw: Option<Vec<String>>) -> Option<Vec<Vec<u8>>> {
    let Some(list) = raw else {
        return Some(DEFAULT_ALPN.iter().map(|p| p.as_bytes().to_vec()).collect());
    };
    if list.is_empty() {
        cx.error(
            path,
            format!(
                "{path} is empty: gRPC clients built on C-core (Python, C++, Ruby grpcio) refuse \
                 a TLS connection that negotiates no ALPN; remove alpn to get the default \
                 [h2, http/1.1], or list the protocols"
            ),
        );
        return None;
    }
    let mut ok = true;
    for (i, proto) in list.iter().enumerate() {
        if proto.is_empty() || proto.len() > 255 {
            let at = format!("{path}[{i}]");
            cx.error(&at, format!("{at} must be 1 to 255 bytes long, like h2"));
            ok = false;
        }
    }
    if !list.iter().any(|p| p == "h2") {
        cx.findings.pitfall(
            path,
            super::locate::Target::Value,
            "tls-no-alpn",
            format!("{path} has no h2: gRPC clients need HTTP/2 and will fail to connect; Python, C++ and Ruby clients (C-core) say 'Cannot check peer: missing selected ALPN property'"),
            "remove alpn (the default is [h2, http/1.1]) or put h2 first".into(),
        );
    }
    ok.then(|| list.into_iter().map(String::into_bytes).collect())
}

fn client_auth(cx: &mut Ctx, path: &str, raw: RawClientAuth) -> Option<ClientAuth> {
    let ca_at = join(path, "ca");
    let ca = cx.required(
        &ca_at,
        &raw.ca,
        "write the PEM file of the CA that signs client certificates",
    );
    let roots = ca.and_then(|ca| read_certs(cx, &ca_at, ca, "CA certificate"));
    let sans_at = join(path, "allowed_sans");
    let mut sans = Vec::new();
    let mut patterns = Vec::new();
    for (i, san) in raw.allowed_sans.unwrap_or_default().into_iter().enumerate() {
        let at = format!("{sans_at}[{i}]");
        if san.trim().is_empty() {
            cx.error(
                &at,
                format!("{at} is empty; write a DNS name or a URI such as a SPIFFE ID"),
            );
        } else {
            match SanPattern::parse(san.trim()) {
                Ok(p) => patterns.push(p),
                Err(why) => cx.error(&at, format!("{at} {:?}: {why}", san.trim())),
            }
        }
        sans.push(san.trim().to_string());
    }
    let (ca_path, roots) = roots?;
    Some(ClientAuth {
        ca_path,
        roots,
        required: raw.required.unwrap_or(true),
        allowed_sans: sans,
        san_patterns: patterns,
    })
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(
    cx: &mut Ctx,
    cert_at: &str,
    cert: &str,
    key_at: &str,
    key: &str,
) -> Option<(
    PathBuf,
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
)> {
    let chain = read_certs(cx, cert_at, cert, "certificate");
    let key_der = read_key(cx, key_at, key);
    let ((cert_path, chain), key_der) = (chain?, key_der?);
    let signer = match rustls::crypto::ring::sign::any_supported_type(&key_der) {
        Ok(signer) => signer,
        Err(_) => {
            cx.error(
                key_at,
                format!("{key:?} holds a key torii cannot use; use an RSA, ECDSA (P-256/P-384) or Ed25519 key"),
            );
            return None;
        }
    };
    let pair = rustls::sign::CertifiedKey::new(chain.clone(), signer);
    match pair.keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            cx.error(
                key_at,
                format!(
                    "the key in {key:?} does not belong to the certificate in {cert:?}; \
                     use the key the certificate was issued for"
                ),
            );
            None
        }
        Err(rustls::Error::InvalidCertificate(_)) => {
            cx.error(
                cert_at,
                format!("{cert:?}: the first certificate is not a valid X.509 certificate"),
            );
            None
        }
        _ => Some((cert_path, chain, key_der)),
    }
}

/// Every certificate in a PEM file (at least one); out-of-date ones are warnings.
pub fn read_certs(
    cx: &mut Ctx,
    at: &str,
    written: &str,
    what: &str,
) -> Option<(PathBuf, Vec<CertificateDer<'static>>)> {
    let (file, bytes) = read(cx, at, written, what)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let certs = match certs {
        Ok(certs) if !certs.is_empty() => certs,
        Ok(_) => {
            let mut message = format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                shown(written, &file)
            );
            if PrivateKeyDer::from_pem_slice(&bytes).is_ok() {
                message += "; it holds a private key: are cert and key swapped?";
            }
            cx.error(at, message);
            return None;
        }
        Err(e) => {
            cx.error(
                at,
                format!("{} is not valid PEM: {e}", shown(written, &file)),
            );
            return None;
        }
    };
    for (i, der) in certs.iter().enumerate() {
        check_dates(cx, at, written, i, der);
    }
    Some((file, certs))
}

fn read_key(cx: &mut Ctx, at: &str, written: &str) -> Option<PrivateKeyDer<'static>> {
    let (file, bytes) = read(cx, at, written, "private key")?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Some(key),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            cx.error(
                at,
                format!(
                    "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1 \"-----BEGIN ... PRIVATE KEY-----\")",
                    shown(written, &file)
                ),
            );
            None
        }
        Err(e) => {
            cx.error(
                at,
                format!("{} is not valid PEM: {e}", shown(written, &file)),
            );
            None
        }
    }
}

pub fn read(cx: &mut Ctx, at: &str, written: &str, what: &str) -> Option<(PathBuf, Vec<u8>)> {
    let file = cx.file(written.trim());
    match std::fs::read(&file) {
        Ok(bytes) => {
            if !cx.files.contains(&file) {
                cx.files.push(file.clone());
            }
            Some((file, bytes))
        }
        Err(e) => {
            let why = e.to_string();
            let why = why.split(" (os error").next().unwrap_or(&why);
            cx.error(
                at,
                format!("cannot read {what} file {}: {why}", shown(written, &file)),
            );
            None
        }
    }
}

/// `"certs/a.crt"`, plus where that is when it was relative.
fn shown(written: &str, file: &Path) -> String {
    if Path::new(written) == file {
        format!("{written:?}")
    } else {
        format!("{written:?} ({})", file.display())
    }
}

fn check_dates(cx: &mut Ctx, at: &str, written: &str, i: usize, der: &CertificateDer) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        cx.error(
            at,
            format!(
                "certificate {} in {written:?} is not a valid X.509 certificate",
                i + 1
            ),
        );
        return;
    };
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    let subject = cert.subject().to_string();
    if now > validity.not_after {
        cx.findings.pitfall(
            at,
            super::locate::Target::Value,
            "cert-expiry",
            format!(
                "certificate {} in {written:?} ({subject}) expired on {}; clients will refuse it",
                i + 1,
                validity.not_after.to_datetime().date()
            ),
            "renew it and replace the file; torii picks up the new file without a restart".into(),
        );
    } else if now < validity.not_before {
        cx.warning(
            at,
            format!(
                "certificate {} in {written:?} ({subject}) is not valid until {}; clients will refuse it until then",
                i + 1,
                validity.not_before.to_datetime().date()
            ),
        );
    }
}

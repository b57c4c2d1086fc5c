//! A cluster's `transport_socket` with an `UpstreamTlsContext` → torii's
//! upstream TLS: the CA and the client certificate inline or from files
//! (not SDS), the SNI. torii always verifies the upstream's certificate,
//! so a context without a trusted CA is refused rather than weakened.
//!
//! A listener filter chain's `DownstreamTlsContext` → the listener's TLS,
//! as a file listener's `tls:`: its certificate, ALPN (torii's default
//! when empty), and client certificates checked against `trusted_ca`
//! (required with `require_client_certificate`).

use std::path::PathBuf;

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::{transport_socket, DataSource, TransportSocket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::tls_parameters::TlsProtocol;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsCertificate,
    UpstreamTlsContext,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::decode;
use crate::config::{CertifiedKeySource, ClientAuth, ServerTls, UpstreamTls, DEFAULT_ALPN};

const UPSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const DOWNSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const RAW_BUFFER: &str = "envoy.transport_sockets.raw_buffer";
const SDS: &str =
    "torii takes certificates inline or from files, not from SDS or certificate providers";

/// None for plaintext (`raw_buffer`); errors name the field below
/// `transport_socket`.
pub fn upstream_tls(
    ts: &TransportSocket,
    ignored: &mut Vec<String>,
) -> Result<Option<UpstreamTls>, String> {
    let any = match &ts.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => any,
        _ if ts.name == RAW_BUFFER => return Ok(None),
        _ => {
            return Err(format!(
                "transport_socket {:?} has no typed_config; torii takes an UpstreamTlsContext \
                 (or raw_buffer for plaintext)",
                ts.name
            ))
        }
    };
    if any.type_url.ends_with(".RawBuffer") {
        return Ok(None);
    }
    let ctx: UpstreamTlsContext =
        decode(any, UPSTREAM_TLS).map_err(|e| format!("transport_socket.typed_config {e}"))?;
    let common = ctx.common_tls_context.unwrap_or_default();
    no_sds_certificates(&common)?;
    let Some(validation) = validation_context(&common)? else {
        return Err(
            "transport_socket.common_tls_context.validation_context is missing; torii \
                    verifies upstream certificates and needs its trusted_ca"
                .into(),
        );
    };
    let at = "transport_socket.common_tls_context.validation_context.trusted_ca";
    let (ca, ca_path) = data(validation.trusted_ca.as_ref(), at)?;
    let roots = CertificateDer::pem_slice_iter(&ca)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{at}: not PEM certificates: {e}"))?;
    if roots.is_empty() {
        return Err(format!("{at} holds no certificate"));
    }
    if !validation.match_typed_subject_alt_names.is_empty() {
        ignored.push(
            "match_typed_subject_alt_names (torii checks the certificate against the SNI, or the \
             endpoint's host)"
                .into(),
        );
    }
    let (client_cert, cert_path) = match common.tls_certificates.as_slice() {
        [] => (None, None),
        [c, ..] => {
            let (chain, key, path) = certificate(c)?;
            (Some((chain, std::sync::Arc::new(key))), path)
        }
    };
    let server_name = Some(ctx.sni).filter(|s| !s.is_empty());
    if let Some(name) = &server_name {
        if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
            return Err(format!(
                "transport_socket sni {name:?} is not a valid DNS name or IP address"
            ));
        }
    }
    Ok(Some(UpstreamTls {
        roots,
        server_name,
        ca_path,
        cert_path,
        client_cert,
    }))
}

/// The validation context, unless it comes from SDS or a certificate
/// provider (refused: torii would verify against nothing).
#[allow(deprecated)] // the deprecated provider fields are refused too
fn validation_context(
    common: &CommonTlsContext,
) -> Result<Option<CertificateValidationContext>, String> {
    let at = "transport_socket.common_tls_context";
    let v = match &common.validation_context_type {
        None => return Ok(None),
        Some(ValidationContextType::ValidationContext(v)) => v.clone(),
        Some(ValidationContextType::CombinedValidationContext(c))
            if c.validation_context_sds_secret_config.is_none()
                && c.validation_context_certificate_provider.is_none()
                && c.validation_context_certificate_provider_instance.is_none() =>
        {
            c.default_validation_context.clone().unwrap_or_default()
        }
        Some(ValidationContextType::CombinedValidationContext(_)) => {
            return Err(format!("{at}.combined_validation_context: {SDS}"))
        }
        Some(_) => return Err(format!("{at}.validation_context: {SDS}")),
    };
    if v.ca_certificate_provider_instance.is_some() {
        return Err(format!(
            "{at}.validation_context.ca_certificate_provider_instance: {SDS}"
        ));
    }
    Ok(Some(v))
}

/// Certificates from SDS or certificate providers are refused.
#[allow(deprecated)] // the deprecated provider fields are refused too
fn no_sds_certificates(common: &CommonTlsContext) -> Result<(), String> {
    let at = "transport_socket.common_tls_context";
    if !common.tls_certificate_sds_secret_configs.is_empty() {
        return Err(format!("{at}.tls_certificate_sds_secret_configs: {SDS}"));
    }
    if common.tls_certificate_provider_instance.is_some()
        || common.tls_certificate_certificate_provider.is_some()
        || common
            .tls_certificate_certificate_provider_instance
            .is_some()
    {
        return Err(format!("{at}.tls_certificate_provider_instance: {SDS}"));
    }
    if common.custom_tls_certificate_selector.is_some() {
        return Err(format!(
            "{at}.custom_tls_certificate_selector: torii picks the certificate itself"
        ));
    }
    Ok(())
}

type Chain = Vec<CertificateDer<'static>>;

/// The first `tls_certificates` entry: its chain, key, and the chain's file.
fn certificate(
    c: &TlsCertificate,
) -> Result<(Chain, PrivateKeyDer<'static>, Option<PathBuf>), String> {
    let at = "transport_socket.common_tls_context.tls_certificates[0]";
    if c.private_key_provider.is_some() {
        return Err(format!(
            "{at}.private_key_provider: torii takes the private key inline or from a file"
        ));
    }
    let (chain, path) = data(
        c.certificate_chain.as_ref(),
        &format!("{at}.certificate_chain"),
    )?;
    let (key, _) = data(c.private_key.as_ref(), &format!("{at}.private_key"))?;
    let chain = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{at}.certificate_chain: not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{at}.certificate_chain holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| format!("{at}.private_key: not a PEM private key: {e}"))?;
    Ok((chain, key, path))
}

/// A filter chain's `transport_socket`: the listener's TLS, or None for
/// plaintext (`raw_buffer`). `listener` names inline certificates in
/// `/config` and the certificate metrics. Errors name the field below
/// `transport_socket`.
#[allow(deprecated)] // match_subject_alt_names is refused as its successor is
pub fn downstream_tls(
    ts: &TransportSocket,
    listener: &str,
    ignored: &mut Vec<String>,
) -> Result<Option<ServerTls>, String> {
    let any = match &ts.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => any,
        _ if ts.name == RAW_BUFFER => return Ok(None),
        _ => {
            return Err(format!(
                "transport_socket {:?} has no typed_config; torii takes a DownstreamTlsContext \
                 (or raw_buffer for plaintext)",
                ts.name
            ))
        }
    };
    if any.type_url.ends_with(".RawBuffer") {
        return Ok(None);
    }
    let ctx: DownstreamTlsContext =
        decode(any, DOWNSTREAM_TLS).map_err(|e| format!("transport_socket.typed_config {e}"))?;
    let common = ctx.common_tls_context.clone().unwrap_or_default();
    no_sds_certificates(&common)?;
    let at = "transport_socket.common_tls_context";
    let (chain, key, cert_path) = match common.tls_certificates.as_slice() {
        [] => {
            return Err(format!(
                "{at}.tls_certificates is empty; a TLS listener needs its certificate chain \
                 and private key (inline or a filename)"
            ))
        }
        [first, rest @ ..] => {
            if !rest.is_empty() {
                ignored.push(format!(
                    "{at}.tls_certificates beyond the first ({} more; the first is served)",
                    rest.len()
                ));
            }
            certificate(first)?
        }
    };
    check_pair(&chain, &key)?;
    let inline = |what: &str| PathBuf::from(format!("(inline {what} of xDS listener {listener})"));
    if let Some(p) = &common.tls_params {
        if p.tls_minimum_protocol_version == TlsProtocol::TlSv13 as i32 {
            return Err(format!(
                "{at}.tls_params.tls_minimum_protocol_version TLSv1_3: torii's listeners \
                 accept TLS 1.2 and 1.3; serving 1.2 where only 1.3 was asked for would weaken it"
            ));
        }
        if *p != Default::default() {
            ignored.push(format!(
                "{at}.tls_params (torii uses rustls' safe defaults: TLS 1.2 and 1.3)"
            ));
        }
    }
    let require = ctx.require_client_certificate.is_some_and(|b| b.value);
    let client_auth = match validation_context(&common)? {
        None if require => {
            return Err(format!(
                "require_client_certificate is true and {at}.validation_context is missing; \
                 torii needs its trusted_ca to check client certificates"
            ))
        }
        None => None,
        Some(v) => {
            let v_at = format!("{at}.validation_context");
            if !v.match_typed_subject_alt_names.is_empty() || !v.match_subject_alt_names.is_empty()
            {
                return Err(format!(
                    "{v_at}.match_typed_subject_alt_names: torii does not take client SAN \
                     matchers from xDS yet, and accepting any certificate the CA signed would \
                     let in clients the matchers exclude; use a file listener's allowed_sans"
                ));
            }
            if !v.verify_certificate_spki.is_empty()
                || !v.verify_certificate_hash.is_empty()
                || v.crl.is_some()
            {
                return Err(format!(
                    "{v_at}: verify_certificate_spki, verify_certificate_hash and crl are \
                     checks torii does not make; it would accept certificates they refuse"
                ));
            }
            if v.allow_expired_certificate {
                ignored.push(format!(
                    "{v_at}.allow_expired_certificate (torii refuses expired client certificates)"
                ));
            }
            let (ca, ca_path) = data(v.trusted_ca.as_ref(), &format!("{v_at}.trusted_ca"))?;
            let roots = CertificateDer::pem_slice_iter(&ca)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{v_at}.trusted_ca: not PEM certificates: {e}"))?;
            if roots.is_empty() {
                return Err(format!("{v_at}.trusted_ca holds no certificate"));
            }
            Some(ClientAuth {
                ca_path: ca_path.unwrap_or_else(|| inline("trusted_ca")),
                roots,
                required: require,
                allowed_sans: Vec::new(),
                san_patterns: Vec::new(),
            })
        }
    };
    let alpn = if common.alpn_protocols.is_empty() {
        DEFAULT_ALPN.iter().map(|p| p.as_bytes().to_vec()).collect()
    } else {
        for (i, p) in common.alpn_protocols.iter().enumerate() {
            if p.is_empty() || p.len() > 255 {
                return Err(format!(
                    "{at}.alpn_protocols[{i}] must be 1 to 255 bytes long, like h2"
                ));
            }
        }
        common
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect()
    };
    if ctx.require_sni.is_some_and(|b| b.value) {
        ignored.push("require_sni (torii serves its certificate without SNI too)".into());
    }
    if ctx.session_ticket_keys_type.is_some() {
        ignored.push("session_ticket_keys (torii makes and rotates its own)".into());
    }
    Ok(Some(ServerTls {
        certificates: vec![CertifiedKeySource {
            cert_path: cert_path.unwrap_or_else(|| inline("certificate")),
            chain,
            key: std::sync::Arc::new(key),
            server_names: Vec::new(),
        }],
        alpn,
        client_auth,
    }))
}

/// The key must be one torii can use, and belong to the certificate.
fn check_pair(chain: &Chain, key: &PrivateKeyDer<'static>) -> Result<(), String> {
    let at = "transport_socket.common_tls_context.tls_certificates[0]";
    let signer = rustls::crypto::ring::sign::any_supported_type(key).map_err(|_| {
        format!(
            "{at}.private_key: a key torii cannot use; use an RSA, ECDSA (P-256/P-384) or \
             Ed25519 key"
        )
    })?;
    match rustls::sign::CertifiedKey::new(chain.clone(), signer).keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(
            format!("{at}.private_key does not belong to the certificate in certificate_chain"),
        ),
        Err(rustls::Error::InvalidCertificate(_)) => Err(format!(
            "{at}.certificate_chain: the first certificate is not a valid X.509 certificate"
        )),
        _ => Ok(()),
    }
}

/// The bytes of a DataSource, and the file they came from.
fn data(ds: Option<&DataSource>, at: &str) -> Result<(Vec<u8>, Option<PathBuf>), String> {
    match ds.and_then(|d| d.specifier.as_ref()) {
        Some(Specifier::Filename(f)) => std::fs::read(f)
            .map(|b| (b, Some(PathBuf::from(f))))
            .map_err(|e| format!("{at}: cannot read {f:?}: {e}")),
        Some(Specifier::InlineBytes(b)) => Ok((b.clone(), None)),
        Some(Specifier::InlineString(s)) => Ok((s.clone().into_bytes(), None)),
        Some(_) => Err(format!(
            "{at}: torii takes filename, inline_bytes or inline_string"
        )),
        None => Err(format!("{at} is missing")),
    }
}

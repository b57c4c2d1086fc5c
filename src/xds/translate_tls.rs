//! A cluster's `transport_socket` with an `UpstreamTlsContext` → torii's
//! upstream TLS: the CA and the client certificate inline or from files
//! (not SDS), the SNI. torii always verifies the upstream's certificate,
//! so a context without a trusted CA is refused rather than weakened.

use std::path::PathBuf;

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::{transport_socket, DataSource, TransportSocket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::decode;
use crate::config::UpstreamTls;

const UPSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
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
    if !common.tls_certificate_sds_secret_configs.is_empty()
        || common.tls_certificate_provider_instance.is_some()
    {
        return Err(format!("transport_socket.common_tls_context: {SDS}"));
    }
    let validation = match common.validation_context_type {
        Some(ValidationContextType::ValidationContext(v)) => v,
        Some(ValidationContextType::CombinedValidationContext(c))
            if c.validation_context_sds_secret_config.is_none() =>
        {
            c.default_validation_context.unwrap_or_default()
        }
        Some(_) => {
            return Err(format!(
                "transport_socket.common_tls_context.validation_context: {SDS}"
            ))
        }
        None => {
            return Err(
                "transport_socket.common_tls_context.validation_context is missing; torii \
                        verifies upstream certificates and needs its trusted_ca"
                    .into(),
            )
        }
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
            let at = "transport_socket.common_tls_context.tls_certificates[0]";
            let (chain, path) = data(
                c.certificate_chain.as_ref(),
                &format!("{at}.certificate_chain"),
            )?;
            let (key, _) = data(c.private_key.as_ref(), &format!("{at}.private_key"))?;
            let chain = CertificateDer::pem_slice_iter(&chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{at}.certificate_chain: not PEM certificates: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| format!("{at}.private_key: not a PEM private key: {e}"))?;
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

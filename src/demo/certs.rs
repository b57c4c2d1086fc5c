//! Throwaway certificates for `torii demo` and for tests.
//!
//! [`TestPki`] is a CA that issues ECDSA P-256 leaf certificates (the fastest
//! widely supported TLS key type) for servers, for clients with DNS and URI
//! (SPIFFE) SANs, and the broken cases tests need: expired, and issued by a CA
//! nobody trusts. The rest of the module turns PEM into rustls configs, always
//! with the ring provider given explicitly so nothing depends on a process-wide
//! default provider being installed.

use std::error::Error;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Errors from reading PEM or building a rustls config, with the cause in words.
pub type CertError = Box<dyn Error + Send + Sync>;

/// A leaf certificate (PEM, leaf only: the CA is the trust anchor) and its
/// PKCS#8 private key (PEM).
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertPair {
    /// Writes `DIR/NAME.crt` and `DIR/NAME.key`; returns their paths.
    pub fn write_to(&self, dir: &Path, name: &str) -> io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        fs::write(&cert, &self.cert_pem)?;
        fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }

    /// The certificate chain in DER, as rustls wants it.
    pub fn cert_chain(&self) -> Result<Vec<CertificateDer<'static>>, CertError> {
        parse_certs(self.cert_pem.as_bytes(), "the certificate PEM")
    }

    /// The private key in DER, as rustls wants it.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, CertError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| format!("cannot read the private key PEM: {e}").into())
    }
}

/// A certificate authority that exists only in memory (and in files a test
/// writes). Every leaf it issues is ECDSA P-256 and valid from 1975 to 4096,
/// except [`TestPki::expired_cert`].
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

impl TestPki {
    /// A new CA whose subject common name is `name`.
    ///
    /// # Panics
    /// Only if key generation or signing fails, which with ring and these
    /// fixed parameters means the process is broken.
    pub fn new(name: &str) -> Self {
        let key = new_key();
        let mut params = CertificateParams::default();
        params.distinguished_name.remove(DnType::CommonName);
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "torii test");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signing a CA");
        TestPki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM: what clients or servers put in their trust store.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes `DIR/NAME.crt` with the CA certificate; returns its path.
    pub fn write_ca(&self, dir: &Path, name: &str) -> io::Result<PathBuf> {
        let path = dir.join(format!("{name}.crt"));
        fs::write(&path, &self.ca_pem)?;
        Ok(path)
    }

    /// A server certificate for `names`: each is an IP literal (IP SAN) or a
    /// DNS name. The first name is also the common name.
    pub fn server_cert(&self, names: &[&str]) -> CertPair {
        let mut params = leaf_params(names, &[]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate with DNS SANs `dns` and URI SANs `uris`
    /// (e.g. `spiffe://example.org/ns/default/sa/client`).
    pub fn client_cert(&self, dns: &[&str], uris: &[&str]) -> CertPair {
        let mut params = leaf_params(dns, uris);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    /// A certificate for `names` (server and client use) that expired in 2001.
    pub fn expired_cert(&self, names: &[&str]) -> CertPair {
        let mut params = leaf_params(names, &[]);
        params.extended_key_usages = both_usages();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        self.issue(params)
    }

    /// A certificate for DNS/IP `names` and URI SANs `uris` (server and client
    /// use) issued by a fresh CA that nobody trusts.
    pub fn untrusted_cert(names: &[&str], uris: &[&str]) -> CertPair {
        let other = TestPki::new("torii untrusted test CA");
        let mut params = leaf_params(names, uris);
        params.extended_key_usages = both_usages();
        other.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> CertPair {
        let key = new_key();
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing a leaf certificate");
        CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn new_key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generating a P-256 key")
}

fn both_usages() -> Vec<ExtendedKeyUsagePurpose> {
    vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ]
}

/// # Panics
/// If a name is not IA5 (ASCII), which is a bug in the calling test.
fn leaf_params(names: &[&str], uris: &[&str]) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("certificate names must be ASCII");
    for uri in uris {
        let uri = (*uri).try_into().expect("URI SANs must be ASCII");
        params.subject_alt_names.push(SanType::URI(uri));
    }
    let cn = names.first().or(uris.first()).unwrap_or(&"torii test leaf");
    params.distinguished_name.remove(DnType::CommonName);
    params.distinguished_name.push(DnType::CommonName, *cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params
}

/// The crypto provider every config here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no CERTIFICATE block").into());
    }
    Ok(certs)
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, CertError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem.as_bytes(), "the CA PEM")? {
        roots
            .add(cert)
            .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// A server config presenting `cert`. With `client_ca_pem`, clients must
/// present a certificate issued by that CA (mutual TLS). ALPN is left empty:
/// the caller decides what it speaks.
pub fn server_config(
    cert: &CertPair,
    client_ca_pem: Option<&str>,
) -> Result<ServerConfig, CertError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .build()
                .map_err(|e| format!("cannot build the client certificate verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(cert.cert_chain()?, cert.private_key()?)
        .map_err(|e| format!("the certificate and key do not form a usable pair: {e}"))?;
    Ok(config)
}

/// A server config from a PEM certificate chain file and a PEM key file.
pub fn server_config_from_files(cert: &Path, key: &Path) -> Result<ServerConfig, CertError> {
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let pair = CertPair {
        cert_pem: read(cert)?,
        key_pem: read(key)?,
    };
    server_config(&pair, None)
}

/// A client config trusting only `ca_pem`, offering `alpn` (e.g. `["h2"]`;
/// empty offers none) and presenting `client_cert` when given.
pub fn client_config(
    ca_pem: &str,
    client_cert: Option<&CertPair>,
    alpn: &[&str],
) -> Result<ClientConfig, CertError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?);
    let mut config = match client_cert {
        Some(pair) => builder
            .with_client_auth_cert(pair.cert_chain()?, pair.private_key()?)
            .map_err(|e| {
                format!("the client certificate and key do not form a usable pair: {e}")
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(config)
}

//! `torii doctor` against in-process TLS servers whose certificates are made
//! by rcgen for each test: expired, and issued for another name. (The other
//! servers — openssl, grpcio, http.server, torii — are in
//! tests/blackbox/test_doctor.py.)

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use torii::doctor::{self, Mode, Options};

struct Pki {
    dir: std::path::PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pki(tag: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("torii-doctor-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    Pki { dir, ca }
}

/// A TLS server (ALPN h2, http/1.1) with a certificate for `names`, valid
/// from `from` to `to` days from now; it completes handshakes and closes.
async fn tls_server(pki: &Pki, names: &[&str], from: i64, to: i64) -> std::net::SocketAddr {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from);
    params.not_after = now + time::Duration::days(to);
    let cert = params.signed_by(&key, &pki.ca).unwrap();
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(torii::tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    addr
}

fn options(target: String, pki: &Pki, sni: &str) -> Options {
    Options {
        target,
        ca: Some(pki.dir.join("ca.crt")),
        cert: None,
        key: None,
        sni: Some(sni.to_string()),
        service: String::new(),
        path: "/healthz".into(),
        timeout: Duration::from_secs(2),
        json: true,
    }
}

#[tokio::test]
async fn an_expired_certificate() {
    let pki = pki("expired");
    let addr = tls_server(&pki, &["localhost"], -60, -3).await;
    let report = doctor::diagnose(&options(format!("https://{addr}"), &pki, "localhost"))
        .await
        .unwrap();
    assert_eq!(report.mode, Mode::Tls);
    assert!(
        report.tls[0].ok,
        "the handshake itself completes: {:?}",
        report.tls[0]
    );
    assert_eq!(report.tls[0].alpn.as_deref(), Some("h2"));
    let cert = report.certificate.as_ref().unwrap();
    assert!(cert.expired);
    assert!(cert.days_left < 0);
    let problem = cert.problem.as_deref().unwrap();
    assert!(
        problem.starts_with("the certificate expired on "),
        "{problem}"
    );
    for c in &report.clients[..5] {
        assert_eq!(c.works, Some(false), "{c:?}");
        assert!(c.why.contains("expired"), "{c:?}");
        assert!(c.fix.as_deref().unwrap().contains("renew"), "{c:?}");
    }
    assert!(!report.ok);
    let text = doctor::text(&report);
    assert!(text.contains("FAIL certificate"), "{text}");
}

#[tokio::test]
async fn a_certificate_for_another_name() {
    let pki = pki("san");
    let addr = tls_server(&pki, &["api.example.com"], -1, 30).await;
    let report = doctor::diagnose(&options(format!("{addr}"), &pki, "localhost"))
        .await
        .unwrap();
    assert_eq!(report.mode, Mode::Tls, "guessed from the handshake");
    let cert = report.certificate.as_ref().unwrap();
    assert!(cert.chain_ok && !cert.name_ok && !cert.expired, "{cert:?}");
    assert_eq!(cert.sans, ["api.example.com"]);
    assert!(cert
        .problem
        .as_deref()
        .unwrap()
        .contains("not valid for \"localhost\""));
    assert!((28..=30).contains(&cert.days_left), "{cert:?}");
    let grpcio = &report.clients[0];
    assert_eq!(grpcio.works, Some(false));
    assert!(
        grpcio.why.contains("certificate verify failed"),
        "{grpcio:?}"
    );
}

#[tokio::test]
async fn a_certificate_about_to_expire_is_a_problem_even_when_all_else_works() {
    let pki = pki("soon");
    let addr = tls_server(&pki, &["localhost"], -80, 5).await;
    let report = doctor::diagnose(&options(format!("https://{addr}"), &pki, "localhost"))
        .await
        .unwrap();
    let cert = report.certificate.as_ref().unwrap();
    assert!(cert.problem.is_none(), "{cert:?}");
    assert!(
        report.problems.iter().any(|p| p
            .starts_with("[cert-expiry] the certificate expires in 4 days")
            || p.starts_with("[cert-expiry] the certificate expires in 5 days")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn a_name_that_does_not_resolve() {
    let opts = Options {
        target: "no-such-host.invalid:443".into(),
        ca: None,
        cert: None,
        key: None,
        sni: None,
        service: String::new(),
        path: "/healthz".into(),
        timeout: Duration::from_secs(5),
        json: false,
    };
    let report = doctor::diagnose(&opts).await.unwrap();
    assert!(!report.tcp.ok);
    let error = report.tcp.error.as_deref().unwrap();
    assert!(
        error.contains("does not resolve") || error.contains("resolving"),
        "{error}"
    );
    assert!(report.clients.iter().all(|c| c.works == Some(false)));
    assert!(!report.ok);
}

#[test]
fn targets_in_words() {
    let bad = |t: &str| doctor::parse_target(t).unwrap_err();
    assert!(bad("localhost").contains("needs a port"));
    assert!(bad("grpc://x:1").contains("https://host"));
    assert_eq!(
        doctor::parse_target("https://localhost:8443/path").unwrap(),
        ("localhost".to_string(), 8443, Some(Mode::Tls))
    );
}

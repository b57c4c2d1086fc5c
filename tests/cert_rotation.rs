//! Certificates replaced on disk (as cert-manager or a Vault agent does)
//! are used without a SIGHUP or a config edit, and when each certificate
//! in use expires is a metric: `torii_certificate_expiry_seconds`.

mod proxy_support;
mod support;

use std::path::Path;

use proxy_support::start;
use support::process::ToriiProcess;
use support::*;

/// notAfter (Unix seconds) of the first certificate in a PEM text.
fn not_after(pem: &str) -> i64 {
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.validity().not_after.timestamp()
}

use rustls_pki_types::pem::PemObject;

/// Replaces `name` in `dir` the way certificate tools do: a new file
/// renamed over the old one.
fn replace(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn expiry_line<'t>(metrics: &'t str, labels: &[&str]) -> Option<&'t str> {
    metrics
        .lines()
        .filter(|l| l.starts_with("torii_certificate_expiry_seconds{"))
        .find(|l| labels.iter().all(|want| l.contains(want)))
}

#[tokio::test]
async fn a_listener_certificate_replaced_on_disk_is_served_without_a_signal() {
    let dir = TempDir::new("cert-rotation");
    let old_pki = TestPki::new("old CA");
    let new_pki = TestPki::new("new CA");
    old_pki
        .server_cert(&["localhost"])
        .write_to(dir.path(), "server")
        .unwrap();
    let config = dir.path().join("torii.yaml");
    std::fs::write(
        &config,
        r#"admin:
  address: 127.0.0.1:0
access_log: off
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates: [{ cert: server.crt, key: server.key }]
    routes: [{ direct_response: { status: 200, body: ok } }]
"#,
    )
    .unwrap();
    let mut torii = ToriiProcess::serve(&config);
    let admin = ToriiProcess::address(&torii.wait_for(&["admin listening"], PATIENCE * 3).await);
    let addr = ToriiProcess::address(
        &torii
            .wait_for(&["listening", "listener=tls "], PATIENCE * 3)
            .await,
    );
    let old_client = TlsClient::new(old_pki.ca_cert_pem());
    let new_client = TlsClient::new(new_pki.ca_cert_pem());
    old_client
        .handshake(addr)
        .await
        .expect("the old certificate");
    assert!(new_client.handshake(addr).await.is_err());

    // cert-manager renews: new key, new certificate, renamed into place.
    let renewed = new_pki.server_cert(&["localhost"]);
    let scratch = TempDir::new("cert-rotation-new");
    renewed.write_to(scratch.path(), "server").unwrap();
    let key = std::fs::read_to_string(scratch.path().join("server.key")).unwrap();
    let cert = std::fs::read_to_string(scratch.path().join("server.crt")).unwrap();
    replace(dir.path(), "server.key", &key);
    replace(dir.path(), "server.crt", &cert);

    // The file watcher reloads (the config file itself is unchanged).
    torii
        .wait_for(
            &["reloaded", "a certificate, key or CA file changed"],
            PATIENCE * 2,
        )
        .await;
    new_client
        .handshake(addr)
        .await
        .expect("the renewed certificate is served");
    assert!(old_client.handshake(addr).await.is_err());

    let metrics = admin_get(admin, "/metrics").await;
    let line = expiry_line(&metrics, &["listener=\"tls\"", "role=\"server\""])
        .unwrap_or_else(|| panic!("no expiry metric:\n{metrics}"));
    assert!(
        line.ends_with(&format!(" {}", not_after(&cert))),
        "{line} vs {}",
        not_after(&cert)
    );
    let _ = torii.child.kill().await;
}

#[tokio::test]
async fn certificate_expiry_is_a_metric_for_every_certificate_file_in_use() {
    let dir = TempDir::new("cert-expiry");
    let pki = TestPki::new("expiry CA");
    let server = pki.server_cert(&["localhost"]);
    server.write_to(dir.path(), "server").unwrap();
    pki.write_ca(dir.path(), "ca").unwrap();
    pki.client_cert(&["client.test"], &[])
        .write_to(dir.path(), "client")
        .unwrap();
    let proxy = start(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    tls:
      certificates: [{ cert: server.crt, key: server.key }]
      client_auth: { ca: ca.crt }
    routes: [{ cluster: up }]
clusters:
  - name: up
    endpoints: ["127.0.0.1:1"]
    tls: { ca: ca.crt, cert: client.crt, key: client.key }
"#,
        dir,
    )
    .await;
    let metrics = proxy.metrics();
    let server_pem = std::fs::read_to_string(proxy.dir.path().join("server.crt")).unwrap();
    let ca_pem = pki.ca_cert_pem().to_string();
    let client_pem = std::fs::read_to_string(proxy.dir.path().join("client.crt")).unwrap();
    for (labels, pem) in [
        (["listener=\"edge\"", "role=\"server\""], &server_pem),
        (["listener=\"edge\"", "role=\"client_ca\""], &ca_pem),
        (["cluster=\"up\"", "role=\"ca\""], &ca_pem),
        (["cluster=\"up\"", "role=\"client\""], &client_pem),
    ] {
        let line = expiry_line(&metrics, &labels)
            .unwrap_or_else(|| panic!("no series with {labels:?}:\n{metrics}"));
        assert!(line.ends_with(&format!(" {}", not_after(pem))), "{line}");
        assert!(line.contains("file=\""), "{line}");
    }
    // Every one of those files is watched: a change reloads.
    let watched: Vec<String> = proxy
        .running
        .shared
        .config
        .load()
        .files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in [
        "server.crt",
        "server.key",
        "ca.crt",
        "client.crt",
        "client.key",
    ] {
        assert!(watched.iter().any(|w| w == name), "{name} in {watched:?}");
    }
}

#[tokio::test]
async fn a_cluster_whose_tls_files_changed_gets_new_connections_on_reload() {
    let dir = TempDir::new("cluster-tls-rotation");
    let old_pki = TestPki::new("old upstream CA");
    let new_pki = TestPki::new("new upstream CA");
    old_pki.write_ca(dir.path(), "upstream-ca").unwrap();
    let yaml = r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes: [{ cluster: up }]
clusters:
  - name: up
    endpoints: ["127.0.0.1:1"]
    tls: { ca: upstream-ca.crt, server_name: localhost }
"#;
    let proxy = start(yaml, dir).await;
    let path = proxy.dir.path().join("torii.yaml");
    let before = proxy.running.clusters()["up"].clone();
    // The same file, same content: the cluster (and its connections) stays.
    proxy.running.reload_file(&path).await.expect("reload");
    assert!(std::sync::Arc::ptr_eq(
        &before,
        &proxy.running.clusters()["up"]
    ));
    // A renewed CA: the cluster is rebuilt with it.
    replace(proxy.dir.path(), "upstream-ca.crt", new_pki.ca_cert_pem());
    proxy.running.reload_file(&path).await.expect("reload");
    let after = proxy.running.clusters()["up"].clone();
    assert!(!std::sync::Arc::ptr_eq(&before, &after));
    let metrics = proxy.metrics();
    let line = expiry_line(&metrics, &["cluster=\"up\"", "role=\"ca\""]).unwrap();
    assert!(line.contains("new upstream CA"), "{line}");
}

//! Mutual TLS on a listener: the client certificate is checked against the
//! CA and the SAN allow-list, and the verified identity reaches the
//! upstream in `x-forwarded-client-cert` (a client-sent copy never does).

mod proxy_support;
mod support;

use proxy_support::{front, start, Proxy};
use support::*;

const SPIFFE: &str = "spiffe://example.org/ns/default/sa/client";

async fn mtls_proxy(echo: std::net::SocketAddr, required: bool) -> (Proxy, TestPki) {
    let dir = TempDir::new("mtls");
    let pki = TestPki::new("mtls test CA");
    write_server_and_ca(&pki, dir.path());
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: server.crt, key: server.key }}
      client_auth:
        ca: ca.crt
        required: {required}
        allowed_sans: ["{SPIFFE}", allowed.example.com]
    routes:
      - cluster: echo
clusters:
  - name: echo
    endpoints: ["{echo}"]
"#
    );
    (start(&yaml, dir).await, pki)
}

/// A gRPC call over TLS with `client`; Err when the handshake or call fails.
async fn call(client: &TlsClient, addr: std::net::SocketAddr) -> Result<EchoResponse, String> {
    let mut c = client
        .echo_client(addr)
        .await
        .map_err(|e| format!("{e:?}"))?;
    c.unary(EchoRequest::default())
        .await
        .map(|r| r.into_inner())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn allowed_spiffe_id_passes_and_reaches_upstream() {
    let echo = start_echo().await;
    let (proxy, pki) = mtls_proxy(echo.addr, true).await;
    let client =
        TlsClient::new(pki.ca_cert_pem()).with_client_cert(pki.client_cert(&[], &[SPIFFE]));
    let resp = call(&client, proxy.addr("tls"))
        .await
        .expect("allowed client");
    let xfcc = resp
        .headers
        .get("x-forwarded-client-cert")
        .expect("identity forwarded");
    assert!(xfcc.contains(&format!("URI={SPIFFE}")), "{xfcc}");
    assert!(xfcc.starts_with("Hash="), "{xfcc}");

    let dns = TlsClient::new(pki.ca_cert_pem())
        .with_client_cert(pki.client_cert(&["allowed.example.com"], &[]));
    let resp = call(&dns, proxy.addr("tls"))
        .await
        .expect("allowed DNS SAN");
    assert!(resp.headers["x-forwarded-client-cert"].contains("DNS=allowed.example.com"));
}

#[tokio::test]
async fn missing_untrusted_and_unlisted_certificates_are_refused() {
    let echo = start_echo().await;
    let (proxy, pki) = mtls_proxy(echo.addr, true).await;
    let addr = proxy.addr("tls");
    let cases = [
        ("no_client_cert", TlsClient::new(pki.ca_cert_pem())),
        (
            "untrusted_client_cert",
            TlsClient::new(pki.ca_cert_pem())
                .with_client_cert(TestPki::untrusted_cert(&[], &[SPIFFE])),
        ),
        (
            "san_not_allowed",
            TlsClient::new(pki.ca_cert_pem()).with_client_cert(
                pki.client_cert(&[], &["spiffe://example.org/ns/default/sa/intruder"]),
            ),
        ),
        (
            "client_cert_expired",
            TlsClient::new(pki.ca_cert_pem())
                .with_client_cert(pki.expired_cert(&["allowed.example.com"])),
        ),
    ];
    for (reason, client) in cases {
        assert!(
            call(&client, addr).await.is_err(),
            "{reason}: must be refused"
        );
        assert_eq!(
            proxy.metric(
                "torii_tls_handshakes_total",
                &[&format!("reason=\"{reason}\"")]
            ),
            Some(1.0),
            "{reason} counted:\n{}",
            proxy.metrics()
        );
    }
    assert_eq!(
        echo.stats.snapshot().started,
        0,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn optional_client_auth_admits_clients_without_certificates() {
    let echo = start_echo().await;
    let (proxy, pki) = mtls_proxy(echo.addr, false).await;
    let anon = call(&TlsClient::new(pki.ca_cert_pem()), proxy.addr("tls"))
        .await
        .expect("no cert is fine");
    assert!(!anon.headers.contains_key("x-forwarded-client-cert"));
    let with = TlsClient::new(pki.ca_cert_pem()).with_client_cert(pki.client_cert(&[], &[SPIFFE]));
    let resp = call(&with, proxy.addr("tls"))
        .await
        .expect("cert is fine too");
    assert!(resp.headers.contains_key("x-forwarded-client-cert"));
}

#[tokio::test]
async fn spoofed_forwarded_client_cert_is_stripped() {
    let echo = start_echo().await;
    let proxy = front(&[echo.addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let mut req = tonic::Request::new(EchoRequest::default());
    req.metadata_mut().insert(
        "x-forwarded-client-cert",
        "URI=spiffe://example.org/admin".parse().unwrap(),
    );
    let resp = client.unary(req).await.unwrap();
    assert!(!resp
        .get_ref()
        .headers
        .contains_key("x-forwarded-client-cert"));

    let dir = TempDir::new("spoof");
    let pki = TestPki::new("spoof CA");
    write_server_and_ca(&pki, dir.path());
    let yaml = format!(
        "listeners:\n  - name: tls\n    address: 127.0.0.1:0\n    tls:\n      certificates: [{{cert: server.crt, key: server.key}}]\n      client_auth: {{ca: ca.crt}}\n    routes: [{{cluster: echo}}]\nclusters:\n  - name: echo\n    endpoints: [\"{}\"]\n",
        echo.addr
    );
    let proxy = start(&yaml, dir).await;
    let client = TlsClient::new(pki.ca_cert_pem())
        .with_client_cert(pki.client_cert(&["real.example.com"], &[]));
    let mut c = client.echo_client(proxy.addr("tls")).await.unwrap();
    let mut req = tonic::Request::new(EchoRequest::default());
    req.metadata_mut().insert(
        "x-forwarded-client-cert",
        "URI=spiffe://example.org/admin".parse().unwrap(),
    );
    let resp = c.unary(req).await.unwrap();
    let xfcc = &resp.get_ref().headers["x-forwarded-client-cert"];
    assert!(
        xfcc.contains("DNS=real.example.com") && !xfcc.contains("admin"),
        "{xfcc}"
    );
}

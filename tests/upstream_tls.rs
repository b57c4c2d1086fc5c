//! TLS to upstreams: CA verification, server name, client certificates,
//! ALPN h2 for gRPC, and what the client is told when it goes wrong.

mod proxy_support;
mod support;

use proxy_support::{start, tls_front};
use support::*;

#[tokio::test]
async fn grpc_to_a_tls_upstream_uses_alpn_h2() {
    let pki = TestPki::new("upstream CA");
    let (addr, echo) = spawn_tls_echo(&pki, false).await;
    let proxy = tls_front(addr, "      server_name: localhost", &pki).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let r = client
        .unary(EchoRequest::default())
        .await
        .expect("through upstream TLS");
    assert_eq!(
        r.get_ref().headers.get(":scheme").map(String::as_str),
        Some("https")
    );
    assert_eq!(echo.stats.snapshot().completed, 1);
}

#[tokio::test]
async fn client_certificate_to_the_upstream() {
    let pki = TestPki::new("upstream CA");
    let (addr, _echo) = spawn_tls_echo(&pki, true).await;
    let dir = TempDir::new("upstream-mtls");
    pki.write_ca(dir.path(), "ca").unwrap();
    pki.client_cert(&["torii.internal"], &[])
        .write_to(dir.path(), "client")
        .unwrap();
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes: [{{cluster: secure}}]
clusters:
  - name: secure
    endpoints: ["{addr}"]
    tls: {{ ca: ca.crt, server_name: localhost, cert: client.crt, key: client.key }}
"#
    );
    let proxy = start(&yaml, dir).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    client
        .unary(EchoRequest::default())
        .await
        .expect("mTLS to the upstream");
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_explained() {
    let real = TestPki::new("real CA");
    let other = TestPki::new("some other CA");
    let (addr, _echo) = spawn_tls_echo(&real, false).await;
    let proxy = tls_front(addr, "      server_name: localhost", &other).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let err = client
        .unary(EchoRequest::default())
        .await
        .expect_err("untrusted");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        err.metadata().get("x-torii-error").unwrap(),
        "upstream_tls_failed"
    );
    assert!(
        err.message().contains("not signed by the cluster's tls.ca"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn wrong_server_name_is_explained() {
    let pki = TestPki::new("upstream CA");
    let (addr, _echo) = spawn_tls_echo(&pki, false).await;
    let proxy = tls_front(addr, "      server_name: wrong.example.com", &pki).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let err = client
        .unary(EchoRequest::default())
        .await
        .expect_err("name mismatch");
    assert_eq!(
        err.metadata().get("x-torii-error").unwrap(),
        "upstream_tls_failed"
    );
    assert!(err.message().contains("server_name"), "{}", err.message());
}

#[tokio::test]
async fn plaintext_cluster_pointed_at_a_tls_upstream_is_explained() {
    let pki = TestPki::new("upstream CA");
    let (addr, _echo) = spawn_tls_echo(&pki, false).await;
    let proxy = proxy_support::front(&[addr.to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let err = client
        .unary(EchoRequest::default())
        .await
        .expect_err("TLS upstream, h2c cluster");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        err.metadata().get("x-torii-error").unwrap(),
        "upstream_protocol_mismatch"
    );
    assert!(err.message().contains("tls:"), "{}", err.message());
}

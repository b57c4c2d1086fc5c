//! Listeners: HTTP/1.1 and h2c on one plaintext port, TLS with ALPN, and
//! the wrong protocol on each kind of port.

mod proxy_support;
mod support;

use proxy_support::{start, Proxy};
use support::*;

/// A plaintext listener `plain` and a TLS listener `tls` (certificate for
/// localhost signed by the returned PKI), both routing gRPC to `echo` and
/// `/version` to a direct response.
async fn two_listeners(echo: std::net::SocketAddr) -> (Proxy, TestPki) {
    two_listeners_with(echo, "").await
}

/// Like [`two_listeners`], with `extra` (one `key: value`) on both listeners.
async fn two_listeners_with(echo: std::net::SocketAddr, extra: &str) -> (Proxy, TestPki) {
    let dir = TempDir::new("listeners");
    let pki = TestPki::new("listeners test CA");
    pki.server_cert(&["localhost", "127.0.0.1"])
        .write_to(dir.path(), "server")
        .unwrap();
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    {extra}
    routes: &routes
      - match: {{ path: /version }}
        direct_response: {{ status: 200, body: "v1" }}
      - match: {{ grpc_service: torii.echo.v1.Echo }}
        cluster: echo
  - name: tls
    address: 127.0.0.1:0
    {extra}
    tls:
      certificates:
        - {{ cert: server.crt, key: server.key }}
    routes: *routes
clusters:
  - name: echo
    endpoints: ["{echo}"]
"#
    );
    (start(&yaml, dir).await, pki)
}

#[tokio::test]
async fn http1_and_h2c_share_the_plaintext_port() {
    let echo = start_echo().await;
    let (proxy, _) = two_listeners(echo.addr).await;
    let addr = proxy.addr("plain");
    let h1 = raw_exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(h1.starts_with("HTTP/1.1 200"), "{h1}");
    let v = raw_exchange(
        addr,
        b"GET /version HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(v.starts_with("HTTP/1.1 200") && v.ends_with("v1"), "{v}");
    let mut client = h2c_client(addr).await;
    client
        .unary(EchoRequest::default())
        .await
        .expect("gRPC over h2c on the same port");
}

#[tokio::test]
async fn tls_alpn_picks_h2_for_grpc_and_http1_for_http1_clients() {
    let echo = start_echo().await;
    let (proxy, pki) = two_listeners(echo.addr).await;
    let addr = proxy.addr("tls");
    let ca = pki.ca_cert_pem();
    let both = TlsClient::new(ca).with_alpn(&["h2", "http/1.1"]);
    assert_eq!(
        both.negotiated_alpn(addr).await.unwrap().as_deref(),
        Some("h2")
    );
    let h1 = TlsClient::new(ca).with_alpn(&["http/1.1"]);
    assert_eq!(
        h1.negotiated_alpn(addr).await.unwrap().as_deref(),
        Some("http/1.1")
    );
    // A client offering no ALPN still gets served (by sniffing the preface).
    let none = TlsClient::new(ca).with_alpn(&[]);
    assert_eq!(none.negotiated_alpn(addr).await.unwrap(), None);
    none.echo_client(addr)
        .await
        .unwrap()
        .unary(EchoRequest::default())
        .await
        .expect("gRPC without ALPN");

    let mut client = both.echo_client(addr).await.unwrap();
    let r = client
        .unary(EchoRequest::default())
        .await
        .expect("gRPC over TLS");
    assert_eq!(
        r.get_ref()
            .headers
            .get("x-forwarded-proto")
            .map(String::as_str),
        Some("https")
    );
    assert_eq!(
        proxy
            .metric("torii_tls_handshakes_total", &["result=\"success\""])
            .map(|v| v >= 1.0),
        Some(true)
    );
}

#[tokio::test]
async fn unknown_alpn_is_refused_and_counted() {
    let echo = start_echo().await;
    let (proxy, pki) = two_listeners(echo.addr).await;
    let addr = proxy.addr("tls");
    let odd = TlsClient::new(pki.ca_cert_pem()).with_alpn(&["spdy/3"]);
    assert!(odd.handshake(addr).await.is_err());
    assert_eq!(
        proxy.metric("torii_tls_handshakes_total", &["reason=\"no_common_alpn\""]),
        Some(1.0)
    );
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_readable_400() {
    let echo = start_echo().await;
    let (proxy, _) = two_listeners(echo.addr).await;
    let resp = raw_exchange(proxy.addr("tls"), b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("expects TLS"), "{resp}");
    assert_eq!(
        proxy.metric("torii_tls_handshakes_total", &["reason=\"plaintext_http\""]),
        Some(1.0)
    );
}

#[tokio::test]
async fn tls_on_the_plaintext_port_is_closed_and_counted() {
    let echo = start_echo().await;
    let (proxy, pki) = two_listeners(echo.addr).await;
    let client = TlsClient::new(pki.ca_cert_pem());
    assert!(client.handshake(proxy.addr("plain")).await.is_err());
    assert_eq!(
        proxy.metric(
            "torii_tls_handshakes_total",
            &["reason=\"tls_on_plaintext_port\""]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn sni_picks_the_certificate() {
    let echo = start_echo().await;
    let dir = TempDir::new("sni");
    let pki_a = TestPki::new("CA a");
    let pki_b = TestPki::new("CA b");
    pki_a
        .server_cert(&["a.example.com"])
        .write_to(dir.path(), "a")
        .unwrap();
    pki_b
        .server_cert(&["b.example.com", "*.b.example.com"])
        .write_to(dir.path(), "b")
        .unwrap();
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: a.crt, key: a.key, server_names: [a.example.com] }}
        - {{ cert: b.crt, key: b.key, server_names: [b.example.com, "*.b.example.com"] }}
    routes:
      - cluster: echo
clusters:
  - name: echo
    endpoints: ["{}"]
"#,
        echo.addr
    );
    let proxy = start(&yaml, dir).await;
    let addr = proxy.addr("tls");
    TlsClient::new(pki_a.ca_cert_pem())
        .with_server_name("a.example.com")
        .handshake(addr)
        .await
        .expect("a.example.com gets certificate a");
    TlsClient::new(pki_b.ca_cert_pem())
        .with_server_name("b.example.com")
        .handshake(addr)
        .await
        .expect("b.example.com gets certificate b");
    TlsClient::new(pki_b.ca_cert_pem())
        .with_server_name("x.b.example.com")
        .handshake(addr)
        .await
        .expect("the wildcard name gets certificate b");
    // Unknown names get the default (the first) certificate.
    assert!(TlsClient::new(pki_b.ca_cert_pem())
        .with_server_name("c.example.com")
        .handshake(addr)
        .await
        .is_err());
}

/// A client that opens a connection and never finishes its first request
/// (partial HTTP/1.1 head, partial HTTP/2 preface, or silence after an h2
/// TLS handshake) is closed at the listener's `header_read_timeout`.
#[tokio::test]
async fn clients_that_never_finish_a_request_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let echo = start_echo().await;
    let (proxy, pki) = two_listeners_with(echo.addr, "header_read_timeout: 300ms").await;

    // Reads until the proxy closes the connection; a bound far above the
    // timeout only keeps a broken build from hanging the suite.
    async fn closed_by_proxy<S: AsyncReadExt + Unpin>(mut s: S) -> bool {
        let mut buf = [0u8; 256];
        let read_to_end = async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), read_to_end)
            .await
            .is_ok()
    }

    for partial in [&b"GET / HTTP/1.1\r\nhost: x\r\n"[..], b"PRI * HTTP/2.0\r\n"] {
        let mut s = tokio::net::TcpStream::connect(proxy.addr("plain"))
            .await
            .unwrap();
        s.write_all(partial).await.unwrap();
        assert!(
            closed_by_proxy(s).await,
            "{:?} was left open",
            String::from_utf8_lossy(partial)
        );
    }
    let client = TlsClient::new(pki.ca_cert_pem()).with_alpn(&["h2"]);
    let tls = client.handshake(proxy.addr("tls")).await.unwrap();
    assert!(
        closed_by_proxy(tls).await,
        "a silent h2 client was left open"
    );
}

//! `client_auth.allowed_sans` patterns: `spiffe://td/*` (a whole trust
//! domain), `spiffe://td/path/*` (every ID under a path), `*.example.com`
//! (one DNS label); anything else with a `*` is refused by `torii check`
//! with FILE:LINE:COL instead of rejecting every client at run time.

mod proxy_support;
mod support;

use proxy_support::{start, Proxy};
use support::*;

async fn mtls_proxy(echo: std::net::SocketAddr, allowed: &str) -> (Proxy, TestPki) {
    let dir = TempDir::new("san-patterns");
    let pki = TestPki::new("san patterns CA");
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
        allowed_sans: {allowed}
    routes:
      - cluster: echo
clusters:
  - name: echo
    endpoints: ["{echo}"]
"#
    );
    (start(&yaml, dir).await, pki)
}

async fn admitted(pki: &TestPki, addr: std::net::SocketAddr, dns: &[&str], uris: &[&str]) -> bool {
    let client = TlsClient::new(pki.ca_cert_pem()).with_client_cert(pki.client_cert(dns, uris));
    let Ok(mut c) = client.echo_client(addr).await else {
        return false;
    };
    c.unary(EchoRequest::default()).await.is_ok()
}

#[tokio::test]
async fn a_trust_domain_pattern_admits_every_id_of_that_domain_only() {
    let echo = start_echo().await;
    let (proxy, pki) = mtls_proxy(echo.addr, r#"["spiffe://example.org/*"]"#).await;
    let addr = proxy.addr("tls");
    for id in [
        "spiffe://example.org/ns/default/sa/client",
        "spiffe://example.org/ns/prod/sa/api",
    ] {
        assert!(
            admitted(&pki, addr, &[], &[id]).await,
            "{id} is in the trust domain"
        );
    }
    for id in [
        "spiffe://example.com/ns/default/sa/client",
        "spiffe://example.org.evil/ns/default/sa/client",
        "spiffe://example.org",
    ] {
        assert!(!admitted(&pki, addr, &[], &[id]).await, "{id} is not");
    }
    // A DNS SAN that spells the pattern's text is no URI.
    assert!(!admitted(&pki, addr, &["example.org"], &[]).await);
}

#[tokio::test]
async fn path_prefix_and_dns_wildcard_patterns() {
    let echo = start_echo().await;
    let (proxy, pki) = mtls_proxy(
        echo.addr,
        r#"["spiffe://example.org/ns/prod/*", "*.clients.test", exact.test]"#,
    )
    .await;
    let addr = proxy.addr("tls");
    let yes: [(&[&str], &[&str]); 4] = [
        (&[], &["spiffe://example.org/ns/prod/sa/api"]),
        (&[], &["spiffe://example.org/ns/prod/sa/worker/extra"]),
        (&["a.clients.test"], &[]),
        (&["EXACT.test"], &[]),
    ];
    for (dns, uris) in yes {
        assert!(
            admitted(&pki, addr, dns, uris).await,
            "{dns:?} {uris:?} must be admitted"
        );
    }
    let no: [(&[&str], &[&str]); 5] = [
        (&[], &["spiffe://example.org/ns/production/sa/api"]),
        (&[], &["spiffe://example.org/ns/prod"]),
        (&[], &["spiffe://example.org/ns/staging/sa/api"]),
        (&["a.b.clients.test"], &[]),
        (&["clients.test"], &[]),
    ];
    for (dns, uris) in no {
        assert!(
            !admitted(&pki, addr, dns, uris).await,
            "{dns:?} {uris:?} must be refused"
        );
    }
    assert_eq!(
        proxy.metric(
            "torii_tls_handshakes_total",
            &["reason=\"san_not_allowed\""]
        ),
        Some(5.0)
    );
}

#[tokio::test]
async fn unsupported_patterns_are_refused_at_check_time_with_their_position() {
    let dir = TempDir::new("san-check");
    let pki = TestPki::new("san check CA");
    write_server_and_ca(&pki, dir.path());
    let yaml = r#"listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates:
        - { cert: server.crt, key: server.key }
      client_auth:
        ca: ca.crt
        allowed_sans:
          - "spiffe://example.org/*"
          - "spiffe://example.org/ns/*/sa/client"
          - "*"
          - "api*.example.com"
          - "spiffe:///*"
    routes: [{ direct_response: { status: 200, body: ok } }]
"#;
    let file = dir.path().join("torii.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = torii_check(&file);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let shown = file.display().to_string();
    for (line, what) in [
        (11, "only as the whole last path segment"),
        (12, "leave allowed_sans out"),
        (13, "only as the whole first label"),
        (14, "authority"),
    ] {
        let at = format!("{shown}:{line}:13: error");
        let found = text.lines().find(|l| l.starts_with(&at));
        let found = found.unwrap_or_else(|| panic!("no error at {at}:\n{text}"));
        assert!(found.contains(what), "{found}");
    }
    assert!(
        !text.contains(&format!("{shown}:10:")),
        "the trust-domain pattern is fine:\n{text}"
    );
}

//! Identity at the edge: JWTs verified against a JWKS that a server in the
//! test serves (and rotates, and fails), API keys, `allow` rules over
//! claims, gRPC methods and mTLS SANs, audit mode — through real gRPC and
//! HTTP clients, with tokens minted here (ring: ES256 and EdDSA).

mod proxy_support;
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use proxy_support::start;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use support::*;
use tonic::Code;

/// A signing key and its JWK.
enum Signer {
    Es256(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl Signer {
    fn es256() -> Signer {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Signer::Es256(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
    }

    fn ed25519() -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Signer::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    fn jwk(&self, kid: &str) -> serde_json::Value {
        let b = |d: &[u8]| URL_SAFE_NO_PAD.encode(d);
        match self {
            Signer::Es256(k) => {
                let p = k.public_key().as_ref();
                serde_json::json!({"kty":"EC","crv":"P-256","kid":kid,"x":b(&p[1..33]),"y":b(&p[33..])})
            }
            Signer::Ed(k) => {
                serde_json::json!({"kty":"OKP","crv":"Ed25519","kid":kid,"x":b(k.public_key().as_ref())})
            }
        }
    }

    fn token(&self, kid: &str, claims: serde_json::Value) -> String {
        let alg = match self {
            Signer::Es256(_) => "ES256",
            Signer::Ed(_) => "EdDSA",
        };
        let header = serde_json::json!({"alg": alg, "kid": kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = match self {
            Signer::Es256(k) => k
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            Signer::Ed(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const ISS: &str = "https://idp.test";
const AUD: &str = "orders.test";

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": now() + 600, "iat": now()});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// A JWKS server the test controls: what it answers, how often it was asked.
#[derive(Clone)]
struct JwksServer {
    addr: SocketAddr,
    body: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicU64>,
}

impl JwksServer {
    async fn start(keys: Vec<serde_json::Value>) -> JwksServer {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = JwksServer {
            addr: tcp.local_addr().unwrap(),
            body: Arc::new(Mutex::new((200, String::new()))),
            hits: Arc::new(AtomicU64::new(0)),
        };
        server.set(keys);
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let s = s.clone();
                        async move {
                            s.hits.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = s.body.lock().unwrap().clone();
                            let mut resp = http::Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        server
    }

    fn set(&self, keys: Vec<serde_json::Value>) {
        *self.body.lock().unwrap() = (200, serde_json::json!({ "keys": keys }).to_string());
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A unary echo call with `metadata`; the headers the upstream saw, or
/// the status.
async fn call(
    addr: SocketAddr,
    metadata: &[(&'static str, &str)],
) -> Result<std::collections::HashMap<String, String>, tonic::Status> {
    let mut client = h2c_client(addr).await;
    let mut req = tonic::Request::new(EchoRequest::default());
    for (k, v) in metadata {
        req.metadata_mut().append(*k, v.parse().unwrap());
    }
    client.unary(req).await.map(|r| r.into_inner().headers)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn status_of(r: Result<std::collections::HashMap<String, String>, tonic::Status>) -> tonic::Status {
    r.expect_err("refused")
}

#[tokio::test]
async fn jwt_api_keys_rules_and_audit() {
    let echo = start_echo().await;
    let es = Signer::es256();
    let ed = Signer::ed25519();
    let jwks = JwksServer::start(vec![es.jwk("k1"), ed.jwk("e1")]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = TempDir::new("auth");
    std::fs::write(
        dir.path().join("keys.yaml"),
        "acme: k-acme-0123456789abcdef\n\
         globex: \"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n",
    )
    .unwrap();
    let yaml = format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
jwt_providers:
  - name: idp
    issuer: {ISS}
    audiences: [{AUD}]
    jwks: {{ uri: "http://{jwks}/jwks.json" }}
    claims_to_headers: {{ sub: x-user-id, org.id: x-org }}
  - name: down
    issuer: https://down.test
    jwks: {{ uri: "http://127.0.0.1:{closed_port}/jwks.json" }}
api_keys:
  - name: partners
    file: keys.yaml
    consumer_header: x-consumer
listeners:
  - name: jwt
    address: 127.0.0.1:0
    routes:
      - {{ cluster: echo, auth: {{ jwt: [idp] }} }}
  - name: keys
    address: 127.0.0.1:0
    routes:
      - {{ cluster: echo, auth: {{ api_key: [partners], allow: [{{ api_keys: [acme, globex] }}] }} }}
  - name: rules
    address: 127.0.0.1:0
    routes:
      - name: orders
        cluster: echo
        auth:
          jwt: [idp]
          allow:
            - {{ grpc_methods: [torii.echo.v1.Echo/Unary], claims: {{ scope: orders.read }} }}
  - name: audit
    address: 127.0.0.1:0
    routes:
      - cluster: echo
        auth: {{ jwt: [idp], allow: [{{ claims: {{ scope: admin }} }}], mode: audit }}
  - name: down
    address: 127.0.0.1:0
    routes:
      - {{ cluster: echo, auth: {{ jwt: [down] }} }}
clusters:
  - name: echo
    endpoints: ["{echo}"]
"#,
        jwks = jwks.addr,
        echo = echo.addr,
    );
    let proxy = start(&yaml, dir).await;
    let admin = proxy.running.admin_addr().unwrap();
    let jwt = proxy.addr("jwt");

    // A valid token: its claims reach the upstream, the client's copy does not.
    let good = es.token("k1", claims(serde_json::json!({"org": {"id": 7}})));
    let seen = call(
        jwt,
        &[("authorization", &bearer(&good)), ("x-user-id", "mallory")],
    )
    .await
    .expect("a valid ES256 token");
    assert_eq!(seen["x-user-id"], "alice");
    assert_eq!(seen["x-org"], "7");
    let seen = call(
        jwt,
        &[
            ("x-user-id", "mallory"),
            (
                "authorization",
                &bearer(&ed.token("e1", claims(serde_json::json!({})))),
            ),
        ],
    )
    .await
    .expect("a valid EdDSA token");
    assert_eq!(seen["x-user-id"], "alice");
    // RFC 6750: the scheme in any case, one or more spaces.
    call(jwt, &[("authorization", &format!("bearer  {good}"))])
        .await
        .expect("lower-case scheme, two spaces");

    // Each failed check says which.
    let refused = |s: tonic::Status, want: &str| {
        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
        assert!(
            s.message().contains(want),
            "{want:?} not in {:?}",
            s.message()
        );
        assert_eq!(
            s.metadata().get("x-torii-error").unwrap(),
            "unauthenticated"
        );
    };
    refused(status_of(call(jwt, &[]).await), "no credential");
    let expired = es.token("k1", claims(serde_json::json!({"exp": now() - 61 - 60})));
    refused(
        status_of(call(jwt, &[("authorization", &bearer(&expired))]).await),
        "expired at",
    );
    let early = es.token("k1", claims(serde_json::json!({"nbf": now() + 3600})));
    refused(
        status_of(call(jwt, &[("authorization", &bearer(&early))]).await),
        "not valid before",
    );
    let aud = es.token("k1", claims(serde_json::json!({"aud": "x"})));
    refused(
        status_of(call(jwt, &[("authorization", &bearer(&aud))]).await),
        "audience \"x\" not in",
    );
    let iss = es.token(
        "k1",
        claims(serde_json::json!({"iss": "https://evil.test"})),
    );
    refused(
        status_of(call(jwt, &[("authorization", &bearer(&iss))]).await),
        "issuer",
    );
    let mut tampered: Vec<&str> = good.split('.').collect();
    let other = URL_SAFE_NO_PAD.encode(claims(serde_json::json!({"sub": "root"})).to_string());
    tampered[1] = &other;
    refused(
        status_of(call(jwt, &[("authorization", &bearer(&tampered.join(".")))]).await),
        "signature does not verify",
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(claims(serde_json::json!({})).to_string())
    );
    refused(
        status_of(call(jwt, &[("authorization", &bearer(&none))]).await),
        "",
    );
    for junk in [format!("{good} junk"), format!("{good}###")] {
        refused(
            status_of(call(jwt, &[("authorization", &bearer(&junk))]).await),
            "the token contains",
        );
    }
    refused(
        status_of(
            call(
                jwt,
                &[
                    ("authorization", &bearer(&good)),
                    ("authorization", &bearer(&good)),
                ],
            )
            .await,
        ),
        "2 tokens",
    );

    // An unknown key id fails at once and starts one refetch, however many
    // ask; after it, the rotated key verifies.
    let rotated = Signer::es256();
    let hits = jwks.hits();
    assert_eq!(hits, 1, "one fetch at start");
    jwks.set(vec![es.jwk("k1"), rotated.jwk("k2")]);
    let new = rotated.token("k2", claims(serde_json::json!({})));
    let new_bearer = bearer(&new);
    let tries: Vec<_> = (0..20)
        .map(|_| {
            let b = new_bearer.clone();
            async move { call(jwt, &[("authorization", b.as_str())]).await }
        })
        .collect();
    let mut unknown = 0;
    for r in futures_util::future::join_all(tries).await {
        // The refetch waits 5 s after the first fetch: on a slow machine
        // it may have happened already.
        if let Err(s) = r {
            refused(s, "unknown key id \"k2\"");
            unknown += 1;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if call(jwt, &[("authorization", &bearer(&new))]).await.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "k2 never accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(jwks.hits(), 2, "exactly one refetch for the unknown key id");

    // API keys: plain, hashed, wrong, missing; the consumer goes upstream.
    let keys = proxy.addr("keys");
    let seen = call(
        keys,
        &[
            ("x-api-key", "k-acme-0123456789abcdef"),
            ("x-consumer", "evil"),
        ],
    )
    .await
    .expect("acme's key");
    assert_eq!(seen["x-consumer"], "acme");
    let seen = call(keys, &[("x-api-key", "test")])
        .await
        .expect("globex's hashed key");
    assert_eq!(seen["x-consumer"], "globex");
    refused(
        status_of(call(keys, &[("x-api-key", "k-acme-0123456789abcdeX")]).await),
        "not one of set partners",
    );
    refused(status_of(call(keys, &[]).await), "no credential");

    // Rules: claims and the gRPC method; no match is PERMISSION_DENIED.
    let rules = proxy.addr("rules");
    let reader = es.token(
        "k1",
        claims(serde_json::json!({"scope": "orders.read orders.list"})),
    );
    call(rules, &[("authorization", &bearer(&reader))])
        .await
        .expect("scope orders.read on Unary");
    let s = status_of(call(rules, &[("authorization", &bearer(&good))]).await);
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains("route orders") && s.message().contains("jwt:idp/alice"),
        "{}",
        s.message()
    );

    // Audit: what would be denied passes, and is counted as such.
    call(proxy.addr("audit"), &[("authorization", &bearer(&good))])
        .await
        .expect("audit lets it through");

    // No keys at all: fail closed, 503, and /ready names the provider.
    let s = status_of(call(proxy.addr("down"), &[("authorization", &bearer(&good))]).await);
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert_eq!(
        s.metadata().get("x-torii-error").unwrap(),
        "auth_unavailable"
    );
    assert!(
        s.message().contains(&format!("127.0.0.1:{closed_port}")),
        "{}",
        s.message()
    );
    let ready = admin_get(admin, "/ready").await;
    assert!(
        ready.starts_with("HTTP/1.1 503") && ready.contains("jwt provider down"),
        "{ready}"
    );
    let config = admin_get(admin, "/config").await;
    assert!(
        !config.contains("k-acme") && config.contains("\"acme\""),
        "{config}"
    );

    let m = |labels: &[&str]| proxy.metric("torii_auth_total", labels).unwrap_or(0.0);
    assert!(m(&["listener=\"jwt\"", "result=\"allowed\"", "method=\"jwt\""]) >= 3.0);
    assert_eq!(m(&["listener=\"jwt\"", "reason=\"expired\""]), 1.0);
    assert!(m(&["listener=\"jwt\"", "reason=\"unknown_kid\""]) >= unknown as f64);
    assert_eq!(
        m(&[
            "listener=\"keys\"",
            "reason=\"invalid_key\"",
            "method=\"api_key\""
        ]),
        1.0
    );
    assert_eq!(
        m(&[
            "listener=\"rules\"",
            "result=\"denied\"",
            "reason=\"no_rule\""
        ]),
        1.0
    );
    assert_eq!(
        m(&["listener=\"audit\"", "result=\"denied\"", "mode=\"audit\""]),
        1.0
    );
    assert_eq!(
        m(&["listener=\"down\"", "reason=\"keys_unavailable\""]),
        1.0
    );
}

/// The same refusal as an HTTP client sees it: 401 and RFC 6750's challenge.
#[tokio::test]
async fn http_clients_get_401_with_a_bearer_challenge() {
    let echo = start_echo().await;
    let es = Signer::es256();
    let dir = TempDir::new("auth-http");
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::json!({ "keys": [es.jwk("k1")] }).to_string(),
    )
    .unwrap();
    let yaml = format!(
        r#"
jwt_providers:
  - {{ name: idp, issuer: "{ISS}", jwks: {{ file: jwks.json }} }}
listeners:
  - name: web
    address: 127.0.0.1:0
    cors: {{ allow_origins: ["https://app.test"] }}
    routes:
      - {{ cluster: echo, auth: {{ jwt: [idp] }} }}
clusters:
  - name: echo
    endpoints: ["{}"]
"#,
        echo.addr
    );
    let proxy = start(&yaml, dir).await;
    let addr = proxy.addr("web");
    let ask = |auth: Option<String>| async move {
        let extra = auth
            .map(|a| format!("authorization: {a}\r\n"))
            .unwrap_or_default();
        raw_exchange(
            addr,
            format!("GET /x HTTP/1.1\r\nhost: t\r\n{extra}connection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap()
    };
    // Never checked: the health path and CORS preflights.
    let health = raw_exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let preflight = raw_exchange(
        addr,
        b"OPTIONS /x HTTP/1.1\r\nhost: t\r\norigin: https://app.test\r\naccess-control-request-method: POST\r\n\
          access-control-request-headers: authorization\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(preflight.starts_with("HTTP/1.1 20"), "{preflight}");
    assert!(!preflight.contains("unauthenticated"), "{preflight}");
    let none = ask(None).await;
    assert!(none.starts_with("HTTP/1.1 401"), "{none}");
    assert!(none.contains("www-authenticate: Bearer\r\n"), "{none}");
    let expired = es.token("k1", claims(serde_json::json!({"exp": now() - 3600})));
    let answer = ask(Some(bearer(&expired))).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.contains("www-authenticate: Bearer error=\"invalid_token\", error_description=\"the token expired at"),
        "{answer}"
    );
    assert!(
        answer.contains("x-torii-error: unauthenticated"),
        "{answer}"
    );
}

/// mTLS identities (SPIFFE SANs from rcgen certificates) through `allow`.
#[tokio::test]
async fn spiffe_sans_through_allow_rules() {
    let echo = start_echo().await;
    let dir = TempDir::new("auth-mtls");
    let pki = TestPki::new("auth test CA");
    write_server_and_ca(&pki, dir.path());
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates: [{{ cert: server.crt, key: server.key }}]
      client_auth: {{ ca: ca.crt }}
    routes:
      - name: prod-only
        cluster: echo
        auth:
          allow: [{{ sans: ["spiffe://example.org/ns/prod/*"] }}]
clusters:
  - name: echo
    endpoints: ["{}"]
"#,
        echo.addr
    );
    let proxy = start(&yaml, dir).await;
    let addr = proxy.addr("tls");
    let as_id = |id: &'static str| {
        TlsClient::new(pki.ca_cert_pem()).with_client_cert(pki.client_cert(&[], &[id]))
    };
    let mut ok = as_id("spiffe://example.org/ns/prod/sa/api")
        .echo_client(addr)
        .await
        .unwrap();
    ok.unary(EchoRequest::default())
        .await
        .expect("a prod identity");
    let mut dev = as_id("spiffe://example.org/ns/dev/sa/api")
        .echo_client(addr)
        .await
        .unwrap();
    let s = dev
        .unary(EchoRequest::default())
        .await
        .expect_err("a dev identity");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message()
            .contains("mtls:URI:spiffe://example.org/ns/dev/sa/api"),
        "{}",
        s.message()
    );
    assert_eq!(
        proxy.metric(
            "torii_auth_total",
            &["method=\"mtls\"", "result=\"denied\""]
        ),
        Some(1.0)
    );
}

#[test]
fn check_reports_auth_problems_with_their_place() {
    let dir = TempDir::new("auth-check");
    std::fs::write(dir.path().join("keys.yaml"), "acme: short\n").unwrap();
    let file = dir.path().join("torii.yaml");
    std::fs::write(
        &file,
        r#"jwt_providers:
  - name: idp
    issuer: https://idp.test
    jwks: { uri: "ftp://x" }
api_keys:
  - { name: partners, file: keys.yaml }
listeners:
  - name: a
    address: 127.0.0.1:0
    routes:
      - cluster: c
        auth:
          jwt: [nope]
          require: most
          allow: [{ source_ips: [10.0.0.0/33] }]
clusters:
  - { name: c, endpoints: ["127.0.0.1:1"] }
"#,
    )
    .unwrap();
    let out = torii_check(&file);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    for want in [
        "torii.yaml:4:",
        "jwt_providers[0].jwks.uri",
        "torii.yaml:6:",
        "the key has 5 characters",
        "torii.yaml:13:",
        "no jwt_providers entry is named \"nope\"",
        "require \"most\"",
        "prefix length",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

//! torii driven by an xDS control plane (tests/xds_support: a scripted
//! ADS server speaking the real Envoy v3 messages): the first
//! configuration makes torii ready and serving, endpoint changes apply,
//! an invalid resource among valid ones is NACKed by name and field while
//! the others apply, a server that is down at start keeps torii not ready
//! (saying why), and a server that goes away leaves the last
//! configuration serving until it returns. Listener TLS from xDS (a
//! DownstreamTlsContext) serves gRPC over TLS, requires client
//! certificates when told to, and is NACKed when its certificates come
//! from SDS. Endpoint and locality weights split the calls as they say.

mod proxy_support;
mod support;
mod xds_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::google::protobuf::UInt32Value;
use proxy_support::{start, Proxy};
use support::*;
use tokio::net::TcpListener;
use xds_support::*;

/// torii with an admin listener and `xds:` only.
async fn torii(server: SocketAddr, label: &str) -> Proxy {
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\nxds:\n  server: {server}\n  node: {{ id: {label}, cluster: test }}\n"
    );
    start(&yaml, TempDir::new(label)).await
}

/// A control plane on 127.0.0.1 with cluster `echo` (EDS → `endpoints`),
/// listener `ingress` and its routes `all` → `echo`.
async fn control_plane(
    delta: bool,
    endpoints: &[SocketAddr],
) -> (ControlPlane, SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let cp = ControlPlane::new(delta);
    cp.set("echo", &eds_cluster("echo"));
    cp.set("echo", &assignment("echo", endpoints));
    cp.set("ingress", &rds_listener("ingress", "all"));
    cp.set("all", &routes_to("all", "echo"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = cp.serve(listener);
    (cp, addr, stop)
}

/// `/ready`'s status line and body, once `pred` holds for them (or after PATIENCE).
async fn ready_when(p: &Proxy, pred: impl Fn(&str) -> bool) -> String {
    let admin = p.running.admin_addr().unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = admin_get(admin, "/ready").await;
        if pred(&r) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(addr: SocketAddr) -> Result<(), tonic::Status> {
    let mut c = h2c_client(addr).await;
    c.unary(EchoRequest {
        message: "hi".into(),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

/// Calls (at most 200, within PATIENCE) until `backend` has answered one.
async fn until_served_by(addr: SocketAddr, backend: &EchoServer) -> bool {
    let deadline = Instant::now() + PATIENCE;
    for _ in 0..200 {
        let _ = call(addr).await;
        if backend.stats.completed() > 0 {
            return true;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test]
async fn delta_config_serves_and_endpoint_changes_apply() {
    let a = start_echo().await;
    let b = start_echo().await;
    let (cp, server, _stop) = control_plane(true, &[a.addr]).await;
    let p = torii(server, "xds-delta").await;
    let ready = ready_when(&p, |r| r.starts_with("HTTP/1.1 200")).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert_eq!(cp.streams(), vec!["delta"]);

    let ingress = p
        .running
        .try_addr("ingress")
        .expect("listener from LDS is bound");
    call(ingress)
        .await
        .expect("a call through the xDS listener");
    assert_eq!(a.stats.completed(), 1);

    // An endpoint joins: the connection to the one that stays is kept.
    cp.set("echo", &assignment("echo", &[a.addr, b.addr]));
    assert!(
        until_served_by(ingress, &b).await,
        "the new endpoint never answered"
    );
    assert_eq!(
        a.stats.connections(),
        1,
        "the kept endpoint's connection is reused"
    );
    let answers = cp.answers();
    assert!(answers.iter().all(|a| a.error.is_none()), "{answers:?}");
    assert!(
        answers.iter().filter(|a| a.type_url == ENDPOINT).count() >= 2,
        "{answers:?}"
    );
    let acks = p
        .metric(
            "torii_xds_updates_total",
            &["type=\"endpoint\"", "result=\"ack\""],
        )
        .unwrap_or(0.0);
    assert!(acks >= 2.0, "{}", p.metrics());
    let config = admin_get(p.running.admin_addr().unwrap(), "/config").await;
    assert!(
        config.contains("\"first_configuration_applied\": true"),
        "{config}"
    );
    assert!(config.contains("\"name\": \"ingress\""), "{config}");

    // A listener the server removes stops accepting (its connections drain).
    cp.remove(LISTENER, "ingress");
    let deadline = Instant::now() + PATIENCE;
    while p.running.try_addr("ingress").is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        p.running.try_addr("ingress").is_none(),
        "the removed listener is gone"
    );
}

#[tokio::test]
async fn endpoint_and_locality_weights_split_the_calls() {
    let [a, b, c] = [start_echo().await, start_echo().await, start_echo().await];
    // Two localities of equal weight: a (weight 3) and b in one, c alone
    // in the other. Shares: a 3/8, b 1/8, c 1/2, so weights 3 : 1 : 4.
    let weight = |value| Some(UInt32Value { value });
    let mut cla = assignment("echo", &[a.addr, b.addr]);
    cla.endpoints[0].lb_endpoints[0].load_balancing_weight = weight(3);
    let mut other = assignment("echo", &[c.addr]).endpoints.remove(0);
    cla.endpoints[0].load_balancing_weight = weight(1);
    other.load_balancing_weight = weight(1);
    cla.endpoints.push(other);
    let (cp, server, _stop) = control_plane(true, &[a.addr]).await;
    cp.set("echo", &cla);
    let p = torii(server, "xds-weights").await;
    let ready = ready_when(&p, |r| r.starts_with("HTTP/1.1 200")).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // /config shows the weights, as a file would write them.
    let config = loop_config(&p, "\"weight\": 4").await;
    assert!(
        config.contains("\"weight\": 3") && config.contains("\"weight\": 4"),
        "{config}"
    );
    let ingress = p.running.try_addr("ingress").expect("listener from LDS");
    let mut client = h2c_client(ingress).await;
    for _ in 0..400 {
        client.unary(EchoRequest::default()).await.unwrap();
    }
    let counts: Vec<u64> = [&a, &b, &c]
        .iter()
        .map(|s| s.stats.snapshot().started)
        .collect();
    assert_eq!(counts, vec![150, 50, 200]);
    let answers = cp.answers();
    assert!(answers.iter().all(|a| a.error.is_none()), "{answers:?}");
}

/// `/config` once it contains `want` (or after PATIENCE).
async fn loop_config(p: &Proxy, want: &str) -> String {
    let admin = p.running.admin_addr().unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let config = admin_get(admin, "/config").await;
        if config.contains(want) || Instant::now() > deadline {
            return config;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_name_the_file_uses_is_nacked_saying_so() {
    let a = start_echo().await;
    let (cp, server, _stop) = control_plane(true, &[a.addr]).await;
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\nxds:\n  server: {server}\n  node: {{ id: clash }}\n\
         clusters:\n  - name: echo\n    endpoints: [\"{}\"]\n",
        a.addr
    );
    let p = start(&yaml, TempDir::new("xds-clash")).await;
    let deadline = Instant::now() + PATIENCE;
    let nack = loop {
        let found = cp.answers().into_iter().find_map(|a| a.error);
        if found.is_some() || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let nack = nack.expect("the clashing cluster is NACKed");
    assert!(nack.contains("cluster \"echo\""), "{nack}");
    assert!(
        nack.contains("configuration file has a cluster of that name"),
        "{nack}"
    );
    let ready = ready_when(&p, |r| r.contains("waits for")).await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(
        ready.contains("listener \"ingress\" waits for cluster \"echo\""),
        "{ready}"
    );
}

#[tokio::test]
async fn sotw_fallback_nacks_the_invalid_resource_and_applies_the_rest() {
    let a = start_echo().await;
    let (cp, server, _stop) = control_plane(false, &[a.addr]).await;
    let mut bad = eds_cluster("bad");
    bad.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
        DiscoveryType::OriginalDst as i32,
    ));
    cp.set("bad", &bad);
    let p = torii(server, "xds-sotw").await;
    let ready = ready_when(&p, |r| r.starts_with("HTTP/1.1 200")).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert_eq!(
        cp.streams(),
        vec!["sotw"],
        "delta refused, state of the world used"
    );

    let ingress = p
        .running
        .try_addr("ingress")
        .expect("listener from LDS is bound");
    call(ingress).await.expect("the valid resources apply");

    let nacks: Vec<String> = cp
        .answers()
        .into_iter()
        .filter(|a| a.type_url == CLUSTER)
        .filter_map(|a| a.error)
        .collect();
    assert_eq!(nacks.len(), 1, "{nacks:?}");
    assert!(nacks[0].contains("Cluster \"bad\""), "{}", nacks[0]);
    assert!(nacks[0].contains("ORIGINAL_DST"), "{}", nacks[0]);
    assert!(
        !nacks[0].contains("\"echo\""),
        "only the invalid one: {}",
        nacks[0]
    );
    assert_eq!(
        p.metric(
            "torii_xds_updates_total",
            &["type=\"cluster\"", "result=\"nack\""]
        ),
        Some(1.0)
    );
    let config = admin_get(p.running.admin_addr().unwrap(), "/config").await;
    assert!(config.contains("\"last_update\": \"nack\""), "{config}");
    assert!(config.contains("ORIGINAL_DST"), "{config}");
}

#[tokio::test]
async fn not_ready_until_the_server_answers_and_last_config_survives_a_restart() {
    let a = start_echo().await;
    let b = start_echo().await;
    // A port for the control plane, free until it starts there.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let p = torii(port, "xds-down").await;
    let ready = ready_when(&p, |r| r.contains("unreachable")).await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(
        ready.contains("waiting for the first configuration from the xDS server"),
        "{ready}"
    );

    let cp = ControlPlane::new(true);
    cp.set("echo", &eds_cluster("echo"));
    cp.set("echo", &assignment("echo", &[a.addr]));
    cp.set("ingress", &rds_listener("ingress", "all"));
    cp.set("all", &routes_to("all", "echo"));
    let stop = cp.serve(TcpListener::bind(port).await.unwrap());
    let ready = ready_when(&p, |r| r.starts_with("HTTP/1.1 200")).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let ingress = p.running.try_addr("ingress").unwrap();
    call(ingress)
        .await
        .expect("serving once the configuration arrived");

    // The control plane goes away: the last configuration keeps serving,
    // and /ready says so.
    let _ = stop.send(());
    let ready = ready_when(&p, |r| r.contains("unreachable")).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains("serving the last configuration"), "{ready}");
    call(ingress).await.expect("the last configuration serves");

    // It returns with a change: torii reconnects and applies it.
    cp.set("echo", &assignment("echo", &[b.addr]));
    let _stop = cp.serve(TcpListener::bind(port).await.unwrap());
    assert!(
        until_served_by(ingress, &b).await,
        "the change after the restart never applied"
    );
    let ready = ready_when(&p, |r| !r.contains("unreachable")).await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && !ready.contains("unreachable"),
        "{ready}"
    );
}

#[tokio::test]
async fn the_control_plane_over_mutual_tls() {
    let a = start_echo().await;
    let dir = TempDir::new("xds-mtls");
    let pki = TestPki::new("xds test CA");
    pki.write_ca(dir.path(), "ca").unwrap();
    pki.client_cert(&["torii"], &[])
        .write_to(dir.path(), "client")
        .unwrap();
    let server_tls = torii::demo::certs::server_config(
        &pki.server_cert(&["localhost"]),
        Some(pki.ca_cert_pem()),
    )
    .unwrap();
    let cp = ControlPlane::new(true);
    cp.set("echo", &eds_cluster("echo"));
    cp.set("echo", &assignment("echo", &[a.addr]));
    cp.set("ingress", &rds_listener("ingress", "all"));
    cp.set("all", &routes_to("all", "echo"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let handshakes = cp.serve_tls(listener, server_tls);
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\nxds:\n  server: https://{server}\n  node: {{ id: tls }}\n  \
         tls: {{ ca: ca.crt, server_name: localhost, cert: client.crt, key: client.key }}\n"
    );
    let p = start(&yaml, dir).await;
    let ready = ready_when(&p, |r| r.starts_with("HTTP/1.1 200")).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert_eq!(*handshakes.borrow(), 1, "one mutual-TLS connection");
    call(p.running.try_addr("ingress").unwrap())
        .await
        .expect("serving what came over TLS");
}

#[tokio::test]
async fn a_cluster_with_upstream_tls_from_xds() {
    use envoy_types::pb::envoy::config::core::v3::{
        data_source, transport_socket, DataSource, TransportSocket,
    };
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType, CertificateValidationContext, CommonTlsContext,
        UpstreamTlsContext,
    };
    let pki = TestPki::new("xds upstream CA");
    let tls = torii::demo::certs::server_config(&pki.server_cert(&["backend.test"]), None).unwrap();
    let backend = serve_echo(TcpListener::bind("127.0.0.1:0").await.unwrap(), Some(tls)).await;
    let ctx = UpstreamTlsContext {
        sni: "backend.test".into(),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(DataSource {
                        specifier: Some(data_source::Specifier::InlineString(
                            pki.ca_cert_pem().into(),
                        )),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut cluster = eds_cluster("echo");
    cluster.transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    });
    let (cp, server, _stop) = control_plane(true, &[backend.addr]).await;
    cp.set("echo", &cluster);
    let p = torii(server, "xds-upstream-tls").await;
    let ready = ready_when(&p, |r| r.starts_with("HTTP/1.1 200")).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let ingress = p.running.try_addr("ingress").unwrap();
    assert!(
        until_served_by(ingress, &backend).await,
        "no call reached the TLS backend"
    );
    assert!(
        cp.answers().iter().all(|a| a.error.is_none()),
        "{:?}",
        cp.answers()
    );
}

/// A DownstreamTlsContext: the server certificate (chain inline, key from
/// `key_file`), and, with `client_ca_file`, client certificates checked
/// against it (`require` says whether one is required). No ALPN: torii's
/// default applies.
fn downstream_tls(
    server: &CertPair,
    key_file: &std::path::Path,
    client_ca_file: Option<&std::path::Path>,
    require: bool,
) -> envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext {
    use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType, CertificateValidationContext, CommonTlsContext,
        DownstreamTlsContext, TlsCertificate,
    };
    let source = |s: Specifier| DataSource {
        specifier: Some(s),
        ..Default::default()
    };
    let file = |p: &std::path::Path| source(Specifier::Filename(p.display().to_string()));
    DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: Some(source(Specifier::InlineString(server.cert_pem.clone()))),
                private_key: Some(file(key_file)),
                ..Default::default()
            }],
            validation_context_type: client_ca_file.map(|ca| {
                ValidationContextType::ValidationContext(CertificateValidationContext {
                    trusted_ca: Some(file(ca)),
                    ..Default::default()
                })
            }),
            ..Default::default()
        }),
        require_client_certificate: Some(envoy_types::pb::google::protobuf::BoolValue {
            value: require,
        }),
        ..Default::default()
    }
}

/// Listener `ingress` (routes `all` by RDS) with `ctx` on its filter chain.
fn tls_listener(
    ctx: &envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext,
) -> envoy_types::pb::envoy::config::listener::v3::Listener {
    use envoy_types::pb::envoy::config::core::v3::{transport_socket, TransportSocket};
    let mut l = rds_listener("ingress", "all");
    l.filter_chains[0].transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(ctx))),
    });
    l
}

#[tokio::test]
async fn a_listener_with_tls_from_xds_serves_grpc_over_tls() {
    let a = start_echo().await;
    let dir = TempDir::new("xds-listener-tls-certs");
    let pki = TestPki::new("xds listener CA");
    let server = pki.server_cert(&["localhost"]);
    let (_, key) = server.write_to(dir.path(), "server").unwrap();
    let (cp, addr, _stop) = control_plane(true, &[a.addr]).await;
    cp.set(
        "ingress",
        &tls_listener(&downstream_tls(&server, &key, None, false)),
    );
    let p = torii(addr, "xds-listener-tls").await;
    let ready = ready_when(&p, |r| r.starts_with("HTTP/1.1 200")).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(
        cp.answers().iter().all(|a| a.error.is_none()),
        "{:?}",
        cp.answers()
    );
    let ingress = p.running.try_addr("ingress").unwrap();
    let client = TlsClient::new(pki.ca_cert_pem());
    let mut echo = client.echo_client(ingress).await.expect("a TLS channel");
    let reply = echo
        .unary(EchoRequest {
            message: "over tls".into(),
            ..Default::default()
        })
        .await
        .expect("a gRPC call over the xDS listener's TLS");
    assert_eq!(reply.into_inner().message, "over tls");
    assert_eq!(a.stats.completed(), 1);
    // No alpn_protocols: torii's default, h2 and http/1.1 (never none).
    let offered = client.clone().with_alpn(&["h2", "http/1.1"]);
    assert_eq!(
        offered.negotiated_alpn(ingress).await.unwrap().as_deref(),
        Some("h2")
    );
    let http1 = client.with_alpn(&["http/1.1"]);
    assert_eq!(
        http1.negotiated_alpn(ingress).await.unwrap().as_deref(),
        Some("http/1.1")
    );
    // Plaintext is not served on it.
    assert!(
        call(ingress).await.is_err(),
        "an h2c call to a TLS listener"
    );
    let config = admin_get(p.running.admin_addr().unwrap(), "/config").await;
    assert!(
        config.contains("inline certificate of xDS listener ingress"),
        "{config}"
    );
}

#[tokio::test]
async fn an_mtls_listener_from_xds_refuses_a_client_without_a_certificate() {
    let a = start_echo().await;
    let dir = TempDir::new("xds-listener-mtls-certs");
    let pki = TestPki::new("xds listener mTLS CA");
    let server = pki.server_cert(&["localhost"]);
    let (_, key) = server.write_to(dir.path(), "server").unwrap();
    let ca = pki.write_ca(dir.path(), "ca").unwrap();
    let (cp, addr, _stop) = control_plane(true, &[a.addr]).await;
    cp.set(
        "ingress",
        &tls_listener(&downstream_tls(&server, &key, Some(&ca), true)),
    );
    let p = torii(addr, "xds-listener-mtls").await;
    let ready = ready_when(&p, |r| r.starts_with("HTTP/1.1 200")).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let ingress = p.running.try_addr("ingress").unwrap();
    let request = || EchoRequest {
        message: "mtls".into(),
        ..Default::default()
    };

    let anonymous = TlsClient::new(pki.ca_cert_pem());
    let refused = match anonymous.echo_client(ingress).await {
        Err(e) => e.to_string(),
        Ok(mut c) => match c.unary(request()).await {
            Ok(_) => panic!("a client without a certificate was served"),
            Err(s) => s.to_string(),
        },
    };
    assert_eq!(a.stats.completed(), 0, "refused: {refused}");

    let stranger = TlsClient::new(pki.ca_cert_pem())
        .with_client_cert(TestPki::untrusted_cert(&["client.test"], &[]));
    if let Ok(mut c) = stranger.echo_client(ingress).await {
        assert!(
            c.unary(request()).await.is_err(),
            "a certificate from another CA was accepted"
        );
    }
    assert_eq!(a.stats.completed(), 0);

    let client =
        TlsClient::new(pki.ca_cert_pem()).with_client_cert(pki.client_cert(&["client.test"], &[]));
    let mut echo = client.echo_client(ingress).await.expect("an mTLS channel");
    echo.unary(request())
        .await
        .expect("a call with a certificate the CA signed");
    assert_eq!(a.stats.completed(), 1);
}

#[tokio::test]
async fn listener_tls_from_sds_is_nacked_naming_the_field() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig;
    let a = start_echo().await;
    let dir = TempDir::new("xds-listener-sds-certs");
    let pki = TestPki::new("xds listener SDS CA");
    let server = pki.server_cert(&["localhost"]);
    let (_, key) = server.write_to(dir.path(), "server").unwrap();
    let mut ctx = downstream_tls(&server, &key, None, false);
    let common = ctx.common_tls_context.as_mut().unwrap();
    common.tls_certificates.clear();
    common.tls_certificate_sds_secret_configs = vec![SdsSecretConfig {
        name: "server-cert".into(),
        ..Default::default()
    }];
    let (cp, addr, _stop) = control_plane(true, &[a.addr]).await;
    cp.set("ingress", &tls_listener(&ctx));
    let _p = torii(addr, "xds-listener-sds").await;
    let deadline = Instant::now() + PATIENCE;
    let nack = loop {
        let found = cp
            .answers()
            .into_iter()
            .filter(|a| a.type_url == LISTENER)
            .find_map(|a| a.error);
        if found.is_some() || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let nack = nack.expect("the listener with SDS certificates is NACKed");
    assert!(nack.contains("Listener \"ingress\""), "{nack}");
    assert!(
        nack.contains("tls_certificate_sds_secret_configs"),
        "{nack}"
    );
}

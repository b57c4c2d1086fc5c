//! `torii demo`: a self-signed TLS listener and a plaintext listener in
//! front of the built-in echo service, a real call through each, and
//! commands to try.

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tonic::transport::Endpoint;

use super::certs::{client_config, TestPki};
use super::connector::FixedTlsConnector;
use super::echo::serve_echo;
use crate::echo_pb::echo_client::EchoClient;
use crate::echo_pb::EchoRequest;

type BoxError = Box<dyn Error + Send + Sync>;

const PROTO: &str = include_str!("../../proto/echo.proto");

/// The demo's temporary folder, removed however the demo ends (Ctrl-C, a
/// port already taken, any error on the way).
struct DemoDir(PathBuf);

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How to run this same binary again, as a command that works when
/// pasted: `torii` is not on the PATH of someone who ran `cargo run`.
fn this_binary() -> String {
    let path = std::env::current_exe()
        .ok()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "torii".into());
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@".contains(c);
    if path.chars().all(plain) {
        path
    } else {
        format!("'{}'", path.replace('\'', r"'\''"))
    }
}

pub async fn run_demo(tls_addr: SocketAddr, plain_addr: SocketAddr) -> Result<(), Box<dyn Error>> {
    let stop = crate::drain::stop_signal()?;
    let dir = std::env::temp_dir().join(format!("torii-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = DemoDir(dir.clone());
    let pki = TestPki::new("torii demo CA");
    pki.server_cert(&["localhost", "127.0.0.1"])
        .write_to(&dir, "server")?;
    let ca_path = pki.write_ca(&dir, "ca")?;
    std::fs::write(dir.join("echo.proto"), PROTO)?;

    let echo = serve_echo(TcpListener::bind("127.0.0.1:0").await?, None).await;
    let yaml = demo_config(tls_addr, plain_addr, echo.addr);
    let config_path = dir.join("torii.yaml");
    std::fs::write(&config_path, &yaml)?;
    let running = crate::app::start_yaml(&yaml, &config_path)
        .await
        .map_err(|e| {
            format!(
                "{e}\n(the demo listens on {tls_addr} and {plain_addr}; choose other addresses \
                 with --tls-address and --plain-address, or 127.0.0.1:0 for any free port)"
            )
        })?;
    let tls = running.addr("tls");
    let plain = running.addr("plain");
    let admin = running.admin.expect("the demo has an admin listener");

    println!("torii demo: the built-in echo gRPC service behind torii\n");
    println!(
        "  TLS          https://localhost:{}  (self-signed; CA: {})",
        tls.port(),
        ca_path.display()
    );
    println!("  plaintext    http://{plain}  (HTTP/1.1 and h2c on one port)");
    println!("  admin        http://{admin}/metrics");
    println!("  config       {}", config_path.display());
    println!("  access log   {}", dir.join("access.log").display());
    println!("\nChecked just now:");
    report(
        "gRPC Unary over TLS (ALPN h2)",
        grpc_over_tls(tls, pki.ca_cert_pem()).await,
    );
    report("gRPC Unary over h2c", grpc_over_h2c(plain).await);
    report("HTTP/1.1 GET /healthz", http1_get(plain, "/healthz").await);
    report("a torii error: GET /nope", http1_get(plain, "/nope").await);

    let ca = ca_path.display();
    let d = dir.display();
    println!(
        r#"
Try:
  curl http://{plain}/healthz
  curl --http2-prior-knowledge http://{plain}/version
  curl --cacert {ca} https://localhost:{tp}/version
  curl -i http://{plain}/nope                     # x-torii-error: no_route, in plain words
  grpcurl -cacert {ca} -import-path {d} -proto echo.proto -d '{{"message":"hi"}}' localhost:{tp} torii.echo.v1.Echo/Unary
  grpcurl -plaintext -import-path {d} -proto echo.proto -d '{{"status_code":5,"status_message":"gone"}}' {plain} torii.echo.v1.Echo/Unary
  curl -s http://{admin}/metrics | grep torii_requests_total
  {torii} check -c {config}
  tail -f {d}/access.log

Ctrl-C to stop."#,
        tp = tls.port(),
        config = config_path.display(),
        torii = this_binary(),
    );
    stop.await;
    running.shutdown().await;
    echo.shutdown().await;
    Ok(())
}

fn demo_config(tls: SocketAddr, plain: SocketAddr, echo: SocketAddr) -> String {
    format!(
        r#"# torii demo configuration (written by `torii demo`)
admin:
  address: 127.0.0.1:0
access_log: access.log
listeners:
  - name: tls
    address: {tls}
    tls:
      certificates:
        - cert: server.crt
          key: server.key
    routes: &routes
      - match: {{ path: /version }}
        direct_response: {{ status: 200, body: "torii {version}" }}
      - match: {{ grpc_service: torii.echo.v1.Echo }}
        cluster: echo
      - match: {{ grpc_service: grpc.health.v1.Health }}
        cluster: echo
  - name: plain
    address: {plain}
    routes: *routes
clusters:
  - name: echo
    endpoints: ["{echo}"]
"#,
        version = env!("CARGO_PKG_VERSION")
    )
}

fn report(what: &str, result: Result<String, BoxError>) {
    match result {
        Ok(detail) => println!("  ok    {what:<34} {detail}"),
        Err(e) => println!("  FAIL  {what:<34} {e}"),
    }
}

async fn grpc_over_tls(addr: SocketAddr, ca_pem: &str) -> Result<String, BoxError> {
    let config = client_config(ca_pem, None, &["h2"])?;
    let connector = FixedTlsConnector::new(
        addr,
        TlsConnector::from(Arc::new(config)),
        ServerName::try_from("localhost")?,
    );
    let channel = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))?
        .connect_with_connector(connector)
        .await?;
    unary(EchoClient::new(channel), "hello through TLS").await
}

async fn grpc_over_h2c(addr: SocketAddr) -> Result<String, BoxError> {
    let client = EchoClient::connect(format!("http://{addr}")).await?;
    unary(client, "hello through h2c").await
}

async fn unary(
    mut client: EchoClient<tonic::transport::Channel>,
    msg: &str,
) -> Result<String, BoxError> {
    let start = Instant::now();
    let resp = client
        .unary(EchoRequest {
            message: msg.into(),
            ..Default::default()
        })
        .await?;
    Ok(format!(
        "-> {:?} in {:.1} ms",
        resp.get_ref().message,
        start.elapsed().as_secs_f64() * 1000.0
    ))
}

async fn http1_get(addr: SocketAddr, path: &str) -> Result<String, BoxError> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: demo\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    tcp.read_to_string(&mut out).await?;
    let status = out.lines().next().unwrap_or("").to_string();
    let body = out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    Ok(format!("-> {status}: {body}"))
}

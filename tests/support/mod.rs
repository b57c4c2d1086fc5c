//! Helpers for the integration tests: start backends, make gRPC clients
//! (h2c, TLS with any CA/ALPN/client certificate, or raw h2 for what tonic
//! cannot do, such as cancelling a bidi stream), talk raw HTTP/1.1, and make
//! temporary directories.
//!
//! Each test file includes this with `mod support;` and uses what it needs.
#![allow(dead_code, unused_imports)]

use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::Uri;
use hyper_util::rt::TokioIo;
use prost::Message;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

pub use torii::demo::backends::*;
pub use torii::demo::certs::*;
pub use torii::demo::connector::FixedTlsConnector;
pub use torii::demo::echo::*;
pub use torii::echo_pb::echo_client::EchoClient;
pub use torii::echo_pb::{EchoRequest, EchoResponse};

/// What an mTLS listener's config names: `server.crt`/`server.key` (for
/// localhost) and `ca.crt`, the CA its client certificates come from.
pub fn write_server_and_ca(pki: &TestPki, dir: &Path) {
    pki.server_cert(&["localhost"])
        .write_to(dir, "server")
        .unwrap();
    pki.write_ca(dir, "ca").unwrap();
}

pub mod process;

pub type BoxError = Box<dyn Error + Send + Sync>;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// An h2c echo server on 127.0.0.1, port chosen by the OS.
pub async fn start_echo() -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    serve_echo(listener, None).await
}

/// An echo client with the message limits raised to match the server's.
pub fn echo_client(channel: Channel) -> EchoClient<Channel> {
    EchoClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// A channel speaking h2c (HTTP/2 prior knowledge) to `addr`.
pub async fn h2c_channel(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address makes a valid URI")
        .connect_timeout(PATIENCE)
        .connect()
        .await
}

/// An echo client over h2c to `addr`; panics if it cannot connect.
pub async fn h2c_client(addr: SocketAddr) -> EchoClient<Channel> {
    let channel = h2c_channel(addr)
        .await
        .unwrap_or_else(|e| panic!("h2c connect to {addr}: {e:?}"));
    echo_client(channel)
}

/// How a TLS client connects: trust, SNI, ALPN offered, client certificate.
#[derive(Clone, Debug)]
pub struct TlsClient {
    pub ca_pem: String,
    /// SNI and certificate name checked; also the `:authority` sent.
    pub server_name: String,
    /// Offered ALPN protocols; empty offers none.
    pub alpn: Vec<String>,
    pub client_cert: Option<CertPair>,
}

impl TlsClient {
    /// Trusts `ca_pem`, names `localhost`, offers ALPN `h2`, no client cert.
    pub fn new(ca_pem: &str) -> Self {
        TlsClient {
            ca_pem: ca_pem.to_string(),
            server_name: "localhost".into(),
            alpn: vec!["h2".into()],
            client_cert: None,
        }
    }

    pub fn with_client_cert(mut self, cert: CertPair) -> Self {
        self.client_cert = Some(cert);
        self
    }

    pub fn with_alpn(mut self, alpn: &[&str]) -> Self {
        self.alpn = alpn.iter().map(|p| p.to_string()).collect();
        self
    }

    pub fn with_server_name(mut self, name: &str) -> Self {
        self.server_name = name.into();
        self
    }

    fn connector(&self) -> Result<(TlsConnector, ServerName<'static>), BoxError> {
        let alpn: Vec<&str> = self.alpn.iter().map(String::as_str).collect();
        let config = client_config(&self.ca_pem, self.client_cert.as_ref(), &alpn)?;
        let name = ServerName::try_from(self.server_name.clone())?;
        Ok((TlsConnector::from(Arc::new(config)), name))
    }

    /// Connects and completes the TLS handshake only.
    pub async fn handshake(&self, addr: SocketAddr) -> Result<TlsStream<TcpStream>, BoxError> {
        let (connector, name) = self.connector()?;
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(tokio::time::timeout(PATIENCE, connector.connect(name, tcp)).await??)
    }

    /// The ALPN protocol the server chose, after a handshake.
    pub async fn negotiated_alpn(&self, addr: SocketAddr) -> Result<Option<String>, BoxError> {
        let stream = self.handshake(addr).await?;
        let alpn = stream.get_ref().1.alpn_protocol();
        Ok(alpn.map(|p| String::from_utf8_lossy(p).into_owned()))
    }

    /// A gRPC channel over this TLS setup to `addr`.
    pub async fn channel(&self, addr: SocketAddr) -> Result<Channel, BoxError> {
        let (connector, name) = self.connector()?;
        let uri = format!("https://{}:{}", self.server_name, addr.port());
        let channel = Endpoint::from_shared(uri)?
            .connect_timeout(PATIENCE)
            .connect_with_connector(FixedTlsConnector::new(addr, connector, name))
            .await?;
        Ok(channel)
    }

    /// An echo client over this TLS setup to `addr`.
    pub async fn echo_client(&self, addr: SocketAddr) -> Result<EchoClient<Channel>, BoxError> {
        Ok(echo_client(self.channel(addr).await?))
    }
}

/// A gRPC message frame: flag 0 (uncompressed), length, message.
pub fn grpc_frame(msg: &impl Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut buf = BytesMut::with_capacity(5 + body.len());
    buf.put_u8(0);
    buf.put_u32(body.len() as u32);
    buf.put_slice(&body);
    buf.freeze()
}

/// Splits complete gRPC frames off the front of `buf`.
pub fn take_grpc_frames<M: Message + Default>(buf: &mut BytesMut) -> Vec<M> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        buf.advance(5);
        let body = buf.split_to(len);
        out.push(M::decode(body.freeze()).expect("a valid protobuf message"));
    }
    out
}

/// A raw HTTP/2 connection (h2c) for what tonic's client cannot do: reset a
/// stream on purpose, send odd headers, watch frames.
pub async fn raw_h2(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// Opens a gRPC call on a raw h2 connection: POST `path` with the gRPC
/// headers. The request stream stays open. Pass a clone of the connection's
/// `SendRequest`.
pub async fn raw_grpc_call(
    send: h2::client::SendRequest<Bytes>,
    authority: &str,
    path: &str,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::post(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a valid request");
    let mut send = send.ready().await.expect("connection ready");
    send.send_request(request, false).expect("send request")
}

/// Sends raw bytes and reads until the server closes (or resets) or
/// `PATIENCE` passes; returns what came back.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> io::Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(request).await?;
    let mut out = Vec::new();
    // A reset after the answer still leaves the answer in `out`.
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `GET path` on torii's admin listener over HTTP/1.1: the whole answer,
/// head and body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> String {
    raw_exchange(
        admin,
        format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap()
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "torii-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The first ```yaml block after the `## heading` line of a markdown text
/// (a config a document shows its readers).
pub fn yaml_after(markdown: &str, heading: &str) -> String {
    let section = markdown
        .split(&format!("\n## {heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no \"## {heading}\" section"));
    let block = section.split("```yaml\n").nth(1).expect("a yaml block");
    block.split("\n```").next().unwrap().to_string()
}

/// `torii check -c CONFIG` with the built binary.
pub fn torii_check(config: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_torii"))
        .args(["check", "-c"])
        .arg(config)
        .output()
        .expect("torii check runs")
}

/// A test that cannot run here says so, and is counted: a line
/// `SKIPPED: <test>: <why>` written straight to the process's stderr (past
/// the test harness's capture, so it shows for passing tests too), which
/// `scripts/test.sh` collects into its summary. Under CI (`CI` set, and not
/// "false" or "0") a skip is a failure instead: CI is set up to run every
/// test, so one that cannot run there means the setup broke.
pub fn skip(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!ci, "{test} cannot run, and CI must run it: {why}");
    // One write, so that the line is not interleaved with the harness's.
    let line = format!("SKIPPED: {test}: {why}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}

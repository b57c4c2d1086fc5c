//! The probes `torii doctor` runs: TCP, TLS handshakes with three ALPN
//! offers, the first bytes a plaintext port answers to HTTP/2 and HTTP/1.1,
//! and a grpc.health.v1 Check (and its gRPC-Web form) over whatever works.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where to connect and how to present ourselves.
pub struct Target {
    pub host: String,
    pub port: u16,
    /// The name asked for in SNI and checked against the certificate.
    pub server_name: String,
    pub timeout: Duration,
    pub service: String,
    /// The HTTP/1.1 path probed (what a Kubernetes httpGet probe would ask).
    pub path: String,
}

/// The result of connecting.
#[derive(Debug, Clone, Serialize)]
pub struct Tcp {
    pub ok: bool,
    pub address: Option<String>,
    pub millis: Option<u128>,
    pub error: Option<String>,
}

pub async fn resolve_and_connect(t: &Target) -> (Tcp, Option<SocketAddr>) {
    let start = Instant::now();
    let addrs = match tokio::time::timeout(
        t.timeout,
        tokio::net::lookup_host((t.host.as_str(), t.port)),
    )
    .await
    {
        Ok(Ok(a)) => a.collect::<Vec<_>>(),
        Ok(Err(e)) => {
            return (
                Tcp {
                    ok: false,
                    address: None,
                    millis: None,
                    error: Some(format!("the name {:?} does not resolve ({e})", t.host)),
                },
                None,
            )
        }
        Err(_) => {
            return (
                fail_tcp(format!(
                    "resolving {:?} took longer than {:?}",
                    t.host, t.timeout
                )),
                None,
            )
        }
    };
    let mut last = format!("the name {:?} resolved to no address", t.host);
    for addr in addrs {
        match tokio::time::timeout(t.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => {
                return (
                    Tcp {
                        ok: true,
                        address: Some(addr.to_string()),
                        millis: Some(start.elapsed().as_millis()),
                        error: None,
                    },
                    Some(addr),
                )
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = format!("connection to {addr} refused: nothing listens on that port (or a firewall rejects it)")
            }
            Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
            Err(_) => {
                last = format!(
                    "connecting to {addr} timed out after {:?}: a firewall drops the packets, or the host is down",
                    t.timeout
                )
            }
        }
    }
    (fail_tcp(last), None)
}

fn fail_tcp(error: String) -> Tcp {
    Tcp {
        ok: false,
        address: None,
        millis: None,
        error: Some(error),
    }
}

/// One TLS handshake with one ALPN offer.
#[derive(Debug, Clone, Serialize)]
pub struct Handshake {
    /// What was offered, like `h2,http/1.1`.
    pub offered: String,
    pub ok: bool,
    pub version: Option<String>,
    pub cipher: Option<String>,
    /// The protocol the server selected; None: it selected none.
    pub alpn: Option<String>,
    pub error: Option<String>,
}

/// The server's certificate, checked.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Certificate {
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub not_after: String,
    pub days_left: i64,
    /// Verified against the roots given (`--ca`) or the system's.
    pub chain_ok: bool,
    pub name_ok: bool,
    pub expired: bool,
    /// Why verification failed, in words.
    pub problem: Option<String>,
    pub roots: String,
}

/// Accepts any certificate, keeping what the server sent: the doctor wants
/// to see the handshake through and judge the certificate itself.
#[derive(Debug)]
struct Accept(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Accept {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client certificate for mutual TLS.
pub type ClientCert = (Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>);

fn client_config(
    alpn: &[&str],
    client: Option<&ClientCert>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = crate::tls_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Accept(provider)));
    let mut config = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("the client certificate and key do not fit together: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS handshake offering `alpn`; the stream and the peer's chain on success.
pub async fn tls(
    addr: SocketAddr,
    t: &Target,
    alpn: &[&str],
    client: Option<&ClientCert>,
) -> (Handshake, Option<(TlsStream, Vec<CertificateDer<'static>>)>) {
    let mut h = Handshake {
        offered: if alpn.is_empty() {
            "none".into()
        } else {
            alpn.join(",")
        },
        ok: false,
        version: None,
        cipher: None,
        alpn: None,
        error: None,
    };
    let config = match client_config(alpn, client) {
        Ok(c) => c,
        Err(e) => {
            h.error = Some(e);
            return (h, None);
        }
    };
    let name = match ServerName::try_from(t.server_name.clone()) {
        Ok(n) => n,
        Err(_) => {
            h.error = Some(format!("{:?} is not a valid server name", t.server_name));
            return (h, None);
        }
    };
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| tls_words(&e))
    };
    match tokio::time::timeout(t.timeout, attempt).await {
        Err(_) => h.error = Some(format!("no TLS answer within {:?}: the port does not speak TLS (a plaintext server waits for a request)", t.timeout)),
        Ok(Err(e)) => h.error = Some(e),
        Ok(Ok(stream)) => {
            let (_, conn) = stream.get_ref();
            h.ok = true;
            h.version = conn.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".to_string(),
                rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".to_string(),
                other => {
                    let text = format!("{other:?}");
                    if text.contains("CaUsedAsEndEntity") {
                        "the server's certificate is a CA certificate (basicConstraints CA:TRUE) used as a server certificate, which verifying clients refuse".to_string()
                    } else {
                        format!("the certificate is refused ({text})")
                    }
                }
            });
            h.cipher = conn
                .negotiated_cipher_suite()
                .map(|c| format!("{:?}", c.suite()));
            h.alpn = conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            let chain = conn
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            return (h, Some((stream, chain)));
        }
    }
    (h, None)
}

fn tls_words(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("InvalidContentType")
        || text.contains("corrupt message")
        || text.contains("invalid") && text.contains("content type")
    {
        format!("the server did not answer with TLS ({text}): the port speaks plaintext")
    } else if text.contains("NoApplicationProtocol") || text.contains("no_application_protocol") {
        format!("the server refused every protocol offered in ALPN ({text})")
    } else if text.contains("CertificateRequired")
        || text.contains("certificate required")
        || text.contains("HandshakeFailure") && text.contains("alert")
    {
        format!("the server refused the handshake ({text}); it may require a client certificate (--cert/--key)")
    } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
        "the server closed the connection during the TLS handshake: it does not speak TLS on this port, or refused us".to_string()
    } else {
        text
    }
}

/// The server's leaf certificate, verified against `roots`.
pub fn certificate(
    chain: &[CertificateDer<'static>],
    t: &Target,
    roots: &rustls::RootCertStore,
    roots_name: &str,
) -> Option<Certificate> {
    let leaf = chain.first()?;
    let (_, x509) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let mut c = Certificate {
        subject: x509.subject().to_string(),
        issuer: x509.issuer().to_string(),
        roots: roots_name.to_string(),
        ..Certificate::default()
    };
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for name in &san.value.general_names {
            use x509_parser::extensions::GeneralName;
            match name {
                GeneralName::DNSName(d) => c.sans.push(d.to_string()),
                GeneralName::URI(u) => c.sans.push(u.to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => c
                        .sans
                        .push(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string()),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(ip);
                        c.sans.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let not_after = x509.validity().not_after;
    c.not_after = not_after.to_datetime().date().to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    c.days_left = (not_after.timestamp() - now).div_euclid(86400);
    c.expired = not_after.timestamp() < now;
    let Ok(name) = ServerName::try_from(t.server_name.clone()) else {
        return Some(c);
    };
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots.clone()),
        crate::tls_provider(),
    )
    .build();
    let verifier = match verifier {
        Ok(v) => v,
        Err(e) => {
            c.problem = Some(format!("no usable trust roots ({e})"));
            return Some(c);
        }
    };
    let result = verifier.verify_server_cert(leaf, &chain[1..], &name, &[], UnixTime::now());
    use rustls::CertificateError as E;
    match result {
        Ok(_) => {
            c.chain_ok = true;
            c.name_ok = true;
        }
        Err(rustls::Error::InvalidCertificate(e)) => {
            // webpki checks the chain (and dates) first, then the name.
            c.chain_ok = matches!(e, E::NotValidForName | E::NotValidForNameContext { .. });
            c.problem = Some(match e {
                E::Expired | E::ExpiredContext { .. } => {
                    format!("the certificate expired on {}", c.not_after)
                }
                E::NotValidYet | E::NotValidYetContext { .. } => {
                    "the certificate is not valid yet".to_string()
                }
                E::UnknownIssuer => format!(
                    "the chain does not lead to a CA in {roots_name} (issuer: {})",
                    c.issuer
                ),
                E::NotValidForName | E::NotValidForNameContext { .. } => format!(
                    "the certificate is not valid for {:?}: its names are {}",
                    t.server_name,
                    if c.sans.is_empty() {
                        "none (no SAN)".to_string()
                    } else {
                        c.sans.join(", ")
                    }
                ),
                E::BadSignature => "a signature in the chain is bad".to_string(),
                other => {
                    let text = format!("{other:?}");
                    if text.contains("CaUsedAsEndEntity") {
                        "the server's certificate is a CA certificate (basicConstraints CA:TRUE) used as a server certificate, which verifying clients refuse".to_string()
                    } else {
                        format!("the certificate is refused ({text})")
                    }
                }
            });
            if c.chain_ok {
                // The chain is fine; the name is not.
                c.name_ok = false;
            } else {
                // Whether the name would fit is still worth saying.
                c.name_ok = names_match(&c.sans, &t.server_name);
            }
        }
        Err(e) => c.problem = Some(e.to_string()),
    }
    Some(c)
}

/// A rough SAN match (exact or one-label wildcard), for when the chain
/// failed before webpki got to the name.
fn names_match(sans: &[String], name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    sans.iter().any(|s| {
        let s = s.to_ascii_lowercase();
        s == name
            || s.strip_prefix("*.")
                .is_some_and(|suffix| name.split_once('.').is_some_and(|(_, rest)| rest == suffix))
    })
}

/// What a plaintext port answered to the first bytes of a protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// HTTP/2 frames (a SETTINGS frame first).
    Http2,
    /// An HTTP/1.x status line.
    Http1,
    /// A TLS record (an alert): the port wants TLS.
    Tls,
    /// The connection closed without a byte.
    Closed,
    /// Nothing within the timeout.
    Silent,
    /// Something else.
    Other,
}

#[derive(Debug, Clone, Serialize)]
pub struct FirstBytes {
    pub answer: Answer,
    /// A printable excerpt of what came back.
    pub excerpt: String,
    /// The HTTP/1.1 status, when there was one.
    pub status: Option<u16>,
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Sends `request` on a fresh plaintext connection (or over `stream`) and
/// classifies the first bytes of the answer.
pub async fn first_bytes<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    timeout: Duration,
) -> FirstBytes {
    let exchange = async {
        stream.write_all(request).await?;
        let mut buf = vec![0u8; 512];
        let mut got = 0;
        // Enough to see a status line or a frame header.
        while got < 16 {
            let n = stream.read(&mut buf[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        Ok::<_, std::io::Error>(buf)
    };
    let bytes = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return classify(&[], Answer::Silent),
        Ok(Err(_)) => Vec::new(),
        Ok(Ok(b)) => b,
    };
    if bytes.is_empty() {
        return classify(&bytes, Answer::Closed);
    }
    let answer = if bytes.starts_with(b"HTTP/1.") || bytes.starts_with(b"HTTP/2 ") {
        Answer::Http1
    } else if bytes.len() >= 3 && (bytes[0] == 0x15 || bytes[0] == 0x16) && bytes[1] == 0x03 {
        Answer::Tls
    } else if bytes.len() >= 9 && bytes[3] == 0x04 && bytes[4] & !1 == 0 {
        Answer::Http2
    } else if bytes.len() >= 9 && bytes[3] == 0x07 {
        // A GOAWAY before SETTINGS: still an HTTP/2 speaker.
        Answer::Http2
    } else {
        Answer::Other
    };
    classify(&bytes, answer)
}

fn classify(bytes: &[u8], answer: Answer) -> FirstBytes {
    let printable: String = bytes
        .iter()
        .take(48)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    let status = (answer == Answer::Http1)
        .then(|| {
            std::str::from_utf8(bytes)
                .ok()?
                .split(' ')
                .nth(1)?
                .parse()
                .ok()
        })
        .flatten();
    FirstBytes {
        answer,
        excerpt: printable,
        status,
    }
}

pub async fn plain_h2(addr: SocketAddr, timeout: Duration) -> FirstBytes {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => first_bytes(tcp, &[PREFACE, SETTINGS].concat(), timeout).await,
        _ => classify(&[], Answer::Closed),
    }
}

pub fn http1_request(t: &Target) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: torii-doctor\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        t.path, t.server_name
    )
    .into_bytes()
}

pub async fn plain_h1(addr: SocketAddr, t: &Target) -> FirstBytes {
    match tokio::time::timeout(t.timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => first_bytes(tcp, &http1_request(t), t.timeout).await,
        _ => classify(&[], Answer::Closed),
    }
}

/// A grpc.health.v1 Check and what came back.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Health {
    pub attempted: bool,
    /// The HTTP status.
    pub http_status: Option<u16>,
    pub content_type: Option<String>,
    pub grpc_status: Option<String>,
    pub grpc_message: Option<String>,
    /// SERVING, NOT_SERVING, SERVICE_UNKNOWN, UNKNOWN.
    pub serving: Option<String>,
    /// A 200 with a gRPC content-type and a grpc-status: a real gRPC answer.
    pub real_grpc: bool,
    pub error: Option<String>,
}

fn health_request_body(service: &str) -> Bytes {
    // HealthCheckRequest { string service = 1; }, in one gRPC message.
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        let mut len = service.len();
        while len >= 0x80 {
            msg.push((len as u8) | 0x80);
            len >>= 7;
        }
        msg.push(len as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    Bytes::from(framed)
}

/// The `status` of a HealthCheckResponse message (field 1, an enum).
fn serving_status(message: &[u8]) -> String {
    let status = if message.len() >= 2 && message[0] == 0x08 {
        message[1]
    } else {
        0
    };
    match status {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
    .to_string()
}

fn grpc_status_name(code: &str) -> String {
    let name = match code {
        "0" => "OK",
        "1" => "CANCELLED",
        "2" => "UNKNOWN",
        "3" => "INVALID_ARGUMENT",
        "4" => "DEADLINE_EXCEEDED",
        "5" => "NOT_FOUND",
        "7" => "PERMISSION_DENIED",
        "8" => "RESOURCE_EXHAUSTED",
        "12" => "UNIMPLEMENTED",
        "13" => "INTERNAL",
        "14" => "UNAVAILABLE",
        "16" => "UNAUTHENTICATED",
        _ => return code.to_string(),
    };
    format!("{code} {name}")
}

fn health_request(t: &Target, scheme: &str, web: bool) -> http::Request<Full<Bytes>> {
    let mut body = health_request_body(&t.service);
    let content_type = if web {
        "application/grpc-web+proto"
    } else {
        "application/grpc"
    };
    let uri = format!(
        "{scheme}://{}:{}/grpc.health.v1.Health/Check",
        uri_host(&t.server_name),
        t.port
    );
    let mut b = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::USER_AGENT, "torii-doctor");
    if web {
        b = b
            .header("x-grpc-web", "1")
            .header(http::header::HOST, format!("{}:{}", t.server_name, t.port));
    } else {
        b = b.header(http::header::TE, "trailers");
    }
    if body.is_empty() {
        body = Bytes::from_static(&[0, 0, 0, 0, 0]);
    }
    b.body(Full::new(body)).expect("a valid request")
}

fn uri_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

async fn read_health(resp: hyper::Response<hyper::body::Incoming>, web: bool) -> Health {
    let mut h = Health {
        attempted: true,
        http_status: Some(resp.status().as_u16()),
        ..Health::default()
    };
    let headers = resp.headers().clone();
    h.content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let collected = match resp.into_body().collect().await {
        Ok(c) => c,
        Err(e) => {
            h.error = Some(format!("the response body broke off: {e}"));
            return h;
        }
    };
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    let mut grpc_status = headers.get("grpc-status").cloned();
    let mut grpc_message = headers.get("grpc-message").cloned();
    if let Some(t) = &trailers {
        grpc_status = grpc_status.or_else(|| t.get("grpc-status").cloned());
        grpc_message = grpc_message.or_else(|| t.get("grpc-message").cloned());
    }
    // Messages (and, for gRPC-Web, the trailer frame) in the body.
    let mut rest = &body[..];
    while rest.len() >= 5 {
        let flags = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let Some(payload) = rest.get(5..5 + len) else {
            break;
        };
        if flags & 0x80 != 0 && web {
            for line in String::from_utf8_lossy(payload).split("\r\n") {
                if let Some((k, v)) = line.split_once(':') {
                    let v = http::HeaderValue::from_str(v.trim()).ok();
                    match k.trim().to_ascii_lowercase().as_str() {
                        "grpc-status" => grpc_status = grpc_status.or(v),
                        "grpc-message" => grpc_message = grpc_message.or(v),
                        _ => {}
                    }
                }
            }
        } else if h.serving.is_none() {
            h.serving = Some(serving_status(payload));
        }
        rest = &rest[5 + len..];
    }
    h.grpc_status = grpc_status.and_then(|v| v.to_str().ok().map(grpc_status_name));
    h.grpc_message = grpc_message.and_then(|v| {
        v.to_str().ok().map(|m| {
            percent_encoding::percent_decode_str(m)
                .decode_utf8_lossy()
                .into_owned()
        })
    });
    let ct_ok = h.content_type.as_deref().is_some_and(|c| {
        if web {
            c.starts_with("application/grpc-web")
        } else {
            c.starts_with("application/grpc")
        }
    });
    h.real_grpc = h.http_status == Some(200) && ct_ok && h.grpc_status.is_some();
    h
}

/// A health Check over HTTP/2 on `io` (h2c or TLS with ALPN h2).
pub async fn health_h2<S>(io: S, t: &Target, scheme: &str) -> Health
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let attempt = async {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|e| format!("no HTTP/2 connection: {e}"))?;
        tokio::spawn(conn);
        let resp = send
            .send_request(health_request(t, scheme, false))
            .await
            .map_err(|e| format!("the HTTP/2 request failed: {}", error_chain(&e)))?;
        Ok::<_, String>(read_health(resp, false).await)
    };
    finish(tokio::time::timeout(t.timeout, attempt).await, t.timeout)
}

/// A gRPC-Web health Check over HTTP/1.1 on `io`, as a browser sends it.
pub async fn health_web<S>(io: S, t: &Target, scheme: &str) -> Health
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let attempt = async {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("no HTTP/1.1 connection: {e}"))?;
        tokio::spawn(conn);
        let mut req = health_request(t, scheme, true);
        *req.uri_mut() = http::Uri::from_static("/grpc.health.v1.Health/Check");
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("the HTTP/1.1 request failed: {}", error_chain(&e)))?;
        Ok::<_, String>(read_health(resp, true).await)
    };
    finish(tokio::time::timeout(t.timeout, attempt).await, t.timeout)
}

fn finish(
    result: Result<Result<Health, String>, tokio::time::error::Elapsed>,
    timeout: Duration,
) -> Health {
    match result {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => Health {
            attempted: true,
            error: Some(e),
            ..Health::default()
        },
        Err(_) => Health {
            attempted: true,
            error: Some(format!("no answer within {timeout:?}")),
            ..Health::default()
        },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

pub async fn tcp(addr: SocketAddr, timeout: Duration) -> Option<TcpStream> {
    tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .ok()?
        .ok()
}

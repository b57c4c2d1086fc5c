//! Opening connections to upstream endpoints: TCP (with TCP_NODELAY), TLS
//! with ALPN, and the HTTP/1.1 or HTTP/2 handshake. Failures become
//! [`ProxyError`]s that say what was seen on the wire.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::h2client::{self, H2Client};
use crate::body::Body;
use crate::config::{Cluster, UpstreamTls};
use crate::error::{ErrorCode, ProxyError};
use crate::http2::Reason;

use crate::limits::{H2_CONNECTION_WINDOW, H2_STREAM_WINDOW};

/// The protocol spoken on one upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    Http1,
    Http2,
}

/// The first bytes an upstream sent on a connection, kept so that a failed
/// HTTP/2 exchange can be explained ("it answered in HTTP/1.1").
pub type FirstBytes = Arc<Mutex<Vec<u8>>>;
/// Enough for a status line or an HTML doctype to be shown in a message.
const FIRST_BYTES: usize = 64;

pub enum Connected {
    H1(http1::SendRequest<Body>, FirstBytes),
    H2(H2Client, FirstBytes),
}

/// Builds connections for one cluster.
pub struct Connector {
    cluster: String,
    /// Upstream failures logged at info (rate-limited), for this cluster.
    pub failures: Arc<super::failures::FailureLog>,
    metrics: Arc<crate::telemetry::Metrics>,
    connect_timeout: Duration,
    tls: Option<TlsSet>,
    /// HTTP/2 settings, with the cluster's keepalive.
    h2: h2client::Settings,
    /// The cluster's limits and their use.
    pub load: Arc<super::limits::Load>,
}

struct TlsSet {
    /// ALPN h2 only: gRPC must get HTTP/2.
    h2: TlsConnector,
    /// ALPN http/1.1 only.
    h1: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl Connector {
    pub fn new(cluster: &Cluster, metrics: Arc<crate::telemetry::Metrics>) -> Result<Self, String> {
        let tls = cluster.tls.as_ref().map(build_tls).transpose()?;
        Ok(Connector {
            cluster: cluster.name.clone(),
            failures: Arc::default(),
            load: Arc::new(super::limits::Load::new(
                cluster.limits,
                &cluster.name,
                metrics.clone(),
            )),
            metrics,
            connect_timeout: cluster.connect_timeout,
            tls,
            h2: h2client::Settings {
                stream_window: H2_STREAM_WINDOW,
                connection_window: H2_CONNECTION_WINDOW,
                keepalive: cluster.http2_keepalive,
            },
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects to `addr` (`host` is the name it came from, for SNI) and
    /// performs the handshake for `wire`.
    /// Connects to `addr` (`host` is the name it came from, for SNI) and
    /// performs the handshake for `wire`; the time it took is a metric.
    /// `slot` is the connection's place under `max_connections`: its task
    /// keeps it while the connection lives.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        host: &str,
        wire: Wire,
        slot: super::limits::ConnSlot,
    ) -> Result<Connected, ProxyError> {
        let started = std::time::Instant::now();
        let result = self.connect_inner(addr, host, wire, slot).await;
        if result.is_ok() {
            self.metrics
                .upstream_connect_duration
                .get_or_create(&crate::telemetry::metrics::ClusterLabels {
                    cluster: self.cluster.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }

    async fn connect_inner(
        &self,
        addr: SocketAddr,
        host: &str,
        wire: Wire,
        slot: super::limits::ConnSlot,
    ) -> Result<Connected, ProxyError> {
        let tcp = self.tcp(addr).await?;
        match &self.tls {
            None => handshake(tcp, wire, addr, self, slot).await,
            Some(tls) => {
                let connector = match wire {
                    Wire::Http2 => &tls.h2,
                    Wire::Http1 => &tls.h1,
                };
                let name = match &tls.server_name {
                    Some(n) => n.clone(),
                    None => ServerName::try_from(host.to_string()).map_err(|_| {
                        ProxyError::new(
                            ErrorCode::UpstreamTlsFailed,
                            format!("cluster {}: {host} is not a valid TLS server name; set tls.server_name", self.cluster),
                        )
                    })?,
                };
                let stream = tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| {
                        ProxyError::new(
                            ErrorCode::UpstreamConnectTimeout,
                            format!("the TLS handshake with upstream {addr} (cluster {}) did not finish within connect_timeout {}", self.cluster, crate::config::duration::display(self.connect_timeout)),
                        )
                    })?
                    .map_err(|e| tls_error(&e, addr, &self.cluster))?;
                let alpn = stream.get_ref().1.alpn_protocol().map(|p| p.to_vec());
                if wire == Wire::Http2 && alpn.as_deref().is_some_and(|p| p != b"h2") {
                    return Err(ProxyError::new(
                        ErrorCode::UpstreamProtocolMismatch,
                        format!(
                            "upstream {addr} (cluster {}) selected ALPN \"{}\" instead of h2: it does not serve HTTP/2 over TLS, which gRPC needs; enable HTTP/2 on the upstream",
                            self.cluster,
                            String::from_utf8_lossy(alpn.as_deref().unwrap_or_default())
                        ),
                    ));
                }
                handshake(stream, wire, addr, self, slot).await
            }
        }
    }

    pub(super) async fn tcp(&self, addr: SocketAddr) -> Result<TcpStream, ProxyError> {
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(ProxyError::new(
                    ErrorCode::UpstreamConnectTimeout,
                    format!(
                        "upstream {addr} (cluster {}) did not accept the connection within connect_timeout {}",
                        self.cluster, crate::config::duration::display(self.connect_timeout)
                    ),
                ))
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(ProxyError::new(
                    ErrorCode::UpstreamConnectRefused,
                    format!("upstream {addr} (cluster {}) refused the connection: nothing is listening on that port", self.cluster),
                ))
            }
            Ok(Err(e)) => {
                return Err(ProxyError::new(
                    ErrorCode::UpstreamConnectFailed,
                    format!("could not connect to upstream {addr} (cluster {}): {e}", self.cluster),
                ))
            }
            Ok(Ok(s)) => s,
        };
        // Nagle plus delayed ACKs stalls small gRPC frames by up to 40 ms.
        let _ = stream.set_nodelay(true);
        if let Ok(local) = stream.local_addr() {
            // Recognised if iptables redirects it back to torii (a loop).
            crate::net::original_dst::note_own_connection(local, addr);
        }
        Ok(stream)
    }
}

fn build_tls(t: &UpstreamTls) -> Result<TlsSet, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in &t.roots {
        roots
            .add(c.clone())
            .map_err(|e| format!("bad CA certificate: {e}"))?;
    }
    let roots = Arc::new(roots);
    let make = |alpn: &[u8]| -> Result<TlsConnector, String> {
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone());
        let mut cfg = match &t.client_cert {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| format!("client certificate: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![alpn.to_vec()];
        Ok(TlsConnector::from(Arc::new(cfg)))
    };
    let server_name = t
        .server_name
        .as_ref()
        .map(|n| ServerName::try_from(n.clone()).map_err(|e| format!("server_name {n}: {e}")))
        .transpose()?;
    Ok(TlsSet {
        h2: make(b"h2")?,
        h1: make(b"http/1.1")?,
        server_name,
    })
}

fn tls_error(e: &std::io::Error, addr: SocketAddr, cluster: &str) -> ProxyError {
    let detail = match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(ce)) => match ce {
            rustls::CertificateError::UnknownIssuer => {
                "its certificate is not signed by the cluster's tls.ca".to_string()
            }
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. } => {
                "its certificate is not valid for the name torii asked for; set tls.server_name to a name in the certificate".to_string()
            }
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
                "its certificate has expired".to_string()
            }
            other => format!("its certificate was rejected: {other}"),
        },
        Some(rustls::Error::InvalidMessage(_)) => {
            "it did not answer with TLS (is it plaintext? then remove tls: from the cluster)".to_string()
        }
        Some(other) => other.to_string(),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "it closed the connection during the handshake".to_string()
        }
        None => e.to_string(),
    };
    ProxyError::new(
        ErrorCode::UpstreamTlsFailed,
        format!("TLS handshake with upstream {addr} (cluster {cluster}) failed: {detail}"),
    )
}

async fn handshake<T>(
    io: T,
    wire: Wire,
    addr: SocketAddr,
    connector: &Connector,
    slot: super::limits::ConnSlot,
) -> Result<Connected, ProxyError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cluster = connector.cluster.as_str();
    let first: FirstBytes = Arc::new(Mutex::new(Vec::new()));
    let io = Recorder {
        inner: io,
        first: first.clone(),
        recorded: false,
    };
    match wire {
        Wire::Http1 => {
            let (send, conn) = http1::Builder::new()
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| handshake_error(e, addr, cluster))?;
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = conn.await {
                    tracing::debug!(%addr, error = %e, "upstream HTTP/1.1 connection ended");
                }
            });
            Ok(Connected::H1(send, first))
        }
        Wire::Http2 => {
            let ended = h2client::Ended {
                cluster: cluster.to_string(),
                failures: connector.failures.clone(),
                slot: Some(slot),
            };
            let client = h2client::handshake(io, &connector.h2, addr, ended)
                .await
                .map_err(|e| handshake_error(e, addr, cluster))?;
            Ok(Connected::H2(client, first))
        }
    }
}

fn handshake_error(e: impl std::fmt::Display, addr: SocketAddr, cluster: &str) -> ProxyError {
    ProxyError::new(
        ErrorCode::UpstreamConnectFailed,
        format!("HTTP handshake with upstream {addr} (cluster {cluster}) failed: {e}"),
    )
}

/// Explains a failed exchange on an HTTP/2 upstream connection from what
/// the upstream actually sent.
pub fn explain_h2_failure(
    e: &(dyn std::error::Error + 'static),
    first: &FirstBytes,
    addr: SocketAddr,
    cluster: &str,
) -> ProxyError {
    let seen = first.lock().map(|b| b.clone()).unwrap_or_default();
    if seen.starts_with(b"HTTP/") {
        let line = String::from_utf8_lossy(&seen);
        let line = line.lines().next().unwrap_or("").trim().to_string();
        return ProxyError::new(
            ErrorCode::UpstreamProtocolMismatch,
            format!(
                "upstream {addr} (cluster {cluster}) answered the HTTP/2 preface with HTTP/1.1 (\"{line}…\"): it does not speak HTTP/2 cleartext (h2c) on this port. gRPC needs HTTP/2: enable h2c on the upstream server, or add tls: to the cluster if it serves HTTP/2 over TLS"
            ),
        );
    }
    if seen.len() >= 2 && (seen[0] == 0x15 || seen[0] == 0x16) && seen[1] == 0x03 {
        return ProxyError::new(
            ErrorCode::UpstreamProtocolMismatch,
            format!("upstream {addr} (cluster {cluster}) answered in TLS to a cleartext HTTP/2 connection: add tls: (with its ca) to the cluster"),
        );
    }
    if !seen.is_empty() && !could_be_settings(&seen) {
        // The first frame an HTTP/2 server sends is SETTINGS (RFC 9113
        // §3.4). Anything else is another protocol: `python -m
        // http.server` answers the preface HTTP/0.9-style with an HTML
        // page and no status line, which read as a frame header is a
        // frame of megabytes (FRAME_SIZE_ERROR) and not the upstream
        // resetting anything.
        let guess = if looks_like_text(&seen) {
            " It answered in text, as an HTTP/1.x server (or one answering HTTP/0.9-style, without a status line, like python -m http.server) does: it does not speak HTTP/2 cleartext (h2c) on this port."
        } else {
            " It does not speak HTTP/2 cleartext (h2c) on this port."
        };
        return ProxyError::new(
            ErrorCode::UpstreamProtocolMismatch,
            format!(
                "upstream {addr} (cluster {cluster}) answered torii's HTTP/2 preface with bytes that are not HTTP/2 (an HTTP/2 server's first frame is SETTINGS): \"{}\".{guess} gRPC needs HTTP/2: point the cluster at the upstream's HTTP/2 port or enable h2c on it, add tls: to the cluster if it serves HTTP/2 over TLS, or set protocol: http1 for plain HTTP",
                excerpt(&seen)
            ),
        );
    }
    if seen.is_empty() {
        // An HTTP/2 server answers the preface with SETTINGS at once. Not a
        // single byte before the connection failed means the peer did not
        // speak HTTP/2: HTTP/1.1 servers close (or reset) on `PRI * HTTP/2.0`.
        return ProxyError::new(
            ErrorCode::UpstreamProtocolMismatch,
            format!(
                "upstream {addr} (cluster {cluster}) closed the connection without answering torii's HTTP/2 preface ({e}): it does not speak HTTP/2 cleartext (h2c) on this port, as HTTP/1.1-only servers do. gRPC needs HTTP/2: enable h2c on the upstream server, or add tls: to the cluster if it serves HTTP/2 over TLS"
            ),
        );
    }
    reset_error(e, addr, cluster, false)
}

/// Whether `b`, the first bytes an upstream sent on an HTTP/2 connection,
/// can be the start of its SETTINGS frame: a length that is a multiple of
/// 6 and fits the default frame size, type 4, no ACK flag, stream 0.
pub fn could_be_settings(b: &[u8]) -> bool {
    let at = |i: usize| b.get(i).copied();
    if at(0).is_some_and(|x| x != 0) {
        // A length of 64 KiB or more: never a first SETTINGS frame.
        return false;
    }
    if b.len() >= 3 {
        let len = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        if !len.is_multiple_of(6) || len > 16_384 {
            return false;
        }
    }
    // An ACK first (a server acknowledging torii's SETTINGS before it
    // sends its own) breaks §3.4's letter, but is HTTP/2 all the same.
    if at(3).is_some_and(|t| t != 0x04) {
        return false;
    }
    b.iter()
        .skip(5)
        .take(4)
        .enumerate()
        .all(|(i, &x)| x == 0 || (i == 0 && x == 0x80))
}

/// Mostly printable ASCII (with line breaks and tabs): a text protocol.
fn looks_like_text(b: &[u8]) -> bool {
    let printable = b
        .iter()
        .filter(|&&c| c.is_ascii_graphic() || matches!(c, b' ' | b'\r' | b'\n' | b'\t'))
        .count();
    printable * 10 >= b.len() * 9
}

/// `b` as a one-line printable excerpt: text as it is, line breaks as
/// `\r` `\n`, other bytes as `\xNN`; `…` when there was more.
pub fn excerpt(b: &[u8]) -> String {
    const MAX: usize = 48;
    let mut out = String::new();
    for &c in b.iter().take(MAX) {
        match c {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            c if c.is_ascii_graphic() || c == b' ' => out.push(c as char),
            c => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    if b.len() > MAX {
        out.push('…');
    }
    out
}

/// Explains a failed exchange on an HTTP/1.1 upstream connection from
/// what the upstream actually sent: an HTTP/2-only server answers an
/// HTTP/1.1 request with its SETTINGS (and a GOAWAY), which hyper reports
/// as "invalid HTTP version parsed".
pub fn explain_h1_failure(
    e: &hyper::Error,
    first: &FirstBytes,
    addr: SocketAddr,
    cluster: &str,
) -> ProxyError {
    let seen = first.lock().map(|b| b.clone()).unwrap_or_default();
    let mismatch = |what: String| {
        ProxyError::new(
            ErrorCode::UpstreamProtocolMismatch,
            format!("upstream {addr} (cluster {cluster}) {what}"),
        )
    };
    if !seen.is_empty() && !seen.starts_with(b"HTTP/") {
        if looks_like_h2(&seen) {
            return mismatch(format!(
                "answered an HTTP/1.1 request with HTTP/2 frames (\"{}\"): it serves HTTP/2 only on this port (h2c prior knowledge, as gRPC servers do). Set protocol: h2c on the cluster (h2 with tls:), or enable HTTP/1.1 on the upstream",
                excerpt(&seen)
            ));
        }
        if seen.len() >= 2 && (seen[0] == 0x15 || seen[0] == 0x16) && seen[1] == 0x03 {
            return mismatch("answered in TLS to a cleartext HTTP/1.1 connection: add tls: (with its ca) to the cluster".to_string());
        }
        return mismatch(format!(
            "answered an HTTP/1.1 request with bytes that are not HTTP/1.1 (\"{}\"): it does not speak HTTP/1.1 on this port",
            excerpt(&seen)
        ));
    }
    if seen.is_empty() && e.is_incomplete_message() {
        return reset_error(e, addr, cluster, true);
    }
    if e.is_parse() || e.is_parse_status() {
        return mismatch(format!(
            "sent a response torii cannot read as HTTP/1.1 ({}; it began \"{}\")",
            plain_parse_error(e),
            excerpt(&seen)
        ));
    }
    reset_error(e, addr, cluster, false)
}

/// hyper's parse errors in plain words.
fn plain_parse_error(e: &hyper::Error) -> String {
    let text = e.to_string();
    if text.contains("version") {
        "its status line does not carry a valid HTTP version".to_string()
    } else if text.contains("header") {
        "its headers are malformed or too large".to_string()
    } else if text.contains("status") {
        "its status code is not valid".to_string()
    } else {
        "the response is malformed".to_string()
    }
}

/// HTTP/2 frame headers (length below 64 KiB, a known frame type).
fn looks_like_h2(b: &[u8]) -> bool {
    b.len() >= 4 && b[0] == 0 && b[3] <= 0x09
}

/// A failure after the request was handed to the upstream connection.
pub fn reset_error(
    e: &(dyn std::error::Error + 'static),
    addr: SocketAddr,
    cluster: &str,
    nothing_received: bool,
) -> ProxyError {
    let reason = h2_reason(e);
    let goaway = matches!(
        e.downcast_ref::<crate::http2::Error>(),
        Some(crate::http2::Error::GoAway { remote: true, .. })
    );
    let local_goaway = matches!(
        e.downcast_ref::<crate::http2::Error>(),
        Some(crate::http2::Error::GoAway { remote: false, .. })
    );
    let what = match reason {
        Some(r) if goaway => {
            format!("closed the connection with GOAWAY ({r}) without processing the stream")
        }
        // torii ended the connection: the upstream broke HTTP/2 on it.
        Some(r) if local_goaway => {
            format!("sent what is not valid HTTP/2, so torii closed the connection (GOAWAY {r})")
        }
        Some(Reason::REFUSED_STREAM) => "refused the stream (REFUSED_STREAM)".to_string(),
        // torii reset the stream: the upstream broke HTTP/2 on it (a
        // malformed response head, a window overflow...).
        Some(r)
            if matches!(
                e.downcast_ref::<crate::http2::Error>(),
                Some(crate::http2::Error::LocalReset(_))
            ) =>
        {
            format!("broke HTTP/2 rules on the stream, so torii reset it ({r})")
        }
        Some(r) => format!("reset the stream ({r})"),
        None if nothing_received => "closed the connection without answering".to_string(),
        None => format!("failed the request: {e}"),
    };
    ProxyError::new(
        ErrorCode::UpstreamReset,
        format!("upstream {addr} (cluster {cluster}) {what} before sending response headers"),
    )
}

/// The HTTP/2 error code behind an error, if there is one.
pub fn h2_reason(e: &(dyn std::error::Error + 'static)) -> Option<Reason> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h2e) = err.downcast_ref::<crate::http2::Error>() {
            return h2e.reason();
        }
        cur = err.source();
    }
    None
}

pin_project_lite::pin_project! {
    /// Passes bytes through and keeps the first few the upstream sent.
    struct Recorder<T> {
        #[pin]
        inner: T,
        first: FirstBytes,
        // True once FIRST_BYTES are kept: no more locking per read.
        recorded: bool,
    }
}

impl<T: AsyncRead> AsyncRead for Recorder<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), false) = (&res, *this.recorded) {
            if let Ok(mut first) = this.first.lock() {
                let new = &buf.filled()[before..];
                let take = new.len().min(FIRST_BYTES - first.len());
                first.extend_from_slice(&new[..take]);
                *this.recorded = first.len() >= FIRST_BYTES;
            }
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for Recorder<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_settings_frame_header_is_a_first_frame() {
        assert!(could_be_settings(&[0, 0, 0, 4, 0, 0, 0, 0, 0]));
        assert!(could_be_settings(&[0, 0, 18, 4, 0, 0, 0, 0, 0, 0, 3]));
        assert!(could_be_settings(&[0, 0]));
        assert!(!could_be_settings(b"<!DOCTYPE HTML>"));
        assert!(
            !could_be_settings(&[0, 0, 8, 7, 0, 0, 0, 0, 0]),
            "GOAWAY first"
        );
        assert!(
            could_be_settings(&[0, 0, 0, 4, 1, 0, 0, 0, 0]),
            "an ACK first is still HTTP/2"
        );
        assert!(
            !could_be_settings(&[0, 0, 7, 4, 0, 0, 0, 0, 0]),
            "not 6n bytes"
        );
        assert!(!could_be_settings(&[0, 0, 0, 4, 0, 0, 0, 0, 1]), "stream 1");
    }

    #[test]
    fn excerpts_are_one_printable_line() {
        assert_eq!(excerpt(b"<p>\r\n\x00\"\\"), "<p>\\r\\n\\x00\\\"\\\\");
        let long = [b'a'; 100];
        assert_eq!(excerpt(&long), format!("{}…", "a".repeat(48)));
    }
}

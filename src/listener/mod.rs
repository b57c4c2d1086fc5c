//! Accepting client connections: TCP options, TLS termination (with a look
//! at the first byte so plaintext on a TLS port gets a plain answer), and
//! handing the connection to the HTTP server.

pub mod tls;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::drain;
use crate::http::proxy::{ConnInfo, ListenerRuntime};
use crate::http::server::{HttpServers, Serve};
use crate::telemetry::metrics::ListenerLabels;

/// Time a client has to send its first byte (TLS ClientHello) and to finish
/// the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Logs a warning the first time each cause is seen, then only at debug
/// level: one misconfigured client must not flood the log.
#[derive(Default)]
pub struct LogOnce(Mutex<HashSet<String>>);

impl LogOnce {
    pub fn first(&self, key: &str) -> bool {
        self.0
            .lock()
            .map(|mut s| s.insert(key.to_string()))
            .unwrap_or(false)
    }
}

/// A bound listener's current settings. Reloads swap `rt` and `tls`:
/// new connections and new requests see them, in-flight ones keep theirs.
pub struct Listening {
    pub rt: Arc<ArcSwap<ListenerRuntime>>,
    pub tls: ArcSwapOption<TlsAcceptor>,
    pub servers: HttpServers,
    pub log_once: Arc<LogOnce>,
}

/// Accepts connections until `shutdown` turns true.
pub async fn accept_loop(tcp: TcpListener, l: Arc<Listening>, mut drain: drain::Watch) {
    loop {
        let accepted = tokio::select! {
            a = tcp.accept() => a,
            _ = drain.signaled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let l = l.clone();
                let watch = drain.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let rt = l.rt.load();
                    let gauge = rt
                        .metrics
                        .downstream_connections_active
                        .get_or_create(&ListenerLabels {
                            listener: rt.name.to_string(),
                        })
                        .clone();
                    gauge.inc();
                    handle(stream, peer, &l, watch).await;
                    gauge.dec();
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning.
                tracing::warn!(listener = %l.rt.load().name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(stream: TcpStream, peer: std::net::SocketAddr, l: &Listening, watch: drain::Watch) {
    let rt = l.rt.load_full();
    let name = rt.name.clone();
    let tls_acceptor = l.tls.load_full();
    let mut first = [0u8; 1];
    let peeked = match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(n)) => n,
        Ok(Err(_)) => return,
        Err(_) if tls_acceptor.is_some() => {
            rt.metrics.tls_handshake(&name, "failure", "timeout");
            return;
        }
        // Plaintext: a client that sends nothing is the HTTP server's
        // header-read timeout to handle.
        Err(_) => 0,
    };
    let looks_tls = peeked == 1 && first[0] == 0x16;
    match tls_acceptor.as_deref() {
        Some(acceptor) => {
            if peeked == 0 {
                return;
            }
            if !looks_tls {
                plaintext_on_tls_port(stream, peer, l, first[0]).await;
                return;
            }
            let started = std::time::Instant::now();
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let (reason, sentence) = tls::classify(&e);
                    rt.metrics.tls_handshake(&name, "failure", reason);
                    if l.log_once.first(&format!("tls:{reason}")) {
                        tracing::warn!(listener = %name, client = %peer, reason, "TLS handshake failed: {sentence} (logged once per cause; counted in torii_tls_handshakes_total)");
                    } else {
                        tracing::debug!(listener = %name, client = %peer, reason, "TLS handshake failed: {sentence}");
                    }
                    return;
                }
                Err(_) => {
                    rt.metrics.tls_handshake(&name, "failure", "timeout");
                    return;
                }
            };
            let facts = tls::facts(tls.get_ref().1);
            rt.metrics.tls_handshake(&name, "success", "");
            rt.metrics
                .tls_handshake_duration
                .get_or_create(&ListenerLabels {
                    listener: name.to_string(),
                })
                .observe(started.elapsed().as_secs_f64());
            tracing::debug!(
                listener = %name, client = %peer, sni = ?facts.sni, alpn = ?facts.alpn,
                version = ?facts.version, client_sans = ?facts.client_sans, "TLS handshake done"
            );
            let mode = match facts.alpn.as_deref() {
                Some("h2") => Serve::Http2,
                Some("http/1.1") => Serve::Http1,
                _ => Serve::Auto,
            };
            let conn = Arc::new(ConnInfo {
                peer,
                tls: Some(facts),
            });
            l.servers.serve(tls, mode, l.rt.clone(), conn, watch).await;
        }
        None => {
            if looks_tls {
                rt.metrics
                    .tls_handshake(&name, "failure", "tls_on_plaintext_port");
                if l.log_once.first("tls_on_plaintext") {
                    tracing::warn!(listener = %name, client = %peer, "a TLS ClientHello arrived on this plaintext listener: the client expects TLS here. Add tls: to the listener, or make the client use plaintext (h2c / http://). Closing it. (logged once)");
                }
                return;
            }
            let conn = Arc::new(ConnInfo { peer, tls: None });
            l.servers
                .serve(stream, Serve::Auto, l.rt.clone(), conn, watch)
                .await;
        }
    }
}

/// Answers plaintext HTTP sent to a TLS port with a readable 400 instead of
/// a TLS alert the client cannot show.
async fn plaintext_on_tls_port(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    l: &Listening,
    first: u8,
) {
    let rt = l.rt.load();
    let name = &rt.name;
    let http = first.is_ascii_uppercase();
    let reason = if http { "plaintext_http" } else { "not_tls" };
    rt.metrics.tls_handshake(name, "failure", reason);
    if l.log_once.first(reason) {
        if http {
            tracing::warn!(listener = %name, client = %peer, "plaintext HTTP arrived on this TLS listener; answered 400. The client should use https:// (or gRPC with TLS credentials). (logged once)");
        } else {
            tracing::warn!(listener = %name, client = %peer, "bytes that are neither TLS nor HTTP arrived on this TLS listener; closed. (logged once)");
        }
    }
    if http {
        let body = "This port expects TLS: the client sent plaintext HTTP. Use https:// (or TLS credentials for gRPC).\n";
        let resp = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nx-torii-error: plaintext_on_tls_port\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            // Read what the client sent first, so closing does not reset the
            // connection before it reads the answer.
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
    }
}

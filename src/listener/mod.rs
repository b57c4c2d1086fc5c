//! Accepting client connections: TCP options, protocol detection on the
//! first bytes (`dispatch`), TLS termination (plaintext on a TLS port gets
//! a plain answer), and handing the connection to the HTTP server.

pub mod detect;
mod dispatch;
pub mod tls;
pub mod tls_stream;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use tls_stream::TlsAcceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::drain;
use crate::error::{ErrorCode, ProxyError};
use crate::proxy::respond;
use crate::proxy::{ConnInfo, Pipeline};
use crate::server::{HttpServers, Serve};
use crate::telemetry::log_once::LogOnce;
use crate::telemetry::metrics::ListenerLabels;

/// Time a client has to send its first byte (TLS ClientHello) and to finish
/// the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound listener's settings as one connection sees them: taken when the
/// connection is accepted. A reload stores a new snapshot for new
/// connections and the new routes in `live`, which every request reads, so
/// requests on connections opened before the reload follow the new routes
/// while requests in flight keep theirs.
pub struct Listening {
    pub rt: Arc<Pipeline>,
    pub tls: Option<TlsAcceptor>,
    pub servers: HttpServers,
    pub log_once: Arc<LogOnce>,
    /// The current routes, shared by every snapshot of this listener.
    pub live: Arc<ArcSwap<Pipeline>>,
}

/// The listener's `torii_downstream_connections_active` gauge.
fn connections_gauge(rt: &Pipeline) -> prometheus_client::metrics::gauge::Gauge {
    rt.metrics
        .downstream_connections_active
        .get_or_create(&ListenerLabels {
            listener: rt.name.to_string(),
        })
        .clone()
}

/// Accepts connections until draining starts.
pub async fn accept_loop(
    tcp: TcpListener,
    current: Arc<ArcSwap<Listening>>,
    mut drain: drain::Watch,
) {
    loop {
        let accepted = tokio::select! {
            a = tcp.accept() => a,
            _ = drain.signaled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let l = current.load_full();
                let watch = drain.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let gauge = connections_gauge(&l.rt);
                    gauge.inc();
                    dispatch::handle(stream, peer, &l, watch).await;
                    gauge.dec();
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning.
                tracing::warn!(listener = %current.load().rt.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Terminates TLS on `io` and serves HTTP over it, in the protocol ALPN chose.
async fn terminate_tls<I>(
    io: I,
    acceptor: &TlsAcceptor,
    sni: Option<String>,
    mut conn: ConnInfo,
    l: &Listening,
    watch: drain::Watch,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let name = l.rt.name.clone();
    let peer = conn.peer;
    let started = std::time::Instant::now();
    // Boxed: the handshake's state is freed once it is done, instead of
    // sizing the connection's future for as long as the connection lives.
    let handshake = Box::pin(tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)));
    let tls = match handshake.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let (reason, sentence) = tls::classify(&e);
            l.rt.metrics.tls_handshake(&name, "failure", reason);
            if l.log_once.first(&format!("tls:{reason}")) {
                tracing::warn!(listener = %name, client = %peer, reason, "TLS handshake failed: {sentence} (logged once per cause; counted in torii_tls_handshakes_total)");
            } else {
                tracing::debug!(listener = %name, client = %peer, reason, "TLS handshake failed: {sentence}");
            }
            return;
        }
        Err(_) => {
            l.rt.metrics.tls_handshake(&name, "failure", "timeout");
            return;
        }
    };
    let facts = tls::facts(tls.connection(), sni);
    l.rt.metrics.tls_handshake(&name, "success", "");
    l.rt.metrics
        .tls_handshake_duration
        .get_or_create(&ListenerLabels {
            listener: name.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(
        listener = %name, client = %peer, sni = facts.sni.as_deref().map(tracing::field::display),
        alpn = facts.alpn.as_deref().map(tracing::field::display),
        version = facts.version.as_deref().map(tracing::field::display),
        client_sans = %facts.client_sans.join(","), "TLS handshake done"
    );
    let mode = match facts.alpn.as_deref() {
        Some("h2") => Serve::Http2,
        Some("http/1.1") => Serve::Http1,
        _ => Serve::Auto,
    };
    conn.tls = Some(facts);
    if mode == Serve::Http2 {
        // The connection goes on in a task of its own, so that what the
        // accept and the handshake needed is freed now rather than held for
        // as long as the connection lives (sidecars hold thousands idle).
        let serving = l
            .servers
            .serve_h2(tls, l.live.clone(), Arc::new(conn), watch);
        let gauge = connections_gauge(&l.rt);
        gauge.inc();
        tokio::spawn(serving.map(move |()| {
            gauge.dec();
        }));
        return;
    }
    l.servers
        .serve(tls, mode, l.live.clone(), Arc::new(conn), watch)
        .await;
}

/// A ClientHello on a listener with no certificates and no passthrough
/// rule for it: counted, logged once, closed.
fn tls_not_routed(l: &Listening, peer: std::net::SocketAddr, sni: Option<&str>) {
    let name = &l.rt.name;
    if l.rt.config.traffic.tls_passthrough.is_empty() {
        l.rt.metrics
            .tls_handshake(name, "failure", "tls_on_plaintext_port");
        if l.log_once.first("tls_on_plaintext") {
            tracing::warn!(listener = %name, client = %peer, "a TLS ClientHello arrived on this plaintext listener: the client expects TLS here. Add tls: to the listener, a tls_passthrough rule to route it by SNI, or make the client use plaintext (h2c / http://). Closing it. (logged once)");
        }
        return;
    }
    l.rt.metrics
        .tls_handshake(name, "failure", "no_passthrough_match");
    let sni = sni.unwrap_or("(none)");
    if l.log_once.first(&format!("no_passthrough:{sni}")) {
        tracing::warn!(listener = %name, client = %peer, sni, "a TLS ClientHello for server name {sni} matches no tls_passthrough rule, and this listener has no certificates to terminate it; closed. Add a rule for it (or sni: \"*\" for every name). (logged once per name)");
    }
}

/// A client that sent nothing before a TLS listener gave up on it.
fn tls_timeout(l: &Listening) {
    l.rt.metrics.tls_handshake(&l.rt.name, "failure", "timeout");
}

/// What a plaintext HTTP/2 client on a TLS port reads: in grpc-message (or
/// the body) of its first request's answer, and in the GOAWAY.
pub const H2C_ON_TLS_PORT: &str = "This port expects TLS: the client sent plaintext HTTP/2 (h2c prior knowledge, e.g. a gRPC client without TLS credentials). Use TLS credentials (grpcs://, https://).";

/// Answers plaintext HTTP sent to a TLS port in the client's own protocol
/// instead of a TLS alert it cannot show: HTTP/1.x gets a readable 400;
/// HTTP/2 prior knowledge (a gRPC client without TLS credentials) gets its
/// first request answered with the same words (see [`h2c_refusal`]).
async fn plaintext_on_tls_port<I>(
    mut stream: I,
    peer: std::net::SocketAddr,
    l: &Listening,
    first: u8,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let name = &l.rt.name;
    let http = first.is_ascii_uppercase();
    let reason = if http { "plaintext_http" } else { "not_tls" };
    l.rt.metrics.tls_handshake(name, "failure", reason);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        // Read what the client sent first, so closing does not reset the
        // connection before it reads the answer; it also tells an HTTP/2
        // preface from an HTTP/1.x request line.
        let mut buf = [0u8; 4096];
        let mut got = 0;
        while got < detect::H2_PREFACE.len() {
            match stream.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
            // A request line that is not the preface decides at once.
            if !detect::H2_PREFACE.starts_with(&buf[..got.min(detect::H2_PREFACE.len())]) {
                break;
            }
        }
        let h2 = buf[..got].starts_with(detect::H2_PREFACE);
        if l.log_once.first(if h2 { "plaintext_http2" } else { reason }) {
            if h2 {
                tracing::warn!(listener = %name, client = %peer, "plaintext HTTP/2 (h2c prior knowledge, e.g. a gRPC client without TLS credentials) arrived on this TLS listener; answered that the port expects TLS (gRPC: UNAVAILABLE; else 400) and closed with GOAWAY. The client should use TLS credentials (grpcs://, https://). (logged once; counted in torii_tls_handshakes_total{{reason=\"plaintext_http\"}})");
            } else if http {
                tracing::warn!(listener = %name, client = %peer, "plaintext HTTP arrived on this TLS listener; answered 400. The client should use https:// (or gRPC with TLS credentials). (logged once; counted in torii_tls_handshakes_total{{reason=\"plaintext_http\"}})");
            } else {
                tracing::warn!(listener = %name, client = %peer, "bytes that are neither TLS nor HTTP arrived on this TLS listener; closed. (logged once; counted in torii_tls_handshakes_total{{reason=\"not_tls\"}})");
            }
        }
        let answer = if h2 {
            // Our SETTINGS first: clients send their first request only
            // once the server's preface arrived. The GOAWAY then names that
            // request's stream as the last one torii took, so the client
            // fails it with these words instead of sending it again
            // elsewhere (a GOAWAY below a stream means "never processed":
            // gRPC clients retry it at once, again and again, until their
            // deadline).
            let _ = stream.write_all(&SETTINGS_EMPTY).await;
            let mut seen = buf[..got].to_vec();
            let first = loop {
                if let Some(h) = first_headers(&seen) {
                    break h;
                }
                if seen.len() > 64 * 1024 {
                    break None;
                }
                match tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
                    _ => break None,
                }
            };
            h2c_refusal(first)
        } else if http {
            http1_refusal()
        } else {
            return;
        };
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
        // Read on until the client closes (bounded by the timeout around
        // this): closing with its bytes unread would reset the connection
        // and could destroy the answer before the client reads it.
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// An HTTP/2 server's preface: a SETTINGS frame with nothing to change.
const SETTINGS_EMPTY: [u8; 9] = [0, 0, 0, 0x04, 0, 0, 0, 0, 0];

/// The first request of a plaintext HTTP/2 client: its stream id and
/// whether it is gRPC.
struct FirstRequest {
    stream: u32,
    grpc: bool,
}

/// The first HEADERS frame after the client preface in `seen`:
/// `Some(None)` when it cannot be read (CONTINUATION, bad HPACK), `None`
/// while it has not arrived.
fn first_headers(seen: &[u8]) -> Option<Option<FirstRequest>> {
    let mut rest = seen.get(detect::H2_PREFACE.len()..)?;
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let payload = rest.get(9..9 + len)?;
        if rest[3] != 0x01 {
            rest = &rest[9 + len..];
            continue;
        }
        let (flags, stream) = (
            rest[4],
            u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff,
        );
        if flags & 0x04 == 0 {
            return Some(None); // CONTINUATION follows: not worth reading
        }
        let mut block = payload;
        let mut pad = 0;
        if flags & 0x08 != 0 {
            pad = usize::from(*block.first()?);
            block = &block[1..];
        }
        if flags & 0x20 != 0 {
            block = block.get(5..)?;
        }
        let block = block.get(..block.len().checked_sub(pad)?)?;
        let mut grpc = false;
        let decoded = crate::http2::hpack::Decoder::new(4096).decode(block, 64 * 1024, |f| {
            if f.name.as_bytes() == b"content-type" && f.value.starts_with(b"application/grpc") {
                grpc = true;
            }
        });
        return Some(decoded.ok().map(|_| FirstRequest { stream, grpc }));
    }
    None
}

/// torii's answer to a plaintext HTTP/1.x client on a TLS port: a readable
/// 400 through the failure's one door, written as bytes (no HTTP/1.1
/// server runs here).
fn http1_refusal() -> Vec<u8> {
    let err = ProxyError::new(
        ErrorCode::PlaintextOnTlsPort,
        "This port expects TLS: the client sent plaintext HTTP. Use https:// (or TLS credentials for gRPC).",
    );
    let resp = respond::error_response(&err, false);
    // As the response's body says it (respond::text_response).
    let body = format!("{}\n", err.message);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        resp.status().as_str(),
        resp.status().canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in resp.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    out
}

/// torii's answer to a plaintext HTTP/2 client on a TLS port: its first
/// request answered in its own terms — gRPC gets UNAVAILABLE with
/// [`H2C_ON_TLS_PORT`] as grpc-message (a trailers-only response), other
/// HTTP/2 a 400 with it as the body — then GOAWAY naming that stream as
/// the last one taken, with the sentence as debug data (so the client does
/// not send the request again: below the GOAWAY's last stream it would
/// count as never processed, and gRPC clients retry such requests until
/// their deadline). Without a readable request: the GOAWAY alone.
fn h2c_refusal(first: Option<FirstRequest>) -> Vec<u8> {
    use crate::http2::hpack::{Encoder, Name};
    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }
    let mut out = Vec::new();
    let last = first.as_ref().map_or(0, |f| f.stream);
    if let Some(req) = first {
        // The failure's one door: the same status and fields any other
        // failure gets, written here as frames (no HTTP/2 server runs).
        let err = ProxyError::new(ErrorCode::PlaintextOnTlsPort, H2C_ON_TLS_PORT);
        let resp = respond::error_response(&err, req.grpc);
        let mut enc = Encoder::new();
        let mut block = Vec::new();
        enc.begin_block(&mut block);
        enc.encode_pseudo(Name::Status, resp.status().as_str().as_bytes(), &mut block);
        for (name, value) in resp.headers() {
            enc.encode_header(name, value, &mut block);
        }
        if req.grpc {
            // END_STREAM | END_HEADERS: a trailers-only response.
            frame(&mut out, 0x01, 0x05, req.stream, &block);
        } else {
            frame(&mut out, 0x01, 0x04, req.stream, &block);
            let body = format!("{H2C_ON_TLS_PORT}\n");
            frame(&mut out, 0x00, 0x01, req.stream, body.as_bytes());
        }
    }
    let mut goaway = last.to_be_bytes().to_vec();
    // PROTOCOL_ERROR: the client broke the port's protocol (TLS).
    goaway.extend_from_slice(&1u32.to_be_bytes());
    goaway.extend_from_slice(H2C_ON_TLS_PORT.as_bytes());
    frame(&mut out, 0x07, 0, 0, &goaway);
    out
}

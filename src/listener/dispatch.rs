//! What happens to an accepted connection, decided by its first bytes:
//!
//! 1. original destination (iptables REDIRECT), if the listener is one;
//! 2. read until the bytes say TLS, HTTP/2, HTTP/1.x or opaque, or until the
//!    detect timeout (server-first protocols send nothing) — `detect`;
//! 3. count it, and say so once when it contradicts a declared protocol;
//! 4. TLS: passthrough by SNI, else terminate (certificates), else on to the
//!    original destination; HTTP: the request pipeline; opaque: relayed to
//!    the original destination or the listener's `tcp.cluster`.
//!
//! A declaration (`protocol: http`, `destination_protocols`) never makes
//! torii parse bytes as something they are not: a ClientHello is never
//! handed to the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::detect::{self, ClientHello, Detection, GiveUp, Protocol, Sniff};
use super::{
    plaintext_on_tls_port, terminate_tls, tls_not_routed, tls_timeout, Listening, HANDSHAKE_TIMEOUT,
};
use crate::config::{DeclaredProtocol, ListenerProtocol};
use crate::drain;
use crate::net::original_dst::{self, original_dst, OriginalDstError};
use crate::net::prefixed::Prefixed;
use crate::proxy::ConnInfo;
use crate::server::Serve;
use crate::tcp::{self, Forward, Kind};
use crate::telemetry::access_log::{self, Record};
use crate::telemetry::metrics::DetectionLabels;
use crate::upstream::ClusterRuntime;

/// First read size: a ClientHello (up to ~2 KiB) or a request head fits.
const FIRST_READ: usize = 4096;

type Io = Prefixed<TcpStream>;

pub(super) async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    l: &Listening,
    watch: drain::Watch,
) {
    let traffic = &l.rt.config.traffic;
    let original = if traffic.original_destination {
        match original_dst(&stream) {
            Ok(dst) => Some(dst),
            Err(e) => return not_redirected(l, peer, &e),
        }
    } else {
        None
    };
    let declared = original.and_then(|d| traffic.destination_protocols.get(&d.port()).copied());
    // Each phase and path is boxed: a connection's task then holds only the
    // state of the path it took (an idle TLS+HTTP/2 connection does not
    // carry the relay's or the sniffer's state).
    let Some((io, detection)) =
        Box::pin(first_bytes(stream, l, original.is_some(), declared)).await
    else {
        return;
    };
    if let Some(dst) = original.filter(|d| original_dst::is_own(peer, *d)) {
        // Checked again once bytes arrived (or the detect timeout passed):
        // torii notes its connection before writing to it, so by now it is
        // known. Connections forwarded without reading (protocol: tcp,
        // declared tcp) get no such guarantee: a loop among those may take
        // a hop or two before it is recognised.
        return not_redirected(l, peer, &OriginalDstError::OwnConnection(dst));
    }
    record(l, peer, original, declared, &detection);
    let conn = ConnInfo {
        detected: detection.protocol.as_str(),
        detect_reason: detection.reason,
        original_dst: original,
        ..ConnInfo::new(peer)
    };
    match detection.protocol {
        Protocol::Tls => Box::pin(tls(io, conn, detection.hello, l, watch)).await,
        Protocol::Http1 | Protocol::Http2 => Box::pin(http(io, conn, l, watch)).await,
        Protocol::Tcp => Box::pin(opaque(io, conn, l, watch)).await,
    }
}

/// Whether this connection may be forwarded as opaque TCP: only on an
/// `auto` or `tcp` listener that has somewhere to send it.
fn opaque_allowed(l: &Listening, original: bool) -> bool {
    let t = &l.rt.config.traffic;
    l.rt.config.protocol != ListenerProtocol::Http && (original || t.tcp.cluster.is_some())
}

/// Reads until the bytes answer (see `detect`). The wait is the detect
/// timeout where opaque TCP is an option, else the handshake timeout (a
/// silent client then meets the TLS or HTTP server's own timeouts). Once a
/// ClientHello has started, its rest gets the handshake timeout: it is TLS
/// already, only its server name is missing.
async fn first_bytes(
    mut stream: TcpStream,
    l: &Listening,
    original: bool,
    declared: Option<DeclaredProtocol>,
) -> Option<(Io, Detection)> {
    let unread = |reason| Detection::new(Protocol::Tcp, reason);
    if l.rt.config.protocol == ListenerProtocol::Tcp {
        let d = unread("listener protocol: tcp (forwarded without looking)");
        return Some((Prefixed::new(BytesMut::new(), stream), d));
    }
    if declared == Some(DeclaredProtocol::Tcp) && opaque_allowed(l, original) {
        let d = unread("destination declared tcp (forwarded without looking)");
        return Some((Prefixed::new(BytesMut::new(), stream), d));
    }
    let opaque = l.rt.config.protocol == ListenerProtocol::Auto && opaque_allowed(l, original);
    let wait = if opaque {
        l.rt.config.traffic.detect_timeout
    } else {
        HANDSHAKE_TIMEOUT
    };
    let started = Instant::now();
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    let detection = loop {
        if let Sniff::Done(d) = detect::sniff(&buf) {
            break d;
        }
        if !opaque {
            // Only TLS needs more bytes here; the HTTP server's own header
            // timeout must not start late behind ours (slowloris).
            if let Some(d) = detect::hand_to_http(&buf) {
                break d;
            }
        }
        let deadline = started
            + if detect::is_tls(&buf) {
                HANDSHAKE_TIMEOUT
            } else {
                wait
            };
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(FIRST_READ);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) => break detect::give_up(&buf, GiveUp::Eof),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(listener = %l.rt.name, error = %e, "client connection failed before its protocol was known");
                return None;
            }
            Err(_) => break detect::give_up(&buf, GiveUp::Timeout),
        }
    };
    Some((Prefixed::new(buf, stream), detection))
}

/// Counts the classification, logs it at debug, and says once per
/// destination when it contradicts the declared protocol.
fn record(
    l: &Listening,
    peer: SocketAddr,
    original: Option<SocketAddr>,
    declared: Option<DeclaredProtocol>,
    d: &Detection,
) {
    let declared_label = declared
        .map(DeclaredProtocol::as_str)
        .unwrap_or(l.rt.config.protocol.as_str());
    l.rt.metrics
        .protocol_detections
        .get_or_create(&DetectionLabels {
            listener: l.rt.name.to_string(),
            declared: declared_label.to_string(),
            detected: d.protocol.as_str().to_string(),
        })
        .inc();
    let hello = d.hello.as_ref();
    tracing::debug!(
        listener = %l.rt.name, client = %peer, original_dst = original.map(tracing::field::display),
        declared = declared_label, detected = d.protocol.as_str(), reason = d.reason,
        sni = hello.and_then(|h| h.sni.as_deref()).map(tracing::field::display),
        alpn = hello.map(|h| tracing::field::display(h.alpn.join(","))),
        "connection classified"
    );
    let (Some(declared), Some(dst)) = (declared, original) else {
        return;
    };
    if agrees(declared, d.protocol) {
        return;
    }
    let sentence = mismatch(&l.rt.name, dst, declared, d);
    if l.log_once
        .first(&format!("mismatch:{dst}:{}", d.protocol.as_str()))
    {
        tracing::warn!(listener = %l.rt.name, client = %peer, original_dst = %dst, declared = declared.as_str(), detected = d.protocol.as_str(), "{sentence}");
    } else {
        tracing::debug!(listener = %l.rt.name, client = %peer, original_dst = %dst, "{sentence}");
    }
}

/// Whether the bytes are what the hint said.
fn agrees(declared: DeclaredProtocol, detected: Protocol) -> bool {
    match declared {
        DeclaredProtocol::Http => matches!(detected, Protocol::Http1 | Protocol::Http2),
        DeclaredProtocol::Tls => detected == Protocol::Tls,
        DeclaredProtocol::Tcp => true,
    }
}

/// What was declared, what arrived, what torii did, what to change.
fn mismatch(listener: &str, dst: SocketAddr, declared: DeclaredProtocol, d: &Detection) -> String {
    let port = dst.port();
    let declared = declared.as_str();
    let (arrived, did, hint) = match d.protocol {
        Protocol::Tls => {
            let sni = d
                .hello
                .as_ref()
                .and_then(|h| h.sni.as_deref())
                .map_or("no SNI".to_string(), |s| format!("SNI {s}"));
            (
                format!("a TLS ClientHello ({sni})"),
                "passed it through as TLS, untouched",
                "tls",
            )
        }
        Protocol::Http1 | Protocol::Http2 => (
            d.protocol.describe().to_string(),
            "handled it as plaintext HTTP",
            "http",
        ),
        Protocol::Tcp => (
            format!("no TLS and no HTTP ({})", d.reason),
            "forwarded it as opaque TCP",
            "tcp",
        ),
    };
    let client_fix = if declared == "tls" {
        " If the client should use TLS, fix the client (https://, TLS credentials)."
    } else {
        ""
    };
    format!(
        "listener {listener}: destination {dst} is declared {declared} (destination_protocols \"{port}\": {declared}), \
         but the client sent {arrived}; torii {did}, as the bytes say. \
         Change the hint to \"{port}\": {hint}, or remove it (the bytes decide either way).{client_fix} \
         (logged once per destination; counted in torii_protocol_detections_total{{declared=\"{declared}\",detected=\"{}\"}})",
        d.protocol.as_str()
    )
}

/// A connection on an original-destination listener that was not redirected.
fn not_redirected(l: &Listening, peer: SocketAddr, e: &OriginalDstError) {
    let key = match e {
        OriginalDstError::NotRedirected(_) => "not_redirected",
        OriginalDstError::Loop(_) => "original_dst_loop",
        OriginalDstError::OwnConnection(_) => "own_connection_redirected",
    };
    if l.log_once.first(key) {
        tracing::warn!(listener = %l.rt.name, client = %peer, "closed a connection: {e} (logged once)");
    } else {
        tracing::debug!(listener = %l.rt.name, client = %peer, "closed a connection: {e}");
    }
}

async fn tls(
    io: Io,
    conn: ConnInfo,
    hello: Option<ClientHello>,
    l: &Listening,
    watch: drain::Watch,
) {
    let traffic = &l.rt.config.traffic;
    let sni = hello.as_ref().and_then(|h| h.sni.as_deref());
    if let Some(rule) = traffic.tls_passthrough.iter().find(|r| r.sni.matches(sni)) {
        let Some(cluster) = l.rt.clusters.get(&rule.cluster.name) else {
            tracing::error!(listener = %l.rt.name, cluster = %rule.cluster.name, "tls_passthrough names a cluster that is not running");
            return;
        };
        Box::pin(relay(io, &conn, cluster, Kind::TlsPassthrough, l)).await;
        return;
    }
    if let Some(acceptor) = &l.tls {
        return terminate_tls(io, acceptor, hello.and_then(|h| h.sni), conn, l, watch).await;
    }
    if let Some(dst) = conn.original_dst {
        return Box::pin(to_original(io, &conn, dst, Kind::TlsPassthrough, l)).await;
    }
    tls_not_routed(l, conn.peer, sni);
}

async fn http(io: Io, conn: ConnInfo, l: &Listening, watch: drain::Watch) {
    if l.tls.is_some() && conn.original_dst.is_none() {
        let first = io.prefix().first().copied().unwrap_or(0);
        return plaintext_on_tls_port(io, conn.peer, l, first).await;
    }
    // The HTTP server reads the preface itself, as it always did: a
    // request that was handed over early may not show its version yet.
    l.servers
        .serve(io, Serve::Auto, l.live.clone(), Arc::new(conn), watch)
        .await;
}

async fn opaque(io: Io, conn: ConnInfo, l: &Listening, watch: drain::Watch) {
    if opaque_allowed(l, conn.original_dst.is_some()) {
        if let Some(dst) = conn.original_dst {
            return to_original(io, &conn, dst, Kind::Opaque, l).await;
        }
        if let Some(cluster) = &l.rt.config.traffic.tcp.cluster {
            match l.rt.clusters.get(&cluster.name) {
                Some(c) => relay(io, &conn, c, Kind::Opaque, l).await,
                None => {
                    tracing::error!(listener = %l.rt.name, cluster = %cluster.name, "tcp.cluster names a cluster that is not running")
                }
            }
            return;
        }
    }
    // Nowhere to send opaque bytes: the TLS or HTTP server answers them,
    // as on any listener without a tcp: destination.
    if l.tls.is_some() && conn.original_dst.is_none() {
        match io.prefix().first().copied() {
            None => tls_timeout(l),
            Some(first) => plaintext_on_tls_port(io, conn.peer, l, first).await,
        }
        return;
    }
    l.servers
        .serve(io, Serve::Auto, l.live.clone(), Arc::new(conn), watch)
        .await;
}

async fn to_original(io: Io, conn: &ConnInfo, dst: SocketAddr, kind: Kind, l: &Listening) {
    match l.rt.original_destination(dst) {
        Some(Ok(cluster)) => relay(io, conn, &cluster, kind, l).await,
        Some(Err(e)) => tracing::warn!(listener = %l.rt.name, client = %conn.peer, "{e}"),
        None => {}
    }
}

async fn relay(io: Io, conn: &ConnInfo, cluster: &ClusterRuntime, kind: Kind, l: &Listening) {
    let f = Forward {
        listener: &l.rt.name,
        peer: conn.peer,
        kind,
        idle_timeout: l.rt.config.traffic.tcp.idle_timeout,
        metrics: &l.rt.metrics,
        log_once: &l.log_once,
    };
    let started = std::time::Instant::now();
    let relayed = tcp::forward(io, cluster, f).await;
    if !l.rt.logger.enabled() {
        return;
    }
    let mut r = Record {
        time: access_log::now(),
        listener: l.rt.name.to_string(),
        client: conn.peer.to_string(),
        detected: conn.detected,
        detect_reason: conn.detect_reason,
        original_dst: conn.original_dst.map(|d| d.to_string()),
        protocol: match kind {
            tcp::Kind::Opaque => "tcp".into(),
            tcp::Kind::TlsPassthrough => "tls-passthrough".into(),
        },
        cluster: Some(cluster.config.name.clone()),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        ..Default::default()
    };
    match relayed {
        Some(done) => {
            r.bytes_in = done.bytes_sent;
            r.bytes_out = done.bytes_received;
            r.end = Some(done.end.to_string());
        }
        None => r.error = Some("upstream_connect_failed"),
    }
    l.rt.logger.log(r);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_incident_in_plain_words() {
        let d = Detection {
            protocol: Protocol::Tls,
            reason: "TLS ClientHello",
            hello: Some(ClientHello {
                sni: Some("api.example.com".into()),
                alpn: vec!["h2".into()],
            }),
        };
        let dst: SocketAddr = "10.0.0.7:443".parse().unwrap();
        let s = mismatch("out", dst, DeclaredProtocol::Http, &d);
        assert!(s.starts_with("listener out: destination 10.0.0.7:443 is declared http (destination_protocols \"443\": http), but the client sent a TLS ClientHello (SNI api.example.com); torii passed it through as TLS, untouched"), "{s}");
        assert!(s.contains("Change the hint to \"443\": tls"), "{s}");
        assert!(s.contains("declared=\"http\",detected=\"tls\""), "{s}");
    }

    #[test]
    fn plaintext_where_tls_was_declared() {
        let d = Detection::new(Protocol::Http1, "HTTP/1.x request line");
        let s = mismatch(
            "out",
            "10.0.0.7:8443".parse().unwrap(),
            DeclaredProtocol::Tls,
            &d,
        );
        assert!(
            s.contains("the client sent plaintext HTTP/1.x; torii handled it as plaintext HTTP"),
            "{s}"
        );
        assert!(s.contains("fix the client"), "{s}");
    }

    #[test]
    fn agreement() {
        assert!(agrees(DeclaredProtocol::Http, Protocol::Http2));
        assert!(!agrees(DeclaredProtocol::Http, Protocol::Tls));
        assert!(!agrees(DeclaredProtocol::Tls, Protocol::Http1));
        assert!(!agrees(DeclaredProtocol::Http, Protocol::Tcp));
        assert!(agrees(DeclaredProtocol::Tcp, Protocol::Tcp));
    }
}

//! torii the client of a raw server.
use super::*;
use crate::http2::frame::{flag, kind};
use std::future::poll_fn;

fn client_conn() -> (Peer, Arc<Mutex<Inner>>) {
    let (a, b) = tokio::io::duplex(4 << 20);
    let conn = Connection::client(a, config(65_535, 65_535));
    let shared = conn.shared().clone();
    spawn_driver(conn, None);
    (Peer { io: b }, shared)
}

fn post() -> http::request::Parts {
    http::Request::post("http://a/x")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

/// Server side of the raw peer: reads torii's preface, sends SETTINGS,
/// waits for torii's ACK of them.
async fn handshake_as_server(peer: &mut Peer, settings: &[(u16, u32)]) {
    let mut preface = [0u8; 24];
    peer.io.read_exact(&mut preface).await.unwrap();
    let mut s = Vec::new();
    frame::put_settings(&mut s, settings);
    peer.send(&s).await;
    peer.until(Duration::from_secs(5), |h, _| {
        h.kind == kind::SETTINGS && h.has(flag::ACK)
    })
    .await
    .unwrap();
}

/// gRPC servers (grpc-go) end a client-/bidi-streaming call that they
/// answer before the client half-closed with RST_STREAM(NO_ERROR) after
/// the trailers (RFC 9113 §8.1). torii, as the client, counts each as a
/// "rapid reset" and kills the upstream connection after 200 of them.
#[tokio::test]
async fn upstream_no_error_resets_kill_the_connection() {
    let (mut peer, shared) = client_conn();
    handshake_as_server(&mut peer, &[]).await;
    for _ in 0..200 {
        let (response, body) = open_stream(&shared, post(), false, false).unwrap();
        let (h, _) = peer
            .until(Duration::from_secs(5), |h, _| h.kind == kind::HEADERS)
            .await
            .unwrap();
        // Trailers-only response (:status 200), then RST_STREAM(NO_ERROR).
        let mut out = raw(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            h.stream,
            &[0x88],
        );
        out.extend(raw(kind::RST_STREAM, 0, h.stream, &0u32.to_be_bytes()));
        peer.send(&out).await;
        let mut send = SendBody::new(body.unwrap());
        let e = poll_fn(|cx| send.poll_reset(cx)).await;
        assert!(matches!(e, Error::Reset(Reason::NO_ERROR)), "{e}");
        poll_fn(|cx| poll_response(&response, cx)).await.unwrap();
    }
    let goaway = peer
        .until(Duration::from_millis(500), |h, _| h.kind == kind::GOAWAY)
        .await;
    assert!(
        goaway.is_none(),
        "torii sent the upstream GOAWAY {:?}",
        goaway.map(|(_, p)| p[7])
    );
}

/// poll_ready is not a reservation: every waiter is woken when one stream
/// ends, and on a multi-threaded runtime several can see room before any
/// of them opens its stream: the upstream's MAX_CONCURRENT_STREAMS is
/// exceeded (the extra streams get REFUSED_STREAM, not retried by torii).
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn poll_ready_waiters_exceed_max_concurrent_streams() {
    let (mut peer, shared) = client_conn();
    handshake_as_server(&mut peer, &[(setting::MAX_CONCURRENT_STREAMS, 1)]).await;
    let get = http::Request::get("http://a/")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let (first, _) = open_stream(&shared, get.clone(), true, false).unwrap();
    let mut waiters = Vec::new();
    for _ in 0..64 {
        let shared = shared.clone();
        let get = get.clone();
        waiters.push(tokio::spawn(async move {
            poll_fn(|cx| client_poll_ready(&shared, cx)).await.unwrap();
            let r = open_stream(&shared, get.clone(), true, false)
                .map(|(r, _)| r)
                .unwrap();
            std::future::pending::<()>().await;
            drop(r);
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (h, _) = peer
        .until(Duration::from_secs(5), |h, _| h.kind == kind::HEADERS)
        .await
        .unwrap();
    peer.send(&raw(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        h.stream,
        &[0x88],
    ))
    .await;
    poll_fn(|cx| poll_response(&first, cx)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let active = lock(&shared).active;
    for w in waiters {
        w.abort();
    }
    assert!(
        active <= 1,
        "{active} streams open under MAX_CONCURRENT_STREAMS 1"
    );
}

/// `Inner::heads` keeps slab keys. A stream dropped before its head was
/// written leaves its key there; the next stream opened reuses the key,
/// and write_heads() writes that (higher) stream id first: ids go down
/// on the wire, a connection PROTOCOL_ERROR for the upstream
/// (RFC 9113 §5.1.1) that fails every request on the connection.
#[tokio::test]
async fn a_cancelled_unwritten_stream_reorders_stream_ids() {
    let (mut peer, shared) = client_conn();
    handshake_as_server(&mut peer, &[]).await;
    let get = || {
        http::Request::get("http://a/")
            .body(())
            .unwrap()
            .into_parts()
            .0
    };
    // No await in between: the connection task does not run.
    let (a, _) = open_stream(&shared, get(), true, false).unwrap(); // id 1
    let (b, _) = open_stream(&shared, get(), true, false).unwrap(); // id 3
    drop(a); // cancelled before its head went out: key freed
    let (c, _) = open_stream(&shared, get(), true, false).unwrap(); // id 5, A's key
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let (h, _) = peer
            .until(Duration::from_secs(5), |h, _| h.kind == kind::HEADERS)
            .await
            .unwrap();
        ids.push(h.stream);
    }
    drop((b, c));
    assert_eq!(ids, [3, 5], "stream ids on the wire");
}

/// torii pinged upstreams every 30 s whatever was open; gRPC servers allow
/// one PING per 5 minutes and none without a call, and answered with
/// GOAWAY "too_many_pings", killing every stream. Without
/// `keepalive_while_idle` an idle connection gets no PING; one with a
/// stream open does.
#[tokio::test(start_paused = true)]
async fn no_keepalive_pings_without_streams() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut cfg = config(65_535, 65_535);
    cfg.keepalive_interval = Duration::from_secs(10);
    cfg.keepalive_timeout = Duration::from_secs(600);
    let conn = Connection::client(a, cfg);
    let shared = conn.shared().clone();
    spawn_driver(conn, None);
    let mut peer = Peer { io: b };
    handshake_as_server(&mut peer, &[]).await;
    let ping = peer
        .until(Duration::from_secs(60), |h, _| h.kind == kind::PING)
        .await;
    assert!(ping.is_none(), "a PING on a connection with no stream");
    let get = http::Request::get("http://a/")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let (_response, _) = open_stream(&shared, get, true, false).unwrap();
    let ping = peer
        .until(Duration::from_secs(60), |h, _| h.kind == kind::PING)
        .await;
    assert!(ping.is_some(), "no PING while a stream is open");
}

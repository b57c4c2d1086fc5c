//! torii serving a raw client.
use super::*;
use crate::http2::conn::defences::{LINGER_BYTES, RESET_BURST};
use crate::http2::fields;
use crate::http2::frame::{flag, kind};
use http::HeaderMap;

/// POST / with :authority a (static indexes + one literal).
const POST: [u8; 6] = [0x83, 0x86, 0x84, 0x01, 0x01, b'a'];

fn server(
    stream_window: u32,
    connection_window: u32,
) -> (Peer, Arc<Mutex<Inner>>, mpsc::UnboundedReceiver<Opened>) {
    let (a, b) = tokio::io::duplex(4 << 20);
    let conn = Connection::server(a, config(stream_window, connection_window));
    let shared = conn.shared().clone();
    let (tx, rx) = mpsc::unbounded_channel();
    spawn_driver(conn, Some(tx));
    (Peer { io: b }, shared, rx)
}

async fn handshake_as_client(peer: &mut Peer) {
    let mut hello = frame::PREFACE.to_vec();
    hello.extend(raw(kind::SETTINGS, 0, 0, &[]));
    peer.send(&hello).await;
}

/// Answers a stream with torii's test response head.
fn answer(stream: &StreamRef, end_stream: bool) {
    send_head(
        stream,
        |e, d| fields::encode_response(e, &ok_head(), d),
        end_stream,
    )
    .unwrap();
}

/// The raw client opens stream `id` with a POST head.
async fn request(peer: &mut Peer, id: u32, end_stream: bool) {
    let flags = if end_stream {
        flag::END_HEADERS | flag::END_STREAM
    } else {
        flag::END_HEADERS
    };
    peer.send(&raw(kind::HEADERS, flags, id, &POST)).await;
}

/// The response head torii's application sends in these tests.
fn ok_head() -> http::response::Parts {
    http::Response::new(()).into_parts().0
}

/// Frames until one on `stream` of `kind` (or an RST_STREAM or GOAWAY,
/// which the caller then sees), collecting the DATA bytes of `stream`.
async fn read_stream(peer: &mut Peer, stream: u32, want: usize) -> (usize, Vec<(Head, Vec<u8>)>) {
    let mut n = 0;
    let mut other = Vec::new();
    while n < want {
        let Some((h, p)) = peer
            .until(Duration::from_secs(5), |h, _| {
                h.stream == stream || h.stream == 0
            })
            .await
        else {
            break;
        };
        match h.kind {
            kind::DATA => n += p.len(),
            kind::RST_STREAM | kind::GOAWAY => {
                other.push((h, p));
                break;
            }
            _ => other.push((h, p)),
        }
    }
    (n, other)
}

/// Padding is counted against the stream window but never given back to
/// it: a client that pads its DATA stalls once the padding adds up to the
/// stream window, although the application read everything.
#[tokio::test]
async fn padding_leaks_the_stream_window() {
    let (mut peer, _shared, mut opened) = server(65_535, 65_535);
    handshake_as_client(&mut peer).await;
    peer.send(&raw(kind::HEADERS, flag::END_HEADERS, 1, &POST))
        .await;
    let o = opened.recv().await.unwrap();
    let mut body = o.request.into_body();
    let _respond = o.stream;
    // 257 frames of 255 bytes = 65 535 (the whole stream window), 1 data byte each.
    let mut p = vec![253u8, b'x'];
    p.resize(255, 0);
    let mut out = Vec::new();
    for _ in 0..257 {
        out.extend(raw(kind::DATA, flag::PADDED, 1, &p));
    }
    peer.send(&out).await;
    // The application reads all 257 bytes.
    let mut got = 0;
    while got < 257 {
        match poll_fn(|cx| body.poll_frame(cx)).await {
            Some(Ok(f)) => got += f.into_data().unwrap().len(),
            other => panic!("{other:?}"),
        }
    }
    // The peer has no stream window left; torii must open it again.
    let wu = peer
        .until(Duration::from_millis(500), |h, _| {
            h.kind == kind::WINDOW_UPDATE && h.stream == 1
        })
        .await;
    assert!(
        wu.is_some(),
        "no WINDOW_UPDATE on stream 1: the stream is stuck forever"
    );
}

/// A client that cancels streams that were not answered yet (deadlines,
/// cancelled watches), however slowly, loses the connection after 200:
/// the rapid-reset budget counts every cancel, not only rapid ones.
#[tokio::test]
async fn slow_ordinary_cancels_end_the_connection() {
    let (mut peer, _shared, mut opened) = server(65_535, 65_535);
    handshake_as_client(&mut peer).await;
    let mut held = Vec::new();
    for i in 0..200u32 {
        let id = 2 * i + 1;
        peer.send(&raw(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            id,
            &POST,
        ))
        .await;
        // The request is accepted and being handled (e.g. waiting for the upstream)...
        held.push(opened.recv().await.unwrap());
        tokio::time::sleep(Duration::from_millis(1)).await;
        // ...when the client's deadline passes.
        peer.send(&raw(
            kind::RST_STREAM,
            0,
            id,
            &Reason::CANCEL.0.to_be_bytes(),
        ))
        .await;
    }
    let goaway = peer
        .until(Duration::from_millis(500), |h, _| h.kind == kind::GOAWAY)
        .await;
    assert!(
        goaway.is_none(),
        "GOAWAY {:?} after 200 ordinary cancellations",
        goaway.map(|(_, p)| p)
    );
}

/// Stream-level WINDOW_UPDATEs on a stream blocked on the connection
/// window push its key into `Inner::blocked` again each time.
#[tokio::test]
async fn blocked_queue_grows_with_window_updates() {
    let (mut peer, shared, mut opened) = server(65_535, 65_535);
    handshake_as_client(&mut peer).await;
    peer.send(&raw(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &POST,
    ))
    .await;
    let o = opened.recv().await.unwrap();
    let head = http::Response::new(()).into_parts().0;
    let stream = o.stream;
    send_head(&stream, |e, d| fields::encode_response(e, &head, d), false).unwrap();
    let mut send = SendBody::new(stream);
    send.send_data(Bytes::from(vec![0u8; 100_000]), true)
        .unwrap();
    // Drain what torii writes (the first 65 535 bytes).
    let mut n = 0;
    while n < 65_535 {
        let (h, p) = peer.frame().await.unwrap();
        if h.kind == kind::DATA {
            n += p.len();
        }
    }
    let mut out = Vec::new();
    for _ in 0..10_000 {
        out.extend(raw(kind::WINDOW_UPDATE, 0, 1, &1u32.to_be_bytes()));
    }
    peer.send(&out).await;
    // Sync: a PING's ACK means the updates were handled.
    peer.send(&raw(kind::PING, 0, 0, b"syncsync")).await;
    peer.until(Duration::from_secs(5), |h, _| h.kind == kind::PING)
        .await
        .unwrap();
    let queued = lock(&shared).blocked.len();
    assert!(queued <= 1, "one blocked stream is queued {queued} times");
}

/// An IO whose writes are buffered (as tokio-rustls does when the socket
/// would block) until a flush that stays pending.
struct Buffered {
    inner: DuplexStream,
    unflushed: usize,
}

impl AsyncRead for Buffered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}
impl AsyncWrite for Buffered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.unflushed += buf.len();
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending // the socket is full
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

/// `is_finished` ignores a pending flush: the connection is dropped with
/// its last frames still in the TLS buffer.
#[tokio::test]
async fn finished_before_flushed() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let mut conn = Connection::server(
        Buffered {
            inner: a,
            unflushed: 0,
        },
        config(65_535, 65_535),
    );
    let mut hello = frame::PREFACE.to_vec();
    hello.extend(raw(kind::SETTINGS, 0, 0, &[]));
    b.write_all(&hello).await.unwrap();
    poll_fn(|cx| {
        conn.begin_poll(cx, false);
        while conn.poll_read(cx) {}
        conn.end_poll();
        conn.graceful_shutdown(); // drain: GOAWAY, no streams
        let w = conn.poll_write(cx);
        assert!(w.is_pending(), "flush is pending");
        assert!(conn.io.unflushed > 0);
        assert!(
            !conn.is_finished(),
            "finished while the GOAWAY is still unflushed"
        );
        Poll::Ready(())
    })
    .await;
}

/// header_block() looks the stream's slab key up, drops the lock, decodes
/// the block, and trailers() indexes `streams[key]` again: a handle
/// dropped on another thread in between removes the stream, and the
/// connection task panics on the stale key (or, on the client side after
/// the key is reused, delivers the trailers to another request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_race_with_a_dropped_stream() {
    let (mut peer, _shared, mut opened) = server(65_535, 65_535);
    handshake_as_client(&mut peer).await;
    // A trailer block that takes a while to decode: many literal fields
    // without indexing, 40 KiB in all (under the 64 KiB list limit).
    let mut block = Vec::new();
    for i in 0..1000 {
        let name = format!("x-t{i:04}");
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(30);
        block.extend_from_slice(&[b'v'; 30]);
    }
    for i in 0..3000u32 {
        let id = 2 * i + 1;
        peer.send(&raw(kind::HEADERS, flag::END_HEADERS, id, &POST))
            .await;
        let Some(o) = opened.recv().await else {
            panic!("the connection task died (panicked) at stream {id}");
        };
        // HEADERS (no END_HEADERS) + CONTINUATIONs, END_STREAM: trailers.
        let mut out = Vec::new();
        let start = frame::reserve_head(&mut out);
        out.extend_from_slice(&block);
        frame::finish_headers(&mut out, start, id, true, 16_384);
        let spin = (i % 50) as u64 * 2;
        let dropper = tokio::spawn(async move {
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_micros(spin) {}
            drop(o);
        });
        peer.send(&out).await;
        dropper.await.unwrap();
    }
}

/// The application hands over a whole response bigger than the client's
/// window and lets go of the stream (the pipe ends when the last chunk is
/// queued): the stream was reset with CANCEL and the client lost the rest
/// (curl through torii lost 3 MB downloads 7 times in 10).
#[tokio::test]
async fn a_response_queued_whole_survives_its_handles() {
    let (mut peer, _shared, mut opened) = server(65_535, 1 << 20);
    handshake_as_client(&mut peer).await;
    request(&mut peer, 1, true).await;
    let o = opened.recv().await.unwrap();
    drop(o.request);
    answer(&o.stream, false);
    let mut send = SendBody::new(o.stream);
    send.send_data(Bytes::from(vec![7u8; 100_000]), false)
        .unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    send.send_trailers(trailers).unwrap();
    drop(send);
    let (n, other) = read_stream(&mut peer, 1, 65_535).await;
    assert_eq!(n, 65_535, "the first window's worth: {other:?}");
    assert!(
        other
            .iter()
            .all(|(h, _)| h.stream == 0 || h.kind == kind::HEADERS),
        "{other:?}"
    );
    // The client reads and opens its window: the rest and the trailers come.
    let mut wu = raw(kind::WINDOW_UPDATE, 0, 1, &100_000u32.to_be_bytes());
    wu.extend(raw(kind::WINDOW_UPDATE, 0, 0, &100_000u32.to_be_bytes()));
    peer.send(&wu).await;
    let (n, _) = read_stream(&mut peer, 1, 100_000 - 65_535).await;
    assert_eq!(n, 100_000 - 65_535);
    let (h, _) = peer
        .until(Duration::from_secs(5), |h, _| h.stream == 1)
        .await
        .expect("trailers");
    assert_eq!(h.kind, kind::HEADERS, "trailers, not {h:?}");
    assert!(h.has(flag::END_STREAM));
}

/// SETTINGS_INITIAL_WINDOW_SIZE can make a stream's window negative; once
/// a later SETTINGS makes it positive again the data must flow (RFC 9113
/// §6.9.2), also after the application let go of the stream.
#[tokio::test]
async fn s6_9_2_a_negative_window_that_turns_positive_lets_data_flow() {
    let (mut peer, _shared, mut opened) = server(65_535, 1 << 20);
    let mut hello = frame::PREFACE.to_vec();
    let mut settings = Vec::new();
    frame::put_settings(&mut settings, &[(setting::INITIAL_WINDOW_SIZE, 3)]);
    hello.extend(settings);
    peer.send(&hello).await;
    request(&mut peer, 1, true).await;
    let o = opened.recv().await.unwrap();
    answer(&o.stream, false);
    let mut send = SendBody::new(o.stream);
    send.send_data(Bytes::from_static(b"0123456789"), true)
        .unwrap();
    drop(send);
    drop(o.request);
    let (n, _) = read_stream(&mut peer, 1, 3).await;
    assert_eq!(n, 3);
    let mut s = Vec::new();
    frame::put_settings(&mut s, &[(setting::INITIAL_WINDOW_SIZE, 0)]); // window -3
    frame::put_settings(&mut s, &[(setting::INITIAL_WINDOW_SIZE, 10)]); // window 7
    peer.send(&s).await;
    let (n, other) = read_stream(&mut peer, 1, 7).await;
    assert_eq!(n, 7, "{other:?}");
}

/// A request answered in full before its body arrived (no route, a
/// refusal): the stream was reset with NO_ERROR at once, and curl, still
/// sending its body, lost the answer about once in 20. The body in
/// flight is read instead: no RST_STREAM at all when it ends soon.
#[tokio::test]
async fn an_early_answer_reads_the_rest_of_a_small_body() {
    let (mut peer, _shared, mut opened) = server(65_535, 1 << 20);
    handshake_as_client(&mut peer).await;
    request(&mut peer, 1, false).await;
    let o = opened.recv().await.unwrap();
    answer(&o.stream, true);
    drop(o);
    let (h, _) = peer
        .until(Duration::from_secs(5), |h, _| h.stream == 1)
        .await
        .unwrap();
    assert!(h.kind == kind::HEADERS && h.has(flag::END_STREAM));
    peer.send(&raw(kind::DATA, flag::END_STREAM, 1, b"12345678"))
        .await;
    // A second request goes through as usual; nothing came for stream 1.
    request(&mut peer, 3, true).await;
    let o = opened.recv().await.unwrap();
    answer(&o.stream, true);
    let (h, _) = peer
        .until(Duration::from_secs(5), |h, _| h.stream != 0)
        .await
        .unwrap();
    assert_eq!((h.kind, h.stream), (kind::HEADERS, 3), "{h:?}");
}

/// ...but not without bound: past `LINGER_BYTES` the stream is reset with
/// NO_ERROR.
#[tokio::test]
async fn an_early_answer_does_not_read_a_large_body() {
    let (mut peer, _shared, mut opened) = server(1 << 20, 1 << 20);
    handshake_as_client(&mut peer).await;
    request(&mut peer, 1, false).await;
    let o = opened.recv().await.unwrap();
    answer(&o.stream, true);
    drop(o);
    let chunk = raw(kind::DATA, 0, 1, &[0u8; 16_384]);
    for _ in 0..(LINGER_BYTES as usize / 16_384 + 1) {
        peer.send(&chunk).await;
    }
    let (h, p) = peer
        .until(Duration::from_secs(5), |h, _| h.kind == kind::RST_STREAM)
        .await
        .expect("RST_STREAM");
    assert_eq!((h.stream, &p[..]), (1, &0u32.to_be_bytes()[..]));
}

/// A PRIORITY frame of the wrong length naming an idle (even) stream was
/// answered with RST_STREAM on that stream, which §6.4 forbids.
#[tokio::test]
async fn s6_3_bad_priority_on_an_idle_stream_is_no_rst_stream() {
    let (mut peer, _shared, _opened) = server(65_535, 65_535);
    handshake_as_client(&mut peer).await;
    peer.send(&[0, 0, 0, 2, 0, 0, 0, 0, 8]).await;
    let (h, p) = peer
        .until(Duration::from_secs(5), |h, _| {
            h.kind == kind::GOAWAY || h.kind == kind::RST_STREAM
        })
        .await
        .unwrap();
    assert_eq!(h.kind, kind::GOAWAY, "{h:?}");
    assert_eq!(p[7], Reason::FRAME_SIZE_ERROR.0 as u8);
}

/// ...and on an open stream it resets the stream for good: nothing more is
/// sent on it.
#[tokio::test]
async fn s6_3_bad_priority_on_an_open_stream_resets_it() {
    let (mut peer, _shared, mut opened) = server(65_535, 65_535);
    handshake_as_client(&mut peer).await;
    request(&mut peer, 1, false).await;
    let o = opened.recv().await.unwrap();
    peer.send(&raw(kind::PRIORITY, 0, 1, &[0, 0, 0])).await;
    let (h, p) = peer
        .until(Duration::from_secs(5), |h, _| h.stream == 1)
        .await
        .unwrap();
    assert_eq!(h.kind, kind::RST_STREAM);
    assert_eq!(p, Reason::FRAME_SIZE_ERROR.0.to_be_bytes());
    let sent = send_head(
        &o.stream,
        |e, d| fields::encode_response(e, &ok_head(), d),
        true,
    );
    assert!(sent.is_err(), "a head was sent on a reset stream");
}

/// HEADERS opening a stream id lower than one the client already used
/// was dropped silently and the request hung (§5.1.1: connection error).
#[tokio::test]
async fn s5_1_1_a_lower_stream_id_is_a_connection_error() {
    let (mut peer, _shared, mut opened) = server(65_535, 65_535);
    handshake_as_client(&mut peer).await;
    request(&mut peer, 5, true).await;
    let _o = opened.recv().await.unwrap();
    request(&mut peer, 3, true).await;
    let (_, p) = peer
        .until(Duration::from_secs(5), |h, _| h.kind == kind::GOAWAY)
        .await
        .expect("GOAWAY");
    assert_eq!(p[7], Reason::PROTOCOL_ERROR.0 as u8);
}

/// DATA on a stream both sides ended was silently dropped (§5.1: a
/// connection error STREAM_CLOSED).
#[tokio::test]
async fn s5_1_data_on_a_closed_stream_is_stream_closed() {
    let (mut peer, _shared, mut opened) = server(65_535, 65_535);
    handshake_as_client(&mut peer).await;
    request(&mut peer, 1, true).await;
    let o = opened.recv().await.unwrap();
    answer(&o.stream, true);
    drop(o);
    peer.until(Duration::from_secs(5), |h, _| h.stream == 1)
        .await
        .unwrap();
    peer.send(&raw(kind::DATA, 0, 1, b"late")).await;
    let (h, p) = peer
        .until(Duration::from_secs(5), |h, _| {
            h.kind == kind::GOAWAY || h.kind == kind::RST_STREAM
        })
        .await
        .expect("an error");
    let code = u32::from_be_bytes(p[p.len() - 4..].try_into().unwrap());
    let code = if h.kind == kind::GOAWAY {
        u32::from_be_bytes(p[4..8].try_into().unwrap())
    } else {
        code
    };
    assert_eq!(code, Reason::STREAM_CLOSED.0, "{h:?}");
}

/// Streams torii resets because the client broke a rule on them (here a
/// WINDOW_UPDATE of 0) used none of the reset budget: a client could make
/// torii forward and cancel streams without end ("MadeYouReset").
/// (Paused time: the budget refills with time, and a slow debug build on
/// a busy machine must not refill it faster than the test spends it.)
#[tokio::test(start_paused = true)]
async fn made_you_reset_uses_the_reset_budget() {
    let (mut peer, _shared, mut opened) = server(65_535, 65_535);
    handshake_as_client(&mut peer).await;
    tokio::spawn(async move { while opened.recv().await.is_some() {} });
    let mut out = Vec::new();
    for i in 0..(RESET_BURST + 100) {
        let id = 2 * i + 1;
        out.extend(raw(kind::HEADERS, flag::END_HEADERS, id, &POST));
        out.extend(raw(kind::WINDOW_UPDATE, 0, id, &0u32.to_be_bytes()));
    }
    let (mut rd, mut wr) = tokio::io::split(peer.io);
    tokio::spawn(async move {
        let _ = wr.write_all(&out).await;
    });
    let mut peer_rd = Vec::new();
    let goaway = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut h = [0u8; 9];
            rd.read_exact(&mut h).await.ok()?;
            let head = Head::parse(&h);
            let mut p = vec![0u8; head.len as usize];
            rd.read_exact(&mut p).await.ok()?;
            if head.kind == kind::GOAWAY {
                return Some(p);
            }
            peer_rd.push(head.kind);
        }
    })
    .await
    .ok()
    .flatten()
    .expect("GOAWAY");
    assert_eq!(goaway[7], Reason::ENHANCE_YOUR_CALM.0 as u8);
}

/// A burst of streams torii answers in full before their bodies arrive
/// (refusals: `overloaded`, no route, a rate limit): past the few it lets
/// linger it resets them with NO_ERROR, and soon forgets them. The bodies
/// that then arrive on them are the client's honest DATA, not broken
/// rules: they use none of the reset budget. (A tonic client sending 1,000
/// calls into a `max_requests` limit got GOAWAY ENHANCE_YOUR_CALM.)
#[tokio::test(start_paused = true)]
async fn bodies_after_a_burst_of_early_answers_use_no_reset_budget() {
    let (mut peer, _shared, mut opened) = server(65_535, 16 << 20);
    handshake_as_client(&mut peer).await;
    tokio::spawn(async move {
        while let Some(o) = opened.recv().await {
            answer(&o.stream, true);
        }
    });
    let n = 3 * RESET_BURST;
    let last = 2 * (n - 1) + 1;
    let mut heads = Vec::new();
    for i in 0..n {
        heads.extend(raw(kind::HEADERS, flag::END_HEADERS, 2 * i + 1, &POST));
    }
    peer.send(&heads).await;
    // Every stream answered (the ones past the lingering few then reset),
    // or refused past max_concurrent_streams (the answers come after the
    // connection has read all the heads).
    let answered = peer
        .until(Duration::from_secs(10), |h, _| {
            matches!(h.kind, kind::HEADERS | kind::RST_STREAM) && h.stream == last
        })
        .await;
    assert!(
        answered.is_some(),
        "stream {last} was neither answered nor refused"
    );
    let mut bodies = Vec::new();
    for i in 0..n {
        bodies.extend(raw(
            kind::DATA,
            flag::END_STREAM,
            2 * i + 1,
            &[0, 0, 0, 0, 0],
        ));
    }
    bodies.extend(raw(kind::PING, 0, 0, &[7; 8]));
    peer.send(&bodies).await;
    let seen = peer
        .until(Duration::from_secs(10), |h, _| {
            h.kind == kind::GOAWAY || (h.kind == kind::PING && h.has(flag::ACK))
        })
        .await
        .expect("the PING answered");
    assert_eq!(
        seen.0.kind,
        kind::PING,
        "GOAWAY: {:?}",
        String::from_utf8_lossy(&seen.1)
    );
}

/// A request ended by an empty DATA frame after its head was passed on as
/// one HEADERS frame with END_STREAM: grpc-go 1.33 never answers such a
/// streaming call (the gRPC interop case empty_stream hung through torii
/// for grpc-go and grpc-js clients). The body says it is over only once
/// read, so the next hop gets the client's own framing.
#[tokio::test]
async fn an_empty_data_end_is_not_folded_into_the_head() {
    let (mut peer, _shared, mut opened) = server(65_535, 65_535);
    handshake_as_client(&mut peer).await;
    let mut out = raw(kind::HEADERS, flag::END_HEADERS, 1, &POST);
    out.extend(raw(kind::DATA, flag::END_STREAM, 1, &[]));
    out.extend(raw(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &POST,
    ));
    peer.send(&out).await;
    let first = opened.recv().await.unwrap();
    let second = opened.recv().await.unwrap();
    let mut body = first.request.into_body();
    assert!(!body.is_end_stream(), "folded into the head");
    assert!(poll_fn(|cx| body.poll_frame(cx)).await.is_none());
    assert!(
        second.request.body().is_end_stream(),
        "HEADERS with END_STREAM"
    );
}

//! HTTP/2 abuse: raw frames against torii's client-facing HTTP/2 server
//! (h2c on the plaintext port), asserting what a client sees on the wire —
//! the GOAWAY or RST_STREAM code, the connection living on or not — and
//! that other connections are still served. The cases and what must happen
//! are the "Hostile HTTP/2 clients" table of docs/reliability.md.
//!
//! Every flood is bounded by a frame count and a time limit; waits are for
//! frames (with `PATIENCE` as the failure bound), never sleeps.

mod proxy_support;
#[path = "support/raw_h2.rs"]
mod raw_h2;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use proxy_support::{front_with, Proxy};
use raw_h2::*;
use support::*;

const UNARY: &str = "/torii.echo.v1.Echo/Unary";
const CLIENT_STREAM: &str = "/torii.echo.v1.Echo/ClientStream";
const SERVER_STREAM: &str = "/torii.echo.v1.Echo/ServerStream";

/// torii's SETTINGS_MAX_CONCURRENT_STREAMS and SETTINGS_MAX_HEADER_LIST_SIZE.
const MAX_STREAMS: u32 = 1024;
const MAX_HEADER_LIST: usize = 64 * 1024;

/// The payload of the PING sent after a flood: its ACK means the server
/// has processed every frame of the flood.
const CHECKPOINT: [u8; 8] = *b"flooded!";

/// An echo upstream and torii in front of it (listener `plain`); the
/// cluster takes more streams than one client connection may open, so the
/// upstream side never limits a test.
async fn setup() -> (EchoServer, Proxy, SocketAddr) {
    let echo = start_echo().await;
    let proxy = front_with(
        &[echo.addr.to_string()],
        "    max_streams_per_connection: 500",
    )
    .await;
    let addr = proxy.addr("plain");
    (echo, proxy, addr)
}

/// A unary call over a new (tonic) connection is answered in time.
async fn still_serving(addr: SocketAddr) {
    let mut client = h2c_client(addr).await;
    let request = EchoRequest {
        message: "still here".into(),
        ..Default::default()
    };
    let reply = tokio::time::timeout(PATIENCE, client.unary(request))
        .await
        .expect("another connection is answered in time")
        .expect("another connection gets OK");
    assert_eq!(reply.get_ref().message, "still here");
}

fn echo_request(message: &str) -> bytes::Bytes {
    grpc_frame(&EchoRequest {
        message: message.into(),
        ..Default::default()
    })
}

/// A unary call on `stream` of `conn` gets 200, its echo, and trailers.
async fn assert_good_call(conn: &mut Conn, stream: u32) {
    conn.grpc_call(stream, UNARY, &echo_request("good")).await;
    let mut reply = conn.reply(stream).await;
    assert_eq!(
        reply.end,
        End::Done,
        "a good call after the abuse: {reply:?}"
    );
    assert_eq!(reply.status, Some(Some(200)), "{reply:?}");
    assert!(reply.trailers, "grpc trailers: {reply:?}");
    let messages: Vec<EchoResponse> = take_grpc_frames(&mut reply.data);
    assert_eq!(messages.len(), 1, "one echo: {reply:?}");
    assert_eq!(messages[0].message, "good");
}

/// Writes `total` frames, made by `make(i, out)`, in batches of `batch` in
/// a task of its own, until all are written, a write fails (the server
/// closed the connection) or 10 s pass; with `checkpoint`, a PING with
/// [`CHECKPOINT`] follows the last frame. Gives back the writer and how many
/// frames went out.
fn flood(
    mut w: Writer,
    total: usize,
    batch: usize,
    checkpoint: bool,
    make: impl Fn(usize, &mut BytesMut) + Send + 'static,
) -> JoinHandle<(Writer, usize)> {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut sent = 0;
        let mut out = BytesMut::new();
        while sent < total {
            let n = batch.min(total - sent);
            out.clear();
            for i in sent..sent + n {
                make(i, &mut out);
            }
            if sent + n == total && checkpoint {
                frame(&mut out, PING, 0, 0, &CHECKPOINT);
            }
            match tokio::time::timeout_at(deadline, w.write_all(&out)).await {
                Ok(Ok(())) => sent += n,
                _ => break,
            }
        }
        (w, sent)
    })
}

/// How a connection under a flood ended up.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    GoAway(u32),
    /// Closed (or reset) without a GOAWAY.
    Closed,
    /// The PING after the flood was answered: all of it was processed and
    /// the connection lives.
    Survived,
}

/// Reads until a GOAWAY, the end of the connection, or the ACK of the
/// [`CHECKPOINT`] PING.
async fn outcome(r: &mut Reader) -> Outcome {
    let f = r
        .until(|f| {
            f.kind == GOAWAY || (f.kind == PING && f.has(ACK) && f.payload[..] == CHECKPOINT)
        })
        .await;
    match f {
        Some(f) if f.kind == GOAWAY => Outcome::GoAway(f.code()),
        Some(_) => Outcome::Survived,
        None => Outcome::Closed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway_enhance_your_calm() {
    let (_echo, _proxy, addr) = setup().await;
    let Conn { mut r, w, .. } = Conn::connect(addr, &[]).await;
    let block = Block::grpc(UNARY).0;
    let pairs = 20_000;
    let writer = flood(w, pairs, 100, true, move |i, out| {
        let id = 2 * i as u32 + 1;
        headers(out, id, &block, false);
        frame(out, RST_STREAM, 0, id, &CANCEL.to_be_bytes());
    });
    // Meanwhile another connection is served.
    let (got, ()) = tokio::join!(outcome(&mut r), async {
        for _ in 0..3 {
            still_serving(addr).await;
        }
    });
    let (_, sent) = writer.await.unwrap();
    eprintln!("rapid reset: {got:?} after {sent} of {pairs} HEADERS+RST_STREAM pairs written");
    assert_eq!(got, Outcome::GoAway(ENHANCE_YOUR_CALM));
    still_serving(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_gets_goaway() {
    let (_echo, _proxy, addr) = setup().await;
    let Conn { mut r, mut w, .. } = Conn::connect(addr, &[]).await;
    // A request head that never ends: HEADERS without END_HEADERS, then
    // CONTINUATIONs of valid fields (1 KiB each), none with END_HEADERS.
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, 0, 1, &Block::grpc(CLIENT_STREAM).0);
    w.write_all(&out).await.unwrap();
    let junk = Block::default().field("x-junk", [b'j'; 1000]).0;
    let frame_len = junk.len() + 9;
    let frames = 10_000;
    let writer = flood(w, frames, 100, false, move |_, out| {
        frame(out, CONTINUATION, 0, 1, &junk);
    });
    let (got, ()) = tokio::join!(outcome(&mut r), still_serving(addr));
    let (_, sent) = writer.await.unwrap();
    eprintln!(
        "CONTINUATION flood: {got:?} after {sent} of {frames} frames ({} KiB) written",
        sent * frame_len / 1024
    );
    assert!(
        matches!(got, Outcome::GoAway(code) if code != NO_ERROR) || got == Outcome::Closed,
        "an endless header block must end the connection: {got:?}"
    );
    still_serving(addr).await;
}

/// A gRPC request head with `values` extra fields of 8 KiB each.
fn big_headers(values: usize) -> Block {
    let mut block = Block::grpc(UNARY);
    for i in 0..values {
        block = block.field(&format!("x-big-{i}"), vec![b'b'; 8 * 1024]);
    }
    block
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_or_reset_and_the_connection_lives() {
    let (echo, _proxy, addr) = setup().await;
    let mut conn = Conn::connect(addr, &[]).await;
    let block = big_headers(10);
    assert!(block.0.len() > MAX_HEADER_LIST + 8 * 1024);
    conn.headers(1, &block, true).await;
    let reply = conn.reply(1).await;
    eprintln!("oversized headers: {reply:?}");
    assert!(
        matches!(reply.end, End::Reset(_)) || reply.status == Some(Some(431)),
        "over the header list limit: 431 or RST_STREAM; got {reply:?}"
    );
    assert_good_call(&mut conn, 3).await;
    assert_eq!(
        echo.stats.started(),
        1,
        "only the good call reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_four_times_over_the_limit_get_goaway() {
    let (_echo, _proxy, addr) = setup().await;
    let Conn { mut r, mut w, .. } = Conn::connect(addr, &[]).await;
    let block = big_headers(36);
    assert!(block.0.len() > 4 * MAX_HEADER_LIST);
    let mut out = BytesMut::new();
    headers(&mut out, 1, &block.0, true);
    // The server may close before reading all of it.
    let _ = tokio::time::timeout(PATIENCE, w.write_all(&out)).await;
    let got = outcome(&mut r).await;
    eprintln!("header list of {} KiB: {got:?}", block.0.len() / 1024);
    assert!(
        matches!(got, Outcome::GoAway(code) if code != NO_ERROR),
        "a header list over 4x the limit gets GOAWAY: {got:?}"
    );
    still_serving(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb_is_refused_and_not_forwarded() {
    let (echo, _proxy, addr) = setup().await;
    let mut conn = Conn::connect(addr, &[]).await;
    // One ~4 KB entry (fits the default 4096-byte dynamic table), then
    // references to it (dynamic index 62, one byte each) to fill a frame:
    // about 12,000 × 4 KB = 48 MB decoded from 16 KiB.
    let mut block = Block::grpc(UNARY).field_indexing("x-bomb", [b'a'; 4000]);
    let refs = MAX_FRAME - block.0.len();
    block.0.resize(MAX_FRAME, 0x80 | 62);
    conn.headers(1, &block, true).await;
    let reply = conn.reply(1).await;
    eprintln!(
        "HPACK bomb ({refs} references, {} MB decoded): {reply:?}",
        refs * 4 / 1000
    );
    match reply.end {
        End::GoAway(code) => assert_ne!(code, NO_ERROR, "{reply:?}"),
        End::Closed => {}
        End::Reset(_) => {}
        End::Done => assert!(
            matches!(reply.status, Some(Some(s)) if s >= 400),
            "the bomb must be refused: {reply:?}"
        ),
    }
    still_serving(addr).await;
    let lives = matches!(reply.end, End::Reset(_) | End::Done);
    if lives {
        // Its HPACK state must still be in step.
        assert_good_call(&mut conn, 3).await;
        eprintln!("HPACK bomb: the same connection still serves");
    }
    let good_calls = if lives { 2 } else { 1 };
    assert_eq!(
        echo.stats.started(),
        good_calls,
        "the bomb never reaches the upstream"
    );
}

/// Floods `total` frames made by `make` without reading, checks another
/// connection meanwhile, then reads: the flooding connection must either
/// be closed or have processed the whole flood (the checkpoint PING is
/// answered, every frame that `counted` accepts — its ACK — arrived) and
/// still serve a call.
async fn flood_without_reading(
    what: &str,
    total: usize,
    make: impl Fn(usize, &mut BytesMut) + Send + 'static,
    counted: impl Fn(&Frame) -> bool,
) {
    let (_echo, _proxy, addr) = setup().await;
    let Conn { mut r, w, .. } = Conn::connect(addr, &[]).await;
    let start = Instant::now();
    let writer = flood(w, total, 1000, true, make);
    still_serving(addr).await;
    let written_before_reading = writer.is_finished();
    // Now read: count the ACKs up to the checkpoint's.
    let mut acks = 0;
    let got = loop {
        match r.next().await {
            None => break Outcome::Closed,
            Some(f) if f.kind == GOAWAY => break Outcome::GoAway(f.code()),
            Some(f) if f.kind == PING && f.has(ACK) && f.payload[..] == CHECKPOINT => {
                break Outcome::Survived
            }
            Some(f) if counted(&f) => acks += 1,
            Some(_) => {}
        }
    };
    let (w, sent) = writer.await.unwrap();
    eprintln!(
        "{what} flood: {got:?}; {sent} of {total} written (all before reading: {written_before_reading}), \
         {acks} ACKs read, {:?}",
        start.elapsed()
    );
    match got {
        Outcome::Survived => {
            assert_eq!(sent, total);
            assert_eq!(acks, total, "every {what} is ACKed, in order");
            let mut conn = Conn {
                r,
                w,
                server_settings: Vec::new(),
            };
            assert_good_call(&mut conn, 1).await;
        }
        Outcome::GoAway(_) | Outcome::Closed => {}
    }
    still_serving(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_without_reading_is_survived() {
    flood_without_reading(
        "SETTINGS",
        100_000,
        |_, out| frame(out, SETTINGS, 0, 0, &[]),
        |f| f.kind == SETTINGS && f.has(ACK),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_without_reading_is_survived() {
    flood_without_reading(
        "PING",
        100_000,
        |i, out| frame(out, PING, 0, 0, &(i as u64).to_be_bytes()),
        |f| f.kind == PING && f.has(ACK),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_data_flood_gets_goaway() {
    let (_echo, _proxy, addr) = setup().await;
    let Conn { mut r, mut w, .. } = Conn::connect(addr, &[]).await;
    let mut out = BytesMut::new();
    headers(&mut out, 1, &Block::grpc(CLIENT_STREAM).0, false);
    w.write_all(&out).await.unwrap();
    let frames = 100_000;
    let writer = flood(w, frames, 1000, true, |_, out| frame(out, DATA, 0, 1, &[]));
    let (got, ()) = tokio::join!(outcome(&mut r), still_serving(addr));
    let (_, sent) = writer.await.unwrap();
    eprintln!("empty DATA flood: {got:?} after {sent} of {frames} frames written");
    assert!(
        matches!(got, Outcome::GoAway(code) if code != NO_ERROR),
        "a flood of empty DATA frames gets GOAWAY: {got:?}"
    );
    still_serving(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_stalls_only_its_stream_until_window_update() {
    let (echo, _proxy, addr) = setup().await;
    let mut conn = Conn::connect(addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    // 4 MiB of responses: four times torii's upstream stream window.
    let count = 64;
    let request = grpc_frame(&EchoRequest {
        count,
        response_size: 64 * 1024,
        ..Default::default()
    });
    conn.grpc_call(1, SERVER_STREAM, &request).await;
    let head = conn
        .r
        .until(|f| f.stream == 1 && f.kind != WINDOW_UPDATE)
        .await
        .expect("the connection lives");
    assert_eq!(
        head.kind, HEADERS,
        "response headers, not flow controlled: {head:?}"
    );
    assert_eq!(status_of(head.block()), Some(200));

    // Another connection is served; so is another stream on this one
    // (given a window of its own).
    still_serving(addr).await;
    let mut other = BytesMut::new();
    headers(&mut other, 3, &Block::grpc(UNARY).0, false);
    frame(&mut other, DATA, END_STREAM, 3, &echo_request("beside"));
    frame(&mut other, WINDOW_UPDATE, 0, 3, &(1u32 << 20).to_be_bytes());
    conn.write(&other).await;
    let mut reply = conn.reply(3).await;
    assert_eq!(
        (reply.end, reply.status),
        (End::Done, Some(Some(200))),
        "{reply:?}"
    );
    let beside: Vec<EchoResponse> = take_grpc_frames(&mut reply.data);
    assert_eq!(beside.len(), 1);

    // The stalled stream got no data, and the upstream is held back: its
    // call cannot finish while torii does not read it. Two unary calls have
    // completed (the other connection's and "beside"); the wait is the time
    // a proxy that buffered everything would need to finish the third.
    let finished = echo
        .stats
        .wait_for(Duration::from_millis(500), |s| s.completed > 2)
        .await;
    assert!(
        finished.is_err(),
        "the upstream's stream finished although the client reads nothing: {finished:?}"
    );
    while let Some(f) = conn.r.next_within(Duration::ZERO).await {
        let f = f.expect("the connection lives");
        assert!(
            !(f.stream == 1 && f.kind == DATA && !f.payload.is_empty()),
            "DATA beyond a zero window: {f:?}"
        );
    }

    // Open the window: everything arrives.
    conn.send(WINDOW_UPDATE, 0, 1, &(1u32 << 30).to_be_bytes())
        .await;
    let mut reply = conn.reply(1).await;
    // The response head was read above: the HEADERS now are the trailers.
    assert_eq!(reply.end, End::Done, "{reply:?}");
    assert!(reply.status.is_some(), "trailers: {reply:?}");
    let messages: Vec<EchoResponse> = take_grpc_frames(&mut reply.data);
    assert_eq!(messages.len(), count as usize);
    assert!(messages.iter().all(|m| m.payload.len() == 64 * 1024));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_over_the_limit_is_refused_and_the_connection_lives() {
    let (_echo, _proxy, addr) = setup().await;
    let mut conn = Conn::connect(addr, &[]).await;
    // MAX_STREAMS + 1 client streams that wait for their request bodies.
    let block = Block::grpc(CLIENT_STREAM).0;
    let mut out = BytesMut::new();
    for i in 0..=MAX_STREAMS {
        headers(&mut out, 2 * i + 1, &block, false);
    }
    conn.write(&out).await;
    let extra = 2 * MAX_STREAMS + 1;
    let refused = conn.r.until(|f| f.kind == RST_STREAM || f.kind == GOAWAY);
    let refused = tokio::time::timeout(PATIENCE / 2, refused)
        .await
        .unwrap_or_else(|_| panic!("stream {extra} is not refused within {:?}", PATIENCE / 2))
        .expect("the connection lives");
    assert_eq!(
        (refused.kind, refused.stream, refused.code()),
        (RST_STREAM, extra, REFUSED_STREAM),
        "only stream {extra} is refused, with REFUSED_STREAM: {refused:?}"
    );
    // Finish one stream; then a new one is accepted.
    conn.send(DATA, END_STREAM, 1, &echo_request("one")).await;
    let reply = conn.reply(1).await;
    assert_eq!(
        (reply.end, reply.status),
        (End::Done, Some(Some(200))),
        "{reply:?}"
    );
    assert_good_call(&mut conn, extra + 2).await;
}

/// A malformed request (RFC 9113 §8.1.1) is a stream error: RST_STREAM
/// with PROTOCOL_ERROR, or a 400 response; it never reaches the upstream,
/// and the connection goes on serving.
async fn malformed_request_is_a_stream_error(what: &str, block: Block) {
    let (echo, _proxy, addr) = setup().await;
    let mut conn = Conn::connect(addr, &[]).await;
    conn.headers(1, &block, true).await;
    let reply = conn.reply(1).await;
    eprintln!("{what}: {reply:?}");
    assert!(
        reply.end == End::Reset(PROTOCOL_ERROR)
            || (reply.end == End::Done && reply.status == Some(Some(400))),
        "{what}: RST_STREAM(PROTOCOL_ERROR) or 400 expected, got {reply:?}"
    );
    assert_good_call(&mut conn, 3).await;
    assert_eq!(
        echo.stats.started(),
        1,
        "{what} must not reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uppercase_header_name_is_a_stream_error() {
    let block = Block::grpc(UNARY).field("X-Upper", "1");
    malformed_request_is_a_stream_error("uppercase header name", block).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_header_is_a_stream_error() {
    let block = Block::grpc(UNARY).field("connection", "keep-alive");
    malformed_request_is_a_stream_error("connection: keep-alive", block).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_other_than_trailers_is_a_stream_error() {
    let block = Block::post()
        .field(":path", UNARY)
        .field(":authority", "localhost")
        .field("content-type", "application/grpc")
        .field("te", "gzip");
    malformed_request_is_a_stream_error("te: gzip", block).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_path_is_a_stream_error() {
    let block = Block::post()
        .field(":authority", "localhost")
        .field("content-type", "application/grpc")
        .field("te", "trailers");
    malformed_request_is_a_stream_error("missing :path", block).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudo_header_after_a_regular_one_is_a_stream_error() {
    let block = Block::post()
        .field(":authority", "localhost")
        .field("content-type", "application/grpc")
        .field("te", "trailers")
        .field(":path", UNARY);
    malformed_request_is_a_stream_error("pseudo-header after a regular header", block).await;
}

//! HTTP/2 conformance of torii's upstream client: torii proxies gRPC calls
//! to a raw HTTP/2 server written here, which misbehaves on purpose (bad
//! SETTINGS, frames on idle or closed streams, oversized frames, windows
//! that overflow, bad HPACK, interleaved CONTINUATION, GOAWAY, RST_STREAM,
//! malformed responses). One test per MUST of RFC 9113 (and RFC 7541) that
//! binds a client, each named after its section with the RFC's sentence.
//!
//! Every test asserts both sides: what torii sends back to the upstream
//! (the GOAWAY or RST_STREAM code, the connection closing, nothing sent
//! where the RFC forbids it) and what torii's own client gets — a proper
//! error (gRPC UNAVAILABLE with an `x-torii-error` code) and never a hang.
//! The client is the `h2` crate, an independent implementation. Waits are
//! reads with a bounded timeout, never sleeps.
//!

mod proxy_support;
#[path = "support/raw_h2.rs"]
mod raw_h2;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use proxy_support::{front_with, Proxy};
use raw_h2::*;
use support::*;

const UNARY: &str = "/torii.echo.v1.Echo/Unary";

/// How long a test waits to see that nothing (more) arrives, after a PING
/// round trip has shown that torii processed what came before.
const QUIET: Duration = Duration::from_millis(200);

/// The most a client may wait for torii's answer: anything longer is a hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// The raw upstream

/// A listening raw HTTP/2 upstream and torii in front of it.
struct Env {
    listener: TcpListener,
    proxy: Proxy,
}

async fn env() -> Env {
    env_with("").await
}

async fn env_with(cluster_extra: &str) -> Env {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let extra = format!("    protocol: h2c\n{cluster_extra}");
    let proxy = front_with(&[addr.to_string()], &extra).await;
    Env { listener, proxy }
}

impl Env {
    fn addr(&self) -> SocketAddr {
        self.proxy.addr("plain")
    }

    /// The next connection from torii, its preface read (nothing sent).
    async fn accept_raw(&self) -> Peer {
        let (tcp, _) = tokio::time::timeout(PATIENCE, self.listener.accept())
            .await
            .expect("torii connects to the upstream in time")
            .expect("accept");
        tcp.set_nodelay(true).unwrap();
        let (rd, w) = tcp.into_split();
        let mut peer = Peer {
            r: Reader::new(Box::new(rd), BytesMut::new()),
            w: Box::new(w),
            torii_settings: Vec::new(),
            settings_acked: false,
        };
        let preface = peer.r.raw(PREFACE.len()).await.expect("torii's preface");
        assert_eq!(&preface[..], PREFACE, "§3.4: the client connection preface");
        peer
    }

    /// The next connection, with the handshake done: torii's SETTINGS read
    /// and ACKed, ours (`settings`) sent.
    async fn accept(&self, settings: &[(u16, u32)]) -> Peer {
        let mut peer = self.accept_raw().await;
        let first = peer
            .next("torii's SETTINGS")
            .await
            .expect("torii's SETTINGS");
        assert!(
            first.kind == SETTINGS && !first.has(ACK),
            "§3.4: the preface \"MUST be followed by a SETTINGS frame\": {}",
            first.describe()
        );
        peer.torii_settings = parse_settings(&first.payload);
        let mut out = BytesMut::new();
        frame(&mut out, SETTINGS, 0, 0, &settings_payload(settings));
        frame(&mut out, SETTINGS, ACK, 0, &[]);
        // The connection window is no limit in these tests.
        frame(&mut out, WINDOW_UPDATE, 0, 0, &(1u32 << 30).to_be_bytes());
        peer.write(&out).await;
        peer
    }
}

/// One connection from torii, seen from the upstream.
struct Peer {
    r: Reader,
    w: Writer,
    torii_settings: Vec<(u16, u32)>,
    /// torii ACKed our SETTINGS.
    settings_acked: bool,
}

/// A request torii sent.
#[derive(Debug)]
struct Req {
    stream: u32,
    block: Vec<u8>,
    end_stream: bool,
}

impl Peer {
    async fn write(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        // torii may have closed already: what it sent is what is checked.
        let _ = self.w.write_all(bytes).await;
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut out = BytesMut::new();
        frame(&mut out, kind, flags, stream, payload);
        self.write(&out).await;
    }

    /// The next frame from torii (None: the connection ended); PINGs and
    /// SETTINGS are answered on the way (and still returned).
    async fn next(&mut self, what: &str) -> Option<Frame> {
        let f = match self.r.next_within(PATIENCE).await {
            Some(f) => f?,
            None => panic!("{what}: nothing from torii within {PATIENCE:?}"),
        };
        if f.kind == PING && !f.has(ACK) {
            let payload = f.payload.clone();
            self.send(PING, ACK, 0, &payload).await;
        }
        if f.kind == SETTINGS {
            if f.has(ACK) {
                self.settings_acked = true;
            } else {
                self.send(SETTINGS, ACK, 0, &[]).await;
            }
        }
        Some(f)
    }

    /// The next request head (HEADERS and any CONTINUATION).
    async fn request(&mut self) -> Req {
        loop {
            let f = self.next("a request").await.expect("torii sends a request");
            match f.kind {
                HEADERS => {
                    let mut req = Req {
                        stream: f.stream,
                        block: f.block().to_vec(),
                        end_stream: f.has(END_STREAM),
                    };
                    let mut done = f.has(END_HEADERS);
                    while !done {
                        let c = self.next("CONTINUATION").await.expect("CONTINUATION");
                        assert_eq!((c.kind, c.stream), (CONTINUATION, req.stream));
                        req.block.extend_from_slice(&c.payload);
                        done = c.has(END_HEADERS);
                    }
                    return req;
                }
                RST_STREAM | GOAWAY => panic!("waiting for a request: {}", f.describe()),
                _ => {}
            }
        }
    }

    /// Reads the request body of `stream` to its END_STREAM.
    async fn body(&mut self, req: &Req) -> BytesMut {
        let mut body = BytesMut::new();
        if req.end_stream {
            return body;
        }
        loop {
            let f = self.next("a request body").await.expect("the body");
            if f.stream == req.stream {
                match f.kind {
                    DATA => body.extend_from_slice(&f.payload),
                    HEADERS => {}
                    _ => panic!("in the request body: {}", f.describe()),
                }
                if f.has(END_STREAM) {
                    return body;
                }
            }
        }
    }

    /// A request and its whole body; its stream id.
    async fn whole_request(&mut self) -> u32 {
        let req = self.request().await;
        self.body(&req).await;
        req.stream
    }

    /// A response head with `block` (HEADERS, END_HEADERS).
    async fn head(&mut self, stream: u32, block: &Block, end_stream: bool) {
        let mut out = BytesMut::new();
        headers(&mut out, stream, &block.0, end_stream);
        self.write(&out).await;
    }

    /// A whole good gRPC response: head, one message, OK trailers.
    async fn respond_ok(&mut self, stream: u32) {
        let mut out = BytesMut::new();
        headers(&mut out, stream, &ok_head().0, false);
        frame(&mut out, DATA, 0, stream, &echo_reply("ok"));
        headers(&mut out, stream, &ok_trailers().0, true);
        self.write(&out).await;
    }

    /// torii's connection error: GOAWAY with `code`, no RST_STREAM before
    /// it, and then the connection closes (§5.4.1: "After sending the
    /// GOAWAY frame for an error condition, the endpoint MUST close the TCP
    /// connection").
    async fn connection_error(&mut self, code: u32, what: &str) {
        loop {
            let Some(f) = self.next(what).await else {
                panic!("{what}: torii closed without GOAWAY({})", code_name(code));
            };
            match f.kind {
                GOAWAY => {
                    assert_eq!(
                        f.code(),
                        code,
                        "{what}: GOAWAY({}) expected, got {}",
                        code_name(code),
                        f.describe()
                    );
                    break;
                }
                RST_STREAM => panic!(
                    "{what}: GOAWAY({}) expected, got {}",
                    code_name(code),
                    f.describe()
                ),
                _ => {}
            }
        }
        self.closes(what).await;
    }

    /// Nothing but the end of the connection follows (no new stream, no
    /// RST_STREAM, no second GOAWAY).
    async fn closes(&mut self, what: &str) {
        while let Some(f) = self.next(what).await {
            assert!(
                !matches!(f.kind, RST_STREAM | GOAWAY | HEADERS | DATA),
                "{what}: {} after torii's GOAWAY",
                f.describe()
            );
        }
    }

    /// The connection ends with GOAWAY(`code`), or just closes.
    async fn connection_error_or_close(&mut self, code: u32, what: &str) {
        while let Some(f) = self.next(what).await {
            match f.kind {
                GOAWAY => {
                    assert_eq!(f.code(), code, "{what}: {}", f.describe());
                    return self.closes(what).await;
                }
                RST_STREAM => panic!("{what}: {}", f.describe()),
                _ => {}
            }
        }
    }

    /// torii's stream error: RST_STREAM(`code`) on `stream`, no GOAWAY;
    /// the connection still answers a PING.
    async fn stream_error(&mut self, stream: u32, code: u32, what: &str) {
        loop {
            let Some(f) = self.next(what).await else {
                panic!(
                    "{what}: torii closed; RST_STREAM({}) expected",
                    code_name(code)
                );
            };
            match f.kind {
                RST_STREAM if f.stream == stream => {
                    assert_eq!(
                        f.code(),
                        code,
                        "{what}: RST_STREAM({}) expected, got {}",
                        code_name(code),
                        f.describe()
                    );
                    break;
                }
                RST_STREAM | GOAWAY => panic!(
                    "{what}: RST_STREAM({}) on {stream} expected, got {}",
                    code_name(code),
                    f.describe()
                ),
                _ => {}
            }
        }
        self.nothing_more_on(stream, what).await;
    }

    /// Either error, with `code`.
    async fn stream_or_connection_error(&mut self, stream: u32, code: u32, what: &str) {
        loop {
            let Some(f) = self.next(what).await else {
                panic!(
                    "{what}: torii closed; RST_STREAM or GOAWAY({}) expected",
                    code_name(code)
                );
            };
            match f.kind {
                RST_STREAM if f.stream == stream => {
                    assert_eq!(f.code(), code, "{what}: {}", f.describe());
                    return self.nothing_more_on(stream, what).await;
                }
                GOAWAY => {
                    assert_eq!(f.code(), code, "{what}: {}", f.describe());
                    return self.closes(what).await;
                }
                RST_STREAM => panic!("{what}: {}", f.describe()),
                _ => {}
            }
        }
    }

    /// After a PING round trip nothing arrives on `stream` (nor a GOAWAY)
    /// for [`QUIET`]; the connection lives.
    async fn nothing_more_on(&mut self, stream: u32, what: &str) {
        let payload = *b"quiet?!!";
        self.send(PING, 0, 0, &payload).await;
        let mut acked = false;
        loop {
            let f = if acked {
                match self.r.next_within(QUIET).await {
                    None => return,
                    Some(f) => f,
                }
            } else {
                self.next(what).await
            };
            let Some(f) = f else {
                panic!("{what}: torii closed the connection")
            };
            if f.kind == PING && f.has(ACK) && f.payload[..] == payload {
                acked = true;
                continue;
            }
            assert!(
                (f.stream != stream || f.kind == WINDOW_UPDATE) && f.kind != GOAWAY,
                "{what}: nothing more on stream {stream} expected, got {}",
                f.describe()
            );
        }
    }

    fn setting(&self, id: u16) -> Option<u32> {
        self.torii_settings
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }
}

fn ok_head() -> Block {
    Block::default()
        .field(":status", "200")
        .field("content-type", "application/grpc")
}

fn ok_trailers() -> Block {
    Block::default().field("grpc-status", "0")
}

fn echo_reply(message: &str) -> Bytes {
    grpc_frame(&EchoResponse {
        message: message.into(),
        ..Default::default()
    })
}

fn echo_request(message: &str) -> Bytes {
    grpc_frame(&EchoRequest {
        message: message.into(),
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------
// torii's client (the h2 crate)

/// What torii's client got.
#[derive(Debug, Default)]
struct Outcome {
    status: Option<u16>,
    grpc_status: Option<String>,
    grpc_message: Option<String>,
    torii_error: Option<String>,
    data: usize,
    /// The call failed at the HTTP/2 level (reset or connection error).
    h2_error: Option<String>,
}

impl Outcome {
    fn is_ok(&self) -> bool {
        self.status == Some(200)
            && self.grpc_status.as_deref() == Some("0")
            && self.h2_error.is_none()
    }

    fn take(&mut self, headers: &http::HeaderMap) {
        let get = |n: &str| {
            headers
                .get(n)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        self.grpc_status = get("grpc-status").or(self.grpc_status.take());
        self.grpc_message = get("grpc-message").or(self.grpc_message.take());
        self.torii_error = get("x-torii-error").or(self.torii_error.take());
    }
}

/// Starts a unary call through torii (`message` as the request body).
fn call(addr: SocketAddr, message: &str) -> JoinHandle<Outcome> {
    call_with(addr, echo_request(message))
}

fn call_with(addr: SocketAddr, body: Bytes) -> JoinHandle<Outcome> {
    tokio::spawn(async move {
        let run = async {
            let mut out = Outcome::default();
            let send = raw_h2(addr).await;
            let (response, mut stream) = raw_grpc_call(send, "localhost", UNARY).await;
            if let Err(e) = stream.send_data(body, true) {
                out.h2_error = Some(format!("sending: {e}"));
                return out;
            }
            let response = match response.await {
                Ok(r) => r,
                Err(e) => {
                    out.h2_error = Some(format!("{e}"));
                    return out;
                }
            };
            out.status = Some(response.status().as_u16());
            out.take(response.headers());
            let mut body = response.into_body();
            while let Some(chunk) = body.data().await {
                match chunk {
                    Ok(c) => {
                        out.data += c.len();
                        let _ = body.flow_control().release_capacity(c.len());
                    }
                    Err(e) => {
                        out.h2_error = Some(format!("{e}"));
                        return out;
                    }
                }
            }
            match body.trailers().await {
                Ok(Some(t)) => out.take(&t),
                Ok(None) => {}
                Err(e) => out.h2_error = Some(format!("{e}")),
            }
            out
        };
        tokio::time::timeout(ANSWER_WITHIN, run)
            .await
            .unwrap_or_else(|_| {
                panic!("torii's client got no answer within {ANSWER_WITHIN:?} (a hang)")
            })
    })
}

async fn outcome(call: JoinHandle<Outcome>) -> Outcome {
    let out = call.await.expect("the client task");
    eprintln!("client got: {out:?}");
    out
}

/// The client got gRPC UNAVAILABLE with an `x-torii-error` code.
async fn unavailable(call: JoinHandle<Outcome>, what: &str) -> Outcome {
    let out = outcome(call).await;
    assert!(
        out.h2_error.is_none()
            && out.grpc_status.as_deref() == Some("14")
            && out.torii_error.is_some(),
        "{what}: the client must get UNAVAILABLE with x-torii-error, got {out:?}"
    );
    out
}

/// The client's call failed properly: UNAVAILABLE with `x-torii-error`,
/// or — when the response head had already been passed on — its stream
/// reset or a non-OK gRPC status; never OK, never a hang.
async fn failed(call: JoinHandle<Outcome>, what: &str) -> Outcome {
    let out = outcome(call).await;
    assert!(!out.is_ok(), "{what}: the client must not get OK: {out:?}");
    assert!(
        out.h2_error.is_some()
            || (out.grpc_status.is_some() && out.grpc_status.as_deref() != Some("0")),
        "{what}: a proper error expected: {out:?}"
    );
    out
}

async fn ok(call: JoinHandle<Outcome>, what: &str) -> Outcome {
    let out = outcome(call).await;
    assert!(out.is_ok(), "{what}: the client must get OK: {out:?}");
    out
}

/// A call whose request reached the upstream: (the call, the peer, the
/// request's stream).
async fn started(env: &Env, settings: &[(u16, u32)]) -> (JoinHandle<Outcome>, Peer, u32) {
    let call = call(env.addr(), "hello");
    let mut peer = env.accept(settings).await;
    let stream = peer.whole_request().await;
    (call, peer, stream)
}

/// A malformed response head (§8.1.1): torii resets the stream with
/// PROTOCOL_ERROR, passes nothing of it on, and the client gets
/// UNAVAILABLE.
async fn malformed_head(block: Block, what: &str) {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let mut out = BytesMut::new();
    headers(&mut out, stream, &block.0, false);
    frame(&mut out, DATA, 0, stream, &echo_reply("malformed"));
    headers(&mut out, stream, &ok_trailers().0, true);
    peer.write(&out).await;
    peer.stream_error(stream, PROTOCOL_ERROR, what).await;
    unavailable(call, what).await;
}

/// A good head and message, then `trailers` (a block, END_STREAM as
/// given): malformed; torii resets the stream; the client gets an error.
async fn malformed_trailers(trailers: Block, end_stream: bool, what: &str) {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let mut out = BytesMut::new();
    headers(&mut out, stream, &ok_head().0, false);
    frame(&mut out, DATA, 0, stream, &echo_reply("body"));
    headers(&mut out, stream, &trailers.0, end_stream);
    peer.write(&out).await;
    peer.stream_error(stream, PROTOCOL_ERROR, what).await;
    failed(call, what).await;
}

// ---------------------------------------------------------------------------
// §3.4 Connection preface

/// §3.4: "That is, the connection preface starts with the string "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n". This sequence MUST be followed by a SETTINGS frame" (torii's own preface; and a good call works end to end).
#[tokio::test]
async fn s3_4_torii_sends_the_preface_and_settings_first() {
    let env = env().await;
    let call = call(env.addr(), "hello");
    let mut peer = env.accept(&[]).await; // asserts preface + SETTINGS
    let stream = peer.whole_request().await;
    peer.respond_ok(stream).await;
    ok(call, "a good response").await;
    assert!(
        peer.setting(SETTINGS_ENABLE_PUSH) != Some(1),
        "torii must not ask for push it does not handle: {:?}",
        peer.torii_settings
    );
}

/// §3.4: "The server connection preface consists of a potentially empty SETTINGS frame that MUST be the first frame the server sends ... Clients and servers MUST treat an invalid connection preface as a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s3_4_server_preface_not_settings_is_protocol_error() {
    let env = env().await;
    let call = call(env.addr(), "hello");
    let mut peer = env.accept_raw().await;
    peer.send(PING, 0, 0, b"notsetng").await;
    peer.connection_error_or_close(PROTOCOL_ERROR, "PING as the server's first frame")
        .await;
    unavailable(call, "bad server preface").await;
}

/// §3.4 (see above): an HTTP/1.1 answer to the preface is no HTTP/2 server; the client is told so (README: `upstream_protocol_mismatch`).
#[tokio::test]
async fn s3_4_http1_answer_to_the_preface_is_protocol_mismatch() {
    let env = env().await;
    let call = call(env.addr(), "hello");
    let mut peer = env.accept_raw().await;
    peer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await;
    drop(peer);
    let out = unavailable(call, "HTTP/1.1 answer").await;
    assert_eq!(
        out.torii_error.as_deref(),
        Some("upstream_protocol_mismatch"),
        "{out:?}"
    );
}

/// §3.4 (see above): an HTTP/0.9-style answer (an HTML body, as `python -m http.server` gives) is no HTTP/2 either (finding 6).
#[tokio::test]
async fn s3_4_html_answer_to_the_preface_is_protocol_mismatch() {
    let env = env().await;
    let call = call(env.addr(), "hello");
    let mut peer = env.accept_raw().await;
    peer.write(b"<!DOCTYPE HTML>\n<html><body>Error 400</body></html>\n")
        .await;
    drop(peer);
    let out = unavailable(call, "HTML answer").await;
    assert_eq!(
        out.torii_error.as_deref(),
        Some("upstream_protocol_mismatch"),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------
// §4.2 Frame size

/// §4.2: "An endpoint MUST send an error code of FRAME_SIZE_ERROR if a frame exceeds the size defined in SETTINGS_MAX_FRAME_SIZE ... A frame size error in a frame that could alter the state of the entire connection MUST be treated as a connection error; this includes any frame carrying a field block" (HEADERS).
#[tokio::test]
async fn s4_2_response_headers_over_max_frame_size_is_a_connection_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let max = peer.setting(SETTINGS_MAX_FRAME_SIZE).unwrap_or(16_384) as usize;
    let block = ok_head().field("x-pad", vec![b'p'; max]);
    peer.send(HEADERS, END_HEADERS, stream, &block.0).await;
    peer.connection_error(FRAME_SIZE_ERROR, "HEADERS over the max frame size")
        .await;
    unavailable(call, "oversized HEADERS").await;
}

/// §4.2 (see above): DATA over the limit (a stream or connection error).
#[tokio::test]
async fn s4_2_response_data_over_max_frame_size_is_frame_size_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let max = peer.setting(SETTINGS_MAX_FRAME_SIZE).unwrap_or(16_384) as usize;
    peer.head(stream, &ok_head(), false).await;
    peer.send(DATA, 0, stream, &vec![0; max + 1]).await;
    peer.stream_or_connection_error(stream, FRAME_SIZE_ERROR, "DATA over the max frame size")
        .await;
    failed(call, "oversized DATA").await;
}

/// §4.2: "An endpoint MUST NOT send a frame larger than ... SETTINGS_MAX_FRAME_SIZE" — torii's request DATA keeps to the upstream's 16384.
#[tokio::test]
async fn s4_2_torii_keeps_to_the_upstreams_max_frame_size() {
    let env = env().await;
    let body = grpc_frame(&EchoRequest {
        payload: vec![1; 100_000],
        ..Default::default()
    });
    let call = call_with(env.addr(), body.clone());
    let mut peer = env.accept(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]).await;
    let req = peer.request().await;
    let mut got = 0;
    loop {
        let f = peer.next("the request body").await.expect("lives");
        assert!(
            f.payload.len() <= MAX_FRAME,
            "a frame over 16384: {}",
            f.describe()
        );
        if f.kind == DATA && f.stream == req.stream {
            got += f.payload.len();
            if f.has(END_STREAM) {
                break;
            }
        }
    }
    assert_eq!(got, body.len());
    peer.respond_ok(req.stream).await;
    ok(call, "a large request").await;
}

// ---------------------------------------------------------------------------
// §4.3 Field section compression (RFC 7541)

/// §4.3: "A decoding error in a field block MUST be treated as a connection error of type COMPRESSION_ERROR." (RFC 7541 §6.1: index 0)
#[tokio::test]
async fn s4_3_response_hpack_index_0_is_compression_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.head(stream, &ok_head().raw(&[0x80]), true).await;
    peer.connection_error(COMPRESSION_ERROR, "HPACK index 0")
        .await;
    unavailable(call, "bad HPACK").await;
}

/// RFC 7541 §2.3.3: "Indices strictly greater than the sum of the lengths of both tables MUST be treated as a decoding error."
#[tokio::test]
async fn s4_3_response_hpack_index_out_of_range_is_compression_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.head(stream, &ok_head().indexed(99), true).await;
    peer.connection_error(COMPRESSION_ERROR, "HPACK index 99")
        .await;
    unavailable(call, "bad HPACK").await;
}

/// RFC 7541 §5.2: "A Huffman-encoded string literal containing the EOS symbol MUST be treated as a decoding error."
#[tokio::test]
async fn s4_3_response_huffman_eos_is_compression_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.head(
        stream,
        &ok_head().huffman_value("x-h", &[0xff, 0xff, 0xff, 0xff]),
        true,
    )
    .await;
    peer.connection_error(COMPRESSION_ERROR, "Huffman EOS")
        .await;
    unavailable(call, "bad Huffman").await;
}

/// RFC 7541 §6.3: "A value that exceeds this limit MUST be treated as a decoding error." (a table size update above torii's SETTINGS_HEADER_TABLE_SIZE)
#[tokio::test]
async fn s4_3_response_table_size_update_over_the_limit_is_compression_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let limit = peer.setting(SETTINGS_HEADER_TABLE_SIZE).unwrap_or(4096) as usize;
    let block = Block::default().size_update(limit + 1).raw(&ok_head().0);
    peer.head(stream, &block, true).await;
    peer.connection_error(COMPRESSION_ERROR, "table size update over the limit")
        .await;
    unavailable(call, "bad table size").await;
}

/// §4.3: the dynamic table spans blocks: a response using an entry the previous response added is decoded.
#[tokio::test]
async fn s4_3_response_dynamic_table_carries_over() {
    let env = env().await;
    let first = call(env.addr(), "one");
    let mut peer = env.accept(&[]).await;
    let s1 = peer.whole_request().await;
    let mut out = BytesMut::new();
    let head = Block::default()
        .field_indexing(":status", "200")
        .field("content-type", "application/grpc");
    headers(&mut out, s1, &head.0, false);
    frame(&mut out, DATA, 0, s1, &echo_reply("one"));
    headers(&mut out, s1, &ok_trailers().0, true);
    peer.write(&out).await;
    ok(first, "first").await;
    let second = call(env.addr(), "two");
    let s2 = peer.whole_request().await;
    let mut out = BytesMut::new();
    let head = Block::default()
        .indexed(62)
        .field("content-type", "application/grpc");
    headers(&mut out, s2, &head.0, false);
    frame(&mut out, DATA, 0, s2, &echo_reply("two"));
    headers(&mut out, s2, &ok_trailers().0, true);
    peer.write(&out).await;
    ok(second, "second, with a dynamic index").await;
}

// ---------------------------------------------------------------------------
// §5.1 Stream states, §5.1.1 identifiers, §5.1.2 concurrency

/// §5.1 idle: "Receiving any frame other than HEADERS or PRIORITY on a stream in this state MUST be treated as a connection error of type PROTOCOL_ERROR." (DATA on a stream torii never opened)
#[tokio::test]
async fn s5_1_data_on_an_idle_stream_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.send(DATA, 0, stream + 2, b"idle").await;
    peer.connection_error(PROTOCOL_ERROR, "DATA on an idle stream")
        .await;
    unavailable(call, "DATA on an idle stream").await;
}

/// §5.1 idle (see above): RST_STREAM.
#[tokio::test]
async fn s5_1_rst_stream_on_an_idle_stream_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.send(RST_STREAM, 0, stream + 2, &CANCEL.to_be_bytes())
        .await;
    peer.connection_error(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        .await;
    unavailable(call, "RST_STREAM on an idle stream").await;
}

/// §5.1 idle (see above): WINDOW_UPDATE.
#[tokio::test]
async fn s5_1_window_update_on_an_idle_stream_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.send(WINDOW_UPDATE, 0, stream + 2, &1u32.to_be_bytes())
        .await;
    peer.connection_error(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
        .await;
    unavailable(call, "WINDOW_UPDATE on an idle stream").await;
}

/// §5.1.1: "Streams initiated by a server MUST use even-numbered stream identifiers" and §8.4 (push disabled): a server's HEADERS on a stream the client never opened is a connection error PROTOCOL_ERROR ("An endpoint that receives an unexpected stream identifier MUST respond with a connection error of type PROTOCOL_ERROR").
#[tokio::test]
async fn s5_1_1_headers_on_a_stream_torii_never_opened_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.head(stream + 2, &ok_head(), true).await;
    peer.connection_error(PROTOCOL_ERROR, "HEADERS on an idle odd stream")
        .await;
    unavailable(call, "HEADERS on an idle stream").await;
}

/// §5.1.1 (see above): an even stream id from the server (server-initiated, without push).
#[tokio::test]
async fn s5_1_1_headers_on_an_even_stream_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, _) = started(&env, &[]).await;
    peer.head(2, &ok_head(), true).await;
    peer.connection_error(PROTOCOL_ERROR, "HEADERS on stream 2")
        .await;
    unavailable(call, "HEADERS on an even stream").await;
}

/// §5.1.1: "Streams initiated by a client MUST use odd-numbered stream identifiers ... The identifier of a newly established stream MUST be numerically greater than all streams that the initiating endpoint has opened".
#[tokio::test]
async fn s5_1_1_torii_opens_odd_increasing_stream_ids() {
    let env = env().await;
    let mut peer = None;
    let mut last = 0;
    for i in 0..4 {
        let c = call(env.addr(), "ids");
        if peer.is_none() {
            peer = Some(env.accept(&[]).await);
        }
        let p = peer.as_mut().unwrap();
        let stream = p.whole_request().await;
        assert!(
            stream % 2 == 1 && stream > last,
            "call {i}: stream {stream} after {last}"
        );
        last = stream;
        p.respond_ok(stream).await;
        ok(c, "a call").await;
    }
}

/// §6.1: "If a DATA frame is received whose stream is not in the "open" or "half-closed (local)" state, the recipient MUST respond with a stream error of type STREAM_CLOSED." — DATA after the response's END_STREAM (the trailers); the client's answer is whole and OK.
#[tokio::test]
async fn s6_1_data_after_trailers_is_stream_closed() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.respond_ok(stream).await;
    ok(call, "the response before the stray DATA").await;
    peer.send(DATA, 0, stream, &echo_reply("late")).await;
    peer.stream_or_connection_error(stream, STREAM_CLOSED, "DATA after trailers")
        .await;
}

/// §6.1 (see above): DATA after a response that ended with END_STREAM on DATA.
#[tokio::test]
async fn s6_1_data_on_a_closed_stream_is_stream_closed() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let mut out = BytesMut::new();
    headers(&mut out, stream, &ok_head().0, false);
    headers(&mut out, stream, &ok_trailers().0, true);
    peer.write(&out).await;
    ok(call, "the response").await;
    peer.send(DATA, END_STREAM, stream, b"late").await;
    peer.stream_or_connection_error(stream, STREAM_CLOSED, "DATA on a closed stream")
        .await;
}

/// §5.1 closed: "An endpoint that sends a RST_STREAM frame on a stream ... MUST minimally process and then discard any frames it receives in this state" — after torii reset a stream, the upstream's late frames are not a connection error, and the HPACK state stays in step.
#[tokio::test]
async fn s5_1_frames_after_torii_reset_a_stream_are_discarded() {
    let env = env().await;
    let (first, mut peer, stream) = started(&env, &[]).await;
    // A malformed head makes torii reset the stream...
    peer.head(stream, &ok_head().field("connection", "close"), false)
        .await;
    peer.stream_error(stream, PROTOCOL_ERROR, "a connection header")
        .await;
    unavailable(first, "a malformed head").await;
    // ...then the upstream, not yet aware, goes on: DATA, trailers that
    // add to the dynamic table.
    let mut out = BytesMut::new();
    frame(&mut out, DATA, 0, stream, &echo_reply("late"));
    headers(
        &mut out,
        stream,
        &Block::default()
            .field("grpc-status", "0")
            .field_indexing("x-late", "kept")
            .0,
        true,
    );
    peer.write(&out).await;
    // The connection goes on, its table in step (62 = x-late: kept).
    let next = call(env.addr(), "next");
    let s2 = peer.whole_request().await;
    let mut out = BytesMut::new();
    headers(&mut out, s2, &ok_head().indexed(62).0, false);
    frame(&mut out, DATA, 0, s2, &echo_reply("next"));
    headers(&mut out, s2, &ok_trailers().0, true);
    peer.write(&out).await;
    ok(next, "the next call on the same connection").await;
}

/// The first call on a connection whose upstream allows one stream at a time, once torii has acknowledged that
/// SETTINGS: the call, the upstream's end, and the call's stream.
async fn first_of_one_allowed(env: &Env) -> (JoinHandle<Outcome>, Peer, u32) {
    let first = call(env.addr(), "one");
    let mut peer = env.accept(&[(SETTINGS_MAX_CONCURRENT_STREAMS, 1)]).await;
    let s1 = peer.whole_request().await;
    while !peer.settings_acked {
        peer.next("the ACK of our SETTINGS").await.expect("lives");
    }
    (first, peer, s1)
}

/// Until a PING comes back and then for [`QUIET`], torii opens no second stream on `peer`'s connection (its one
/// stream is still open).
async fn no_second_stream(peer: &mut Peer) {
    let payload = *b"onlyone!";
    peer.send(PING, 0, 0, &payload).await;
    let mut acked = false;
    loop {
        let f = if acked {
            match peer.r.next_within(QUIET).await {
                None => return,
                Some(f) => f,
            }
        } else {
            peer.next("one stream at a time").await
        };
        let f = f.expect("lives");
        assert!(
            f.kind != HEADERS,
            "a second stream while the limit is 1: {}",
            f.describe()
        );
        if f.kind == PING && f.has(ACK) && f.payload[..] == payload {
            acked = true;
        }
    }
}

/// §5.1.2 at the cluster's `max_connections` (1 here): no other connection may be opened, so the second stream
/// waits for the first to close, then goes on the same connection. (Until this test, an HTTP/2 connection gave its
/// place under max_connections back as soon as it was made: the limit held only for HTTP/1.1.)
#[tokio::test]
async fn at_max_connections_a_stream_waits_under_the_upstreams_limit() {
    let env =
        env_with("    max_connections_per_endpoint: 1\n    limits: { max_connections: 1 }\n").await;
    let (first, mut peer, s1) = first_of_one_allowed(&env).await;
    let second = call(env.addr(), "two");
    no_second_stream(&mut peer).await;
    peer.respond_ok(s1).await;
    ok(first, "first").await;
    let s2 = peer.whole_request().await;
    assert!(s2 > s1);
    peer.respond_ok(s2).await;
    ok(second, "second").await;
}

/// §5.1.2: "Endpoints MUST NOT exceed the limit set by their peer." — with SETTINGS_MAX_CONCURRENT_STREAMS 1, torii opens no second stream on that connection while the first is open; the second call goes on a new connection (the upstream's limit fills the one torii spreads streams over, and behind a long-lived stream it would wait for good), and both calls succeed.
#[tokio::test]
async fn s5_1_2_torii_keeps_to_the_upstreams_max_concurrent_streams() {
    let env = env_with("    max_connections_per_endpoint: 1\n").await;
    let (first, mut peer, s1) = first_of_one_allowed(&env).await;
    let second = call(env.addr(), "two");
    let mut other = env.accept(&[]).await;
    let s2 = other.whole_request().await;
    no_second_stream(&mut peer).await;
    other.respond_ok(s2).await;
    ok(second, "the second call, while the first is still open").await;
    peer.respond_ok(s1).await;
    ok(first, "first").await;
}

// ---------------------------------------------------------------------------
// §6.1 DATA, §6.2 HEADERS

/// §6.1: "If a DATA frame is received whose Stream Identifier field is 0x00, the recipient MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_1_data_on_stream_0_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, _) = started(&env, &[]).await;
    peer.send(DATA, 0, 0, b"zero").await;
    peer.connection_error(PROTOCOL_ERROR, "DATA on stream 0")
        .await;
    unavailable(call, "DATA on stream 0").await;
}

/// §6.1: "If the length of the padding is the length of the frame payload or greater, the recipient MUST treat this as a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_1_data_padding_too_long_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.head(stream, &ok_head(), false).await;
    peer.send(DATA, PADDED, stream, &[9, 1, 2, 3]).await;
    peer.connection_error(PROTOCOL_ERROR, "DATA padding past the payload")
        .await;
    failed(call, "bad padding").await;
}

/// §6.1 / §6.2: padded DATA and padded HEADERS with priority fields are read correctly.
#[tokio::test]
async fn s6_2_padded_response_frames_are_accepted() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let mut head = priority_payload(false, 0, 16).to_vec();
    head.extend_from_slice(&ok_head().0);
    let mut out = BytesMut::new();
    padded_frame(&mut out, HEADERS, END_HEADERS | PRIORITY, stream, &head, 10);
    padded_frame(&mut out, DATA, 0, stream, &echo_reply("padded"), 33);
    padded_frame(
        &mut out,
        HEADERS,
        END_HEADERS | END_STREAM,
        stream,
        &ok_trailers().0,
        5,
    );
    peer.write(&out).await;
    ok(call, "padded frames").await;
}

/// §6.2: "If a HEADERS frame is received whose Stream Identifier field is 0x00, the recipient MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_2_headers_on_stream_0_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, _) = started(&env, &[]).await;
    peer.head(0, &ok_head(), true).await;
    peer.connection_error(PROTOCOL_ERROR, "HEADERS on stream 0")
        .await;
    unavailable(call, "HEADERS on stream 0").await;
}

// ---------------------------------------------------------------------------
// §6.4 RST_STREAM, §8.7 retries

/// §6.4: "After receiving a RST_STREAM on a stream, the receiver MUST NOT send additional frames for that stream" — and the client learns the upstream reset it.
#[tokio::test]
async fn s6_4_upstream_rst_stream_fails_the_call_and_nothing_follows() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.send(RST_STREAM, 0, stream, &INTERNAL_ERROR.to_be_bytes())
        .await;
    let out = unavailable(call, "the upstream's RST_STREAM").await;
    assert_eq!(
        out.torii_error.as_deref(),
        Some("upstream_reset"),
        "{out:?}"
    );
    peer.nothing_more_on(stream, "after the upstream's RST_STREAM")
        .await;
}

/// §6.4 (see above), mid-response: the head was passed on, the client's stream must end in an error, not look complete.
#[tokio::test]
async fn s6_4_upstream_rst_stream_mid_response_is_an_error_for_the_client() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let mut out = BytesMut::new();
    headers(&mut out, stream, &ok_head().0, false);
    frame(&mut out, DATA, 0, stream, &echo_reply("half"));
    frame(
        &mut out,
        RST_STREAM,
        0,
        stream,
        &INTERNAL_ERROR.to_be_bytes(),
    );
    peer.write(&out).await;
    failed(call, "RST_STREAM mid-response").await;
    peer.nothing_more_on(stream, "after the upstream's RST_STREAM")
        .await;
}

/// §6.4: "If a RST_STREAM frame is received with a stream identifier of 0x0, the recipient MUST treat this as a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_4_rst_stream_on_stream_0_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, _) = started(&env, &[]).await;
    peer.send(RST_STREAM, 0, 0, &CANCEL.to_be_bytes()).await;
    peer.connection_error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        .await;
    unavailable(call, "RST_STREAM on stream 0").await;
}

/// §6.4: "A RST_STREAM frame with a length other than 4 octets MUST be treated as a connection error of type FRAME_SIZE_ERROR."
#[tokio::test]
async fn s6_4_rst_stream_of_wrong_length_is_frame_size_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.send(RST_STREAM, 0, stream, &[0, 0, 0, 2, 0, 0]).await;
    peer.connection_error(FRAME_SIZE_ERROR, "RST_STREAM of 6 bytes")
        .await;
    unavailable(call, "bad RST_STREAM").await;
}

/// §8.7: "The REFUSED_STREAM error code can be included in a RST_STREAM frame to indicate that the stream is being closed prior to any processing having occurred. Any request that was sent on the reset stream can be safely retried." (torii retries, README)
#[tokio::test]
async fn s8_7_refused_stream_is_retried() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.send(RST_STREAM, 0, stream, &REFUSED_STREAM.to_be_bytes())
        .await;
    // The retry: on this connection or a new one, whichever comes.
    let mut fresh = None;
    let retry = tokio::select! {
        req = peer.request() => req,
        second = env.accept(&[]) => {
            let second = fresh.insert(second);
            second.request().await
        }
    };
    if fresh.is_none() {
        assert!(retry.stream > stream, "a new stream: {retry:?}");
    }
    let on = fresh.as_mut().unwrap_or(&mut peer);
    on.body(&retry).await;
    on.respond_ok(retry.stream).await;
    ok(call, "the retried call").await;
}

// ---------------------------------------------------------------------------
// §6.5 SETTINGS

/// §6.5: "Receipt of a SETTINGS frame with the ACK flag set and a length field value other than 0 MUST be treated as a connection error of type FRAME_SIZE_ERROR."
#[tokio::test]
async fn s6_5_settings_ack_with_payload_is_frame_size_error() {
    let env = env().await;
    let (call, mut peer, _) = started(&env, &[]).await;
    peer.send(
        SETTINGS,
        ACK,
        0,
        &settings_payload(&[(SETTINGS_ENABLE_PUSH, 0)]),
    )
    .await;
    peer.connection_error(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
        .await;
    unavailable(call, "bad SETTINGS ACK").await;
}

/// §6.5: "A SETTINGS frame with a length other than a multiple of 6 octets MUST be treated as a connection error of type FRAME_SIZE_ERROR."
#[tokio::test]
async fn s6_5_settings_of_bad_length_is_frame_size_error() {
    let env = env().await;
    let call = call(env.addr(), "hello");
    let mut peer = env.accept_raw().await;
    peer.send(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 1, 0]).await;
    peer.connection_error(FRAME_SIZE_ERROR, "SETTINGS of 7 bytes")
        .await;
    unavailable(call, "bad SETTINGS").await;
}

/// §6.5: "If an endpoint receives a SETTINGS frame whose Stream Identifier field is anything other than 0x00, the endpoint MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_5_settings_on_a_stream_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.send(SETTINGS, 0, stream, &[]).await;
    peer.connection_error(PROTOCOL_ERROR, "SETTINGS on a stream")
        .await;
    unavailable(call, "SETTINGS on a stream").await;
}

/// §6.5.2: SETTINGS_ENABLE_PUSH: "A client MUST treat receipt of a SETTINGS frame with SETTINGS_ENABLE_PUSH set to 1 as a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_5_2_enable_push_1_from_a_server_is_protocol_error() {
    let env = env().await;
    let call = call(env.addr(), "hello");
    let mut peer = env.accept(&[(SETTINGS_ENABLE_PUSH, 1)]).await;
    peer.connection_error(PROTOCOL_ERROR, "ENABLE_PUSH 1 from the server")
        .await;
    unavailable(call, "ENABLE_PUSH 1").await;
}

/// §6.5.2: "Values above the maximum flow-control window size of 2^31-1 MUST be treated as a connection error of type FLOW_CONTROL_ERROR."
#[tokio::test]
async fn s6_5_2_initial_window_size_above_max_is_flow_control_error() {
    let env = env().await;
    let call = call(env.addr(), "hello");
    let mut peer = env.accept(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 31)]).await;
    peer.connection_error(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE 2^31")
        .await;
    unavailable(call, "bad INITIAL_WINDOW_SIZE").await;
}

/// §6.5.2: SETTINGS_MAX_FRAME_SIZE: "Values outside this range MUST be treated as a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_5_2_max_frame_size_out_of_range_is_protocol_error() {
    let env = env().await;
    let call = call(env.addr(), "hello");
    let mut peer = env.accept(&[(SETTINGS_MAX_FRAME_SIZE, 100)]).await;
    peer.connection_error(PROTOCOL_ERROR, "MAX_FRAME_SIZE 100")
        .await;
    unavailable(call, "bad MAX_FRAME_SIZE").await;
}

/// §6.5.2: "An endpoint that receives a SETTINGS frame with any unknown or unsupported identifier MUST ignore that setting."
#[tokio::test]
async fn s6_5_2_unknown_settings_from_a_server_are_ignored() {
    let env = env().await;
    let call = call(env.addr(), "hello");
    let mut peer = env.accept(&[(0x77, 5), (0xabcd, u32::MAX)]).await;
    let stream = peer.whole_request().await;
    peer.respond_ok(stream).await;
    ok(call, "unknown settings").await;
    while !peer.settings_acked {
        peer.next("the ACK").await.expect("torii ACKs our SETTINGS");
    }
}

/// §6.5.3: "Upon receiving a SETTINGS frame with the ACK flag not set, the recipient MUST ... immediately emit a SETTINGS frame with the ACK flag set" — one ACK per SETTINGS.
#[tokio::test]
async fn s6_5_3_torii_acks_every_settings_frame() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let mut out = BytesMut::new();
    frame(
        &mut out,
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_MAX_CONCURRENT_STREAMS, 50)]),
    );
    frame(&mut out, SETTINGS, 0, 0, &[]);
    frame(&mut out, PING, 0, 0, b"settled?");
    peer.write(&out).await;
    // The handshake SETTINGS' ACK may or may not have been read yet.
    let mut acks = usize::from(peer.settings_acked);
    loop {
        let f = peer.next("SETTINGS ACKs").await.expect("lives");
        if f.kind == SETTINGS && f.has(ACK) {
            assert!(f.payload.is_empty());
            acks += 1;
        }
        if f.kind == PING && f.has(ACK) {
            break;
        }
    }
    assert_eq!(acks, 3, "the handshake's SETTINGS and the two others");
    peer.respond_ok(stream).await;
    ok(call, "after SETTINGS").await;
}

/// RFC 7541 §4.2: "a change in the maximum size of the dynamic table is signaled via a dynamic table size update ... This dynamic table size update MUST occur at the beginning of the first header block following the change to the dynamic table size." — after the upstream sets SETTINGS_HEADER_TABLE_SIZE 0, torii's blocks announce size 0 first and never use the dynamic table.
#[tokio::test]
async fn s6_5_2_header_table_size_0_is_honoured_by_torii_encoder() {
    let env = env().await;
    let first = call(env.addr(), "one");
    let mut peer = env.accept(&[(SETTINGS_HEADER_TABLE_SIZE, 0)]).await;
    let r1 = peer.request().await;
    let acked_before_first = peer.settings_acked;
    peer.body(&r1).await;
    peer.respond_ok(r1.stream).await;
    ok(first, "first").await;
    while !peer.settings_acked {
        peer.next("the ACK").await.expect("lives");
    }
    let second = call(env.addr(), "two");
    let r2 = peer.request().await;
    peer.body(&r2).await;
    peer.respond_ok(r2.stream).await;
    ok(second, "second").await;
    let walk1 = hpack_walk(&r1.block);
    let walk2 = hpack_walk(&r2.block);
    eprintln!("first block: {walk1:?}\nsecond block: {walk2:?}");
    // After the ACK no block may add to the table or refer to it.
    let after_ack: Vec<&Vec<Rep>> = if acked_before_first {
        vec![&walk1, &walk2]
    } else {
        vec![&walk2]
    };
    for walk in &after_ack {
        for rep in walk.iter() {
            assert!(
                !matches!(
                    rep,
                    Rep::Indexing | Rep::Indexed(62..) | Rep::NameIndex(62..)
                ),
                "the dynamic table used with a table size of 0: {walk:?}"
            );
        }
    }
    // If the first block used the table (written before our SETTINGS
    // arrived), the first one after must shrink it to 0 first.
    let used = walk1.iter().any(|r| matches!(r, Rep::Indexing));
    if used && !acked_before_first {
        assert!(
            matches!(walk2.first(), Some(Rep::SizeUpdate(0))),
            "a table size update to 0 must start the block: {walk2:?}"
        );
    }
}

/// One representation of a header block, as far as a test needs it.
#[derive(Debug, PartialEq)]
enum Rep {
    Indexed(usize),
    NameIndex(usize),
    /// Literal with incremental indexing (adds to the table).
    Indexing,
    SizeUpdate(usize),
    Literal,
}

fn hpack_walk(block: &[u8]) -> Vec<Rep> {
    fn int(b: &[u8], at: &mut usize, n: u8) -> usize {
        let max = (1usize << n) - 1;
        let mut v = (b[*at] as usize) & max;
        *at += 1;
        if v < max {
            return v;
        }
        let mut shift = 0;
        loop {
            let c = b[*at];
            *at += 1;
            v += ((c & 0x7f) as usize) << shift;
            shift += 7;
            if c & 0x80 == 0 {
                return v;
            }
        }
    }
    fn skip_str(b: &[u8], at: &mut usize) {
        let len = int(b, at, 7);
        *at += len;
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let first = block[at];
        if first & 0x80 != 0 {
            out.push(Rep::Indexed(int(block, &mut at, 7)));
        } else if first & 0xc0 == 0x40 {
            let name = int(block, &mut at, 6);
            if name == 0 {
                skip_str(block, &mut at);
            } else {
                out.push(Rep::NameIndex(name));
            }
            skip_str(block, &mut at);
            out.push(Rep::Indexing);
        } else if first & 0xe0 == 0x20 {
            out.push(Rep::SizeUpdate(int(block, &mut at, 5)));
        } else {
            let name = int(block, &mut at, 4);
            if name == 0 {
                skip_str(block, &mut at);
            } else {
                out.push(Rep::NameIndex(name));
            }
            skip_str(block, &mut at);
            out.push(Rep::Literal);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// §6.7 PING

/// §6.7: "Receivers of a PING frame that does not include an ACK flag MUST send a PING frame with the ACK flag set in response, with an identical frame payload."
#[tokio::test]
async fn s6_7_torii_answers_the_upstreams_ping() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.send(PING, 0, 0, b"\x01upstrm\xff").await;
    let f = loop {
        let f = peer.next("PING ACK").await.expect("lives");
        if f.kind == PING && f.has(ACK) {
            break f;
        }
    };
    assert_eq!(&f.payload[..], b"\x01upstrm\xff");
    peer.respond_ok(stream).await;
    ok(call, "after PING").await;
}

/// §6.7: "If a PING frame is received with a Stream Identifier field value other than 0x00, the recipient MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_7_ping_on_a_stream_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.send(PING, 0, stream, b"onstream").await;
    peer.connection_error(PROTOCOL_ERROR, "PING on a stream")
        .await;
    unavailable(call, "PING on a stream").await;
}

/// §6.7: "Receipt of a PING frame with a length field value other than 8 MUST be treated as a connection error of type FRAME_SIZE_ERROR."
#[tokio::test]
async fn s6_7_ping_of_wrong_length_is_frame_size_error() {
    let env = env().await;
    let (call, mut peer, _) = started(&env, &[]).await;
    peer.send(PING, 0, 0, b"nine byte").await;
    peer.connection_error(FRAME_SIZE_ERROR, "PING of 9 bytes")
        .await;
    unavailable(call, "bad PING").await;
}

// ---------------------------------------------------------------------------
// §6.8 GOAWAY

/// §6.8: "Receivers of a GOAWAY frame MUST NOT open additional streams on the connection" — and a request above the last stream id was not processed (§8.7), so it is sent again on a new connection.
#[tokio::test]
async fn s6_8_goaway_stops_new_streams_and_unprocessed_requests_are_retried() {
    let env = env().await;
    let (call, mut peer, _) = started(&env, &[]).await;
    let mut payload = 0u32.to_be_bytes().to_vec();
    payload.extend_from_slice(&NO_ERROR.to_be_bytes());
    peer.send(GOAWAY, 0, 0, &payload).await;
    // The retry comes on a new connection.
    let mut second = env.accept(&[]).await;
    let s = second.whole_request().await;
    second.respond_ok(s).await;
    ok(call, "the request retried after GOAWAY").await;
    // And the old connection got no new stream.
    let later = call_with(env.addr(), echo_request("later"));
    let s = second.whole_request().await;
    second.respond_ok(s).await;
    ok(later, "a later call").await;
    let payload = *b"old conn";
    peer.send(PING, 0, 0, &payload).await;
    while let Some(f) = peer.next("the old connection").await {
        assert!(
            f.kind != HEADERS,
            "a new stream after GOAWAY: {}",
            f.describe()
        );
        if f.kind == PING && f.has(ACK) {
            break;
        }
    }
}

/// §6.8: "An endpoint MUST treat a GOAWAY frame with a stream identifier other than 0x00 as a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_8_goaway_on_a_stream_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let mut payload = stream.to_be_bytes().to_vec();
    payload.extend_from_slice(&NO_ERROR.to_be_bytes());
    peer.send(GOAWAY, 0, stream, &payload).await;
    peer.connection_error(PROTOCOL_ERROR, "GOAWAY on a stream")
        .await;
    unavailable(call, "GOAWAY on a stream").await;
}

/// §6.8: streams up to the last stream id "might still complete successfully"; when the upstream then closes the connection, the client gets UNAVAILABLE, not a hang.
#[tokio::test]
async fn s6_8_goaway_then_close_fails_the_processed_stream_cleanly() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let mut payload = stream.to_be_bytes().to_vec();
    payload.extend_from_slice(&INTERNAL_ERROR.to_be_bytes());
    payload.extend_from_slice(b"going away");
    peer.send(GOAWAY, 0, 0, &payload).await;
    drop(peer);
    unavailable(call, "GOAWAY then close").await;
}

// ---------------------------------------------------------------------------
// §6.9 WINDOW_UPDATE and flow control

/// §6.9: "A receiver MUST treat the receipt of a WINDOW_UPDATE frame with a flow-control window increment of 0 as a stream error of type PROTOCOL_ERROR; errors on the connection flow-control window MUST be treated as a connection error".
#[tokio::test]
async fn s6_9_window_update_of_0_on_the_connection_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, _) = started(&env, &[]).await;
    peer.send(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()).await;
    peer.connection_error(PROTOCOL_ERROR, "WINDOW_UPDATE 0 on the connection")
        .await;
    unavailable(call, "WINDOW_UPDATE 0").await;
}

/// §6.9 (see above): on a stream.
#[tokio::test]
async fn s6_9_window_update_of_0_on_a_stream_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.send(WINDOW_UPDATE, 0, stream, &0u32.to_be_bytes())
        .await;
    peer.stream_error(stream, PROTOCOL_ERROR, "WINDOW_UPDATE 0 on a stream")
        .await;
    unavailable(call, "WINDOW_UPDATE 0 on the stream").await;
}

/// §6.9: "A WINDOW_UPDATE frame with a length other than 4 octets MUST be treated as a connection error of type FRAME_SIZE_ERROR."
#[tokio::test]
async fn s6_9_window_update_of_wrong_length_is_frame_size_error() {
    let env = env().await;
    let (call, mut peer, _) = started(&env, &[]).await;
    peer.send(WINDOW_UPDATE, 0, 0, &[0, 0, 1]).await;
    peer.connection_error(FRAME_SIZE_ERROR, "WINDOW_UPDATE of 3 bytes")
        .await;
    unavailable(call, "bad WINDOW_UPDATE").await;
}

/// §6.9.1: "If a sender receives a WINDOW_UPDATE that causes a flow-control window to exceed this maximum, it MUST terminate either the stream or the connection ... for the connection, a GOAWAY frame with an error code of FLOW_CONTROL_ERROR is sent."
#[tokio::test]
async fn s6_9_1_connection_window_overflow_is_flow_control_error() {
    let env = env().await;
    let (call, mut peer, _) = started(&env, &[]).await;
    peer.send(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes())
        .await;
    peer.connection_error(FLOW_CONTROL_ERROR, "connection window past 2^31-1")
        .await;
    unavailable(call, "window overflow").await;
}

/// §6.9.1 (see above): "For streams, the sender sends a RST_STREAM with an error code of FLOW_CONTROL_ERROR".
#[tokio::test]
async fn s6_9_1_stream_window_overflow_is_flow_control_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.send(WINDOW_UPDATE, 0, stream, &0x7fff_ffffu32.to_be_bytes())
        .await;
    peer.stream_error(stream, FLOW_CONTROL_ERROR, "stream window past 2^31-1")
        .await;
    unavailable(call, "stream window overflow").await;
}

/// §6.9.1: "The sender MUST NOT send a flow-controlled frame with a length that exceeds the space available in either of the flow-control windows advertised by the receiver." — torii's request body keeps to the upstream's window of 10, and goes on after WINDOW_UPDATE.
#[tokio::test]
async fn s6_9_1_torii_keeps_to_the_upstreams_stream_window() {
    let env = env().await;
    // A first call opens the connection and our SETTINGS take effect.
    let first = call(env.addr(), "first");
    let mut peer = env.accept(&[(SETTINGS_INITIAL_WINDOW_SIZE, 10)]).await;
    let s1 = peer.whole_request().await;
    peer.respond_ok(s1).await;
    ok(first, "first").await;
    while !peer.settings_acked {
        peer.next("the ACK").await.expect("lives");
    }
    let body = echo_request("a request body longer than ten bytes");
    let call = call_with(env.addr(), body.clone());
    let req = peer.request().await;
    let mut got = BytesMut::new();
    while got.len() < 10 {
        let f = peer.next("body within the window").await.expect("lives");
        assert!(f.kind != RST_STREAM && f.kind != GOAWAY, "{}", f.describe());
        if f.kind == DATA && f.stream == req.stream {
            got.extend_from_slice(&f.payload);
        }
    }
    assert_eq!(got.len(), 10, "exactly the window of 10");
    peer.nothing_more_on(req.stream, "a closed window").await;
    peer.send(WINDOW_UPDATE, 0, req.stream, &1000u32.to_be_bytes())
        .await;
    while got.len() < body.len() {
        let f = peer.next("the rest of the body").await.expect("lives");
        if f.kind == DATA && f.stream == req.stream {
            got.extend_from_slice(&f.payload);
        }
    }
    assert_eq!(&got[..], &body[..]);
    peer.respond_ok(req.stream).await;
    ok(call, "a windowed request").await;
}

/// §6.9.2: "A change to SETTINGS_INITIAL_WINDOW_SIZE can cause the available space in a flow-control window to become negative. A sender MUST track the negative flow-control window and MUST NOT send new flow-controlled frames until it receives WINDOW_UPDATE frames that cause the flow-control window to become positive." (torii as the sender of a streamed request body)
#[tokio::test]
async fn s6_9_2_negative_window_then_positive_lets_the_request_flow() {
    let env = env().await;
    // A client-streaming call whose body comes in two parts.
    let addr = env.addr();
    let (ctx, crx) = tokio::sync::oneshot::channel::<()>();
    let client = tokio::spawn(async move {
        let send = raw_h2(addr).await;
        let (response, mut stream) = raw_grpc_call(send, "localhost", UNARY).await;
        stream
            .send_data(Bytes::from_static(b"0123456789"), false)
            .unwrap();
        let _ = crx.await;
        stream
            .send_data(Bytes::from_static(b"abcdef"), true)
            .unwrap();
        let response = tokio::time::timeout(ANSWER_WITHIN, response)
            .await
            .expect("an answer in time")
            .expect("a response");
        let mut out = Outcome {
            status: Some(response.status().as_u16()),
            ..Default::default()
        };
        out.take(response.headers());
        let mut body = response.into_body();
        while let Some(Ok(c)) = body.data().await {
            out.data += c.len();
        }
        if let Ok(Some(t)) = body.trailers().await {
            out.take(&t);
        }
        out
    });
    let mut peer = env.accept(&[(SETTINGS_INITIAL_WINDOW_SIZE, 10)]).await;
    let req = peer.request().await;
    let mut got = BytesMut::new();
    while got.len() < 10 {
        let f = peer.next("the first 10 bytes").await.expect("lives");
        if f.kind == DATA && f.stream == req.stream {
            got.extend_from_slice(&f.payload);
        }
    }
    while !peer.settings_acked {
        peer.next("the ACK").await.expect("lives");
    }
    // Window 0 now; SETTINGS 4 makes it 4 - 10 = -6.
    peer.send(
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_INITIAL_WINDOW_SIZE, 4)]),
    )
    .await;
    let payload = *b"negative";
    peer.send(PING, 0, 0, &payload).await;
    loop {
        let f = peer.next("the SETTINGS applied").await.expect("lives");
        if f.kind == PING && f.has(ACK) && f.payload[..] == payload {
            break;
        }
    }
    let _ = ctx.send(());
    // +8: the window is 2; exactly 2 bytes may come.
    if let Some(f) = peer.r.next_within(QUIET).await {
        let f = f.expect("lives");
        assert!(
            f.kind != DATA || f.payload.is_empty(),
            "DATA on a negative window: {}",
            f.describe()
        );
    }
    peer.send(WINDOW_UPDATE, 0, req.stream, &8u32.to_be_bytes())
        .await;
    let f = loop {
        let f = peer.next("2 bytes").await.expect("lives");
        if f.kind == DATA && f.stream == req.stream {
            break f;
        }
        assert!(f.kind != RST_STREAM && f.kind != GOAWAY, "{}", f.describe());
    };
    assert_eq!(f.payload.len(), 2, "the window was 2: {}", f.describe());
    got.extend_from_slice(&f.payload);
    peer.send(WINDOW_UPDATE, 0, req.stream, &1000u32.to_be_bytes())
        .await;
    while got.len() < 16 {
        let f = peer.next("the rest").await.expect("lives");
        if f.kind == DATA && f.stream == req.stream {
            got.extend_from_slice(&f.payload);
        }
    }
    assert_eq!(&got[..], b"0123456789abcdef");
    peer.respond_ok(req.stream).await;
    let out = client.await.unwrap();
    assert_eq!(out.grpc_status.as_deref(), Some("0"), "{out:?}");
}

/// §6.9.2: "An endpoint MUST treat a change to SETTINGS_INITIAL_WINDOW_SIZE that causes any flow-control window to exceed the maximum size as a connection error of type FLOW_CONTROL_ERROR."
#[tokio::test]
async fn s6_9_2_initial_window_change_overflowing_a_stream_is_flow_control_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let base = 65_535u32;
    // The stream's window: base - what torii sent + this; then +delta.
    peer.send(
        WINDOW_UPDATE,
        0,
        stream,
        &(0x7fff_ffff - base).to_be_bytes(),
    )
    .await;
    peer.send(
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0x7fff_ffff)]),
    )
    .await;
    peer.connection_error(
        FLOW_CONTROL_ERROR,
        "INITIAL_WINDOW_SIZE pushing a stream past 2^31-1",
    )
    .await;
    unavailable(call, "window overflow by SETTINGS").await;
}

/// §6.9.1: "A receiver MAY respond with ... FLOW_CONTROL_ERROR" when the sender ignores its window — a response past torii's stream window (its client not reading yet) ends in FLOW_CONTROL_ERROR, and the client then gets an error, not a hang or a body that looks whole.
#[tokio::test]
async fn s6_9_1_response_beyond_torii_window_is_flow_control_error() {
    let env = env().await;
    let addr = env.addr();
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let client = tokio::spawn(async move {
        let send = raw_h2(addr).await;
        let (response, mut stream) = raw_grpc_call(send, "localhost", UNARY).await;
        stream.send_data(echo_request("no reading"), true).unwrap();
        let mut out = Outcome::default();
        let run = async {
            let response = response.await.map_err(|e| e.to_string())?;
            out.status = Some(response.status().as_u16());
            out.take(response.headers());
            // Reads nothing until the upstream has overrun the window.
            let _ = wait.await;
            let mut body = response.into_body();
            while let Some(chunk) = body.data().await {
                let c = chunk.map_err(|e| e.to_string())?;
                out.data += c.len();
                let _ = body.flow_control().release_capacity(c.len());
            }
            if let Some(t) = body.trailers().await.map_err(|e| e.to_string())? {
                out.take(&t);
            }
            Ok::<(), String>(())
        };
        match tokio::time::timeout(ANSWER_WITHIN, run).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => out.h2_error = Some(e),
            Err(_) => panic!("the client got no end within {ANSWER_WITHIN:?} (a hang)"),
        }
        out
    });
    let mut peer = env.accept(&[]).await;
    let stream = peer.whole_request().await;
    let window = peer.setting(SETTINGS_INITIAL_WINDOW_SIZE).unwrap_or(65_535) as usize;
    peer.head(stream, &ok_head(), false).await;
    // Twice the window and more, in frames of 16 KiB.
    let chunk = vec![0u8; MAX_FRAME];
    let mut out = BytesMut::new();
    let mut sent = 0;
    while sent < 2 * window + 4 * MAX_FRAME {
        frame(&mut out, DATA, 0, stream, &chunk);
        sent += chunk.len();
    }
    tokio::time::timeout(PATIENCE, peer.write(&out))
        .await
        .expect("torii reads what the upstream sends");
    peer.stream_or_connection_error(stream, FLOW_CONTROL_ERROR, "DATA past torii's window")
        .await;
    let _ = go.send(());
    let out = client.await.unwrap();
    eprintln!("client got: {out:?}");
    assert!(
        !out.is_ok() && (out.h2_error.is_some() || out.grpc_status.as_deref() != Some("0")),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------
// §6.10 CONTINUATION

/// §6.10: "If the END_HEADERS flag is not set, this frame MUST be followed by another CONTINUATION frame. A receiver MUST treat the receipt of any other type of frame or a frame on a different stream as a connection error of type PROTOCOL_ERROR." (DATA inside a response header block)
#[tokio::test]
async fn s6_10_data_inside_a_response_header_block_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let block = ok_head().0;
    let (a, b) = block.split_at(block.len() / 2);
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, 0, stream, a);
    frame(&mut out, DATA, 0, stream, &echo_reply("interleaved"));
    frame(&mut out, CONTINUATION, END_HEADERS, stream, b);
    peer.write(&out).await;
    peer.connection_error(PROTOCOL_ERROR, "DATA inside a header block")
        .await;
    unavailable(call, "interleaved CONTINUATION").await;
}

/// §6.10 (see above): a PING inside the block.
#[tokio::test]
async fn s6_10_ping_inside_a_response_header_block_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let block = ok_head().0;
    let (a, b) = block.split_at(block.len() / 2);
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, 0, stream, a);
    frame(&mut out, PING, 0, 0, b"inblock!");
    frame(&mut out, CONTINUATION, END_HEADERS, stream, b);
    peer.write(&out).await;
    peer.connection_error(PROTOCOL_ERROR, "PING inside a header block")
        .await;
    unavailable(call, "interleaved PING").await;
}

/// §6.10 (see above): the CONTINUATION on another stream.
#[tokio::test]
async fn s6_10_continuation_on_another_stream_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let block = ok_head().0;
    let (a, b) = block.split_at(block.len() / 2);
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, 0, stream, a);
    frame(&mut out, CONTINUATION, END_HEADERS, stream + 2, b);
    peer.write(&out).await;
    peer.connection_error(PROTOCOL_ERROR, "CONTINUATION on another stream")
        .await;
    unavailable(call, "CONTINUATION on another stream").await;
}

/// §6.10: "A CONTINUATION frame MUST be preceded by a HEADERS, PUSH_PROMISE or CONTINUATION frame without the END_HEADERS flag set. A recipient that observes violation of this rule MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_10_continuation_after_end_headers_is_protocol_error() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, END_HEADERS, stream, &ok_head().0);
    frame(
        &mut out,
        CONTINUATION,
        END_HEADERS,
        stream,
        &Block::default().field("x-more", "1").0,
    );
    peer.write(&out).await;
    peer.connection_error(PROTOCOL_ERROR, "CONTINUATION after END_HEADERS")
        .await;
    failed(call, "a stray CONTINUATION").await;
}

/// §6.10 / §4.3: a response head split over HEADERS and CONTINUATION frames (one empty) is one block.
#[tokio::test]
async fn s6_10_response_head_in_continuations_is_accepted() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let block = ok_head().field("x-long", vec![b'l'; 3000]).0;
    let parts: Vec<&[u8]> = block.chunks(1000).collect();
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, 0, stream, parts[0]);
    frame(&mut out, CONTINUATION, 0, stream, &[]);
    for (i, part) in parts[1..].iter().enumerate() {
        let last = i == parts.len() - 2;
        frame(
            &mut out,
            CONTINUATION,
            if last { END_HEADERS } else { 0 },
            stream,
            part,
        );
    }
    frame(&mut out, DATA, 0, stream, &echo_reply("split"));
    headers(&mut out, stream, &ok_trailers().0, true);
    peer.write(&out).await;
    ok(call, "a head in CONTINUATIONs").await;
}

// ---------------------------------------------------------------------------
// §8.1 message framing, §8.2 fields, §8.3 pseudo-headers: malformed responses

/// §8.2: "A request or response containing an uppercase character in a field name MUST be treated as malformed" and §8.1.1: "Intermediaries that process HTTP requests or responses ... MUST NOT forward a malformed request or response. Malformed requests or responses that are detected MUST be treated as a stream error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s8_2_uppercase_response_field_name_is_malformed() {
    malformed_head(ok_head().field("X-Upper", "1"), "uppercase name").await;
}

/// §8.2.1: "A field value MUST NOT contain the zero value (ASCII NUL, 0x00), line feed (ASCII LF, 0x0a), or carriage return (ASCII CR, 0x0d) at any position."
#[tokio::test]
async fn s8_2_1_crlf_in_a_response_value_is_malformed() {
    malformed_head(
        ok_head().raw_field(b"x-v", b"a\r\nset-cookie: x"),
        "CRLF in a value",
    )
    .await;
}

/// §8.2.1: "A field name MUST NOT contain characters in the ranges 0x00-0x20, 0x41-0x5a, or 0x7f-0xff".
#[tokio::test]
async fn s8_2_1_space_in_a_response_name_is_malformed() {
    malformed_head(ok_head().raw_field(b"x bad", b"1"), "space in a name").await;
}

/// §8.2.2: "Any message containing connection-specific header fields MUST be treated as malformed" (connection).
#[tokio::test]
async fn s8_2_2_connection_header_in_a_response_is_malformed() {
    malformed_head(ok_head().field("connection", "keep-alive"), "connection").await;
}

/// §8.2.2 (see above): transfer-encoding.
#[tokio::test]
async fn s8_2_2_transfer_encoding_in_a_response_is_malformed() {
    malformed_head(
        ok_head().field("transfer-encoding", "chunked"),
        "transfer-encoding",
    )
    .await;
}

/// §8.2.2 (see above): keep-alive, proxy-connection, upgrade.
#[tokio::test]
async fn s8_2_2_other_connection_specific_headers_in_a_response_are_malformed() {
    malformed_head(ok_head().field("keep-alive", "timeout=5"), "keep-alive").await;
    malformed_head(
        ok_head().field("proxy-connection", "close"),
        "proxy-connection",
    )
    .await;
    malformed_head(ok_head().field("upgrade", "h2c"), "upgrade").await;
}

/// §8.3: "All pseudo-header fields MUST appear in a field block before all regular field lines. Any request or response that contains a pseudo-header field that appears in a field block after a regular field line MUST be treated as malformed".
#[tokio::test]
async fn s8_3_pseudo_header_after_a_regular_field_in_a_response_is_malformed() {
    let block = Block::default()
        .field("content-type", "application/grpc")
        .field(":status", "200");
    malformed_head(block, ":status after content-type").await;
}

/// §8.3.2: "For HTTP/2 responses, a single ":status" pseudo-header field is defined ... This pseudo-header field MUST be included in all responses; otherwise, the response is malformed".
#[tokio::test]
async fn s8_3_2_response_without_status_is_malformed() {
    malformed_head(
        Block::default().field("content-type", "application/grpc"),
        "no :status",
    )
    .await;
}

/// §8.3.1/§8.3.2: "The same pseudo-header field name MUST NOT appear more than once in a field block ... [it] MUST be treated as malformed."
#[tokio::test]
async fn s8_3_duplicate_status_is_malformed() {
    malformed_head(ok_head().field(":status", "200"), "two :status").await;
}

/// §8.3: "Pseudo-header fields defined for requests MUST NOT appear in responses ... Endpoints MUST treat a request or response that contains undefined or invalid pseudo-header fields as malformed."
#[tokio::test]
async fn s8_3_request_pseudo_header_in_a_response_is_malformed() {
    malformed_head(ok_head().field(":path", "/"), ":path in a response").await;
}

/// §8.3 (see above): an undefined pseudo-header.
#[tokio::test]
async fn s8_3_unknown_pseudo_header_in_a_response_is_malformed() {
    let block = Block::default()
        .field(":status", "200")
        .field(":foo", "bar")
        .field("content-type", "application/grpc");
    malformed_head(block, ":foo").await;
}

/// §8.1: "Trailers MUST NOT include pseudo-header fields" (§8.3: "Pseudo-header fields MUST NOT appear in a trailer section").
#[tokio::test]
async fn s8_1_pseudo_header_in_response_trailers_is_malformed() {
    malformed_trailers(
        ok_trailers().field(":status", "200"),
        true,
        ":status in trailers",
    )
    .await;
}

/// §8.1: "An endpoint that receives a HEADERS frame without the END_STREAM flag set after receiving ... a final (non-informational) status code MUST treat the corresponding request or response as malformed".
#[tokio::test]
async fn s8_1_response_trailers_without_end_stream_are_malformed() {
    malformed_trailers(ok_trailers(), false, "trailers without END_STREAM").await;
}

/// §8.1: "A HEADERS frame with the END_STREAM flag set that carries an informational status code is malformed".
#[tokio::test]
async fn s8_1_informational_head_with_end_stream_is_malformed() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.head(stream, &Block::default().field(":status", "100"), true)
        .await;
    peer.stream_error(stream, PROTOCOL_ERROR, "100 with END_STREAM")
        .await;
    unavailable(call, "an informational END_STREAM").await;
}

/// §8.1: "A response ... consists of ... zero or more HEADERS frames ... containing the control data and header section of informational (1xx) HTTP responses" — a 100 before the final head is skipped and the call succeeds.
#[tokio::test]
async fn s8_1_informational_response_before_the_final_one_is_accepted() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.head(stream, &Block::default().field(":status", "100"), false)
        .await;
    peer.respond_ok(stream).await;
    ok(call, "100 then 200").await;
}

/// §8.1.1: "A request or response is also malformed if the value of a content-length header field does not equal the sum of the DATA frame payload lengths that form the content" (more DATA than content-length).
#[tokio::test]
async fn s8_1_1_response_longer_than_content_length_is_malformed() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let message = echo_reply("longer than announced");
    let mut out = BytesMut::new();
    headers(
        &mut out,
        stream,
        &ok_head().field("content-length", "5").0,
        false,
    );
    frame(&mut out, DATA, 0, stream, &message);
    headers(&mut out, stream, &ok_trailers().0, true);
    peer.write(&out).await;
    peer.stream_error(stream, PROTOCOL_ERROR, "DATA over content-length")
        .await;
    failed(call, "content-length mismatch").await;
}

/// §8.1.1 (see above): less DATA than content-length.
#[tokio::test]
async fn s8_1_1_response_shorter_than_content_length_is_malformed() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let message = echo_reply("short");
    let mut out = BytesMut::new();
    let cl = (message.len() + 10).to_string();
    headers(
        &mut out,
        stream,
        &ok_head().field("content-length", cl).0,
        false,
    );
    frame(&mut out, DATA, 0, stream, &message);
    headers(&mut out, stream, &ok_trailers().0, true);
    peer.write(&out).await;
    peer.stream_error(stream, PROTOCOL_ERROR, "DATA under content-length")
        .await;
    failed(call, "content-length mismatch").await;
}

/// §8.1.1 (see above): a content-length that is not a number.
#[tokio::test]
async fn s8_1_1_response_content_length_not_a_number_is_malformed() {
    malformed_head(
        ok_head().field("content-length", "12abc"),
        "content-length 12abc",
    )
    .await;
}

/// §8.1.1: a response with a matching content-length is passed on whole.
#[tokio::test]
async fn s8_1_1_response_matching_content_length_is_served() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    let message = echo_reply("exact");
    let mut out = BytesMut::new();
    let cl = message.len().to_string();
    headers(
        &mut out,
        stream,
        &ok_head().field("content-length", cl).0,
        false,
    );
    frame(&mut out, DATA, 0, stream, &message[..4]);
    frame(&mut out, DATA, 0, stream, &message[4..]);
    headers(&mut out, stream, &ok_trailers().0, true);
    peer.write(&out).await;
    let out = ok(call, "exact content-length").await;
    assert_eq!(out.data, message.len());
}

// ---------------------------------------------------------------------------
// Frames on streams the upstream closed (the cases h2spec's client suite,
// h2specd, found failing)

/// §6.1: "If a DATA frame is received whose stream is not in the "open" or "half-closed (local)" state, the recipient MUST respond with a stream error of type STREAM_CLOSED." — DATA after the upstream's own RST_STREAM (RFC 7540 §5.1: "An endpoint that receives any frame other than PRIORITY after receiving a RST_STREAM MUST treat that as a stream error of type STREAM_CLOSED").
#[tokio::test]
async fn s6_1_data_after_the_upstreams_rst_stream_is_stream_closed() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.send(RST_STREAM, 0, stream, &INTERNAL_ERROR.to_be_bytes())
        .await;
    unavailable(call, "the upstream's RST_STREAM").await;
    peer.send(DATA, 0, stream, &echo_reply("after reset")).await;
    peer.stream_or_connection_error(stream, STREAM_CLOSED, "DATA after RST_STREAM")
        .await;
}

/// RFC 9113 §5.1 closed: "An endpoint MAY treat receipt of any other type of frame on a closed stream as a connection error of type STREAM_CLOSED" (RFC 7540 §5.1 made it a MUST: "An endpoint that receives any frame other than PRIORITY after receiving a RST_STREAM MUST treat that as a stream error of type STREAM_CLOSED") — HEADERS after the upstream's RST_STREAM.
#[tokio::test]
async fn s5_1_headers_after_the_upstreams_rst_stream_is_stream_closed() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.send(RST_STREAM, 0, stream, &INTERNAL_ERROR.to_be_bytes())
        .await;
    unavailable(call, "the upstream's RST_STREAM").await;
    peer.head(stream, &ok_head(), true).await;
    peer.stream_or_connection_error(stream, STREAM_CLOSED, "HEADERS after RST_STREAM")
        .await;
}

/// RFC 9113 §5.1 closed (MAY) / RFC 7540 §5.1: "an endpoint that receives any frames after receiving a frame with the END_STREAM flag set MUST treat that as a connection error of type STREAM_CLOSED" — HEADERS on a finished response.
#[tokio::test]
async fn s5_1_headers_on_a_closed_stream_is_stream_closed() {
    let env = env().await;
    let (call, mut peer, stream) = started(&env, &[]).await;
    peer.respond_ok(stream).await;
    ok(call, "the response").await;
    peer.head(stream, &ok_head(), true).await;
    peer.stream_or_connection_error(stream, STREAM_CLOSED, "HEADERS on a closed stream")
        .await;
}

// ---------------------------------------------------------------------------
// §8.2.2 What torii sends upstream

/// §8.2.2: "An endpoint MUST NOT generate an HTTP/2 message containing connection-specific header fields. ... The only exception to this is the TE header field, which MAY be present in an HTTP/2 request; when it is, it MUST NOT contain any value other than "trailers"." — an HTTP/1.1 request full of them, forwarded over HTTP/2 (and RFC 9110 §7.6.1: the fields its Connection header names go too). The request block is read with torii's own HPACK decoder: what is checked here is the fields, not the encoding.
#[tokio::test]
async fn s8_2_2_torii_sends_no_connection_specific_fields_upstream() {
    let env = env().await;
    let addr = env.addr();
    let client = tokio::spawn(async move {
        let request = "POST /plain HTTP/1.1\r\nHost: localhost\r\nConnection: close, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip, trailers\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\nX-Kept: yes\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        raw_exchange(addr, request.as_bytes())
            .await
            .expect("HTTP/1.1 exchange")
    });
    let mut peer = env.accept(&[]).await;
    let req = peer.request().await;
    let body = peer.body(&req).await;
    let mut decoder = torii::http2::hpack::Decoder::new(4096);
    let mut fields: Vec<(String, String)> = Vec::new();
    decoder
        .decode(&req.block, 1 << 20, |f| {
            fields.push((
                String::from_utf8_lossy(f.name.as_bytes()).into_owned(),
                String::from_utf8_lossy(&f.value).into_owned(),
            ))
        })
        .expect("torii's request block decodes");
    eprintln!("torii sent upstream: {fields:?}");
    let mut out = BytesMut::new();
    headers(
        &mut out,
        req.stream,
        &Block::default()
            .field(":status", "200")
            .field("content-length", "3")
            .0,
        false,
    );
    frame(&mut out, DATA, END_STREAM, req.stream, b"ok\n");
    peer.write(&out).await;
    let answer = tokio::time::timeout(ANSWER_WITHIN, client)
        .await
        .expect("the HTTP/1.1 client is answered in time")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert_eq!(&body[..], b"hello", "the body, de-chunked");
    for (name, value) in &fields {
        assert!(
            ![
                "connection",
                "keep-alive",
                "proxy-connection",
                "transfer-encoding",
                "upgrade",
                "x-hop"
            ]
            .contains(&name.as_str()),
            "a connection-specific field went upstream: {name}: {value}"
        );
        assert!(name != "te" || value == "trailers", "te: {value}");
        assert_eq!(name, &name.to_lowercase(), "§8.2: names are lowercase");
    }
    let pseudo: Vec<&str> = fields
        .iter()
        .take_while(|(n, _)| n.starts_with(':'))
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(
        fields
            .iter()
            .skip(pseudo.len())
            .all(|(n, _)| !n.starts_with(':')),
        "§8.3: pseudo-headers first: {fields:?}"
    );
    for p in [":method", ":scheme", ":path", ":authority"] {
        assert_eq!(
            pseudo.iter().filter(|n| **n == p).count(),
            1,
            "§8.3.1: exactly one {p}: {fields:?}"
        );
    }
    assert!(
        fields.iter().any(|(n, v)| n == "x-kept" && v == "yes"),
        "{fields:?}"
    );
}

// ---------------------------------------------------------------------------
// A plain (non-gRPC) HTTP/2 client gets 502 with `x-torii-error`

/// A plain `GET /plain` through torii; the status and `x-torii-error`.
fn plain_call(addr: SocketAddr) -> JoinHandle<Outcome> {
    tokio::spawn(async move {
        let run = async {
            let mut out = Outcome::default();
            let send = raw_h2(addr).await;
            let request = http::Request::get(format!("http://{addr}/plain"))
                .body(())
                .expect("a valid request");
            let mut send = send.ready().await.expect("ready");
            let (response, _) = send.send_request(request, true).expect("send");
            match response.await {
                Ok(r) => {
                    out.status = Some(r.status().as_u16());
                    out.take(r.headers());
                }
                Err(e) => out.h2_error = Some(e.to_string()),
            }
            out
        };
        tokio::time::timeout(ANSWER_WITHIN, run)
            .await
            .unwrap_or_else(|_| panic!("no answer within {ANSWER_WITHIN:?} (a hang)"))
    })
}

async fn bad_gateway(call: JoinHandle<Outcome>, what: &str) {
    let out = outcome(call).await;
    assert!(
        out.status == Some(502) && out.torii_error.is_some(),
        "{what}: a plain client must get 502 with x-torii-error, got {out:?}"
    );
}

/// §8.1.1: "Malformed requests or responses that are detected MUST be treated as a stream error of type PROTOCOL_ERROR." — and an intermediary "MUST NOT forward" it: a plain client gets 502.
#[tokio::test]
async fn s8_1_1_malformed_response_to_a_plain_client_is_502() {
    let env = env().await;
    let call = plain_call(env.addr());
    let mut peer = env.accept(&[]).await;
    let stream = peer.whole_request().await;
    peer.head(
        stream,
        &Block::default().field(":status", "200").field("Upper", "1"),
        true,
    )
    .await;
    peer.stream_error(stream, PROTOCOL_ERROR, "an uppercase name")
        .await;
    bad_gateway(call, "a malformed response").await;
}

/// §4.3: "A decoding error in a field block MUST be treated as a connection error of type COMPRESSION_ERROR." — a plain client gets 502.
#[tokio::test]
async fn s4_3_bad_hpack_to_a_plain_client_is_502() {
    let env = env().await;
    let call = plain_call(env.addr());
    let mut peer = env.accept(&[]).await;
    let stream = peer.whole_request().await;
    peer.head(stream, &Block::default().raw(&[0x80]), true)
        .await;
    peer.connection_error(COMPRESSION_ERROR, "HPACK index 0")
        .await;
    bad_gateway(call, "bad HPACK").await;
}

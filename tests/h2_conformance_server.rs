//! HTTP/2 conformance of torii's client-facing server: one test per MUST of
//! RFC 9113 §3.4–§8 (and RFC 7541 for HPACK) that a server can be held to,
//! written with raw frames (tests/support/raw_h2.rs) against torii with an
//! echo backend behind it, over h2c and — for a set of them — over TLS.
//!
//! Each test is named after its section and carries the RFC's sentence.
//! It asserts the exact outcome: the GOAWAY code (and that the connection
//! then closes), or the RST_STREAM code on the right stream and that the
//! connection lives on, and that nothing else is sent where the RFC forbids
//! it. Waits are reads with a bounded timeout, never sleeps.
//!

mod proxy_support;
#[path = "support/raw_h2.rs"]
mod raw_h2;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;

use proxy_support::{start, Proxy};
use raw_h2::*;
use support::*;

const UNARY: &str = "/torii.echo.v1.Echo/Unary";
const SERVER_STREAM: &str = "/torii.echo.v1.Echo/ServerStream";
const CLIENT_STREAM: &str = "/torii.echo.v1.Echo/ClientStream";
/// Routed to an HTTP/1.1 backend answering every request with a JSON body
/// (a plain, non-gRPC response: DATA with END_STREAM, no trailers).
const PLAIN: &str = "/plain";

/// `GET /plain`: a request without body (END_STREAM on its HEADERS).
fn plain_get() -> Block {
    Block::default()
        .indexed(2)
        .indexed(6)
        .field(":path", PLAIN)
        .field(":authority", "localhost")
}

/// How long a test waits to see that nothing (more) arrives, after a PING
/// round trip has shown that the server processed what came before.
const QUIET: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tr {
    H2c,
    Tls,
}

/// torii with an echo backend behind it: listener `plain` (h2c) and `tls`.
struct Env {
    echo: EchoServer,
    _http1: BackendHandle,
    _proxy: Proxy,
    plain: SocketAddr,
    tls: SocketAddr,
    ca: String,
}

async fn env() -> Env {
    let echo = start_echo().await;
    let (http1, http1_handle) = spawn_http1_only().await;
    let dir = TempDir::new("h2-conformance");
    let pki = TestPki::new("h2 conformance CA");
    pki.server_cert(&["localhost"])
        .write_to(dir.path(), "server")
        .unwrap();
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - {{ match: {{ prefix: {PLAIN} }}, cluster: h1 }}
      - {{ cluster: up }}
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates: [{{ cert: server.crt, key: server.key }}]
    routes:
      - {{ match: {{ prefix: {PLAIN} }}, cluster: h1 }}
      - {{ cluster: up }}
clusters:
  - name: up
    endpoints: ["{}"]
    max_streams_per_connection: 500
  - name: h1
    endpoints: ["{http1}"]
    protocol: http1
"#,
        echo.addr
    );
    let proxy = start(&yaml, dir).await;
    Env {
        plain: proxy.addr("plain"),
        tls: proxy.addr("tls"),
        ca: pki.ca_cert_pem().to_string(),
        echo,
        _http1: http1_handle,
        _proxy: proxy,
    }
}

impl Env {
    /// The two halves of a new connection, nothing sent yet.
    async fn halves(&self, t: Tr) -> (ReadHalf, Writer) {
        match t {
            Tr::H2c => tcp_halves(self.plain).await,
            Tr::Tls => tls_halves(self.tls, &TlsClient::new(&self.ca)).await,
        }
    }

    /// A connection past the handshake, with our `settings`.
    async fn conn(&self, t: Tr, settings: &[(u16, u32)]) -> Conn {
        Conn::handshake(self.halves(t).await, settings).await
    }

    fn started(&self) -> u64 {
        self.echo.stats.started()
    }
}

/// A new environment and one connection with default settings.
async fn setup(t: Tr) -> (Env, Conn) {
    let env = env().await;
    let conn = env.conn(t, &[]).await;
    (env, conn)
}

fn echo_request(message: &str) -> bytes::Bytes {
    grpc_frame(&EchoRequest {
        message: message.into(),
        ..Default::default()
    })
}

/// A unary request whose answer takes `ms` (the stream stays half-closed
/// (remote) on torii meanwhile).
fn slow_request(ms: u32) -> bytes::Bytes {
    grpc_frame(&EchoRequest {
        message: "slow".into(),
        sleep_ms: ms,
        ..Default::default()
    })
}

/// A ServerStream request for `count` responses of `size` bytes.
fn stream_request(count: u32, size: u32) -> bytes::Bytes {
    grpc_frame(&EchoRequest {
        count,
        response_size: size,
        ..Default::default()
    })
}

/// A unary call on `stream` gets 200, its echo and trailers.
async fn assert_good_call(conn: &mut Conn, stream: u32) {
    conn.grpc_call(stream, UNARY, &echo_request("good")).await;
    assert_good_reply(conn, stream).await;
}

async fn assert_good_reply(conn: &mut Conn, stream: u32) {
    let mut reply = conn.reply(stream).await;
    assert_eq!(reply.end, End::Done, "a good call: {reply:?}");
    assert_eq!(reply.status, Some(Some(200)), "{reply:?}");
    assert!(reply.trailers, "grpc trailers: {reply:?}");
    let messages: Vec<EchoResponse> = take_grpc_frames(&mut reply.data);
    assert_eq!(messages.len(), 1, "one echo: {reply:?}");
}

/// The next frame, or None when the connection ended; panics with `what`
/// when nothing arrives within `PATIENCE`.
async fn next(conn: &mut Conn, what: &str) -> Option<Frame> {
    match conn.r.next_within(PATIENCE).await {
        Some(f) => f,
        None => panic!("{what}: nothing from torii within {PATIENCE:?} (a hang)"),
    }
}

/// A connection error (§5.4.1): GOAWAY with `code`, no RST_STREAM before
/// it, and then the connection closes ("After sending the GOAWAY frame for
/// an error condition, the endpoint MUST close the TCP connection").
async fn connection_error(conn: &mut Conn, code: u32, what: &str) {
    loop {
        let Some(f) = next(conn, what).await else {
            panic!(
                "{what}: the connection closed without GOAWAY({})",
                code_name(code)
            );
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
                "{what}: a connection error GOAWAY({}) expected, got {}",
                code_name(code),
                f.describe()
            ),
            _ => {}
        }
    }
    loop {
        match next(conn, what).await {
            None => return,
            Some(f) if f.kind == RST_STREAM || f.kind == GOAWAY => {
                panic!("{what}: {} after the GOAWAY", f.describe())
            }
            Some(_) => {}
        }
    }
}

/// The connection ends with GOAWAY(`code`) or — where the RFC lets the
/// GOAWAY be omitted — just closes.
async fn connection_error_or_close(conn: &mut Conn, code: u32, what: &str) {
    loop {
        match next(conn, what).await {
            None => return,
            Some(f) if f.kind == GOAWAY => {
                assert_eq!(f.code(), code, "{what}: {}", f.describe());
                return connection_error_rest(conn, what).await;
            }
            Some(f) if f.kind == RST_STREAM => panic!("{what}: {}", f.describe()),
            Some(_) => {}
        }
    }
}

async fn connection_error_rest(conn: &mut Conn, what: &str) {
    while let Some(f) = next(conn, what).await {
        assert!(
            f.kind != RST_STREAM && f.kind != GOAWAY,
            "{what}: {} after the GOAWAY",
            f.describe()
        );
    }
}

/// A stream error (§5.4.2): RST_STREAM with `code` on `stream` (a response
/// on that stream may come first), no GOAWAY, and the connection still
/// answers a PING.
async fn stream_error(conn: &mut Conn, stream: u32, code: u32, what: &str) {
    loop {
        let Some(f) = next(conn, what).await else {
            panic!(
                "{what}: the connection closed; RST_STREAM({}) on stream {stream} expected",
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
                "{what}: RST_STREAM({}) on stream {stream} expected, got {}",
                code_name(code),
                f.describe()
            ),
            _ => {}
        }
    }
    assert_alive(conn, what).await;
}

/// Either a stream error on `stream` or a connection error, with `code`.
async fn stream_or_connection_error(conn: &mut Conn, stream: u32, code: u32, what: &str) {
    loop {
        let Some(f) = next(conn, what).await else {
            panic!(
                "{what}: the connection closed; RST_STREAM or GOAWAY({}) expected",
                code_name(code)
            );
        };
        match f.kind {
            RST_STREAM if f.stream == stream => {
                assert_eq!(f.code(), code, "{what}: {}", f.describe());
                return assert_alive(conn, what).await;
            }
            GOAWAY => {
                assert_eq!(f.code(), code, "{what}: {}", f.describe());
                return connection_error_rest(conn, what).await;
            }
            RST_STREAM => panic!("{what}: {} (another stream)", f.describe()),
            _ => {}
        }
    }
}

/// A PING is answered, with no RST_STREAM or GOAWAY before its ACK.
async fn assert_alive(conn: &mut Conn, what: &str) {
    let payload = *b"alive?!!";
    conn.send(PING, 0, 0, &payload).await;
    loop {
        let Some(f) = next(conn, what).await else {
            panic!("{what}: the connection closed; it must live on");
        };
        match f.kind {
            PING if f.has(ACK) && f.payload[..] == payload => return,
            RST_STREAM | GOAWAY => panic!("{what}: unexpected {}", f.describe()),
            _ => {}
        }
    }
}

/// After a PING round trip, nothing at all arrives on `stream` (and no
/// GOAWAY) for [`QUIET`].
async fn nothing_more_on(conn: &mut Conn, stream: u32, what: &str) {
    let payload = *b"quiet?!!";
    conn.send(PING, 0, 0, &payload).await;
    let mut acked = false;
    loop {
        let f = if acked {
            match conn.r.next_within(QUIET).await {
                None => return,
                Some(f) => f,
            }
        } else {
            next(conn, what).await
        };
        let Some(f) = f else {
            panic!("{what}: the connection closed");
        };
        if f.kind == PING && f.has(ACK) && f.payload[..] == payload {
            acked = true;
            continue;
        }
        assert!(
            f.stream != stream && f.kind != GOAWAY,
            "{what}: nothing more may be sent on stream {stream}, got {}",
            f.describe()
        );
    }
}

/// A malformed request (§8.1.1): stream error PROTOCOL_ERROR, never
/// forwarded, and the connection goes on serving.
async fn malformed(block: Block, what: &str) {
    let (env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &block, true).await;
    stream_error(&mut conn, 1, PROTOCOL_ERROR, what).await;
    assert_good_call(&mut conn, 3).await;
    assert_eq!(
        env.started(),
        1,
        "{what}: a malformed request was forwarded"
    );
}

/// A well-formed gRPC request head without `te` (to add fields after).
fn grpc_head(path: &str) -> Block {
    Block::post()
        .field(":path", path)
        .field(":authority", "localhost")
        .field("content-type", "application/grpc")
}

// ---------------------------------------------------------------------------
// §3.4 HTTP/2 connection preface

/// §3.4: "Clients and servers MUST treat an invalid connection preface as a connection error of type PROTOCOL_ERROR. A GOAWAY frame MAY be omitted in this case".
async fn s3_4_invalid_preface(t: Tr) {
    let env = env().await;
    let mut conn = Conn::raw(env.halves(t).await);
    let mut out = BytesMut::from(&b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..]);
    frame(&mut out, SETTINGS, 0, 0, &[]);
    conn.write(&out).await;
    connection_error_or_close(&mut conn, PROTOCOL_ERROR, "invalid preface").await;
}

/// §3.4: "Clients and servers MUST treat an invalid connection preface as a connection error of type PROTOCOL_ERROR. A GOAWAY frame MAY be omitted in this case".
#[tokio::test]
async fn s3_4_invalid_preface_is_a_connection_error() {
    s3_4_invalid_preface(Tr::H2c).await;
}

/// §3.4: "Clients and servers MUST treat an invalid connection preface as a connection error of type PROTOCOL_ERROR. A GOAWAY frame MAY be omitted in this case". [over TLS]
#[tokio::test]
async fn s3_4_invalid_preface_is_a_connection_error_tls() {
    s3_4_invalid_preface(Tr::Tls).await;
}

/// §3.4: "Clients and servers MUST treat an invalid connection preface as a connection error of type PROTOCOL_ERROR." — after ALPN chose h2, bytes that are no preface at all (h2spec's case; on the h2c port, torii's protocol detection takes them for HTTP/1.x instead).
#[tokio::test]
async fn s3_4_garbage_after_alpn_h2_is_a_connection_error_tls() {
    let env = env().await;
    let mut conn = Conn::raw(env.halves(Tr::Tls).await);
    conn.write(b"INVALID CONNECTION PREFACE\r\n\r\n").await;
    connection_error_or_close(&mut conn, PROTOCOL_ERROR, "garbage preface over TLS").await;
}

/// §3.4: "This sequence MUST be followed by a SETTINGS frame ... Clients and servers MUST treat an invalid connection preface as a connection error of type PROTOCOL_ERROR".
#[tokio::test]
async fn s3_4_preface_not_followed_by_settings_is_protocol_error() {
    let env = env().await;
    let mut conn = Conn::raw(env.halves(Tr::H2c).await);
    let mut out = BytesMut::from(PREFACE);
    frame(&mut out, PING, 0, 0, b"12345678");
    conn.write(&out).await;
    connection_error_or_close(&mut conn, PROTOCOL_ERROR, "PING before SETTINGS").await;
}

/// §3.4: "The server connection preface consists of a potentially empty SETTINGS frame that MUST be the first frame the server sends in the HTTP/2 connection."
async fn s3_4_server_preface(t: Tr) {
    let env = env().await;
    let mut conn = Conn::raw(env.halves(t).await);
    let mut out = BytesMut::from(PREFACE);
    frame(&mut out, SETTINGS, 0, 0, &[]);
    conn.write(&out).await;
    let first = next(&mut conn, "server preface").await.expect("a frame");
    assert!(
        first.kind == SETTINGS && !first.has(ACK) && first.stream == 0,
        "the first frame must be a SETTINGS (not an ACK): {}",
        first.describe()
    );
}

/// §3.4: "The server connection preface consists of a potentially empty SETTINGS frame that MUST be the first frame the server sends in the HTTP/2 connection."
#[tokio::test]
async fn s3_4_server_preface_is_a_settings_frame_first() {
    s3_4_server_preface(Tr::H2c).await;
}

/// §3.4: "The server connection preface consists of a potentially empty SETTINGS frame that MUST be the first frame the server sends in the HTTP/2 connection." [over TLS]
#[tokio::test]
async fn s3_4_server_preface_is_a_settings_frame_first_tls() {
    s3_4_server_preface(Tr::Tls).await;
}

// ---------------------------------------------------------------------------
// §4.1 Frame format, §4.2 Frame size

/// §4.1: "Implementations MUST ignore and discard frames of unknown types."
#[tokio::test]
async fn s4_1_unknown_frame_type_is_ignored() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(0xfa, 0xff, 0, b"whatever").await;
    conn.send(0xfb, 0, 1, b"on an idle stream").await;
    assert_alive(&mut conn, "unknown frame types").await;
    assert_good_call(&mut conn, 1).await;
}

/// §4.1: "Flags that have no defined semantics for a particular frame type MUST be ignored".
#[tokio::test]
async fn s4_1_undefined_flags_are_ignored() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    // PING with every flag but ACK.
    conn.send(PING, 0xfe, 0, b"flags!!!").await;
    let ack = conn
        .r
        .until(|f| f.kind == PING)
        .await
        .expect("the connection lives");
    assert!(
        ack.has(ACK) && &ack.payload[..] == b"flags!!!",
        "{}",
        ack.describe()
    );
    // HEADERS and DATA with undefined flags (0x2, 0x10, 0x40, 0x80).
    let mut out = BytesMut::new();
    frame(
        &mut out,
        HEADERS,
        END_HEADERS | 0xd2,
        1,
        &Block::grpc(UNARY).0,
    );
    frame(
        &mut out,
        DATA,
        END_STREAM | 0xf6 & !PADDED,
        1,
        &echo_request("flags"),
    );
    conn.write(&out).await;
    assert_good_reply(&mut conn, 1).await;
}

/// §4.1: "Reserved: A reserved 1-bit field. The semantics of this bit are undefined, and the bit MUST remain unset (0x00) when sending and MUST be ignored when receiving."
#[tokio::test]
async fn s4_1_reserved_bit_is_ignored() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let mut out = BytesMut::new();
    frame(
        &mut out,
        HEADERS,
        END_HEADERS,
        0x8000_0001,
        &Block::grpc(UNARY).0,
    );
    frame(
        &mut out,
        DATA,
        END_STREAM,
        0x8000_0001,
        &echo_request("reserved"),
    );
    conn.write(&out).await;
    assert_good_reply(&mut conn, 1).await;
}

/// §4.2: "All implementations MUST be capable of receiving and minimally processing frames up to 2^14 octets in length".
#[tokio::test]
async fn s4_2_frames_of_16384_octets_are_received() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    // One gRPC message of exactly 16384 bytes, in one DATA frame.
    let message = (MAX_FRAME - 40..MAX_FRAME)
        .map(|n| {
            grpc_frame(&EchoRequest {
                message: "big".into(),
                payload: vec![7; n],
                ..Default::default()
            })
        })
        .find(|m| m.len() == MAX_FRAME)
        .expect("a payload size that makes a 16384-byte message");
    assert_eq!(message.len(), MAX_FRAME);
    let mut out = BytesMut::new();
    headers(&mut out, 1, &Block::grpc(UNARY).0, false);
    frame(&mut out, DATA, END_STREAM, 1, &message);
    conn.write(&out).await;
    assert_good_reply(&mut conn, 1).await;
}

/// §4.2: "An endpoint MUST send an error code of FRAME_SIZE_ERROR if a frame exceeds the size defined in SETTINGS_MAX_FRAME_SIZE".
#[tokio::test]
async fn s4_2_data_over_max_frame_size_is_frame_size_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(CLIENT_STREAM), false).await;
    conn.send(DATA, 0, 1, &vec![0; MAX_FRAME + 1]).await;
    stream_or_connection_error(&mut conn, 1, FRAME_SIZE_ERROR, "DATA of 16385").await;
}

/// §4.2: "A frame size error in a frame that could alter the state of the entire connection MUST be treated as a connection error; this includes any frame carrying a field block (Section 4.3) (that is, HEADERS, PUSH_PROMISE, and CONTINUATION), a SETTINGS frame, and any frame with a stream identifier of 0."
#[tokio::test]
async fn s4_2_headers_over_max_frame_size_is_a_connection_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let block = Block::grpc(UNARY).field("x-pad", vec![b'p'; MAX_FRAME]);
    conn.send(HEADERS, END_HEADERS | END_STREAM, 1, &block.0)
        .await;
    connection_error(&mut conn, FRAME_SIZE_ERROR, "HEADERS over 16384").await;
}

/// §4.2 (see above): a SETTINGS frame over the limit is a connection error.
#[tokio::test]
async fn s4_2_settings_over_max_frame_size_is_a_connection_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    // 2731 unknown settings: 16386 bytes.
    let payload = settings_payload(&vec![(0xf0, 1); 2731]);
    assert!(payload.len() > MAX_FRAME);
    conn.send(SETTINGS, 0, 0, &payload).await;
    connection_error(&mut conn, FRAME_SIZE_ERROR, "SETTINGS over 16384").await;
}

/// §4.2: "An endpoint MUST NOT send a frame larger than ... SETTINGS_MAX_FRAME_SIZE" (torii's responses).
#[tokio::test]
async fn s4_2_responses_respect_the_clients_max_frame_size() {
    let env = env().await;
    let mut conn = env
        .conn(Tr::H2c, &[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)])
        .await;
    conn.grpc_call(1, SERVER_STREAM, &stream_request(2, 100_000))
        .await;
    let mut total = 0;
    loop {
        let f = next(&mut conn, "a large response").await.expect("lives");
        assert!(
            f.payload.len() <= MAX_FRAME,
            "a frame over 16384: {}",
            f.describe()
        );
        if f.stream == 1 && f.kind == DATA {
            total += f.payload.len();
        }
        if f.stream == 1 && (f.has(END_STREAM) && (f.kind == DATA || f.kind == HEADERS)) {
            break;
        }
        assert!(f.kind != RST_STREAM && f.kind != GOAWAY, "{}", f.describe());
    }
    assert!(total > 200_000, "{total} bytes of DATA");
}

// ---------------------------------------------------------------------------
// §4.3 Field section compression (and RFC 7541)

/// §4.3: "A decoding error in a field block MUST be treated as a connection error of type COMPRESSION_ERROR." (RFC 7541 §6.1: "The index value of 0 is not used. It MUST be treated as a decoding error if found in an indexed header field representation.")
async fn s4_3_index_0(t: Tr) {
    let (env, mut conn) = setup(t).await;
    conn.headers(1, &Block::grpc(UNARY).raw(&[0x80]), true)
        .await;
    connection_error(&mut conn, COMPRESSION_ERROR, "HPACK index 0").await;
    assert_eq!(env.started(), 0);
}

/// §4.3: "A decoding error in a field block MUST be treated as a connection error of type COMPRESSION_ERROR." (RFC 7541 §6.1: "The index value of 0 is not used. It MUST be treated as a decoding error if found in an indexed header field representation.")
#[tokio::test]
async fn s4_3_hpack_index_0_is_compression_error() {
    s4_3_index_0(Tr::H2c).await;
}

/// §4.3: "A decoding error in a field block MUST be treated as a connection error of type COMPRESSION_ERROR." (RFC 7541 §6.1: "The index value of 0 is not used. It MUST be treated as a decoding error if found in an indexed header field representation.") [over TLS]
#[tokio::test]
async fn s4_3_hpack_index_0_is_compression_error_tls() {
    s4_3_index_0(Tr::Tls).await;
}

/// RFC 7541 §2.3.3: "Indices strictly greater than the sum of the lengths of both tables MUST be treated as a decoding error." (RFC 9113 §4.3: COMPRESSION_ERROR)
#[tokio::test]
async fn s4_3_hpack_index_out_of_range_is_compression_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(UNARY).indexed(70), true).await;
    connection_error(&mut conn, COMPRESSION_ERROR, "HPACK index 70 (empty table)").await;
}

/// RFC 7541 §2.3.3 (see above), for a literal's indexed name.
#[tokio::test]
async fn s4_3_hpack_name_index_out_of_range_is_compression_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(UNARY).indexed_name(200, "v"), true)
        .await;
    connection_error(&mut conn, COMPRESSION_ERROR, "HPACK name index 200").await;
}

/// RFC 7541 §6.3: "The new maximum size MUST be lower than or equal to the limit determined by the protocol using HPACK. A value that exceeds this limit MUST be treated as a decoding error."
#[tokio::test]
async fn s4_3_hpack_table_size_update_over_the_limit_is_compression_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let limit = conn
        .server_setting(SETTINGS_HEADER_TABLE_SIZE)
        .unwrap_or(4096) as usize;
    let block = Block::default()
        .size_update(limit + 1)
        .raw(&Block::grpc(UNARY).0);
    conn.headers(1, &block, true).await;
    connection_error(
        &mut conn,
        COMPRESSION_ERROR,
        "table size update over the limit",
    )
    .await;
}

/// RFC 7541 §4.2: "This dynamic table size update MUST occur at the beginning of the first header block following the change to the dynamic table size." (one after a field is a decoding error)
#[tokio::test]
async fn s4_3_hpack_table_size_update_after_a_field_is_compression_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(UNARY).size_update(0), true)
        .await;
    connection_error(
        &mut conn,
        COMPRESSION_ERROR,
        "size update at the end of a block",
    )
    .await;
}

/// RFC 7541 §5.2: "A padding strictly longer than 7 bits MUST be treated as a decoding error."
#[tokio::test]
async fn s4_3_huffman_padding_over_7_bits_is_compression_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    // 'a' (00011) then 11 one bits: 5 + 11 = 16 bits.
    let block = Block::grpc(UNARY).huffman_value("x-h", &[0x1f, 0xff]);
    conn.headers(1, &block, true).await;
    connection_error(&mut conn, COMPRESSION_ERROR, "Huffman padding of 11 bits").await;
}

/// RFC 7541 §5.2: "A padding not corresponding to the most significant bits of the code for the EOS symbol MUST be treated as a decoding error."
#[tokio::test]
async fn s4_3_huffman_padding_of_zeros_is_compression_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    // 'a' (00011) then 000.
    let block = Block::grpc(UNARY).huffman_value("x-h", &[0x18]);
    conn.headers(1, &block, true).await;
    connection_error(&mut conn, COMPRESSION_ERROR, "Huffman padding of zeros").await;
}

/// RFC 7541 §5.2: "A Huffman-encoded string literal containing the EOS symbol MUST be treated as a decoding error."
#[tokio::test]
async fn s4_3_huffman_eos_is_compression_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    // EOS is 30 one bits: 4 bytes of ones hold it (and 2 bits of padding).
    let block = Block::grpc(UNARY).huffman_value("x-h", &[0xff, 0xff, 0xff, 0xff]);
    conn.headers(1, &block, true).await;
    connection_error(&mut conn, COMPRESSION_ERROR, "Huffman EOS").await;
}

/// RFC 7541 §5.1: "Integer encodings that exceed implementation limits ... MUST be treated as decoding errors" (RFC 7541 §7.4 / RFC 9113 §4.3).
#[tokio::test]
async fn s4_3_hpack_integer_overflow_is_compression_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let block = Block::grpc(UNARY).raw(&[
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ]);
    conn.headers(1, &block, true).await;
    connection_error(&mut conn, COMPRESSION_ERROR, "an HPACK integer of 70 bits").await;
}

/// RFC 9113 §4.3: "A decoding error in a field block MUST be treated as a connection error of type COMPRESSION_ERROR." (a string longer than the block)
#[tokio::test]
async fn s4_3_hpack_truncated_string_is_compression_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let block = Block::grpc(UNARY).raw(&[0x00, 0x03, b'x', b'-', b'a', 0x7f, 0x10, b'v']);
    conn.headers(1, &block, true).await;
    connection_error(
        &mut conn,
        COMPRESSION_ERROR,
        "a string past the block's end",
    )
    .await;
}

/// §4.3: "Each field block is processed as a discrete unit. ... A receiver MUST ... [use] the dynamic table across field blocks": an entry added in one block is used by the next.
#[tokio::test]
async fn s4_3_dynamic_table_entries_carry_over_between_blocks() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let first = Block::post()
        .field_indexing(":path", UNARY)
        .field(":authority", "localhost")
        .field("content-type", "application/grpc")
        .field("te", "trailers");
    let mut out = BytesMut::new();
    headers(&mut out, 1, &first.0, false);
    frame(&mut out, DATA, END_STREAM, 1, &echo_request("one"));
    conn.write(&out).await;
    assert_good_reply(&mut conn, 1).await;
    let second = Block::post()
        .indexed(62)
        .field(":authority", "localhost")
        .field("content-type", "application/grpc")
        .field("te", "trailers");
    let mut out = BytesMut::new();
    headers(&mut out, 3, &second.0, false);
    frame(&mut out, DATA, END_STREAM, 3, &echo_request("two"));
    conn.write(&out).await;
    assert_good_reply(&mut conn, 3).await;
}

/// §4.3: "A receiver MUST terminate the connection with a connection error ... if it does not decompress a field block"; field blocks of streams it refuses still change the table: a refused request's entry is usable by the next.
#[tokio::test]
async fn s4_3_blocks_of_rejected_streams_still_update_the_table() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    // Malformed (no :path), but its literal with indexing must be kept.
    let bad = Block::post()
        .field(":authority", "localhost")
        .field_indexing("x-carried", "over")
        .field("content-type", "application/grpc");
    conn.headers(1, &bad, true).await;
    stream_error(&mut conn, 1, PROTOCOL_ERROR, "missing :path").await;
    let good = Block::grpc(UNARY).indexed(62);
    let mut out = BytesMut::new();
    headers(&mut out, 3, &good.0, false);
    frame(&mut out, DATA, END_STREAM, 3, &echo_request("two"));
    conn.write(&out).await;
    assert_good_reply(&mut conn, 3).await;
}

/// RFC 7541 §6.2.3: literal never-indexed fields are decoded like the others (and the request is served).
#[tokio::test]
async fn s4_3_hpack_every_literal_form_is_decoded() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let block = Block::default()
        .indexed(3) // :method POST
        .indexed_name(6, "http") // :scheme, indexed name
        .indexed_name_indexing(4, UNARY) // :path, indexed name, indexing
        .never_indexed(":authority", "localhost")
        .indexed_name(31, "application/grpc") // content-type
        .huffman_value("x-huff", &[0x1f]) // "a" in Huffman
        .field("te", "trailers");
    let mut out = BytesMut::new();
    headers(&mut out, 1, &block.0, false);
    frame(&mut out, DATA, END_STREAM, 1, &echo_request("forms"));
    conn.write(&out).await;
    assert_good_reply(&mut conn, 1).await;
}

// ---------------------------------------------------------------------------
// §5.1 Stream states

/// §5.1 idle: "Receiving any frame other than HEADERS or PRIORITY on a stream in this state MUST be treated as a connection error of type PROTOCOL_ERROR." (DATA)
#[tokio::test]
async fn s5_1_data_on_an_idle_stream_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(DATA, END_STREAM, 1, b"idle").await;
    connection_error(&mut conn, PROTOCOL_ERROR, "DATA on idle stream 1").await;
}

/// §5.1 idle (see above): RST_STREAM.
#[tokio::test]
async fn s5_1_rst_stream_on_an_idle_stream_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(RST_STREAM, 0, 1, &CANCEL.to_be_bytes()).await;
    connection_error(&mut conn, PROTOCOL_ERROR, "RST_STREAM on idle stream 1").await;
}

/// §5.1 idle (see above): WINDOW_UPDATE.
#[tokio::test]
async fn s5_1_window_update_on_an_idle_stream_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(WINDOW_UPDATE, 0, 1, &100u32.to_be_bytes()).await;
    connection_error(&mut conn, PROTOCOL_ERROR, "WINDOW_UPDATE on idle stream 1").await;
}

/// §5.1 idle (see above): CONTINUATION (without a HEADERS before it).
#[tokio::test]
async fn s5_1_continuation_on_an_idle_stream_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(CONTINUATION, END_HEADERS, 1, &Block::grpc(UNARY).0)
        .await;
    connection_error(&mut conn, PROTOCOL_ERROR, "CONTINUATION on idle stream 1").await;
}

/// §5.1 idle: PRIORITY is allowed on an idle stream, and the stream can still be opened.
#[tokio::test]
async fn s5_1_priority_on_an_idle_stream_is_allowed() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(PRIORITY_FRAME, 0, 1, &priority_payload(false, 0, 16))
        .await;
    conn.send(PRIORITY_FRAME, 0, 9, &priority_payload(false, 1, 16))
        .await;
    assert_alive(&mut conn, "PRIORITY on idle streams").await;
    assert_good_call(&mut conn, 1).await;
}

/// §5.1 half-closed (remote): "If an endpoint receives additional frames, other than WINDOW_UPDATE, PRIORITY, or RST_STREAM, for a stream that is in this state, it MUST respond with a stream error of type STREAM_CLOSED." (DATA; and §6.1)
async fn s5_1_data_half_closed(t: Tr) {
    let (_env, mut conn) = setup(t).await;
    conn.grpc_call(1, UNARY, &slow_request(30_000)).await;
    conn.send(DATA, END_STREAM, 1, &echo_request("late")).await;
    stream_or_connection_error(&mut conn, 1, STREAM_CLOSED, "DATA after END_STREAM").await;
}

/// §5.1 half-closed (remote): "If an endpoint receives additional frames, other than WINDOW_UPDATE, PRIORITY, or RST_STREAM, for a stream that is in this state, it MUST respond with a stream error of type STREAM_CLOSED." (DATA; and §6.1)
#[tokio::test]
async fn s5_1_data_on_a_half_closed_remote_stream_is_stream_closed() {
    s5_1_data_half_closed(Tr::H2c).await;
}

/// §5.1 half-closed (remote): "If an endpoint receives additional frames, other than WINDOW_UPDATE, PRIORITY, or RST_STREAM, for a stream that is in this state, it MUST respond with a stream error of type STREAM_CLOSED." (DATA; and §6.1) [over TLS]
#[tokio::test]
async fn s5_1_data_on_a_half_closed_remote_stream_is_stream_closed_tls() {
    s5_1_data_half_closed(Tr::Tls).await;
}

/// §5.1 half-closed (remote) (see above): HEADERS.
#[tokio::test]
async fn s5_1_headers_on_a_half_closed_remote_stream_is_stream_closed() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.grpc_call(1, UNARY, &slow_request(30_000)).await;
    conn.headers(1, &Block::default().field("x-late", "trailer"), true)
        .await;
    stream_or_connection_error(&mut conn, 1, STREAM_CLOSED, "HEADERS after END_STREAM").await;
}

/// §5.1 half-closed (remote): WINDOW_UPDATE, PRIORITY and RST_STREAM are allowed.
#[tokio::test]
async fn s5_1_window_update_and_priority_on_a_half_closed_remote_stream_are_allowed() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.grpc_call(1, UNARY, &slow_request(300)).await;
    conn.send(WINDOW_UPDATE, 0, 1, &1000u32.to_be_bytes()).await;
    conn.send(PRIORITY_FRAME, 0, 1, &priority_payload(false, 0, 200))
        .await;
    assert_alive(
        &mut conn,
        "WINDOW_UPDATE and PRIORITY on half-closed (remote)",
    )
    .await;
    assert_good_reply(&mut conn, 1).await;
}

/// §6.1: "If a DATA frame is received whose stream is not in the "open" or "half-closed (local)" state, the recipient MUST respond with a stream error of type STREAM_CLOSED." (a closed stream)
async fn s6_1_data_closed(t: Tr) {
    let (_env, mut conn) = setup(t).await;
    assert_good_call(&mut conn, 1).await;
    conn.send(DATA, END_STREAM, 1, &echo_request("late")).await;
    stream_or_connection_error(&mut conn, 1, STREAM_CLOSED, "DATA on a closed stream").await;
}

/// §6.1: "If a DATA frame is received whose stream is not in the "open" or "half-closed (local)" state, the recipient MUST respond with a stream error of type STREAM_CLOSED." (a closed stream)
#[tokio::test]
async fn s5_1_data_on_a_closed_stream_is_stream_closed() {
    s6_1_data_closed(Tr::H2c).await;
}

/// §6.1: "If a DATA frame is received whose stream is not in the "open" or "half-closed (local)" state, the recipient MUST respond with a stream error of type STREAM_CLOSED." (a closed stream) [over TLS]
#[tokio::test]
async fn s5_1_data_on_a_closed_stream_is_stream_closed_tls() {
    s6_1_data_closed(Tr::Tls).await;
}

/// §5.1 closed: "An endpoint that sends a RST_STREAM frame on a stream that is in the "open" or "half-closed (local)" state could receive any type of frame ... An endpoint MUST minimally process and then discard any frames it receives in this state" — and after the client's RST_STREAM, DATA is a stream error STREAM_CLOSED (§6.1), never a connection error.
#[tokio::test]
async fn s5_1_data_after_the_clients_rst_stream_is_stream_closed() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(CLIENT_STREAM), false).await;
    conn.send(RST_STREAM, 0, 1, &CANCEL.to_be_bytes()).await;
    conn.send(DATA, 0, 1, &echo_request("after reset")).await;
    // RST_STREAM(STREAM_CLOSED) is allowed, ignoring is not: §6.1.
    stream_error(
        &mut conn,
        1,
        STREAM_CLOSED,
        "DATA after the client's RST_STREAM",
    )
    .await;
}

/// HEADERS reusing closed stream `stream`: a stream error STREAM_CLOSED
/// or the §5.1.1 connection error (PROTOCOL_ERROR, or STREAM_CLOSED).
async fn headers_on_closed_stream_is_an_error(conn: &mut Conn, stream: u32, what: &str) {
    conn.grpc_call(stream, UNARY, &echo_request("again")).await;
    loop {
        let f = next(conn, what).await;
        let Some(f) = f else {
            panic!("{what}: closed without GOAWAY")
        };
        match f.kind {
            GOAWAY => {
                assert!(
                    f.code() == PROTOCOL_ERROR || f.code() == STREAM_CLOSED,
                    "{what}: {}",
                    f.describe()
                );
                return connection_error_rest(conn, what).await;
            }
            RST_STREAM if f.stream == stream && f.code() == CANCEL => {} // its first life
            RST_STREAM => {
                assert_eq!(
                    (f.stream, f.code()),
                    (stream, STREAM_CLOSED),
                    "{what}: {}",
                    f.describe()
                );
                return;
            }
            _ => {}
        }
    }
}

/// §5.1 closed: "An endpoint MUST NOT send frames other than PRIORITY on a closed stream" and §5.1.1: "The identifier of a newly established stream MUST be numerically greater than all streams that the initiating endpoint has opened ... An endpoint that receives an unexpected stream identifier MUST respond with a connection error of type PROTOCOL_ERROR." (HEADERS on a finished stream)
#[tokio::test]
async fn s5_1_headers_on_a_closed_stream_is_an_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    assert_good_call(&mut conn, 1).await;
    headers_on_closed_stream_is_an_error(&mut conn, 1, "HEADERS on finished stream 1").await;
}

/// §5.1 closed / §5.1.1 (see above): HEADERS on a stream the client reset.
#[tokio::test]
async fn s5_1_headers_after_the_clients_rst_stream_is_an_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(CLIENT_STREAM), false).await;
    conn.send(RST_STREAM, 0, 1, &CANCEL.to_be_bytes()).await;
    headers_on_closed_stream_is_an_error(&mut conn, 1, "HEADERS after RST_STREAM").await;
}

/// §5.1 closed: PRIORITY frames are allowed on a closed stream ("An endpoint MUST NOT send frames other than PRIORITY on a closed stream").
#[tokio::test]
async fn s5_1_priority_on_a_closed_stream_is_allowed() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    assert_good_call(&mut conn, 1).await;
    conn.send(PRIORITY_FRAME, 0, 1, &priority_payload(false, 0, 16))
        .await;
    nothing_more_on(&mut conn, 1, "PRIORITY on a closed stream").await;
    assert_good_call(&mut conn, 3).await;
}

/// §5.1: "WINDOW_UPDATE or RST_STREAM frames can be received in this state for a short period after a DATA or HEADERS frame containing an END_STREAM flag is sent" — they must not be errors.
#[tokio::test]
async fn s5_1_window_update_and_rst_stream_just_after_close_are_ignored() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    assert_good_call(&mut conn, 1).await;
    conn.send(WINDOW_UPDATE, 0, 1, &100u32.to_be_bytes()).await;
    conn.send(RST_STREAM, 0, 1, &CANCEL.to_be_bytes()).await;
    nothing_more_on(&mut conn, 1, "WINDOW_UPDATE/RST_STREAM after the end").await;
    assert_good_call(&mut conn, 3).await;
}

/// §5.1.1: "Streams initiated by a client MUST use odd-numbered stream identifiers ... An endpoint that receives an unexpected stream identifier MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s5_1_1_even_stream_id_is_protocol_error() {
    let (env, mut conn) = setup(Tr::H2c).await;
    conn.headers(2, &Block::grpc(UNARY), true).await;
    connection_error(&mut conn, PROTOCOL_ERROR, "HEADERS on stream 2").await;
    assert_eq!(env.started(), 0);
}

/// §5.1.1: "The identifier of a newly established stream MUST be numerically greater than all streams that the initiating endpoint has opened or reserved. ... An endpoint that receives an unexpected stream identifier MUST respond with a connection error of type PROTOCOL_ERROR."
async fn s5_1_1_lower(t: Tr) {
    let (_env, mut conn) = setup(t).await;
    conn.grpc_call(5, UNARY, &slow_request(30_000)).await;
    conn.grpc_call(3, UNARY, &echo_request("lower")).await;
    connection_error(&mut conn, PROTOCOL_ERROR, "HEADERS on stream 3 after 5").await;
}

/// §5.1.1: "The identifier of a newly established stream MUST be numerically greater than all streams that the initiating endpoint has opened or reserved. ... An endpoint that receives an unexpected stream identifier MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s5_1_1_lower_stream_id_is_connection_error() {
    s5_1_1_lower(Tr::H2c).await;
}

/// §5.1.1: "The identifier of a newly established stream MUST be numerically greater than all streams that the initiating endpoint has opened or reserved. ... An endpoint that receives an unexpected stream identifier MUST respond with a connection error of type PROTOCOL_ERROR." [over TLS]
#[tokio::test]
async fn s5_1_1_lower_stream_id_is_connection_error_tls() {
    s5_1_1_lower(Tr::Tls).await;
}

/// §5.1.1: "The first use of a new stream identifier implicitly closes all streams in the "idle" state that might have been initiated by that peer with a lower-valued stream identifier." (DATA on a skipped id is then on a closed stream: §6.1 STREAM_CLOSED, or the §5.1.1 connection error.)
#[tokio::test]
async fn s5_1_1_skipped_stream_ids_are_closed() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    assert_good_call(&mut conn, 5).await;
    conn.send(DATA, END_STREAM, 3, b"skipped").await;
    loop {
        let f = next(&mut conn, "DATA on skipped stream 3").await;
        let Some(f) = f else {
            panic!("closed without GOAWAY")
        };
        match f.kind {
            GOAWAY => {
                assert!(
                    f.code() == PROTOCOL_ERROR || f.code() == STREAM_CLOSED,
                    "{}",
                    f.describe()
                );
                return;
            }
            RST_STREAM => {
                assert_eq!((f.stream, f.code()), (3, STREAM_CLOSED), "{}", f.describe());
                return;
            }
            _ => {}
        }
    }
}

/// §5.1.2: "An endpoint that receives a HEADERS frame that causes its advertised concurrent stream limit to be exceeded MUST treat this as a stream error of type PROTOCOL_ERROR or REFUSED_STREAM." — all requests at once, the client's window 0 keeps every response open; only the stream over the limit is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_1_2_stream_over_max_concurrent_streams_is_refused() {
    let env = env().await;
    let mut conn = env
        .conn(Tr::H2c, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)])
        .await;
    let max = conn
        .server_setting(SETTINGS_MAX_CONCURRENT_STREAMS)
        .expect("torii announces SETTINGS_MAX_CONCURRENT_STREAMS");
    let block = Block::grpc(UNARY).0;
    let request = echo_request("many");
    let mut out = BytesMut::new();
    for i in 0..=max {
        headers(&mut out, 2 * i + 1, &block, false);
        frame(&mut out, DATA, END_STREAM, 2 * i + 1, &request);
    }
    conn.write(&out).await;
    let extra = 2 * max + 1;
    let f = conn
        .r
        .until(|f| f.kind == RST_STREAM || f.kind == GOAWAY)
        .await
        .expect("the connection lives");
    assert!(
        f.kind == RST_STREAM
            && f.stream == extra
            && (f.code() == REFUSED_STREAM || f.code() == PROTOCOL_ERROR),
        "only stream {extra} is refused: {}",
        f.describe()
    );
}

/// §5.1.2 (see above), as h2spec 5.1.2 runs it: the limit's worth of plain GET requests, their response heads back (bodies held by the client's window of 0, so every stream stays open), then one more — it must be refused, and none of the open ones reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_1_2_stream_over_the_limit_is_refused_while_responses_wait() {
    let env = env().await;
    let mut conn = env.conn(Tr::H2c, &[]).await;
    conn.send(
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]),
    )
    .await;
    let max = conn
        .server_setting(SETTINGS_MAX_CONCURRENT_STREAMS)
        .expect("torii announces SETTINGS_MAX_CONCURRENT_STREAMS");
    let block = plain_get().0;
    let mut out = BytesMut::new();
    for i in 0..max {
        headers(&mut out, 2 * i + 1, &block, true);
    }
    conn.write(&out).await;
    let mut heads = 0;
    while heads < max {
        let f = next(&mut conn, "response heads").await.expect("lives");
        match f.kind {
            HEADERS => heads += 1,
            RST_STREAM | GOAWAY => panic!(
                "after {heads} response heads, an open stream was ended: {}",
                f.describe()
            ),
            _ => {}
        }
    }
    let extra = 2 * max + 1;
    conn.headers(extra, &plain_get(), true).await;
    let f = conn
        .r
        .until(|f| f.kind == RST_STREAM || f.kind == GOAWAY)
        .await
        .expect("the connection lives");
    assert!(
        f.kind == RST_STREAM
            && f.stream == extra
            && (f.code() == REFUSED_STREAM || f.code() == PROTOCOL_ERROR),
        "only stream {extra} is refused: {}",
        f.describe()
    );
}

/// §5.1.2: "Endpoints MUST NOT exceed the limit set by their peer." torii announces a limit (it must, to be able to refuse): SETTINGS_MAX_CONCURRENT_STREAMS is sent and not 0.
#[tokio::test]
async fn s5_1_2_torii_announces_max_concurrent_streams() {
    let (_env, conn) = setup(Tr::H2c).await;
    let max = conn.server_setting(SETTINGS_MAX_CONCURRENT_STREAMS);
    assert!(matches!(max, Some(n) if n >= 100), "{max:?}");
}

// ---------------------------------------------------------------------------
// §5.3 Priority, §5.5 Extending HTTP/2

/// §5.3.1: "A stream cannot depend on itself. An endpoint MUST treat this as a stream error of type PROTOCOL_ERROR." (HEADERS)
#[tokio::test]
async fn s5_3_1_headers_depending_on_itself_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let mut payload = priority_payload(false, 1, 16).to_vec();
    payload.extend_from_slice(&Block::grpc(UNARY).0);
    conn.send(HEADERS, END_HEADERS | END_STREAM | PRIORITY, 1, &payload)
        .await;
    stream_error(&mut conn, 1, PROTOCOL_ERROR, "HEADERS depending on itself").await;
}

/// §5.3.1 (see above): a PRIORITY frame making a stream depend on itself. On an idle stream no RST_STREAM may be sent (§6.4), so the connection error is the way out.
#[tokio::test]
async fn s5_3_1_priority_depending_on_itself_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(CLIENT_STREAM), false).await;
    conn.send(PRIORITY_FRAME, 0, 1, &priority_payload(false, 1, 16))
        .await;
    stream_or_connection_error(&mut conn, 1, PROTOCOL_ERROR, "PRIORITY on itself").await;
}

/// §5.5: "Implementations MUST discard frames that have unknown or unsupported types. ... extension frames that appear in the middle of a field block ... MUST be treated as a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s5_5_unknown_frame_inside_a_header_block_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let block = Block::grpc(UNARY).0;
    let (a, b) = block.split_at(block.len() / 2);
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, END_STREAM, 1, a);
    frame(&mut out, 0xfa, 0, 1, b"extension");
    frame(&mut out, CONTINUATION, END_HEADERS, 1, b);
    conn.write(&out).await;
    connection_error(
        &mut conn,
        PROTOCOL_ERROR,
        "an unknown frame inside a header block",
    )
    .await;
}

// ---------------------------------------------------------------------------
// §6.1 DATA

/// §6.1: "If a DATA frame is received whose Stream Identifier field is 0x00, the recipient MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_1_data_on_stream_0_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(DATA, 0, 0, b"zero").await;
    connection_error(&mut conn, PROTOCOL_ERROR, "DATA on stream 0").await;
}

/// §6.1: "If the length of the padding is the length of the frame payload or greater, the recipient MUST treat this as a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_1_data_padding_too_long_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(CLIENT_STREAM), false).await;
    // Pad length 5 in a payload of 5 (1 + 4 bytes).
    conn.send(DATA, PADDED, 1, &[5, 0, 0, 0, 0]).await;
    connection_error(
        &mut conn,
        PROTOCOL_ERROR,
        "DATA padding of the whole payload",
    )
    .await;
}

/// §6.1: padded DATA is accepted; "The entire DATA frame payload is included in flow control, including the Pad Length and Padding fields if present."
async fn s6_1_padded(t: Tr) {
    let (_env, mut conn) = setup(t).await;
    let mut out = BytesMut::new();
    headers(&mut out, 1, &Block::grpc(UNARY).0, false);
    padded_frame(&mut out, DATA, END_STREAM, 1, &echo_request("padded"), 200);
    conn.write(&out).await;
    assert_good_reply(&mut conn, 1).await;
}

/// §6.1: padded DATA is accepted; "The entire DATA frame payload is included in flow control, including the Pad Length and Padding fields if present."
#[tokio::test]
async fn s6_1_padded_data_is_accepted() {
    s6_1_padded(Tr::H2c).await;
}

/// §6.1: padded DATA is accepted; "The entire DATA frame payload is included in flow control, including the Pad Length and Padding fields if present." [over TLS]
#[tokio::test]
async fn s6_1_padded_data_is_accepted_tls() {
    s6_1_padded(Tr::Tls).await;
}

// ---------------------------------------------------------------------------
// §6.2 HEADERS

/// §6.2: "If a HEADERS frame is received whose Stream Identifier field is 0x00, the recipient MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_2_headers_on_stream_0_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(0, &Block::grpc(UNARY), true).await;
    connection_error(&mut conn, PROTOCOL_ERROR, "HEADERS on stream 0").await;
}

/// §6.2: "Padding that exceeds the size remaining for the field block fragment MUST be treated as a PROTOCOL_ERROR."
#[tokio::test]
async fn s6_2_headers_padding_too_long_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let block = Block::grpc(UNARY).0;
    let mut payload = vec![(block.len() + 1).min(255) as u8];
    payload.extend_from_slice(&block);
    conn.send(HEADERS, PADDED | END_HEADERS | END_STREAM, 1, &payload)
        .await;
    connection_error(&mut conn, PROTOCOL_ERROR, "HEADERS padding past the block").await;
}

/// §6.2: HEADERS with padding and priority fields (PADDED, PRIORITY flags) are read correctly.
#[tokio::test]
async fn s6_2_headers_with_padding_and_priority_are_accepted() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let mut payload = priority_payload(true, 0, 255).to_vec();
    payload.extend_from_slice(&Block::grpc(UNARY).0);
    let mut out = BytesMut::new();
    padded_frame(&mut out, HEADERS, END_HEADERS | PRIORITY, 1, &payload, 17);
    frame(&mut out, DATA, END_STREAM, 1, &echo_request("prio"));
    conn.write(&out).await;
    assert_good_reply(&mut conn, 1).await;
}

// ---------------------------------------------------------------------------
// §6.3 PRIORITY

/// §6.3: "If a PRIORITY frame is received with a stream identifier of 0x00, the recipient MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_3_priority_on_stream_0_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(PRIORITY_FRAME, 0, 0, &priority_payload(false, 1, 16))
        .await;
    connection_error(&mut conn, PROTOCOL_ERROR, "PRIORITY on stream 0").await;
}

/// §6.3: "A PRIORITY frame with a length other than 5 octets MUST be treated as a stream error of type FRAME_SIZE_ERROR." — and §5.4.2/§6.4: once reset, nothing more is sent on the stream.
#[tokio::test]
async fn s6_3_priority_of_wrong_length_resets_the_open_stream() {
    let (env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(UNARY), false).await;
    conn.send(PRIORITY_FRAME, 0, 1, &[0, 0, 0, 0]).await;
    stream_error(&mut conn, 1, FRAME_SIZE_ERROR, "PRIORITY of 4 bytes").await;
    // The request body the stream was waiting for: it must not revive it.
    conn.send(DATA, END_STREAM, 1, &echo_request("after")).await;
    let _ = env.echo.stats.wait_for(QUIET, |s| s.completed > 0).await;
    nothing_more_on_but_stream_closed(&mut conn, 1).await;
}

/// After a stream was reset by torii: only a RST_STREAM(STREAM_CLOSED) for
/// late frames may follow on it, no HEADERS or DATA.
async fn nothing_more_on_but_stream_closed(conn: &mut Conn, stream: u32) {
    let payload = *b"nomore!!";
    conn.send(PING, 0, 0, &payload).await;
    let mut acked = false;
    loop {
        let f = if acked {
            match conn.r.next_within(QUIET).await {
                None => return,
                Some(f) => f,
            }
        } else {
            next(conn, "after a reset").await
        };
        let Some(f) = f else {
            panic!("the connection closed")
        };
        if f.kind == PING && f.has(ACK) && f.payload[..] == payload {
            acked = true;
            continue;
        }
        assert!(
            f.stream != stream || (f.kind == RST_STREAM && f.code() == STREAM_CLOSED),
            "a frame on stream {stream} after torii reset it: {}",
            f.describe()
        );
    }
}

/// §6.4: "RST_STREAM frames MUST NOT be sent for a stream in the "idle" state." — a PRIORITY of a wrong length on an idle stream (§6.3's stream error) must not be answered with RST_STREAM.
#[tokio::test]
async fn s6_4_priority_of_wrong_length_on_an_idle_stream_never_gets_rst_stream() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(PRIORITY_FRAME, 0, 3, &[0, 0]).await;
    conn.send(PRIORITY_FRAME, 0, 8, &[0, 0]).await;
    let payload = *b"idle?!!!";
    conn.send(PING, 0, 0, &payload).await;
    loop {
        let Some(f) = next(&mut conn, "PRIORITY of 2 bytes on idle streams").await else {
            return; // closing the connection is allowed
        };
        match f.kind {
            RST_STREAM => panic!("RST_STREAM for an idle stream: {}", f.describe()),
            GOAWAY => {
                assert!(
                    f.code() == FRAME_SIZE_ERROR || f.code() == PROTOCOL_ERROR,
                    "{}",
                    f.describe()
                );
                return;
            }
            PING if f.has(ACK) && f.payload[..] == payload => return,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// §6.4 RST_STREAM

/// §6.4: "If a RST_STREAM frame is received with a stream identifier of 0x0, the recipient MUST treat this as a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_4_rst_stream_on_stream_0_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(RST_STREAM, 0, 0, &CANCEL.to_be_bytes()).await;
    connection_error(&mut conn, PROTOCOL_ERROR, "RST_STREAM on stream 0").await;
}

/// §6.4: "A RST_STREAM frame with a length other than 4 octets MUST be treated as a connection error of type FRAME_SIZE_ERROR."
#[tokio::test]
async fn s6_4_rst_stream_of_wrong_length_is_frame_size_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(CLIENT_STREAM), false).await;
    conn.send(RST_STREAM, 0, 1, &[0, 0, 0, 8, 0]).await;
    connection_error(&mut conn, FRAME_SIZE_ERROR, "RST_STREAM of 5 bytes").await;
}

/// §6.4: "After receiving a RST_STREAM on a stream, the receiver MUST NOT send additional frames for that stream, except for PRIORITY."
#[tokio::test]
async fn s6_4_nothing_is_sent_on_a_stream_the_client_reset() {
    let (env, mut conn) = setup(Tr::H2c).await;
    conn.grpc_call(1, UNARY, &slow_request(300)).await;
    // The call reached the backend; then the client resets it.
    env.echo
        .stats
        .wait_for(PATIENCE, |s| s.started == 1)
        .await
        .expect("the call reaches the backend");
    conn.send(RST_STREAM, 0, 1, &CANCEL.to_be_bytes()).await;
    env.echo
        .stats
        .wait_for(PATIENCE, |s| s.cancelled + s.completed == 1)
        .await
        .expect("the backend's call ends");
    let mut seen = Vec::new();
    // Frames torii had written before it read the RST_STREAM are allowed;
    // after a PING round trip nothing more.
    let payload = *b"afterrst";
    conn.send(PING, 0, 0, &payload).await;
    while let Some(f) = next(&mut conn, "after RST_STREAM").await {
        if f.kind == PING && f.has(ACK) && f.payload[..] == payload {
            break;
        }
        assert!(f.kind != GOAWAY, "{}", f.describe());
        seen.push(f);
    }
    nothing_more_on(&mut conn, 1, "a stream the client reset").await;
    for f in seen.iter().filter(|f| f.stream == 1) {
        assert!(
            f.kind != RST_STREAM,
            "no RST_STREAM in answer to RST_STREAM (§5.4.2): {}",
            f.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// §6.5 SETTINGS

/// §6.5: "Receipt of a SETTINGS frame with the ACK flag set and a length field value other than 0 MUST be treated as a connection error of type FRAME_SIZE_ERROR."
#[tokio::test]
async fn s6_5_settings_ack_with_payload_is_frame_size_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(
        SETTINGS,
        ACK,
        0,
        &settings_payload(&[(SETTINGS_ENABLE_PUSH, 0)]),
    )
    .await;
    connection_error(&mut conn, FRAME_SIZE_ERROR, "SETTINGS ACK with a payload").await;
}

/// §6.5: "If an endpoint receives a SETTINGS frame whose Stream Identifier field is anything other than 0x00, the endpoint MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_5_settings_on_a_stream_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(SETTINGS, 0, 1, &[]).await;
    connection_error(&mut conn, PROTOCOL_ERROR, "SETTINGS on stream 1").await;
}

/// §6.5: "A SETTINGS frame with a length other than a multiple of 6 octets MUST be treated as a connection error of type FRAME_SIZE_ERROR."
#[tokio::test]
async fn s6_5_settings_of_bad_length_is_frame_size_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(SETTINGS, 0, 0, &[0, 3, 0, 0, 0]).await;
    connection_error(&mut conn, FRAME_SIZE_ERROR, "SETTINGS of 5 bytes").await;
}

/// §6.5.2: SETTINGS_ENABLE_PUSH: "Any value other than 0 or 1 MUST be treated as a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_5_2_enable_push_above_1_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_ENABLE_PUSH, 2)]),
    )
    .await;
    connection_error(&mut conn, PROTOCOL_ERROR, "ENABLE_PUSH 2").await;
}

/// §6.5.2: SETTINGS_INITIAL_WINDOW_SIZE: "Values above the maximum flow-control window size of 2^31-1 MUST be treated as a connection error of type FLOW_CONTROL_ERROR."
#[tokio::test]
async fn s6_5_2_initial_window_size_above_max_is_flow_control_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 31)]),
    )
    .await;
    connection_error(&mut conn, FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE 2^31").await;
}

/// §6.5.2: SETTINGS_MAX_FRAME_SIZE: "Values outside this range MUST be treated as a connection error of type PROTOCOL_ERROR." (below 2^14)
#[tokio::test]
async fn s6_5_2_max_frame_size_below_16384_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_MAX_FRAME_SIZE, 16_383)]),
    )
    .await;
    connection_error(&mut conn, PROTOCOL_ERROR, "MAX_FRAME_SIZE 16383").await;
}

/// §6.5.2 (see above): above 2^24-1.
#[tokio::test]
async fn s6_5_2_max_frame_size_above_max_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_MAX_FRAME_SIZE, 1 << 24)]),
    )
    .await;
    connection_error(&mut conn, PROTOCOL_ERROR, "MAX_FRAME_SIZE 2^24").await;
}

/// §6.5.2: "An endpoint that receives a SETTINGS frame with any unknown or unsupported identifier MUST ignore that setting."
#[tokio::test]
async fn s6_5_2_unknown_settings_are_ignored() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(
        SETTINGS,
        0,
        0,
        &settings_payload(&[(0xff, 1), (0x4242, 0xffff_ffff)]),
    )
    .await;
    let ack = conn
        .r
        .until(|f| f.kind == SETTINGS || f.kind == GOAWAY)
        .await;
    assert!(
        matches!(&ack, Some(f) if f.kind == SETTINGS && f.has(ACK)),
        "{ack:?}"
    );
    assert_good_call(&mut conn, 1).await;
}

/// §6.5.2: SETTINGS_ENABLE_PUSH: "A server MUST NOT explicitly set this value to 1."
#[tokio::test]
async fn s6_5_2_server_never_enables_push() {
    let (_env, conn) = setup(Tr::H2c).await;
    assert_ne!(conn.server_setting(SETTINGS_ENABLE_PUSH), Some(1));
}

/// §6.5.3: "Upon receiving a SETTINGS frame with the ACK flag not set, the recipient MUST ... immediately emit a SETTINGS frame with the ACK flag set" (one ACK per SETTINGS, in order).
#[tokio::test]
async fn s6_5_3_every_settings_frame_is_acknowledged() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let mut out = BytesMut::new();
    for _ in 0..3 {
        frame(
            &mut out,
            SETTINGS,
            0,
            0,
            &settings_payload(&[(SETTINGS_MAX_FRAME_SIZE, 16_384)]),
        );
    }
    frame(&mut out, PING, 0, 0, b"settings");
    conn.write(&out).await;
    let mut acks = 0;
    loop {
        let f = next(&mut conn, "SETTINGS ACKs").await.expect("lives");
        if f.kind == SETTINGS {
            assert!(f.has(ACK) && f.payload.is_empty(), "{}", f.describe());
            acks += 1;
        }
        if f.kind == PING && f.has(ACK) {
            break;
        }
    }
    assert_eq!(acks, 3, "one ACK per SETTINGS, before the PING's ACK");
}

/// §6.5.3: "The values in the SETTINGS frame MUST be processed in the order they appear, with no other frame processing between values." — INITIAL_WINDOW_SIZE 0 then 1 MiB in one frame leaves 1 MiB.
#[tokio::test]
async fn s6_5_3_settings_values_are_processed_in_order() {
    let env = env().await;
    let mut conn = env
        .conn(
            Tr::H2c,
            &[
                (SETTINGS_INITIAL_WINDOW_SIZE, 0),
                (SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20),
            ],
        )
        .await;
    conn.grpc_call(1, SERVER_STREAM, &stream_request(4, 10_000))
        .await;
    let mut reply = conn.reply(1).await;
    assert_eq!(
        reply.end,
        End::Done,
        "the last value (1 MiB) applies: {reply:?}"
    );
    let messages: Vec<EchoResponse> = take_grpc_frames(&mut reply.data);
    assert_eq!(messages.len(), 4);
}

// ---------------------------------------------------------------------------
// §6.6 PUSH_PROMISE, §8.4 Server push

/// §8.4: "A client cannot push. Thus, servers MUST treat the receipt of a PUSH_PROMISE frame as a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s8_4_push_promise_from_a_client_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(CLIENT_STREAM), false).await;
    let mut payload = 2u32.to_be_bytes().to_vec();
    payload.extend_from_slice(&Block::get().0);
    conn.send(PUSH_PROMISE, END_HEADERS, 1, &payload).await;
    connection_error(&mut conn, PROTOCOL_ERROR, "PUSH_PROMISE from the client").await;
}

// ---------------------------------------------------------------------------
// §6.7 PING

/// §6.7: "Receivers of a PING frame that does not include an ACK flag MUST send a PING frame with the ACK flag set in response, with an identical frame payload."
async fn s6_7_ping(t: Tr) {
    let (_env, mut conn) = setup(t).await;
    conn.send(PING, 0, 0, b"\x00\xffping\x01\x02").await;
    let f = conn
        .r
        .until(|f| f.kind == PING || f.kind == GOAWAY)
        .await
        .expect("lives");
    assert!(
        f.kind == PING && f.has(ACK) && &f.payload[..] == b"\x00\xffping\x01\x02",
        "{}",
        f.describe()
    );
}

/// §6.7: "Receivers of a PING frame that does not include an ACK flag MUST send a PING frame with the ACK flag set in response, with an identical frame payload."
#[tokio::test]
async fn s6_7_ping_is_answered_with_the_same_payload() {
    s6_7_ping(Tr::H2c).await;
}

/// §6.7: "Receivers of a PING frame that does not include an ACK flag MUST send a PING frame with the ACK flag set in response, with an identical frame payload." [over TLS]
#[tokio::test]
async fn s6_7_ping_is_answered_with_the_same_payload_tls() {
    s6_7_ping(Tr::Tls).await;
}

/// §6.7: "A PING frame with the ACK flag set ... Receivers of a PING frame that includes an ACK flag MUST NOT respond" — an unsolicited ACK gets nothing back.
#[tokio::test]
async fn s6_7_ping_ack_is_not_answered() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(PING, ACK, 0, b"unasked!").await;
    conn.send(PING, 0, 0, b"checkpt!").await;
    loop {
        let f = next(&mut conn, "PING ACK").await.expect("lives");
        if f.kind == PING {
            assert_eq!(
                &f.payload[..],
                b"checkpt!",
                "an ACK was answered: {}",
                f.describe()
            );
            assert!(f.has(ACK));
            break;
        }
        assert!(f.kind != GOAWAY, "{}", f.describe());
    }
}

/// §6.7: "If a PING frame is received with a Stream Identifier field value other than 0x00, the recipient MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_7_ping_on_a_stream_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(PING, 0, 1, b"stream 1").await;
    connection_error(&mut conn, PROTOCOL_ERROR, "PING on stream 1").await;
}

/// §6.7: "Receipt of a PING frame with a length field value other than 8 MUST be treated as a connection error of type FRAME_SIZE_ERROR."
#[tokio::test]
async fn s6_7_ping_of_wrong_length_is_frame_size_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(PING, 0, 0, b"sixbyt").await;
    connection_error(&mut conn, FRAME_SIZE_ERROR, "PING of 6 bytes").await;
}

// ---------------------------------------------------------------------------
// §6.8 GOAWAY

/// §6.8: "An endpoint MUST treat a GOAWAY frame with a stream identifier other than 0x00 as a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_8_goaway_on_a_stream_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let mut payload = 0u32.to_be_bytes().to_vec();
    payload.extend_from_slice(&NO_ERROR.to_be_bytes());
    conn.send(GOAWAY, 0, 1, &payload).await;
    connection_error(&mut conn, PROTOCOL_ERROR, "GOAWAY on stream 1").await;
}

/// §6.8: "Activity on streams numbered lower than or equal to the last stream identifier might still complete successfully" — the client's GOAWAY(NO_ERROR) does not cut a request in flight.
#[tokio::test]
async fn s6_8_requests_in_flight_finish_after_the_clients_goaway() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.grpc_call(1, UNARY, &slow_request(100)).await;
    let mut payload = 0u32.to_be_bytes().to_vec();
    payload.extend_from_slice(&NO_ERROR.to_be_bytes());
    conn.send(GOAWAY, 0, 0, &payload).await;
    assert_good_reply(&mut conn, 1).await;
}

// ---------------------------------------------------------------------------
// §6.9 WINDOW_UPDATE and flow control

/// §6.9: "A receiver MUST treat the receipt of a WINDOW_UPDATE frame with a flow-control window increment of 0 as a stream error of type PROTOCOL_ERROR; errors on the connection flow-control window MUST be treated as a connection error".
#[tokio::test]
async fn s6_9_window_update_of_0_on_the_connection_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()).await;
    connection_error(
        &mut conn,
        PROTOCOL_ERROR,
        "WINDOW_UPDATE 0 on the connection",
    )
    .await;
}

/// §6.9 (see above): on a stream, a stream error.
#[tokio::test]
async fn s6_9_window_update_of_0_on_a_stream_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(CLIENT_STREAM), false).await;
    conn.send(WINDOW_UPDATE, 0, 1, &0u32.to_be_bytes()).await;
    stream_error(&mut conn, 1, PROTOCOL_ERROR, "WINDOW_UPDATE 0 on stream 1").await;
}

/// §6.9: "A WINDOW_UPDATE frame with a length other than 4 octets MUST be treated as a connection error of type FRAME_SIZE_ERROR."
#[tokio::test]
async fn s6_9_window_update_of_wrong_length_is_frame_size_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.send(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0, 0]).await;
    connection_error(&mut conn, FRAME_SIZE_ERROR, "WINDOW_UPDATE of 5 bytes").await;
}

/// §6.9.1: "If a sender receives a WINDOW_UPDATE that causes a flow-control window to exceed this maximum, it MUST terminate either the stream or the connection, as appropriate. ... for the connection, a GOAWAY frame with an error code of FLOW_CONTROL_ERROR is sent."
#[tokio::test]
async fn s6_9_1_connection_window_overflow_is_flow_control_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    // 65535 + 2^30 (the handshake's) + 2^31-1 > 2^31-1.
    conn.send(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes())
        .await;
    connection_error(
        &mut conn,
        FLOW_CONTROL_ERROR,
        "connection window past 2^31-1",
    )
    .await;
}

/// §6.9.1 (see above): "For streams, the sender sends a RST_STREAM with an error code of FLOW_CONTROL_ERROR".
async fn s6_9_1_stream_overflow(t: Tr) {
    let (_env, mut conn) = setup(t).await;
    conn.grpc_call(1, UNARY, &slow_request(30_000)).await;
    conn.send(WINDOW_UPDATE, 0, 1, &0x7fff_ffffu32.to_be_bytes())
        .await;
    stream_error(
        &mut conn,
        1,
        FLOW_CONTROL_ERROR,
        "stream window past 2^31-1",
    )
    .await;
}

/// §6.9.1 (see above): "For streams, the sender sends a RST_STREAM with an error code of FLOW_CONTROL_ERROR".
#[tokio::test]
async fn s6_9_1_stream_window_overflow_is_flow_control_error() {
    s6_9_1_stream_overflow(Tr::H2c).await;
}

/// §6.9.1 (see above): "For streams, the sender sends a RST_STREAM with an error code of FLOW_CONTROL_ERROR". [over TLS]
#[tokio::test]
async fn s6_9_1_stream_window_overflow_is_flow_control_error_tls() {
    s6_9_1_stream_overflow(Tr::Tls).await;
}

/// §6.9.1: "The sender MUST NOT send a flow-controlled frame with a length that exceeds the space available in either of the flow-control windows advertised by the receiver."
#[tokio::test]
async fn s6_9_1_data_never_exceeds_the_clients_stream_window() {
    let env = env().await;
    let mut conn = env
        .conn(Tr::H2c, &[(SETTINGS_INITIAL_WINDOW_SIZE, 100)])
        .await;
    conn.grpc_call(1, SERVER_STREAM, &stream_request(1, 1000))
        .await;
    let mut data = BytesMut::new();
    // Up to 100 bytes arrive; then nothing while the window is closed.
    while data.len() < 100 {
        let f = next(&mut conn, "DATA within the window")
            .await
            .expect("lives");
        assert!(f.kind != RST_STREAM && f.kind != GOAWAY, "{}", f.describe());
        if f.kind == DATA && f.stream == 1 {
            data.extend_from_slice(&f.payload);
        }
    }
    assert_eq!(data.len(), 100, "exactly the window");
    let payload = *b"windowed";
    conn.send(PING, 0, 0, &payload).await;
    let mut acked = false;
    loop {
        let f = if acked {
            match conn.r.next_within(QUIET).await {
                None => break,
                Some(f) => f.expect("lives"),
            }
        } else {
            next(&mut conn, "window").await.expect("lives")
        };
        if f.kind == PING && f.has(ACK) {
            acked = true;
            continue;
        }
        assert!(
            !(f.kind == DATA && f.stream == 1 && !f.payload.is_empty()),
            "DATA beyond the window: {}",
            f.describe()
        );
    }
    conn.send(WINDOW_UPDATE, 0, 1, &(1u32 << 20).to_be_bytes())
        .await;
    let reply = conn.reply(1).await;
    assert_eq!(reply.end, End::Done, "{reply:?}");
    data.extend_from_slice(&reply.data);
    let messages: Vec<EchoResponse> = take_grpc_frames(&mut data);
    assert_eq!(messages.len(), 1, "the whole response");
    assert_eq!(messages[0].payload.len(), 1000);
}

/// §6.9.2: "When the value of SETTINGS_INITIAL_WINDOW_SIZE changes, a receiver MUST adjust the size of all stream flow-control windows that it maintains by the difference between the new value and the old value." — a window opened by SETTINGS lets the data flow.
async fn s6_9_2_window_opened(t: Tr) {
    let env = env().await;
    let mut conn = env.conn(t, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    conn.grpc_call(1, SERVER_STREAM, &stream_request(3, 50_000))
        .await;
    let head = conn
        .r
        .until(|f| f.stream == 1 || f.kind == GOAWAY)
        .await
        .expect("lives");
    assert_eq!(head.kind, HEADERS, "{}", head.describe());
    conn.send(
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]),
    )
    .await;
    let mut reply = conn.reply(1).await;
    assert_eq!(reply.end, End::Done, "{reply:?}");
    let messages: Vec<EchoResponse> = take_grpc_frames(&mut reply.data);
    assert_eq!(messages.len(), 3);
}

/// §6.9.2: "When the value of SETTINGS_INITIAL_WINDOW_SIZE changes, a receiver MUST adjust the size of all stream flow-control windows that it maintains by the difference between the new value and the old value." — a window opened by SETTINGS lets the data flow.
#[tokio::test]
async fn s6_9_2_initial_window_size_increase_reopens_streams() {
    s6_9_2_window_opened(Tr::H2c).await;
}

/// §6.9.2: "When the value of SETTINGS_INITIAL_WINDOW_SIZE changes, a receiver MUST adjust the size of all stream flow-control windows that it maintains by the difference between the new value and the old value." — a window opened by SETTINGS lets the data flow. [over TLS]
#[tokio::test]
async fn s6_9_2_initial_window_size_increase_reopens_streams_tls() {
    s6_9_2_window_opened(Tr::Tls).await;
}

/// §6.9.2: "A change to SETTINGS_INITIAL_WINDOW_SIZE can cause the available space in a flow-control window to become negative. A sender MUST track the negative flow-control window and MUST NOT send new flow-controlled frames until it receives WINDOW_UPDATE frames that cause the flow-control window to become positive."
async fn s6_9_2_negative(t: Tr) {
    let env = env().await;
    let mut conn = env.conn(t, &[(SETTINGS_INITIAL_WINDOW_SIZE, 3)]).await;
    conn.grpc_call(1, SERVER_STREAM, &stream_request(1, 1000))
        .await;
    let mut data = BytesMut::new();
    while data.len() < 3 {
        let f = next(&mut conn, "3 bytes of DATA").await.expect("lives");
        assert!(f.kind != RST_STREAM && f.kind != GOAWAY, "{}", f.describe());
        if f.kind == DATA && f.stream == 1 {
            data.extend_from_slice(&f.payload);
        }
    }
    assert_eq!(data.len(), 3, "no more than the window of 3");
    // The window becomes 2 - 3 = -1.
    conn.send(
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_INITIAL_WINDOW_SIZE, 2)]),
    )
    .await;
    let payload = *b"negative";
    conn.send(PING, 0, 0, &payload).await;
    loop {
        let f = next(&mut conn, "negative window").await.expect("lives");
        assert!(
            !(f.kind == DATA && f.stream == 1 && !f.payload.is_empty()),
            "DATA on a negative window: {}",
            f.describe()
        );
        assert!(f.kind != RST_STREAM && f.kind != GOAWAY, "{}", f.describe());
        if f.kind == PING && f.has(ACK) {
            break;
        }
    }
    // +2: the window is 1; exactly one byte may come.
    conn.send(WINDOW_UPDATE, 0, 1, &2u32.to_be_bytes()).await;
    let f = conn
        .r
        .until(|f| (f.kind == DATA && f.stream == 1) || f.kind == RST_STREAM || f.kind == GOAWAY)
        .await
        .expect("lives");
    assert!(
        f.kind == DATA && f.payload.len() == 1,
        "one byte of DATA when the window is 1 again: {}",
        f.describe()
    );
    data.extend_from_slice(&f.payload);
    conn.send(WINDOW_UPDATE, 0, 1, &(1u32 << 20).to_be_bytes())
        .await;
    let reply = conn.reply(1).await;
    assert_eq!(reply.end, End::Done, "{reply:?}");
    data.extend_from_slice(&reply.data);
    let messages: Vec<EchoResponse> = take_grpc_frames(&mut data);
    assert_eq!(messages.len(), 1, "the whole response, in order");
    assert_eq!(messages[0].payload.len(), 1000);
}

/// §6.9.2: "A change to SETTINGS_INITIAL_WINDOW_SIZE can cause the available space in a flow-control window to become negative. A sender MUST track the negative flow-control window and MUST NOT send new flow-controlled frames until it receives WINDOW_UPDATE frames that cause the flow-control window to become positive."
#[tokio::test]
async fn s6_9_2_negative_window_then_positive_lets_data_flow() {
    s6_9_2_negative(Tr::H2c).await;
}

/// §6.9.2: "A change to SETTINGS_INITIAL_WINDOW_SIZE can cause the available space in a flow-control window to become negative. A sender MUST track the negative flow-control window and MUST NOT send new flow-controlled frames until it receives WINDOW_UPDATE frames that cause the flow-control window to become positive." [over TLS]
#[tokio::test]
async fn s6_9_2_negative_window_then_positive_lets_data_flow_tls() {
    s6_9_2_negative(Tr::Tls).await;
}

/// §6.9.2: "An endpoint MUST treat a change to SETTINGS_INITIAL_WINDOW_SIZE that causes any flow-control window to exceed the maximum size as a connection error of type FLOW_CONTROL_ERROR."
#[tokio::test]
async fn s6_9_2_initial_window_change_overflowing_a_stream_is_flow_control_error() {
    let env = env().await;
    let mut conn = env
        .conn(Tr::H2c, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)])
        .await;
    conn.grpc_call(1, UNARY, &slow_request(30_000)).await;
    conn.send(WINDOW_UPDATE, 0, 1, &0x7fff_ffffu32.to_be_bytes())
        .await;
    conn.send(
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1)]),
    )
    .await;
    connection_error(
        &mut conn,
        FLOW_CONTROL_ERROR,
        "INITIAL_WINDOW_SIZE pushing a stream past 2^31-1",
    )
    .await;
}

// ---------------------------------------------------------------------------
// §6.10 CONTINUATION

/// §6.10: "A CONTINUATION frame MUST be preceded by a HEADERS, PUSH_PROMISE or CONTINUATION frame without the END_HEADERS flag set. A recipient that observes violation of this rule MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_10_continuation_after_end_headers_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(CLIENT_STREAM), false).await;
    conn.send(
        CONTINUATION,
        END_HEADERS,
        1,
        &Block::default().field("x-more", "1").0,
    )
    .await;
    connection_error(&mut conn, PROTOCOL_ERROR, "CONTINUATION after END_HEADERS").await;
}

/// §6.10: "If the END_HEADERS flag is not set, this frame MUST be followed by another CONTINUATION frame. A receiver MUST treat the receipt of any other type of frame or a frame on a different stream as a connection error of type PROTOCOL_ERROR." (another frame type)
async fn s6_10_interleaved(t: Tr) {
    let (env, mut conn) = setup(t).await;
    let block = Block::grpc(UNARY).0;
    let (a, b) = block.split_at(block.len() / 2);
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, END_STREAM, 1, a);
    frame(&mut out, PING, 0, 0, b"interlvd");
    frame(&mut out, CONTINUATION, END_HEADERS, 1, b);
    conn.write(&out).await;
    connection_error(&mut conn, PROTOCOL_ERROR, "PING inside a header block").await;
    assert_eq!(env.started(), 0);
}

/// §6.10: "If the END_HEADERS flag is not set, this frame MUST be followed by another CONTINUATION frame. A receiver MUST treat the receipt of any other type of frame or a frame on a different stream as a connection error of type PROTOCOL_ERROR." (another frame type)
#[tokio::test]
async fn s6_10_other_frame_inside_a_header_block_is_protocol_error() {
    s6_10_interleaved(Tr::H2c).await;
}

/// §6.10: "If the END_HEADERS flag is not set, this frame MUST be followed by another CONTINUATION frame. A receiver MUST treat the receipt of any other type of frame or a frame on a different stream as a connection error of type PROTOCOL_ERROR." (another frame type) [over TLS]
#[tokio::test]
async fn s6_10_other_frame_inside_a_header_block_is_protocol_error_tls() {
    s6_10_interleaved(Tr::Tls).await;
}

/// §6.10 (see above): a CONTINUATION on a different stream.
#[tokio::test]
async fn s6_10_continuation_on_another_stream_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let block = Block::grpc(UNARY).0;
    let (a, b) = block.split_at(block.len() / 2);
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, END_STREAM, 1, a);
    frame(&mut out, CONTINUATION, END_HEADERS, 3, b);
    conn.write(&out).await;
    connection_error(
        &mut conn,
        PROTOCOL_ERROR,
        "CONTINUATION on stream 3 for stream 1",
    )
    .await;
}

/// §6.10 (see above): HEADERS of another stream inside a header block.
#[tokio::test]
async fn s6_10_headers_inside_a_header_block_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let block = Block::grpc(UNARY).0;
    let (a, _) = block.split_at(block.len() / 2);
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, END_STREAM, 1, a);
    frame(&mut out, HEADERS, END_STREAM | END_HEADERS, 3, &block);
    conn.write(&out).await;
    connection_error(&mut conn, PROTOCOL_ERROR, "HEADERS inside a header block").await;
}

/// §6.10: "If a CONTINUATION frame is received with a Stream Identifier field of 0x00, the recipient MUST respond with a connection error of type PROTOCOL_ERROR."
#[tokio::test]
async fn s6_10_continuation_on_stream_0_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let block = Block::grpc(UNARY).0;
    let (a, b) = block.split_at(block.len() / 2);
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, END_STREAM, 1, a);
    frame(&mut out, CONTINUATION, END_HEADERS, 0, b);
    conn.write(&out).await;
    connection_error(&mut conn, PROTOCOL_ERROR, "CONTINUATION on stream 0").await;
}

/// §6.10 / §4.3: a field block split over HEADERS and several CONTINUATION frames (one of them empty) is one block.
#[tokio::test]
async fn s6_10_header_block_in_several_continuations_is_accepted() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let block = Block::grpc(UNARY).0;
    let mut out = BytesMut::new();
    let parts: Vec<&[u8]> = block.chunks(7).collect();
    frame(&mut out, HEADERS, 0, 1, parts[0]);
    frame(&mut out, CONTINUATION, 0, 1, &[]);
    for (i, part) in parts[1..].iter().enumerate() {
        let last = i == parts.len() - 2;
        frame(
            &mut out,
            CONTINUATION,
            if last { END_HEADERS } else { 0 },
            1,
            part,
        );
    }
    frame(&mut out, DATA, END_STREAM, 1, &echo_request("split"));
    conn.write(&out).await;
    assert_good_reply(&mut conn, 1).await;
}

// ---------------------------------------------------------------------------
// §8.1 HTTP message framing, content-length

/// §8.1: "An endpoint that receives a HEADERS frame without the END_STREAM flag set after receiving the HEADERS frame that opens a request ... MUST treat the corresponding request or response as malformed" (trailers without END_STREAM).
#[tokio::test]
async fn s8_1_trailers_without_end_stream_are_malformed() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(CLIENT_STREAM), false).await;
    conn.send(DATA, 0, 1, &echo_request("body")).await;
    conn.headers(1, &Block::default().field("x-trailer", "1"), false)
        .await;
    stream_error(&mut conn, 1, PROTOCOL_ERROR, "trailers without END_STREAM").await;
}

/// §8.1: "Trailer fields ... MUST NOT include pseudo-header fields" (§8.3: "Pseudo-header fields MUST NOT appear in a trailer section").
#[tokio::test]
async fn s8_1_pseudo_header_in_trailers_is_malformed() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(CLIENT_STREAM), false).await;
    conn.send(DATA, 0, 1, &echo_request("body")).await;
    conn.headers(1, &Block::default().field(":path", "/x"), true)
        .await;
    stream_error(&mut conn, 1, PROTOCOL_ERROR, "a pseudo-header in trailers").await;
}

/// §8.1.1: "A request or response is also malformed if the value of a content-length header field does not equal the sum of the DATA frame payload lengths that form the content" (body longer).
#[tokio::test]
async fn s8_1_1_body_longer_than_content_length_is_malformed() {
    let (env, mut conn) = setup(Tr::H2c).await;
    let message = echo_request("longer");
    let block = Block::grpc(UNARY).field("content-length", (message.len() - 1).to_string());
    let mut out = BytesMut::new();
    headers(&mut out, 1, &block.0, false);
    frame(&mut out, DATA, END_STREAM, 1, &message);
    conn.write(&out).await;
    stream_error(&mut conn, 1, PROTOCOL_ERROR, "body over content-length").await;
    let done = env.echo.stats.wait_for(QUIET, |s| s.completed > 0).await;
    assert!(done.is_err(), "the malformed request was served: {done:?}");
}

/// §8.1.1 (see above): body shorter than content-length.
#[tokio::test]
async fn s8_1_1_body_shorter_than_content_length_is_malformed() {
    let (env, mut conn) = setup(Tr::H2c).await;
    let message = echo_request("shorter");
    let block = Block::grpc(UNARY).field("content-length", (message.len() + 1).to_string());
    let mut out = BytesMut::new();
    headers(&mut out, 1, &block.0, false);
    frame(&mut out, DATA, END_STREAM, 1, &message);
    conn.write(&out).await;
    stream_error(&mut conn, 1, PROTOCOL_ERROR, "body under content-length").await;
    let done = env.echo.stats.wait_for(QUIET, |s| s.completed > 0).await;
    assert!(done.is_err(), "the malformed request was served: {done:?}");
}

/// §8.1.1 (see above): content-length without any body (END_STREAM on HEADERS).
#[tokio::test]
async fn s8_1_1_content_length_without_body_is_malformed() {
    malformed(
        Block::grpc(UNARY).field("content-length", "10"),
        "content-length 10, no DATA",
    )
    .await;
}

/// §8.1.1: a body matching content-length is served.
#[tokio::test]
async fn s8_1_1_matching_content_length_is_served() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let message = echo_request("exact");
    let block = Block::grpc(UNARY).field("content-length", message.len().to_string());
    let mut out = BytesMut::new();
    headers(&mut out, 1, &block.0, false);
    frame(&mut out, DATA, 0, 1, &message[..3]);
    frame(&mut out, DATA, END_STREAM, 1, &message[3..]);
    conn.write(&out).await;
    assert_good_reply(&mut conn, 1).await;
}

// ---------------------------------------------------------------------------
// §8.2 HTTP fields

/// §8.2: "Field names MUST be converted to lowercase when constructing an HTTP/2 message. A request or response containing an uppercase character in a field name MUST be treated as malformed".
#[tokio::test]
async fn s8_2_uppercase_field_name_is_malformed() {
    malformed(Block::grpc(UNARY).field("X-Upper", "1"), "uppercase name").await;
}

/// §8.2.1: "A field name MUST NOT contain characters in the ranges 0x00-0x20, 0x41-0x5a, or 0x7f-0xff (all ranges inclusive)." (a space)
#[tokio::test]
async fn s8_2_1_space_in_field_name_is_malformed() {
    malformed(
        Block::grpc(UNARY).raw_field(b"x bad", b"1"),
        "space in a name",
    )
    .await;
}

/// §8.2.1 (see above): a byte over 0x7e.
#[tokio::test]
async fn s8_2_1_non_ascii_field_name_is_malformed() {
    malformed(
        Block::grpc(UNARY).raw_field(b"x-\xc3\xa9", b"1"),
        "non-ASCII name",
    )
    .await;
}

/// §8.2.1: "With the exception of pseudo-header fields ... field names MUST NOT include a colon".
#[tokio::test]
async fn s8_2_1_colon_inside_field_name_is_malformed() {
    malformed(
        Block::grpc(UNARY).raw_field(b"x:y", b"1"),
        "colon in a name",
    )
    .await;
}

/// §8.2.1: "A field value MUST NOT contain the zero value (ASCII NUL, 0x00), line feed (ASCII LF, 0x0a), or carriage return (ASCII CR, 0x0d) at any position." (NUL)
#[tokio::test]
async fn s8_2_1_nul_in_field_value_is_malformed() {
    malformed(
        Block::grpc(UNARY).raw_field(b"x-v", b"a\0b"),
        "NUL in a value",
    )
    .await;
}

/// §8.2.1 (see above): CR.
#[tokio::test]
async fn s8_2_1_cr_in_field_value_is_malformed() {
    malformed(
        Block::grpc(UNARY).raw_field(b"x-v", b"a\rb"),
        "CR in a value",
    )
    .await;
}

/// §8.2.1 (see above): LF.
#[tokio::test]
async fn s8_2_1_lf_in_field_value_is_malformed() {
    malformed(
        Block::grpc(UNARY).raw_field(b"x-v", b"a\nx-injected: 1"),
        "LF in a value",
    )
    .await;
}

/// §8.2.1: "A field value MUST NOT start or end with an ASCII whitespace character (ASCII SP or HTAB, 0x20 or 0x09)."
#[tokio::test]
async fn s8_2_1_whitespace_around_field_value_is_malformed() {
    malformed(
        Block::grpc(UNARY).raw_field(b"x-v", b" padded "),
        "whitespace around a value",
    )
    .await;
}

/// §8.2.2: "An endpoint MUST NOT generate an HTTP/2 message containing connection-specific header fields. ... Any message containing connection-specific header fields MUST be treated as malformed" (connection).
#[tokio::test]
async fn s8_2_2_connection_header_is_malformed() {
    malformed(
        Block::grpc(UNARY).field("connection", "keep-alive"),
        "connection",
    )
    .await;
}

/// §8.2.2 (see above): keep-alive.
#[tokio::test]
async fn s8_2_2_keep_alive_header_is_malformed() {
    malformed(
        Block::grpc(UNARY).field("keep-alive", "timeout=5"),
        "keep-alive",
    )
    .await;
}

/// §8.2.2 (see above): proxy-connection.
#[tokio::test]
async fn s8_2_2_proxy_connection_header_is_malformed() {
    malformed(
        Block::grpc(UNARY).field("proxy-connection", "keep-alive"),
        "proxy-connection",
    )
    .await;
}

/// §8.2.2 (see above): transfer-encoding.
#[tokio::test]
async fn s8_2_2_transfer_encoding_header_is_malformed() {
    malformed(
        Block::grpc(UNARY).field("transfer-encoding", "chunked"),
        "transfer-encoding",
    )
    .await;
}

/// §8.2.2 (see above): upgrade.
#[tokio::test]
async fn s8_2_2_upgrade_header_is_malformed() {
    malformed(Block::grpc(UNARY).field("upgrade", "h2c"), "upgrade").await;
}

/// §8.2.2: "The only exception to this is the TE header field, which MAY be present in an HTTP/2 request; when it is, it MUST NOT contain any value other than "trailers"."
#[tokio::test]
async fn s8_2_2_te_other_than_trailers_is_malformed() {
    malformed(
        grpc_head(UNARY).field("te", "trailers, gzip"),
        "te: trailers, gzip",
    )
    .await;
}

// ---------------------------------------------------------------------------
// §8.3 HTTP control data (pseudo-header fields)

/// §8.3: "Endpoints MUST treat a request or response that contains undefined or invalid pseudo-header fields as malformed."
#[tokio::test]
async fn s8_3_unknown_pseudo_header_is_malformed() {
    malformed(Block::grpc(UNARY).field(":foo", "bar"), ":foo").await;
}

/// §8.3: "Pseudo-header fields defined for responses MUST NOT appear in requests".
#[tokio::test]
async fn s8_3_status_in_a_request_is_malformed() {
    malformed(
        Block::grpc(UNARY).field(":status", "200"),
        ":status in a request",
    )
    .await;
}

/// §8.3: "All pseudo-header fields MUST appear in a field block before all regular field lines. Any request or response that contains a pseudo-header field that appears in a field block after a regular field line MUST be treated as malformed".
#[tokio::test]
async fn s8_3_pseudo_header_after_regular_field_is_malformed() {
    let block = Block::post()
        .field(":authority", "localhost")
        .field("content-type", "application/grpc")
        .field(":path", UNARY)
        .field("te", "trailers");
    malformed(block, "pseudo-header after a regular field").await;
}

/// §8.3.1: "The same pseudo-header field name MUST NOT appear more than once in a field block. A field block for an HTTP request or response that contains a repeated pseudo-header field name MUST be treated as malformed." (:path)
#[tokio::test]
async fn s8_3_1_duplicate_path_is_malformed() {
    malformed(
        grpc_head(UNARY)
            .field(":path", UNARY)
            .field("te", "trailers"),
        "two :path",
    )
    .await;
}

/// §8.3.1 (see above): :method.
#[tokio::test]
async fn s8_3_1_duplicate_method_is_malformed() {
    let block = Block::post()
        .indexed(3)
        .field(":path", UNARY)
        .field(":authority", "localhost")
        .field("content-type", "application/grpc");
    malformed(block, "two :method").await;
}

/// §8.3.1 (see above): :scheme.
#[tokio::test]
async fn s8_3_1_duplicate_scheme_is_malformed() {
    let block = Block::post()
        .indexed(7)
        .field(":path", UNARY)
        .field(":authority", "localhost")
        .field("content-type", "application/grpc");
    malformed(block, "two :scheme").await;
}

/// §8.3.1: "All HTTP/2 requests MUST include exactly one valid value for the ":method", ":scheme", and ":path" pseudo-header fields, unless they are CONNECT requests" (no :method).
#[tokio::test]
async fn s8_3_1_missing_method_is_malformed() {
    let block = Block::default()
        .indexed(6)
        .field(":path", UNARY)
        .field(":authority", "localhost")
        .field("content-type", "application/grpc");
    malformed(block, "no :method").await;
}

/// §8.3.1 (see above): no :scheme.
#[tokio::test]
async fn s8_3_1_missing_scheme_is_malformed() {
    let block = Block::default()
        .indexed(3)
        .field(":path", UNARY)
        .field(":authority", "localhost")
        .field("content-type", "application/grpc");
    malformed(block, "no :scheme").await;
}

/// §8.3.1 (see above): no :path.
#[tokio::test]
async fn s8_3_1_missing_path_is_malformed() {
    let block = Block::post()
        .field(":authority", "localhost")
        .field("content-type", "application/grpc");
    malformed(block, "no :path").await;
}

/// §8.3.1: ":path ... This pseudo-header field MUST NOT be empty for "http" or "https" URIs".
#[tokio::test]
async fn s8_3_1_empty_path_is_malformed() {
    let block = Block::post()
        .field(":path", "")
        .field(":authority", "localhost")
        .field("content-type", "application/grpc");
    malformed(block, "empty :path").await;
}

// ---------------------------------------------------------------------------
// §9.2 TLS

/// §3.2 / §9.2: "The "h2" string identifies the protocol where HTTP/2 uses TLS" — ALPN h2 is chosen, and the version is TLS 1.2 or higher ("Implementations of HTTP/2 MUST use TLS version 1.2 or higher").
#[tokio::test]
async fn s9_2_tls_negotiates_h2_over_tls_1_2_or_higher() {
    let env = env().await;
    let client = TlsClient::new(&env.ca);
    let stream = client.handshake(env.tls).await.expect("handshake");
    let (_, session) = stream.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    let version = session.protocol_version().expect("a version");
    assert!(
        matches!(
            version,
            rustls::ProtocolVersion::TLSv1_2 | rustls::ProtocolVersion::TLSv1_3
        ),
        "{version:?}"
    );
    let mut conn = env.conn(Tr::Tls, &[]).await;
    assert_good_call(&mut conn, 1).await;
}

// ---------------------------------------------------------------------------
// More of §5.1, §5.4.1, §6.10

/// §6.10 / §4.3: "Each field block is processed as a discrete unit. Field blocks MUST be transmitted as a contiguous sequence of frames, with no interleaved frames of any other type or from any other stream." (a PRIORITY frame inside the block)
#[tokio::test]
async fn s6_10_priority_inside_a_header_block_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    let block = Block::grpc(UNARY).0;
    let (a, b) = block.split_at(block.len() / 2);
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, END_STREAM, 1, a);
    frame(
        &mut out,
        PRIORITY_FRAME,
        0,
        1,
        &priority_payload(false, 0, 16),
    );
    frame(&mut out, CONTINUATION, END_HEADERS, 1, b);
    conn.write(&out).await;
    connection_error(&mut conn, PROTOCOL_ERROR, "PRIORITY inside a header block").await;
}

/// §6.10: "A CONTINUATION frame MUST be preceded by a HEADERS, PUSH_PROMISE or CONTINUATION frame without the END_HEADERS flag set." (one after a DATA frame)
#[tokio::test]
async fn s6_10_continuation_after_data_is_protocol_error() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    conn.headers(1, &Block::grpc(CLIENT_STREAM), false).await;
    conn.send(DATA, 0, 1, &echo_request("body")).await;
    conn.send(
        CONTINUATION,
        END_HEADERS,
        1,
        &Block::default().field("x-more", "1").0,
    )
    .await;
    connection_error(&mut conn, PROTOCOL_ERROR, "CONTINUATION after DATA").await;
}

/// §5.1 half-closed (remote): RST_STREAM is allowed ("other than WINDOW_UPDATE, PRIORITY, or RST_STREAM"): the stream closes, the upstream call is cancelled, nothing more is sent on it and the connection lives.
#[tokio::test]
async fn s5_1_rst_stream_on_a_half_closed_remote_stream_closes_it() {
    let (env, mut conn) = setup(Tr::H2c).await;
    conn.grpc_call(1, UNARY, &slow_request(30_000)).await;
    env.echo
        .stats
        .wait_for(PATIENCE, |s| s.started == 1)
        .await
        .expect("the call reaches the backend");
    conn.send(RST_STREAM, 0, 1, &CANCEL.to_be_bytes()).await;
    env.echo
        .stats
        .wait_for(PATIENCE, |s| s.cancelled == 1)
        .await
        .expect("the backend's call is cancelled");
    nothing_more_on(&mut conn, 1, "a stream the client reset").await;
    assert_good_call(&mut conn, 3).await;
}

/// §6.8: "The last stream identifier in the GOAWAY frame contains the highest-numbered stream identifier for which the sender of the GOAWAY frame might have taken some action on or might yet take action on." — after streams 1 and 3, a connection error's GOAWAY names 3.
#[tokio::test]
async fn s6_8_goaway_names_the_last_stream_processed() {
    let (_env, mut conn) = setup(Tr::H2c).await;
    assert_good_call(&mut conn, 1).await;
    assert_good_call(&mut conn, 3).await;
    conn.send(PING, 0, 1, b"stream 1").await;
    let f = conn.r.until(|f| f.kind == GOAWAY).await.expect("a GOAWAY");
    assert_eq!(
        (f.code(), f.last_stream()),
        (PROTOCOL_ERROR, 3),
        "{}",
        f.describe()
    );
}

// ---------------------------------------------------------------------------
// §6.9 flow control with plain (non-gRPC) responses: DATA with END_STREAM
// ends them, no trailers.

/// §6.9.2: "When the value of SETTINGS_INITIAL_WINDOW_SIZE changes, a receiver MUST adjust the size of all stream flow-control windows that it maintains by the difference between the new value and the old value." — a plain response held by a 0 window resumes when SETTINGS opens it.
async fn s6_9_2_plain_window_opened(t: Tr) {
    let env = env().await;
    let mut conn = env.conn(t, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    conn.headers(1, &plain_get(), true).await;
    let head = conn
        .r
        .until(|f| f.stream == 1 || f.kind == GOAWAY)
        .await
        .expect("lives");
    assert_eq!(head.kind, HEADERS, "{}", head.describe());
    assert_eq!(status_of(head.block()), Some(200));
    assert_alive(&mut conn, "a response waiting on a 0 window").await;
    conn.send(
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]),
    )
    .await;
    let reply = conn.reply(1).await;
    assert_eq!(reply.end, End::Done, "{reply:?}");
    let body = String::from_utf8_lossy(&reply.data);
    assert!(
        body.trim_end().ends_with('}'),
        "the whole JSON body: {body:?}"
    );
}

/// §6.9.2: "When the value of SETTINGS_INITIAL_WINDOW_SIZE changes, a receiver MUST adjust the size of all stream flow-control windows that it maintains by the difference between the new value and the old value." — a plain response held by a 0 window resumes when SETTINGS opens it.
#[tokio::test]
async fn s6_9_2_initial_window_size_increase_reopens_a_plain_response() {
    s6_9_2_plain_window_opened(Tr::H2c).await;
}

/// §6.9.2: "When the value of SETTINGS_INITIAL_WINDOW_SIZE changes, a receiver MUST adjust the size of all stream flow-control windows that it maintains by the difference between the new value and the old value." — a plain response held by a 0 window resumes when SETTINGS opens it. [over TLS]
#[tokio::test]
async fn s6_9_2_initial_window_size_increase_reopens_a_plain_response_tls() {
    s6_9_2_plain_window_opened(Tr::Tls).await;
}

/// §6.9.2: "A sender MUST track the negative flow-control window and MUST NOT send new flow-controlled frames until it receives WINDOW_UPDATE frames that cause the flow-control window to become positive." — h2spec 6.9.2/2's shape: window 3, SETTINGS 2 (window -1), WINDOW_UPDATE 2: one byte, then the rest.
#[tokio::test]
async fn s6_9_2_negative_window_then_positive_lets_a_plain_response_flow() {
    let env = env().await;
    let mut conn = env
        .conn(Tr::H2c, &[(SETTINGS_INITIAL_WINDOW_SIZE, 3)])
        .await;
    conn.headers(1, &plain_get(), true).await;
    let mut data = BytesMut::new();
    while data.len() < 3 {
        let f = next(&mut conn, "3 bytes of DATA").await.expect("lives");
        assert!(f.kind != RST_STREAM && f.kind != GOAWAY, "{}", f.describe());
        if f.kind == DATA && f.stream == 1 {
            data.extend_from_slice(&f.payload);
        }
    }
    conn.send(
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_INITIAL_WINDOW_SIZE, 2)]),
    )
    .await;
    assert_alive(&mut conn, "a negative window").await;
    conn.send(WINDOW_UPDATE, 0, 1, &2u32.to_be_bytes()).await;
    let f = conn
        .r
        .until(|f| f.stream == 1 || f.kind == GOAWAY)
        .await
        .expect("lives");
    assert!(
        f.kind == DATA && f.payload.len() == 1,
        "one byte: {}",
        f.describe()
    );
    data.extend_from_slice(&f.payload);
    conn.send(WINDOW_UPDATE, 0, 1, &(1u32 << 20).to_be_bytes())
        .await;
    let reply = conn.reply(1).await;
    assert_eq!(reply.end, End::Done, "{reply:?}");
    data.extend_from_slice(&reply.data);
    let body = String::from_utf8_lossy(&data);
    assert!(
        body.starts_with('{') && body.trim_end().ends_with('}'),
        "{body:?}"
    );
}

/// §6.9.1: "The sender MUST NOT send a flow-controlled frame with a length that exceeds the space available in either of the flow-control windows advertised by the receiver." (a plain response, window 10)
#[tokio::test]
async fn s6_9_1_plain_response_keeps_to_a_small_window() {
    let env = env().await;
    let mut conn = env
        .conn(Tr::H2c, &[(SETTINGS_INITIAL_WINDOW_SIZE, 10)])
        .await;
    conn.headers(1, &plain_get(), true).await;
    let mut data = BytesMut::new();
    while data.len() < 10 {
        let f = next(&mut conn, "10 bytes").await.expect("lives");
        assert!(f.kind != RST_STREAM && f.kind != GOAWAY, "{}", f.describe());
        if f.kind == DATA && f.stream == 1 {
            data.extend_from_slice(&f.payload);
        }
    }
    assert_eq!(data.len(), 10);
    assert_alive(&mut conn, "a full window").await;
    conn.send(WINDOW_UPDATE, 0, 1, &(1u32 << 20).to_be_bytes())
        .await;
    let reply = conn.reply(1).await;
    assert_eq!(reply.end, End::Done, "{reply:?}");
}

// ---------------------------------------------------------------------------
// §8.5 CONNECT

/// §8.5: "The ":scheme" and ":path" pseudo-header fields MUST be omitted. ... A CONNECT request that does not conform to these restrictions is malformed".
#[tokio::test]
async fn s8_5_connect_with_path_is_malformed() {
    let block = Block::default()
        .field(":method", "CONNECT")
        .indexed(6)
        .field(":path", "/")
        .field(":authority", "localhost:443");
    malformed(block, "CONNECT with :scheme and :path").await;
}

/// §8.5: "The ":authority" pseudo-header field contains the host and port to connect to" — a CONNECT without it is malformed (same sentence as above).
#[tokio::test]
async fn s8_5_connect_without_authority_is_malformed() {
    let block = Block::default().field(":method", "CONNECT");
    malformed(block, "CONNECT without :authority").await;
}

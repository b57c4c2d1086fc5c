//! A raw HTTP/2 client for tests that attack a server with frames: h2c
//! with prior knowledge or h2 over TLS, a frame writer and reader (padding,
//! priority), and just enough HPACK to write header blocks (every literal
//! representation, static and dynamic indexes, table size updates, raw
//! Huffman strings) and to read a response's `:status`.
//!
//! The reader and writer work over any byte stream, so a test can also play
//! a raw HTTP/2 *server* (an upstream) with them.
//!
//! Included with `#[path = "support/raw_h2.rs"] mod raw_h2;` next to
//! `mod support;`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TlsClient, PATIENCE};

/// The read half of a connection, whatever carries it (TCP, TLS).
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY_FRAME: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

// Error codes (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const INTERNAL_ERROR: u32 = 0x2;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const SETTINGS_TIMEOUT: u32 = 0x4;
pub const STREAM_CLOSED: u32 = 0x5;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const CONNECT_ERROR: u32 = 0xa;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

// Settings (RFC 9113 §6.5.2).
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// A SETTINGS payload.
pub fn settings_payload(settings: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in settings {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    payload
}

/// The (id, value) pairs of a SETTINGS payload.
pub fn parse_settings(payload: &[u8]) -> Vec<(u16, u32)> {
    payload
        .chunks_exact(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect()
}

/// The name of a frame type, for messages.
pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        DATA => "DATA",
        HEADERS => "HEADERS",
        PRIORITY_FRAME => "PRIORITY",
        RST_STREAM => "RST_STREAM",
        SETTINGS => "SETTINGS",
        PUSH_PROMISE => "PUSH_PROMISE",
        PING => "PING",
        GOAWAY => "GOAWAY",
        WINDOW_UPDATE => "WINDOW_UPDATE",
        CONTINUATION => "CONTINUATION",
        _ => "unknown",
    }
}

/// The name of an error code, for messages.
pub fn code_name(code: u32) -> &'static str {
    match code {
        NO_ERROR => "NO_ERROR",
        PROTOCOL_ERROR => "PROTOCOL_ERROR",
        INTERNAL_ERROR => "INTERNAL_ERROR",
        FLOW_CONTROL_ERROR => "FLOW_CONTROL_ERROR",
        SETTINGS_TIMEOUT => "SETTINGS_TIMEOUT",
        STREAM_CLOSED => "STREAM_CLOSED",
        FRAME_SIZE_ERROR => "FRAME_SIZE_ERROR",
        REFUSED_STREAM => "REFUSED_STREAM",
        CANCEL => "CANCEL",
        COMPRESSION_ERROR => "COMPRESSION_ERROR",
        CONNECT_ERROR => "CONNECT_ERROR",
        ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM",
        _ => "unknown",
    }
}

/// The largest frame payload a peer must accept (SETTINGS_MAX_FRAME_SIZE's
/// initial value).
pub const MAX_FRAME: usize = 16_384;

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Bytes,
}

impl Frame {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }

    /// The error code of a RST_STREAM or GOAWAY.
    pub fn code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        let b = &self.payload[at..at + 4];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// GOAWAY's last stream id.
    pub fn last_stream(&self) -> u32 {
        let b = &self.payload[..4];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff
    }

    /// GOAWAY's debug data, as text.
    pub fn debug_data(&self) -> String {
        String::from_utf8_lossy(self.payload.get(8..).unwrap_or_default()).into_owned()
    }

    /// One line: kind, flags, stream, and the code of RST_STREAM/GOAWAY.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}(flags {:#x}, stream {}, {} bytes",
            kind_name(self.kind),
            self.flags,
            self.stream,
            self.payload.len()
        );
        if (self.kind == RST_STREAM && self.payload.len() == 4)
            || (self.kind == GOAWAY && self.payload.len() >= 8)
        {
            s += &format!(", {}", code_name(self.code()));
        }
        if self.kind == GOAWAY {
            s += &format!(", last {}, {:?}", self.last_stream(), self.debug_data());
        }
        s + ")"
    }

    /// A HEADERS frame's header block fragment (padding and priority off).
    pub fn block(&self) -> &[u8] {
        let mut p = &self.payload[..];
        let mut pad = 0;
        if self.has(PADDED) {
            pad = p[0] as usize;
            p = &p[1..];
        }
        if self.has(PRIORITY) {
            p = &p[5..];
        }
        &p[..p.len() - pad]
    }
}

/// Appends one frame to `out`.
pub fn frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
    out.put_slice(payload);
}

/// Appends one frame with padding (PADDED set, `pad` zero bytes).
pub fn padded_frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8], pad: u8) {
    let mut p = Vec::with_capacity(1 + payload.len() + pad as usize);
    p.push(pad);
    p.extend_from_slice(payload);
    p.resize(p.len() + pad as usize, 0);
    frame(out, kind, flags | PADDED, stream, &p);
}

/// A PRIORITY frame's payload (or HEADERS' priority fields): exclusive
/// flag, dependency, weight.
pub fn priority_payload(exclusive: bool, depends_on: u32, weight: u8) -> [u8; 5] {
    let dep = depends_on | if exclusive { 0x8000_0000 } else { 0 };
    let b = dep.to_be_bytes();
    [b[0], b[1], b[2], b[3], weight]
}

/// Appends a header block as HEADERS plus as many CONTINUATION frames as
/// frames of at most [`MAX_FRAME`] bytes need; END_HEADERS on the last.
pub fn headers(out: &mut BytesMut, stream: u32, block: &[u8], end_stream: bool) {
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let mut kind = HEADERS;
    let mut flags = if end_stream { END_STREAM } else { 0 };
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            flags |= END_HEADERS;
        }
        frame(out, kind, flags, stream, chunk);
        kind = CONTINUATION;
        flags = 0;
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
pub fn hpack_int(out: &mut Vec<u8>, n: u8, first: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// An HPACK string literal without Huffman coding (RFC 7541 §5.2).
fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 7, 0, s.len());
    out.extend_from_slice(s);
}

/// A header block being written.
#[derive(Debug, Clone, Default)]
pub struct Block(pub Vec<u8>);

impl Block {
    /// An indexed field (RFC 7541 §6.1): 1–61 static table, 62+ dynamic.
    pub fn indexed(mut self, index: usize) -> Self {
        hpack_int(&mut self.0, 7, 0x80, index);
        self
    }

    /// A literal without indexing, new name (RFC 7541 §6.2.2).
    pub fn field(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.0.push(0x00);
        hpack_str(&mut self.0, name.as_bytes());
        hpack_str(&mut self.0, value.as_ref());
        self
    }

    /// A literal with incremental indexing, new name (RFC 7541 §6.2.1): the
    /// field becomes dynamic table entry 62.
    pub fn field_indexing(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.0.push(0x40);
        hpack_str(&mut self.0, name.as_bytes());
        hpack_str(&mut self.0, value.as_ref());
        self
    }

    /// A literal with incremental indexing, indexed name (RFC 7541 §6.2.1).
    pub fn indexed_name_indexing(mut self, name_index: usize, value: impl AsRef<[u8]>) -> Self {
        hpack_int(&mut self.0, 6, 0x40, name_index);
        hpack_str(&mut self.0, value.as_ref());
        self
    }

    /// A literal without indexing, indexed name (RFC 7541 §6.2.2).
    pub fn indexed_name(mut self, name_index: usize, value: impl AsRef<[u8]>) -> Self {
        hpack_int(&mut self.0, 4, 0x00, name_index);
        hpack_str(&mut self.0, value.as_ref());
        self
    }

    /// A literal never indexed, new name (RFC 7541 §6.2.3).
    pub fn never_indexed(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.0.push(0x10);
        hpack_str(&mut self.0, name.as_bytes());
        hpack_str(&mut self.0, value.as_ref());
        self
    }

    /// A literal without indexing whose name is given as raw bytes (any
    /// octets) and whose value is Huffman-coded `huffman` bytes as given
    /// (RFC 7541 §5.2, H bit set): for writing bad Huffman on purpose.
    pub fn huffman_value(mut self, name: &str, huffman: &[u8]) -> Self {
        self.0.push(0x00);
        hpack_str(&mut self.0, name.as_bytes());
        hpack_int(&mut self.0, 7, 0x80, huffman.len());
        self.0.extend_from_slice(huffman);
        self
    }

    /// A literal without indexing, name as raw bytes (may be invalid).
    pub fn raw_field(mut self, name: &[u8], value: &[u8]) -> Self {
        self.0.push(0x00);
        hpack_str(&mut self.0, name);
        hpack_str(&mut self.0, value);
        self
    }

    /// A dynamic table size update (RFC 7541 §6.3).
    pub fn size_update(mut self, size: usize) -> Self {
        hpack_int(&mut self.0, 5, 0x20, size);
        self
    }

    /// Raw bytes appended to the block.
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// `:method GET`, `:scheme http`, `:path /`, `:authority localhost`.
    pub fn get() -> Self {
        Block::default()
            .indexed(2)
            .indexed(6)
            .indexed(4)
            .field(":authority", "localhost")
    }

    /// `:method POST` and `:scheme http` (static indexes 3 and 6).
    pub fn post() -> Self {
        Block::default().indexed(3).indexed(6)
    }

    /// A well-formed gRPC request for `path`.
    pub fn grpc(path: &str) -> Self {
        Block::post()
            .field(":path", path)
            .field(":authority", "localhost")
            .field("content-type", "application/grpc")
            .field("te", "trailers")
    }
}

/// The `:status` at the start of a response header block, when it is
/// written as a static-table index (200, 204, 206, 304, 400, 404, 500) or
/// as a literal with the indexed name `:status` (raw or Huffman digits).
/// None for anything else (such as a dynamic-table reference).
pub fn status_of(block: &[u8]) -> Option<u16> {
    // Skip dynamic table size updates (001xxxxx, small values only).
    let start = block.iter().position(|b| b & 0xe0 != 0x20)?;
    let b = &block[start..];
    let first = b[0];
    if first & 0x80 != 0 {
        let index = (first & 0x7f) as usize;
        return [200, 204, 206, 304, 400, 404, 500]
            .get(index.checked_sub(8)?)
            .copied();
    }
    let name = if first & 0xc0 == 0x40 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    if name != 8 {
        return None;
    }
    let len = (*b.get(1)? & 0x7f) as usize;
    let value = b.get(2..2 + len)?;
    let digits = if b[1] & 0x80 == 0 {
        value.to_vec()
    } else {
        huffman_digits(value)?
    };
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Decodes a Huffman string of digits: '0'–'2' are the 5-bit codes 0–2,
/// '3'–'9' the 6-bit codes 0x19–0x1f (RFC 7541 Appendix B); the padding
/// (ones) ends it.
fn huffman_digits(src: &[u8]) -> Option<Vec<u8>> {
    if src.len() > 8 {
        return None;
    }
    let bits = src.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    let total = src.len() * 8;
    let (mut pos, mut out) = (0, Vec::new());
    let take = |pos: usize, n: usize| (bits >> (total - pos - n)) & ((1 << n) - 1);
    while total - pos >= 5 {
        let five = take(pos, 5);
        if five < 3 {
            out.push(b'0' + five as u8);
            pos += 5;
        } else if total - pos >= 6 && (0x19..=0x1f).contains(&take(pos, 6)) {
            out.push(b'3' + (take(pos, 6) - 0x19) as u8);
            pos += 6;
        } else {
            break;
        }
    }
    Some(out)
}

/// Reads frames from the peer.
pub struct Reader {
    rd: ReadHalf,
    buf: BytesMut,
}

impl Reader {
    /// Frames from `rd`; `buf` holds bytes already read from it.
    pub fn new(rd: ReadHalf, buf: BytesMut) -> Reader {
        Reader { rd, buf }
    }

    /// Reads exactly `n` raw bytes (not a frame), such as a connection
    /// preface; None if the connection ends or `PATIENCE` passes first.
    pub async fn raw(&mut self, n: usize) -> Option<Bytes> {
        let read = async {
            while self.buf.len() < n {
                self.buf.reserve(n);
                match self.rd.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
            Some(self.buf.split_to(n).freeze())
        };
        tokio::time::timeout(PATIENCE, read).await.ok().flatten()
    }

    /// The next frame; None once the server closed the connection (or
    /// reset it). Panics when nothing arrives within `PATIENCE`.
    pub async fn next(&mut self) -> Option<Frame> {
        self.next_within(PATIENCE)
            .await
            .unwrap_or_else(|| panic!("no frame from the server within {PATIENCE:?}"))
    }

    /// Like [`Reader::next`], but None (outer) when `within` passes first.
    pub async fn next_within(&mut self, within: Duration) -> Option<Option<Frame>> {
        tokio::time::timeout(within, self.read_frame()).await.ok()
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let head = self.buf.split_to(9);
                    let payload = self.buf.split_to(len).freeze();
                    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                    return Some(Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: stream & 0x7fff_ffff,
                        payload,
                    });
                }
            }
            self.buf.reserve(64 * 1024);
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads until a frame satisfies `want` (returned) or the connection
    /// closes (None).
    pub async fn until(&mut self, want: impl Fn(&Frame) -> bool) -> Option<Frame> {
        loop {
            let f = self.next().await?;
            if want(&f) {
                return Some(f);
            }
        }
    }

    /// Reads until a GOAWAY (its error code) or the end of the connection
    /// (None).
    pub async fn goaway(&mut self) -> Option<u32> {
        self.until(|f| f.kind == GOAWAY).await.map(|f| f.code())
    }
}

/// How a stream's response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// END_STREAM from the server.
    Done,
    /// RST_STREAM with this code.
    Reset(u32),
    /// GOAWAY with this code before the stream ended.
    GoAway(u32),
    /// The connection closed before the stream ended.
    Closed,
}

/// What came back on one stream.
pub struct Reply {
    /// The first HEADERS' `:status`: Some(None) when there were headers
    /// but the status could not be read.
    pub status: Option<Option<u16>>,
    pub data: BytesMut,
    /// A second HEADERS (trailers) arrived.
    pub trailers: bool,
    pub end: End,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("data_len", &self.data.len())
            .field("trailers", &self.trailers)
            .field("end", &self.end)
            .finish()
    }
}

/// A raw HTTP/2 client connection (h2c or TLS).
pub struct Conn {
    pub r: Reader,
    pub w: Writer,
    /// The server's first SETTINGS, in order.
    pub server_settings: Vec<(u16, u32)>,
}

/// A TCP connection to `addr` (Nagle off), split for a [`Conn`].
pub async fn tcp_halves(addr: SocketAddr) -> (ReadHalf, Writer) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (rd, w) = tcp.into_split();
    (Box::new(rd), Box::new(w))
}

/// A TLS connection to `addr` with `tls` (ALPN as it offers), split.
pub async fn tls_halves(addr: SocketAddr, tls: &TlsClient) -> (ReadHalf, Writer) {
    let stream = tls.handshake(addr).await.expect("TLS handshake");
    let (rd, w) = tokio::io::split(stream);
    (Box::new(rd), Box::new(w))
}

impl Conn {
    /// Connects, sends the preface, SETTINGS with `settings` and a
    /// connection WINDOW_UPDATE of 1 GiB (so only stream windows limit the
    /// server), reads the server's SETTINGS and ACKs them, and waits for
    /// the server's ACK of ours.
    pub async fn connect(addr: SocketAddr, settings: &[(u16, u32)]) -> Conn {
        Conn::handshake(tcp_halves(addr).await, settings).await
    }

    /// Like [`Conn::connect`] over TLS (ALPN `h2` unless `tls` says else).
    pub async fn connect_tls(addr: SocketAddr, tls: &TlsClient, settings: &[(u16, u32)]) -> Conn {
        Conn::handshake(tls_halves(addr, tls).await, settings).await
    }

    /// A connection over `halves` on which nothing was sent yet.
    pub fn raw(halves: (ReadHalf, Writer)) -> Conn {
        Conn {
            r: Reader::new(halves.0, BytesMut::new()),
            w: halves.1,
            server_settings: Vec::new(),
        }
    }

    /// The HTTP/2 handshake of [`Conn::connect`] over `halves`.
    pub async fn handshake(halves: (ReadHalf, Writer), settings: &[(u16, u32)]) -> Conn {
        let mut conn = Conn::raw(halves);
        let mut out = BytesMut::from(PREFACE);
        frame(&mut out, SETTINGS, 0, 0, &settings_payload(settings));
        frame(&mut out, WINDOW_UPDATE, 0, 0, &(1u32 << 30).to_be_bytes());
        conn.write(&out).await;
        let (mut theirs, mut acked) = (false, false);
        while !(theirs && acked) {
            let f = conn
                .r
                .until(|f| f.kind == SETTINGS)
                .await
                .expect("the server's SETTINGS");
            if f.has(ACK) {
                acked = true;
            } else if !theirs {
                theirs = true;
                conn.server_settings = parse_settings(&f.payload);
                conn.send(SETTINGS, ACK, 0, &[]).await;
            }
        }
        conn
    }

    /// A setting from the server's first SETTINGS.
    pub fn server_setting(&self, id: u16) -> Option<u32> {
        self.server_settings
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    /// Writes `bytes`; panics if the connection is gone.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.expect("write to the server");
    }

    pub async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut out = BytesMut::new();
        frame(&mut out, kind, flags, stream, payload);
        self.write(&out).await;
    }

    /// HEADERS (and CONTINUATIONs) with `block` on `stream`.
    pub async fn headers(&mut self, stream: u32, block: &Block, end_stream: bool) {
        let mut out = BytesMut::new();
        headers(&mut out, stream, &block.0, end_stream);
        self.write(&out).await;
    }

    /// A complete gRPC call on `stream`: HEADERS for `path`, one message,
    /// END_STREAM.
    pub async fn grpc_call(&mut self, stream: u32, path: &str, message: &[u8]) {
        let mut out = BytesMut::new();
        headers(&mut out, stream, &Block::grpc(path).0, false);
        frame(&mut out, DATA, END_STREAM, stream, message);
        self.write(&out).await;
    }

    /// Reads frames until `stream` ends, collecting its response; other
    /// streams' frames are skipped.
    pub async fn reply(&mut self, stream: u32) -> Reply {
        let mut reply = Reply {
            status: None,
            data: BytesMut::new(),
            trailers: false,
            end: End::Closed,
        };
        loop {
            let Some(f) = self.r.next().await else {
                return reply;
            };
            if f.kind == GOAWAY {
                // Streams up to its last stream id may still finish.
                let last =
                    u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]);
                if last < stream {
                    reply.end = End::GoAway(f.code());
                    return reply;
                }
                continue;
            }
            if f.stream != stream {
                continue;
            }
            match f.kind {
                HEADERS if reply.status.is_none() => reply.status = Some(status_of(f.block())),
                HEADERS => reply.trailers = true,
                DATA => reply.data.extend_from_slice(&f.payload),
                RST_STREAM => {
                    reply.end = End::Reset(f.code());
                    return reply;
                }
                _ => {}
            }
            if f.has(END_STREAM) && (f.kind == HEADERS || f.kind == DATA) {
                reply.end = End::Done;
                return reply;
            }
        }
    }

    /// Sends a PING and reads until its ACK: everything sent before it has
    /// been processed. False if the connection ended first.
    pub async fn ping_pong(&mut self, payload: [u8; 8]) -> bool {
        self.send(PING, 0, 0, &payload).await;
        self.r
            .until(|f| f.kind == PING && f.has(ACK) && f.payload[..] == payload)
            .await
            .is_some()
    }
}

//! A raw HTTP/2 client for tests that attack a server with frames: h2c
//! with prior knowledge, a frame writer and reader, and just enough HPACK
//! to write request header blocks (literals without Huffman, static-table
//! indexes) and to read a response's `:status`.
//!
//! Included with `#[path = "support/raw_h2.rs"] mod raw_h2;` next to
//! `mod support;`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::support::PATIENCE;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

// Error codes (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

// Settings.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

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
fn hpack_int(out: &mut Vec<u8>, n: u8, first: u8, mut value: usize) {
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

/// Reads frames from the server.
pub struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
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

/// A raw h2c connection.
pub struct Conn {
    pub r: Reader,
    pub w: OwnedWriteHalf,
}

impl Conn {
    /// Connects, sends the preface, SETTINGS with `settings` and a
    /// connection WINDOW_UPDATE of 1 GiB (so only stream windows limit the
    /// server), reads the server's SETTINGS and ACKs them, and waits for
    /// the server's ACK of ours.
    pub async fn connect(addr: SocketAddr, settings: &[(u16, u32)]) -> Conn {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (rd, w) = tcp.into_split();
        let mut conn = Conn {
            r: Reader {
                rd,
                buf: BytesMut::new(),
            },
            w,
        };
        let mut out = BytesMut::from(PREFACE);
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        frame(&mut out, SETTINGS, 0, 0, &payload);
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
                conn.send(SETTINGS, ACK, 0, &[]).await;
            }
        }
        conn
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

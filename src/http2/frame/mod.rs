//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte frame header, and writers
//! that append whole frames to a connection's output buffer.
//!
//! Parsing is done in place by the connection (payloads are read where
//! they lie); this module only knows the layout.

use super::Reason;

pub const HEADER_LEN: usize = 9;
/// The client's connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The frame size every peer must accept (SETTINGS_MAX_FRAME_SIZE default).
pub const DEFAULT_MAX_FRAME: u32 = 16_384;
pub const MAX_MAX_FRAME: u32 = (1 << 24) - 1;
pub const DEFAULT_WINDOW: u32 = 65_535;
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// A frame's 9-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// Reads a header from the first 9 bytes of `b` (which must hold them).
    pub fn parse(b: &[u8]) -> Head {
        Head {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            // The reserved bit is ignored on receipt (RFC 9113 §4.1).
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }
}

/// Appends a frame header.
pub fn put_head(dst: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME as usize);
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    dst.extend_from_slice(&[l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]);
}

pub fn put_settings(dst: &mut Vec<u8>, settings: &[(u16, u32)]) {
    put_head(dst, settings.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, value) in settings {
        dst.extend_from_slice(&id.to_be_bytes());
        dst.extend_from_slice(&value.to_be_bytes());
    }
}

pub fn put_settings_ack(dst: &mut Vec<u8>) {
    put_head(dst, 0, kind::SETTINGS, flag::ACK, 0);
}

pub fn put_ping(dst: &mut Vec<u8>, ack: bool, payload: [u8; 8]) {
    put_head(dst, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    dst.extend_from_slice(&payload);
}

pub fn put_window_update(dst: &mut Vec<u8>, stream: u32, increment: u32) {
    debug_assert!(increment > 0 && increment <= MAX_WINDOW);
    put_head(dst, 4, kind::WINDOW_UPDATE, 0, stream);
    dst.extend_from_slice(&increment.to_be_bytes());
}

pub fn put_rst_stream(dst: &mut Vec<u8>, stream: u32, reason: Reason) {
    put_head(dst, 4, kind::RST_STREAM, 0, stream);
    dst.extend_from_slice(&reason.0.to_be_bytes());
}

pub fn put_goaway(dst: &mut Vec<u8>, last_stream: u32, reason: Reason, debug: &[u8]) {
    put_head(dst, 8 + debug.len(), kind::GOAWAY, 0, 0);
    dst.extend_from_slice(&last_stream.to_be_bytes());
    dst.extend_from_slice(&reason.0.to_be_bytes());
    dst.extend_from_slice(debug);
}

pub fn put_data(dst: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    put_head(dst, data.len(), kind::DATA, flags, stream);
    dst.extend_from_slice(data);
}

/// Turns the header block that was appended to `dst` after `start` into a
/// HEADERS frame (and CONTINUATION frames when it is longer than
/// `max_frame`). `start` is where 9 bytes were reserved for the HEADERS
/// frame header, see [`reserve_head`].
pub fn finish_headers(
    dst: &mut Vec<u8>,
    start: usize,
    stream: u32,
    end_stream: bool,
    max_frame: usize,
) {
    let block_len = dst.len() - start - HEADER_LEN;
    let es = if end_stream { flag::END_STREAM } else { 0 };
    if block_len <= max_frame {
        write_head_at(
            dst,
            start,
            block_len,
            kind::HEADERS,
            es | flag::END_HEADERS,
            stream,
        );
        return;
    }
    // Rare: split the block. The tail is moved out and re-appended in
    // frames of at most `max_frame`.
    let tail = dst.split_off(start + HEADER_LEN + max_frame);
    write_head_at(dst, start, max_frame, kind::HEADERS, es, stream);
    let mut chunks = tail.chunks(max_frame).peekable();
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = if last { flag::END_HEADERS } else { 0 };
        put_head(dst, chunk.len(), kind::CONTINUATION, flags, stream);
        dst.extend_from_slice(chunk);
    }
}

/// Reserves room for a frame header to be written by [`finish_headers`];
/// returns where it starts.
pub fn reserve_head(dst: &mut Vec<u8>) -> usize {
    let start = dst.len();
    dst.extend_from_slice(&[0; HEADER_LEN]);
    start
}

fn write_head_at(dst: &mut [u8], at: usize, len: usize, kind: u8, flags: u8, stream: u32) {
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    dst[at..at + HEADER_LEN]
        .copy_from_slice(&[l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]);
}

/// Strips the padding of a DATA or HEADERS payload (RFC 9113 §6.1).
/// `None` when the pad length is not less than the payload.
pub fn unpad(head: &Head, payload: &[u8]) -> Option<(usize, usize)> {
    if !head.has(flag::PADDED) {
        return Some((0, payload.len()));
    }
    let pad = *payload.first()? as usize;
    if pad >= payload.len() {
        return None;
    }
    Some((1, payload.len() - pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip() {
        let mut b = Vec::new();
        put_head(
            &mut b,
            0x01_02_03,
            kind::HEADERS,
            flag::END_HEADERS,
            0x7fff_ffff,
        );
        assert_eq!(
            Head::parse(&b),
            Head {
                len: 0x01_02_03,
                kind: kind::HEADERS,
                flags: flag::END_HEADERS,
                stream: 0x7fff_ffff
            }
        );
        // The reserved bit is dropped.
        b[5] |= 0x80;
        assert_eq!(Head::parse(&b).stream, 0x7fff_ffff);
    }

    #[test]
    fn long_header_blocks_are_split_into_continuations() {
        let mut b = Vec::new();
        let start = reserve_head(&mut b);
        b.extend((0..25u8).collect::<Vec<_>>());
        finish_headers(&mut b, start, 3, true, 10);
        let h = Head::parse(&b);
        assert_eq!(
            (h.len, h.kind, h.flags),
            (10, kind::HEADERS, flag::END_STREAM)
        );
        let c1 = Head::parse(&b[19..]);
        assert_eq!(
            (c1.len, c1.kind, c1.flags, c1.stream),
            (10, kind::CONTINUATION, 0, 3)
        );
        let c2 = Head::parse(&b[38..]);
        assert_eq!(
            (c2.len, c2.kind, c2.flags),
            (5, kind::CONTINUATION, flag::END_HEADERS)
        );
        let mut block = Vec::new();
        block.extend_from_slice(&b[9..19]);
        block.extend_from_slice(&b[28..38]);
        block.extend_from_slice(&b[47..]);
        assert_eq!(block, (0..25u8).collect::<Vec<_>>());

        let mut b = Vec::new();
        let start = reserve_head(&mut b);
        b.extend_from_slice(b"abc");
        finish_headers(&mut b, start, 1, false, 16_384);
        let h = Head::parse(&b);
        assert_eq!((h.len, h.flags), (3, flag::END_HEADERS));
    }

    #[test]
    fn padding_is_checked() {
        let padded = Head {
            len: 0,
            kind: kind::DATA,
            flags: flag::PADDED,
            stream: 1,
        };
        assert_eq!(unpad(&padded, &[2, b'x', 0, 0]), Some((1, 2)));
        assert_eq!(unpad(&padded, &[3, b'x', 0, 0]), Some((1, 1)));
        assert_eq!(unpad(&padded, &[4, b'x', 0, 0]), None);
        assert_eq!(unpad(&padded, &[]), None);
        let plain = Head { flags: 0, ..padded };
        assert_eq!(unpad(&plain, b"xy"), Some((0, 2)));
    }
}

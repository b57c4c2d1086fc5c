//! Writing frames: each function appends one whole frame (or, for a long
//! header block, HEADERS and its CONTINUATION frames) to `dst`.

use super::{flag, kind, HEADER_LEN, MAX_MAX_FRAME, MAX_WINDOW};
use crate::http2::Reason;

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

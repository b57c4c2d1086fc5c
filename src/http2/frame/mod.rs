//! HTTP/2 frames (RFC 9113 §4, §6): the layout (the 9-byte frame header,
//! types, flags, settings), how frames are read ([`read`]: whole frames
//! split off the bytes read, payloads read where they lie) and how they are
//! written ([`write`]: whole frames appended to a connection's output
//! buffer). What a frame *means* for the connection is `conn`'s business.

mod read;
mod write;

pub use read::*;
pub use write::*;

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
    #[inline(always)]
    pub fn parse(b: &[u8]) -> Head {
        // One length check, not one per byte.
        let b: &[u8; HEADER_LEN] = b[..HEADER_LEN].try_into().expect("9 bytes");
        Head {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            // The reserved bit is ignored on receipt (RFC 9113 §4.1).
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    #[inline]
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }
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

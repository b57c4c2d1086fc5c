//! gRPC-Web's codec (the protocol: gRPC's length-prefixed messages over
//! any HTTP version, the trailers as one last frame whose flag byte has its
//! high bit set, the whole stream base64-encoded in the `-text` form).
//!
//! - [`Base64Stream`]: a streaming base64 decoder. Reads end anywhere, so
//!   a partial quantum (1 to 3 characters) waits for the next read; and
//!   clients that flush per message pad each flush, so padding may end any
//!   4-character quantum, not only the last.
//! - [`FrameCheck`]: walks the message frames of a request as they pass:
//!   flag byte, length, a body that ends on a frame boundary.
//! - [`trailer_frame`]: the trailers as gRPC-Web's last frame;
//!   [`base64_chunk`]: one flush of the `-text` form.

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The flag bit of the frame that carries the trailers.
pub const TRAILERS_FLAG: u8 = 0x80;

/// What is wrong with a gRPC-Web request body, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// A streaming base64 decoder (standard alphabet, padding required at the
/// end of the stream, allowed at the end of any quantum).
#[derive(Debug, Default)]
pub struct Base64Stream {
    carry: [u8; 4],
    len: u8,
    /// Characters decoded so far, for the error's position.
    offset: u64,
}

impl Base64Stream {
    /// Decodes `input` onto `out`; what ends mid-quantum waits for the
    /// next call.
    pub fn push(&mut self, mut input: &[u8], out: &mut BytesMut) -> Result<(), Invalid> {
        if self.len > 0 {
            let take = (4 - self.len as usize).min(input.len());
            self.carry[self.len as usize..self.len as usize + take].copy_from_slice(&input[..take]);
            self.len += take as u8;
            input = &input[take..];
            if self.len < 4 {
                return Ok(());
            }
            let quantum = self.carry;
            self.len = 0;
            self.decode(&quantum, out)?;
        }
        let whole = input.len() / 4 * 4;
        let (mut body, rest) = input.split_at(whole);
        // Padding ends a run: decode run by run.
        while !body.is_empty() {
            let end = match body.iter().position(|&b| b == b'=') {
                Some(i) => (i / 4 + 1) * 4,
                None => body.len(),
            };
            self.decode(&body[..end], out)?;
            body = &body[end..];
        }
        self.carry[..rest.len()].copy_from_slice(rest);
        self.len = rest.len() as u8;
        Ok(())
    }

    /// The stream ended: a partial quantum left over is an error.
    pub fn finish(&self) -> Result<(), Invalid> {
        if self.len == 0 {
            Ok(())
        } else {
            Err(Invalid(format!(
                "the base64 body (application/grpc-web-text) ends in the middle of a 4-character group, {} character(s) into it; every base64 flush must be padded to a multiple of 4",
                self.len
            )))
        }
    }

    /// Decodes whole quanta, where padding may only end the last.
    fn decode(&mut self, quanta: &[u8], out: &mut BytesMut) -> Result<(), Invalid> {
        let at = self.offset;
        self.offset += quanta.len() as u64;
        let start = out.len();
        out.resize(start + quanta.len() / 4 * 3, 0);
        match B64.decode_slice(quanta, &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(Invalid(format!(
                    "the body is not valid base64 (application/grpc-web-text), at character {}: {e}",
                    at + error_offset(&e) as u64
                )))
            }
        }
    }
}

fn error_offset(e: &base64::DecodeSliceError) -> usize {
    match e {
        base64::DecodeSliceError::DecodeError(
            base64::DecodeError::InvalidByte(i, _) | base64::DecodeError::InvalidLastSymbol(i, _),
        ) => *i,
        _ => 0,
    }
}

/// Walks a request's gRPC message frames as the bytes pass: 5-byte
/// headers (flag byte 0 or 1, a big-endian length), then that many bytes.
#[derive(Debug, Default)]
pub struct FrameCheck {
    head: [u8; 5],
    have: u8,
    /// Bytes of the current message still to come.
    remaining: u64,
    /// Messages whose header has been read.
    pub messages: u64,
}

impl FrameCheck {
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Invalid> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining as usize).min(data.len());
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let take = (5 - self.have as usize).min(data.len());
            self.head[self.have as usize..self.have as usize + take].copy_from_slice(&data[..take]);
            self.have += take as u8;
            data = &data[take..];
            if self.have < 5 {
                break;
            }
            self.have = 0;
            self.messages += 1;
            let flag = self.head[0];
            if flag & TRAILERS_FLAG != 0 {
                return Err(Invalid(format!(
                    "message {} of the request is a trailers frame (flag byte {flag:#04x}); a gRPC-Web request carries messages only",
                    self.messages
                )));
            }
            if flag > 1 {
                return Err(Invalid(format!(
                    "message {} of the request has flag byte {flag:#04x}; gRPC message frames start with 0 (plain) or 1 (compressed)",
                    self.messages
                )));
            }
            self.remaining =
                u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]]) as u64;
        }
        Ok(())
    }

    /// The body ended: it must end on a frame boundary.
    pub fn finish(&self) -> Result<(), Invalid> {
        if self.have > 0 {
            return Err(Invalid(format!(
                "the request body ends inside the 5-byte header of message {}",
                self.messages + 1
            )));
        }
        if self.remaining > 0 {
            return Err(Invalid(format!(
                "the request body ends {} byte(s) short of the length message {} declares",
                self.remaining, self.messages
            )));
        }
        Ok(())
    }
}

/// The trailers as gRPC-Web's last frame: flag 0x80, the length, then
/// `name: value\r\n` per field (names are lower-case in a `HeaderMap`).
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let len: usize = trailers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(TRAILERS_FLAG);
    out.put_u32(len as u32);
    for (name, value) in trailers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

/// Base64 of one chunk, padded: each flush stands alone, as clients that
/// decode as bytes arrive expect.
pub fn base64_chunk(data: &[u8]) -> Bytes {
    Bytes::from(B64.encode(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_chunks(chunks: &[&[u8]]) -> Result<Vec<u8>, Invalid> {
        let mut d = Base64Stream::default();
        let mut out = BytesMut::new();
        for c in chunks {
            d.push(c, &mut out)?;
        }
        d.finish()?;
        Ok(out.to_vec())
    }

    #[test]
    fn base64_whole_and_split() {
        assert_eq!(decode_chunks(&[b"aGVsbG8="]).unwrap(), b"hello");
        // Split inside quanta, every way.
        let text = b"aGVsbG8gd29ybGQ=";
        for i in 0..text.len() {
            for j in i..text.len() {
                let got = decode_chunks(&[&text[..i], &text[i..j], &text[j..]]).unwrap();
                assert_eq!(got, b"hello world", "split at {i},{j}");
            }
        }
    }

    #[test]
    fn base64_padding_mid_stream() {
        // "a" padded, then "bc" padded, then "def": three flushes.
        let got = decode_chunks(&[b"YQ==", b"YmM=", b"ZGVm"]).unwrap();
        assert_eq!(got, b"abcdef");
        let got = decode_chunks(&[b"YQ==YmM=ZGVm"]).unwrap();
        assert_eq!(got, b"abcdef");
        let got = decode_chunks(&[b"Y", b"Q=", b"=Ym", b"M=ZG", b"Vm"]).unwrap();
        assert_eq!(got, b"abcdef");
    }

    #[test]
    fn base64_refuses() {
        assert!(
            decode_chunks(&[b"aGVsbG8"]).is_err(),
            "partial quantum at the end"
        );
        assert!(decode_chunks(&[b"a!Vs"]).is_err(), "bad character");
        assert!(
            decode_chunks(&[b"a=Vs"]).is_err(),
            "padding inside a quantum"
        );
        assert!(decode_chunks(&[b"aGVs\nbG8="]).is_err(), "whitespace");
        let e = decode_chunks(&[b"aGVsbG8=", b"aG!s"]).unwrap_err();
        assert!(e.0.contains("character 10"), "{}", e.0);
    }

    #[test]
    fn frames_checked() {
        let mut f = FrameCheck::default();
        f.feed(&[0, 0, 0, 0, 2, b'h']).unwrap();
        f.feed(&[b'i', 1, 0, 0]).unwrap();
        f.feed(&[0, 0]).unwrap();
        f.finish().unwrap();
        assert_eq!(f.messages, 2);

        let mut f = FrameCheck::default();
        assert!(f.feed(&[0x80, 0, 0, 0, 0]).is_err());
        let mut f = FrameCheck::default();
        assert!(f.feed(&[2, 0, 0, 0, 0]).is_err());
        let mut f = FrameCheck::default();
        f.feed(&[0, 0, 0, 0, 3, 1]).unwrap();
        assert!(f.finish().unwrap_err().0.contains("2 byte(s) short"));
        let mut f = FrameCheck::default();
        f.feed(&[0, 0]).unwrap();
        assert!(f.finish().is_err());
    }

    #[test]
    fn trailers_frame_layout() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        t.insert("grpc-message", "ok".parse().unwrap());
        let f = trailer_frame(&t);
        let text = b"grpc-status: 0\r\ngrpc-message: ok\r\n";
        assert_eq!(f[0], 0x80);
        assert_eq!(
            u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize,
            text.len()
        );
        assert_eq!(&f[5..], text);
        assert_eq!(base64_chunk(&f), B64.encode(&f[..]));
    }
}

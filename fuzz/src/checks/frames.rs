//! The frame layer (`http2::frame`) on arbitrary bytes: headers, padding,
//! writers, header-block splitting; and what `http2::fields` makes of the
//! header blocks found (RFC 9113 §8 checks hold for every head it accepts).

use torii::http2::fields::{RequestHead, ResponseHead, Trailers};
use torii::http2::frame::{self, flag, kind, Head};
use torii::http2::hpack::Decoder;

pub fn run(data: &[u8]) {
    let mut rest = data;
    let mut decoder = Decoder::new(4096);
    while rest.len() >= frame::HEADER_LEN {
        let head = Head::parse(rest);
        assert_eq!(head.stream & 0x8000_0000, 0);
        assert_eq!(head.len, u32::from_be_bytes([0, rest[0], rest[1], rest[2]]));
        let mut again = Vec::new();
        frame::put_head(
            &mut again,
            head.len as usize,
            head.kind,
            head.flags,
            head.stream,
        );
        assert_eq!(Head::parse(&again), head);
        assert_eq!(again[..5], rest[..5]);
        let end = (frame::HEADER_LEN + head.len as usize).min(rest.len());
        let payload = &rest[frame::HEADER_LEN..end];
        match frame::unpad(&head, payload) {
            Some((from, to)) => {
                assert!(from <= to && to <= payload.len());
                if head.has(flag::PADDED) {
                    assert_eq!(from, 1);
                    assert_eq!(payload.len() - to, payload[0] as usize);
                } else {
                    assert_eq!((from, to), (0, payload.len()));
                }
                if head.kind == kind::HEADERS {
                    let mut block = &payload[from..to];
                    if head.has(flag::PRIORITY) && block.len() >= 5 {
                        block = &block[5..];
                    }
                    header_block(&mut decoder, block);
                }
            }
            None => {
                assert!(head.has(flag::PADDED));
                assert!(payload.is_empty() || payload[0] as usize >= payload.len());
            }
        }
        rest = &rest[end..];
    }
    // The writers: a block split at any frame size comes back whole.
    if let Some((&n, block)) = data.split_first() {
        let max = 1 + n as usize;
        let mut out = Vec::new();
        let start = frame::reserve_head(&mut out);
        out.extend_from_slice(block);
        frame::finish_headers(&mut out, start, 3, n & 1 == 1, max);
        let mut joined = Vec::new();
        let mut pos = 0;
        let mut frames = 0;
        while pos < out.len() {
            let h = Head::parse(&out[pos..]);
            assert!(h.len as usize <= max);
            assert_eq!(
                h.kind,
                if frames == 0 {
                    kind::HEADERS
                } else {
                    kind::CONTINUATION
                }
            );
            assert_eq!(h.stream, 3);
            joined.extend_from_slice(&out[pos + 9..pos + 9 + h.len as usize]);
            pos += 9 + h.len as usize;
            frames += 1;
            assert_eq!(h.has(flag::END_HEADERS), pos == out.len());
        }
        assert_eq!(joined, block);
    }
}

/// Whatever the fields, an accepted head holds RFC 9113 §8's rules.
fn header_block(decoder: &mut Decoder, block: &[u8]) {
    let mut fields = Vec::new();
    if decoder
        .decode(block, 64 * 1024, |f| fields.push(f))
        .is_err()
    {
        *decoder = Decoder::new(4096);
        return;
    }
    let forbidden = [
        "connection",
        "transfer-encoding",
        "keep-alive",
        "upgrade",
        "proxy-connection",
    ];
    let mut req = RequestHead::default();
    let mut resp = ResponseHead::default();
    let mut trailers = Trailers::default();
    for f in fields {
        req.field(f.clone());
        resp.field(f.clone());
        trailers.field(f);
    }
    if let Ok((parts, content_length)) = req.finish() {
        for name in forbidden {
            assert!(!parts.headers.contains_key(name), "request with {name}");
        }
        if let Some(te) = parts.headers.get("te") {
            assert_eq!(te, "trailers");
        }
        if let Some(n) = content_length {
            let v = parts
                .headers
                .get("content-length")
                .expect("content-length kept");
            assert_eq!(v.to_str().unwrap().parse::<u64>().unwrap(), n);
        }
        if parts.method != http::Method::CONNECT {
            assert!(parts.uri.path_and_query().is_some());
        }
    }
    if let Ok((parts, _)) = resp.finish() {
        for name in forbidden {
            assert!(!parts.headers.contains_key(name), "response with {name}");
        }
    }
    if let Ok(map) = trailers.finish() {
        assert!(map.keys().all(|k| !k.as_str().starts_with(':')));
    }
}

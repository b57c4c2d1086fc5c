//! Tests of `decoder.rs`.
use super::*;
use crate::http2::hpack::huffman;

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn decode(d: &mut Decoder, block: &[u8]) -> Result<Vec<Field>, DecodeError> {
    let mut out = Vec::new();
    let info = d.decode(block, usize::MAX, |f| out.push(f))?;
    assert!(!info.over_limit);
    let size: usize = out
        .iter()
        .map(|f| field_size(f.name.as_bytes().len(), f.value.len()))
        .sum();
    assert_eq!(info.list_size, size);
    Ok(out)
}

/// Fields as "name: value" lines, for comparing with the RFC's lists.
fn text(fields: &[Field]) -> Vec<String> {
    fields
        .iter()
        .map(|f| {
            format!(
                "{}: {}",
                String::from_utf8_lossy(f.name.as_bytes()),
                String::from_utf8_lossy(&f.value)
            )
        })
        .collect()
}

/// The dynamic table as "(size) name: value" lines, newest first, as the RFC prints it.
fn table(d: &Decoder) -> Vec<String> {
    d.table
        .entries
        .iter()
        .map(|e| {
            format!(
                "(s = {}) {}: {}",
                e.size,
                String::from_utf8_lossy(e.name.as_bytes()),
                String::from_utf8_lossy(&e.value)
            )
        })
        .collect()
}

#[test]
fn c_2_1_literal_with_indexing() {
    let mut d = Decoder::new(4096);
    let f = decode(
        &mut d,
        &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    )
    .unwrap();
    assert_eq!(text(&f), ["custom-key: custom-header"]);
    assert_eq!(table(&d), ["(s = 55) custom-key: custom-header"]);
    assert_eq!(d.table_size(), 55);
}

#[test]
fn c_2_2_literal_without_indexing() {
    let mut d = Decoder::new(4096);
    let f = decode(&mut d, &hex("040c 2f73 616d 706c 652f 7061 7468")).unwrap();
    assert_eq!(f[0].name, Name::Path);
    assert!(!f[0].never_indexed);
    assert_eq!(text(&f), [":path: /sample/path"]);
    assert_eq!(d.table_len(), 0);
}

#[test]
fn c_2_3_literal_never_indexed() {
    let mut d = Decoder::new(4096);
    let f = decode(&mut d, &hex("1008 7061 7373 776f 7264 0673 6563 7265 74")).unwrap();
    assert_eq!(text(&f), ["password: secret"]);
    assert!(f[0].never_indexed);
    assert_eq!(d.table_len(), 0);
}

#[test]
fn c_2_4_indexed() {
    let mut d = Decoder::new(4096);
    let f = decode(&mut d, &[0x82]).unwrap();
    assert_eq!(
        f,
        [Field {
            name: Name::Method,
            value: Bytes::from_static(b"GET"),
            never_indexed: false,
        }]
    );
    assert_eq!(d.table_len(), 0);
}

fn requests(blocks: [&str; 3]) {
    let mut d = Decoder::new(4096);
    let f = decode(&mut d, &hex(blocks[0])).unwrap();
    assert_eq!(
        text(&f),
        [
            ":method: GET",
            ":scheme: http",
            ":path: /",
            ":authority: www.example.com"
        ]
    );
    assert_eq!(table(&d), ["(s = 57) :authority: www.example.com"]);
    assert_eq!(d.table_size(), 57);

    let f = decode(&mut d, &hex(blocks[1])).unwrap();
    assert_eq!(
        text(&f),
        [
            ":method: GET",
            ":scheme: http",
            ":path: /",
            ":authority: www.example.com",
            "cache-control: no-cache"
        ]
    );
    assert_eq!(f[4].name, Name::Header(http::header::CACHE_CONTROL));
    assert_eq!(
        table(&d),
        [
            "(s = 53) cache-control: no-cache",
            "(s = 57) :authority: www.example.com"
        ]
    );
    assert_eq!(d.table_size(), 110);

    let f = decode(&mut d, &hex(blocks[2])).unwrap();
    assert_eq!(
        text(&f),
        [
            ":method: GET",
            ":scheme: https",
            ":path: /index.html",
            ":authority: www.example.com",
            "custom-key: custom-value"
        ]
    );
    assert_eq!(
        table(&d),
        [
            "(s = 54) custom-key: custom-value",
            "(s = 53) cache-control: no-cache",
            "(s = 57) :authority: www.example.com"
        ]
    );
    assert_eq!(d.table_size(), 164);
}

#[test]
fn c_3_requests_without_huffman() {
    requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn c_4_requests_with_huffman() {
    requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

fn responses(blocks: [&str; 3]) {
    let mut d = Decoder::new(256);
    let f = decode(&mut d, &hex(blocks[0])).unwrap();
    assert_eq!(
        text(&f),
        [
            ":status: 302",
            "cache-control: private",
            "date: Mon, 21 Oct 2013 20:13:21 GMT",
            "location: https://www.example.com"
        ]
    );
    assert_eq!(
        table(&d),
        [
            "(s = 63) location: https://www.example.com",
            "(s = 65) date: Mon, 21 Oct 2013 20:13:21 GMT",
            "(s = 52) cache-control: private",
            "(s = 42) :status: 302"
        ]
    );
    assert_eq!(d.table_size(), 222);

    let f = decode(&mut d, &hex(blocks[1])).unwrap();
    assert_eq!(
        text(&f),
        [
            ":status: 307",
            "cache-control: private",
            "date: Mon, 21 Oct 2013 20:13:21 GMT",
            "location: https://www.example.com"
        ]
    );
    assert_eq!(
        table(&d),
        [
            "(s = 42) :status: 307",
            "(s = 63) location: https://www.example.com",
            "(s = 65) date: Mon, 21 Oct 2013 20:13:21 GMT",
            "(s = 52) cache-control: private"
        ]
    );
    assert_eq!(d.table_size(), 222);

    let f = decode(&mut d, &hex(blocks[2])).unwrap();
    assert_eq!(
        text(&f),
        [
            ":status: 200",
            "cache-control: private",
            "date: Mon, 21 Oct 2013 20:13:22 GMT",
            "location: https://www.example.com",
            "content-encoding: gzip",
            "set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
        ]
    );
    assert_eq!(
        table(&d),
        [
            "(s = 98) set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            "(s = 52) content-encoding: gzip",
            "(s = 65) date: Mon, 21 Oct 2013 20:13:22 GMT"
        ]
    );
    assert_eq!(d.table_size(), 215);
}

#[test]
fn c_5_responses_without_huffman() {
    responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31",
    ]);
}

#[test]
fn c_6_responses_with_huffman() {
    responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ]);
}

#[test]
fn static_fields_use_http_constants() {
    let mut d = Decoder::new(4096);
    // accept-encoding: gzip, deflate; content-type (literal name by index, without indexing).
    let mut block = vec![0x80 | 16, 0x0f, 31 - 15, 0x03];
    block.extend_from_slice(b"a/b");
    let f = decode(&mut d, &block).unwrap();
    assert_eq!(f[0].name, Name::Header(http::header::ACCEPT_ENCODING));
    assert_eq!(f[0].value, "gzip, deflate");
    assert_eq!(f[1].name, Name::Header(http::header::CONTENT_TYPE));
    assert_eq!(f[1].value, "a/b");
}

/// A literal, without indexing, with a literal name.
fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = vec![0x00, name.len() as u8];
    b.extend_from_slice(name);
    b.push(value.len() as u8);
    b.extend_from_slice(value);
    b
}

#[test]
fn literal_names_are_validated() {
    let mut d = Decoder::new(4096);
    let mut block = literal(b"X-Upper", b"1");
    block.extend(literal(b":foo", b"2"));
    block.extend(literal(b"te", b"trailers"));
    block.extend(literal(b"bad name", b"3"));
    block.extend(literal(b"", b"4"));
    block.extend(literal(b":protocol", b"websocket"));
    block.extend(literal(b"content-length", b"5"));
    block.extend(literal(b"x-caf\xc3\xa9", b"6"));
    let f = decode(&mut d, &block).unwrap();
    assert_eq!(f[0].name, Name::Invalid(Bytes::from_static(b"X-Upper")));
    assert_eq!(f[1].name, Name::Invalid(Bytes::from_static(b":foo")));
    assert_eq!(f[2].name, Name::Header(http::header::TE));
    assert_eq!(f[3].name, Name::Invalid(Bytes::from_static(b"bad name")));
    assert_eq!(f[4].name, Name::Invalid(Bytes::new()));
    assert_eq!(f[5].name, Name::Protocol);
    assert_eq!(f[6].name, Name::Header(http::header::CONTENT_LENGTH));
    assert!(matches!(f[7].name, Name::Invalid(_)));
    assert_eq!(f.len(), 8);
    // An uppercase name in the dynamic table stays in sync: referenced later, still invalid.
    let mut block = vec![0x40, 0x03];
    block.extend_from_slice(b"Foo");
    block.extend_from_slice(&[0x01, b'x', 0x80 | 62]);
    let f = decode(&mut d, &block).unwrap();
    assert_eq!(f[1].name, Name::Invalid(Bytes::from_static(b"Foo")));
    assert_eq!(d.table_size(), 36);
}

#[test]
fn name_cache_hands_out_equal_names() {
    let mut d = Decoder::new(4096);
    let mut block = literal(b"x-request-id", b"a");
    block.extend(literal(b"x-request-id", b"b"));
    block.extend(literal(b"grpc-timeout", b"1S"));
    let first = decode(&mut d, &block).unwrap();
    let second = decode(&mut d, &block).unwrap();
    assert_eq!(first, second);
    assert_eq!(first[1].name.as_bytes(), b"x-request-id");
    assert_eq!(first[2].name.as_bytes(), b"grpc-timeout");
    // Uppercase is not a cache hit for a lowercase entry.
    let f = decode(&mut d, &literal(b"X-Request-Id", b"c")).unwrap();
    assert!(matches!(f[0].name, Name::Invalid(_)));
}

#[test]
fn huffman_names_and_values() {
    let mut d = Decoder::new(4096);
    let name = huffman::encode(b"x-trace");
    let value = huffman::encode(b"abc/DEF");
    let mut block = vec![0x10, 0x80 | name.len() as u8];
    block.extend_from_slice(&name);
    block.push(0x80 | value.len() as u8);
    block.extend_from_slice(&value);
    let f = decode(&mut d, &block).unwrap();
    assert_eq!(text(&f), ["x-trace: abc/DEF"]);
    assert_eq!(d.table_len(), 0);
}

#[test]
fn a_repeated_huffman_path_decodes_the_same_from_the_last_one() {
    let mut d = Decoder::new(4096);
    let path_block = |p: &[u8]| {
        // :path (static name 4), literal without indexing, Huffman.
        let v = huffman::encode(p);
        let mut block = vec![0x04, 0x80 | v.len() as u8];
        block.extend_from_slice(&v);
        block
    };
    // An empty Huffman :path, first thing: empty.
    let f = decode(&mut d, &[0x04, 0x80]).unwrap();
    assert!(f[0].value.is_empty());
    let a = path_block(b"/torii.echo.v1.Echo/Unary");
    let b = path_block(b"/torii.echo.v1.Echo/Other");
    for block in [&a, &a, &b, &a] {
        let want = if std::ptr::eq(block, &b) {
            "Other"
        } else {
            "Unary"
        };
        let f = decode(&mut d, block).unwrap();
        assert_eq!(f.len(), 1);
        assert!(matches!(f[0].name, Name::Path));
        assert_eq!(f[0].value, format!("/torii.echo.v1.Echo/{want}").as_bytes());
    }
    // A bad Huffman string is still an error, cached path or not.
    let mut bad = vec![0x04, 0x81, 0x00];
    assert!(decode(&mut d, &bad).is_err());
    bad[2] = 0xff;
    assert!(decode(&mut d, &bad).is_err());
    assert_eq!(d.table_len(), 0);
}

#[test]
fn malformed_blocks() {
    let mut d = Decoder::new(4096);
    assert_eq!(decode(&mut d, &[0x80]), Err(DecodeError::ZeroIndex));
    assert_eq!(
        decode(&mut d, &[0x80 | 62]),
        Err(DecodeError::BadIndex {
            index: 62,
            table_len: 61
        })
    );
    // A literal whose name index is past the table.
    assert_eq!(
        decode(&mut d, &[0x0f, 0x30, 0x01, b'x']),
        Err(DecodeError::BadIndex {
            index: 63,
            table_len: 61
        })
    );
    // 2^32: 127 + continuation bytes.
    let mut big = vec![0xff];
    let mut rest = (1u64 << 32) - 127;
    while rest >= 128 {
        big.push(rest as u8 | 0x80);
        rest >>= 7;
    }
    big.push(rest as u8);
    assert_eq!(decode(&mut d, &big), Err(DecodeError::IntegerOverflow));
    // Endless zero continuation bytes.
    assert_eq!(
        decode(&mut d, &[0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
        Err(DecodeError::IntegerOverflow)
    );
    // An integer cut short.
    assert_eq!(decode(&mut d, &[0xff, 0x80]), Err(DecodeError::Truncated));
    // A string longer than what is left.
    assert_eq!(
        decode(&mut d, &[0x04, 0x05, b'/', b'a']),
        Err(DecodeError::StringPastEnd {
            len: 5,
            remaining: 2
        })
    );
    // The block ends before the value.
    assert_eq!(
        decode(&mut d, &[0x00, 0x01, b'a']),
        Err(DecodeError::Truncated)
    );
    // Huffman: bad padding, EOS.
    assert_eq!(
        decode(&mut d, &[0x04, 0x81, 0b0001_1000]),
        Err(DecodeError::HuffmanPadding)
    );
    assert_eq!(
        decode(&mut d, &[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]),
        Err(DecodeError::HuffmanEos)
    );
    // Size updates: above the maximum, after a field.
    assert_eq!(
        decode(&mut d, &[0x3f, 0xe2, 0x1f]),
        Err(DecodeError::SizeUpdateTooLarge {
            size: 4097,
            max: 4096
        })
    );
    assert_eq!(
        decode(&mut d, &[0x82, 0x20]),
        Err(DecodeError::SizeUpdateNotAtStart)
    );
    assert_eq!(
        DecodeError::BadIndex {
            index: 97,
            table_len: 70
        }
        .to_string(),
        "header block refers to table index 97; the table has 70 entries"
    );
}

#[test]
fn size_updates_at_block_start() {
    let mut d = Decoder::new(4096);
    decode(
        &mut d,
        &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    )
    .unwrap();
    assert_eq!(d.table_len(), 1);
    // Two updates (0 then 4096), then a field: the table was emptied.
    let f = decode(&mut d, &[0x20, 0x3f, 0xe1, 0x1f, 0x82]).unwrap();
    assert_eq!(text(&f), [":method: GET"]);
    assert_eq!(d.table_len(), 0);
    assert_eq!(d.table.max_size, 4096);
    // A block of only an update is fine; the smaller table then limits insertions.
    decode(&mut d, &[0x3f, 0x11]).unwrap(); // 48
    assert_eq!(d.table.max_size, 48);
    decode(&mut d, &literal_indexed(b"a", b"b")).unwrap();
    assert_eq!(d.table_size(), 34);
    decode(&mut d, &literal_indexed(b"a", b"0123456789abcdefgh")).unwrap();
    assert_eq!(
        d.table_len(),
        0,
        "an entry larger than the table empties it"
    );
}

fn literal_indexed(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = literal(name, value);
    b[0] = 0x40;
    b
}

#[test]
fn list_limit_stops_emitting_but_keeps_the_table_in_sync() {
    // A block mixing every kind of representation.
    let mut block = Vec::new();
    block.extend(literal_indexed(b"x-one", b"1111111111"));
    block.push(0x82);
    block.extend(literal(b"x-two", b"2222222222"));
    block.extend(literal_indexed(b"x-three", b"3333333333"));
    block.push(0x80 | 63); // x-one (x-three is 62 now)
    block.extend(literal_indexed(b"x-four", b"4444"));
    block.extend([0x10, 0x04, b'x', b'-', b'f', b'5', 0x81, 0b0001_1111]); // Huffman "a"

    let mut unlimited = Decoder::new(4096);
    let all = decode(&mut unlimited, &block).unwrap();
    assert_eq!(all.len(), 7);

    for limit in [0, 46, 80, 120, 200] {
        let mut d = Decoder::new(4096);
        let mut got = Vec::new();
        let info = d.decode(&block, limit, |f| got.push(f)).unwrap();
        let expected: Vec<Field> = all
            .iter()
            .scan(0, |size, f| {
                *size += field_size(f.name.as_bytes().len(), f.value.len());
                (*size <= limit).then(|| f.clone())
            })
            .collect();
        assert_eq!(got, expected, "limit {limit}");
        assert!(info.over_limit);
        assert_eq!(info.list_size, 47 + 42 + 47 + 49 + 47 + 42 + 37);
        assert_eq!(table(&d), table(&unlimited), "limit {limit}");
        // The next block decodes the same either way.
        let next = [0x80 | 62, 0x80 | 63, 0x80 | 64];
        assert_eq!(
            decode(&mut d, &next).unwrap(),
            decode(&mut unlimited.clone_for_test(), &next).unwrap()
        );
    }
}

impl Decoder {
    fn clone_for_test(&self) -> Decoder {
        let mut d = Decoder::new(self.max_table_size);
        d.table.max_size = self.table.max_size;
        for e in self.table.entries.iter().rev() {
            d.table.insert(e.name.clone(), e.value.clone(), e.size);
        }
        d
    }
}

#[test]
fn hpack_bomb_is_cheap() {
    // One 4000-byte entry, then 10,000 references to it: 40 MB of header list if it were
    // materialised. Past the limit, a reference costs an addition: no clone, no copy.
    // Literal with incremental indexing, name "x", value length 4000 = 127 + 3873, and
    // 3873 = 0x21 + (0x1e << 7).
    let mut block = vec![0x40, 0x01, b'x', 0x7f, 0x80 | 0x21, 0x1e];
    block.extend(std::iter::repeat_n(b'v', 4000));
    block.extend(std::iter::repeat_n(0x80 | 62, 10_000));

    let mut d = Decoder::new(4096);
    let mut emitted = 0;
    let mut bytes = 0;
    let started = std::time::Instant::now();
    let info = d
        .decode(&block, 16 << 10, |f| {
            emitted += 1;
            bytes += f.value.len();
        })
        .unwrap();
    let took = started.elapsed();
    assert!(info.over_limit);
    assert_eq!(info.list_size, 10_001 * (1 + 4000 + 32));
    // 16 KiB fit 4 fields of 4033 bytes; everything after is counted only.
    assert_eq!(emitted, 4);
    assert_eq!(bytes, 16_000);
    assert_eq!(d.table_len(), 1);
    eprintln!("HPACK bomb: 10,001 fields decoded in {took:?}");
}

//! HPACK: torii's decoder against the reference decoder, blocks sharing
//! one dynamic table; encoder → decoder round trips (sensitive fields never
//! indexed); Huffman against the reference code.

use http::{HeaderName, HeaderValue};
use torii::http2::hpack::{Decoder, Encoder, Field, Name};

use super::hpack_ref::{self, name_is_valid, RefDecoder, RefField, Repr};
use super::input::Input;

fn describe(f: &Field) -> String {
    format!(
        "{:?}: {:?}{}",
        String::from_utf8_lossy(f.name.as_bytes()),
        String::from_utf8_lossy(&f.value),
        if f.never_indexed {
            " (never indexed)"
        } else {
            ""
        }
    )
}

/// Byte 0: our SETTINGS_HEADER_TABLE_SIZE, byte 1: the header-list limit;
/// then header blocks (length-prefixed, see [`Input::chunk`]) decoded in
/// turn by one decoder, as on one connection.
pub fn decode(data: &[u8]) {
    let mut input = Input::new(data);
    let limit = [4096usize, 0, 64, 256, 1024, 4096, 65_536, 100][input.pick(8)];
    let max_list = [16_384usize, 0, 40, 100, 1000, 65_536, usize::MAX, 4096][input.pick(8)];
    let mut torii = Decoder::new(limit);
    let mut reference = RefDecoder::new(limit);
    while !input.is_empty() {
        let block = input.chunk();
        let mut got = Vec::new();
        let result = torii.decode(block, max_list, |f| got.push(f));
        let want = reference.decode(block);
        let fields = match (result, want) {
            (Err(_), Err(_)) => return,
            (Ok(_), Err(e)) => {
                panic!("torii decoded a block the reference rejects ({e}): {block:02x?}")
            }
            (Err(e), Ok(_)) => {
                panic!("torii rejected a block the reference decodes ({e}): {block:02x?}")
            }
            (Ok(info), Ok(fields)) => (info, fields),
        };
        let (info, fields) = fields;
        let mut size = 0usize;
        let mut over = false;
        let mut emitted: Vec<&RefField> = Vec::new();
        for f in &fields {
            size = size.saturating_add(f.size());
            if !over && size <= max_list {
                emitted.push(f);
            } else {
                over = true;
            }
        }
        assert_eq!(info.list_size, size, "list size of {block:02x?}");
        assert_eq!(info.over_limit, over, "over limit for {block:02x?}");
        assert_eq!(
            got.len(),
            emitted.len(),
            "fields of {block:02x?}: {:?}",
            got.iter().map(describe).collect::<Vec<_>>()
        );
        for (g, w) in got.iter().zip(&emitted) {
            assert_eq!(g.name.as_bytes(), &w.name[..], "name in {block:02x?}");
            assert_eq!(&g.value[..], &w.value[..], "value in {block:02x?}");
            assert_eq!(
                g.never_indexed,
                w.repr == Repr::Never,
                "never-indexed flag in {block:02x?}"
            );
            assert_eq!(
                !matches!(g.name, Name::Invalid(_)),
                name_is_valid(&w.name),
                "validity of the name {:?}",
                String::from_utf8_lossy(&w.name)
            );
        }
        assert_eq!(
            torii.table_len(),
            reference.table.len(),
            "table entries after {block:02x?}"
        );
        assert_eq!(
            torii.table_size(),
            reference.size(),
            "table size after {block:02x?}"
        );
    }
}

const NAMES: [&str; 16] = [
    ":path",
    ":authority",
    ":method",
    ":status",
    "content-type",
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
    "x-request-id",
    "grpc-timeout",
    "grpc-message",
    "content-length",
    "x-custom",
    "user-agent",
    "accept-encoding",
];

/// A program of header blocks encoded by torii's encoder (with table size
/// changes between them), decoded by torii's decoder and the reference:
/// every field comes back as it went, sensitive ones (and credentials)
/// never enter a dynamic table and arrive marked never-indexed.
pub fn round_trip(data: &[u8]) {
    let mut input = Input::new(data);
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(4096);
    let mut reference = RefDecoder::new(4096);
    // Fields sent without the sensitive flag so far: those may be in the
    // table whatever a later block marks.
    let mut plain: Vec<(String, Vec<u8>)> = Vec::new();
    while !input.is_empty() {
        if input.pick(8) == 0 {
            let n = [0usize, 1, 64, 100, 256, 4096, 65_536][input.pick(7)];
            enc.set_max_table_size(n);
        }
        let mut block = Vec::new();
        enc.begin_block(&mut block);
        let mut sent: Vec<(String, Vec<u8>, bool)> = Vec::new();
        for _ in 0..1 + input.pick(8) {
            let name = NAMES[input.pick(NAMES.len())];
            let value: Vec<u8> = match input.pick(4) {
                0 => b"/".to_vec(),
                1 => b"POST".to_vec(),
                2 => "v".repeat(input.u8() as usize).into_bytes(),
                _ => input
                    .chunk()
                    .iter()
                    .map(|&b| if (0x20..0x7f).contains(&b) { b } else { b'x' })
                    .collect(),
            };
            let sensitive = input.pick(3) == 0;
            let pseudo = name.starts_with(':');
            if pseudo {
                let n = match name {
                    ":path" => Name::Path,
                    ":authority" => Name::Authority,
                    ":method" => Name::Method,
                    _ => Name::Status,
                };
                enc.encode_pseudo(n, &value, &mut block);
                sent.push((name.into(), value, false));
            } else {
                let mut v = HeaderValue::from_bytes(&value).expect("visible ASCII");
                v.set_sensitive(sensitive);
                enc.encode_header(&HeaderName::from_static(name), &v, &mut block);
                let credential = matches!(
                    name,
                    "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
                );
                sent.push((name.into(), value, sensitive || credential));
            }
        }
        let mut got = Vec::new();
        dec.decode(&block, usize::MAX, |f| got.push(f))
            .unwrap_or_else(|e| panic!("torii cannot decode its own block ({e}): {block:02x?}"));
        let fields = reference.decode(&block).unwrap_or_else(|e| {
            panic!("the reference cannot decode torii's block ({e}): {block:02x?}")
        });
        assert_eq!(got.len(), sent.len());
        assert_eq!(fields.len(), sent.len());
        for ((g, r), (name, value, secret)) in got.iter().zip(&fields).zip(&sent) {
            assert_eq!(g.name.as_bytes(), name.as_bytes());
            assert_eq!(&g.value[..], &value[..], "{name}");
            assert_eq!(&r.name[..], name.as_bytes());
            assert_eq!(&r.value[..], &value[..]);
            if *secret {
                // A static index reveals nothing and adds nothing to a table.
                assert!(
                    matches!(r.repr, Repr::Never | Repr::IndexedStatic),
                    "sensitive {name} sent as {:?}",
                    r.repr
                );
                assert!(
                    g.never_indexed || r.repr == Repr::IndexedStatic,
                    "sensitive {name} lost its never-indexed flag"
                );
            }
        }
        for (name, value, secret) in &sent {
            if !secret {
                plain.push((name.clone(), value.clone()));
            }
        }
        for (name, value, secret) in &sent {
            if *secret {
                let in_table = reference
                    .table
                    .iter()
                    .any(|(n, v)| n == name.as_bytes() && v == value);
                let also_sent_plain = plain.iter().any(|(n, v)| n == name && v == value);
                assert!(
                    !in_table || also_sent_plain,
                    "sensitive {name} entered the dynamic table"
                );
            }
        }
        assert_eq!(dec.table_size(), reference.size());
        assert!(reference.size() <= 4096);
    }
}

/// Huffman: torii's decoder and the reference agree on every input; both
/// encoders agree; encoding then decoding gives the input back.
pub fn huffman(data: &[u8]) {
    let torii = torii::fuzzing::huffman_decode(data);
    let reference = hpack_ref::huffman_decode(data);
    match (&torii, &reference) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "decoded differently: {data:02x?}"),
        (Err(()), Err(_)) => {}
        _ => panic!("torii {torii:?}, reference {reference:?} for {data:02x?}"),
    }
    let encoded = torii::fuzzing::huffman_encode(data);
    assert_eq!(encoded, hpack_ref::huffman_encode(data));
    assert_eq!(
        torii::fuzzing::huffman_decode(&encoded).as_deref(),
        Ok(data)
    );
}

//! The HPACK Huffman code (RFC 7541 §5.2 and Appendix B), decoding only: torii's encoder sends
//! strings raw.
//!
//! Decoding runs a state machine 4 bits at a time. Its states are the 256 internal nodes of the
//! code's tree; for each state and nibble a precomputed step says where the walk ends, which
//! symbol (at most one: the shortest code has 5 bits) it completed, and whether it ran into EOS.
//! The tables (16 KiB) are built once, at first use, from [`CODES`].

use std::sync::OnceLock;

/// RFC 7541 Appendix B: for each symbol 0..=255 and EOS (256), its code aligned to the least
/// significant bit, and the code's length in bits.
#[rustfmt::skip]
pub(crate) const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28), // 0-3
    (0xfffffe4, 28), (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28), // 4-7
    (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28), // 8-11
    (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28), // 12-15
    (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28), // 16-19
    (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28), // 20-23
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28), // 24-27
    (0xffffff8, 28), (0xffffff9, 28), (0xffffffa, 28), (0xffffffb, 28), // 28-31
    (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12), // ' ' ! " #
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11), // $ % & '
    (0x3fa, 10), (0x3fb, 10), (0xf9, 8), (0x7fb, 11), // ( ) * +
    (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6), // , - . /
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6), // 0 1 2 3
    (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6), // 4 5 6 7
    (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8), // 8 9 : ;
    (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10), // < = > ?
    (0x1ffa, 13), (0x21, 6), (0x5d, 7), (0x5e, 7), // @ A B C
    (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7), // D E F G
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7), // H I J K
    (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7), // L M N O
    (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7), // P Q R S
    (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7), // T U V W
    (0xfc, 8), (0x73, 7), (0xfd, 8), (0x1ffb, 13), // X Y Z [
    (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6), // \ ] ^ _
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5), // ` a b c
    (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6), // d e f g
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7), // h i j k
    (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5), // l m n o
    (0x2b, 6), (0x76, 7), (0x2c, 6), (0x8, 5), // p q r s
    (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7), // t u v w
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15), // x y z {
    (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28), // | } ~ 127
    (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20), // 128-131
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23), // 132-135
    (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23), // 136-139
    (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23), // 140-143
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23), // 144-147
    (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23), // 148-151
    (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23), // 152-155
    (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24), // 156-159
    (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22), // 160-163
    (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21), // 164-167
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24), // 168-171
    (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23), // 172-175
    (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21), // 176-179
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23), // 180-183
    (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22), // 184-187
    (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23), // 188-191
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19), // 192-195
    (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25), // 196-199
    (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27), // 200-203
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25), // 204-207
    (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27), // 208-211
    (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24), // 212-215
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26), // 216-219
    (0xffffffd, 28), (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27), // 220-223
    (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21), // 224-227
    (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23), // 228-231
    (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25), // 232-235
    (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23), // 236-239
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26), // 240-243
    (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27), // 244-247
    (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27), // 248-251
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26), // 252-255
    (0x3fffffff, 30), // EOS
];

/// The EOS symbol's number in [`CODES`].
const EOS: u16 = 256;

/// Why a Huffman string was rejected (RFC 7541 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HuffmanError {
    /// The string contains the EOS symbol.
    Eos,
    /// The string ends with more than 7 bits of padding, or padding that is not all ones.
    Padding,
}

/// One step of the decoder, packed so that it is one load: bits 0-7 the state after 4 more bits,
/// 8-15 the symbol they completed, and the flags above.
type Step = u32;

/// The nibble completed a symbol.
const EMIT: Step = 1 << 16;
/// The nibble completed EOS: the string is malformed.
const FAIL: Step = 1 << 17;

struct Tables {
    /// Indexed by state (an internal node of the code tree, 0 = root) and the next 4 bits.
    steps: [[Step; 16]; 256],
    /// The states a string may end in: the root and the all-ones paths of 1 to 7 bits.
    accept: [bool; 256],
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Box<Tables>> = OnceLock::new();
    TABLES.get_or_init(build)
}

/// Builds the code tree from [`CODES`], then the 4-bit steps by walking it.
fn build() -> Box<Tables> {
    /// A child in the tree: an internal node's number, or a symbol with this bit set.
    const LEAF: u16 = 0x8000;
    const NONE: u16 = u16::MAX;
    let mut nodes: Vec<[u16; 2]> = vec![[NONE; 2]];
    for (sym, &(code, len)) in CODES.iter().enumerate() {
        let mut node = 0usize;
        for shift in (0..len).rev() {
            let bit = (code >> shift) as usize & 1;
            if shift == 0 {
                assert_eq!(
                    nodes[node][bit], NONE,
                    "Huffman code table is not prefix-free"
                );
                nodes[node][bit] = LEAF | sym as u16;
            } else {
                if nodes[node][bit] == NONE {
                    nodes.push([NONE; 2]);
                    nodes[node][bit] = (nodes.len() - 1) as u16;
                }
                node = nodes[node][bit] as usize;
            }
        }
    }
    assert_eq!(
        nodes.len(),
        256,
        "Huffman code table is not a complete code"
    );

    let mut tables = Box::new(Tables {
        steps: [[0; 16]; 256],
        accept: [false; 256],
    });
    for (state, row) in tables.steps.iter_mut().enumerate() {
        for (nibble, step) in row.iter_mut().enumerate() {
            let mut node = state;
            let mut flags = 0;
            for shift in (0..4).rev() {
                let child = nodes[node][(nibble >> shift) & 1];
                if child & LEAF == 0 {
                    node = child as usize;
                    continue;
                }
                if child & !LEAF == EOS {
                    flags = FAIL;
                    break;
                }
                flags = EMIT | ((child & !LEAF) as Step) << 8;
                node = 0;
            }
            *step = flags | node as Step;
        }
    }
    let mut node = 0usize;
    tables.accept[0] = true;
    for _ in 0..7 {
        node = nodes[node][1] as usize;
        tables.accept[node] = true;
    }
    tables
}

/// Runs the decoder over `src`, handing each symbol to `out`.
#[inline(always)]
fn run(src: &[u8], mut out: impl FnMut(u8)) -> Result<(), HuffmanError> {
    let tables = tables();
    let mut state = 0u8;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = tables.steps[state as usize][nibble as usize];
            if step & (EMIT | FAIL) != 0 {
                if step & FAIL != 0 {
                    return Err(HuffmanError::Eos);
                }
                out((step >> 8) as u8);
            }
            state = step as u8;
        }
    }
    if tables.accept[state as usize] {
        Ok(())
    } else {
        Err(HuffmanError::Padding)
    }
}

/// Decodes `src` and appends the result to `dst`.
pub(crate) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HuffmanError> {
    // The shortest code has 5 bits: at most 8 symbols per 5 bytes.
    dst.reserve(src.len() * 8 / 5 + 1);
    run(src, |sym| dst.push(sym))
}

/// Checks `src` and returns its decoded length, without keeping the symbols.
pub(crate) fn decoded_len(src: &[u8]) -> Result<usize, HuffmanError> {
    let mut len = 0;
    run(src, |_| len += 1)?;
    Ok(len)
}

/// A Huffman encoder, for the tests and the fuzz targets (torii sends strings raw).
pub(crate) fn encode(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u64;
    let mut bits = 0u32;
    for &b in src {
        let (code, len) = CODES[b as usize];
        acc = (acc << len) | code as u64;
        bits += len as u32;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        // Pad with the most significant bits of EOS: ones.
        out.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decoded(src: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(src, &mut out)?;
        assert_eq!(decoded_len(src), Ok(out.len()));
        Ok(out)
    }

    /// Catches a mistyped entry in [`CODES`]: the RFC's code is canonical (codes counted up in
    /// order of length, then symbol) and complete (Kraft sum exactly 1).
    #[test]
    fn code_table_is_canonical_and_complete() {
        let mut order: Vec<usize> = (0..257).collect();
        order.sort_by_key(|&s| (CODES[s].1, s));
        let mut expected = 0u64;
        let mut prev_len = CODES[order[0]].1;
        for &s in &order {
            let (code, len) = CODES[s];
            expected <<= len - prev_len;
            prev_len = len;
            assert_eq!(code as u64, expected, "symbol {s}");
            expected += 1;
        }
        let kraft: u64 = CODES.iter().map(|&(_, len)| 1u64 << (30 - len)).sum();
        assert_eq!(kraft, 1 << 30);
        assert_eq!(CODES[b'/' as usize], (0x18, 6));
        assert_eq!(CODES[256], (0x3fff_ffff, 30));
    }

    #[test]
    fn every_symbol_round_trips() {
        for b in 0..=255u8 {
            for n in 1..=3 {
                let src = vec![b; n];
                assert_eq!(decoded(&encode(&src)).unwrap(), src, "symbol {b} x{n}");
            }
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decoded(&encode(&all)).unwrap(), all);
        let rev: Vec<u8> = (0..=255).rev().collect();
        assert_eq!(decoded(&encode(&rev)).unwrap(), rev);
        assert_eq!(decoded(&[]).unwrap(), b"");
    }

    #[test]
    fn rfc_7541_strings() {
        assert_eq!(
            decoded(&hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")).unwrap(),
            b"www.example.com"
        );
        assert_eq!(decoded(&hex("a8eb 1064 9cbf")).unwrap(), b"no-cache");
        assert_eq!(decoded(&hex("25a8 49e9 5ba9 7d7f")).unwrap(), b"custom-key");
        assert_eq!(
            decoded(&hex(
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff"
            ))
            .unwrap(),
            b"Mon, 21 Oct 2013 20:13:21 GMT"
        );
        assert_eq!(
            encode(b"www.example.com"),
            hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")
        );
    }

    #[test]
    fn bad_padding_is_rejected() {
        // 'a' is 00011: padding 000 is not all ones.
        assert_eq!(decoded(&[0b0001_1000]), Err(HuffmanError::Padding));
        // 'a' with correct padding.
        assert_eq!(decoded(&[0b0001_1111]).unwrap(), b"a");
        // 'a' then 11 bits of ones: padding longer than 7 bits.
        assert_eq!(decoded(&[0b0001_1111, 0xff]), Err(HuffmanError::Padding));
        // A whole byte of ones alone is 8 bits of padding.
        assert_eq!(decoded(&[0xff]), Err(HuffmanError::Padding));
        // A string cut inside a long code ('\\' is 19 bits; keep 16): not all ones.
        let cut = &encode(b"\\")[..2];
        assert_eq!(decoded(cut), Err(HuffmanError::Padding));
    }

    #[test]
    fn eos_is_rejected() {
        // EOS is 30 ones; 32 ones contain it.
        assert_eq!(decoded(&[0xff; 4]), Err(HuffmanError::Eos));
        // EOS after a symbol: 'a' (00011) + 30 ones + 5 bits of padding.
        let mut bits = 0b00011u64;
        bits = (bits << 30) | 0x3fff_ffff;
        bits = (bits << 5) | 0x1f;
        let src = bits.to_be_bytes()[3..].to_vec();
        assert_eq!(src.len(), 5);
        assert_eq!(decoded(&src), Err(HuffmanError::Eos));
    }
}

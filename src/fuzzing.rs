//! Internals the fuzz targets (`fuzz/`) and their corpus test
//! (`tests/fuzz_corpus.rs`) check, and nothing else: not an API.

use crate::http2::hpack::huffman;

/// RFC 7541 Appendix B as torii holds it: each symbol's code (aligned to
/// the least significant bit) and length; 256 is EOS.
pub const HUFFMAN_CODES: &[(u32, u8); 257] = &huffman::CODES;

/// torii's Huffman decoder: the decoded bytes, or `Err` (EOS inside, or bad
/// padding). Checks that `decoded_len` agrees with `decode`.
#[allow(clippy::result_unit_err)]
pub fn huffman_decode(src: &[u8]) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    let decoded = huffman::decode(src, &mut out).map_err(|_| ());
    let len = huffman::decoded_len(src).map_err(|_| ());
    assert_eq!(
        decoded.map(|()| out.len()),
        len,
        "decode and decoded_len disagree"
    );
    decoded.map(|()| out)
}

/// Huffman-codes `src` (torii itself sends strings raw).
pub fn huffman_encode(src: &[u8]) -> Vec<u8> {
    huffman::encode(src)
}

//! A naive HPACK decoder (RFC 7541) written straight from the RFC, for
//! checking torii's: a `Vec` for the dynamic table, a bit-by-bit Huffman
//! decoder, no caches, no limits but the RFC's and the two torii documents
//! (integers fit in 32 bits and take at most five continuation bytes).

use std::collections::HashMap;
use std::sync::OnceLock;

/// RFC 7541 Appendix A.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// How a field was represented (RFC 7541 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repr {
    /// §6.1, from the static table.
    IndexedStatic,
    /// §6.1, from the dynamic table.
    IndexedDynamic,
    /// §6.2.1: added to the dynamic table.
    Incremental,
    /// §6.2.2.
    Without,
    /// §6.2.3.
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefField {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    pub repr: Repr,
}

impl RefField {
    pub fn size(&self) -> usize {
        self.name.len() + self.value.len() + 32
    }
}

pub struct RefDecoder {
    /// Newest first (index 62 is `table[0]`).
    pub table: Vec<(Vec<u8>, Vec<u8>)>,
    pub max: usize,
    /// The most a size update may ask for (our SETTINGS_HEADER_TABLE_SIZE).
    pub limit: usize,
}

impl RefDecoder {
    pub fn new(limit: usize) -> Self {
        RefDecoder {
            table: Vec::new(),
            max: limit,
            limit,
        }
    }

    pub fn size(&self) -> usize {
        self.table.iter().map(|(n, v)| n.len() + v.len() + 32).sum()
    }

    fn evict(&mut self) {
        while self.size() > self.max {
            self.table.pop();
        }
    }

    fn entry(&self, index: usize) -> Result<(Vec<u8>, Vec<u8>, bool), String> {
        match index {
            0 => Err("index 0".into()),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((n.as_bytes().to_vec(), v.as_bytes().to_vec(), true))
            }
            _ => self
                .table
                .get(index - 62)
                .map(|(n, v)| (n.clone(), v.clone(), false))
                .ok_or_else(|| format!("index {index} past the tables")),
        }
    }

    /// Decodes one block; every field, whatever its size.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<RefField>, String> {
        let mut r = Reader { b: block, pos: 0 };
        let mut fields = Vec::new();
        let mut at_start = true;
        while r.pos < block.len() {
            let first = block[r.pos];
            if first & 0x80 != 0 {
                let index = r.int(7)?;
                let (name, value, is_static) = self.entry(index)?;
                let repr = if is_static {
                    Repr::IndexedStatic
                } else {
                    Repr::IndexedDynamic
                };
                fields.push(RefField { name, value, repr });
            } else if first & 0xe0 == 0x20 {
                if !at_start {
                    return Err("size update after a field".into());
                }
                let size = r.int(5)?;
                if size > self.limit {
                    return Err(format!("size update to {size}"));
                }
                self.max = size;
                self.evict();
                continue;
            } else {
                let (prefix, repr) = if first & 0xc0 == 0x40 {
                    (6, Repr::Incremental)
                } else if first & 0xf0 == 0x10 {
                    (4, Repr::Never)
                } else {
                    (4, Repr::Without)
                };
                let index = r.int(prefix)?;
                let name = if index == 0 {
                    r.string()?
                } else {
                    self.entry(index)?.0
                };
                let value = r.string()?;
                if repr == Repr::Incremental {
                    let size = name.len() + value.len() + 32;
                    if size > self.max {
                        self.table.clear();
                    } else {
                        self.table.insert(0, (name.clone(), value.clone()));
                        self.evict();
                    }
                }
                fields.push(RefField { name, value, repr });
            }
            at_start = false;
        }
        Ok(fields)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.b.get(self.pos).ok_or("truncated")?;
        self.pos += 1;
        Ok(b)
    }

    /// RFC 7541 §5.1, values up to 2^32-1, at most five continuation bytes.
    fn int(&mut self, prefix: u32) -> Result<usize, String> {
        let max = (1u64 << prefix) - 1;
        let mut value = u64::from(self.byte()?) & max;
        if value < max {
            return Ok(value as usize);
        }
        for i in 0..5 {
            let b = self.byte()?;
            value += u64::from(b & 0x7f) << (7 * i);
            if value > u64::from(u32::MAX) {
                return Err("integer over 32 bits".into());
            }
            if b & 0x80 == 0 {
                return Ok(value as usize);
            }
        }
        Err("integer with too many bytes".into())
    }

    /// RFC 7541 §5.2.
    fn string(&mut self) -> Result<Vec<u8>, String> {
        let huffman = self.b.get(self.pos).ok_or("truncated")? & 0x80 != 0;
        let len = self.int(7)?;
        if len > self.b.len() - self.pos {
            return Err("string past the end".into());
        }
        let raw = &self.b[self.pos..self.pos + len];
        self.pos += len;
        if huffman {
            huffman_decode(raw)
        } else {
            Ok(raw.to_vec())
        }
    }
}

/// (length, code) → symbol.
fn codes() -> &'static HashMap<(u8, u32), u16> {
    static CODES: OnceLock<HashMap<(u8, u32), u16>> = OnceLock::new();
    CODES.get_or_init(|| {
        torii::fuzzing::HUFFMAN_CODES
            .iter()
            .enumerate()
            .map(|(sym, &(code, len))| ((len, code), sym as u16))
            .collect()
    })
}

/// Bit by bit: a symbol is complete when the bits so far are one of the
/// codes; EOS inside is an error, and what is left at the end must be at
/// most 7 bits, all ones (RFC 7541 §5.2).
pub fn huffman_decode(src: &[u8]) -> Result<Vec<u8>, String> {
    let codes = codes();
    let mut out = Vec::new();
    let (mut code, mut len) = (0u32, 0u8);
    for &byte in src {
        for i in (0..8).rev() {
            code = (code << 1) | u32::from(byte >> i & 1);
            len += 1;
            if let Some(&sym) = codes.get(&(len, code)) {
                if sym == 256 {
                    return Err("EOS in a Huffman string".into());
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            }
            if len > 30 {
                return Err("no such Huffman code".into());
            }
        }
    }
    if len > 7 || code != (1u32 << len) - 1 {
        return Err("bad Huffman padding".into());
    }
    Ok(out)
}

/// Bit by bit, from the code table: the reference encoder.
pub fn huffman_encode(src: &[u8]) -> Vec<u8> {
    let mut bits: Vec<bool> = Vec::new();
    for &b in src {
        let (code, len) = torii::fuzzing::HUFFMAN_CODES[b as usize];
        for i in (0..len).rev() {
            bits.push(code >> i & 1 == 1);
        }
    }
    while !bits.len().is_multiple_of(8) {
        bits.push(true);
    }
    bits.chunks(8)
        .map(|c| c.iter().fold(0u8, |acc, &b| acc << 1 | u8::from(b)))
        .collect()
}

/// Whether a field name is valid in HTTP/2: one of the six pseudo-headers,
/// or a non-empty lowercase token (RFC 9113 §8.2, RFC 9110 §5.6.2).
pub fn name_is_valid(name: &[u8]) -> bool {
    const PSEUDO: [&[u8]; 6] = [
        b":authority",
        b":method",
        b":path",
        b":scheme",
        b":status",
        b":protocol",
    ];
    if name.first() == Some(&b':') {
        return PSEUDO.contains(&name);
    }
    !name.is_empty()
        && name.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&c)
        })
}

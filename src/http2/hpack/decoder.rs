//! The HPACK decoder (RFC 7541 §3, §6).
//!
//! What a field costs:
//! - indexed, static table: no allocation (an `http` constant or a pseudo variant, and a
//!   `Bytes::from_static`);
//! - indexed, dynamic table: no allocation (the entry's name and value are cloned: a copy of a
//!   standard name, or an atomic increment);
//! - literal stored in the dynamic table (incremental indexing): the value gets its own buffer
//!   (plus `bytes`' shared header on its first clone), so that the entry keeps nothing else alive; a
//!   new name that `http` does not know is allocated once and then found in a small cache;
//! - literal not stored: the value is copied into a 1 KiB chunk shared with other such values
//!   (an allocation per kilobyte of them, not per field), and a literal name comes from the same
//!   cache.
//!
//! Fields past the caller's header-list limit are parsed (so that the table stays in sync) but not
//! materialised unless the dynamic table needs them: a reference to a table entry past the limit
//! costs an addition, whatever the entry's size.

use std::fmt;

use bytes::Bytes;
use http::HeaderName;

use super::huffman::{self, HuffmanError};
use super::table::{eq_bytes, hash_bytes, DecTable, STATIC, STATIC_LEN};
use super::{field_size, Field, Name};
use crate::http2::chunk::Chunk;

/// Why a header block could not be decoded. Any of these is a connection error of type
/// COMPRESSION_ERROR (RFC 9113 §4.3): the dynamic table can no longer be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The block ends inside a field representation or an integer.
    Truncated,
    /// A reference to index 0, which RFC 7541 §6.1 forbids.
    ZeroIndex,
    /// A reference past the end of the static and dynamic tables.
    BadIndex { index: usize, table_len: usize },
    /// An integer that does not fit in 32 bits.
    IntegerOverflow,
    /// A string whose length runs past the end of the block.
    StringPastEnd { len: usize, remaining: usize },
    /// A Huffman string that contains the EOS symbol.
    HuffmanEos,
    /// A Huffman string ending with more than 7 bits of padding, or padding that is not all ones.
    HuffmanPadding,
    /// A dynamic table size update above our SETTINGS_HEADER_TABLE_SIZE.
    SizeUpdateTooLarge { size: usize, max: usize },
    /// A dynamic table size update after the block's first field (RFC 7541 §4.2).
    SizeUpdateNotAtStart,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("header block ends in the middle of a field"),
            DecodeError::ZeroIndex => {
                f.write_str("header block refers to table index 0, which does not exist")
            }
            DecodeError::BadIndex { index, table_len } => write!(
                f,
                "header block refers to table index {index}; the table has {table_len} entries"
            ),
            DecodeError::IntegerOverflow => {
                f.write_str("header block has an integer that does not fit in 32 bits")
            }
            DecodeError::StringPastEnd { len, remaining } => write!(
                f,
                "header block has a {len}-byte string but only {remaining} bytes are left in it"
            ),
            DecodeError::HuffmanEos => {
                f.write_str("header block has a Huffman string that contains the EOS symbol")
            }
            DecodeError::HuffmanPadding => f.write_str(
                "header block has a Huffman string whose padding is longer than 7 bits or not all ones",
            ),
            DecodeError::SizeUpdateTooLarge { size, max } => write!(
                f,
                "header block asks for a {size}-byte dynamic table; our limit is {max} bytes"
            ),
            DecodeError::SizeUpdateNotAtStart => {
                f.write_str("header block has a dynamic table size update after a field")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<HuffmanError> for DecodeError {
    fn from(e: HuffmanError) -> Self {
        match e {
            HuffmanError::Eos => DecodeError::HuffmanEos,
            HuffmanError::Padding => DecodeError::HuffmanPadding,
        }
    }
}

/// What [`Decoder::decode`] found out about a block besides its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// The header list's size (RFC 7541 §4.1: name + value + 32 per field), all fields counted,
    /// emitted or not.
    pub list_size: usize,
    /// Whether the list went over `max_list_size` (and so some fields were not emitted).
    pub over_limit: bool,
}

/// One connection's HPACK decoding state.
pub struct Decoder {
    table: DecTable,
    /// Our SETTINGS_HEADER_TABLE_SIZE: the most a size update may ask for.
    max_table_size: usize,
    /// Huffman output, reused from string to string.
    scratch: Vec<u8>,
    names: NameCache,
    /// Where the values of literal fields not stored in the dynamic table are copied: slices of
    /// a chunk shared by many fields (and blocks).
    values: Chunk,
    last_path: LastPath,
}

impl Decoder {
    /// The Huffman scratch buffer kept between blocks, at most.
    const MAX_SCRATCH: usize = 16 << 10;

    /// `max_table_size` = our SETTINGS_HEADER_TABLE_SIZE (4096): the most a size update may ask.
    /// The table starts at that size (RFC 7541 §4.2 with RFC 9113 §6.5.2).
    pub fn new(max_table_size: usize) -> Self {
        Decoder {
            table: DecTable::new(max_table_size),
            max_table_size,
            scratch: Vec::new(),
            names: NameCache::new(),
            values: Chunk::new(),
            last_path: LastPath::default(),
        }
    }

    /// The number of entries in the dynamic table.
    pub fn table_len(&self) -> usize {
        self.table.entries.len()
    }

    /// The dynamic table's size in RFC 7541 §4.1 terms.
    pub fn table_size(&self) -> usize {
        self.table.size
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION payloads joined).
    ///
    /// Calls `emit` for each field, in order, while the running header-list size (RFC 7541 §4.1
    /// sizes: name.len()+value.len()+32, summed) stays ≤ `max_list_size`; fields past it are still
    /// decoded (the dynamic table must stay in sync) but neither emitted nor, unless they go into
    /// the dynamic table, materialised.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_list_size: usize,
        mut emit: impl FnMut(Field),
    ) -> Result<BlockInfo, DecodeError> {
        let mut pos = 0;
        let mut list = ListSize {
            size: 0,
            max: max_list_size,
            over: false,
        };

        // Dynamic table size updates come first, if at all (RFC 7541 §4.2).
        while let Some(&first) = block.get(pos) {
            if first & 0xe0 != 0x20 {
                break;
            }
            let size = read_int(block, &mut pos, 5)?;
            if size > self.max_table_size {
                return Err(DecodeError::SizeUpdateTooLarge {
                    size,
                    max: self.max_table_size,
                });
            }
            self.table.set_max_size(size);
        }

        while let Some(&first) = block.get(pos) {
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = read_int(block, &mut pos, 7)?;
                if index == 0 {
                    return Err(DecodeError::ZeroIndex);
                }
                if index <= STATIC_LEN {
                    let entry = &STATIC[index - 1];
                    if list.admit(entry.size()) {
                        emit(Field {
                            name: entry.name.clone(),
                            value: Bytes::from_static(entry.value.as_bytes()),
                            never_indexed: false,
                        });
                    }
                } else {
                    let entry = self.dynamic(index)?;
                    if list.admit(entry.size) {
                        emit(Field {
                            name: entry.name.clone(),
                            value: entry.value.clone(),
                            never_indexed: false,
                        });
                    }
                }
                continue;
            }
            let (prefix, store) = match first {
                // Literal with incremental indexing (§6.2.1).
                0x40..=0x7f => (6, true),
                // Literal without indexing (§6.2.2) or never indexed (§6.2.3).
                0x00..=0x1f => (4, false),
                _ => return Err(DecodeError::SizeUpdateNotAtStart),
            };
            // Whether this field's name and value are needed: by the table, or by the caller if
            // the list is not over its limit yet.
            let keep = store || !list.over;

            let index = read_int(block, &mut pos, prefix)?;
            let (name, name_len) = if index == 0 {
                let (huffman, raw) = read_string(block, &mut pos)?;
                if keep {
                    let name = if huffman {
                        self.scratch.clear();
                        huffman::decode(raw, &mut self.scratch)?;
                        self.names.parse(&self.scratch)
                    } else {
                        self.names.parse(raw)
                    };
                    let len = name.as_bytes().len();
                    (Some(name), len)
                } else if huffman {
                    (None, huffman::decoded_len(raw)?)
                } else {
                    (None, raw.len())
                }
            } else if index <= STATIC_LEN {
                let entry = &STATIC[index - 1];
                (keep.then(|| entry.name.clone()), entry.name_str.len())
            } else {
                let entry = self.dynamic(index)?;
                let len = entry.size - entry.value.len() - 32;
                (keep.then(|| entry.name.clone()), len)
            };

            let (huffman, raw) = read_string(block, &mut pos)?;
            let value = if store {
                // Its own buffer: the entry may outlive this block by a long time.
                if huffman {
                    self.scratch.clear();
                    huffman::decode(raw, &mut self.scratch)?;
                    Bytes::copy_from_slice(&self.scratch)
                } else {
                    Bytes::copy_from_slice(raw)
                }
            } else if keep {
                if huffman && matches!(name, Some(Name::Path)) && raw.len() <= LastPath::MAX {
                    self.last_path.get(raw, &mut self.scratch)?
                } else if huffman {
                    self.scratch.clear();
                    huffman::decode(raw, &mut self.scratch)?;
                    self.values.copy(&self.scratch).freeze()
                } else {
                    self.values.copy(raw).freeze()
                }
            } else {
                // Past the limit and not for the table: only its length counts.
                let len = if huffman {
                    huffman::decoded_len(raw)?
                } else {
                    raw.len()
                };
                list.admit(field_size(name_len, len));
                continue;
            };

            let size = field_size(name_len, value.len());
            let wanted = list.admit(size);
            let name = name.expect("kept");
            if store {
                if wanted {
                    emit(Field {
                        name: name.clone(),
                        value: value.clone(),
                        never_indexed: false,
                    });
                }
                self.table.insert(name, value, size);
            } else if wanted {
                emit(Field {
                    name,
                    value,
                    never_indexed: first & 0x10 != 0,
                });
            }
        }

        if self.scratch.capacity() > Self::MAX_SCRATCH {
            // One huge string must not pin its buffer for the connection's life.
            self.scratch = Vec::new();
        }
        Ok(BlockInfo {
            list_size: list.size,
            over_limit: list.over,
        })
    }

    /// The dynamic table's entry at HPACK `index` (> 61).
    #[inline]
    fn dynamic(&self, index: usize) -> Result<&super::table::DecEntry, DecodeError> {
        self.table
            .get(index - STATIC_LEN - 1)
            .ok_or(DecodeError::BadIndex {
                index,
                table_len: STATIC_LEN + self.table.entries.len(),
            })
    }
}

/// The running header-list size against the caller's limit.
struct ListSize {
    size: usize,
    max: usize,
    over: bool,
}

impl ListSize {
    /// Counts a field; whether it is to be emitted.
    #[inline]
    fn admit(&mut self, field: usize) -> bool {
        self.size = self.size.saturating_add(field);
        if !self.over && self.size <= self.max {
            return true;
        }
        self.over = true;
        false
    }
}

/// The last Huffman-coded `:path` sent as a literal not to be indexed, and
/// what it decoded to. Some encoders (nghttp2, so curl, h2load and Envoy's
/// HTTP/2 codec) never index `:path`, and a gRPC client calls the same
/// method again and again: the same bytes, ~800 instructions of Huffman
/// decoding each time. Empty until such a `:path` arrives; holds one path
/// (at most [`LastPath::MAX`] bytes, twice) after.
#[derive(Default)]
struct LastPath {
    raw: Vec<u8>,
    value: Bytes,
}

impl LastPath {
    const MAX: usize = 256;

    /// The decoded value of `raw` (Huffman-coded), from the last time if
    /// it is the same.
    fn get(&mut self, raw: &[u8], scratch: &mut Vec<u8>) -> Result<Bytes, DecodeError> {
        // Empty until the first path: an empty Huffman string decodes to
        // the empty value it starts with.
        if self.raw == raw {
            return Ok(self.value.clone());
        }
        scratch.clear();
        huffman::decode(raw, scratch)?;
        self.value = Bytes::copy_from_slice(scratch);
        self.raw.clear();
        self.raw.extend_from_slice(raw);
        Ok(self.value.clone())
    }
}

/// Turns literal names into [`Name`]s, remembering the last few regular ones so that a name sent
/// literally on every message (e.g. without indexing) is allocated once, not every time.
struct NameCache {
    /// Allocated with the first literal name: most connections never send
    /// one, and an idle connection should hold as little as it can.
    slots: Option<Box<[Option<HeaderName>; NameCache::SLOTS]>>,
}

impl NameCache {
    const SLOTS: usize = 16;

    fn new() -> Self {
        NameCache { slots: None }
    }

    /// Validates a literal name: one of the six pseudo-headers, or a lowercase token (RFC 9113
    /// §8.2, RFC 9110 §5.1); anything else is [`Name::Invalid`].
    fn parse(&mut self, raw: &[u8]) -> Name {
        if raw.first() == Some(&b':') {
            return Name::pseudo(raw).unwrap_or_else(|| Name::Invalid(Bytes::copy_from_slice(raw)));
        }
        let slot = (hash_bytes(0, raw) >> 60) as usize;
        let slots = self.slots.get_or_insert_with(Default::default);
        if let Some(name) = &slots[slot] {
            if eq_bytes(name.as_str().as_bytes(), raw) {
                return Name::Header(name.clone());
            }
        }
        if raw.is_empty() || !raw.iter().all(|&b| LOWER_TOKEN[b as usize]) {
            return Name::Invalid(Bytes::copy_from_slice(raw));
        }
        match HeaderName::from_lowercase(raw) {
            Ok(name) => {
                slots[slot] = Some(name.clone());
                Name::Header(name)
            }
            Err(_) => Name::Invalid(Bytes::copy_from_slice(raw)),
        }
    }
}

/// The bytes a regular HTTP/2 field name may have: RFC 9110 token characters, minus uppercase.
static LOWER_TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = b'a';
    while c <= b'z' {
        t[c as usize] = true;
        c += 1;
    }
    let mut c = b'0';
    while c <= b'9' {
        t[c as usize] = true;
        c += 1;
    }
    let other = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < other.len() {
        t[other[i] as usize] = true;
        i += 1;
    }
    t
};

/// Reads an integer with a `prefix`-bit prefix (RFC 7541 §5.1); values must fit in 32 bits.
#[inline(always)]
fn read_int(block: &[u8], pos: &mut usize, prefix: u32) -> Result<usize, DecodeError> {
    let mask = ((1u32 << prefix) - 1) as u8;
    let Some(&first) = block.get(*pos) else {
        return Err(DecodeError::Truncated);
    };
    *pos += 1;
    let first = first & mask;
    if first < mask {
        return Ok(first as usize);
    }
    let mut value = mask as u64;
    let mut shift = 0;
    loop {
        let Some(&b) = block.get(*pos) else {
            return Err(DecodeError::Truncated);
        };
        *pos += 1;
        value += ((b & 0x7f) as u64) << shift;
        if value > u32::MAX as u64 {
            return Err(DecodeError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok(value as usize);
        }
        shift += 7;
        if shift > 28 {
            // More continuation bytes than a 32-bit value needs.
            return Err(DecodeError::IntegerOverflow);
        }
    }
}

/// Reads a string literal (RFC 7541 §5.2): whether it is Huffman-coded, and its bytes.
#[inline(always)]
fn read_string<'b>(block: &'b [u8], pos: &mut usize) -> Result<(bool, &'b [u8]), DecodeError> {
    let Some(&first) = block.get(*pos) else {
        return Err(DecodeError::Truncated);
    };
    let len = read_int(block, pos, 7)?;
    let remaining = block.len() - *pos;
    if len > remaining {
        return Err(DecodeError::StringPastEnd { len, remaining });
    }
    let s = &block[*pos..*pos + len];
    *pos += len;
    Ok((first & 0x80 != 0, s))
}

#[cfg(test)]
#[path = "decoder_tests.rs"]
mod tests;

//! The static table (RFC 7541 Appendix A) and the two dynamic tables: the decoder's, which only
//! needs lookups by index, and the encoder's, which also finds entries by name and value.

use std::collections::VecDeque;

use bytes::Bytes;
use http::header;
use http::{HeaderName, HeaderValue};

use super::{field_size, Name};

/// The number of entries in the static table; dynamic entries start at index 62.
pub(crate) const STATIC_LEN: usize = 61;

/// One entry of the static table.
pub(crate) struct StaticEntry {
    pub name: Name,
    pub name_str: &'static str,
    pub value: &'static str,
}

impl StaticEntry {
    pub fn size(&self) -> usize {
        field_size(self.name_str.len(), self.value.len())
    }
}

const fn e(name: Name, name_str: &'static str, value: &'static str) -> StaticEntry {
    StaticEntry {
        name,
        name_str,
        value,
    }
}

const fn h(name: HeaderName, name_str: &'static str) -> StaticEntry {
    e(Name::Header(name), name_str, "")
}

/// RFC 7541 Appendix A; `STATIC[i - 1]` is index `i`.
pub(crate) static STATIC: [StaticEntry; STATIC_LEN] = [
    e(Name::Authority, ":authority", ""),
    e(Name::Method, ":method", "GET"),
    e(Name::Method, ":method", "POST"),
    e(Name::Path, ":path", "/"),
    e(Name::Path, ":path", "/index.html"),
    e(Name::Scheme, ":scheme", "http"),
    e(Name::Scheme, ":scheme", "https"),
    e(Name::Status, ":status", "200"),
    e(Name::Status, ":status", "204"),
    e(Name::Status, ":status", "206"),
    e(Name::Status, ":status", "304"),
    e(Name::Status, ":status", "400"),
    e(Name::Status, ":status", "404"),
    e(Name::Status, ":status", "500"),
    h(header::ACCEPT_CHARSET, "accept-charset"),
    e(
        Name::Header(header::ACCEPT_ENCODING),
        "accept-encoding",
        "gzip, deflate",
    ),
    h(header::ACCEPT_LANGUAGE, "accept-language"),
    h(header::ACCEPT_RANGES, "accept-ranges"),
    h(header::ACCEPT, "accept"),
    h(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        "access-control-allow-origin",
    ),
    h(header::AGE, "age"),
    h(header::ALLOW, "allow"),
    h(header::AUTHORIZATION, "authorization"),
    h(header::CACHE_CONTROL, "cache-control"),
    h(header::CONTENT_DISPOSITION, "content-disposition"),
    h(header::CONTENT_ENCODING, "content-encoding"),
    h(header::CONTENT_LANGUAGE, "content-language"),
    h(header::CONTENT_LENGTH, "content-length"),
    h(header::CONTENT_LOCATION, "content-location"),
    h(header::CONTENT_RANGE, "content-range"),
    h(header::CONTENT_TYPE, "content-type"),
    h(header::COOKIE, "cookie"),
    h(header::DATE, "date"),
    h(header::ETAG, "etag"),
    h(header::EXPECT, "expect"),
    h(header::EXPIRES, "expires"),
    h(header::FROM, "from"),
    h(header::HOST, "host"),
    h(header::IF_MATCH, "if-match"),
    h(header::IF_MODIFIED_SINCE, "if-modified-since"),
    h(header::IF_NONE_MATCH, "if-none-match"),
    h(header::IF_RANGE, "if-range"),
    h(header::IF_UNMODIFIED_SINCE, "if-unmodified-since"),
    h(header::LAST_MODIFIED, "last-modified"),
    h(header::LINK, "link"),
    h(header::LOCATION, "location"),
    h(header::MAX_FORWARDS, "max-forwards"),
    h(header::PROXY_AUTHENTICATE, "proxy-authenticate"),
    h(header::PROXY_AUTHORIZATION, "proxy-authorization"),
    h(header::RANGE, "range"),
    h(header::REFERER, "referer"),
    h(header::REFRESH, "refresh"),
    h(header::RETRY_AFTER, "retry-after"),
    h(header::SERVER, "server"),
    h(header::SET_COOKIE, "set-cookie"),
    h(
        header::STRICT_TRANSPORT_SECURITY,
        "strict-transport-security",
    ),
    h(header::TRANSFER_ENCODING, "transfer-encoding"),
    h(header::USER_AGENT, "user-agent"),
    h(header::VARY, "vary"),
    h(header::VIA, "via"),
    h(header::WWW_AUTHENTICATE, "www-authenticate"),
];

/// Static-table indexes the encoder's policy refers to.
pub(crate) mod idx {
    pub const AUTHORITY: usize = 1;
    pub const METHOD: usize = 2;
    pub const PATH: usize = 4;
    pub const SCHEME: usize = 6;
    pub const STATUS: usize = 8;
    pub const AUTHORIZATION: usize = 23;
    pub const CONTENT_LENGTH: usize = 28;
    pub const COOKIE: usize = 32;
    pub const DATE: usize = 33;
    pub const PROXY_AUTHORIZATION: usize = 49;
    pub const SET_COOKIE: usize = 55;
}

/// The static-table index of a regular (non-pseudo) header name, if the table has it.
///
/// The name's length, first and last bytes tell the 46 names apart; one comparison confirms.
#[inline]
pub(crate) fn static_name_index(name: &[u8]) -> Option<usize> {
    let (&first, &last) = (name.first()?, name.last()?);
    let i = match (name.len(), first, last) {
        (3, b'a', _) => 21,
        (3, b'v', _) => 60,
        (4, b'd', _) => 33,
        (4, b'e', _) => 34,
        (4, b'f', _) => 37,
        (4, b'h', _) => 38,
        (4, b'l', _) => 45,
        (4, b'v', _) => 59,
        (5, b'a', _) => 22,
        (5, b'r', _) => 50,
        (6, b'a', _) => 19,
        (6, b'c', _) => 32,
        (6, b'e', _) => 35,
        (6, b's', _) => 54,
        (7, b'e', _) => 36,
        (7, b'r', b'r') => 51,
        (7, b'r', b'h') => 52,
        (8, b'i', b'h') => 39,
        (8, b'i', b'e') => 42,
        (8, b'l', _) => 46,
        (10, b's', _) => 55,
        (10, b'u', _) => 58,
        (11, b'r', _) => 53,
        (12, b'c', _) => 31,
        (12, b'm', _) => 47,
        (13, b'a', b's') => 18,
        (13, b'a', b'n') => 23,
        (13, b'c', b'l') => 24,
        (13, b'c', b'e') => 30,
        (13, b'i', _) => 41,
        (13, b'l', _) => 44,
        (14, b'a', _) => 15,
        (14, b'c', _) => 28,
        (15, _, b'g') => 16,
        (15, _, b'e') => 17,
        (16, b'c', b'g') => 26,
        (16, b'c', b'e') => 27,
        (16, b'c', b'n') => 29,
        (16, b'w', _) => 61,
        (17, b'i', _) => 40,
        (17, b't', _) => 57,
        (18, _, _) => 48,
        (19, b'c', _) => 25,
        (19, b'i', _) => 43,
        (19, b'p', _) => 49,
        (25, _, _) => 56,
        (27, _, _) => 20,
        _ => return None,
    };
    eq_bytes(STATIC[i - 1].name_str.as_bytes(), name).then_some(i)
}

/// The static-table index of a pseudo-header field's name, if the table has it.
#[inline]
pub(crate) fn static_pseudo_index(name: &Name) -> Option<usize> {
    match name {
        Name::Authority => Some(idx::AUTHORITY),
        Name::Method => Some(idx::METHOD),
        Name::Path => Some(idx::PATH),
        Name::Scheme => Some(idx::SCHEME),
        Name::Status => Some(idx::STATUS),
        _ => None,
    }
}

/// The static-table index of the exact field (`name_index`'s name, `value`), if the table has it.
/// `name_index` is the first static index with that name; only pseudo-header names have more
/// than one entry.
#[inline]
pub(crate) fn static_exact(name_index: usize, value: &[u8]) -> Option<usize> {
    let last = match name_index {
        idx::METHOD | idx::PATH | idx::SCHEME => name_index + 1,
        idx::STATUS => name_index + 6,
        _ => {
            let entry = STATIC.get(name_index.wrapping_sub(1))?;
            return eq_bytes(entry.value.as_bytes(), value).then_some(name_index);
        }
    };
    (name_index..=last).find(|&i| eq_bytes(STATIC[i - 1].value.as_bytes(), value))
}

// ---------------------------------------------------------------------------------------------
// Hashing (the encoder's map; the decoder's name cache)

const FX_K: u64 = 0x517c_c1b7_2722_0a95;

#[inline(always)]
fn fx(hash: u64, word: u64) -> u64 {
    (hash.rotate_left(5) ^ word).wrapping_mul(FX_K)
}

/// Fx-style hashing, 8 bytes per multiply; the length goes in first, so that the name/value
/// boundary counts and the last word may overlap the one before it. Not DoS-resistant, which the
/// encoder's table does not need: it holds at most 124 entries, so even values crafted to collide
/// cost at most a scan of 124 slots per lookup, never more.
#[inline]
pub(crate) fn hash_bytes(mut hash: u64, bytes: &[u8]) -> u64 {
    let n = bytes.len();
    hash = fx(hash, n as u64);
    if n >= 8 {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            hash = fx(hash, u64::from_le_bytes(chunk.try_into().unwrap()));
        }
        if !chunks.remainder().is_empty() {
            hash = fx(hash, u64::from_le_bytes(bytes[n - 8..].try_into().unwrap()));
        }
    } else if n >= 4 {
        let lo = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as u64;
        let hi = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as u64;
        hash = fx(hash, lo | hi << 32);
    } else if n > 0 {
        let word = bytes[0] as u64 | (bytes[n / 2] as u64) << 8 | (bytes[n - 1] as u64) << 16;
        hash = fx(hash, word);
    }
    hash
}

/// The 32 bits a map slot keeps: the hash's well-mixed high half, never 0 (0 marks a free slot).
#[inline]
pub(crate) fn finish(hash: u64) -> u32 {
    (hash >> 32) as u32 | 1
}

/// Byte-string equality without a `memcmp` call for the short strings that header names and
/// values mostly are: up to 32 bytes are compared as two overlapping words.
#[inline(always)]
pub(crate) fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    fn w4(s: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(s[at..at + 4].try_into().unwrap())
    }
    fn w8(s: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(s[at..at + 8].try_into().unwrap())
    }
    fn w16(s: &[u8], at: usize) -> u128 {
        u128::from_le_bytes(s[at..at + 16].try_into().unwrap())
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        8..=16 => w8(a, 0) == w8(b, 0) && w8(a, n - 8) == w8(b, n - 8),
        17..=32 => w16(a, 0) == w16(b, 0) && w16(a, n - 16) == w16(b, n - 16),
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// The decoder's dynamic table

/// One entry of the decoder's dynamic table. The value is its own allocation (not a slice of the
/// chunk that other literal values share) so that a long-lived entry keeps only itself alive.
pub(crate) struct DecEntry {
    pub name: Name,
    pub value: Bytes,
    pub size: usize,
}

/// The decoder's dynamic table: newest entry first, so HPACK index 62 is `entries[0]`.
pub(crate) struct DecTable {
    pub entries: VecDeque<DecEntry>,
    pub size: usize,
    pub max_size: usize,
}

impl DecTable {
    pub fn new(max_size: usize) -> Self {
        DecTable {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// The entry at HPACK index `62 + i`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&DecEntry> {
        self.entries.get(i)
    }

    /// A size update (RFC 7541 §4.3): evicts down to the new maximum.
    pub fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some(old) => self.size -= old.size,
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }

    /// Adds an entry (RFC 7541 §4.4): one larger than the table empties it and is not kept.
    pub fn insert(&mut self, name: Name, value: Bytes, size: usize) {
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.entries.push_front(DecEntry { name, value, size });
        self.size += size;
    }
}

// ---------------------------------------------------------------------------------------------
// The encoder's dynamic table

/// An encoder entry's name: a pseudo-header's is static.
pub(crate) enum EncName {
    Pseudo(&'static str),
    Header(HeaderName),
}

impl EncName {
    #[inline(always)]
    fn as_ref(&self) -> NameRef<'_> {
        match self {
            EncName::Pseudo(s) => NameRef::Pseudo(s),
            EncName::Header(name) => NameRef::Header(name),
        }
    }
}

/// A name to look up in the encoder's table. Regular names compare as `HeaderName`s: two
/// standard names by their tag, without turning them into strings.
#[derive(Clone, Copy)]
pub(crate) enum NameRef<'a> {
    Pseudo(&'static str),
    Header(&'a HeaderName),
}

impl<'a> NameRef<'a> {
    #[inline]
    pub fn as_bytes(self) -> &'a [u8] {
        match self {
            NameRef::Pseudo(s) => s.as_bytes(),
            NameRef::Header(name) => name.as_str().as_bytes(),
        }
    }

    #[inline(always)]
    fn is(self, other: NameRef<'_>) -> bool {
        match (self, other) {
            (NameRef::Pseudo(a), NameRef::Pseudo(b)) => eq_bytes(a.as_bytes(), b.as_bytes()),
            (NameRef::Header(a), NameRef::Header(b)) => a == b,
            _ => false,
        }
    }
}

/// An encoder entry's value: a clone of the caller's `HeaderValue` (a reference count, or nothing
/// for a static one), or a copy of a pseudo-header's bytes.
pub(crate) enum EncValue {
    Header(HeaderValue),
    Bytes(Bytes),
}

impl EncValue {
    #[inline(always)]
    fn as_bytes(&self) -> &[u8] {
        match self {
            EncValue::Header(v) => v.as_bytes(),
            EncValue::Bytes(b) => b,
        }
    }
}

struct EncEntry {
    name: EncName,
    value: EncValue,
    size: usize,
    /// [`finish`]ed hashes of the name, and of the name and value.
    name_hash: u32,
    field_hash: u32,
}

/// Map slots: a [`finish`]ed hash (0 = free) and the insertion number of the entry it leads to.
#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u32,
    id: u32,
}

/// Slots per map: the table holds at most 4096 / 33 = 124 entries (the encoder never uses more
/// than 4096 bytes), so a map is at most half full.
const SLOTS: usize = 256;
const SLOT_SHIFT: u32 = 32 - SLOTS.trailing_zeros();
const MASK: usize = SLOTS - 1;

/// A linear-probing map from a hash to an insertion number. Lookups compare the candidate entry
/// themselves; removal shifts later slots back (no tombstones), so the map never degrades.
struct Map {
    /// Empty until the first insert: a connection that never sends a
    /// header block (most idle ones) holds no slots.
    slots: Vec<Slot>,
}

impl Map {
    fn new() -> Self {
        Map { slots: Vec::new() }
    }

    #[inline]
    fn home(hash: u32) -> usize {
        (hash >> SLOT_SHIFT) as usize
    }

    /// The ids stored under `hash`, in probe order.
    #[inline]
    fn candidates(&self, hash: u32) -> impl Iterator<Item = (usize, u32)> + '_ {
        let mut i = Self::home(hash);
        let empty = self.slots.is_empty();
        std::iter::from_fn(move || loop {
            if empty {
                return None;
            }
            let slot = self.slots[i];
            let at = i;
            i = (i + 1) & MASK;
            if slot.hash == 0 {
                return None;
            }
            if slot.hash == hash {
                return Some((at, slot.id));
            }
        })
    }

    fn insert(&mut self, hash: u32, id: u32) {
        if self.slots.is_empty() {
            self.slots = vec![Slot::default(); SLOTS];
        }
        let mut i = Self::home(hash);
        while self.slots[i].hash != 0 {
            i = (i + 1) & MASK;
        }
        self.slots[i] = Slot { hash, id };
    }

    /// Removes the slot at `i`, moving later slots of the same cluster back into the hole when
    /// their home allows it.
    fn remove_at(&mut self, mut hole: usize) {
        let mut j = hole;
        loop {
            j = (j + 1) & MASK;
            let slot = self.slots[j];
            if slot.hash == 0 {
                break;
            }
            let home = Self::home(slot.hash);
            // The slot may move to the hole if the hole lies between its home and j.
            if (j.wrapping_sub(home) & MASK) >= (j.wrapping_sub(hole) & MASK) {
                self.slots[hole] = slot;
                hole = j;
            }
        }
        self.slots[hole] = Slot::default();
    }

    /// Removes the slot holding `id` under `hash`, if there is one.
    fn remove(&mut self, hash: u32, id: u32) {
        let found = self.candidates(hash).find(|&(_, found)| found == id);
        if let Some((at, _)) = found {
            self.remove_at(at);
        }
    }

    fn clear(&mut self) {
        self.slots.fill(Slot::default());
    }
}

/// The encoder's dynamic table: entries oldest first, each known by its insertion number (`id`,
/// counted with wrapping `u32`s; at most 124 are alive, so comparisons stay exact), and two maps:
/// (name, value) → id, and name → id of the newest entry with that name.
pub(crate) struct EncTable {
    entries: VecDeque<EncEntry>,
    /// The id the next entry gets; the oldest alive is `next_id - entries.len()`.
    next_id: u32,
    size: usize,
    max_size: usize,
    by_field: Map,
    by_name: Map,
}

impl EncTable {
    pub fn new(max_size: usize) -> Self {
        EncTable {
            entries: VecDeque::new(),
            next_id: 0,
            size: 0,
            max_size,
            by_field: Map::new(),
            by_name: Map::new(),
        }
    }

    pub fn max_size(&self) -> usize {
        self.max_size
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn size(&self) -> usize {
        self.size
    }

    /// The position in `entries` of a live `id`.
    #[inline]
    fn position(&self, id: u32) -> usize {
        let oldest = self.next_id.wrapping_sub(self.entries.len() as u32);
        id.wrapping_sub(oldest) as usize
    }

    /// The HPACK index of a live `id`: the newest entry is 62.
    #[inline]
    fn hpack_index(&self, id: u32) -> usize {
        STATIC_LEN + self.next_id.wrapping_sub(id) as usize
    }

    /// The HPACK index of the entry (name, value), if the table has it.
    #[inline]
    pub fn find_field(&self, name: NameRef<'_>, value: &[u8], field_hash: u32) -> Option<usize> {
        if self.by_field.slots.is_empty() {
            return None;
        }
        let mut i = Map::home(field_hash);
        loop {
            let slot = self.by_field.slots[i];
            if slot.hash == 0 {
                return None;
            }
            if slot.hash == field_hash {
                let entry = &self.entries[self.position(slot.id)];
                if eq_bytes(entry.value.as_bytes(), value) && entry.name.as_ref().is(name) {
                    return Some(self.hpack_index(slot.id));
                }
            }
            i = (i + 1) & MASK;
        }
    }

    /// The HPACK index of the newest entry named `name`, if the table has one.
    #[inline]
    pub fn find_name(&self, name: NameRef<'_>, name_hash: u32) -> Option<usize> {
        self.by_name
            .candidates(name_hash)
            .find(|&(_, id)| self.entries[self.position(id)].name.as_ref().is(name))
            .map(|(_, id)| self.hpack_index(id))
    }

    /// Shrinks (or grows) the table's maximum size, evicting as needed.
    pub fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            let id = self.next_id.wrapping_sub(self.entries.len() as u32);
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.size -= old.size;
            self.by_field.remove(old.field_hash, id);
            // Only if the name map still points at this entry: a newer one may have taken over.
            self.by_name.remove(old.name_hash, id);
        }
    }

    /// Adds an entry (RFC 7541 §4.4), evicting old ones; one larger than the table empties it.
    pub fn insert(&mut self, name: EncName, value: EncValue, name_hash: u32, field_hash: u32) {
        let size = field_size(name.as_ref().as_bytes().len(), value.as_bytes().len());
        let entry = EncEntry {
            name,
            value,
            size,
            name_hash,
            field_hash,
        };
        if size > self.max_size {
            self.entries.clear();
            self.by_field.clear();
            self.by_name.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        // The maps stay at most half full whatever the size limit (only reachable with more than
        // 4096 bytes of table, which the encoder never uses).
        while self.entries.len() >= SLOTS / 2 {
            self.evict_to(self.size - self.entries[0].size);
        }
        let id = self.next_id;
        // A newer entry with the same name takes over the name map's slot.
        let name = entry.name.as_ref();
        let older = self
            .by_name
            .candidates(name_hash)
            .find(|&(_, old)| self.entries[self.position(old)].name.as_ref().is(name))
            .map(|(at, _)| at);
        match older {
            Some(at) => self.by_name.slots[at].id = id,
            None => self.by_name.insert(name_hash, id),
        }
        self.by_field.insert(field_hash, id);
        self.entries.push_back(entry);
        self.next_id = id.wrapping_add(1);
        self.size += size;
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;

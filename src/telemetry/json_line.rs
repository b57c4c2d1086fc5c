//! Writing one JSON object's fields straight into a byte buffer, for the
//! access log's hot path: no allocation, no `fmt` machinery for the common
//! values. The output is what `serde_json` writes for the same values
//! (strings escaped the same way, floats by the same shortest-form
//! formatter); `access_log`'s tests compare the two.

use std::net::SocketAddr;

/// A field's name as written before its value, `,"name":`, made at
/// compile time: the `key` of every [`Json`] method.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}
pub(crate) use key;

/// The fields of a JSON object being written into `0`; every field is
/// written with its leading comma (the object's first field is written by
/// its owner), its `key` made by [`key!`].
pub struct Json<'a>(pub &'a mut Vec<u8>);

impl Json<'_> {
    fn key(&mut self, key: &str) {
        self.0.extend_from_slice(key.as_bytes());
    }

    pub fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        quoted(self.0, value);
    }

    /// `str`, left out when empty.
    pub fn str_nonempty(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.str(key, value);
        }
    }

    pub fn u64(&mut self, key: &str, value: u64) {
        self.key(key);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    pub fn i64(&mut self, key: &str, value: i64) {
        self.key(key);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A float as `serde_json` writes it (`null` when not finite).
    pub fn f64(&mut self, key: &str, value: f64) {
        self.key(key);
        if value.is_finite() {
            self.0
                .extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
        } else {
            self.0.extend_from_slice(b"null");
        }
    }

    /// An address as its `Display` writes it, quoted.
    pub fn addr(&mut self, key: &str, addr: SocketAddr) {
        self.key(key);
        let b = &mut *self.0;
        b.push(b'"');
        match addr {
            SocketAddr::V4(a) => {
                // `255.255.255.255:65535` at most: made on the stack, then
                // copied once.
                let mut text = [0u8; 21];
                let mut len = 0;
                for (i, octet) in a.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        text[len] = b'.';
                        len += 1;
                    }
                    decimal(&mut text, &mut len, octet.into());
                }
                text[len] = b':';
                len += 1;
                decimal(&mut text, &mut len, a.port());
                b.extend_from_slice(&text[..len]);
            }
            // Rare enough for `fmt` (and IPv6's text form has rules of its
            // own: the longest run of zeros, embedded IPv4).
            SocketAddr::V6(_) => {
                use std::io::Write;
                let _ = write!(b, "{addr}");
            }
        }
        b.push(b'"');
    }

    /// An array of strings, left out when empty.
    pub fn strs_nonempty(&mut self, key: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        self.key(key);
        self.0.push(b'[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            quoted(self.0, v);
        }
        self.0.push(b']');
    }
}

/// Writes `v` in decimal at `text[*len..]`.
fn decimal(text: &mut [u8; 21], len: &mut usize, v: u16) {
    let mut digits = [0u8; 5];
    let mut n = 0;
    let mut v = v;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while n > 0 {
        n -= 1;
        text[*len] = digits[n];
        *len += 1;
    }
}

/// `value` as a JSON string: quoted, with `"`, `\` and control characters
/// escaped as `serde_json` escapes them; everything else (UTF-8 included)
/// as is.
pub fn quoted(b: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    b.reserve(bytes.len() + 2);
    b.push(b'"');
    let mut start = 0;
    loop {
        let i = next_escape(bytes, start);
        b.extend_from_slice(&bytes[start..i]);
        let Some(&c) = bytes.get(i) else { break };
        start = i + 1;
        let esc = ESCAPE[c as usize];
        if esc == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            b.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(c >> 4) as usize],
                HEX[(c & 0xf) as usize],
            ]);
        } else {
            b.extend_from_slice(&[b'\\', esc]);
        }
    }
    b.push(b'"');
}

/// Where the first byte from `from` on that needs escaping is (or the
/// length): eight bytes at a time.
fn next_escape(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // The high bit of each byte below 0x20, equal to '"' or to '\\'.
        // Each test can also flag bytes above one it flags rightly (a
        // borrow), never below: the lowest flag is exact.
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let q = w ^ (ONES * b'"' as u64);
        let quote = q.wrapping_sub(ONES) & !q & HIGH;
        let s = w ^ (ONES * b'\\' as u64);
        let slash = s.wrapping_sub(ONES) & !s & HIGH;
        let hits = control | quote | slash;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && ESCAPE[bytes[i] as usize] == 0 {
        i += 1;
    }
    i
}

/// For each byte: 0 when it stands for itself, else the letter after the
/// backslash (`u` for `\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = b'u';
        c += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all = String::new();
        for c in 0u8..0x80 {
            all.push(c as char);
        }
        all.push_str("é→𝄞\u{7f}\u{2028}");
        for s in [all.as_str(), "", "plain", "\"", "\\", "a\nb"] {
            let mut b = Vec::new();
            quoted(&mut b, s);
            assert_eq!(
                String::from_utf8(b).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn numbers_and_addresses_as_serde_json_writes_them() {
        for v in [0.0, 0.001, 1.0, 0.123456789, 1234.5, 1e-7, 1e21, f64::NAN] {
            let mut b = Vec::new();
            Json(&mut b).f64(key!("d"), v);
            assert_eq!(
                String::from_utf8(b).unwrap(),
                format!(",\"d\":{}", serde_json::to_string(&v).unwrap())
            );
        }
        for a in [
            "127.0.0.1:8080",
            "10.200.3.40:0",
            "[::1]:443",
            "[2001:db8::7]:65535",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut b = Vec::new();
            Json(&mut b).addr(key!("a"), a);
            assert_eq!(String::from_utf8(b).unwrap(), format!(",\"a\":\"{a}\""));
        }
    }
}

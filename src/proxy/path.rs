//! Path normalisation before routing, so that routes (and anything behind
//! them that trusts the path) see one canonical spelling: `/a/../admin`,
//! `//admin` and `/%61dmin` are all `/admin`. The upstream receives exactly
//! the path that was matched.

use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadEscape,
    EncodedSlash,
    Backslash,
    ControlChar,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the request path does not start with '/'",
            PathError::BadEscape => "the request path has a malformed %-escape",
            PathError::EncodedSlash => {
                "the request path contains an encoded slash (%2F or %5C), which could reach a path the routes did not mean; set `allow_encoded_slashes: true` on the listener if the upstream needs them"
            }
            PathError::Backslash => "the request path contains a backslash",
            PathError::ControlChar => "the request path contains a control character or space",
        })
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes %-escapes of unreserved characters, upper-cases the others, and
/// rejects what must not reach routing.
fn decode_unreserved(path: &str, allow_encoded_slashes: bool) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&h), Some(&l)) => (hex(h), hex(l)),
                    _ => return Err(PathError::BadEscape),
                };
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEscape);
                };
                let c = hi * 16 + lo;
                if is_unreserved(c) {
                    out.push(c as char);
                } else if (c == b'/' || c == b'\\') && !allow_encoded_slashes {
                    return Err(PathError::EncodedSlash);
                } else if c < 0x20 || c == 0x7f {
                    return Err(PathError::ControlChar);
                } else {
                    out.push('%');
                    out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                    out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0..=0x20 | 0x7f => return Err(PathError::ControlChar),
            _ => {
                // Multi-byte UTF-8 is copied through unchanged.
                let ch_len = utf8_len(b);
                out.push_str(&path[i..i + ch_len]);
                i += ch_len;
            }
        }
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// True when `path` is already canonical: absolute, no escapes, backslash,
/// control characters, space or DEL, no empty segment but a trailing one,
/// no `.` or `..` segment. The common case, checked in one pass without
/// allocating.
fn is_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    // Segment by segment: a byte class table, then a look at the segment's
    // length only when it is 0 to 2 bytes long (empty, `.` or `..`).
    let mut segment = 1;
    for (i, &c) in b.iter().enumerate().skip(1) {
        match BYTE_CLASS[usize::from(c)] {
            PLAIN => {}
            SLASH => {
                if !segment_ok(&b[segment..i], false) {
                    return false;
                }
                segment = i + 1;
            }
            _ => return false,
        }
    }
    segment_ok(&b[segment..], true)
}

/// A segment of a canonical path: not `.` or `..`, and empty only at the
/// end (a trailing slash).
#[inline]
fn segment_ok(seg: &[u8], last: bool) -> bool {
    match seg {
        [] => last,
        [b'.'] | [b'.', b'.'] => false,
        _ => true,
    }
}

const PLAIN: u8 = 0;
const SLASH: u8 = 1;
const REJECT: u8 = 2;

/// What `is_canonical` does with each byte: `%` and `\` need decoding or
/// rejecting, as do controls, space and DEL.
static BYTE_CLASS: [u8; 256] = {
    let mut t = [PLAIN; 256];
    let mut c = 0;
    while c <= 0x20 {
        t[c] = REJECT;
        c += 1;
    }
    t[0x7f] = REJECT;
    t[b'%' as usize] = REJECT;
    t[b'\\' as usize] = REJECT;
    t[b'/' as usize] = SLASH;
    t
};

/// Normalises the path part (no query) of a request target; borrows it
/// when it is already canonical.
pub fn normalize(path: &str, allow_encoded_slashes: bool) -> Result<Cow<'_, str>, PathError> {
    if is_canonical(path) {
        return Ok(Cow::Borrowed(path));
    }
    normalize_owned(path, allow_encoded_slashes).map(Cow::Owned)
}

fn normalize_owned(path: &str, allow_encoded_slashes: bool) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(path, allow_encoded_slashes)?;
    let mut segments: Vec<&str> = Vec::new();
    let trailing_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p, false).map(Cow::into_owned)
    }

    /// The definition `is_canonical` implements in one pass.
    fn canonical_by_definition(path: &str) -> bool {
        let b = path.as_bytes();
        b.first() == Some(&b'/')
            && !b
                .iter()
                .any(|&c| c == b'%' || c == b'\\' || c <= 0x20 || c == 0x7f)
            && !path.contains("//")
            && !path.split('/').any(|seg| seg == "." || seg == "..")
    }

    #[test]
    fn canonical_check_matches_its_definition() {
        // Every path of up to 6 bytes from an alphabet of the bytes that matter.
        let alphabet = [b'/', b'.', b'a', b'%', b' ', b'\\'];
        let mut paths = vec![Vec::new()];
        for _ in 0..6 {
            let longer: Vec<Vec<u8>> = paths
                .iter()
                .filter(|p| p.len() == paths.last().map_or(0, Vec::len))
                .flat_map(|p| {
                    alphabet.iter().map(move |&c| {
                        let mut q = p.clone();
                        q.push(c);
                        q
                    })
                })
                .collect();
            paths.extend(longer);
        }
        assert!(paths.len() > 50_000);
        for p in &paths {
            let p = std::str::from_utf8(p).unwrap();
            assert_eq!(is_canonical(p), canonical_by_definition(p), "{p:?}");
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        assert!(matches!(normalize("/a/b.c/d", false), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/a/./b", false), Ok(Cow::Owned(_))));
        assert!(matches!(
            normalize("/a/.hidden", false),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn dot_segments() {
        assert_eq!(n("/public/../admin").unwrap(), "/admin");
        assert_eq!(n("/a/./b").unwrap(), "/a/b");
        assert_eq!(n("/../../etc").unwrap(), "/etc");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/").unwrap(), "/");
        assert_eq!(n("/..").unwrap(), "/");
    }

    #[test]
    fn slashes() {
        assert_eq!(n("//admin").unwrap(), "/admin");
        assert_eq!(n("/a//b///c/").unwrap(), "/a/b/c/");
    }

    #[test]
    fn escapes() {
        assert_eq!(n("/%61dmin").unwrap(), "/admin");
        assert_eq!(n("/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
        assert_eq!(n("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(n("/%2Fadmin"), Err(PathError::EncodedSlash));
        assert_eq!(n("/%5cadmin"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/a%2Fb", true).unwrap(), "/a%2Fb");
        assert_eq!(n("/%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/%4"), Err(PathError::BadEscape));
        assert_eq!(n("/a\\b"), Err(PathError::Backslash));
        assert_eq!(n("/a%00"), Err(PathError::ControlChar));
        assert_eq!(n("admin"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn grpc_paths_unchanged() {
        assert_eq!(
            n("/torii.echo.v1.Echo/Unary").unwrap(),
            "/torii.echo.v1.Echo/Unary"
        );
    }

    #[test]
    fn utf8_kept() {
        assert_eq!(n("/caf\u{e9}/x").unwrap(), "/caf\u{e9}/x");
    }
}

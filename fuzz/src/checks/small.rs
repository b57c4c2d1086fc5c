//! Path normalisation, grpc-timeout, the configuration loader.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use torii::config::Severity;
use torii::grpc::timeout;
use torii::proxy::path::normalize;
use torii::transcode::template::{Segment, Template};

fn unescape_but_slashes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            // Encoded slashes stay (allow_encoded_slashes passes them on
            // by design); every other escape is decoded.
            let h_l = (hex(b[i + 1]), hex(b[i + 2]));
            if let (Some(h), Some(l)) = h_l {
                if matches!(h * 16 + l, 0x2f | 0x5c) {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// A normalised path is absolute, canonical (normalising it again changes
/// nothing, without allocating), has no `.` or `..` segment even once
/// unescaped, no empty segment, and no escape of an unreserved character.
pub fn path(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let strict = normalize(s, false);
    let lax = normalize(s, true);
    if let Ok(p) = &strict {
        assert_eq!(
            lax.as_ref().ok(),
            Some(p),
            "allowing encoded slashes changed {s:?}"
        );
    }
    for (result, allow) in [(strict, false), (lax, true)] {
        let Ok(p) = result else { continue };
        assert!(p.starts_with('/'), "{s:?} -> {p:?}");
        let again = normalize(&p, allow).map(Cow::into_owned);
        assert_eq!(again.as_deref(), Ok(&*p), "not idempotent: {s:?} -> {p:?}");
        let body = &p[1..];
        let segments: Vec<&str> = body.split('/').collect();
        for (i, seg) in segments.iter().enumerate() {
            assert!(
                !seg.is_empty() || (i + 1 == segments.len()),
                "empty segment: {s:?} -> {p:?}"
            );
            assert!(*seg != "." && *seg != "..", "dot segment: {s:?} -> {p:?}");
        }
        for seg in unescape_but_slashes(&p).split(|&b| b == b'/') {
            assert!(
                seg != b".." && seg != b".",
                "an escaped dot segment survives: {s:?} -> {p:?}"
            );
        }
        assert!(
            !p.bytes().any(|b| b <= 0x20 || b == 0x7f || b == b'\\'),
            "{s:?} -> {p:?}"
        );
        for (i, _) in p.match_indices('%') {
            let hex = p.get(i + 1..i + 3).expect("escapes are kept whole");
            let v = u8::from_str_radix(hex, 16).expect("escapes are kept whole");
            assert!(
                !(v.is_ascii_alphanumeric() || b"-._~".contains(&v)),
                "an escaped unreserved character survives: {s:?} -> {p:?}"
            );
            assert_eq!(hex, hex.to_ascii_uppercase());
            if !allow {
                assert!(v != b'/' && v != b'\\', "an encoded slash: {s:?} -> {p:?}");
            }
        }
    }
}

/// `1*8DIGIT unit`: what parses has that shape and the value it says;
/// `format` gives back something that parses, no longer than the input
/// and less than one of its unit shorter.
pub fn grpc_timeout(data: &[u8]) {
    if let Some(d) = timeout::parse(data) {
        assert!((2..=9).contains(&data.len()));
        let (digits, unit) = data.split_at(data.len() - 1);
        assert!(digits.iter().all(u8::is_ascii_digit));
        let n: u128 = std::str::from_utf8(digits).unwrap().parse().unwrap();
        let nanos_per = match unit[0] {
            b'H' => 3_600_000_000_000u128,
            b'M' => 60_000_000_000,
            b'S' => 1_000_000_000,
            b'm' => 1_000_000,
            b'u' => 1_000,
            b'n' => 1,
            u => panic!("unit {u}"),
        };
        assert_eq!(d.as_nanos(), n * nanos_per);
        format_round_trip(d);
    }
    if data.len() >= 8 {
        let nanos = u64::from_be_bytes(data[..8].try_into().unwrap());
        format_round_trip(Duration::from_nanos(nanos));
        format_round_trip(Duration::from_secs(nanos >> 8));
    }
}

fn format_round_trip(d: Duration) {
    let s = timeout::format(d);
    assert!(s.len() <= 9, "{d:?} -> {s}");
    let back =
        timeout::parse(s.as_bytes()).unwrap_or_else(|| panic!("{d:?} -> {s} does not parse"));
    assert!(back <= d, "{d:?} -> {s} -> {back:?}");
    let unit = match s.as_bytes()[s.len() - 1] {
        b'n' => Duration::from_nanos(1),
        b'u' => Duration::from_micros(1),
        b'm' => Duration::from_millis(1),
        b'S' => Duration::from_secs(1),
        b'M' => Duration::from_secs(60),
        _ => Duration::MAX,
    };
    assert!(d - back < unit, "{d:?} -> {s} -> {back:?}");
}

/// The loader never panics; a refusal says why, with a place inside the
/// text; loading is deterministic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/nonexistent/torii-fuzz/torii.yaml");
    let first = torii::config::load_str(text, file);
    // YAML breaks lines at LF, CRLF and a lone CR alike.
    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
    let problems = match &first {
        Ok(loaded) => &loaded.warnings,
        Err(problems) => {
            assert!(
                problems.iter().any(|p| p.severity == Severity::Error),
                "refused without an error: {problems:?}"
            );
            problems
        }
    };
    for p in problems {
        assert!(!p.message.is_empty());
        assert!(
            p.line >= 1 && p.line <= lines + 1,
            "line {} of {lines}: {p}",
            p.line
        );
        assert!(p.column >= 1, "{p}");
    }
    let again = torii::config::load_str(text, file);
    match (&first, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a.warnings, b.warnings),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("loading the same text twice gave different answers"),
    }
}

/// `google.api.http` path templates: input lines `TEMPLATE`, `TEMPLATE`,
/// `PATH`. Parsing and matching never panic; a parsed template keeps its
/// text, its variables cover segments inside it, `**` only comes last; a
/// match binds every variable; and two templates with the same verb that
/// both match one path are reported as overlapping (the load-time check
/// that refuses ambiguous rules must never miss one), symmetrically.
pub fn path_template(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = s.splitn(3, '\n');
    let (a, b, path) = (
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
    );
    let parsed: Vec<Template> = [a, b]
        .into_iter()
        .filter_map(|text| Template::parse(text).ok())
        .collect();
    for t in &parsed {
        assert!([a, b].contains(&t.text.as_str()), "{t:?}");
        let n = t.segments.len();
        for v in &t.variables {
            assert!(v.start < v.end && v.end <= n, "{t:?}");
            assert!(!v.field_path.is_empty(), "{t:?}");
        }
        if let Some(i) = t.segments.iter().position(|x| *x == Segment::Rest) {
            assert_eq!(i + 1, n, "** not last: {t:?}");
        }
        assert!(t.overlaps(t), "a template overlaps itself: {t:?}");
        if let Some(vars) = t.matches(path) {
            assert_eq!(vars.len(), t.variables.len(), "{t:?} on {path:?}");
        }
    }
    if let [t, u] = &parsed[..] {
        assert_eq!(t.overlaps(u), u.overlaps(t), "{t:?} / {u:?}");
        if t.verb == u.verb && t.matches(path).is_some() && u.matches(path).is_some() {
            assert!(
                t.overlaps(u),
                "both match {path:?}, no overlap: {t:?} / {u:?}"
            );
        }
    }
}

/// gRPC-Web's decoder: the input's first byte seeds where reads end, the
/// rest is the body. Streaming base64 decoding, however the body is cut,
/// agrees with decoding it whole 4-character group by group (padding may
/// end any group); so does the frame walk over the decoded bytes with a
/// reference parse; what `base64_chunk` encodes decodes back; a trailers
/// frame parses back into its fields.
pub fn grpc_web(data: &[u8]) {
    use base64::Engine as _;
    use torii::grpc::web::{base64_chunk, trailer_frame, Base64Stream, FrameCheck};
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let cuts = |len: usize| -> Vec<usize> {
        let step = 1 + (seed as usize % 7);
        (step..len).step_by(step).collect()
    };
    let pieces = |b: &[u8]| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts(b.len()).into_iter().chain([b.len()]) {
            out.push(b[at..c].to_vec());
            at = c;
        }
        out
    };
    // The reference: group by group, each standalone.
    let reference: Option<Vec<u8>> = if body.len() % 4 == 0 {
        body.chunks(4)
            .map(|g| base64::engine::general_purpose::STANDARD.decode(g).ok())
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat())
    } else {
        None
    };
    let mut d = Base64Stream::default();
    let mut out = bytes::BytesMut::new();
    let streamed = pieces(body)
        .iter()
        .try_for_each(|p| d.push(p, &mut out))
        .and_then(|()| d.finish())
        .ok()
        .map(|()| out.to_vec());
    assert_eq!(
        streamed,
        reference,
        "base64 of {body:?} cut at {:?}",
        cuts(body.len())
    );
    if seed & 0x80 != 0 {
        let enc = base64_chunk(body);
        let mut d = Base64Stream::default();
        let mut back = bytes::BytesMut::new();
        d.push(&enc, &mut back).expect("own encoding decodes");
        d.finish().expect("own encoding is whole");
        assert_eq!(&back[..], body);
    }
    // Frames: the same answer however the bytes are cut.
    let whole = {
        let mut f = FrameCheck::default();
        f.feed(body).and_then(|()| f.finish()).map(|()| f.messages)
    };
    let mut f = FrameCheck::default();
    let cut = pieces(body)
        .iter()
        .try_for_each(|p| f.feed(p))
        .and_then(|()| f.finish())
        .map(|()| f.messages);
    assert_eq!(whole.is_ok(), cut.is_ok(), "frames of {body:?}");
    if let (Ok(a), Ok(b)) = (&whole, &cut) {
        assert_eq!(a, b);
    }
    // A reference walk: 5-byte heads, flags 0 or 1, whole payloads.
    let mut rest = body;
    let mut n = 0u64;
    let ok = loop {
        if rest.is_empty() {
            break true;
        }
        if rest.len() < 5 || rest[0] > 1 {
            break false;
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if rest.len() - 5 < len {
            break false;
        }
        rest = &rest[5 + len..];
        n += 1;
    };
    assert_eq!(whole.as_ref().ok(), ok.then_some(&n), "frames of {body:?}");
    // Trailers: printable values round-trip through the frame.
    if let Ok(text) = std::str::from_utf8(body) {
        let mut t = http::HeaderMap::new();
        for (i, v) in text.split('\n').enumerate().take(4) {
            if let Ok(v) = http::HeaderValue::from_str(v) {
                t.append(
                    http::HeaderName::from_bytes(format!("x-f{i}").as_bytes()).unwrap(),
                    v,
                );
            }
        }
        let f = trailer_frame(&t);
        assert_eq!(f[0], 0x80);
        let len = u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
        assert_eq!(len, f.len() - 5);
        let lines: Vec<&[u8]> = f[5..]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), t.len());
    }
}

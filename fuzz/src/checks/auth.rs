//! Token extraction and the compact JWS form; the `allow` rules' claim
//! matcher.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use torii::auth::{jws, jwt, rules};

/// The first line is an `Authorization`-style value, the rest a token on
/// its own. What `jws::from_header` accepts starts with the scheme (any
/// case) and spaces, and is the value's tail; what `jws::parse` accepts is
/// three base64url parts (nothing else, no padding) whose canonical
/// re-encoding is the input, with a non-empty signature and a JSON header
/// naming an algorithm; the signing input is the token up to the last dot.
pub fn token(data: &[u8]) {
    let (line, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(t) = jws::from_header(line, "Bearer ") {
        assert!(line.len() >= 7 + t.len(), "{line:?} -> {t:?}");
        assert!(line[..6].eq_ignore_ascii_case(b"bearer"), "{line:?}");
        assert!(line.ends_with(t.as_bytes()), "{line:?} -> {t:?}");
        let gap = &line[6..line.len() - t.len()];
        assert!(
            !gap.is_empty() && gap.iter().all(|b| *b == b' '),
            "{line:?}"
        );
        check_parse(t);
    }
    if let Ok(s) = std::str::from_utf8(rest) {
        check_parse(s);
    }
}

fn check_parse(s: &str) {
    let Ok(jws) = jws::parse(s) else { return };
    assert!(s.len() <= jws::MAX_TOKEN);
    let parts: Vec<&str> = s.split('.').collect();
    assert_eq!(parts.len(), 3, "{s:?}");
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
        "{s:?}"
    );
    assert_eq!(
        URL_SAFE_NO_PAD.encode(&jws.signature),
        parts[2],
        "not canonical: {s:?}"
    );
    assert_eq!(
        URL_SAFE_NO_PAD.encode(&jws.payload),
        parts[1],
        "not canonical: {s:?}"
    );
    assert!(!jws.signature.is_empty());
    assert_eq!(jws.signing_input, &s[..parts[0].len() + 1 + parts[1].len()]);
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"].as_str(), Some(jws.header.alg.as_str()));
}

/// Line 1: a claim path; line 2: accepted values, `|`-separated; the rest:
/// the claims (JSON). A claim that matches exists at its path; a value
/// that matches is one `claim_text` shows (joined arrays: one of its
/// elements; `scope`: one of its words); matching is the same with the
/// values in any order and never depends on other values.
pub fn claims(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let (Some(path), Some(values), Some(json)) = (lines.next(), lines.next(), lines.next()) else {
        return;
    };
    let Ok(serde_json::Value::Object(claims)) = serde_json::from_str::<serde_json::Value>(json)
    else {
        return;
    };
    let want: Vec<String> = values.split('|').map(str::to_string).collect();
    let matched = rules::claim_matches(&claims, path, &want);
    let mut reversed = want.clone();
    reversed.reverse();
    assert_eq!(matched, rules::claim_matches(&claims, path, &reversed));
    let any_one = want
        .iter()
        .any(|w| rules::claim_matches(&claims, path, std::slice::from_ref(w)));
    assert_eq!(matched, any_one, "any-of is not the union of its values");
    if matched {
        assert!(jwt::claim(&claims, path).is_some());
        let shown = jwt::claim_text(&claims, path).unwrap_or_default();
        let words = path == "scope" || path == "scp";
        assert!(
            want.iter().any(|w| shown == *w
                || shown.split(',').any(|p| p == w)
                || (words && shown.split([' ', ',']).any(|p| p == w))),
            "{path}: {want:?} matched but the claim shows {shown:?}"
        );
    }
}

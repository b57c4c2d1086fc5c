//! Strict token extraction and the compact JWS form (RFC 7515 §7.1).
//!
//! A token is exactly three base64url parts (RFC 4648 §5, no padding, no
//! whitespace, canonical trailing bits) joined by two dots, and nothing
//! else: `Bearer <valid> junk`, `<valid>###`, a space or tab inside and
//! padding are refused, never trimmed away.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

/// The longest token torii reads (bytes): far above any real JWT.
pub const MAX_TOKEN: usize = 16 * 1024;

/// A compact JWS, split and decoded; nothing verified yet.
#[derive(Debug)]
pub struct Jws<'t> {
    pub header: Header,
    /// The decoded payload (the claims' JSON).
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    /// `BASE64URL(header) . BASE64URL(payload)`: what was signed.
    pub signing_input: &'t str,
}

/// The JOSE header fields torii reads. `crit` names extensions the
/// token says must be understood: torii understands none, so a token
/// with `crit` is refused (RFC 7515 §4.1.11).
#[derive(Debug, Deserialize)]
pub struct Header {
    pub alg: String,
    pub kid: Option<String>,
    pub crit: Option<serde_json::Value>,
}

/// Splits and decodes a compact JWS; `Err` says what is wrong, in words.
pub fn parse(token: &str) -> Result<Jws<'_>, String> {
    if token.is_empty() {
        return Err("the token is empty".into());
    }
    if token.len() > MAX_TOKEN {
        return Err(format!(
            "the token is {} bytes, more than the {MAX_TOKEN} torii reads",
            token.len()
        ));
    }
    if let Some(bad) = token
        .bytes()
        .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    {
        let what = match bad {
            b' ' => "a space".to_string(),
            b'\t' => "a tab".to_string(),
            b'=' => "base64 padding (=)".to_string(),
            b if b.is_ascii_graphic() => format!("{:?}", b as char),
            b => format!("byte 0x{b:02x}"),
        };
        return Err(format!(
            "the token contains {what}: a JWT is three base64url parts joined by dots and nothing else"
        ));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        let dots = token.matches('.').count();
        return Err(format!(
            "the token has {} parts; a JWT (compact JWS) has exactly 3 joined by dots",
            dots + 1
        ));
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| format!("the token's {what} is not base64url: {e}"))
    };
    let header_json = decode(h, "header")?;
    let payload = decode(p, "payload")?;
    let signature = decode(s, "signature")?;
    if signature.is_empty() {
        return Err("the token is unsigned (its signature part is empty)".into());
    }
    let header: Header = serde_json::from_slice(&header_json)
        .map_err(|e| format!("the token's header is not a JOSE header: {e}"))?;
    if header.crit.is_some() {
        return Err(
            "the token's header has crit (extensions torii must understand and does not)".into(),
        );
    }
    Ok(Jws {
        header,
        payload,
        signature,
        signing_input: &token[..h.len() + 1 + p.len()],
    })
}

/// The token in an `Authorization`-style header value: `prefix` (like
/// `"Bearer "`, its scheme compared case-insensitively, as RFC 7235 says),
/// then one or more spaces (RFC 6750's `1*SP`), then the token and nothing
/// else. `Err` says why the value is not one; the token itself is checked
/// by [`parse`].
pub fn from_header<'v>(value: &'v [u8], prefix: &str) -> Result<&'v str, String> {
    let value = std::str::from_utf8(value)
        .map_err(|_| "the credential header is not ASCII text".to_string())?;
    if prefix.is_empty() {
        return Ok(value);
    }
    let scheme = prefix.trim_end_matches(' ');
    let spaced = scheme.len() != prefix.len();
    if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err(format!(
            "the credential header does not start with {:?}",
            prefix.trim_end()
        ));
    }
    let rest = &value[scheme.len()..];
    if !spaced {
        return Ok(rest);
    }
    let token = rest.trim_start_matches(' ');
    if token.len() == rest.len() {
        return Err(format!(
            "the credential header does not start with {prefix:?} (a space after the scheme)"
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token() -> String {
        format!(
            "{}.{}.{}",
            b64(r#"{"alg":"ES256","kid":"k1"}"#),
            b64(r#"{"sub":"a"}"#),
            b64("sig")
        )
    }

    #[test]
    fn strict_parts() {
        let t = token();
        let jws = parse(&t).unwrap();
        assert_eq!(jws.header.alg, "ES256");
        assert_eq!(jws.header.kid.as_deref(), Some("k1"));
        assert_eq!(jws.signature, b"sig");
        assert!(t.starts_with(jws.signing_input));
        for bad in [
            format!("{t} junk"),
            format!("{t}###"),
            format!("{t}="),
            format!("{t}.x"),
            t.replacen('.', ". ", 1),
            t.replacen('.', ".\t", 1),
            format!("{}.{}.", b64("{\"alg\":\"none\"}"), b64("{}")),
            "a.b".into(),
            String::new(),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bearer_forms() {
        let p = "Bearer ";
        assert_eq!(from_header(b"Bearer abc", p).unwrap(), "abc");
        assert_eq!(from_header(b"bearer abc", p).unwrap(), "abc");
        assert_eq!(from_header(b"BEARER  abc", p).unwrap(), "abc");
        assert!(from_header(b"Bearerabc", p).is_err());
        assert!(from_header(b"Basic abc", p).is_err());
        assert!(from_header(b"Bear", p).is_err());
        // What follows the spaces is the token's to judge.
        assert_eq!(from_header(b"Bearer abc junk", p).unwrap(), "abc junk");
        assert!(parse("abc junk").is_err());
    }
}

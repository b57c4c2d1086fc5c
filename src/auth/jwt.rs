//! A JWT provider: issuer, audiences, where tokens come from, its key set
//! (see `jwks.rs`), and the checks a token must pass (RFC 7519 §7.2):
//! signature with a key from the set (the algorithm the key's), `iss`
//! exactly, `aud` any of the audiences, `exp` required, `nbf` and `iat`,
//! all within the clock skew. A verified token is cached by its text
//! (bounded), so a client that sends the same token again costs a lookup
//! and the time checks, not a signature verification.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderName;
use serde_json::Value;

use super::jwks::Jwks;
use super::jws;
use super::Failure;

/// Tokens kept verified per provider: past it, expired entries go, and if
/// none had, all do.
pub const TOKEN_CACHE: usize = 4096;
/// Clock skew allowed unless configured otherwise.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Where a provider's tokens are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFrom {
    /// A header; `prefix` (like `"Bearer "`) before the token.
    Header { name: HeaderName, prefix: String },
    /// A query parameter.
    Query(String),
}

/// A `jwt_providers:` entry, with its key set.
pub struct JwtProvider {
    pub name: String,
    pub issuer: String,
    /// Empty: `aud` is not checked.
    pub audiences: Vec<String>,
    pub from: Vec<TokenFrom>,
    /// Claim path (dots for nested claims) → header sent upstream.
    pub claims_to_headers: Vec<(String, HeaderName)>,
    pub clock_skew: Duration,
    pub jwks: Jwks,
    cache: Mutex<HashMap<Box<str>, Cached>>,
}

#[derive(Clone)]
struct Cached {
    token: Arc<Verified>,
    /// The key set's generation that verified it.
    generation: u64,
}

impl std::fmt::Debug for JwtProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtProvider")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("from", &self.from)
            .field("claims_to_headers", &self.claims_to_headers)
            .field("clock_skew", &self.clock_skew)
            .field("jwks", &self.jwks)
            .finish()
    }
}

/// A token that passed every check.
#[derive(Debug)]
pub struct Verified {
    pub claims: serde_json::Map<String, Value>,
    pub sub: Option<String>,
    pub exp: i64,
    pub nbf: Option<i64>,
}

impl JwtProvider {
    pub fn new(
        name: String,
        issuer: String,
        audiences: Vec<String>,
        from: Vec<TokenFrom>,
        claims_to_headers: Vec<(String, HeaderName)>,
        clock_skew: Duration,
        jwks: Jwks,
    ) -> Self {
        JwtProvider {
            name,
            issuer,
            audiences,
            from,
            claims_to_headers,
            clock_skew,
            jwks,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies `token` (already extracted) at `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Arc<Verified>, Failure> {
        let now_s = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let keys = self.jwks.current();
        let hit = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        if let Some(hit) = hit {
            if hit.generation == keys.generation {
                self.times(&hit.token, now_s)?;
                return Ok(hit.token);
            }
        }
        let verified = Arc::new(self.verify_uncached(token, &keys, now_s)?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= TOKEN_CACHE {
            let skew = self.clock_skew.as_secs() as i64;
            cache.retain(|_, c| c.token.exp + skew >= now_s && c.generation == keys.generation);
            if cache.len() >= TOKEN_CACHE {
                cache.clear();
            }
        }
        cache.insert(
            token.into(),
            Cached {
                token: verified.clone(),
                generation: keys.generation,
            },
        );
        Ok(verified)
    }

    fn verify_uncached(
        &self,
        token: &str,
        keys: &super::jwks::KeyState,
        now: i64,
    ) -> Result<Verified, Failure> {
        let jws = jws::parse(token).map_err(|m| Failure::unauthenticated("malformed", m))?;
        let alg = jws.header.alg.as_str();
        if alg.eq_ignore_ascii_case("none") {
            return Err(Failure::unauthenticated(
                "algorithm",
                "the token is unsigned (alg none); torii accepts signed tokens only",
            ));
        }
        if alg.starts_with("HS") {
            return Err(Failure::unauthenticated(
                "algorithm",
                format!("alg {alg} (a shared secret) is never accepted: provider {} verifies with the public keys of its JWKS", self.name),
            ));
        }
        let Some(set) = &keys.set else {
            return Err(self.jwks.unavailable(&self.name));
        };
        let candidates: Vec<&super::jwk::Key> = match &jws.header.kid {
            Some(kid) => set
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => set.keys.iter().collect(),
        };
        if candidates.is_empty() {
            let kid = jws.header.kid.as_deref().unwrap_or_default();
            let started = self.jwks.refetch_for_unknown_kid();
            let known: Vec<&str> = set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
            return Err(Failure::unauthenticated(
                "unknown_kid",
                format!(
                    "unknown key id {kid:?}: provider {}'s key set has [{}]{}",
                    self.name,
                    known.join(", "),
                    if started {
                        "; torii is fetching the key set again"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let fitting: Vec<_> = candidates.iter().filter(|k| k.fits(alg)).collect();
        if fitting.is_empty() {
            return Err(Failure::unauthenticated(
                "algorithm",
                format!(
                    "alg {alg} does not fit the key{} (it verifies {})",
                    jws.header
                        .kid
                        .as_deref()
                        .map(|k| format!(" {k:?}"))
                        .unwrap_or_default(),
                    candidates[0].algorithms()
                ),
            ));
        }
        let msg = jws.signing_input.as_bytes();
        if !fitting.iter().any(|k| k.verify(alg, msg, &jws.signature)) {
            return Err(Failure::unauthenticated(
                "signature",
                "the token's signature does not verify",
            ));
        }
        let claims: serde_json::Map<String, Value> =
            serde_json::from_slice(&jws.payload).map_err(|e| {
                Failure::unauthenticated(
                    "malformed",
                    format!("the token's payload is not a JSON object: {e}"),
                )
            })?;
        let iss = claims.get("iss").and_then(Value::as_str);
        if iss != Some(self.issuer.as_str()) {
            return Err(Failure::unauthenticated(
                "issuer",
                match iss {
                    Some(iss) => format!(
                        "issuer {iss:?} is not provider {}'s {:?}",
                        self.name, self.issuer
                    ),
                    None => "the token has no iss (issuer)".to_string(),
                },
            ));
        }
        if !self.audiences.is_empty() {
            let auds: Vec<&str> = match claims.get("aud") {
                Some(Value::String(a)) => vec![a.as_str()],
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !auds.iter().any(|a| self.audiences.iter().any(|w| w == a)) {
                return Err(Failure::unauthenticated(
                    "audience",
                    format!(
                        "audience {} not in [{}]",
                        if auds.is_empty() {
                            "(none)".to_string()
                        } else {
                            auds.iter()
                                .map(|a| format!("{a:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                        self.audiences
                            .iter()
                            .map(|a| format!("{a:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        let number = |name: &str| -> Result<Option<i64>, Failure> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_i64()
                    .or_else(|| v.as_f64().map(|f| f as i64))
                    .map(Some)
                    .ok_or_else(|| {
                        Failure::unauthenticated(
                            "malformed",
                            format!("the token's {name} is not a number of seconds"),
                        )
                    }),
            }
        };
        let Some(exp) = number("exp")? else {
            return Err(Failure::unauthenticated(
                "expired",
                "the token has no exp (expiry); torii requires one",
            ));
        };
        let nbf = number("nbf")?;
        if let Some(iat) = number("iat")? {
            let skew = self.clock_skew.as_secs() as i64;
            if iat > now + skew {
                return Err(Failure::unauthenticated(
                    "not_yet_valid",
                    format!(
                        "the token was issued in the future (iat {}, {} s from now)",
                        stamp(iat),
                        iat - now
                    ),
                ));
            }
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_string);
        let verified = Verified {
            claims,
            sub,
            exp,
            nbf,
        };
        self.times(&verified, now)?;
        Ok(verified)
    }

    /// `exp` and `nbf` at `now`, within the clock skew.
    fn times(&self, v: &Verified, now: i64) -> Result<(), Failure> {
        let skew = self.clock_skew.as_secs() as i64;
        if now > v.exp + skew {
            return Err(Failure::unauthenticated(
                "expired",
                format!(
                    "the token expired at {}, {} s ago",
                    stamp(v.exp),
                    now - v.exp
                ),
            ));
        }
        if let Some(nbf) = v.nbf {
            if now + skew < nbf {
                return Err(Failure::unauthenticated(
                    "not_yet_valid",
                    format!(
                        "the token is not valid before {}, {} s from now",
                        stamp(nbf),
                        nbf - now
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `2026-12-03T12:03:04Z`.
fn stamp(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// A claim by its path (`a.b` for nested objects), as text: strings as
/// they are, arrays joined with commas, numbers and booleans written out.
pub fn claim_text(claims: &serde_json::Map<String, Value>, path: &str) -> Option<String> {
    let v = claim(claims, path)?;
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        Value::Array(list) => Some(list.iter().filter_map(one).collect::<Vec<_>>().join(",")),
        v => one(v),
    }
}

/// The claim at `path` (dots separate nested objects; a claim whose own
/// name has dots is found first).
pub fn claim<'c>(claims: &'c serde_json::Map<String, Value>, path: &str) -> Option<&'c Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwks::Source;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    fn es256_provider() -> (JwtProvider, String) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let p = key.public_key().as_ref();
        let b = |d: &[u8]| URL_SAFE_NO_PAD.encode(d);
        let jwks = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","x":"{}","y":"{}"}}]}}"#,
            b(&p[1..33]),
            b(&p[33..])
        );
        let set = crate::auth::jwk::parse_set(jwks.as_bytes()).unwrap();
        let provider = JwtProvider::new(
            "idp".into(),
            "https://idp".into(),
            vec!["api".into()],
            vec![],
            vec![],
            DEFAULT_CLOCK_SKEW,
            Jwks::new(Source::File("jwks.json".into()), Some(set)),
        );
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let input = format!(
            "{}.{}",
            b(br#"{"alg":"ES256","kid":"k1"}"#),
            b(format!(r#"{{"iss":"https://idp","aud":"api","sub":"a","exp":{exp}}}"#).as_bytes())
        );
        let sig = key.sign(&rng, input.as_bytes()).unwrap();
        (provider, format!("{input}.{}", b(sig.as_ref())))
    }

    #[test]
    fn verifies_and_caches() {
        let (p, token) = es256_provider();
        let now = SystemTime::now();
        let v = p.verify(&token, now).unwrap();
        assert_eq!(v.sub.as_deref(), Some("a"));
        assert!(Arc::ptr_eq(&v, &p.verify(&token, now).unwrap()), "cached");
        let later = now + Duration::from_secs(3600 + 61);
        let e = p.verify(&token, later).unwrap_err();
        assert_eq!(e.reason, "expired", "{}", e.message);
    }

    /// What verifying an ES256 token costs per request, with the key set
    /// cached: `cargo test --release --lib -- --ignored --nocapture
    /// jwt_verify_cost` (signature verified every time, and a token seen
    /// before, from the verified-token cache).
    #[test]
    #[ignore]
    fn jwt_verify_cost() {
        let (p, token) = es256_provider();
        let keys = p.jwks.current();
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        for _ in 0..3 {
            let n = 2_000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(p.verify_uncached(&token, &keys, secs).unwrap());
            }
            let full = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            let n = 200_000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(p.verify(&token, now).unwrap());
            }
            let cached = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            eprintln!("ES256: verified {full:.2} µs, cached {cached:.3} µs per request");
        }
    }
}

//! JSON Web Keys (RFC 7517) as public keys `ring` verifies with. The
//! algorithm a token may use follows from the key: its type and curve
//! (and its `alg`, when the key names one). `none` and the HMAC family
//! are never accepted: a public key is not a shared secret.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;

/// A public key from a JWKS.
#[derive(Debug, Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// The key's own `alg`, when it names one: the only one it verifies.
    pub alg: Option<String>,
    material: Material,
}

#[derive(Debug, Clone)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// `0x04 || x || y`.
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

/// A key set: the keys torii could use, and why others were skipped.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    /// One line per key left out (an unsupported type, a bad field).
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Parses a JWKS document (`{"keys": [...]}`). `Err` when it is not one,
/// or has no usable key.
pub fn parse_set(json: &[u8]) -> Result<KeySet, String> {
    let raw: RawSet = serde_json::from_slice(json)
        .map_err(|e| format!("not a JWKS document ({{\"keys\": [...]}}): {e}"))?;
    let mut set = KeySet::default();
    for (i, value) in raw.keys.into_iter().enumerate() {
        match serde_json::from_value::<RawKey>(value).map_err(|e| e.to_string()) {
            Ok(k) => match key(&k) {
                Ok(Some(key)) => set.keys.push(key),
                Ok(None) => {}
                Err(why) => set.skipped.push(format!(
                    "key {} ({}): {why}",
                    i,
                    k.kid.as_deref().unwrap_or("no kid")
                )),
            },
            Err(why) => set.skipped.push(format!("key {i}: {why}")),
        }
    }
    if set.keys.is_empty() {
        let why = if set.skipped.is_empty() {
            "the key set is empty".to_string()
        } else {
            format!("no usable key: {}", set.skipped.join("; "))
        };
        return Err(why);
    }
    Ok(set)
}

fn b64(field: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let text = field
        .as_deref()
        .ok_or_else(|| format!("{name} is missing"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| format!("{name} is not base64url: {e}"))
}

/// `Ok(None)`: a key for encryption (`use: enc`), not for signatures.
fn key(k: &RawKey) -> Result<Option<Key>, String> {
    if k.use_.as_deref().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let material = match (k.kty.as_str(), k.crv.as_deref()) {
        ("RSA", _) => {
            let n = b64(&k.n, "n")?;
            let e = b64(&k.e, "e")?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!(
                    "an RSA key of {bits} bits; at least 2048 are needed"
                ));
            }
            Material::Rsa { n, e }
        }
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (x, y) = (b64(&k.x, "x")?, b64(&k.y, "y")?);
            let len = if crv == "P-256" { 32 } else { 48 };
            if x.len() != len || y.len() != len {
                return Err(format!("{crv} coordinates must be {len} bytes each"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            if crv == "P-256" {
                Material::P256(point)
            } else {
                Material::P384(point)
            }
        }
        ("OKP", Some("Ed25519")) => {
            let x = b64(&k.x, "x")?;
            if x.len() != 32 {
                return Err("an Ed25519 key is 32 bytes".into());
            }
            Material::Ed25519(x)
        }
        ("oct", _) => {
            return Err("a symmetric (oct) key: torii verifies with public keys only".into())
        }
        (kty, crv) => {
            return Err(format!(
                "unsupported key type {kty}{}",
                crv.map(|c| format!(" with curve {c}")).unwrap_or_default()
            ))
        }
    };
    let key = Key {
        kid: k.kid.clone(),
        alg: k.alg.clone(),
        material,
    };
    if let Some(alg) = &key.alg {
        if !key.fits(alg) {
            return Err(format!("alg {alg} does not fit its key type"));
        }
    }
    Ok(Some(key))
}

impl Key {
    /// Whether a token signed with `alg` may be verified with this key:
    /// decided by the key, never by the token alone.
    pub fn fits(&self, alg: &str) -> bool {
        if self.alg.as_deref().is_some_and(|a| a != alg) {
            return false;
        }
        match self.material {
            Material::Rsa { .. } => matches!(
                alg,
                "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512"
            ),
            Material::P256(_) => alg == "ES256",
            Material::P384(_) => alg == "ES384",
            Material::Ed25519(_) => alg == "EdDSA" || alg == "Ed25519",
        }
    }

    /// The algorithms this key verifies, for messages.
    pub fn algorithms(&self) -> &'static str {
        match self.material {
            Material::Rsa { .. } => "RS256/384/512, PS256/384/512",
            Material::P256(_) => "ES256",
            Material::P384(_) => "ES384",
            Material::Ed25519(_) => "EdDSA",
        }
    }

    /// Verifies `sig` over `msg` with `alg` (already checked by [`Key::fits`]).
    pub fn verify(&self, alg: &str, msg: &[u8], sig: &[u8]) -> bool {
        use signature as s;
        match &self.material {
            Material::Rsa { n, e } => {
                let params: &s::RsaParameters = match alg {
                    "RS256" => &s::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &s::RSA_PKCS1_2048_8192_SHA384,
                    "RS512" => &s::RSA_PKCS1_2048_8192_SHA512,
                    "PS256" => &s::RSA_PSS_2048_8192_SHA256,
                    "PS384" => &s::RSA_PSS_2048_8192_SHA384,
                    "PS512" => &s::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .is_ok()
            }
            Material::P256(point) => UnparsedPublicKey::new(&s::ECDSA_P256_SHA256_FIXED, point)
                .verify(msg, sig)
                .is_ok(),
            Material::P384(point) => UnparsedPublicKey::new(&s::ECDSA_P384_SHA384_FIXED, point)
                .verify(msg, sig)
                .is_ok(),
            Material::Ed25519(x) => UnparsedPublicKey::new(&s::ED25519, x)
                .verify(msg, sig)
                .is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_decide_algorithms() {
        let x = URL_SAFE_NO_PAD.encode([1u8; 32]);
        let ec = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"a","x":"{x}","y":"{x}"}},
            {{"kty":"oct","k":"c2VjcmV0"}},{{"kty":"OKP","crv":"Ed25519","x":"{x}","use":"sig"}}]}}"#
        );
        let set = parse_set(ec.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 2);
        assert_eq!(set.skipped.len(), 1, "{:?}", set.skipped);
        assert!(set.keys[0].fits("ES256"));
        assert!(!set.keys[0].fits("HS256"));
        assert!(!set.keys[0].fits("none"));
        assert!(!set.keys[0].fits("RS256"));
        assert!(set.keys[1].fits("EdDSA"));
        assert!(parse_set(br#"{"keys":[]}"#).is_err());
        assert!(parse_set(b"[]").is_err());
    }
}

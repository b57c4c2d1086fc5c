//! API-key sets: a consumer name per key, from a YAML file that maps
//! consumers to keys or to their SHA-256 (`sha256:<hex>`). Keys are
//! compared by their SHA-256 digests in constant time, every entry
//! looked at, so neither the time taken nor an early exit tells a caller
//! how much of a key was right.

use std::sync::Arc;

use http::HeaderName;
use ring::digest::{digest, SHA256};

/// Where a set's keys are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFrom {
    Header(HeaderName),
    Query(String),
}

/// An `api_keys:` entry.
pub struct ApiKeySet {
    pub name: String,
    pub file: std::path::PathBuf,
    pub from: Vec<KeyFrom>,
    /// The header the consumer's name goes upstream in.
    pub consumer_header: Option<HeaderName>,
    entries: Vec<(Arc<str>, [u8; 32])>,
}

impl std::fmt::Debug for ApiKeySet {
    /// Never the keys: consumer names and counts only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeySet")
            .field("name", &self.name)
            .field("file", &self.file)
            .field("from", &self.from)
            .field("consumers", &self.entries.len())
            .finish()
    }
}

impl ApiKeySet {
    /// Reads a key file's text: `Err` holds one message per bad entry.
    pub fn parse(
        name: String,
        file: std::path::PathBuf,
        text: &str,
        from: Vec<KeyFrom>,
        consumer_header: Option<HeaderName>,
    ) -> Result<Self, Vec<String>> {
        let map: Vec<(String, String)> = match serde_saphyr::from_str::<
            std::collections::BTreeMap<String, String>,
        >(text)
        {
            Ok(m) => m.into_iter().collect(),
            Err(e) => {
                return Err(vec![format!(
                    "not a map of consumer names to keys (acme: \"k-…\" or acme: \"sha256:<hex>\"): {e}"
                )])
            }
        };
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (consumer, key) in map {
            if let Some(hex) = key.strip_prefix("sha256:") {
                match decode_hex(hex) {
                    Some(d) => entries.push((Arc::from(consumer.as_str()), d)),
                    None => problems.push(format!(
                        "consumer {consumer:?}: sha256: must be followed by 64 hex digits"
                    )),
                }
            } else if key.len() < 16 {
                problems.push(format!(
                    "consumer {consumer:?}: the key has {} characters; use at least 16 (random)",
                    key.len()
                ));
            } else {
                entries.push((Arc::from(consumer.as_str()), sha256(key.as_bytes())));
            }
        }
        if entries.is_empty() && problems.is_empty() {
            problems.push("the file lists no consumer".into());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ApiKeySet {
            name,
            file,
            from,
            consumer_header,
            entries,
        })
    }

    /// The consumer whose key `key` is.
    pub fn consumer(&self, key: &[u8]) -> Option<Arc<str>> {
        let d = sha256(key);
        let mut found = None;
        for (consumer, want) in &self.entries {
            let diff = d.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if std::hint::black_box(diff) == 0 {
                found = Some(consumer.clone());
            }
        }
        found
    }

    /// The consumers' names (for `/config`).
    pub fn consumers(&self) -> Vec<&str> {
        self.entries.iter().map(|(c, _)| &**c).collect()
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_keys() {
        let text = "acme: k-0123456789abcdef\nglobex: \"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n";
        let set = ApiKeySet::parse("p".into(), "f".into(), text, vec![], None).unwrap();
        assert_eq!(set.consumer(b"k-0123456789abcdef").as_deref(), Some("acme"));
        assert_eq!(set.consumer(b"test").as_deref(), Some("globex"));
        assert!(set.consumer(b"k-0123456789abcdeX").is_none());
        assert!(!format!("{set:?}").contains("k-0123"));
        assert!(ApiKeySet::parse("p".into(), "f".into(), "a: short", vec![], None).is_err());
        assert!(ApiKeySet::parse("p".into(), "f".into(), "a: sha256:zz", vec![], None).is_err());
    }
}

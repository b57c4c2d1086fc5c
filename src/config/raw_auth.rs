//! The file's `jwt_providers:`, `api_keys:` and a route's `auth:` as
//! written (see `raw.rs` for why everything is optional text).

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct RawJwtProvider {
    pub name: Option<String>,
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub jwks: Option<RawJwks>,
    pub from: Option<Vec<RawCredentialFrom>>,
    pub claims_to_headers: Option<std::collections::BTreeMap<String, String>>,
    pub clock_skew: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawJwks {
    pub uri: Option<String>,
    pub file: Option<String>,
    pub refresh: Option<String>,
    pub ca: Option<String>,
}

/// `{ header: authorization, prefix: "Bearer " }` or `{ query: access_token }`.
#[derive(Debug, Default, Deserialize)]
pub struct RawCredentialFrom {
    pub header: Option<String>,
    pub prefix: Option<String>,
    pub query: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawApiKeys {
    pub name: Option<String>,
    pub file: Option<String>,
    pub from: Option<Vec<RawCredentialFrom>>,
    pub consumer_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRouteAuth {
    pub jwt: Option<Vec<String>>,
    pub api_key: Option<Vec<String>>,
    pub require: Option<String>,
    pub allow: Option<Vec<RawAllow>>,
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAllow {
    pub sans: Option<Vec<String>>,
    pub claims: Option<std::collections::BTreeMap<String, RawClaimValue>>,
    pub api_keys: Option<Vec<String>>,
    pub grpc_methods: Option<Vec<String>>,
    pub source_ips: Option<Vec<String>>,
}

/// A claim's accepted value: one, or a list of alternatives.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawClaimValue {
    Many(Vec<RawScalar>),
    One(RawScalar),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawScalar {
    Text(String),
    Int(i64),
    Bool(bool),
}

impl RawScalar {
    pub fn text(&self) -> String {
        match self {
            RawScalar::Text(s) => s.clone(),
            RawScalar::Int(i) => i.to_string(),
            RawScalar::Bool(b) => b.to_string(),
        }
    }
}

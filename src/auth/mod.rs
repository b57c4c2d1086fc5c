//! Identity at the edge: who a caller is (a JWT verified against a
//! provider's JWKS, an API key, the mTLS client certificate) and whether a
//! route's `allow:` rules let them in. Protocol-independent: the proxy's
//! `auth` phase (`src/proxy/auth.rs`) hands in the request's headers,
//! query, address, TLS SANs and gRPC names, and turns the [`Decision`]
//! into a response.
//!
//! - `jws.rs`: strict token extraction and the compact JWS form;
//! - `jwk.rs`: JWKS keys and signature verification (ring);
//! - `jwt.rs`: a provider and the checks a token must pass;
//! - `jwks.rs`, `fetch.rs`: a provider's key set, fetched and refreshed in
//!   the background;
//! - `api_key.rs`: API-key sets;
//! - `rules.rs`: `allow:` rules.

pub mod api_key;
mod fetch;
pub mod jwk;
pub mod jwks;
pub mod jws;
pub mod jwt;
pub mod rules;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;

pub use api_key::{ApiKeySet, KeyFrom};
pub use jwt::{JwtProvider, TokenFrom, Verified};
pub use rules::{Caller, Rule};

/// How a check ended, when it did not let the caller in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No credential, or one that failed a check (401).
    Unauthenticated,
    /// No key set to verify with (503, fail closed).
    Unavailable,
    /// Authenticated, but no `allow` rule matched (403).
    Denied,
}

impl Verdict {
    /// The `result` label of `torii_auth_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Unauthenticated | Verdict::Unavailable => "unauthenticated",
            Verdict::Denied => "denied",
        }
    }
}

/// A failed check: the verdict, a short reason (a metric label) and what
/// failed, in words.
#[derive(Debug, Clone)]
pub struct Failure {
    pub verdict: Verdict,
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            verdict: Verdict::Unauthenticated,
            reason,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Failure {
            verdict: Verdict::Unavailable,
            reason: "keys_unavailable",
            message: message.into(),
        }
    }
}

/// The start of every message about a request that brought no credential
/// (answered without RFC 6750's `error="invalid_token"`).
pub const NO_CREDENTIAL: &str = "no credential";

/// A route's `auth:`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub jwt: Vec<Arc<JwtProvider>>,
    pub api_keys: Vec<Arc<ApiKeySet>>,
    /// `require: all`: every credential method must succeed.
    pub require_all: bool,
    /// Empty: every authenticated caller.
    pub allow: Vec<Rule>,
    /// `mode: audit`: decide, log and count, deny nothing.
    pub audit: bool,
}

/// What a request shows of its caller.
pub struct Presented<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub ip: IpAddr,
    /// The verified client certificate's SANs (`URI:…`, `DNS:…`).
    pub sans: &'a [String],
    pub grpc: Option<(&'a str, &'a str)>,
}

/// Who the caller turned out to be.
#[derive(Debug, Default)]
pub struct Identity {
    pub token: Option<(Arc<JwtProvider>, Arc<Verified>)>,
    pub consumer: Option<(Arc<ApiKeySet>, Arc<str>)>,
}

/// The outcome of a route's `auth:` for one request.
#[derive(Debug)]
pub struct Decision {
    pub verdict: Verdict,
    /// `jwt`, `api_key` or `mtls`: the credential that decided.
    pub method: &'static str,
    /// `ok`, or why not (`expired`, `audience`, `no_rule`, …).
    pub reason: &'static str,
    /// What failed, in words (None when allowed).
    pub message: Option<String>,
    pub identity: Identity,
}

impl Decision {
    /// The caller as the access log and messages name them.
    pub fn describe(&self, sans: &[String]) -> String {
        let mut parts = Vec::new();
        if let Some((p, t)) = &self.identity.token {
            parts.push(format!(
                "jwt:{}/{}",
                p.name,
                t.sub.as_deref().unwrap_or("(no sub)")
            ));
        }
        if let Some((set, c)) = &self.identity.consumer {
            parts.push(format!("api_key:{}/{c}", set.name));
        }
        // A SPIFFE ID (a URI SAN) says more than a DNS name.
        if let Some(san) = sans.iter().find(|s| s.starts_with("URI:")).or(sans.first()) {
            parts.push(format!("mtls:{san}"));
        }
        if parts.is_empty() {
            "anonymous".into()
        } else {
            parts.join(" ")
        }
    }
}

impl Policy {
    /// Authenticates and authorizes one request for route `route`.
    pub fn decide(&self, req: &Presented<'_>, route: &str, now: SystemTime) -> Decision {
        let mut identity = Identity::default();
        let first_method = if !self.jwt.is_empty() {
            "jwt"
        } else if !self.api_keys.is_empty() {
            "api_key"
        } else {
            "mtls"
        };
        let fail = |f: Failure, method, identity| Decision {
            verdict: f.verdict,
            method,
            reason: f.reason,
            message: Some(f.message),
            identity,
        };
        let mut missing = Vec::new();
        if !self.jwt.is_empty() {
            match self.token(req, now) {
                Ok(Some(t)) => identity.token = Some(t),
                Ok(None) => missing.push(("jwt", self.jwt_wanted())),
                Err(f) => return fail(f, "jwt", identity),
            }
        }
        if !self.api_keys.is_empty() {
            match self.api_key(req) {
                Ok(Some(c)) => identity.consumer = Some(c),
                Ok(None) => missing.push(("api_key", self.key_wanted())),
                Err(f) => return fail(f, "api_key", identity),
            }
        }
        let any_ok = identity.token.is_some() || identity.consumer.is_some();
        let needed = if self.require_all {
            !missing.is_empty()
        } else {
            !any_ok && !missing.is_empty()
        };
        if needed {
            let (method, _) = missing[0];
            let wanted: Vec<String> = missing.iter().map(|(_, w)| w.clone()).collect();
            let joiner = if self.require_all { " and " } else { " or " };
            let f = Failure::unauthenticated(
                "missing",
                format!("{NO_CREDENTIAL}: send {}", wanted.join(joiner)),
            );
            return fail(f, method, identity);
        }
        let method = if identity.token.is_some() {
            "jwt"
        } else if identity.consumer.is_some() {
            "api_key"
        } else {
            first_method
        };
        if !self.allow.is_empty() {
            let caller = Caller {
                sans: req.sans,
                claims: identity.token.as_ref().map(|(_, t)| &t.claims),
                consumer: identity.consumer.as_ref().map(|(_, c)| &**c),
                grpc: req.grpc,
                ip: req.ip,
            };
            if !self.allow.iter().any(|r| r.matches(&caller)) {
                let mut d = Decision {
                    verdict: Verdict::Denied,
                    method,
                    reason: "no_rule",
                    message: None,
                    identity,
                };
                let who = d.describe(req.sans);
                let what = match req.grpc {
                    Some((s, m)) => format!(" calling {s}/{m}"),
                    None => String::new(),
                };
                d.message = Some(format!(
                    "no allow rule of route {route} matches the caller ({who} from {}{what})",
                    req.ip
                ));
                return d;
            }
        }
        Decision {
            verdict: Verdict::Allowed,
            method,
            reason: "ok",
            message: None,
            identity,
        }
    }

    fn jwt_wanted(&self) -> String {
        let from = &self.jwt[0].from;
        let places: Vec<String> = from
            .iter()
            .map(|f| match f {
                TokenFrom::Header { name, prefix } if prefix.is_empty() => format!("header {name}"),
                TokenFrom::Header { name, prefix } => format!("{name}: {}<token>", prefix),
                TokenFrom::Query(q) => format!("query parameter {q}"),
            })
            .collect();
        format!("a token ({})", places.join(" or "))
    }

    fn key_wanted(&self) -> String {
        let places: Vec<String> = self.api_keys[0]
            .from
            .iter()
            .map(|f| match f {
                KeyFrom::Header(h) => format!("header {h}"),
                KeyFrom::Query(q) => format!("query parameter {q}"),
            })
            .collect();
        format!("an API key ({})", places.join(" or "))
    }

    /// The one token the request carries, verified; None when it has none.
    #[allow(clippy::type_complexity)]
    fn token(
        &self,
        req: &Presented<'_>,
        now: SystemTime,
    ) -> Result<Option<(Arc<JwtProvider>, Arc<Verified>)>, Failure> {
        let mut places: Vec<&TokenFrom> = Vec::new();
        for p in &self.jwt {
            for f in &p.from {
                if !places.contains(&f) {
                    places.push(f);
                }
            }
        }
        let mut found: Vec<(String, &str)> = Vec::new();
        for place in places {
            match place {
                TokenFrom::Header { name, prefix } => {
                    for v in req.headers.get_all(name) {
                        // Another scheme (Basic, an API key) is not a token.
                        if let Ok(t) = jws::from_header(v.as_bytes(), prefix) {
                            found.push((format!("header {name}"), t));
                        }
                    }
                }
                TokenFrom::Query(q) => {
                    for v in query_values(req.query, q) {
                        found.push((format!("query parameter {q}"), v));
                    }
                }
            }
        }
        // Query values are used as sent: tokens and keys are URL-safe, so
        // one that needs decoding is wrong and fails its checks as such.
        let (_, token) = match found.len() {
            0 => return Ok(None),
            1 => found.remove(0),
            n => {
                let wheres: Vec<&str> = found.iter().map(|(w, _)| w.as_str()).collect();
                return Err(Failure::unauthenticated(
                    "multiple_tokens",
                    format!(
                        "the request carries {n} tokens ({}); send exactly one",
                        wheres.join(", ")
                    ),
                ));
            }
        };
        let provider = if self.jwt.len() == 1 {
            &self.jwt[0]
        } else {
            let iss = unverified_issuer(token);
            match self
                .jwt
                .iter()
                .find(|p| Some(p.issuer.as_str()) == iss.as_deref())
            {
                Some(p) => p,
                None => {
                    return Err(Failure::unauthenticated(
                        "issuer",
                        format!(
                            "issuer {:?} is none of the route's providers' ({})",
                            iss.unwrap_or_default(),
                            self.jwt
                                .iter()
                                .map(|p| format!("{}: {:?}", p.name, p.issuer))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ))
                }
            }
        };
        let verified = provider.verify(token, now)?;
        Ok(Some((provider.clone(), verified)))
    }

    #[allow(clippy::type_complexity)]
    fn api_key(&self, req: &Presented<'_>) -> Result<Option<(Arc<ApiKeySet>, Arc<str>)>, Failure> {
        let mut places: Vec<&KeyFrom> = Vec::new();
        for s in &self.api_keys {
            for f in &s.from {
                if !places.contains(&f) {
                    places.push(f);
                }
            }
        }
        let mut found: Vec<&[u8]> = Vec::new();
        for place in places {
            match place {
                KeyFrom::Header(h) => {
                    found.extend(req.headers.get_all(h).iter().map(|v| v.as_bytes()))
                }
                KeyFrom::Query(q) => found.extend(query_values(req.query, q).map(str::as_bytes)),
            }
        }
        let key = match found.len() {
            0 => return Ok(None),
            1 => found[0],
            n => {
                return Err(Failure::unauthenticated(
                    "multiple_keys",
                    format!("the request carries {n} API keys; send exactly one"),
                ))
            }
        };
        for set in &self.api_keys {
            if let Some(c) = set.consumer(key) {
                return Ok(Some((set.clone(), c)));
            }
        }
        let names: Vec<&str> = self.api_keys.iter().map(|s| s.name.as_str()).collect();
        Err(Failure::unauthenticated(
            "invalid_key",
            format!(
                "the API key is not one of set{} {}",
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            ),
        ))
    }
}

/// The raw (still percent-encoded) values of query parameter `name`.
fn query_values<'q>(query: Option<&'q str>, name: &'q str) -> impl Iterator<Item = &'q str> + 'q {
    query.unwrap_or("").split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// The `iss` of a token not yet verified: only to pick which of a route's
/// providers verifies it.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    use base64::Engine;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

/// `2026-12-03T12:03:04Z`.
pub(crate) fn stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

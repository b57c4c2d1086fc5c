//! `jwt_providers:`, `api_keys:` and a route's `auth:`: checked, key files
//! read (a JWKS file, API-key files: re-read on every reload), rules
//! parsed. Providers with a JWKS URI are built here but fetch nothing
//! until the running proxy starts them (`torii check` never does).

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::jwks::{Jwks, Source};
use crate::auth::rules::{Cidr, MethodPattern, Rule};
use crate::auth::{jwk, ApiKeySet, JwtProvider, KeyFrom, Policy, TokenFrom};

use super::context::{one_of, Ctx};
use super::headers::header_name;
use super::locate::join;
use super::raw_auth::*;
use super::san::SanPattern;

/// How often a JWKS from a URI is fetched again unless configured.
pub const DEFAULT_JWKS_REFRESH: std::time::Duration = std::time::Duration::from_secs(600);

/// The providers and key sets routes may name.
#[derive(Debug, Default)]
pub struct Registry {
    pub providers: Vec<Arc<JwtProvider>>,
    pub key_sets: Vec<Arc<ApiKeySet>>,
    /// Names written (also of entries that had problems): a route naming
    /// one of these is not told it does not exist.
    names: Vec<String>,
}

pub fn registry(
    cx: &mut Ctx,
    providers: Option<Vec<RawJwtProvider>>,
    key_sets: Option<Vec<RawApiKeys>>,
) -> Registry {
    let mut reg = Registry::default();
    let mut seen = HashMap::new();
    for (i, raw) in providers.unwrap_or_default().into_iter().enumerate() {
        let path = format!("jwt_providers[{i}]");
        unique(cx, &mut seen, &path, &raw.name);
        reg.names.extend(raw.name.clone());
        if let Some(p) = provider(cx, &path, raw) {
            reg.providers.push(Arc::new(p));
        }
    }
    let mut seen = HashMap::new();
    for (i, raw) in key_sets.unwrap_or_default().into_iter().enumerate() {
        let path = format!("api_keys[{i}]");
        unique(cx, &mut seen, &path, &raw.name);
        reg.names.extend(raw.name.clone());
        if let Some(s) = key_set(cx, &path, raw) {
            reg.key_sets.push(Arc::new(s));
        }
    }
    reg
}

fn unique(cx: &mut Ctx, seen: &mut HashMap<String, String>, path: &str, name: &Option<String>) {
    if let Some(n) = name {
        if let Some(first) = seen.insert(n.clone(), path.to_string()) {
            let at = join(path, "name");
            cx.error(&at, format!("{at} {n:?} is already the name of {first}"));
        }
    }
}

fn provider(cx: &mut Ctx, path: &str, raw: RawJwtProvider) -> Option<JwtProvider> {
    let name = cx
        .required(
            &join(path, "name"),
            &raw.name,
            "give the provider a name routes use, like idp",
        )
        .map(str::to_string);
    let issuer = cx
        .required(
            &join(path, "issuer"),
            &raw.issuer,
            "write the iss its tokens carry, like https://idp.example.com",
        )
        .map(str::to_string);
    let audiences = raw.audiences.unwrap_or_default();
    let skew = cx.duration(
        &join(path, "clock_skew"),
        &raw.clock_skew,
        Some(crate::auth::jwt::DEFAULT_CLOCK_SKEW),
        false,
    );
    let from = token_from(cx, &join(path, "from"), raw.from);
    let mut claims = Vec::new();
    let mut ok = true;
    for (claim, header) in raw.claims_to_headers.unwrap_or_default() {
        let at = format!("{}.{claim}", join(path, "claims_to_headers"));
        match header_name(&header, true) {
            Ok(h) => claims.push((claim, h)),
            Err(why) => {
                cx.error(&at, format!("{at}: {why}"));
                ok = false;
            }
        }
    }
    let jwks = jwks(cx, &join(path, "jwks"), raw.jwks);
    let (name, issuer, skew, from, jwks) = (name?, issuer?, skew??, from?, jwks?);
    ok.then(|| JwtProvider::new(name, issuer, audiences, from, claims, skew, jwks))
}

fn jwks(cx: &mut Ctx, path: &str, raw: Option<RawJwks>) -> Option<Jwks> {
    let Some(raw) = raw else {
        cx.error(
            path,
            format!("{path} is missing; write {{ uri: https://…/jwks.json }} or {{ file: keys/jwks.json }}"),
        );
        return None;
    };
    match (&raw.uri, &raw.file) {
        (Some(uri), None) => {
            let at = join(path, "uri");
            let uri = uri.trim();
            let ok_scheme = uri.starts_with("https://") || uri.starts_with("http://");
            if !ok_scheme
                || uri
                    .parse::<http::Uri>()
                    .map(|u| u.host().is_none())
                    .unwrap_or(true)
            {
                cx.error(
                    &at,
                    format!("{at} {uri:?} must be an http:// or https:// URL with a host"),
                );
                return None;
            }
            let refresh = cx.duration(
                &join(path, "refresh"),
                &raw.refresh,
                Some(DEFAULT_JWKS_REFRESH),
                true,
            )??;
            let ca = match &raw.ca {
                Some(ca) => super::tls::read_certs(cx, &join(path, "ca"), ca, "CA certificate")?.1,
                None => Vec::new(),
            };
            Some(Jwks::new(
                Source::Uri {
                    uri: uri.to_string(),
                    refresh,
                    ca,
                },
                None,
            ))
        }
        (None, Some(file)) => {
            let at = join(path, "file");
            let (resolved, bytes) = super::tls::read(cx, &at, file, "JWKS")?;
            match jwk::parse_set(&bytes) {
                Ok(set) => {
                    for skipped in &set.skipped {
                        cx.warning(&at, format!("{at}: {skipped} (left out)"));
                    }
                    Some(Jwks::new(Source::File(resolved), Some(set)))
                }
                Err(why) => {
                    cx.error(&at, format!("{at} {file:?}: {why}"));
                    None
                }
            }
        }
        _ => {
            cx.error(path, format!("{path} takes exactly one of uri and file"));
            None
        }
    }
}

fn token_from(
    cx: &mut Ctx,
    path: &str,
    raw: Option<Vec<RawCredentialFrom>>,
) -> Option<Vec<TokenFrom>> {
    let Some(raw) = raw else {
        return Some(vec![TokenFrom::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ".into(),
        }]);
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (i, f) in raw.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        match (f.header, f.query) {
            (Some(h), None) => match header_name(&h, false) {
                Ok(name) => {
                    let prefix = f.prefix.unwrap_or_else(|| {
                        if name == http::header::AUTHORIZATION {
                            "Bearer ".into()
                        } else {
                            String::new()
                        }
                    });
                    out.push(TokenFrom::Header { name, prefix })
                }
                Err(why) => {
                    cx.error(&at, format!("{at}.header: {why}"));
                    ok = false;
                }
            },
            (None, Some(q)) if !q.trim().is_empty() && f.prefix.is_none() => {
                out.push(TokenFrom::Query(q.trim().to_string()))
            }
            _ => {
                cx.error(&at, format!("{at} takes a header (with an optional prefix) or a query parameter: {{ header: authorization, prefix: \"Bearer \" }} or {{ query: access_token }}"));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn key_set(cx: &mut Ctx, path: &str, raw: RawApiKeys) -> Option<ApiKeySet> {
    let name = cx
        .required(
            &join(path, "name"),
            &raw.name,
            "give the set a name routes use, like partners",
        )
        .map(str::to_string);
    let mut ok = true;
    let mut from = Vec::new();
    let from_at = join(path, "from");
    for (i, f) in raw
        .from
        .unwrap_or_else(|| {
            vec![RawCredentialFrom {
                header: Some("x-api-key".into()),
                ..Default::default()
            }]
        })
        .into_iter()
        .enumerate()
    {
        let at = format!("{from_at}[{i}]");
        match (f.header, f.query, f.prefix) {
            (Some(h), None, None) => match header_name(&h, false) {
                Ok(n) => from.push(KeyFrom::Header(n)),
                Err(why) => {
                    cx.error(&at, format!("{at}.header: {why}"));
                    ok = false;
                }
            },
            (None, Some(q), None) if !q.trim().is_empty() => {
                from.push(KeyFrom::Query(q.trim().into()))
            }
            _ => {
                cx.error(&at, format!("{at} takes a header or a query parameter: {{ header: x-api-key }} or {{ query: key }}"));
                ok = false;
            }
        }
    }
    let consumer_header = match &raw.consumer_header {
        None => None,
        Some(h) => match header_name(h, true) {
            Ok(n) => Some(n),
            Err(why) => {
                let at = join(path, "consumer_header");
                cx.error(&at, format!("{at}: {why}"));
                ok = false;
                None
            }
        },
    };
    let file_at = join(path, "file");
    let file = cx.required(
        &file_at,
        &raw.file,
        "write the YAML file that maps consumer names to keys",
    )?;
    let (resolved, bytes) = super::tls::read(cx, &file_at, file, "API key")?;
    let text = String::from_utf8_lossy(&bytes);
    let set = match ApiKeySet::parse(name.clone()?, resolved, &text, from, consumer_header) {
        Ok(set) => set,
        Err(problems) => {
            for p in problems {
                cx.error(&file_at, format!("{file_at} {file:?}: {p}"));
            }
            return None;
        }
    };
    ok.then_some(set)
}

/// A route's `auth:`.
pub fn route_auth(
    cx: &mut Ctx,
    path: &str,
    raw: Option<RawRouteAuth>,
    reg: &Registry,
) -> Option<Option<Arc<Policy>>> {
    let Some(raw) = raw else { return Some(None) };
    let mut ok = true;
    let mut jwt = Vec::new();
    for (i, n) in raw.jwt.unwrap_or_default().iter().enumerate() {
        let at = format!("{}[{i}]", join(path, "jwt"));
        match reg.providers.iter().find(|p| p.name == *n) {
            Some(p) => jwt.push(p.clone()),
            None => {
                if !reg.names.contains(n) {
                    let names: Vec<&str> = reg.providers.iter().map(|p| p.name.as_str()).collect();
                    cx.error(
                        &at,
                        format!(
                            "{at}: no jwt_providers entry is named {n:?} (defined: [{}])",
                            names.join(", ")
                        ),
                    );
                }
                ok = false;
            }
        }
    }
    let mut api_keys = Vec::new();
    for (i, n) in raw.api_key.unwrap_or_default().iter().enumerate() {
        let at = format!("{}[{i}]", join(path, "api_key"));
        match reg.key_sets.iter().find(|s| s.name == *n) {
            Some(s) => api_keys.push(s.clone()),
            None => {
                if !reg.names.contains(n) {
                    let names: Vec<&str> = reg.key_sets.iter().map(|s| s.name.as_str()).collect();
                    cx.error(
                        &at,
                        format!(
                            "{at}: no api_keys entry is named {n:?} (defined: [{}])",
                            names.join(", ")
                        ),
                    );
                }
                ok = false;
            }
        }
    }
    let require_at = join(path, "require");
    let require_all = match raw.require.as_deref().map(str::trim) {
        None | Some("any") => false,
        Some("all") => true,
        Some(other) => {
            cx.error(&require_at, one_of(&require_at, other, &["any", "all"]));
            ok = false;
            false
        }
    };
    let mode_at = join(path, "mode");
    let audit = match raw.mode.as_deref().map(str::trim) {
        None | Some("enforce") => false,
        Some("audit") => true,
        Some(other) => {
            cx.error(&mode_at, one_of(&mode_at, other, &["enforce", "audit"]));
            ok = false;
            false
        }
    };
    let mut allow = Vec::new();
    let allow_at = join(path, "allow");
    for (i, r) in raw.allow.unwrap_or_default().into_iter().enumerate() {
        let at = format!("{allow_at}[{i}]");
        match rule(cx, &at, r) {
            Some(r) => allow.push(r),
            None => ok = false,
        }
    }
    if ok && jwt.is_empty() && api_keys.is_empty() && allow.is_empty() {
        cx.error(
            path,
            format!(
                "{path} names no credential (jwt, api_key) and no allow rule; write at least one"
            ),
        );
        ok = false;
    }
    ok.then(|| {
        Some(Arc::new(Policy {
            jwt,
            api_keys,
            require_all,
            allow,
            audit,
        }))
    })
}

fn rule(cx: &mut Ctx, path: &str, raw: RawAllow) -> Option<Rule> {
    let mut ok = true;
    let mut r = Rule::default();
    for (i, s) in raw.sans.unwrap_or_default().iter().enumerate() {
        let at = format!("{}[{i}]", join(path, "sans"));
        match SanPattern::parse(s.trim()) {
            Ok(p) => r.sans.push(p),
            Err(why) => {
                cx.error(&at, format!("{at} {s:?}: {why}"));
                ok = false;
            }
        }
    }
    for (claim, value) in raw.claims.unwrap_or_default() {
        let values = match value {
            RawClaimValue::One(v) => vec![v.text()],
            RawClaimValue::Many(list) => list.iter().map(RawScalar::text).collect(),
        };
        if claim.is_empty() || values.is_empty() {
            let at = join(path, "claims");
            cx.error(
                &at,
                format!("{at}: a claim needs a name and at least one value"),
            );
            ok = false;
        }
        r.claims.push((claim, values));
    }
    r.api_keys = raw.api_keys.unwrap_or_default();
    for (i, m) in raw.grpc_methods.unwrap_or_default().iter().enumerate() {
        let at = format!("{}[{i}]", join(path, "grpc_methods"));
        match MethodPattern::parse(m) {
            Ok(p) => r.grpc_methods.push(p),
            Err(why) => {
                cx.error(&at, format!("{at} {m:?}: {why}"));
                ok = false;
            }
        }
    }
    for (i, ip) in raw.source_ips.unwrap_or_default().iter().enumerate() {
        let at = format!("{}[{i}]", join(path, "source_ips"));
        match Cidr::parse(ip) {
            Ok(c) => r.source_ips.push(c),
            Err(why) => {
                cx.error(
                    &at,
                    format!("{at} {ip:?}: {why}; write an address or a network like 10.0.0.0/8"),
                );
                ok = false;
            }
        }
    }
    if ok
        && r.sans.is_empty()
        && r.claims.is_empty()
        && r.api_keys.is_empty()
        && r.grpc_methods.is_empty()
        && r.source_ips.is_empty()
    {
        cx.error(path, format!("{path} is empty: it would allow everyone; write sans, claims, api_keys, grpc_methods or source_ips"));
        ok = false;
    }
    ok.then_some(r)
}

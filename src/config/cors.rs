//! `cors:` on a listener or a route: which browser origins may call, with
//! or without credentials, and which headers they may send and read. The
//! gRPC-Web headers are always allowed and the gRPC status headers always
//! exposed; any origin together with credentials is refused.

use std::sync::Arc;

use http::HeaderValue;

use super::context::Ctx;
use super::headers::header_name;
use super::locate::join;
use super::model::*;
use super::raw::RawCors;

pub fn cors(cx: &mut Ctx, path: &str, raw: Option<RawCors>) -> Option<Option<Arc<Cors>>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    let origins_at = join(path, "allow_origins");
    let mut ok = true;
    let mut allow_origins = Vec::new();
    match &raw.allow_origins {
        None => {
            cx.error(
                &origins_at,
                format!("{origins_at} is missing; list the origins browsers call from, like [\"https://app.example.com\"]"),
            );
            ok = false;
        }
        Some(list) => {
            for (i, text) in list.iter().enumerate() {
                let at = format!("{origins_at}[{i}]");
                match origin(text) {
                    Ok(m) => allow_origins.push(m),
                    Err(why) => {
                        cx.error(&at, format!("{at} {text:?}: {why}"));
                        ok = false;
                    }
                }
            }
        }
    }
    let allow_credentials = raw.allow_credentials.unwrap_or(false);
    if allow_credentials {
        if let Some(i) = allow_origins.iter().position(|o| *o == OriginMatch::Any) {
            let at = format!("{origins_at}[{i}]");
            cx.error(
                &at,
                format!(
                    "{at} \"*\" together with {} true would let every web site call with the user's cookies and credentials; list the origins that may, like \"https://app.example.com\" or \"https://*.example.com\"",
                    join(path, "allow_credentials")
                ),
            );
            ok = false;
        }
    }
    let mut allow_headers: Vec<String> = CORS_GRPC_WEB_HEADERS
        .iter()
        .map(|h| h.to_string())
        .collect();
    let mut expose: Vec<String> = CORS_EXPOSED_HEADERS.iter().map(|h| h.to_string()).collect();
    for (key, list, into) in [
        ("allow_headers", &raw.allow_headers, &mut allow_headers),
        ("expose_headers", &raw.expose_headers, &mut expose),
    ] {
        for (i, name) in list.iter().flatten().enumerate() {
            let at = format!("{}[{i}]", join(path, key));
            match header_name(name, false) {
                Ok(n) => {
                    let n = n.as_str().to_string();
                    if !into.contains(&n) {
                        into.push(n);
                    }
                }
                Err(why) => {
                    cx.error(&at, format!("{at}: {why}"));
                    ok = false;
                }
            }
        }
    }
    let max_age = cx.duration(
        &join(path, "max_age"),
        &raw.max_age,
        Some(DEFAULT_CORS_MAX_AGE),
        false,
    )?;
    if !ok {
        return None;
    }
    let max_age = max_age.unwrap_or(DEFAULT_CORS_MAX_AGE).as_secs();
    Some(Some(Arc::new(Cors {
        allow_origins,
        allow_credentials,
        allow_headers,
        expose_headers: HeaderValue::from_str(&expose.join(", ")).ok()?,
        max_age: HeaderValue::from(max_age),
    })))
}

/// One entry of `allow_origins`: `"*"`, `scheme://host[:port]`, or
/// `scheme://*.domain[:port]`.
fn origin(text: &str) -> Result<OriginMatch, String> {
    let text = text.trim();
    if text == "*" {
        return Ok(OriginMatch::Any);
    }
    let lower = text.to_ascii_lowercase();
    let Some((scheme, host)) = lower.split_once("://") else {
        return Err("an origin is a scheme and a host, like \"https://app.example.com\" (browsers send it so); or \"*\" for any".into());
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
    {
        return Err(format!(
            "{scheme:?} is not a URL scheme; write https:// or http://"
        ));
    }
    if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
        return Err("an origin has no path (browsers send scheme://host[:port] only): remove everything after the host".into());
    }
    if let Some(suffix) = host.strip_prefix('*') {
        if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains('*') {
            return Err(
                "a wildcard origin is written scheme://*.domain, like \"https://*.example.com\""
                    .into(),
            );
        }
        return Ok(OriginMatch::Suffix {
            scheme: format!("{scheme}://"),
            suffix: suffix.to_string(),
        });
    }
    if host.contains('*') {
        return Err("a wildcard may only begin the host, like \"https://*.example.com\"".into());
    }
    Ok(OriginMatch::Exact(lower))
}

impl Cors {
    /// Whether a browser on `origin` may call.
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|m| match m {
            OriginMatch::Any => true,
            OriginMatch::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginMatch::Suffix { scheme, suffix } => {
                origin.len() > scheme.len() + suffix.len()
                    && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
                    && origin
                        .get(origin.len() - suffix.len()..)
                        .is_some_and(|t| t.eq_ignore_ascii_case(suffix))
            }
        })
    }

    /// Any origin may call (answered with `*`, never with credentials).
    pub fn any_origin(&self) -> bool {
        self.allow_origins.contains(&OriginMatch::Any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_and_match() {
        let c = Cors {
            allow_origins: vec![
                origin("https://App.example.com").unwrap(),
                origin("https://*.example.org").unwrap(),
                origin("http://localhost:8080").unwrap(),
            ],
            allow_credentials: false,
            allow_headers: vec![],
            expose_headers: HeaderValue::from_static(""),
            max_age: HeaderValue::from_static("1"),
        };
        assert!(c.allows("https://app.example.com"));
        assert!(c.allows("https://a.b.example.org"));
        assert!(!c.allows("https://example.org"));
        assert!(!c.allows("http://a.example.org"));
        assert!(!c.allows("https://evilexample.org"));
        assert!(c.allows("http://localhost:8080"));
        assert!(!c.allows("http://localhost:8081"));
        assert!(!c.any_origin());
        assert!(origin("app.example.com").is_err());
        assert!(origin("https://a.com/path").is_err());
        assert!(origin("https://a.*.com").is_err());
        assert_eq!(origin("*"), Ok(OriginMatch::Any));
    }
}

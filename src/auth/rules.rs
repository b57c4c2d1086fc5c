//! `allow:` rules. A rule matches when every field it has matches (a
//! field lists alternatives: any one will do); a route allows a caller
//! when any of its rules matches.

use std::net::IpAddr;

use serde_json::Value;

use crate::config::san::SanPattern;

/// One `allow:` entry.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// The mTLS client certificate's SANs (`*` patterns as in
    /// `client_auth.allowed_sans`).
    pub sans: Vec<SanPattern>,
    /// Claim path → accepted values (any one).
    pub claims: Vec<(String, Vec<String>)>,
    /// API-key consumer names.
    pub api_keys: Vec<String>,
    pub grpc_methods: Vec<MethodPattern>,
    pub source_ips: Vec<Cidr>,
}

/// `pkg.Service/Method`, `pkg.Service/*` or `pkg.Service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodPattern {
    pub service: String,
    /// None: every method of the service.
    pub method: Option<String>,
}

impl MethodPattern {
    pub fn parse(text: &str) -> Result<MethodPattern, String> {
        let text = text.trim().trim_start_matches('/');
        let (service, method) = match text.split_once('/') {
            Some((s, "*")) => (s, None),
            Some((s, m)) => (s, Some(m)),
            None => (text, None),
        };
        let ident = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
        };
        if !ident(service) || method.is_some_and(|m| !ident(m) || m.contains('.')) {
            return Err(
                "write a gRPC method as package.Service/Method, package.Service/* or package.Service"
                    .into(),
            );
        }
        Ok(MethodPattern {
            service: service.to_string(),
            method: method.map(str::to_string),
        })
    }

    fn matches(&self, service: &str, method: &str) -> bool {
        self.service == service && self.method.as_deref().is_none_or(|m| m == method)
    }
}

impl std::fmt::Display for MethodPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.method {
            Some(m) => write!(f, "{}/{m}", self.service),
            None => write!(f, "{}/*", self.service),
        }
    }
}

/// An address or a network (`10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub bits: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (ip, bits) = match text.trim().split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => match b.parse::<u8>() {
                Ok(b) if b <= max => b,
                _ => return Err(format!("the prefix length must be 0 to {max}")),
            },
        };
        Ok(Cidr { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (ip, self.addr) {
            (IpAddr::V6(v6), IpAddr::V4(_)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (ip, _) => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// What a rule is matched against: the caller as authenticated.
pub struct Caller<'a> {
    /// `DNS:…`, `URI:…` as the TLS facts list them.
    pub sans: &'a [String],
    pub claims: Option<&'a serde_json::Map<String, Value>>,
    pub consumer: Option<&'a str>,
    /// gRPC service and method.
    pub grpc: Option<(&'a str, &'a str)>,
    pub ip: IpAddr,
}

impl Rule {
    pub fn matches(&self, c: &Caller<'_>) -> bool {
        (self.sans.is_empty()
            || c.sans.iter().any(|san| {
                let (kind, value) = san.split_once(':').unwrap_or(("", san));
                self.sans.iter().any(|p| p.matches(kind, value))
            }))
            && (self.api_keys.is_empty()
                || c.consumer
                    .is_some_and(|k| self.api_keys.iter().any(|a| a == k)))
            && (self.grpc_methods.is_empty()
                || c.grpc
                    .is_some_and(|(s, m)| self.grpc_methods.iter().any(|p| p.matches(s, m))))
            && (self.source_ips.is_empty() || self.source_ips.iter().any(|n| n.contains(c.ip)))
            && self
                .claims
                .iter()
                .all(|(path, want)| c.claims.is_some_and(|cl| claim_matches(cl, path, want)))
    }
}

/// A claim has one of `want`: a string equal to one, an array with one as
/// an element, or (for `scope` and `scp`) a space-separated list with one
/// as a word. Numbers and booleans compare as written.
pub fn claim_matches(claims: &serde_json::Map<String, Value>, path: &str, want: &[String]) -> bool {
    let Some(v) = super::jwt::claim(claims, path) else {
        return false;
    };
    let words = path == "scope" || path == "scp";
    let one = |v: &Value| -> bool {
        match v {
            Value::String(s) if words => s.split(' ').any(|w| want.iter().any(|x| x == w)),
            Value::String(s) => want.iter().any(|x| x == s),
            Value::Number(n) => want.iter().any(|x| *x == n.to_string()),
            Value::Bool(b) => want.iter().any(|x| *x == b.to_string()),
            _ => false,
        }
    };
    match v {
        Value::Array(list) => list.iter().any(one),
        v => one(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let n = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("x").is_err());
    }

    #[test]
    fn claims_and_methods() {
        let claims: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"scope":"orders.read orders.write","groups":["a","b"],"org":{"id":7},"admin":true}"#,
        )
        .unwrap();
        let s = |v: &str| vec![v.to_string()];
        assert!(claim_matches(&claims, "scope", &s("orders.write")));
        assert!(!claim_matches(&claims, "scope", &s("orders")));
        assert!(claim_matches(&claims, "groups", &s("b")));
        assert!(claim_matches(&claims, "org.id", &s("7")));
        assert!(claim_matches(&claims, "admin", &s("true")));
        assert!(!claim_matches(&claims, "missing", &s("x")));
        let m = MethodPattern::parse("shop.v1.Orders/Get").unwrap();
        assert!(m.matches("shop.v1.Orders", "Get"));
        assert!(!m.matches("shop.v1.Orders", "Put"));
        assert!(MethodPattern::parse("shop.v1.Orders/*")
            .unwrap()
            .matches("shop.v1.Orders", "Put"));
        assert!(MethodPattern::parse("shop v1").is_err());
    }
}

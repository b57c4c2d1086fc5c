//! `client_auth.allowed_sans` entries: exact values and the two
//! supported patterns.

/// One `allowed_sans` entry, parsed. A pattern matches SANs of its own
/// kind only; exact entries match a SAN of any kind with the same value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SanPattern {
    /// No `*`: the SAN's value, exactly (DNS names case-insensitively).
    Exact(String),
    /// `*.example.com`: a DNS SAN with exactly one more label in front
    /// (`a.example.com`, not `example.com` nor `a.b.example.com`), as a
    /// wildcard certificate name matches. Holds `.example.com`, lower-cased.
    DnsWildcard(String),
    /// `spiffe://example.org/*`, `spiffe://example.org/ns/prod/*`: a URI
    /// SAN that starts with everything before the `*` and has at least one
    /// more character (the trust domain's every ID; every ID under a path).
    /// Holds the prefix, ending in `/`.
    UriPrefix(String),
}

impl std::fmt::Display for SanPattern {
    /// As the config file wrote it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SanPattern::Exact(s) => f.write_str(s),
            SanPattern::DnsWildcard(suffix) => write!(f, "*{suffix}"),
            SanPattern::UriPrefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

impl SanPattern {
    /// Parses an entry; `Err` says why a `*` is not supported where it is.
    pub fn parse(s: &str) -> Result<SanPattern, String> {
        let stars = s.matches('*').count();
        if stars == 0 {
            return Ok(SanPattern::Exact(s.to_string()));
        }
        const SUPPORTED: &str = "supported patterns are *.example.com (one DNS label) and a URI ending in /* such as spiffe://example.org/* (the whole trust domain) or spiffe://example.org/ns/prod/* (every ID under that path)";
        if s == "*" {
            return Err(format!("a lone * is not a pattern; to accept every certificate the CA signed, leave allowed_sans out ({SUPPORTED})"));
        }
        if stars > 1 {
            return Err(format!("only one * is supported; {SUPPORTED}"));
        }
        if let Some((scheme, rest)) = s.split_once("://") {
            let Some(prefix) = s.strip_suffix("/*") else {
                return Err(format!("in a URI, * is supported only as the whole last path segment (…/*); {SUPPORTED}"));
            };
            let authority = rest.split('/').next().unwrap_or("");
            if scheme.is_empty() || authority.is_empty() || authority.contains('*') {
                return Err(format!(
                    "the URI needs a scheme and an authority (trust domain) without *; {SUPPORTED}"
                ));
            }
            return Ok(SanPattern::UriPrefix(format!("{prefix}/")));
        }
        match s.strip_prefix("*.") {
            Some(suffix) if dns_suffix_ok(suffix) => Ok(SanPattern::DnsWildcard(format!(
                ".{}",
                suffix.to_ascii_lowercase()
            ))),
            _ => Err(format!("in a DNS name, * is supported only as the whole first label (*.example.com); {SUPPORTED}")),
        }
    }

    /// Whether a SAN (`kind` is "DNS", "URI" or "IP") matches.
    pub fn matches(&self, kind: &str, value: &str) -> bool {
        match self {
            SanPattern::Exact(want) if kind == "DNS" => want.eq_ignore_ascii_case(value),
            SanPattern::Exact(want) => want == value,
            SanPattern::DnsWildcard(suffix) => {
                kind == "DNS"
                    && value.len() > suffix.len()
                    && value.is_char_boundary(value.len() - suffix.len())
                    && value[value.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && !value[..value.len() - suffix.len()].contains('.')
            }
            SanPattern::UriPrefix(prefix) => {
                kind == "URI" && value.len() > prefix.len() && value.starts_with(prefix.as_str())
            }
        }
    }
}

/// The part after `*.`: labels that are not empty.
fn dns_suffix_ok(suffix: &str) -> bool {
    !suffix.is_empty() && suffix.split('.').all(|label| !label.is_empty())
}

//! Names and patterns several sections accept: host names, host matches,
//! regular expressions.

use regex::Regex;

use super::context::Ctx;
use super::model::HostMatch;

pub fn regex(cx: &mut Ctx, at: &str, text: &str) -> Option<Regex> {
    match Regex::new(text) {
        Ok(re) => Some(re),
        Err(e) => {
            // The regex crate's message is a multi-line picture; keep its last line.
            let why = e.to_string();
            let why = why
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_string();
            cx.error(
                at,
                format!("{at} {text:?} is not a valid regular expression: {why}"),
            );
            None
        }
    }
}

/// `name` or `*.suffix`, lower-cased, without a `:port`.
pub fn host_pattern(text: &str) -> Result<HostMatch, String> {
    let lower = text.trim().to_ascii_lowercase();
    let host = strip_port(&lower)?;
    if host == "*" {
        return Err("to match any host, leave host out".into());
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        return if valid_hostname(suffix) {
            Ok(HostMatch::Suffix(format!(".{suffix}")))
        } else {
            Err(format!(
                "{suffix:?} after \"*.\" is not a valid domain name"
            ))
        };
    }
    if host.contains('*') {
        return Err("a wildcard must be the whole first label, like *.example.com".into());
    }
    if host.starts_with('[') || valid_hostname(host) {
        Ok(HostMatch::Exact(host.trim_end_matches('.').to_string()))
    } else {
        Err("not a valid host name: write a name like api.example.com or *.example.com".into())
    }
}

fn strip_port(host: &str) -> Result<&str, String> {
    if host.starts_with('[') {
        let end = host
            .find(']')
            .ok_or("an IPv6 address needs its closing bracket")?;
        return Ok(&host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => Ok(name),
        Some(_) => Err("a host is a name, optionally with a numeric :port".into()),
        None => Ok(host),
    }
}

/// Letters, digits, `-`, `_` in dot-separated labels (IPv4 literals pass too).
pub fn valid_hostname(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

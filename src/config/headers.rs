//! Headers in routes: matchers (`match.headers`) and edits
//! (`request_headers` / `response_headers`), with the names a route may not
//! touch.

use http::{HeaderName, HeaderValue};

use super::context::Ctx;
use super::locate::join;
use super::model::*;
use super::patterns::regex;
use super::raw::{RawHeaderEdits, RawHeaderMatch};

/// Connection-scoped headers: they describe one hop, torii manages them
/// itself, and HTTP/2 forbids them outright.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "te",
    "proxy-connection",
];

pub fn header_match(cx: &mut Ctx, path: &str, raw: RawHeaderMatch) -> Option<HeaderMatch> {
    let name_at = join(path, "name");
    let name = cx
        .required(&name_at, &raw.name, "write the header name, like x-canary")
        .and_then(|n| {
            header_name(n, false)
                .map_err(|why| cx.error(&name_at, format!("{name_at}: {why}")))
                .ok()
        });
    let invert = raw.invert.unwrap_or(false);
    let value = match (raw.value, raw.regex, raw.present) {
        (Some(_), Some(_), _) => {
            cx.error(path, format!("{path} has value and regex; write only one"));
            None
        }
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            cx.error(path, format!("{path}: present cannot be combined with value or regex; value and regex already require the header"));
            None
        }
        (Some(v), None, None) => Some((HeaderValueMatch::Exact(v), invert)),
        (None, Some(re), None) => {
            regex(cx, &join(path, "regex"), &re).map(|r| (HeaderValueMatch::Regex(r), invert))
        }
        // `present: false` is "absent": presence, inverted.
        (None, None, present) => {
            Some((HeaderValueMatch::Present, invert ^ !present.unwrap_or(true)))
        }
    };
    let (value, invert) = value?;
    Some(HeaderMatch {
        name: name?.as_str().to_string(),
        value,
        invert,
    })
}

pub fn edits(cx: &mut Ctx, path: &str, raw: Option<RawHeaderEdits>) -> Option<HeaderEdits> {
    let raw = raw.unwrap_or_default();
    let mut ok = true;
    let mut out = HeaderEdits::default();
    for (name, value) in raw.add.unwrap_or_default().0 {
        let at = format!("{path}.add.{name}");
        let header = header_name(&name, true)
            .map_err(|why| cx.key_error(&at, format!("{at}: {why}")))
            .ok();
        let value = match HeaderValue::from_str(&value) {
            Ok(v) => Some(v),
            Err(_) => {
                cx.error(&at, format!("{at}: value {value:?} is not a valid header value (no control characters or line breaks)"));
                None
            }
        };
        match header.zip(value) {
            Some(pair) => out.add.push(pair),
            None => ok = false,
        }
    }
    for (i, name) in raw.remove.unwrap_or_default().iter().enumerate() {
        match header_name(name, true) {
            Ok(h) => out.remove.push(h),
            Err(why) => {
                let at = format!("{path}.remove[{i}]");
                cx.error(&at, format!("{at}: {why}"));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A header name a route may match (`edit: false`) or change (`edit: true`);
/// the error says why not.
pub(super) fn header_name(name: &str, edit: bool) -> Result<HeaderName, String> {
    let name = name.trim();
    if name.starts_with(':') {
        return Err(format!(
            "{name:?} is an HTTP/2 pseudo-header, which routes cannot {}; use match.host for \
             :authority and match.prefix/path for :path",
            if edit { "change" } else { "match on" }
        ));
    }
    if edit && HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{name:?} is a hop-by-hop header: it describes a single connection, torii manages it \
             itself, and HTTP/2 forbids it; it cannot be added or removed by a route"
        ));
    }
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        format!("{name:?} is not a valid header name; use letters, digits and -, like x-env")
    })
}

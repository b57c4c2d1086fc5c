//! YAML text → [`RawConfig`]. Unknown keys do not stop the parse: they are
//! collected (with `serde_ignored`) and each becomes a problem. A syntax or
//! type error does stop it, and becomes one problem at its place.

use serde_saphyr::Error;

use super::locate::{self, Index, Pos};
use super::problem::{did_you_mean, list, Findings, Severity};
use super::raw::{self, RawConfig};

/// Parses `text`, reporting into `findings`. `None` when the document could
/// not be read into the raw structs (the reason is reported).
pub fn parse(text: &str, findings: &mut Findings) -> Option<RawConfig> {
    let mut unknown = Vec::new();
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_ignored::deserialize(de, |path| unknown.push(render(&path)))
    });
    for path in unknown {
        unknown_key(&path, findings);
    }
    match result {
        Ok(raw) => Some(raw),
        Err(err) => {
            let (pos, message) = describe(&err, findings.index());
            findings.at(pos, Severity::Error, message);
            None
        }
    }
}

/// `serde_ignored`'s path in our notation: `listeners[0].tls.alpnn`.
fn render(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render(parent)),
        Path::Map { parent, key } => locate::join(&render(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => render(parent),
    }
}

fn unknown_key(path: &str, findings: &mut Findings) {
    let parent = locate::parent(path).unwrap_or("");
    let key = path[parent.len()..].trim_start_matches('.');
    let place = if parent.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in {parent}")
    };
    let mut message = format!("unknown key {key:?} {place}");
    if let Some(known) = raw::known_keys(&locate::shape(parent)) {
        message += &format!("; expected one of: {}", list(known));
        if let Some(near) = did_you_mean(key, known.iter().copied()) {
            message += &format!("; did you mean {near:?}?");
        }
    }
    findings.key_error(path, message);
}

/// Where a parse error is, and what it means in plain words.
fn describe(err: &Error, index: &Index) -> (Pos, String) {
    let err = err.without_snippet();
    let pos = err.location().map_or(Pos::START, |l| Pos {
        line: l.line() as usize,
        column: l.column() as usize,
    });
    let what = || match index.path_at(pos) {
        Some("") => "the file".to_string(),
        None => "this".to_string(),
        Some(path) => path.to_string(),
    };
    let message = match err {
        Error::Unexpected { expected, .. } => format!("{} {}", what(), expected_words(expected)),
        Error::InvalidScalar { ty, .. } => format!("{} {}", what(), scalar_words(ty)),
        Error::NullIntoString { .. } => format!("{} needs a value", what()),
        Error::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => format!("{}: expected {expected}, found {unexpected}", what()),
        Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("key {key:?} is written twice in the same mapping; keep one")
        }
        Error::DuplicateMappingKey { key: None, .. } => {
            "a key is written twice in the same mapping; keep one".to_string()
        }
        Error::MultipleDocuments { .. } => "the file holds more than one YAML document (a second \
             --- line); torii reads exactly one: remove the extra one"
            .to_string(),
        other => format!("YAML syntax error: {}", strip_location(&other.to_string())),
    };
    (pos, message)
}

fn expected_words(expected: &str) -> String {
    match expected {
        "sequence start" => "must be a list: write [a, b] or one \"- item\" per line".to_string(),
        "mapping start" => "must be a mapping: write key: value lines".to_string(),
        "string scalar" => "must be a single value, not a list or a mapping".to_string(),
        other => format!("is not what was expected here ({other})"),
    }
}

fn scalar_words(ty: &str) -> String {
    match ty {
        "bool" => "must be true or false".to_string(),
        "f32" | "f64" => "must be a number".to_string(),
        t if t.starts_with('i') || t.starts_with('u') => "must be a whole number".to_string(),
        other => format!("is not a valid {other}"),
    }
}

/// The parser's message without its trailing "at line L, column C" (we
/// print the position ourselves, in front).
fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let mut findings = Findings::new(text);
        parse(text, &mut findings);
        findings
            .into_problems("f")
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn unknown_keys_are_all_reported_with_suggestions() {
        let text = "listener: []\nlisteners:\n  - name: a\n    tls:\n      alpnn: [h2]\n";
        assert_eq!(
            problems(text),
            [
                "f:1:1: error: unknown key \"listener\" at the top level; expected one of: \
                 admin, drain_timeout, access_log, listeners, clusters, jwt_providers, api_keys, tracing, xds; \
                 did you mean \"listeners\"?",
                "f:5:7: error: unknown key \"alpnn\" in listeners[0].tls; expected one of: \
                 certificates, alpn, client_auth; did you mean \"alpn\"?",
            ]
        );
    }

    #[test]
    fn type_errors_name_the_path() {
        let p = problems("listeners:\n  - tls: {alpn: h2}\n");
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("f:2:17: error: listeners[0].tls.alpn must be a list"),
            "{p:?}"
        );
        let p = problems("clusters:\n  - max_connections_per_endpoint: many\n");
        assert!(p[0].ends_with("clusters[0].max_connections_per_endpoint must be a whole number"));
        let p = problems("- a\n");
        assert_eq!(
            p,
            ["f:1:1: error: the file must be a mapping: write key: value lines"]
        );
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let p = problems("admin:\n  address: x\nlisteners: [\n");
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("f:3:12: error: YAML syntax error: "),
            "{p:?}"
        );
        assert!(!p[0].contains("at line"), "{p:?}");
        let p = problems("listeners:\n  - name: a\n    name: b\n");
        assert_eq!(
            p,
            ["f:3:5: error: key \"name\" is written twice in the same mapping; keep one"]
        );
    }
}

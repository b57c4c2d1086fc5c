//! `google.api.http` path templates: parsed once at load, matched against
//! each request's path. The grammar (google/api/http.proto):
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `{x}` is `{x=*}`; `**` matches zero or more segments and may only be the
//! last segment. A variable of one segment is fully percent-decoded; one of
//! several keeps `%2F` encoded (the mapping's "reserved expansion").

use std::fmt;

use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    Any,
    /// `**`: zero or more segments, last only.
    Rest,
}

/// A variable: the field path it sets and the segments it covers
/// (`start..end`; `end` is the template's length when it ends in `**`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub field_path: Vec<String>,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
    pub variables: Vec<Variable>,
    pub verb: Option<String>,
    /// As written, for messages and the admin table.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(text: &str, what: impl fmt::Display) -> Result<T, ParseError> {
    Err(ParseError(format!("path template {text:?}: {what}")))
}

fn is_literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~%!$&'()+,;=@".contains(c)
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, ParseError> {
        let Some(body) = text.strip_prefix('/') else {
            return err(text, "must start with /");
        };
        // The verb: a ':' after the last '/' that is outside braces.
        let (body, verb) = split_verb(body);
        if let Some(v) = verb {
            if v.is_empty() || !v.chars().all(is_literal_char) {
                return err(text, format!("the verb {v:?} is not a literal"));
            }
        }
        let mut t = Template {
            segments: Vec::new(),
            variables: Vec::new(),
            verb: verb.map(str::to_string),
            text: text.to_string(),
        };
        let mut rest = body;
        loop {
            if let Some(inner) = rest.strip_prefix('{') {
                let Some(close) = inner.find('}') else {
                    return err(text, "a '{' is never closed");
                };
                let var = &inner[..close];
                parse_variable(text, var, &mut t)?;
                rest = &inner[close + 1..];
            } else {
                let end = rest.find('/').unwrap_or(rest.len());
                let seg = &rest[..end];
                t.segments.push(parse_segment(text, seg)?);
                rest = &rest[end..];
            }
            match rest.strip_prefix('/') {
                Some(r) => rest = r,
                None if rest.is_empty() => break,
                None => return err(text, format!("unexpected {rest:?}")),
            }
        }
        if let Some(i) = t.segments.iter().position(|s| *s == Segment::Rest) {
            if i + 1 != t.segments.len() {
                return err(text, "** may only be the last segment");
            }
        }
        for (i, a) in t.variables.iter().enumerate() {
            if t.variables[..i]
                .iter()
                .any(|b| b.field_path == a.field_path)
            {
                return err(
                    text,
                    format!("the field {} is bound twice", a.field_path.join(".")),
                );
            }
        }
        Ok(t)
    }

    /// The variables' values if `path` (without the query) matches.
    pub fn matches(&self, path: &str) -> Option<Vec<(&Variable, String)>> {
        let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        self.matches_split(&parts)
    }

    /// [`Template::matches`] on a path already split at its slashes (the
    /// leading one removed): one split for every template tried.
    pub fn matches_split(&self, parts: &[&str]) -> Option<Vec<(&Variable, String)>> {
        let (last, head) = parts.split_last()?;
        let last = match &self.verb {
            Some(v) => last.strip_suffix(v.as_str())?.strip_suffix(':')?,
            None => last,
        };
        let part = |i: usize| if i == head.len() { last } else { head[i] };
        let rest = self.segments.last() == Some(&Segment::Rest);
        let fixed = self.segments.len() - usize::from(rest);
        if parts.len() < fixed || (!rest && parts.len() != fixed) {
            return None;
        }
        for (i, seg) in self.segments[..fixed].iter().enumerate() {
            match seg {
                Segment::Literal(l) if l != part(i) => return None,
                // An empty segment (`//`) is not a value.
                Segment::Any if part(i).is_empty() => return None,
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(self.variables.len());
        for v in &self.variables {
            let to_rest = rest && v.end == self.segments.len();
            let end = if to_rest { parts.len() } else { v.end };
            let covered: Vec<&str> = (v.start.min(parts.len())..end.min(parts.len()))
                .map(part)
                .collect();
            let value = if covered.len() == 1 && !to_rest {
                percent_decode_str(covered[0])
                    .decode_utf8()
                    .ok()?
                    .into_owned()
            } else {
                covered
                    .iter()
                    .map(|p| decode_keeping_slash(p))
                    .collect::<Option<Vec<_>>>()?
                    .join("/")
            };
            out.push((v, value));
        }
        Some(out)
    }

    /// Whether some path matches both templates.
    pub fn overlaps(&self, other: &Template) -> bool {
        if self.verb != other.verb {
            return false;
        }
        let a_rest = self.segments.last() == Some(&Segment::Rest);
        let b_rest = other.segments.last() == Some(&Segment::Rest);
        let a = &self.segments[..self.segments.len() - usize::from(a_rest)];
        let b = &other.segments[..other.segments.len() - usize::from(b_rest)];
        let common = a.len().min(b.len());
        let compatible = a[..common]
            .iter()
            .zip(&b[..common])
            .all(|(x, y)| match (x, y) {
                (Segment::Literal(l), Segment::Literal(m)) => l == m,
                _ => true,
            });
        compatible
            && match a.len().cmp(&b.len()) {
                std::cmp::Ordering::Equal => true,
                std::cmp::Ordering::Less => a_rest,
                std::cmp::Ordering::Greater => b_rest,
            }
    }
}

fn split_verb(body: &str) -> (&str, Option<&str>) {
    let last_slash = body.rfind('/').map_or(0, |i| i + 1);
    let last_close = body.rfind('}').map_or(0, |i| i + 1);
    let from = last_slash.max(last_close);
    match body[from..].find(':') {
        Some(i) => (&body[..from + i], Some(&body[from + i + 1..])),
        None => (body, None),
    }
}

fn parse_segment(text: &str, seg: &str) -> Result<Segment, ParseError> {
    match seg {
        "*" => Ok(Segment::Any),
        "**" => Ok(Segment::Rest),
        "" => err(text, "has an empty segment"),
        s if s.chars().all(is_literal_char) => Ok(Segment::Literal(s.to_string())),
        s => err(
            text,
            format!("{s:?} is not a literal, *, ** or {{variable}}"),
        ),
    }
}

fn parse_variable(text: &str, var: &str, t: &mut Template) -> Result<(), ParseError> {
    let (path, segs) = match var.split_once('=') {
        Some((p, s)) => (p, Some(s)),
        None => (var, None),
    };
    let field_path: Vec<String> = path.split('.').map(str::to_string).collect();
    let ident = |s: &String| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !field_path.iter().all(ident) {
        return err(text, format!("{path:?} is not a field path"));
    }
    let start = t.segments.len();
    match segs {
        None => t.segments.push(Segment::Any),
        Some("") => return err(text, format!("{{{var}}} has nothing after =")),
        Some(s) => {
            for seg in s.split('/') {
                if seg.starts_with('{') {
                    return err(text, "variables cannot nest");
                }
                t.segments.push(parse_segment(text, seg)?);
            }
        }
    }
    t.variables.push(Variable {
        field_path,
        start,
        end: t.segments.len(),
    });
    Ok(())
}

/// Percent-decodes one segment of a multi-segment variable, keeping `%2F`.
fn decode_keeping_slash(p: &str) -> Option<String> {
    let mut out = String::with_capacity(p.len());
    for (i, piece) in p.split("%2F").enumerate() {
        for (j, sub) in piece.split("%2f").enumerate() {
            if i > 0 && j == 0 {
                out.push_str("%2F");
            } else if j > 0 {
                out.push_str("%2f");
            }
            out.push_str(&percent_decode_str(sub).decode_utf8().ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(t: &str, path: &str) -> Option<Vec<(String, String)>> {
        let t = Template::parse(t).unwrap();
        t.matches(path).map(|v| {
            v.into_iter()
                .map(|(v, s)| (v.field_path.join("."), s))
                .collect()
        })
    }

    #[test]
    fn nested_variable() {
        assert_eq!(
            vars("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/a%20b"),
            Some(vec![("name".into(), "shelves/1/books/a b".into())])
        );
        assert_eq!(
            vars("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books"),
            None
        );
    }

    #[test]
    fn verb_and_rest() {
        assert_eq!(
            vars("/v1/{a.b}:run", "/v1/x:run"),
            Some(vec![("a.b".into(), "x".into())])
        );
        assert_eq!(vars("/v1/{a.b}:run", "/v1/x"), None);
        assert_eq!(
            vars("/files/{path=**}", "/files/a/b%2Fc/d"),
            Some(vec![("path".into(), "a/b%2Fc/d".into())])
        );
        assert_eq!(
            vars("/files/{path=**}", "/files"),
            Some(vec![("path".into(), "".into())]),
            "** matches zero segments"
        );
        assert!(Template::parse("/a/**/b").is_err());
        assert!(Template::parse("/a/{x=**}:get").is_ok());
    }

    #[test]
    fn overlaps() {
        let t = |s| Template::parse(s).unwrap();
        assert!(t("/v1/{a}").overlaps(&t("/v1/x")));
        assert!(!t("/v1/{a}").overlaps(&t("/v1/{a}/b")));
        assert!(t("/v1/{a=**}").overlaps(&t("/v1/x/y")));
        assert!(!t("/v1/{a}:x").overlaps(&t("/v1/{a}")));
    }

    #[test]
    fn bad_templates() {
        for bad in [
            "v1",
            "/v1/{a",
            "/v1//x",
            "/v1/{1a}",
            "/v1/{a}/{a}",
            "/v1/{a=}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}

//! Problems found in a configuration file, and the collector that every
//! loading stage reports into, so one run reports all of them.

use std::fmt;

use super::locate::{Index, Pos, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The file cannot be used.
    Error,
    /// The file works, but probably not as meant.
    Warning,
}

/// One thing wrong with a configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    pub severity: Severity,
    pub message: String,
    /// A pitfall code shared with `torii lint` (`grpc-upstream-http1`…),
    /// for warnings that have one.
    pub code: Option<&'static str>,
    /// The change to make, for warnings that have a code.
    pub help: Option<String>,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.severity
        )?;
        if let Some(code) = self.code {
            write!(f, "[{code}]")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Problem {
    /// The problem and, when it has one, the change to make, on one line
    /// (for logs).
    pub fn with_help(&self) -> String {
        match &self.help {
            Some(help) => format!("{self} (help: {help})"),
            None => self.to_string(),
        }
    }
}

/// One problem while the stages run, before it is given its file.
struct Found {
    pos: Pos,
    severity: Severity,
    message: String,
    code: Option<&'static str>,
    help: Option<String>,
}

/// Collects problems by path while the stages run.
pub struct Findings<'a> {
    /// The configuration's text, and where each of its nodes is: indexed
    /// on the first problem only (a third of the load's time for a large
    /// configuration without problems, such as 10,000 routes).
    text: &'a str,
    index: std::cell::OnceCell<Index>,
    found: Vec<Found>,
}

impl<'a> Findings<'a> {
    pub fn new(text: &'a str) -> Self {
        Findings {
            text,
            index: std::cell::OnceCell::new(),
            found: Vec::new(),
        }
    }

    pub fn index(&self) -> &Index {
        self.index.get_or_init(|| Index::build(self.text))
    }

    /// A problem with the value at `path` (or, if absent, its closest parent).
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.index().find(path, Target::Value);
        self.at(pos, Severity::Error, message.into());
    }

    /// A problem with the key at `path` (an unknown or misplaced key).
    pub fn key_error(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.index().find(path, Target::Key);
        self.at(pos, Severity::Error, message.into());
    }

    pub fn warning(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.index().find(path, Target::Value);
        self.at(pos, Severity::Warning, message.into());
    }

    pub fn at(&mut self, pos: Pos, severity: Severity, message: String) {
        self.found.push(Found {
            pos,
            severity,
            message,
            code: None,
            help: None,
        });
    }

    /// A warning with a pitfall code and the change to make, at the key
    /// (`Target::Key`) or the value at `path`.
    pub fn pitfall(
        &mut self,
        path: &str,
        target: Target,
        code: &'static str,
        message: String,
        help: String,
    ) {
        let pos = self.index().find(path, target);
        self.found.push(Found {
            pos,
            severity: Severity::Warning,
            message,
            code: Some(code),
            help: Some(help),
        });
    }

    pub fn has_errors(&self) -> bool {
        self.found.iter().any(|f| f.severity == Severity::Error)
    }

    /// The problems, sorted by place in the file (stable: same place keeps
    /// the order found).
    pub fn into_problems(self, file: &str) -> Vec<Problem> {
        let mut found = self.found;
        found.sort_by_key(|f| f.pos);
        found
            .into_iter()
            .map(|f| Problem {
                file: file.to_string(),
                line: f.pos.line,
                column: f.pos.column,
                severity: f.severity,
                message: f.message,
                code: f.code,
                help: f.help,
            })
            .collect()
    }
}

/// The candidate closest to `word` if it is a likely typo (edit distance ≤ 2).
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(distance, c)| *distance <= 2 && *distance < c.len().max(word.len()))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// `a, b, c` for a message.
pub fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    items
        .into_iter()
        .map(|s| s.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let keys = ["certificates", "alpn", "client_auth"];
        assert_eq!(did_you_mean("alpnn", keys), Some("alpn"));
        assert_eq!(did_you_mean("certificate", keys), Some("certificates"));
        assert_eq!(did_you_mean("ciphers", keys), None);
        assert_eq!(did_you_mean("ab", ["cd"]), None);
    }

    #[test]
    fn display() {
        let p = Problem {
            file: "torii.yaml".into(),
            line: 3,
            column: 7,
            severity: Severity::Warning,
            message: "hm".into(),
            code: None,
            help: None,
        };
        assert_eq!(p.to_string(), "torii.yaml:3:7: warning: hm");
        let coded = Problem {
            code: Some("tls-no-alpn"),
            ..p
        };
        assert_eq!(
            coded.to_string(),
            "torii.yaml:3:7: warning[tls-no-alpn]: hm"
        );
    }
}

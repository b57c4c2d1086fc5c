//! What every check needs: where to report problems, where relative files
//! are, and the shared ways of reading a field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::duration;
use super::problem::Findings;

/// What every check needs: where to report, and where relative files are.
pub struct Ctx<'f, 'i> {
    pub findings: &'f mut Findings<'i>,
    pub base: &'f Path,
    /// Every file read so far (certificates, keys, CAs): watched for changes.
    pub files: Vec<PathBuf>,
}

impl Ctx<'_, '_> {
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.findings.error(path, message);
    }

    pub fn key_error(&mut self, path: &str, message: impl Into<String>) {
        self.findings.key_error(path, message);
    }

    pub fn warning(&mut self, path: &str, message: impl Into<String>) {
        self.findings.warning(path, message);
    }

    /// A file named in the config, resolved against the config's directory.
    pub fn file(&self, written: &str) -> PathBuf {
        self.base.join(written)
    }

    /// The value of a required field, or a problem saying it is missing.
    pub fn required<'r>(
        &mut self,
        path: &str,
        value: &'r Option<String>,
        hint: &str,
    ) -> Option<&'r str> {
        match value.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => Some(v),
            Some(_) => {
                self.error(path, format!("{path} is empty; {hint}"));
                None
            }
            None => {
                self.error(path, format!("{path} is missing; {hint}"));
                None
            }
        }
    }

    /// A duration field: its default when absent, a problem when malformed
    /// (or zero where zero makes no sense).
    pub fn duration(
        &mut self,
        path: &str,
        value: &Option<String>,
        default: Option<Duration>,
        nonzero: bool,
    ) -> Option<Option<Duration>> {
        let Some(text) = value else {
            return Some(default);
        };
        match duration::parse(text) {
            Ok(d) if nonzero && d.is_zero() => {
                self.error(
                    path,
                    format!("{path} is zero; it must be longer than that, like 1s"),
                );
                None
            }
            Ok(d) => Some(Some(d)),
            Err(e) => {
                self.error(path, format!("{path}: {e}"));
                None
            }
        }
    }
}

/// `"x" is not a valid {path}; write one of: a, b, c` (+ a suggestion).
pub fn one_of(path: &str, value: &str, allowed: &[&str]) -> String {
    let mut message = format!(
        "{path} {value:?} is not one of the allowed values; write one of: {}",
        allowed.join(", ")
    );
    if let Some(near) = super::problem::did_you_mean(value, allowed.iter().copied()) {
        message += &format!(" (did you mean {near:?}?)");
    }
    message
}

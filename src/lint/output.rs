//! How a lint report is written: text for people, JSON for scripts, SARIF
//! 2.1.0 for CI systems that show findings inline.

use std::io::Write;

use serde_json::{json, Value};

use super::{Report, RULES};

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `FILE:LINE:COL: LEVEL[CODE]: sentence`, then `help:`.
    #[default]
    Text,
    /// A JSON array, one object per finding.
    Json,
    /// SARIF 2.1.0.
    Sarif,
}

pub fn write(report: &Report, format: Format, out: &mut dyn Write, err: &mut dyn Write) {
    match format {
        Format::Text => {
            for u in &report.unreadable {
                let _ = writeln!(
                    out,
                    "{}:{}:{}: error: {}",
                    u.file, u.line, u.column, u.message
                );
            }
            for f in &report.findings {
                let _ = writeln!(
                    out,
                    "{}:{}:{}: {}[{}]: {}\nhelp: {}",
                    f.file, f.line, f.column, f.level, f.code, f.message, f.help
                );
            }
            let _ = writeln!(out, "{}", summary(report));
        }
        Format::Json => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&json_findings(report)).unwrap_or_default()
            );
            let _ = writeln!(err, "{}", summary(report));
        }
        Format::Sarif => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&sarif(report)).unwrap_or_default()
            );
            let _ = writeln!(err, "{}", summary(report));
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `read 3 documents in 2 files: 1 Envoy bootstrap, 2 Kubernetes Service;
/// skipped 1 (ConfigMap); 2 findings (1 error, 1 warning)`.
pub fn summary(report: &Report) -> String {
    let read: usize = report.kinds.values().sum();
    let mut s = format!(
        "torii lint: read {} in {}",
        plural(read, "document"),
        plural(report.files, "file")
    );
    if !report.kinds.is_empty() {
        let kinds: Vec<String> = report
            .kinds
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        s += &format!(" ({})", kinds.join(", "));
    }
    let skipped: usize = report.skipped.values().sum();
    if skipped > 0 {
        let what: Vec<String> = report
            .skipped
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        s += &format!(
            "; skipped {} of kinds not checked ({})",
            plural(skipped, "document"),
            what.join(", ")
        );
    }
    if !report.unreadable.is_empty() {
        s += &format!(
            "; {} could not be read",
            plural(report.unreadable.len(), "input")
        );
    }
    let errors = report
        .findings
        .iter()
        .filter(|f| f.level == super::Level::Error)
        .count();
    let warnings = report.findings.len() - errors;
    if report.findings.is_empty() {
        s += "; no pitfalls found";
    } else {
        s += &format!(
            "; {} ({}, {})",
            plural(report.findings.len(), "finding"),
            plural(errors, "error"),
            plural(warnings, "warning")
        );
    }
    s
}

fn json_findings(report: &Report) -> Value {
    let mut list: Vec<Value> = report
        .unreadable
        .iter()
        .map(|u| {
            json!({
                "file": u.file, "line": u.line, "column": u.column, "level": "error",
                "code": "unreadable", "message": u.message,
                "help": "fix the syntax at this position (or remove the file from the inputs); the other files were linted",
            })
        })
        .collect();
    list.extend(report.findings.iter().map(|f| {
        json!({
            "file": f.file, "line": f.line, "column": f.column, "level": f.level.as_str(),
            "code": f.code, "message": f.message, "help": f.help,
        })
    }));
    Value::Array(list)
}

/// A file name as a SARIF artifact URI: relative paths stay relative (CI
/// systems resolve them against the checkout), characters URIs cannot hold
/// are percent-encoded.
fn uri(file: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'[')
        .add(b']')
        .add(b'\\')
        .add(b'^')
        .add(b'`')
        .add(b'{')
        .add(b'|')
        .add(b'}');
    let encoded = percent_encoding::utf8_percent_encode(file, SET).to_string();
    if file.starts_with('/') {
        format!("file://{encoded}")
    } else {
        encoded
    }
}

fn sarif(report: &Report) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.code,
                "name": r.code,
                "shortDescription": { "text": r.summary },
                "defaultConfiguration": { "level": r.level.as_str() },
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let index = RULES.iter().position(|r| r.code == f.code).unwrap_or(0);
            json!({
                "ruleId": f.code,
                "ruleIndex": index,
                "level": f.level.as_str(),
                "message": { "text": format!("{}\nhelp: {}", f.message, f.help) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&f.file) },
                        "region": { "startLine": f.line, "startColumn": f.column },
                    }
                }],
            })
        })
        .collect();
    let notifications: Vec<Value> = report
        .unreadable
        .iter()
        .map(|u| {
            json!({
                "level": "error",
                "message": { "text": u.message },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&u.file) },
                        "region": { "startLine": u.line, "startColumn": u.column },
                    }
                }],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "torii lint",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }
            },
            "invocations": [{
                "executionSuccessful": report.unreadable.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
        }]
    })
}

//! `torii lint`: the pitfalls of other proxies' and platforms' configs —
//! Envoy v3 (bootstrap, or listener/cluster/route resources), Kubernetes
//! manifests and Istio resources — found in the files, before anything runs.
//!
//! Files are read into span-carrying trees ([`tree`]), every document is
//! classified by kind, then the rules run over all documents at once (an
//! Envoy listener in one file may route to a cluster in another; an Istio
//! VirtualService names a Kubernetes Service). Findings point at the exact
//! key, say what users will see, and what to change.

mod envoy;
mod kube;
mod output;
pub mod rules;
pub mod tree;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use output::Format;
pub use rules::{Level, RULES};
use tree::{Node, Pos};

/// One pitfall found, where it is, and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    pub level: Level,
    /// A stable code from [`RULES`], like `tls-no-alpn`.
    pub code: &'static str,
    /// What is wrong and what users will see because of it.
    pub message: String,
    /// The change to make.
    pub help: String,
}

/// An input that could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Everything one run found.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub unreadable: Vec<Unreadable>,
    /// Documents read, by kind ("Kubernetes Service", "Envoy bootstrap"…).
    pub kinds: BTreeMap<String, usize>,
    /// Documents skipped, by what they were (unknown kinds).
    pub skipped: BTreeMap<String, usize>,
    pub files: usize,
}

impl Report {
    /// 0 clean, 1 findings, 2 some input could not be read.
    pub fn exit_code(&self) -> u8 {
        if !self.unreadable.is_empty() {
            2
        } else if !self.findings.is_empty() {
            1
        } else {
            0
        }
    }
}

/// What a document is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    EnvoyBootstrap,
    EnvoyListener,
    EnvoyCluster,
    EnvoyRoutes,
    /// A Kubernetes kind this linter reads (Service, Deployment, …).
    Kube(String),
    /// An Istio kind this linter reads (Gateway, VirtualService, …).
    Istio(String),
}

impl Kind {
    pub fn label(&self) -> String {
        match self {
            Kind::EnvoyBootstrap => "Envoy bootstrap".into(),
            Kind::EnvoyListener => "Envoy Listener".into(),
            Kind::EnvoyCluster => "Envoy Cluster".into(),
            Kind::EnvoyRoutes => "Envoy RouteConfiguration".into(),
            Kind::Kube(k) => format!("Kubernetes {k}"),
            Kind::Istio(k) => format!("Istio {k}"),
        }
    }
}

/// One document (or one resource inside a list) of a known kind.
pub struct Doc {
    pub file: String,
    pub kind: Kind,
    pub node: Node,
}

const KUBE_KINDS: &[&str] = &[
    "Service",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Pod",
    "Job",
    "CronJob",
    "Ingress",
];
const ISTIO_KINDS: &[&str] = &[
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "Sidecar",
    "ServiceEntry",
];

/// Lints files, directories (recursively: `*.yaml`, `*.yml`, `*.json`) and
/// `-` (standard input).
pub fn lint_paths(inputs: &[PathBuf]) -> Report {
    let mut texts = Vec::new();
    let mut report = Report::default();
    for input in inputs {
        if input.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => texts.push(("<stdin>".to_string(), text)),
                Err(e) => report.unreadable.push(unreadable(
                    "<stdin>",
                    format!("cannot read standard input: {e}"),
                )),
            }
            continue;
        }
        let mut files = Vec::new();
        if input.is_dir() {
            walk(input, &mut files, &mut report);
        } else {
            files.push(input.clone());
        }
        for file in files {
            let name = file.display().to_string();
            match std::fs::read(&file) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => texts.push((name, text)),
                    Err(_) => report.unreadable.push(unreadable(
                        &name,
                        "is not UTF-8 text; YAML and JSON files must be".into(),
                    )),
                },
                Err(e) => report.unreadable.push(unreadable(
                    &name,
                    format!("cannot read it: {}", io_words(&e)),
                )),
            }
        }
    }
    let mut inner = lint_texts(&texts);
    report.findings = inner.findings;
    report.unreadable.append(&mut inner.unreadable);
    report.kinds = inner.kinds;
    report.skipped = inner.skipped;
    report.files = inner.files;
    report
}

fn unreadable(file: &str, message: String) -> Unreadable {
    Unreadable {
        file: file.to_string(),
        line: 1,
        column: 1,
        message,
    }
}

fn io_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// The YAML and JSON files under `dir`, sorted, hidden ones skipped.
fn walk(dir: &Path, files: &mut Vec<PathBuf>, report: &mut Report) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            let name = dir.display().to_string();
            report.unreadable.push(unreadable(
                &name,
                format!("cannot read the directory: {}", io_words(&e)),
            ));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, files, report);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(path);
        }
    }
}

/// Lints texts already read: `(name shown in findings, content)`.
pub fn lint_texts(texts: &[(String, String)]) -> Report {
    let mut report = Report {
        files: texts.len(),
        ..Report::default()
    };
    let mut docs = Vec::new();
    for (name, text) in texts {
        match tree::parse(text) {
            Ok(roots) => {
                for root in roots {
                    classify(name, root, &mut docs, &mut report);
                }
            }
            Err(e) => report.unreadable.push(Unreadable {
                file: name.clone(),
                line: e.pos.line,
                column: e.pos.column,
                message: format!(
                    "not valid YAML or JSON ({}); this file was not linted",
                    e.message
                ),
            }),
        }
    }
    for doc in &docs {
        *report.kinds.entry(doc.kind.label()).or_default() += 1;
    }
    envoy::check(&docs, &mut report.findings);
    kube::check(&docs, &mut report.findings);
    report.findings.sort_by(|a, b| {
        (a.file.as_str(), a.line, a.column, a.code).cmp(&(
            b.file.as_str(),
            b.line,
            b.column,
            b.code,
        ))
    });
    report.findings.dedup();
    report
}

/// Sorts a document into the kinds the rules read; lists (`kind: List`,
/// xDS `resources:`) are opened up.
fn classify(file: &str, node: Node, docs: &mut Vec<Doc>, report: &mut Report) {
    let mut push = |kind: Kind, node: Node| {
        docs.push(Doc {
            file: file.to_string(),
            kind,
            node,
        })
    };
    if !node.is_map() {
        *report.skipped.entry("not a mapping".into()).or_default() += 1;
        return;
    }
    if let (Some(api), Some(kind)) = (node.str_at("apiVersion"), node.str_at("kind")) {
        let kind = kind.to_string();
        if kind == "List" {
            let items: Vec<Node> = node
                .get("items")
                .map(|i| i.items().to_vec())
                .unwrap_or_default();
            for item in items {
                classify(file, item, docs, report);
            }
        } else if api.contains("istio.io") && ISTIO_KINDS.contains(&kind.as_str()) {
            push(Kind::Istio(kind), node);
        } else if !api.contains("istio.io") && KUBE_KINDS.contains(&kind.as_str()) {
            push(Kind::Kube(kind), node);
        } else {
            *report.skipped.entry(kind).or_default() += 1;
        }
        return;
    }
    if let Some(resources) = node.get("resources").filter(|r| !r.items().is_empty()) {
        let items = resources.items().to_vec();
        for item in items {
            classify(file, item, docs, report);
        }
        return;
    }
    match envoy::kind_of(&node) {
        Some(kind) => push(kind, node),
        None => *report.skipped.entry("unknown kind".into()).or_default() += 1,
    }
}

/// A finding at `pos` in `file`.
pub(crate) fn finding(
    file: &str,
    pos: Pos,
    code: &'static str,
    message: String,
    help: String,
) -> Finding {
    Finding {
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
        level: rules::level(code),
        code,
        message,
        help,
    }
}

/// `torii lint`: prints the report in `format` to `out` (the summary to
/// `err` unless the format is text) and returns the exit code.
pub fn run(
    inputs: &[PathBuf],
    format: Format,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> u8 {
    let report = lint_paths(inputs);
    output::write(&report, format, out, err);
    report.exit_code()
}

/// An Envoy-style or Go-style duration (`0s`, `15s`, `0.25s`, `1m30s`,
/// `{seconds: 5}`), or NGINX-style (`60`, `60s`, `1h`), in seconds.
pub(crate) fn seconds(node: &Node) -> Option<f64> {
    if node.is_map() {
        let s = node.get("seconds").and_then(Node::int).unwrap_or(0) as f64;
        let n = node.get("nanos").and_then(Node::int).unwrap_or(0) as f64;
        return Some(s + n / 1e9);
    }
    seconds_text(node.str()?)
}

pub(crate) fn seconds_text(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Ok(n) = text.parse::<f64>() {
        return Some(n);
    }
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "ms" => 0.001,
            "s" | "" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        total += n * factor;
        rest = &rest[unit_end..];
    }
    Some(total)
}

/// `90` → `90s`, `3600` → `1h`, for messages.
pub(crate) fn human(secs: f64) -> String {
    if secs >= 3600.0 && secs % 3600.0 == 0.0 {
        format!("{}h", secs / 3600.0)
    } else if secs >= 60.0 && secs % 60.0 == 0.0 {
        format!("{}m", secs / 60.0)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(seconds_text("0s"), Some(0.0));
        assert_eq!(seconds_text("15s"), Some(15.0));
        assert_eq!(seconds_text("0.25s"), Some(0.25));
        assert_eq!(seconds_text("1m30s"), Some(90.0));
        assert_eq!(seconds_text("600"), Some(600.0));
        assert_eq!(seconds_text("1h"), Some(3600.0));
        assert_eq!(seconds_text("x"), None);
        assert_eq!(human(3600.0), "1h");
        assert_eq!(human(90.0), "90s");
    }
}

//! The source tree reads in the order a request travels (ARCHITECTURE.md):
//! a module may use the stages a request reaches after it and the
//! foundation under all of them, never a stage the request reached
//! earlier; no two files import each other, directly or round a circle;
//! no file in src/ grows past ~800 lines. Reads `use crate::…` and
//! `super::…` paths in non-test code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The stages, in the request's order, then the foundation (any order
/// among themselves, but still no circles).
const STAGES: &[&str] = &[
    "main", "fuzzing", "cli", "lint", "doctor", "demo", "app", "admin", "listener", "tcp",
    "server", "proxy", "upstream", "body", "http2",
];
const FOUNDATION: &[&str] = &[
    "grpc",
    "route",
    "config",
    "error",
    "telemetry",
    "drain",
    "limits",
    "net",
    "heap",
    "transcode",
    "rate_limit",
    "auth",
    "xds",
    "lib",
];

/// Test-only code may reach anywhere (certificates from `demo`, say).
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` → `a`; `src/lib.rs` → `lib`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") && parts.len() > 1 {
        parts.pop();
    }
    parts.join("::")
}

/// Every module path a file names (`crate::x::y`, `super::z` resolved).
fn references(module: &str, is_mod_rs: bool, text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let bytes = text;
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let at_word = i == 0 || !bytes[..i].ends_with(|c: char| ident(c));
        if at_word && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(':');
            // Resolve super:: against this file's module.
            let mut base: Vec<&str> = if module == "lib" {
                vec![]
            } else {
                module.split("::").collect()
            };
            // A mod.rs's `super` is its parent; a file's `super` is its
            // module's parent too (the file is the module).
            let _ = is_mod_rs;
            let mut segs: Vec<&str> = path.split("::").collect();
            if segs[0] == "crate" {
                base.clear();
                segs.remove(0);
            } else {
                while segs.first() == Some(&"super") {
                    segs.remove(0);
                    base.pop();
                }
            }
            base.extend(segs);
            out.insert(base.join("::"));
            i += end;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

fn rank(top: &str) -> Option<usize> {
    STAGES.iter().position(|s| *s == top)
}

#[test]
fn modules_follow_the_request_and_form_no_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    for top in modules.keys().map(|m| m.split("::").next().unwrap()) {
        assert!(
            STAGES.contains(&top) || FOUNDATION.contains(&top),
            "module {top} has no place in the layout: add it to STAGES or FOUNDATION here and to ARCHITECTURE.md"
        );
    }
    // File-level edges: the longest module path that is a file.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut backwards = Vec::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let is_mod_rs = file.ends_with("mod.rs");
        for r in references(module, is_mod_rs, without_tests(&text)) {
            let mut target = r.as_str();
            let found = loop {
                if modules.contains_key(target) {
                    break Some(target.to_string());
                }
                match target.rfind("::") {
                    Some(i) => target = &target[..i],
                    None => break None,
                }
            };
            let target = match found {
                Some(t) => t,
                // A name in the crate root (lib.rs): tls_provider, echo_pb.
                None => "lib".to_string(),
            };
            // A module using its own children is the module's inside.
            if target == *module || target.starts_with(&format!("{module}::")) {
                continue;
            }
            let (from_top, to_top) = (
                module.split("::").next().unwrap(),
                target.split("::").next().unwrap(),
            );
            if let (Some(a), Some(b)) = (rank(from_top), rank(to_top)) {
                if b < a {
                    backwards.push(format!(
                        "{} uses {r}: {from_top} comes after {to_top} on the request's path",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
            if FOUNDATION.contains(&from_top) && rank(to_top).is_some() && from_top != "lib" {
                backwards.push(format!(
                    "{} uses {r}: the foundation ({from_top}) must not depend on a stage ({to_top})",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
            // A child naming its parent's items is not a circle with the
            // parent declaring the child.
            if !module.starts_with(&format!("{target}::")) {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    assert!(backwards.is_empty(), "{}", backwards.join("\n"));

    // Circles: a depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        circles: &mut Vec<String>,
    ) {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                0 => visit(next, edges, state, stack, circles),
                1 => {
                    let from = stack.iter().position(|s| s == next).unwrap();
                    circles.push(format!("{} -> {next}", stack[from..].join(" -> ")));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    let mut circles = Vec::new();
    for node in edges.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            visit(node, &edges, &mut state, &mut Vec::new(), &mut circles);
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn no_source_file_is_over_800_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 820).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these by concern:\n{}",
        long.join("\n")
    );
}

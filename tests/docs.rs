//! The user documentation (README.md and docs/) says what exists, and every
//! pointer in it resolves: links and their anchors, the test and source
//! files named in docs/reliability.md (and the test functions, when named),
//! every reason code of `ErrorCode`, every metric the registry exports,
//! every configuration key `torii check` knows, every option of every
//! command. And no file of the repository points at notes kept outside it.
//! Nothing here starts a server.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// README.md, docs/*.md and the READMEs of bench/ and fuzz/.
fn markdown_files() -> Vec<String> {
    let mut files = vec![
        "README.md".to_string(),
        "bench/README.md".to_string(),
        "fuzz/README.md".to_string(),
    ];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("a docs/ folder")
        .map(|e| {
            e.expect("docs/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of a markdown text outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push(line);
        }
    }
    out
}

/// Inline code spans (`like this`) of the prose.
fn code_spans(text: &str) -> Vec<String> {
    prose(text)
        .into_iter()
        .flat_map(|line| line.split('`').skip(1).step_by(2).map(str::to_string))
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// to hyphens; repeated headings get `-1`, `-2`, ….
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for line in prose(text) {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#').trim();
        let slug: String = title
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                '-' | '_' => Some(c),
                c if c.is_alphanumeric() => Some(c.to_lowercase().next().unwrap_or(c)),
                _ => None,
            })
            .collect();
        let mut unique = slug.clone();
        let mut n = 0;
        while !seen.insert(unique.clone()) {
            n += 1;
            unique = format!("{slug}-{n}");
        }
    }
    seen
}

/// The targets of `[text](target)` links in the prose (code spans removed).
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        let without_code: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect();
        let mut rest = without_code.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_link_and_anchor_in_the_docs_resolves() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = read(&file);
        let dir = Path::new(&file).parent().unwrap_or(Path::new(""));
        for target in links(&text) {
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved: PathBuf = if path.is_empty() {
                PathBuf::from(&file)
            } else {
                normalise(&dir.join(path))
            };
            let full = root().join(&resolved);
            if !full.exists() {
                broken.push(format!("{file}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let heads = std::fs::read_to_string(&full)
                    .map(|t| anchors(&t))
                    .unwrap_or_default();
                if !heads.contains(anchor) {
                    broken.push(format!("{file}: {target}: no heading with that anchor"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// `a/b/../c` → `a/c`, so a link may leave docs/ for the repository's root.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Code spans that name a file of the repository, as `PATH` or
/// `PATH::TEST`: the file must exist and, when a test is named, define it.
fn check_pointers(file: &str, broken: &mut Vec<String>) -> usize {
    const ROOTS: [&str; 7] = [
        "tests/",
        "src/",
        "fuzz/",
        "bench/",
        "scripts/",
        "examples/",
        "proto/",
    ];
    let mut count = 0;
    for span in code_spans(&read(file)) {
        let Some(token) = span.split_whitespace().next() else {
            continue;
        };
        if !ROOTS.iter().any(|r| token.starts_with(r)) || token.contains(['<', '*']) {
            continue;
        }
        count += 1;
        let (path, test) = match token.split_once("::") {
            Some((p, t)) => (p, Some(t)),
            None => (token, None),
        };
        let Ok(source) = std::fs::read_to_string(root().join(path)).or_else(|e| {
            if root().join(path).is_dir() {
                Ok(String::new())
            } else {
                Err(e)
            }
        }) else {
            broken.push(format!("{file}: `{token}`: {path} does not exist"));
            continue;
        };
        if let Some(test) = test {
            let defined = [
                format!("fn {test}("),
                format!("fn {test}<"),
                format!("def {test}("),
            ];
            if !defined.iter().any(|d| source.contains(d.as_str())) {
                broken.push(format!("{file}: `{token}`: {path} has no test {test}"));
            }
        }
    }
    count
}

#[test]
fn every_file_and_test_the_docs_name_exists() {
    let mut broken = Vec::new();
    // bench/ and fuzz/ READMEs name paths relative to their folders.
    let files = markdown_files()
        .into_iter()
        .filter(|f| f == "README.md" || f.starts_with("docs/"));
    for file in files {
        let count = check_pointers(&file, &mut broken);
        if file == "docs/reliability.md" {
            assert!(
                count >= 50,
                "docs/reliability.md names its proofs as `tests/FILE::TEST`; found only {count}"
            );
        }
    }
    assert!(broken.is_empty(), "stale pointers:\n{}", broken.join("\n"));
}

/// Every file git knows of (tracked, or new and not ignored); without git,
/// every file under the root but target/, .git/ and node_modules/.
fn repository_files() -> Vec<PathBuf> {
    let listed = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success());
    if let Some(out) = listed {
        return out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| root().join(String::from_utf8_lossy(p).as_ref()))
            .collect();
    }
    let mut files = Vec::new();
    let mut dirs = vec![root().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if ["target", ".git", "node_modules", "work"].contains(&name.to_str().unwrap_or("")) {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files
}

#[test]
fn no_file_points_at_notes_outside_the_repository() {
    // Spelled in pieces, so that this file does not match itself.
    let needles = [
        ["..", "/shared"].concat(),
        ["shared", "/docs"].concat(),
        ["interface", ".md"].concat(),
        ["field", "-notes"].concat(),
        ["field", " notes §"].concat(),
    ];
    let mut found = Vec::new();
    for path in repository_files() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for needle in &needles {
            if text.contains(&needle.to_lowercase()) {
                let rel = path.strip_prefix(root()).unwrap_or(&path);
                found.push(format!("{}: {needle}", rel.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "these files point at documents outside the repository (write it in docs/ instead):\n{}",
        found.join("\n")
    );
}

/// The rows of the first table under `## heading` whose first cell is a
/// code span: those spans.
fn table_keys(text: &str, heading: &str) -> Vec<String> {
    let section = text
        .split(&format!("\n## {heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no \"## {heading}\" section"));
    let section = section.split("\n## ").next().unwrap_or(section);
    row_keys(section)
}

fn row_keys(section: &str) -> Vec<String> {
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(key, _)| key.to_string()))
        .collect()
}

#[test]
fn every_error_code_is_documented_and_every_documented_one_exists() {
    let documented = table_keys(&read("docs/errors.md"), "Codes");
    let codes: Vec<&str> = torii::error::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    for code in &codes {
        assert!(
            documented.iter().any(|d| d == code),
            "`{code}` is an ErrorCode but not a row of docs/errors.md's \"Codes\" table"
        );
    }
    for doc in &documented {
        assert!(
            codes.contains(&doc.as_str()),
            "docs/errors.md documents `{doc}`, which torii does not produce"
        );
    }
}

/// The metric names a scrape shows (`_total` on counters): the ones a
/// fresh registry exports at once (process metrics, plain counters), and
/// every family registered in src/ (a family shows only once it has a
/// series, so those are read from the `registry.register(` calls).
fn exported_metrics() -> BTreeSet<String> {
    let scrape = torii::telemetry::Metrics::new().encode();
    let mut names: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (name, kind) = (parts.next()?, parts.next()?);
            Some(with_suffix(name, kind == "counter"))
        })
        .collect();
    for source in rust_sources(&root().join("src")) {
        let text = std::fs::read_to_string(&source).unwrap();
        for call in text.split("registry.register(").skip(1) {
            // ("name", "help", family.clone())
            let mut quoted = call.split('"');
            let (Some(_), Some(name), Some(_), Some(_), Some(rest)) = (
                quoted.next(),
                quoted.next(),
                quoted.next(),
                quoted.next(),
                quoted.next(),
            ) else {
                continue;
            };
            let var = rest
                .trim_start_matches([',', ' ', '\n'])
                .split(['.', ')', ','])
                .next()
                .unwrap_or("")
                .trim();
            let made = text
                .split(&format!("let {var} = "))
                .nth(1)
                .and_then(|t| t.split(';').next())
                .unwrap_or("");
            names.insert(with_suffix(
                &format!("torii_{name}"),
                made.contains("Counter"),
            ));
        }
    }
    names
}

fn with_suffix(name: &str, counter: bool) -> String {
    if counter && !name.ends_with("_total") {
        format!("{name}_total")
    } else {
        name.to_string()
    }
}

fn rust_sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Words that look like metric names: `torii_…` and `process_…`.
fn metric_words(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for start in ["torii_", "process_"] {
        for (at, _) in text.match_indices(start) {
            if text[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '/')
            {
                continue;
            }
            let word: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            out.insert(word);
        }
    }
    out
}

#[test]
fn every_metric_is_documented_and_every_documented_one_exists() {
    let exported = exported_metrics();
    for name in [
        "torii_requests_total",
        "torii_request_duration_seconds",
        "torii_endpoint_healthy",
        "process_open_fds",
    ] {
        assert!(
            exported.contains(name),
            "{name} was not found: {exported:?}"
        );
    }
    let doc = read("docs/metrics.md");
    let listed: BTreeSet<String> = row_keys(&doc).into_iter().collect();
    for name in &exported {
        assert!(
            listed.contains(name),
            "`{name}` is exported on /metrics but is not a row of docs/metrics.md"
        );
    }
    let known = |word: &str| {
        exported.contains(word)
            || ["_bucket", "_sum", "_count"].iter().any(|s| {
                word.strip_suffix(s)
                    .is_some_and(|base| exported.contains(base))
            })
    };
    for file in markdown_files() {
        for word in metric_words(&read(&file)) {
            assert!(
                known(&word),
                "{file} mentions the metric {word}, which torii does not export"
            );
        }
    }
}

/// Every mapping of the file model, with the keys it takes, as `torii
/// check` reports them for a key it does not know.
fn config_keys() -> Vec<(String, Vec<String>)> {
    let dir = TempDir::new("docs-keys");
    let file = dir.path().join("keys.yaml");
    std::fs::write(
        &file,
        "zz: 1
admin: {zz: 1}
listeners:
  - zz: 1
    tls: {zz: 1, client_auth: {zz: 1}, certificates: [{zz: 1}]}
    health: {zz: 1}
    tcp: {zz: 1}
    tls_passthrough: [{zz: 1}]
    json_transcoding: {zz: 1, print: {zz: 1}}
    routes:
      - zz: 1
        match: {zz: 1, headers: [{zz: 1}]}
        weighted_clusters: [{zz: 1}]
        direct_response: {zz: 1}
        request_headers: {zz: 1}
        auth: {zz: 1, allow: [{zz: 1}]}
jwt_providers: [{zz: 1, jwks: {zz: 1}, from: [{zz: 1}]}]
api_keys: [{zz: 1, from: [{zz: 1}]}]
clusters:
  - zz: 1
    endpoints: [{zz: 1}]
    tls: {zz: 1}
    health_check: {zz: 1}
    outlier_detection: {zz: 1}
    http2_keepalive: {zz: 1}
xds: {zz: 1, node: {zz: 1}, tls: {zz: 1}}
",
    )
    .unwrap();
    let out = torii_check(&file);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut sections = Vec::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once("unknown key \"zz\" ") else {
            continue;
        };
        let Some((place, keys)) = rest.split_once("; expected one of: ") else {
            continue;
        };
        let place = place.strip_prefix("in ").unwrap_or(place);
        let mut shape = String::new();
        let mut in_index = false;
        for c in place.chars() {
            match c {
                '[' => {
                    in_index = true;
                    shape.push('[');
                }
                ']' => {
                    in_index = false;
                    shape.push(']');
                }
                _ if in_index => {}
                c => shape.push(c),
            }
        }
        let keys = keys.split(", ").map(str::to_string).collect();
        sections.push((shape, keys));
    }
    assert_eq!(sections.len(), 33, "torii check said:\n{text}");
    sections
}

#[test]
fn every_configuration_key_is_documented_and_every_documented_one_exists() {
    let doc = read("docs/configuration.md");
    for (shape, keys) in config_keys() {
        // "## Top level", else a heading that names the mapping in a code
        // span: "### `listeners[].tls`".
        let top = shape == "at the top level";
        let heading = if top {
            "Top level".to_string()
        } else {
            format!("`{shape}`")
        };
        let start = doc
            .lines()
            .position(|l| {
                let title = l.trim_start_matches('#').trim();
                l.starts_with('#')
                    && if top {
                        title == heading
                    } else {
                        title.split('`').skip(1).step_by(2).any(|c| c == shape)
                    }
            })
            .unwrap_or_else(|| {
                panic!("docs/configuration.md has no heading for {shape} ({heading})")
            });
        let section: Vec<&str> = doc
            .lines()
            .skip(start + 1)
            .take_while(|l| !l.starts_with('#'))
            .collect();
        let documented = row_keys(&section.join("\n"));
        for key in &keys {
            assert!(
                documented.contains(key),
                "docs/configuration.md, {heading}: no row for `{key}`"
            );
        }
        for key in &documented {
            assert!(
                keys.contains(key),
                "docs/configuration.md, {heading}: `{key}` is not a key torii reads there"
            );
        }
    }
}

#[test]
fn the_annotated_configuration_example_passes_check() {
    let yaml = yaml_after(&read("docs/configuration.md"), "An annotated example");
    let dir = TempDir::new("docs-example");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let pki = TestPki::new("docs example CA");
    pki.server_cert(&["api.example.com"])
        .write_to(&certs, "server")
        .unwrap();
    pki.write_ca(&certs, "clients-ca").unwrap();
    pki.write_ca(&certs, "internal-ca").unwrap();
    let config = dir.path().join("torii.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let out = torii_check(&config);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !said.contains("warning"),
        "torii check on docs/configuration.md's example:\n{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_torii"))
        .args(args)
        .arg("--help")
        .output()
        .expect("torii runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The entries of a clap help section ("Commands:", "Options:").
fn entries(help: &str, section: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != section)
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter_map(|l| {
            let l = l.trim_start();
            let token = l.split([' ', ',']).next()?;
            let token = if token.starts_with("-") && !token.starts_with("--") {
                // "-c, --config <CONFIG>": the long name.
                l.split_whitespace().nth(1)?
            } else {
                token
            };
            (!token.is_empty()).then(|| token.to_string())
        })
        .collect()
}

#[test]
fn every_command_and_option_is_documented() {
    let doc = read("docs/cli.md");
    let commands: Vec<String> = entries(&help(&[]), "Commands:")
        .into_iter()
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 4, "{commands:?}");
    for command in &commands {
        assert!(
            doc.contains(&format!("## `torii {command}`")),
            "docs/cli.md has no \"## `torii {command}`\" section"
        );
        for option in entries(&help(&[command]), "Options:") {
            if !option.starts_with("--") || option == "--help" {
                continue;
            }
            assert!(
                doc.contains(&format!("`{option}")) || doc.contains(&format!(", {option}`")),
                "docs/cli.md does not describe `torii {command} {option}`"
            );
        }
    }
}

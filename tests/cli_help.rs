//! What a new user reads first: every subcommand and option of the built
//! binary has a description, `serve --help` says how to reload and stop,
//! and `--log-format json` writes one JSON object per log line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn torii() -> Command {
    Command::new(env!("CARGO_BIN_EXE_torii"))
}

fn help(args: &[&str]) -> String {
    let out = torii()
        .args(args)
        .arg("--help")
        .output()
        .expect("torii runs");
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The options listed by a short help (`-h`), one per line: every one
/// must carry words after its name.
fn undescribed_options(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_options = false;
    for line in text.lines() {
        if line.trim_end().ends_with("Options:") || line.trim_end().ends_with("Commands:") {
            in_options = true;
            continue;
        }
        if in_options && line.trim().is_empty() {
            in_options = false;
        }
        if in_options && line.starts_with("  ") {
            // "  -c, --config <CONFIG>  The configuration file ..."
            let rest = line.trim_start();
            let words: Vec<&str> = rest.split("  ").filter(|w| !w.trim().is_empty()).collect();
            if words.len() < 2 {
                out.push(line.to_string());
            }
        }
    }
    out
}

#[test]
fn every_subcommand_and_option_is_described() {
    let top = help(&["-h"]);
    assert!(undescribed_options(&top).is_empty(), "{top}");
    for sub in ["serve", "check", "demo", "version", "lint", "doctor"] {
        let text = String::from_utf8(
            torii()
                .args([sub, "-h"])
                .output()
                .expect("torii runs")
                .stdout,
        )
        .unwrap();
        let missing = undescribed_options(&text);
        assert!(
            missing.is_empty(),
            "torii {sub} -h: no description for {missing:?}\n{text}"
        );
    }
}

#[test]
fn serve_help_says_how_to_reload_and_stop() {
    let text = help(&["serve"]);
    for words in [
        "SIGHUP",
        "SIGTERM",
        "drain",
        "Configuration reference",
        "--log-format",
    ] {
        assert!(
            text.contains(words),
            "serve --help lacks {words:?}:\n{text}"
        );
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = std::env::temp_dir().join(format!("torii-cli-help-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("torii.yaml");
    std::fs::write(
        &config,
        "listeners:\n  - name: a\n    address: 127.0.0.1:0\n    routes:\n      - match: { path: /v }\n        direct_response: { status: 200, body: \"v1\" }\n",
    )
    .unwrap();
    let mut child = torii()
        .args(["serve", "-c"])
        .arg(&config)
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("torii starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Up to the readiness line; each line before it is checked too.
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("a log line");
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        seen.push(value.clone());
        if value["message"] == "configuration applied" {
            break;
        }
        assert!(seen.len() < 50, "no readiness line: {seen:?}");
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let listening = seen
        .iter()
        .find(|v| v["message"] == "listening")
        .expect("a listening line");
    assert_eq!(listening["level"], "INFO");
    assert!(listening["address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
}

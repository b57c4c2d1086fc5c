//! Configuration: the YAML file model (serde) → validation → runtime types.
//! `torii serve` and `torii check` both load through [`load_file`].
//!
//! Stages: `locate` indexes where every key and value is; `parse` reads the
//! text into the `raw` structs (collecting unknown keys); `validate` (with
//! `cluster`, `route`, `headers`, `tls`, `duration`) turns them into the `model` types.
//! Every stage reports into one list of problems, so a file with ten
//! mistakes gets ten messages in one run.

mod auth;
mod cluster;
mod context;
mod control_plane;
mod cors;
pub mod duration;
mod headers;
mod health;
mod locate;
pub mod model;
mod parse;
mod patterns;
mod problem;
mod rate_limit;
mod raw;
mod raw_auth;
pub mod retry;
mod route;
pub mod san;
mod tls;
pub mod trace;
mod traffic;
mod transcoding;
mod validate;
mod warnings;

use std::io::Write;
use std::path::Path;

pub use cluster::endpoint;
pub use model::*;
pub use problem::{Problem, Severity};
pub use rate_limit::{RateLimit, RateLimitPer};
pub use retry::{Limits, RetryBudget, RetryOn, RetryPolicy};
pub use trace::Tracing;

use context::Ctx;
use problem::Findings;

/// A configuration that loaded, with what is worth a look but not fatal.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Problem>,
}

/// Loads and validates a configuration file (the one path `serve` and
/// Every problem on its own line, for errors that carry them as one text.
pub fn problems_text(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `check` share). `Err` holds every problem found, warnings included.
pub fn load_file(path: &Path) -> Result<Loaded, Vec<Problem>> {
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, path),
        Err(e) => Err(vec![Problem {
            file: path.display().to_string(),
            line: 1,
            column: 1,
            severity: Severity::Error,
            message: format!("cannot read the configuration file: {e}"),
            code: None,
            help: None,
        }]),
    }
}

/// Loads configuration text as if read from `file`: problems name `file`,
/// and relative certificate paths resolve against its directory.
pub fn load_str(text: &str, file: &Path) -> Result<Loaded, Vec<Problem>> {
    let mut findings = Findings::new(text);
    let base = file.parent().unwrap_or(Path::new(""));
    let config = parse::parse(text, &mut findings).and_then(|raw| {
        let mut cx = Ctx {
            findings: &mut findings,
            base,
            files: Vec::new(),
        };
        validate::config(raw, &mut cx, Some(file.to_path_buf()))
    });
    if let Some(config) = &config {
        warnings::pitfalls(config, &mut findings);
    }
    if config.is_none() && !findings.has_errors() {
        // Every refusal reports why; this only guards against one that forgot.
        let message = "the configuration could not be loaded".to_string();
        findings.at(locate::Pos::START, Severity::Error, message);
    }
    let problems = findings.into_problems(&file.display().to_string());
    match config {
        Some(config) => Ok(Loaded {
            config,
            warnings: problems,
        }),
        None => Err(problems),
    }
}

/// What `torii check` prints: every problem, then a summary line. `true`
/// when the file loads (warnings allowed).
pub fn check(path: &Path, out: &mut dyn Write) -> bool {
    check_strict(path, out, false)
}

/// `torii check [--strict]`: like [`check`]; with `strict`, warnings make
/// it fail too. A warning with a pitfall code is followed by a `help:` line.
pub fn check_strict(path: &Path, out: &mut dyn Write, strict: bool) -> bool {
    let file = path.display();
    let (ok, problems, summary) = match load_file(path) {
        Ok(loaded) => {
            let c = &loaded.config;
            let routes: usize = c.listeners.iter().map(|l| l.routes.len()).sum();
            let mut summary = format!(
                "{file}: OK ({}, {}, {})",
                plural(c.listeners.len(), "listener"),
                plural(c.clusters.len(), "cluster"),
                plural(routes, "route"),
            );
            if let Some(x) = &c.xds {
                summary += &format!(", and what the xDS server {} sends", x.server);
            }
            let warned = !loaded.warnings.is_empty();
            if warned {
                summary += &format!(", {}", plural(loaded.warnings.len(), "warning"));
                if strict {
                    summary += " (--strict: warnings fail the check)";
                }
            }
            (!(strict && warned), loaded.warnings, summary)
        }
        Err(problems) => {
            let errors = problems
                .iter()
                .filter(|p| p.severity == Severity::Error)
                .count();
            let warnings = problems.len() - errors;
            let summary = format!(
                "{file}: {}, {}",
                plural(errors, "error"),
                plural(warnings, "warning")
            );
            (false, problems, summary)
        }
    };
    for problem in &problems {
        let _ = writeln!(out, "{problem}");
        if let Some(help) = &problem.help {
            let _ = writeln!(out, "help: {help}");
        }
    }
    let _ = writeln!(out, "{summary}");
    ok
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests;

//! The built `torii` binary as a child process, its stderr lines arriving
//! on a channel that tests wait on (bounded) instead of sleeping.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

pub struct ToriiProcess {
    pub child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl ToriiProcess {
    /// `torii serve --workers 1 -c CONFIG` at the info level.
    pub fn serve(config: &Path) -> ToriiProcess {
        Self::serve_with(config, &[], "info")
    }

    /// `torii serve --workers 1 -c CONFIG EXTRA...` with `RUST_LOG=log`.
    pub fn serve_with(config: &Path, extra: &[&str], log: &str) -> ToriiProcess {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_torii"))
            .args(["serve", "--workers", "1", "-c"])
            .arg(config)
            .args(extra)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the torii binary runs");
        let (tx, rx) = mpsc::unbounded_channel();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ToriiProcess {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a line containing every one of `parts`.
    pub async fn wait_for(&mut self, parts: &[&str], within: std::time::Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if parts.iter().all(|p| line.contains(p)) {
                        return line;
                    }
                }
                _ => panic!(
                    "no line with {parts:?} within {within:?}; torii said:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Reads every line until the process exits (bounded); returns them all.
    pub async fn finish(&mut self, within: std::time::Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(line)) = tokio::time::timeout_at(deadline, self.lines.recv()).await {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    /// Sends a signal (`libc`-free: through the `kill` command).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("torii is running").to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{name} {pid}");
    }

    /// The address in a readiness line (`… address=127.0.0.1:1234 …`, or
    /// `"address":"127.0.0.1:1234"` in a JSON line).
    pub fn address(line: &str) -> SocketAddr {
        line.split("address=")
            .nth(1)
            .or_else(|| line.split("\"address\":\"").nth(1))
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }
}

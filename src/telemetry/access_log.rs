//! The access log: one JSON object per request and line, written by a
//! background task so the request path only hands over a record. When the
//! writer falls behind, records are dropped and counted rather than
//! slowing requests down.

use std::io::Write;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::AccessLog;
use crate::telemetry::Metrics;

/// Records waiting to be written before new ones are dropped.
const QUEUE: usize = 16 * 1024;

#[derive(Debug, Default, Serialize)]
pub struct Record {
    pub time: String,
    pub listener: String,
    pub client: String,
    /// How the connection's first bytes were classified, and why.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub detected: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub detect_reason: &'static str,
    /// Where a redirected connection was headed (original destination).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<std::borrow::Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpn: Option<std::borrow::Cow<'static, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_san: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub method: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub authority: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_method: Option<String>,
    pub http_status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<i32>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// The sentence behind `error` (what the client read in grpc-message
    /// or the body), or why a request ended without an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// Opaque TCP and TLS passthrough: how the relayed connection ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

/// Where request records go; cheap to clone.
#[derive(Clone)]
pub struct AccessLogger {
    tx: Option<mpsc::Sender<Record>>,
    metrics: Arc<Metrics>,
}

impl AccessLogger {
    /// Starts the writer for `dest` (nothing runs for `Off`).
    pub fn start(dest: &AccessLog, metrics: Arc<Metrics>) -> Result<Self, String> {
        let out: Box<dyn Write + Send> = match dest {
            AccessLog::Off => return Ok(AccessLogger { tx: None, metrics }),
            AccessLog::Stdout => Box::new(std::io::stdout()),
            AccessLog::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("access_log: cannot open {}: {e}", path.display()))?,
            ),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        // A blocking thread: writes to stdout or a file may block.
        std::thread::Builder::new()
            .name("torii-access-log".into())
            .spawn(move || write_loop(rx, out))
            .map_err(|e| format!("access_log: cannot start its writer: {e}"))?;
        Ok(AccessLogger {
            tx: Some(tx),
            metrics,
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn log(&self, record: Record) {
        if let Some(tx) = &self.tx {
            if tx.try_send(record).is_err() {
                self.metrics.access_log_dropped.inc();
            }
        }
    }
}

fn write_loop(mut rx: mpsc::Receiver<Record>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        // Write everything queued, then flush once: one syscall per burst.
        while let Some(record) = next {
            if serde_json::to_writer(&mut out, &record).is_ok() {
                let _ = out.write_all(b"\n");
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

//! The access log: one JSON object per request and line.
//!
//! Cheap on the request path: a request's line is written as JSON bytes,
//! by hand ([`Json`]), into a buffer from a per-thread pool — the fields
//! the request arrived with when it arrives ([`Line`]), the rest and the
//! time (cached per second) when it ends, appended under a short lock to
//! one pending buffer. A writer thread takes the whole pending buffer at
//! once and writes it with one system call, then waits a few milliseconds
//! for more, so under load many lines share a write and no request wakes
//! the writer; an idle writer is woken by the next line, which so appears
//! at once. When the pending lines reach [`QUEUE_BYTES`] (the writer fell
//! behind: a slow disk, a full pipe), new lines are dropped and counted
//! (`torii_access_log_dropped_total`) rather than slowing requests down.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::AccessLog;
use crate::telemetry::json_line::Json;
use crate::telemetry::Metrics;

/// Bytes of lines waiting to be written before new ones are dropped
/// (about 16,000 lines of 500 bytes).
pub const QUEUE_BYTES: usize = 8 << 20;

/// How long the writer waits after a write for more lines to gather.
const GATHER: Duration = Duration::from_millis(5);

/// A relayed connection's line (opaque TCP, TLS passthrough): one per
/// connection, so written through `serde` (a request's line is written by
/// hand, with the same names, order and shape: see the tests).
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
    pub protocol: String,
    /// Always 0 here (no HTTP): kept for the lines' one shape.
    pub http_status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// How the relayed connection ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

/// Where request lines go; cheap to clone.
#[derive(Clone)]
pub struct AccessLogger {
    inner: Option<Arc<Handle>>,
    metrics: Arc<Metrics>,
}

/// The loggers' share of the writer: when the last logger is gone, the
/// writer writes what is left and ends.
struct Handle {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer when it waits for lines.
    wake: Condvar,
    /// Tells `flush` a write ended.
    written: Condvar,
}

struct State {
    /// Lines not yet taken by the writer.
    pending: Vec<u8>,
    /// The writer waits for `wake`: the next line notifies it.
    waiting: bool,
    /// The writer holds lines it has not written yet.
    writing: bool,
    /// No logger is left.
    closed: bool,
    clock: Clock,
}

impl AccessLogger {
    /// Starts the writer for `dest` (nothing runs for `Off`).
    pub fn start(dest: &AccessLog, metrics: Arc<Metrics>) -> Result<Self, String> {
        let out: Box<dyn Write + Send> = match dest {
            AccessLog::Off => {
                return Ok(AccessLogger {
                    inner: None,
                    metrics,
                })
            }
            AccessLog::Stdout => Box::new(std::io::stdout()),
            AccessLog::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("access_log: cannot open {}: {e}", path.display()))?,
            ),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: Vec::new(),
                waiting: false,
                writing: false,
                closed: false,
                clock: Clock::default(),
            }),
            wake: Condvar::new(),
            written: Condvar::new(),
        });
        let writer = shared.clone();
        // A thread of its own: writes to stdout or a file may block.
        std::thread::Builder::new()
            .name("torii-access-log".into())
            .spawn(move || write_loop(&writer, out))
            .map_err(|e| format!("access_log: cannot start its writer: {e}"))?;
        Ok(AccessLogger {
            inner: Some(Arc::new(Handle { shared })),
            metrics,
        })
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// A line to fill in for one request (None when the log is off).
    pub fn line(&self) -> Option<Line> {
        self.inner.as_ref().map(|_| Line::new())
    }

    /// Appends `line` to the log: `time`, the line's head, what `rest`
    /// writes (the fields known when the request ends), the line's tail.
    pub fn finish(&self, line: Line, rest: impl FnOnce(&mut Json<'_>)) {
        let Some(h) = &self.inner else { return };
        let now = SystemTime::now();
        let Some(mut st) = h.shared.room(&self.metrics) else {
            return;
        };
        let State { pending, clock, .. } = &mut *st;
        pending.extend_from_slice(b"{\"time\":\"");
        clock.write(pending, now);
        pending.push(b'"');
        let split = line.tail.min(line.buf.len());
        pending.extend_from_slice(&line.buf[..split]);
        rest(&mut Json(pending));
        pending.extend_from_slice(&line.buf[split..]);
        pending.extend_from_slice(b"}\n");
        h.shared.wake_writer(&mut st);
    }

    /// Logs a relayed connection's record.
    pub fn log(&self, record: Record) {
        let Some(h) = &self.inner else { return };
        let Ok(bytes) = serde_json::to_vec(&record) else {
            return;
        };
        let Some(mut st) = h.shared.room(&self.metrics) else {
            return;
        };
        st.pending.extend_from_slice(&bytes);
        st.pending.push(b'\n');
        h.shared.wake_writer(&mut st);
    }

    /// Waits (up to `limit`) until every line logged so far is written:
    /// for a stop, so that the last lines are not lost.
    pub fn flush(&self, limit: Duration) {
        let Some(h) = &self.inner else { return };
        let deadline = std::time::Instant::now() + limit;
        let mut st = h.shared.lock();
        h.shared.wake_writer(&mut st);
        while !st.pending.is_empty() || st.writing {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            st = h
                .shared
                .written
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, when the pending lines leave room for one more; else the
    /// line is counted as dropped.
    fn room(&self, metrics: &Metrics) -> Option<MutexGuard<'_, State>> {
        let st = self.lock();
        if st.pending.len() >= QUEUE_BYTES {
            drop(st);
            metrics.access_log_dropped.inc();
            return None;
        }
        Some(st)
    }

    fn wake_writer(&self, st: &mut State) {
        if st.waiting {
            st.waiting = false;
            self.wake.notify_one();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.closed = true;
        st.waiting = false;
        self.shared.wake.notify_one();
    }
}

fn write_loop(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut st = shared.lock();
            while st.pending.is_empty() && !st.closed {
                st.waiting = true;
                st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            if st.pending.is_empty() {
                // Closed, and everything written.
                return;
            }
            std::mem::swap(&mut st.pending, &mut batch);
            st.writing = true;
            st.closed
        };
        // One system call for everything gathered (more if the file
        // takes it in parts).
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > QUEUE_BYTES / 8 {
            // A spike's buffer is not kept.
            batch = Vec::new();
        }
        shared.lock().writing = false;
        shared.written.notify_all();
        if !closed {
            std::thread::sleep(GATHER);
        }
    }
}

/// A request's access-log line while the request runs: the fields it
/// arrived with (its head), and those that go last on the line (its
/// tail). Its buffer comes from a per-thread pool and goes back to it.
pub struct Line {
    buf: Vec<u8>,
    /// Where the tail starts in `buf` (`usize::MAX`: no tail yet).
    tail: usize,
}

thread_local! {
    /// Line buffers to reuse; a few per thread.
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Line buffers kept per thread, and the largest kept.
const POOL_LINES: usize = 64;
const POOL_LINE_BYTES: usize = 4096;

impl Line {
    fn new() -> Line {
        let buf = POOL
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| Vec::with_capacity(512));
        Line {
            buf,
            tail: usize::MAX,
        }
    }

    /// Writes the head's fields.
    pub fn head(&mut self) -> Json<'_> {
        Json(&mut self.buf)
    }

    /// What is written from now on goes last on the line, after the
    /// fields known only when the request ends.
    pub fn start_tail(&mut self) {
        self.tail = self.buf.len();
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.capacity() > POOL_LINE_BYTES {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_LINES {
                p.push(buf);
            }
        });
    }
}

/// The time as RFC 3339 UTC with milliseconds, its text up to the
/// seconds made once per second.
#[derive(Default)]
struct Clock {
    /// The second `text` stands for (0: none yet).
    secs: u64,
    /// `YYYY-MM-DDTHH:MM:SS`.
    text: [u8; 19],
}

impl Clock {
    fn write(&mut self, b: &mut Vec<u8>, now: SystemTime) {
        let since = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since.as_secs();
        if secs != self.secs || secs == 0 {
            self.secs = secs;
            let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let mut text = &mut self.text[..];
            let _ = write!(
                text,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
        }
        let ms = since.subsec_millis();
        b.extend_from_slice(&self.text);
        b.extend_from_slice(&[
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    }
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    let mut b = Vec::with_capacity(24);
    Clock::default().write(&mut b, SystemTime::now());
    String::from_utf8(b).expect("the clock writes ASCII")
}

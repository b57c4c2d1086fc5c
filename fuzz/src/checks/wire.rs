//! The fuzzed peer's side of an HTTP/2 connection with torii: an in-memory
//! pipe, frames to send, and a strict observer that re-reads everything
//! torii writes (and what the peer sent it) and records every rule torii
//! breaks.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use torii::http2::frame::{self, flag, kind, setting, Head};

use super::hpack_ref::RefDecoder;

/// What torii's socket is: bytes the peer sent, bytes torii wrote.
#[derive(Clone)]
pub struct Pipe(pub Rc<RefCell<PipeState>>);

pub struct PipeState {
    pub to_torii: VecDeque<u8>,
    /// The peer closed its side: torii reads end-of-file once it has
    /// read everything.
    pub eof: bool,
    pub from_torii: Vec<u8>,
    /// A peer that stops reading: torii's writes wait once this much is
    /// unread.
    pub out_cap: usize,
    /// The most one read hands torii (frames split across reads).
    pub max_read: usize,
    pub shutdown: bool,
}

impl Pipe {
    pub fn new(max_read: usize, out_cap: usize) -> Pipe {
        Pipe(Rc::new(RefCell::new(PipeState {
            to_torii: VecDeque::new(),
            eof: false,
            from_torii: Vec::new(),
            out_cap,
            max_read: max_read.max(1),
            shutdown: false,
        })))
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut p = self.0.borrow_mut();
        if p.to_torii.is_empty() {
            return if p.eof {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        }
        let n = buf.remaining().min(p.to_torii.len()).min(p.max_read);
        let bytes: Vec<u8> = p.to_torii.drain(..n).collect();
        buf.put_slice(&bytes);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = self.0.borrow_mut();
        if p.shutdown {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = p.out_cap.saturating_sub(p.from_torii.len());
        if room == 0 {
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        p.from_torii.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.borrow_mut().shutdown = true;
        Poll::Ready(Ok(()))
    }
}

/// Appends a frame.
pub fn put(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    frame::put_head(out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
}

/// An HPACK integer (RFC 7541 §5.1).
pub fn hpack_int(out: &mut Vec<u8>, first: u8, prefix: u32, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A literal field without indexing, new name (no table state needed).
pub fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name);
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// A rule torii broke, seen on the wire.
#[derive(Debug, Clone)]
pub struct Violation {
    pub kind: &'static str,
    /// Shown in the panic message (through `Debug`).
    #[allow(dead_code)]
    pub detail: String,
}

/// Which side torii plays.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Server,
    Client,
}

#[derive(Default)]
struct Seen {
    /// torii sent RST_STREAM on it.
    reset_by_torii: bool,
    /// ... with FRAME_SIZE_ERROR after the peer's PRIORITY of a bad length
    /// on it: finding 4c of issue 23 (kinds prefixed "4c-").
    reset_for_priority: bool,
    /// The peer sent a PRIORITY frame of a length other than 5 on it.
    bad_priority_from_peer: bool,
    /// torii sent END_STREAM on it.
    ended_by_torii: bool,
    /// torii sent a header block on it.
    headers_from_torii: bool,
    data_from_torii: u64,
    /// WINDOW_UPDATE increments the peer sent for it.
    credit_from_peer: u64,
}

/// Walks a byte stream as frames (the peer's, to know what it told torii).
#[derive(Default)]
struct Walker {
    buf: Vec<u8>,
    preface_left: usize,
    dead: bool,
}

impl Walker {
    fn push(&mut self, bytes: &[u8], mut on_frame: impl FnMut(Head, &[u8])) {
        if self.dead {
            return;
        }
        self.buf.extend_from_slice(bytes);
        if self.preface_left > 0 {
            let at = frame::PREFACE.len() - self.preface_left;
            let n = self.preface_left.min(self.buf.len());
            if self.buf[..n] != frame::PREFACE[at..at + n] {
                self.dead = true;
                return;
            }
            self.buf.drain(..n);
            self.preface_left -= n;
            if self.preface_left > 0 {
                return;
            }
        }
        let mut pos = 0;
        while self.buf.len() - pos >= frame::HEADER_LEN {
            let head = Head::parse(&self.buf[pos..]);
            let end = pos + frame::HEADER_LEN + head.len as usize;
            if end > self.buf.len() {
                break;
            }
            on_frame(head, &self.buf[pos + frame::HEADER_LEN..end]);
            pos = end;
        }
        self.buf.drain(..pos);
    }
}

/// With TORII_FUZZ_TRACE set, every frame either side sends goes to
/// stderr: how a reproducing input is explained.
fn trace(who: &str, h: &Head, p: &[u8]) {
    if std::env::var_os("TORII_FUZZ_TRACE").is_some() {
        let shown: String = p.iter().take(24).map(|b| format!("{b:02x}")).collect();
        eprintln!(
            "{who}: type {:#x} flags {:#04x} stream {} len {} {shown}",
            h.kind, h.flags, h.stream, h.len
        );
    }
}

/// The strict observer.
pub struct Watcher {
    role: Role,
    out: Walker,
    first_frame: bool,
    continuation: Option<(u32, Vec<u8>)>,
    decoder: RefDecoder,
    streams: HashMap<u32, Seen>,
    goaway_last: Option<u32>,
    conn_data: u64,
    pub violations: Vec<Violation>,
    /// Bytes torii wrote, in all.
    pub written: usize,
    // What the peer told torii.
    peer: Walker,
    peer_max_frame: u32,
    peer_initial_window: u64,
    peer_conn_credit: u64,
    /// Server: the highest stream the peer opened. Client: the highest
    /// torii opened.
    max_opened: u32,
    /// The payload of the last PING torii sent, for the peer to answer.
    pub last_ping: Option<[u8; 8]>,
    /// Streams torii opened (client) or answered (server), in order.
    pub torii_streams: Vec<u32>,
}

impl Watcher {
    pub fn new(role: Role) -> Watcher {
        Watcher {
            role,
            out: Walker {
                preface_left: if role == Role::Client {
                    frame::PREFACE.len()
                } else {
                    0
                },
                ..Walker::default()
            },
            first_frame: true,
            continuation: None,
            decoder: RefDecoder::new(4096),
            streams: HashMap::new(),
            goaway_last: None,
            conn_data: 0,
            violations: Vec::new(),
            written: 0,
            peer: Walker {
                preface_left: if role == Role::Server {
                    frame::PREFACE.len()
                } else {
                    0
                },
                ..Walker::default()
            },
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            peer_initial_window: u64::from(frame::DEFAULT_WINDOW),
            peer_conn_credit: u64::from(frame::DEFAULT_WINDOW),
            max_opened: 0,
            last_ping: None,
            torii_streams: Vec::new(),
        }
    }

    fn violation(&mut self, kind: &'static str, detail: String) {
        if self.violations.len() < 32 {
            self.violations.push(Violation { kind, detail });
        }
    }

    /// Records bytes the peer sends torii.
    pub fn peer_sent(&mut self, bytes: &[u8]) {
        // The walker is taken out so that frames are handled where they
        // lie (no copies: the harness's own heap counts in the bound).
        let mut walker = std::mem::take(&mut self.peer);
        walker.push(bytes, |h, p| self.peer_frame(h, p));
        self.peer = walker;
    }

    fn peer_frame(&mut self, h: Head, p: &[u8]) {
        let role = self.role;
        {
            trace("peer ", &h, p);
            match h.kind {
                kind::HEADERS if role == Role::Server && h.stream % 2 == 1 => {
                    self.max_opened = self.max_opened.max(h.stream);
                }
                kind::SETTINGS if !h.has(flag::ACK) => {
                    for s in p.chunks_exact(6) {
                        let id = u16::from_be_bytes([s[0], s[1]]);
                        let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
                        if id == setting::MAX_FRAME_SIZE {
                            self.peer_max_frame = self.peer_max_frame.max(v);
                        }
                        if id == setting::INITIAL_WINDOW_SIZE {
                            self.peer_initial_window = self.peer_initial_window.max(u64::from(v));
                        }
                    }
                }
                kind::PRIORITY if p.len() != 5 => {
                    self.streams
                        .entry(h.stream)
                        .or_default()
                        .bad_priority_from_peer = true;
                }
                kind::WINDOW_UPDATE if p.len() == 4 => {
                    let inc = u64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff);
                    if h.stream == 0 {
                        self.peer_conn_credit += inc;
                    } else {
                        self.streams.entry(h.stream).or_default().credit_from_peer += inc;
                    }
                }
                _ => {}
            }
        }
    }

    /// Re-reads bytes torii wrote.
    pub fn torii_wrote(&mut self, bytes: &[u8]) {
        self.written += bytes.len();
        if self.out.dead {
            return;
        }
        let mut walker = std::mem::take(&mut self.out);
        walker.push(bytes, |h, p| {
            trace("torii", &h, p);
            self.frame(h, p);
        });
        self.out = walker;
        if self.out.dead {
            self.violation("preface", "torii's client preface is wrong".into());
        }
    }

    /// Whether torii never opened (client) or the peer never opened
    /// (server) this stream: it is idle (RFC 9113 §5.1).
    fn idle(&self, id: u32) -> bool {
        id == 0 || id.is_multiple_of(2) || id > self.max_opened
    }

    fn frame(&mut self, h: Head, p: &[u8]) {
        let what = format!(
            "frame type {:#x} flags {:#x} stream {} length {}",
            h.kind, h.flags, h.stream, h.len
        );
        if h.len > self.peer_max_frame {
            self.violation("frame-too-large", what.clone());
        }
        if self.first_frame {
            self.first_frame = false;
            if h.kind != kind::SETTINGS || h.has(flag::ACK) {
                self.violation("settings-not-first", what.clone());
            }
        }
        if let Some((id, _)) = &self.continuation {
            if h.kind != kind::CONTINUATION || h.stream != *id {
                self.violation("interrupted-header-block", what.clone());
                self.continuation = None;
            }
        }
        match h.kind {
            kind::DATA | kind::HEADERS => self.stream_frame(h, p, &what),
            kind::CONTINUATION => match self.continuation.take() {
                Some((id, mut block)) => {
                    block.extend_from_slice(p);
                    if h.has(flag::END_HEADERS) {
                        self.header_block(id, &block, &what);
                    } else {
                        self.continuation = Some((id, block));
                    }
                }
                None => self.violation("stray-continuation", what),
            },
            kind::RST_STREAM => {
                if h.len != 4 || h.stream == 0 {
                    self.violation("bad-rst-stream", what.clone());
                }
                let code = (h.len == 4).then(|| u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
                let idle = self.idle(h.stream);
                let s = self.streams.entry(h.stream).or_default();
                s.reset_by_torii = true;
                s.reset_for_priority |= s.bad_priority_from_peer && code == Some(6);
                let priority = s.reset_for_priority;
                if idle {
                    let kind = if priority {
                        "4c-rst-on-idle-stream"
                    } else {
                        "rst-on-idle-stream"
                    };
                    self.violation(kind, what);
                }
            }
            kind::SETTINGS => {
                let ok = h.stream == 0
                    && if h.has(flag::ACK) {
                        h.len == 0
                    } else {
                        h.len.is_multiple_of(6)
                    };
                if !ok {
                    self.violation("bad-settings", what);
                }
            }
            kind::PING => {
                if h.len != 8 || h.stream != 0 {
                    self.violation("bad-ping", what);
                } else if !h.has(flag::ACK) {
                    self.last_ping = Some(p.try_into().expect("8 bytes"));
                }
            }
            kind::GOAWAY => {
                if h.len < 8 || h.stream != 0 {
                    self.violation("bad-goaway", what);
                    return;
                }
                let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                if matches!(self.goaway_last, Some(prev) if last > prev) {
                    self.violation("goaway-last-stream-increased", what);
                }
                self.goaway_last = Some(last);
            }
            kind::WINDOW_UPDATE => {
                let inc = (h.len == 4).then(|| u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
                if !matches!(inc, Some(1..=0x7fff_ffff)) {
                    self.violation("bad-window-update", what);
                }
            }
            kind::PUSH_PROMISE => self.violation("push-promise", what),
            kind::PRIORITY => {}
            _ => self.violation("unknown-frame-type", what),
        }
    }

    fn stream_frame(&mut self, h: Head, p: &[u8], what: &str) {
        let id = h.stream;
        if id == 0 {
            return self.violation("stream-frame-on-stream-0", what.into());
        }
        let new_client_stream = self.role == Role::Client
            && h.kind == kind::HEADERS
            && !self.streams.get(&id).is_some_and(|s| s.headers_from_torii);
        if new_client_stream {
            if id.is_multiple_of(2) || id <= self.max_opened {
                self.violation("stream-id-not-ascending", what.into());
            }
            self.max_opened = self.max_opened.max(id);
            self.torii_streams.push(id);
        } else if self.idle(id) {
            self.violation("frame-on-idle-stream", what.into());
        }
        if self.role == Role::Server
            && h.kind == kind::HEADERS
            && matches!(self.goaway_last, Some(last) if id > last)
            && !self.streams.get(&id).is_some_and(|s| s.headers_from_torii)
        {
            self.violation("response-past-goaway", what.into());
        }
        // Whatever is wrong with it, a header block still goes through the
        // decoder below: its table must stay in step with torii's encoder.
        let s = self.streams.entry(id).or_default();
        let after_reset = s.reset_by_torii.then_some(s.reset_for_priority);
        let after_end = s.ended_by_torii;
        if h.has(flag::END_STREAM) {
            s.ended_by_torii = true;
        }
        if let Some(priority) = after_reset {
            let v = format!("{what}, after torii's own RST_STREAM on the stream");
            let kind = if priority {
                "4c-frame-after-own-reset"
            } else {
                "frame-after-own-reset"
            };
            self.violation(kind, v);
        } else if after_end {
            let v = format!("{what}, after torii's END_STREAM on the stream");
            self.violation("frame-after-end-stream", v);
        }
        let s = self.streams.entry(id).or_default();
        if h.kind == kind::DATA {
            if !s.headers_from_torii {
                let v = format!("{what}, before any HEADERS");
                return self.violation("data-before-headers", v);
            }
            if frame::unpad(&h, p).is_none() {
                return self.violation("bad-padding", what.into());
            }
            s.data_from_torii += u64::from(h.len);
            self.conn_data += u64::from(h.len);
            let allowed = self.peer_initial_window + s.credit_from_peer;
            if s.data_from_torii > allowed {
                let v = format!(
                    "{what}: {} bytes on the stream, the peer allowed at most {allowed}",
                    s.data_from_torii
                );
                return self.violation("stream-window-exceeded", v);
            }
            if self.conn_data > self.peer_conn_credit {
                let v = format!(
                    "{what}: {} bytes on the connection, the peer allowed {}",
                    self.conn_data, self.peer_conn_credit
                );
                return self.violation("connection-window-exceeded", v);
            }
            return;
        }
        // HEADERS
        let first = !s.headers_from_torii;
        s.headers_from_torii = true;
        if first && self.role == Role::Server {
            self.torii_streams.push(id);
        }
        let Some((from, to)) = frame::unpad(&h, p) else {
            return self.violation("bad-padding", what.into());
        };
        let mut block = &p[from..to];
        if h.has(flag::PRIORITY) {
            if block.len() < 5 {
                return self.violation("bad-headers", what.into());
            }
            block = &block[5..];
        }
        if h.has(flag::END_HEADERS) {
            let block = block.to_vec();
            self.header_block(id, &block, what);
        } else {
            self.continuation = Some((id, block.to_vec()));
        }
    }

    fn header_block(&mut self, id: u32, block: &[u8], what: &str) {
        match self.decoder.decode(block) {
            Err(e) => {
                let v = format!("{what}: torii's header block does not decode: {e}");
                self.violation("bad-hpack-output", v);
            }
            Ok(fields) => {
                let names: Vec<&[u8]> = fields.iter().map(|f| &f.name[..]).collect();
                let pseudo_after_regular = names
                    .iter()
                    .skip_while(|n| n.starts_with(b":"))
                    .any(|n| n.starts_with(b":"));
                if pseudo_after_regular {
                    let v = format!("{what} (stream {id}): a pseudo-header after a regular one");
                    self.violation("bad-header-block", v);
                }
                for f in &fields {
                    let bad = !super::hpack_ref::name_is_valid(&f.name)
                        || f.value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n')
                        || [
                            &b"connection"[..],
                            b"transfer-encoding",
                            b"keep-alive",
                            b"upgrade",
                        ]
                        .contains(&&f.name[..]);
                    if bad {
                        let v = format!(
                            "{what} (stream {id}): field {:?}: {:?}",
                            String::from_utf8_lossy(&f.name),
                            String::from_utf8_lossy(&f.value)
                        );
                        self.violation("bad-header-field", v);
                    }
                }
            }
        }
    }

    /// The violations not allowed by `allow` (kinds, comma-separated; the
    /// fuzz runs set TORII_FUZZ_ALLOW to go on past known bugs).
    pub fn unexpected(&self) -> Vec<&Violation> {
        let allow = std::env::var("TORII_FUZZ_ALLOW").unwrap_or_default();
        self.violations
            .iter()
            .filter(|v| !allow.split(',').any(|a| a == v.kind))
            .collect()
    }
}

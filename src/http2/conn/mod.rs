//! One HTTP/2 connection: frames in, frames out, streams, flow control,
//! settings, keepalive, and the defences RFC 9113 §10.5 and the known
//! attacks call for.
//!
//! Two halves. [`Connection`] belongs to the task that drives the socket:
//! it reads and handles frames and writes what is queued. [`Inner`],
//! behind one mutex shared with the stream handles, holds everything both
//! touch: the streams, the flow-control windows, the HPACK encoder and the
//! bytes waiting to be written. A handle that sends encodes its frames
//! straight into that buffer; the connection writes them out in one go.
//!
//! When the connection's task polls the streams itself (torii's
//! single-threaded mode) the lock is never contended and handles need not
//! wake the task: it writes after polling them anyway (`inline_poll`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request};
use http_body::Frame;
use slab::Slab;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::chunk::Chunk;
use super::fields::{self, RequestHead, ResponseHead, Trailers};
use super::frame::{self, flag, kind, setting, Head};
use super::hpack::{BlockInfo, Decoder, Encoder, Field};
use super::{Error, Reason};

/// Past this many bytes waiting to be written, streams stop adding DATA
/// and the connection stops reading (a peer that does not read cannot make
/// torii buffer without bound: SETTINGS/PING floods, zero windows).
const WRITE_HIGH: usize = 64 * 1024;
/// The most a peer may send of one header block (HEADERS + CONTINUATION),
/// and how many frames it may use for it.
const MAX_BLOCK: usize = 256 * 1024;
const MAX_CONTINUATIONS: u32 = 256;
/// Streams a client may reset before their response, or make torii reset
/// for broken rules: a burst, refilled at a rate — far more than real
/// cancellations (deadlines, a user leaving), far less than a rapid-reset
/// attack sends. Past it, GOAWAY ENHANCE_YOUR_CALM.
const RESET_BURST: u32 = 1000;
const RESET_RATE: u32 = 1000;
/// Empty DATA frames (without END_STREAM) a peer may send; real data
/// refills it.
const EMPTY_DATA_BUDGET: u32 = 100;
/// A request still arriving after torii answered it in full (an early
/// answer: no route, a refusal, an upstream that did not wait for the
/// body) is read and dropped up to this many bytes before the stream is
/// reset with NO_ERROR. Resetting at once is allowed (RFC 9113 §8.1), but
/// a client still sending its body may then lose the answer (curl 7.88
/// does, about once in 20): a small body already in flight is read instead,
/// as common servers do.
const LINGER_BYTES: u32 = 64 * 1024;
/// At most this many such streams per connection; past it, and while the
/// connection drains, they are reset at once.
const MAX_LINGERING: u16 = 8;
/// Recently closed streams remembered per connection, to tell a frame
/// torii must ignore (it reset the stream; the peer's frames may still be
/// in flight, RFC 9113 §5.1) from one the peer must not send (it had ended
/// the stream itself).
const RECENT_CLOSED: usize = 8;

/// A token bucket for resets.
struct Bucket {
    tokens: u32,
    refilled: Instant,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            tokens: RESET_BURST,
            refilled: Instant::now(),
        }
    }

    /// Takes a token; false when there is none.
    fn take(&mut self) -> bool {
        if self.tokens == 0 {
            let now = Instant::now();
            let earned =
                now.duration_since(self.refilled).as_millis() as u64 * u64::from(RESET_RATE) / 1000;
            if earned > 0 {
                self.tokens = earned.min(u64::from(RESET_BURST)) as u32;
                self.refilled = now;
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        if self.tokens == RESET_BURST - 1 {
            // Refills count from the first token taken out of a full bucket.
            self.refilled = Instant::now();
        }
        true
    }
}
/// Reads handled in one poll before the task yields to others.
const READS_PER_POLL: usize = 16;
/// The highest stream id (RFC 9113 §5.1.1).
const MAX_STREAM_ID: u32 = (1 << 31) - 1;
/// How long a closing connection may take to write its last frames.
const LINGER: Duration = Duration::from_secs(1);
/// Read size (a thread-local buffer; see `SCRATCH`).
const READ_SIZE: usize = 32 * 1024;

/// Settings of a connection.
#[derive(Clone, Debug)]
pub struct Config {
    /// SETTINGS_MAX_CONCURRENT_STREAMS torii announces.
    pub max_concurrent_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE torii announces and enforces.
    pub max_header_list_size: u32,
    /// Receive windows torii gives the peer, per stream and in all.
    pub stream_window: u32,
    pub connection_window: u32,
    /// PING the peer this often; close when one goes unanswered this long.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// PING also while no stream is open (servers such as gRPC's refuse
    /// that: GOAWAY "too_many_pings").
    pub keepalive_while_idle: bool,
    /// The peer must send its preface (and SETTINGS) within this.
    pub handshake_timeout: Duration,
}

thread_local! {
    /// The buffer a connection reads into. One per thread, not one per
    /// connection: an idle connection holds no read buffer, and only an
    /// incomplete frame is kept (copied) between reads.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_SIZE]);
}

/// Stream ids are their own hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u32 stream ids are hashed")
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap = HashMap<u32, usize, BuildHasherDefault<IdHasher>>;

/// A stream's body chunks waiting to be sent, in order. Nearly always
/// one at a time (a unary message, or a streamed one the window lets
/// through): the first is held inline, and only a second one allocates.
#[derive(Default)]
struct Chunks {
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
}

impl Chunks {
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn front_mut(&mut self) -> Option<&mut Bytes> {
        self.first.as_mut()
    }

    fn push_back(&mut self, chunk: Bytes) {
        if self.first.is_none() {
            self.first = Some(chunk);
        } else {
            self.rest.push_back(chunk);
        }
    }

    fn pop_front(&mut self) -> Option<Bytes> {
        let front = self.first.take();
        self.first = self.rest.pop_front();
        front
    }

    fn clear(&mut self) {
        self.first = None;
        self.rest.clear();
    }
}

struct Stream {
    id: u32,
    /// Live handles (body, responder); at 0 the stream is forgotten.
    handles: u8,
    /// Counted in `Inner::active` (open or half-closed).
    counted: bool,
    // Receiving.
    recv_buf: BytesMut,
    /// Data was handed to the application before: `recv_buf` is split
    /// from then on (its spare room is reused), instead of handed over
    /// whole.
    recv_split: bool,
    recv_trailers: Option<HeaderMap>,
    recv_eos: bool,
    /// The head itself ended the stream (END_STREAM on HEADERS): the
    /// body is known empty from the start.
    head_ended: bool,
    /// What the peer may still send on this stream.
    recv_window: i64,
    /// Taken by the application, not yet given back with WINDOW_UPDATE.
    recv_released: u32,
    /// What is left of the body the content-length announced.
    recv_expect: Option<u64>,
    recv_waker: Option<Waker>,
    // Sending.
    send_window: i64,
    send_pending: Chunks,
    /// END_STREAM goes with the last pending byte (or trailers).
    send_eos: bool,
    send_trailers: Option<HeaderMap>,
    /// END_STREAM written (or the stream reset).
    send_done: bool,
    send_head_done: bool,
    send_waker: Option<Waker>,
    /// In `Inner::blocked` (queued once, however often it is flushed).
    blocked: bool,
    reset: Option<Error>,
    /// Client side: the response head, once it arrived (taken by the
    /// response future).
    response: Option<http::response::Parts>,
    head_received: bool,
    /// Client side: the request head, until the connection's task encodes
    /// it. A stream reset before then never reaches the wire at all (as a
    /// client that cancels at once would otherwise make torii look like a
    /// rapid-reset attacker to the upstream).
    pending_head: Option<Box<http::request::Parts>>,
    /// Client side: the request head once written, kept until the response
    /// head arrives: a stream the upstream refuses unprocessed (RFC 9113
    /// §8.7) hands it back to be sent again.
    sent_head: Option<Box<http::request::Parts>>,
    /// Client side: a HEAD request (its response has no body, whatever
    /// its content-length says).
    head_request: bool,
    /// Server side: every handle is gone but the stream goes on: its
    /// answer was handed over whole and is still leaving (the peer's
    /// window), or the request is still arriving (see `LINGER_BYTES`).
    orphan: bool,
    /// An orphan whose answer is out, reading (and dropping) the rest of
    /// its request; counted in `Inner::lingering`.
    lingering: bool,
    /// What a lingering stream may still read.
    linger_left: u32,
}

impl Stream {
    fn new(id: u32, recv_window: u32, send_window: u32) -> Stream {
        Stream {
            id,
            handles: 0,
            counted: true,
            recv_buf: BytesMut::new(),
            recv_split: false,
            recv_trailers: None,
            recv_eos: false,
            head_ended: false,
            recv_window: recv_window.into(),
            recv_released: 0,
            recv_expect: None,
            recv_waker: None,
            send_window: send_window.into(),
            send_pending: Chunks::default(),
            send_eos: false,
            send_trailers: None,
            send_done: false,
            send_head_done: false,
            send_waker: None,
            blocked: false,
            reset: None,
            response: None,
            head_received: false,
            pending_head: None,
            sent_head: None,
            head_request: false,
            orphan: false,
            lingering: false,
            linger_left: LINGER_BYTES,
        }
    }

    fn is_closed(&self) -> bool {
        self.reset.is_some() || (self.recv_eos && self.send_done)
    }

    /// Client side: the stream failed and the upstream certainly did not
    /// process it — refused (REFUSED_STREAM), above a GOAWAY's last stream
    /// id, or never written at all (RFC 9113 §8.7) — so it may be sent
    /// again, whatever its method.
    fn unprocessed(&self, connection_error: bool) -> bool {
        if self.head_received {
            return false;
        }
        match &self.reset {
            Some(Error::Reset(Reason::REFUSED_STREAM)) => true,
            // Set only by a received GOAWAY, on streams above its last id.
            Some(Error::GoAway { remote: true, .. }) => true,
            Some(_) => false,
            None => connection_error && self.pending_head.is_some(),
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
        if let Some(w) = self.send_waker.take() {
            w.wake();
        }
    }
}

/// Gives an empty write buffer (an idle connection holds none) the room
/// recent writes took, at least 2 KiB: a burst like those then fills it
/// without growing it step by step, each step copying all written so far
/// (callgrind, unary 1 KiB: 2,300 instructions per request of such copies).
fn ready(wbuf: &mut Vec<u8>, hint: usize) {
    if wbuf.capacity() == 0 {
        wbuf.reserve(hint.max(2048));
    }
}

/// What the connection and its stream handles share.
pub(crate) struct Inner {
    streams: Slab<Stream>,
    ids: IdMap,
    /// Frames waiting to be written.
    wbuf: Vec<u8>,
    /// The room an empty `wbuf` is given: the last write's size, or three
    /// quarters of the hint before when that was larger (bursts vary).
    wbuf_hint: usize,
    /// The peer's connection-level window for what torii sends.
    send_window: i64,
    /// What the peer may still send on the connection.
    recv_window: i64,
    recv_released: u32,
    peer_initial_window: u32,
    peer_max_frame: usize,
    our_stream_window: u32,
    our_connection_window: u32,
    encoder: OnDemand<Encoder>,
    /// Streams with DATA waiting for window or for room in `wbuf`.
    blocked: VecDeque<usize>,
    conn_waker: Option<Waker>,
    /// The connection's task is polling (and will write afterwards).
    inline_poll: bool,
    /// The connection is over; every stream operation fails with this.
    error: Option<Error>,
    /// Open streams (for the concurrency limit and for ending a drain).
    active: u32,
    role: Role,
    /// Client side: the next stream id, the server's stream limit, tasks
    /// waiting for room under it, and whether the server sent GOAWAY.
    next_stream_id: u32,
    peer_max_concurrent: u32,
    open_waiters: Vec<Waker>,
    /// Client side: streams (key, id) whose head is waiting to be encoded.
    heads: VecDeque<(usize, u32)>,
    goaway_received: bool,
    /// Client side: every client handle is gone.
    client_gone: bool,
    /// Lingering streams (see `Stream::lingering`).
    lingering: u16,
    /// GOAWAY sent: streams are not kept lingering.
    draining: bool,
    /// Streams the peer made torii reset (broke a rule on them) since the
    /// connection last counted them against its reset budget.
    peer_resets: u32,
    recent: RecentClosed,
}

/// How a stream that is gone from `Inner::streams` ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ClosedBy {
    /// torii reset it: the peer may not know yet, its frames are ignored.
    Us,
    /// The peer reset it.
    PeerReset,
    /// Both sides ended it (END_STREAM).
    Ended,
}

/// The last few streams that closed: a fixed ring, no allocation.
#[derive(Default)]
struct RecentClosed {
    ids: [u32; RECENT_CLOSED],
    how: [Option<ClosedBy>; RECENT_CLOSED],
    next: u8,
}

impl RecentClosed {
    fn record(&mut self, id: u32, how: ClosedBy) {
        let i = usize::from(self.next) % RECENT_CLOSED;
        self.ids[i] = id;
        self.how[i] = Some(how);
        self.next = ((i + 1) % RECENT_CLOSED) as u8;
    }

    fn get(&self, id: u32) -> Option<ClosedBy> {
        (0..RECENT_CLOSED).find_map(|i| self.how[i].filter(|_| self.ids[i] == id))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Role {
    Server,
    Client,
}

/// Our SETTINGS_HEADER_TABLE_SIZE (the default; never announced).
const DECODER_TABLE_SIZE: usize = 4096;

/// An HPACK encoder or decoder, allocated when the connection's first
/// header block needs it: ~120 bytes each that an idle connection (a
/// sidecar holds thousands) would otherwise carry from its first byte.
struct OnDemand<T>(Option<Box<T>>);

impl<T> Default for OnDemand<T> {
    fn default() -> Self {
        OnDemand(None)
    }
}

impl<T> OnDemand<T> {
    fn get(&mut self, make: impl FnOnce() -> T) -> &mut T {
        self.0.get_or_insert_with(|| Box::new(make()))
    }
}

fn lock(shared: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    fn wake_conn(&self) {
        if !self.inline_poll {
            if let Some(w) = &self.conn_waker {
                w.wake_by_ref();
            }
        }
    }

    fn wbuf(&mut self) -> &mut Vec<u8> {
        ready(&mut self.wbuf, self.wbuf_hint);
        &mut self.wbuf
    }

    /// Gives `n` received bytes back to a stream's window (WINDOW_UPDATE
    /// once half of it is back, unless the peer is done sending).
    fn release_stream(&mut self, key: usize, n: usize) {
        let half = self.our_stream_window / 2;
        let s = &mut self.streams[key];
        if s.recv_eos || s.reset.is_some() || n == 0 {
            return;
        }
        s.recv_released += n as u32;
        if s.recv_released >= half {
            let inc = std::mem::take(&mut s.recv_released);
            s.recv_window += i64::from(inc);
            let id = s.id;
            frame::put_window_update(self.wbuf(), id, inc);
            self.wake_conn();
        }
    }

    /// Gives `n` received bytes back to the connection window.
    fn release_connection(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.recv_released += n as u32;
        if self.recv_released >= self.our_connection_window / 2 {
            let inc = std::mem::take(&mut self.recv_released);
            self.recv_window += i64::from(inc);
            frame::put_window_update(self.wbuf(), 0, inc);
            self.wake_conn();
        }
    }

    /// Resets a stream because the peer broke a rule on it. On the server
    /// side each such reset is counted against the connection's reset
    /// budget, like a client's own RST_STREAM: otherwise a client could
    /// make torii open and cancel upstream streams without limit by
    /// breaking rules instead of resetting ("MadeYouReset", CVE-2025-8671).
    fn reset_stream(&mut self, key: usize, reason: Reason) {
        if self.role == Role::Server && !self.streams[key].is_closed() {
            self.peer_resets += 1;
        }
        self.reset_with(key, reason, Error::LocalReset(reason));
    }

    /// A frame the peer may not send on a stream it reset itself: a stream
    /// error STREAM_CLOSED (RFC 9113 §5.1), sent without touching the
    /// stream. Frames on streams torii reset are ignored (the peer may not
    /// have known yet).
    fn after_peer_reset(&mut self, key: usize) {
        let s = &self.streams[key];
        if let Some(Error::Reset(_)) = s.reset {
            let id = s.id;
            self.reset_untracked(id, Reason::STREAM_CLOSED);
        }
    }

    /// A stream error on a stream torii keeps no state for (closed, or
    /// refused before it opened), because the peer broke a rule on it:
    /// counted like `reset_stream`.
    fn reset_untracked(&mut self, id: u32, reason: Reason) {
        frame::put_rst_stream(self.wbuf(), id, reason);
        if self.role == Role::Server {
            self.peer_resets += 1;
        }
        self.wake_conn();
    }

    /// Resets a stream because torii's side gave up on it (the exchange was
    /// cancelled, or the body it sent broke off).
    fn cancel_stream(&mut self, key: usize, reason: Reason) {
        self.reset_with(key, reason, Error::Cancelled(reason));
    }

    fn reset_with(&mut self, key: usize, reason: Reason, error: Error) {
        let s = &mut self.streams[key];
        if s.is_closed() {
            return;
        }
        let id = s.id;
        s.reset = Some(error);
        s.send_pending.clear();
        s.send_trailers = None;
        s.send_done = true;
        s.wake();
        // A stream whose head was never written needs no RST_STREAM.
        if s.pending_head.take().is_none() {
            frame::put_rst_stream(self.wbuf(), id, reason);
        }
        self.after_change(key);
        self.wake_conn();
    }

    /// Accounts for a stream that may have closed, and forgets it when no
    /// handle is left.
    fn after_change(&mut self, key: usize) {
        let s = &mut self.streams[key];
        if s.orphan && !s.lingering && s.send_done && !s.is_closed() {
            // Answered in full while the request is still arriving: read
            // the rest of it (bounded) rather than reset at once.
            if self.draining || self.lingering >= MAX_LINGERING {
                return self.cancel_stream(key, Reason::NO_ERROR);
            }
            s.lingering = true;
            self.lingering += 1;
        }
        let s = &mut self.streams[key];
        if s.counted && s.is_closed() {
            s.counted = false;
            self.active -= 1;
            if let Some(w) = self.open_waiters.pop() {
                w.wake();
            }
            if !self.heads.is_empty() {
                self.wake_conn();
            }
        }
        let s = &self.streams[key];
        if s.handles == 0 && !s.counted {
            let s = self.streams.remove(key);
            self.ids.remove(&s.id);
            if s.lingering {
                self.lingering -= 1;
            }
            let how = match &s.reset {
                None => ClosedBy::Ended,
                Some(Error::Reset(_)) => ClosedBy::PeerReset,
                Some(_) => ClosedBy::Us,
            };
            self.recent.record(s.id, how);
            // Whatever the application never read goes back to the
            // connection window.
            let unread = s.recv_buf.len();
            self.release_connection(unread);
        }
    }

    /// Moves a stream's pending DATA into the write buffer as far as the
    /// windows and the buffer allow, then its trailers.
    fn flush_stream(&mut self, key: usize) {
        let max_frame = self.peer_max_frame;
        let Some(s) = self.streams.get_mut(key) else {
            return;
        };
        if s.reset.is_some() || !s.send_head_done {
            return;
        }
        let id = s.id;
        let mut wrote = false;
        while !s.send_pending.is_empty() {
            let queued = s.send_pending.len();
            let front = s.send_pending.front_mut().expect("not empty");
            let room = s.send_window.min(self.send_window).min(max_frame as i64);
            if room <= 0 || self.wbuf.len() >= WRITE_HIGH {
                if !s.blocked {
                    s.blocked = true;
                    self.blocked.push_back(key);
                }
                break;
            }
            let n = (room as usize).min(front.len());
            let last = n == front.len() && queued == 1;
            let eos = last && s.send_eos && s.send_trailers.is_none();
            ready(&mut self.wbuf, self.wbuf_hint);
            frame::put_data(&mut self.wbuf, id, &front[..n], eos);
            wrote = true;
            s.send_window -= n as i64;
            self.send_window -= n as i64;
            if n == front.len() {
                s.send_pending.pop_front();
            } else {
                bytes::Buf::advance(front, n);
            }
            if eos {
                s.send_done = true;
            }
        }
        if s.send_pending.is_empty() {
            if let Some(trailers) = s.send_trailers.take() {
                let start = frame::reserve_head(&mut self.wbuf);
                fields::encode_trailers(self.encoder.get(Encoder::new), &trailers, &mut self.wbuf);
                super::maps::give(trailers);
                frame::finish_headers(&mut self.wbuf, start, id, true, max_frame);
                s.send_done = true;
                wrote = true;
            } else if s.send_eos && !s.send_done {
                // The body ended after its last DATA went out.
                ready(&mut self.wbuf, self.wbuf_hint);
                frame::put_data(&mut self.wbuf, id, &[], true);
                s.send_done = true;
                wrote = true;
            }
            if let Some(w) = s.send_waker.take() {
                w.wake();
            }
        }
        if wrote {
            self.after_change(key);
            self.wake_conn();
        }
    }

    /// Client side: encodes the heads of new streams (in the order they
    /// were opened, so stream ids rise on the wire), then their bodies.
    fn write_heads(&mut self) {
        while let Some(&(key, id)) = self.heads.front() {
            let max_frame = self.peer_max_frame;
            // A key freed (the stream reset before its head went out) may
            // have been reused by a later stream: the id tells.
            let Some(s) = self.streams.get_mut(key).filter(|s| s.id == id) else {
                self.heads.pop_front();
                continue;
            };
            if s.pending_head.is_some() && self.active >= self.peer_max_concurrent {
                // The upstream's stream limit: the rest wait for a slot.
                return;
            }
            self.heads.pop_front();
            let Some(head) = s.pending_head.take() else {
                continue;
            };
            let end_stream = s.send_done;
            s.send_head_done = true;
            s.counted = true;
            self.active += 1;
            ready(&mut self.wbuf, self.wbuf_hint);
            let start = frame::reserve_head(&mut self.wbuf);
            fields::encode_request(self.encoder.get(Encoder::new), &head, &mut self.wbuf);
            frame::finish_headers(&mut self.wbuf, start, id, end_stream, max_frame);
            s.sent_head = Some(head);
            self.flush_stream(key);
        }
    }

    /// Gives blocked streams another go (a window opened, or the write
    /// buffer drained).
    fn flush_blocked(&mut self) {
        for _ in 0..self.blocked.len() {
            if self.send_window <= 0 || self.wbuf.len() >= WRITE_HIGH {
                return;
            }
            let Some(key) = self.blocked.pop_front() else {
                return;
            };
            if let Some(s) = self.streams.get_mut(key) {
                s.blocked = false;
                self.flush_stream(key);
            }
        }
    }

    /// Ends the connection: every stream fails with `error`.
    fn fail_all(&mut self, error: Error) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        for (_, s) in self.streams.iter_mut() {
            s.wake();
        }
        for w in self.open_waiters.drain(..) {
            w.wake();
        }
    }
}

/// A handle on one stream; the stream lives while a handle does.
pub(crate) struct StreamRef {
    shared: Arc<Mutex<Inner>>,
    key: usize,
}

impl StreamRef {
    fn new(shared: &Arc<Mutex<Inner>>, inner: &mut Inner, key: usize) -> StreamRef {
        inner.streams[key].handles += 1;
        StreamRef {
            shared: shared.clone(),
            key,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared)
    }

    /// Why the stream cannot go on, if it cannot.
    fn error_of(inner: &Inner, s: &Stream) -> Option<Error> {
        s.reset.clone().or_else(|| {
            if s.is_closed() {
                None
            } else {
                inner.error.clone()
            }
        })
    }
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        let failed = inner.error.is_some();
        let role = inner.role;
        let s = &mut inner.streams[self.key];
        s.handles -= 1;
        if s.handles == 0 && !s.is_closed() {
            if failed {
                s.reset = Some(Error::Closed);
            } else if role == Role::Server && s.send_eos {
                // The answer was handed over whole: it leaves as the
                // client's windows allow (resetting now would cut it), and
                // what still arrives of the request is read and dropped
                // (see `after_change`).
                s.orphan = true;
                let unread = std::mem::take(&mut s.recv_buf).len();
                inner.release_connection(unread);
            } else {
                // Abandoned: tell the peer. A request sent whole whose
                // response is no longer wanted ends with NO_ERROR.
                let reason = if s.send_done {
                    Reason::NO_ERROR
                } else {
                    Reason::CANCEL
                };
                // Forgets the stream too.
                return inner.cancel_stream(self.key, reason);
            }
        }
        inner.after_change(self.key);
    }
}

/// A body arriving on a stream. Bytes taken from it go back to the peer's
/// windows, so the peer sends no faster than torii passes them on.
pub struct RecvBody {
    stream: StreamRef,
}

impl RecvBody {
    pub(crate) fn new(stream: StreamRef) -> RecvBody {
        RecvBody { stream }
    }

    /// True once nothing is left to read. A body that the peer ended with
    /// a frame of its own (an empty DATA with END_STREAM after the head)
    /// says so only once data was read from it: before, the next hop gets
    /// the same frames (a head without END_STREAM, then the empty DATA)
    /// rather than one HEADERS with END_STREAM. Some servers treat the two
    /// differently: grpc-go 1.33 never answers a streaming call whose
    /// HEADERS carry END_STREAM.
    pub fn is_end_stream(&self) -> bool {
        let inner = self.stream.lock();
        let s = &inner.streams[self.stream.key];
        s.recv_eos
            && s.recv_buf.is_empty()
            && s.recv_trailers.is_none()
            && (s.head_ended || s.recv_split)
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let mut guard = self.stream.lock();
        let inner = &mut *guard;
        let key = self.stream.key;
        let s = &mut inner.streams[key];
        if !s.recv_buf.is_empty() {
            // The first data goes whole: a buffer filled by one frame is
            // exactly its size, and freezing it allocates nothing, where a
            // split would allocate the shared header a split needs. That is
            // a unary body, whole. Later data is split off, so a stream of
            // messages reuses one buffer.
            let data = if s.recv_split {
                s.recv_buf.split().freeze()
            } else {
                s.recv_split = true;
                std::mem::take(&mut s.recv_buf).freeze()
            };
            let n = data.len();
            inner.release_stream(key, n);
            inner.release_connection(n);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(t) = s.recv_trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        if s.recv_eos {
            return Poll::Ready(None);
        }
        if let Some(e) = StreamRef::error_of(inner, &inner.streams[key]) {
            return Poll::Ready(Some(Err(e)));
        }
        let s = &mut inner.streams[key];
        match &s.recv_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.recv_waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The sending half of a stream, after its head was sent.
pub struct SendBody {
    stream: StreamRef,
}

impl SendBody {
    pub(crate) fn new(stream: StreamRef) -> SendBody {
        SendBody { stream }
    }

    /// Ready when everything handed over so far is on its way (within the
    /// peer's windows): the moment to take the next frame from a body.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut inner = self.stream.lock();
        let key = self.stream.key;
        if let Some(e) = StreamRef::error_of(&inner, &inner.streams[key]) {
            return Poll::Ready(Err(e));
        }
        let s = &mut inner.streams[key];
        // A body may go ahead of its head (a client stream's head is
        // encoded by the connection's task): the window has refused nothing.
        if s.send_pending.is_empty() || (!s.send_head_done && s.send_pending.len() < 2) {
            return Poll::Ready(Ok(()));
        }
        register(&mut s.send_waker, cx);
        Poll::Pending
    }

    /// Ready with the peer's reason once it resets the stream (or the
    /// connection ends).
    pub fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Error> {
        poll_reset(&self.stream, cx)
    }

    pub fn send_data(&mut self, data: Bytes, end_stream: bool) -> Result<(), Error> {
        self.queue(|s| {
            s.send_eos = end_stream;
            if data.is_empty() {
                return end_stream;
            }
            s.send_pending.push_back(data);
            true
        })
    }

    pub fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), Error> {
        self.queue(|s| {
            s.send_eos = true;
            s.send_trailers = Some(trailers);
            true
        })
    }

    /// Hands the stream what `add` queues (unless it is done sending, or
    /// failed), then moves it toward the wire if `add` says there is
    /// anything to move.
    fn queue(&mut self, add: impl FnOnce(&mut Stream) -> bool) -> Result<(), Error> {
        let mut inner = self.stream.lock();
        let key = self.stream.key;
        if let Some(e) = StreamRef::error_of(&inner, &inner.streams[key]) {
            return Err(e);
        }
        let s = &mut inner.streams[key];
        if s.send_done || s.send_eos {
            return Ok(());
        }
        if add(s) {
            if s.blocked {
                // Queued behind a window or a full write buffer: the
                // connection's task flushes blocked streams when it writes,
                // and must know there is something new.
                inner.wake_conn();
            } else {
                inner.flush_stream(key);
            }
        }
        Ok(())
    }

    pub fn send_reset(&mut self, reason: Reason) {
        send_reset(&self.stream, reason)
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

pub(crate) fn poll_reset(stream: &StreamRef, cx: &mut Context<'_>) -> Poll<Error> {
    let mut inner = stream.lock();
    let key = stream.key;
    if let Some(e) = StreamRef::error_of(&inner, &inner.streams[key]) {
        return Poll::Ready(e);
    }
    register(&mut inner.streams[key].send_waker, cx);
    Poll::Pending
}

pub(crate) fn send_reset(stream: &StreamRef, reason: Reason) {
    let mut inner = stream.lock();
    if inner.error.is_none() {
        inner.cancel_stream(stream.key, reason);
    }
}

/// Sends a response (or request) head on a stream.
pub(crate) fn send_head(
    stream: &StreamRef,
    encode: impl FnOnce(&mut Encoder, &mut Vec<u8>),
    end_stream: bool,
) -> Result<(), Error> {
    let mut guard = stream.lock();
    let inner = &mut *guard;
    let key = stream.key;
    if let Some(e) = StreamRef::error_of(inner, &inner.streams[key]) {
        return Err(e);
    }
    let max_frame = inner.peer_max_frame;
    let s = &mut inner.streams[key];
    let id = s.id;
    s.send_head_done = true;
    if end_stream {
        s.send_eos = true;
        s.send_done = true;
    }
    ready(&mut inner.wbuf, inner.wbuf_hint);
    let start = frame::reserve_head(&mut inner.wbuf);
    encode(inner.encoder.get(Encoder::new), &mut inner.wbuf);
    frame::finish_headers(&mut inner.wbuf, start, id, end_stream, max_frame);
    if end_stream {
        inner.after_change(key);
    }
    inner.wake_conn();
    Ok(())
}

/// Client side: every client handle is gone; the connection ends when its
/// streams have.
pub(crate) fn client_gone(shared: &Mutex<Inner>) {
    let mut inner = lock(shared);
    inner.client_gone = true;
    inner.inline_poll = false;
    inner.wake_conn();
}

pub(crate) fn client_is_closed(shared: &Mutex<Inner>) -> bool {
    let inner = lock(shared);
    inner.error.is_some() || inner.goaway_received || inner.next_stream_id > MAX_STREAM_ID
}

pub(crate) fn client_poll_ready(
    shared: &Mutex<Inner>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Error>> {
    let mut inner = lock(shared);
    if let Some(e) = &inner.error {
        return Poll::Ready(Err(e.clone()));
    }
    if inner.goaway_received || inner.next_stream_id > MAX_STREAM_ID {
        return Poll::Ready(Err(Error::GoAway {
            reason: Reason::NO_ERROR,
            remote: true,
        }));
    }
    if (inner.active as usize + inner.heads.len()) < inner.peer_max_concurrent as usize {
        return Poll::Ready(Ok(()));
    }
    inner.open_waiters.push(cx.waker().clone());
    Poll::Pending
}

/// Client side: opens a stream with a request head. Returns the handle
/// for its response and, unless `end_stream`, the one for its body; or,
/// when the connection can open no stream, why and the head untouched.
#[allow(clippy::result_large_err)] // the error path hands the head back
pub(crate) fn open_stream(
    shared: &Arc<Mutex<Inner>>,
    head: http::request::Parts,
    end_stream: bool,
) -> Result<(StreamRef, Option<StreamRef>), (Error, http::request::Parts)> {
    let mut guard = lock(shared);
    let inner = &mut *guard;
    if let Some(e) = &inner.error {
        return Err((e.clone(), head));
    }
    if inner.goaway_received || inner.next_stream_id > MAX_STREAM_ID {
        let e = Error::GoAway {
            reason: Reason::NO_ERROR,
            remote: true,
        };
        return Err((e, head));
    }
    let id = inner.next_stream_id;
    inner.next_stream_id += 2;
    let mut stream = Stream::new(id, inner.our_stream_window, inner.peer_initial_window);
    stream.send_eos = end_stream;
    stream.send_done = end_stream;
    stream.head_request = head.method == http::Method::HEAD;
    stream.pending_head = Some(Box::new(head));
    // Counted against the upstream's stream limit once its head is written.
    stream.counted = false;
    let key = inner.streams.insert(stream);
    inner.ids.insert(id, key);
    inner.heads.push_back((key, id));
    let response = StreamRef::new(shared, inner, key);
    let body = (!end_stream).then(|| StreamRef::new(shared, inner, key));
    inner.wake_conn();
    Ok((response, body))
}

/// Client side: the response head, once it has arrived.
pub(crate) fn poll_response(
    stream: &StreamRef,
    cx: &mut Context<'_>,
) -> Poll<Result<http::response::Parts, Error>> {
    let mut inner = stream.lock();
    let key = stream.key;
    if let Some(head) = inner.streams[key].response.take() {
        return Poll::Ready(Ok(head));
    }
    let s = &inner.streams[key];
    let error = s.reset.clone().or_else(|| inner.error.clone());
    if let Some(e) = error {
        return Poll::Ready(Err(e));
    }
    register(&mut inner.streams[key].recv_waker, cx);
    Poll::Pending
}

/// Client side, after the response future failed: the request head, when
/// the upstream certainly did not process the stream (see
/// [`Stream::unprocessed`]).
pub(crate) fn take_unprocessed(stream: &StreamRef) -> Option<Box<http::request::Parts>> {
    let mut guard = stream.lock();
    let inner = &mut *guard;
    let connection_error = inner.error.is_some();
    let s = &mut inner.streams[stream.key];
    if !s.unprocessed(connection_error) {
        return None;
    }
    s.pending_head.take().or_else(|| s.sent_head.take())
}

/// How the connection is doing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Waiting for the client's preface (server side): bytes still to come.
    Preface(usize),
    /// Waiting for the peer's first SETTINGS.
    Settings,
    Open,
    /// GOAWAY sent or received: no new streams; ends when none are left.
    Draining,
    /// Over: write what is queued (GOAWAY), then close.
    Closing,
}

/// A header block being collected across CONTINUATION frames.
struct Continuation {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
    frames: u32,
}

enum Ping {
    /// The next PING is due at the timer.
    Idle,
    /// Sent; the answer is due at the timer.
    Sent([u8; 8]),
}

/// A new stream opened by the peer: its request head and body, and the
/// handle to answer it.
pub(crate) struct Opened {
    pub request: Request<RecvBody>,
    pub stream: StreamRef,
}

/// The connection, as its task sees it.
pub(crate) struct Connection<IO> {
    io: IO,
    shared: Arc<Mutex<Inner>>,
    config: Config,
    decoder: OnDemand<Decoder>,
    state: State,
    role: Role,
    /// Bytes being written (swapped out of `Inner::wbuf`).
    out: Vec<u8>,
    out_pos: usize,
    /// An incomplete frame kept between reads.
    partial: Vec<u8>,
    /// Where the first DATA of streams is copied (short ones share it).
    data_chunk: Chunk,
    continuation: Option<Box<Continuation>>,
    /// Highest stream id the peer has opened.
    last_peer_stream: u32,
    /// The last stream id of the GOAWAY torii sent, if it sent one: a
    /// later GOAWAY may not name a higher one (RFC 9113 §6.8), though
    /// streams opened meanwhile raise `last_peer_stream`.
    goaway_last: Option<u32>,
    opened: VecDeque<Opened>,
    timer: Pin<Box<Sleep>>,
    ping: Ping,
    empty_data_budget: u32,
    resets: Bucket,
    /// Reading stopped because too much was waiting to be written.
    read_paused: bool,
    /// Everything written has been flushed (TLS buffers its records).
    flushed: bool,
    /// Why the connection ended, for the log.
    end: Option<String>,
    /// The header block being received came in a HEADERS frame that made
    /// its stream depend on itself (RFC 9113 §5.3.1: a stream error).
    self_dependent: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Connection<IO> {
    /// A server-side connection: the client's preface is expected first.
    pub fn server(io: IO, config: Config) -> Self {
        let mut wbuf = Vec::with_capacity(64);
        frame::put_settings(
            &mut wbuf,
            &[
                (
                    setting::MAX_CONCURRENT_STREAMS,
                    config.max_concurrent_streams,
                ),
                (setting::INITIAL_WINDOW_SIZE, config.stream_window),
                (setting::MAX_HEADER_LIST_SIZE, config.max_header_list_size),
                (setting::ENABLE_PUSH, 0),
            ],
        );
        let state = State::Preface(frame::PREFACE.len());
        Self::new(io, config, Role::Server, wbuf, state)
    }

    /// A client-side connection: torii's preface and SETTINGS are queued;
    /// requests may follow at once.
    pub fn client(io: IO, config: Config) -> Self {
        let mut wbuf = Vec::with_capacity(128);
        wbuf.extend_from_slice(frame::PREFACE);
        frame::put_settings(
            &mut wbuf,
            &[
                (setting::ENABLE_PUSH, 0),
                (setting::INITIAL_WINDOW_SIZE, config.stream_window),
                (setting::MAX_HEADER_LIST_SIZE, config.max_header_list_size),
            ],
        );
        Self::new(io, config, Role::Client, wbuf, State::Settings)
    }

    fn new(io: IO, config: Config, role: Role, mut wbuf: Vec<u8>, state: State) -> Self {
        if config.connection_window > frame::DEFAULT_WINDOW {
            frame::put_window_update(
                &mut wbuf,
                0,
                config.connection_window - frame::DEFAULT_WINDOW,
            );
        }
        let inner = Inner {
            streams: Slab::new(),
            ids: IdMap::default(),
            wbuf,
            wbuf_hint: 0,
            send_window: frame::DEFAULT_WINDOW.into(),
            recv_window: config.connection_window.into(),
            recv_released: 0,
            peer_initial_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME as usize,
            our_stream_window: config.stream_window,
            our_connection_window: config.connection_window,
            encoder: OnDemand::default(),
            blocked: VecDeque::new(),
            conn_waker: None,
            inline_poll: false,
            error: None,
            active: 0,
            role,
            next_stream_id: 1,
            peer_max_concurrent: u32::MAX,
            open_waiters: Vec::new(),
            heads: VecDeque::new(),
            goaway_received: false,
            client_gone: false,
            lingering: 0,
            draining: false,
            peer_resets: 0,
            recent: RecentClosed::default(),
        };
        let timer = Box::pin(tokio::time::sleep(config.handshake_timeout));
        Connection {
            io,
            shared: Arc::new(Mutex::new(inner)),
            decoder: OnDemand::default(),
            state,
            role,
            out: Vec::new(),
            out_pos: 0,
            partial: Vec::new(),
            data_chunk: Chunk::new(),
            continuation: None,
            last_peer_stream: 0,
            goaway_last: None,
            opened: VecDeque::new(),
            timer,
            ping: Ping::Idle,
            empty_data_budget: EMPTY_DATA_BUDGET,
            resets: Bucket::new(),
            read_paused: false,
            flushed: false,
            end: None,
            self_dependent: false,
            config,
        }
    }

    /// The state shared with stream handles (client side: for the handle
    /// that opens streams).
    pub fn shared(&self) -> &Arc<Mutex<Inner>> {
        &self.shared
    }

    /// A stream the peer opened, if one is waiting.
    pub fn accept(&mut self) -> Option<Opened> {
        self.opened.pop_front()
    }

    /// Why the connection ended (once it has).
    pub fn end_reason(&self) -> Option<&str> {
        self.end.as_deref()
    }

    /// Starts a poll of the connection's task. `inline`: the task polls the
    /// streams itself, so handles need not wake it.
    pub fn begin_poll(&mut self, cx: &Context<'_>, inline: bool) {
        let mut inner = lock(&self.shared);
        inner.inline_poll = inline;
        register(&mut inner.conn_waker, cx);
    }

    pub fn end_poll(&mut self) {
        lock(&self.shared).inline_poll = false;
    }

    /// GOAWAY: no new streams; the connection ends when the open ones have.
    pub fn graceful_shutdown(&mut self) {
        if matches!(self.state, State::Draining | State::Closing) {
            return;
        }
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        let last = *self.goaway_last.get_or_insert(self.last_peer_stream);
        frame::put_goaway(inner.wbuf(), last, Reason::NO_ERROR, b"");
        inner.draining = true;
        // Requests answered in full and still arriving are not waited for.
        let lingering: Vec<usize> = inner
            .streams
            .iter()
            .filter(|(_, s)| s.lingering)
            .map(|(key, _)| key)
            .collect();
        for key in lingering {
            inner.cancel_stream(key, Reason::NO_ERROR);
        }
        drop(guard);
        if matches!(self.state, State::Preface(_) | State::Settings) {
            self.close("drained before the HTTP/2 preface".into(), Error::Closed);
        } else {
            self.state = State::Draining;
        }
    }

    /// Ends the connection with a connection error: GOAWAY with `reason`
    /// and words on what the peer did.
    fn connection_error(&mut self, reason: Reason, what: String) {
        if self.state == State::Closing {
            return;
        }
        {
            let mut inner = lock(&self.shared);
            let debug = what.as_bytes();
            let debug = &debug[..debug.len().min(256)];
            let last = *self.goaway_last.get_or_insert(self.last_peer_stream);
            frame::put_goaway(inner.wbuf(), last, reason, debug);
        }
        self.close(
            format!("{what}: GOAWAY {reason}"),
            Error::GoAway {
                reason,
                remote: false,
            },
        );
    }

    fn close(&mut self, why: String, error: Error) {
        self.state = State::Closing;
        // What is queued (a GOAWAY) gets this long to leave.
        self.timer.as_mut().reset(Instant::now() + LINGER);
        self.end.get_or_insert(why);
        lock(&self.shared).fail_all(error);
    }

    /// Records a failed write (the connection is over).
    pub fn failed_write(&mut self, e: io::Error) {
        let why = format!("write failed: {e}");
        self.state = State::Closing;
        self.end.get_or_insert(why);
        lock(&self.shared).fail_all(Error::Io(Arc::new(e)));
    }

    /// True when the connection is over and everything queued was written.
    pub fn is_finished(&self) -> bool {
        let inner = lock(&self.shared);
        let flushed = self.flushed && self.out_pos >= self.out.len() && inner.wbuf.is_empty();
        match self.state {
            State::Closing => flushed,
            State::Draining => flushed && inner.active == 0,
            _ => inner.client_gone && inner.active == 0 && inner.heads.is_empty() && flushed,
        }
    }

    /// Reads what the peer sent and handles it. True if anything arrived
    /// (streams may have been opened or woken: poll them, then call again).
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        for _ in 0..READS_PER_POLL {
            if self.state == State::Closing {
                return progress;
            }
            if lock(&self.shared).wbuf.len() >= WRITE_HIGH {
                // Written out first (`poll_write` asks for a poll when
                // there is room again).
                self.read_paused = true;
                return progress;
            }
            let read = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len();
                        if n > 0 {
                            self.received(&scratch[..n]);
                        }
                        Poll::Ready(Ok(n))
                    }
                }
            });
            match read {
                Poll::Pending => return progress,
                Poll::Ready(Ok(0)) => {
                    let why = match self.state {
                        State::Preface(_) | State::Settings => {
                            "the client closed the connection before its HTTP/2 preface"
                        }
                        _ => "the peer closed the connection",
                    };
                    self.close(why.into(), Error::Closed);
                    return true;
                }
                Poll::Ready(Ok(_)) => progress = true,
                Poll::Ready(Err(e)) => {
                    self.close(format!("read failed: {e}"), Error::Io(Arc::new(e)));
                    return true;
                }
            }
        }
        // More may be waiting; let other tasks run first.
        cx.waker().wake_by_ref();
        progress
    }

    /// Handles newly read bytes: whole frames, and what is left of an
    /// incomplete one.
    fn received(&mut self, mut data: &[u8]) {
        if let State::Preface(left) = self.state {
            let at = frame::PREFACE.len() - left;
            let n = left.min(data.len());
            if data[..n] != frame::PREFACE[at..at + n] {
                self.close(
                    "the client did not send the HTTP/2 connection preface".into(),
                    Error::Closed,
                );
                return;
            }
            data = &data[n..];
            self.state = if n == left {
                State::Settings
            } else {
                State::Preface(left - n)
            };
        }
        if !self.partial.is_empty() {
            // Complete the kept frame first.
            let need = if self.partial.len() < frame::HEADER_LEN {
                frame::HEADER_LEN - self.partial.len()
            } else {
                0
            };
            let take = need.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < frame::HEADER_LEN {
                return;
            }
            let head = Head::parse(&self.partial);
            if !self.frame_size_ok(&head) {
                return;
            }
            let total = frame::HEADER_LEN + head.len as usize;
            let take = (total - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < total {
                return;
            }
            let partial = std::mem::take(&mut self.partial);
            self.frame(head, &partial[frame::HEADER_LEN..]);
        }
        while self.state != State::Closing && data.len() >= frame::HEADER_LEN {
            let head = Head::parse(data);
            if !self.frame_size_ok(&head) {
                return;
            }
            let total = frame::HEADER_LEN + head.len as usize;
            if data.len() < total {
                break;
            }
            self.frame(head, &data[frame::HEADER_LEN..total]);
            data = &data[total..];
        }
        if self.state != State::Closing && !data.is_empty() {
            self.partial.extend_from_slice(data);
        }
        // Once per read, not per frame (it takes the lock): a read holds
        // at most 32 KiB of frames.
        if self.role == Role::Server {
            self.count_peer_resets();
        }
    }

    /// DATA or HEADERS on a stream torii no longer tracks: idle (never
    /// opened: a connection error), reset by torii (the peer's frames may
    /// still be in flight: ignored, RFC 9113 §5.1), or closed (STREAM_CLOSED:
    /// a connection error once the peer had ended it, else a stream error).
    fn frame_on_closed(&mut self, id: u32, what: &str) {
        let mut inner = lock(&self.shared);
        if self.is_idle(id, &inner) {
            drop(inner);
            return self.connection_error(
                Reason::PROTOCOL_ERROR,
                format!("{what} on stream {id}, which was never opened (idle)"),
            );
        }
        match inner.recent.get(id) {
            Some(ClosedBy::Us) => {}
            Some(ClosedBy::Ended) => {
                drop(inner);
                self.connection_error(
                    Reason::STREAM_CLOSED,
                    format!("{what} on stream {id} after it had ended"),
                );
            }
            Some(ClosedBy::PeerReset) | None => inner.reset_untracked(id, Reason::STREAM_CLOSED),
        }
    }

    /// A stream nobody has opened yet.
    fn is_idle(&self, id: u32, inner: &Inner) -> bool {
        match self.role {
            Role::Server => id.is_multiple_of(2) || id > self.last_peer_stream,
            Role::Client => id.is_multiple_of(2) || id >= inner.next_stream_id,
        }
    }

    fn frame_size_ok(&mut self, head: &Head) -> bool {
        if head.len > frame::DEFAULT_MAX_FRAME {
            self.connection_error(
                Reason::FRAME_SIZE_ERROR,
                format!(
                    "a {}-byte frame (the limit is {})",
                    head.len,
                    frame::DEFAULT_MAX_FRAME
                ),
            );
            return false;
        }
        true
    }

    /// Handles one whole frame.
    fn frame(&mut self, head: Head, payload: &[u8]) {
        if self.state == State::Settings && head.kind != kind::SETTINGS {
            self.connection_error(
                Reason::PROTOCOL_ERROR,
                "the first frame was not SETTINGS".into(),
            );
            return;
        }
        if let Some(c) = &self.continuation {
            if head.kind != kind::CONTINUATION || head.stream != c.stream {
                self.connection_error(
                    Reason::PROTOCOL_ERROR,
                    "a header block was interrupted by another frame".into(),
                );
                return;
            }
        }
        match head.kind {
            kind::DATA => self.on_data(head, payload),
            kind::HEADERS => self.on_headers(head, payload),
            kind::PRIORITY => self.on_priority(head, payload),
            kind::RST_STREAM => self.on_rst_stream(head, payload),
            kind::SETTINGS => self.on_settings(head, payload),
            kind::PUSH_PROMISE => self.connection_error(
                Reason::PROTOCOL_ERROR,
                "PUSH_PROMISE (push is disabled)".into(),
            ),
            kind::PING => self.on_ping(head, payload),
            kind::GOAWAY => self.on_goaway(head, payload),
            kind::WINDOW_UPDATE => self.on_window_update(head, payload),
            kind::CONTINUATION => self.on_continuation(head, payload),
            _ => {} // Unknown frame types are ignored (RFC 9113 §4.1).
        }
    }

    /// Streams the peer made torii reset use up the same budget as its
    /// own resets (see `Inner::reset_stream`).
    fn count_peer_resets(&mut self) {
        if self.state == State::Closing {
            return;
        }
        let n = std::mem::take(&mut lock(&self.shared).peer_resets);
        for _ in 0..n {
            if !self.resets.take() {
                return self.connection_error(
                    Reason::ENHANCE_YOUR_CALM,
                    format!(
                        "more than {RESET_BURST} streams reset, by the client or because it broke rules on them, faster than {RESET_RATE} a second (rapid reset)"
                    ),
                );
            }
        }
    }

    /// PRIORITY (deprecated by RFC 9113, still parsed): only its length and
    /// a stream depending on itself are errors. A stream error is only
    /// ever sent on a stream that exists: an idle one cannot be reset
    /// (§6.4), so a bad PRIORITY there ends the connection.
    fn on_priority(&mut self, head: Head, payload: &[u8]) {
        if head.stream == 0 {
            return self.connection_error(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0".into());
        }
        let reason = if payload.len() != 5 {
            Reason::FRAME_SIZE_ERROR
        } else if u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff
            == head.stream
        {
            Reason::PROTOCOL_ERROR
        } else {
            return;
        };
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        if let Some(&key) = inner.ids.get(&head.stream) {
            return inner.reset_stream(key, reason);
        }
        if self.is_idle(head.stream, inner) {
            drop(guard);
            let what = if reason == Reason::FRAME_SIZE_ERROR {
                format!("a PRIORITY frame of {} bytes (not 5)", payload.len())
            } else {
                "a PRIORITY frame making a stream depend on itself".to_string()
            };
            return self.connection_error(reason, format!("{what} on idle stream {}", head.stream));
        }
        // A closed stream: the stream error needs no state.
        inner.reset_untracked(head.stream, reason);
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) {
        if head.stream != 0 {
            return self.connection_error(Reason::PROTOCOL_ERROR, "SETTINGS on a stream".into());
        }
        if head.has(flag::ACK) {
            if !payload.is_empty() {
                self.connection_error(
                    Reason::FRAME_SIZE_ERROR,
                    "a SETTINGS ACK with a payload".into(),
                );
            }
            return;
        }
        if !payload.len().is_multiple_of(6) {
            return self.connection_error(
                Reason::FRAME_SIZE_ERROR,
                "a SETTINGS frame of a bad length".into(),
            );
        }
        if self.state == State::Settings {
            self.state = State::Open;
            // From the handshake timeout to the keepalive.
            self.timer
                .as_mut()
                .reset(Instant::now() + self.config.keepalive_interval);
        }
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        // Streams whose windows grew: flushed after the ACK, so the peer
        // never sees DATA sent under settings it does not know were
        // applied yet.
        let mut grown: Vec<usize> = Vec::new();
        for s in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match id {
                setting::HEADER_TABLE_SIZE => inner
                    .encoder
                    .get(Encoder::new)
                    .set_max_table_size((value as usize).min(4096)),
                setting::MAX_CONCURRENT_STREAMS if inner.role == Role::Client => {
                    inner.peer_max_concurrent = value;
                    for w in inner.open_waiters.drain(..) {
                        w.wake();
                    }
                }
                setting::ENABLE_PUSH if value > 1 || (value == 1 && inner.role == Role::Client) => {
                    // A server must never announce push (RFC 9113 §6.5.2).
                    drop(guard);
                    let what = if value > 1 {
                        "ENABLE_PUSH above 1"
                    } else {
                        "the server announced ENABLE_PUSH 1"
                    };
                    return self.connection_error(Reason::PROTOCOL_ERROR, what.into());
                }
                setting::INITIAL_WINDOW_SIZE => {
                    if value > frame::MAX_WINDOW {
                        drop(guard);
                        return self.connection_error(
                            Reason::FLOW_CONTROL_ERROR,
                            "INITIAL_WINDOW_SIZE above 2^31-1".into(),
                        );
                    }
                    let delta = i64::from(value) - i64::from(inner.peer_initial_window);
                    inner.peer_initial_window = value;
                    if delta != 0 {
                        let mut grew = Vec::new();
                        let mut overflow = false;
                        for (key, s) in inner.streams.iter_mut() {
                            s.send_window += delta;
                            overflow |= s.send_window > i64::from(frame::MAX_WINDOW);
                            if delta > 0 && !s.send_pending.is_empty() {
                                grew.push(key);
                            }
                        }
                        if overflow {
                            drop(guard);
                            return self.connection_error(
                                Reason::FLOW_CONTROL_ERROR,
                                "INITIAL_WINDOW_SIZE pushed a stream window past 2^31-1".into(),
                            );
                        }
                        grown.extend(grew);
                    }
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME..=frame::MAX_MAX_FRAME).contains(&value) {
                        drop(guard);
                        return self.connection_error(
                            Reason::PROTOCOL_ERROR,
                            format!("MAX_FRAME_SIZE {value} out of range"),
                        );
                    }
                    // Larger frames save little; 16 KiB keeps writes small.
                    inner.peer_max_frame = (value as usize).min(frame::DEFAULT_MAX_FRAME as usize);
                }
                _ => {}
            }
        }
        frame::put_settings_ack(inner.wbuf());
        for key in grown {
            inner.flush_stream(key);
        }
    }

    fn on_ping(&mut self, head: Head, payload: &[u8]) {
        if head.stream != 0 {
            return self.connection_error(Reason::PROTOCOL_ERROR, "PING on a stream".into());
        }
        let Ok(data) = <[u8; 8]>::try_from(payload) else {
            return self.connection_error(
                Reason::FRAME_SIZE_ERROR,
                "a PING that is not 8 bytes".into(),
            );
        };
        if head.has(flag::ACK) {
            if let Ping::Sent(sent) = self.ping {
                if sent == data {
                    self.ping = Ping::Idle;
                    self.timer
                        .as_mut()
                        .reset(Instant::now() + self.config.keepalive_interval);
                }
            }
            return;
        }
        frame::put_ping(lock(&self.shared).wbuf(), true, data);
    }

    fn on_goaway(&mut self, head: Head, payload: &[u8]) {
        if head.stream != 0 || payload.len() < 8 {
            return self.connection_error(Reason::PROTOCOL_ERROR, "a malformed GOAWAY".into());
        }
        let reason = Reason(u32::from_be_bytes([
            payload[4], payload[5], payload[6], payload[7],
        ]));
        if reason != Reason::NO_ERROR {
            let debug = String::from_utf8_lossy(&payload[8..]);
            let why = if reason == Reason::ENHANCE_YOUR_CALM && debug.contains("too_many_pings") {
                // gRPC servers' keepalive enforcement (C-core, grpc-go,
                // grpc-java: one PING per 5 minutes by default).
                format!(
                    "the peer closed the connection with GOAWAY {reason} \"{debug}\": it allows fewer PINGs than torii sent (one every {} here, {}); every stream on the connection failed. Raise the cluster's http2_keepalive.interval to at least the server's permitted interval (gRPC servers default to 5m), or allow more PINGs on the server",
                    crate::config::duration::display(self.config.keepalive_interval),
                    if self.config.keepalive_while_idle { "also while idle" } else { "only while streams are open" }
                )
            } else {
                format!("the peer sent GOAWAY {reason} ({debug})")
            };
            self.end.get_or_insert(why);
        }
        if self.role == Role::Client {
            // Streams past the last one the server will process fail, as
            // never processed: they may be sent again elsewhere.
            let last =
                u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
            let mut guard = lock(&self.shared);
            let inner = &mut *guard;
            inner.goaway_received = true;
            let refused: Vec<usize> = inner
                .streams
                .iter()
                .filter(|(_, s)| s.id > last && !s.is_closed())
                .map(|(key, _)| key)
                .collect();
            for key in refused {
                let s = &mut inner.streams[key];
                s.reset = Some(Error::GoAway {
                    reason,
                    remote: true,
                });
                // Never written: it stays off the wire (no new streams
                // after GOAWAY), kept to be sent elsewhere.
                if let Some(head) = s.pending_head.take() {
                    s.sent_head = Some(head);
                }
                s.send_pending.clear();
                s.wake();
                inner.after_change(key);
            }
            for w in inner.open_waiters.drain(..) {
                w.wake();
            }
        }
        if matches!(self.state, State::Open | State::Settings) {
            self.state = State::Draining;
        }
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) {
        let Ok(b) = <[u8; 4]>::try_from(payload) else {
            return self.connection_error(
                Reason::FRAME_SIZE_ERROR,
                "a WINDOW_UPDATE that is not 4 bytes".into(),
            );
        };
        let inc = i64::from(u32::from_be_bytes(b) & 0x7fff_ffff);
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        if head.stream == 0 {
            if inc == 0 {
                drop(guard);
                return self
                    .connection_error(Reason::PROTOCOL_ERROR, "a WINDOW_UPDATE of 0".into());
            }
            inner.send_window += inc;
            if inner.send_window > i64::from(frame::MAX_WINDOW) {
                drop(guard);
                return self.connection_error(
                    Reason::FLOW_CONTROL_ERROR,
                    "the connection window grew past 2^31-1".into(),
                );
            }
            inner.flush_blocked();
            return;
        }
        let Some(&key) = inner.ids.get(&head.stream) else {
            if self.is_idle(head.stream, inner) {
                drop(guard);
                self.connection_error(
                    Reason::PROTOCOL_ERROR,
                    "WINDOW_UPDATE on an idle stream".into(),
                );
            }
            return;
        };
        if inc == 0 {
            return inner.reset_stream(key, Reason::PROTOCOL_ERROR);
        }
        let s = &mut inner.streams[key];
        s.send_window += inc;
        if s.send_window > i64::from(frame::MAX_WINDOW) {
            return inner.reset_stream(key, Reason::FLOW_CONTROL_ERROR);
        }
        if !s.send_pending.is_empty() {
            inner.flush_stream(key);
        }
    }

    fn on_rst_stream(&mut self, head: Head, payload: &[u8]) {
        let Ok(b) = <[u8; 4]>::try_from(payload) else {
            return self.connection_error(
                Reason::FRAME_SIZE_ERROR,
                "an RST_STREAM that is not 4 bytes".into(),
            );
        };
        if head.stream == 0 {
            return self.connection_error(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0".into());
        }
        let reason = Reason(u32::from_be_bytes(b));
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        let Some(&key) = inner.ids.get(&head.stream) else {
            if self.is_idle(head.stream, inner) {
                drop(guard);
                self.connection_error(
                    Reason::PROTOCOL_ERROR,
                    "RST_STREAM on an idle stream".into(),
                );
            }
            return;
        };
        let s = &mut inner.streams[key];
        if s.is_closed() {
            return;
        }
        // Rapid reset (CVE-2023-44487) is a client opening streams and
        // resetting them before they are answered, faster than anyone
        // cancels for real. Counted only on the server side, only before a
        // response head, never for NO_ERROR.
        let counts = self.role == Role::Server && !s.send_head_done && reason != Reason::NO_ERROR;
        s.reset = Some(Error::Reset(reason));
        s.send_pending.clear();
        s.send_trailers = None;
        s.wake();
        inner.after_change(key);
        drop(guard);
        if counts && !self.resets.take() {
            self.connection_error(
                Reason::ENHANCE_YOUR_CALM,
                format!(
                    "more than {RESET_BURST} streams reset before their response, faster than {RESET_RATE} a second (rapid reset)"
                ),
            );
        }
    }

    fn on_data(&mut self, head: Head, payload: &[u8]) {
        if head.stream == 0 {
            return self.connection_error(Reason::PROTOCOL_ERROR, "DATA on stream 0".into());
        }
        let Some((from, to)) = frame::unpad(&head, payload) else {
            return self
                .connection_error(Reason::PROTOCOL_ERROR, "DATA with too much padding".into());
        };
        let data = &payload[from..to];
        let eos = head.has(flag::END_STREAM);
        if data.is_empty() && !eos {
            self.empty_data_budget = self.empty_data_budget.saturating_sub(1);
            if self.empty_data_budget == 0 {
                return self.connection_error(
                    Reason::ENHANCE_YOUR_CALM,
                    "too many empty DATA frames".into(),
                );
            }
        } else if self.empty_data_budget < EMPTY_DATA_BUDGET {
            self.empty_data_budget += 1;
        }
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        // The whole frame, padding included, counts against the windows.
        let len = payload.len();
        inner.recv_window -= len as i64;
        if inner.recv_window < 0 {
            drop(guard);
            return self.connection_error(
                Reason::FLOW_CONTROL_ERROR,
                "the peer sent more than the connection window allowed".into(),
            );
        }
        let Some(&key) = inner.ids.get(&head.stream) else {
            inner.release_connection(len);
            drop(guard);
            return self.frame_on_closed(head.stream, "DATA");
        };
        let s = &mut inner.streams[key];
        if s.recv_eos || s.reset.is_some() {
            inner.release_connection(len);
            if !inner.streams[key].is_closed() {
                // Half-closed (remote): RFC 9113 §5.1.
                inner.reset_stream(key, Reason::STREAM_CLOSED);
            } else {
                inner.after_peer_reset(key);
            }
            return;
        }
        s.recv_window -= len as i64;
        if s.recv_window < 0 {
            inner.release_connection(len);
            return inner.reset_stream(key, Reason::FLOW_CONTROL_ERROR);
        }
        if let Some(expect) = &mut s.recv_expect {
            match expect.checked_sub(data.len() as u64) {
                Some(left) if !eos || left == 0 => *expect = left,
                _ => {
                    inner.release_connection(len);
                    return inner.reset_stream(key, Reason::PROTOCOL_ERROR);
                }
            }
        }
        if s.orphan {
            // Nobody reads this request any more: dropped, and only the
            // connection's window is given back (the stream's bounds how
            // much more the peer sends).
            s.recv_eos = eos;
            let over = len as u32 > s.linger_left;
            s.linger_left = s.linger_left.saturating_sub(len as u32);
            if len > 0 {
                // Given back at once rather than batched: the
                // WINDOW_UPDATE is also the frame that tells a client
                // waiting on its upload that torii read it (curl 7.88
                // otherwise waits until its timeout, 1 time in 20, after
                // an answer that came before its upload ended).
                inner.recv_window += len as i64;
                frame::put_window_update(inner.wbuf(), 0, len as u32);
                inner.wake_conn();
            }
            if over && !eos {
                return inner.cancel_stream(key, Reason::NO_ERROR);
            }
            return inner.after_change(key);
        }
        if s.recv_buf.is_empty() && !s.recv_split {
            // A stream's first data, a unary body in one frame most often:
            // a slice of the connection's chunk (see `chunk`).
            s.recv_buf = self.data_chunk.copy(data);
        } else {
            s.recv_buf.extend_from_slice(data);
        }
        s.recv_eos = eos;
        if let Some(w) = s.recv_waker.take() {
            w.wake();
        }
        // Padding is not passed on: it goes back at once.
        inner.release_stream(key, len - data.len());
        inner.release_connection(len - data.len());
        if eos {
            inner.after_change(key);
        }
    }

    fn on_headers(&mut self, head: Head, payload: &[u8]) {
        if head.stream == 0 {
            return self.connection_error(Reason::PROTOCOL_ERROR, "HEADERS on stream 0".into());
        }
        let Some((mut from, to)) = frame::unpad(&head, payload) else {
            return self.connection_error(
                Reason::PROTOCOL_ERROR,
                "HEADERS with too much padding".into(),
            );
        };
        self.self_dependent = false;
        if head.has(flag::PRIORITY) {
            from += 5;
            if from > to {
                return self.connection_error(
                    Reason::FRAME_SIZE_ERROR,
                    "a HEADERS frame too short for its priority".into(),
                );
            }
            let dep = &payload[from - 5..from - 1];
            // RFC 9113 §5.3.1: a stream error, once the block is decoded
            // (HPACK must stay in step).
            self.self_dependent =
                u32::from_be_bytes([dep[0], dep[1], dep[2], dep[3]]) & 0x7fff_ffff == head.stream;
        }
        let block = &payload[from..to];
        let end_stream = head.has(flag::END_STREAM);
        if head.has(flag::END_HEADERS) {
            self.header_block(head.stream, end_stream, block);
        } else {
            self.continuation = Some(Box::new(Continuation {
                stream: head.stream,
                end_stream,
                block: block.to_vec(),
                frames: 0,
            }));
        }
    }

    fn on_continuation(&mut self, head: Head, payload: &[u8]) {
        let Some(c) = &mut self.continuation else {
            return self.connection_error(
                Reason::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS".into(),
            );
        };
        c.frames += 1;
        if c.block.len() + payload.len() > MAX_BLOCK || c.frames > MAX_CONTINUATIONS {
            return self.connection_error(
                Reason::ENHANCE_YOUR_CALM,
                format!(
                    "a header block of more than {} KiB or {MAX_CONTINUATIONS} CONTINUATION frames",
                    MAX_BLOCK / 1024
                ),
            );
        }
        c.block.extend_from_slice(payload);
        if head.has(flag::END_HEADERS) {
            let c = self.continuation.take().expect("checked above");
            self.header_block(c.stream, c.end_stream, &c.block);
        }
    }

    /// A complete header block on `id`: a new request, a response head,
    /// or trailers.
    fn header_block(&mut self, id: u32, end_stream: bool, block: &[u8]) {
        let known = {
            let inner = lock(&self.shared);
            inner
                .ids
                .get(&id)
                .map(|&key| (key, inner.streams[key].head_received))
        };
        match (self.role, known) {
            // By id, not key: the lock is released while the block is
            // decoded, and another thread may drop the stream meanwhile.
            (Role::Server, Some(_)) | (Role::Client, Some((_, true))) => {
                self.trailers(id, end_stream, block)
            }
            (Role::Client, Some((_, false))) => self.response_head(id, end_stream, block),
            (Role::Server, None) => self.request_head(id, end_stream, block),
            (Role::Client, None) => {
                // Decoded all the same: the HPACK state must stay in step.
                if self.decode(block, |_| {}).is_none() {
                    return;
                }
                let idle = self.is_idle(id, &lock(&self.shared));
                if idle {
                    self.connection_error(
                        Reason::PROTOCOL_ERROR,
                        format!("HEADERS on stream {id}, which torii never opened"),
                    );
                } else {
                    self.frame_on_closed(id, "HEADERS");
                }
            }
        }
    }

    /// Decodes a header block (up to our header list limit); a block HPACK
    /// cannot decode ends the connection (COMPRESSION_ERROR): None.
    fn decode(&mut self, block: &[u8], emit: impl FnMut(Field)) -> Option<BlockInfo> {
        let limit = self.config.max_header_list_size as usize;
        match self
            .decoder
            .get(|| Decoder::new(DECODER_TABLE_SIZE))
            .decode(block, limit, emit)
        {
            Ok(info) => Some(info),
            Err(e) => {
                self.connection_error(Reason::COMPRESSION_ERROR, e.to_string());
                None
            }
        }
    }

    /// Trailers: the last header block of a stream.
    fn trailers(&mut self, id: u32, end_stream: bool, block: &[u8]) {
        let self_dependent = std::mem::take(&mut self.self_dependent);
        let mut trailers = Trailers::default();
        let Some(info) = self.decode(block, |f| trailers.field(f)) else {
            return;
        };
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        let Some(&key) = inner.ids.get(&id) else {
            return;
        };
        let s = &mut inner.streams[key];
        if s.recv_eos || s.reset.is_some() {
            if !s.is_closed() {
                inner.reset_stream(key, Reason::STREAM_CLOSED);
            } else {
                inner.after_peer_reset(key);
            }
            return;
        }
        let trailers = match trailers.finish() {
            Ok(t) if end_stream && !info.over_limit && !self_dependent => t,
            _ => return inner.reset_stream(key, Reason::PROTOCOL_ERROR),
        };
        if matches!(s.recv_expect, Some(n) if n != 0) {
            return inner.reset_stream(key, Reason::PROTOCOL_ERROR);
        }
        s.recv_trailers = Some(trailers);
        s.recv_eos = true;
        if let Some(w) = s.recv_waker.take() {
            w.wake();
        }
        inner.after_change(key);
    }

    /// Client side: the response head of one of torii's streams.
    fn response_head(&mut self, id: u32, end_stream: bool, block: &[u8]) {
        let mut head = ResponseHead::default();
        let Some(info) = self.decode(block, |f| head.field(f)) else {
            return;
        };
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        let Some(&key) = inner.ids.get(&id) else {
            return;
        };
        if inner.streams[key].reset.is_some() {
            return;
        }
        let (parts, content_length) = match head.finish() {
            Ok(h) if !info.over_limit => h,
            Ok(_) => {
                tracing::debug!(size = info.list_size, "response header list over the limit");
                return inner.reset_stream(key, Reason::PROTOCOL_ERROR);
            }
            Err(why) => {
                tracing::debug!("malformed response head from the upstream: {why}");
                return inner.reset_stream(key, Reason::PROTOCOL_ERROR);
            }
        };
        if parts.status.is_informational() {
            // 100 Continue and friends: the real head follows.
            if end_stream {
                inner.reset_stream(key, Reason::PROTOCOL_ERROR);
            }
            return;
        }
        let s = &mut inner.streams[key];
        let bodiless = s.head_request
            || parts.status == http::StatusCode::NO_CONTENT
            || parts.status == http::StatusCode::NOT_MODIFIED;
        s.head_received = true;
        s.response = Some(parts);
        if let Some(head) = s.sent_head.take() {
            // Kept until now only to send it again (a stream refused
            // unprocessed); done with.
            super::maps::give(head.headers);
        }
        s.recv_expect = if bodiless { None } else { content_length };
        s.recv_eos = end_stream;
        s.head_ended = end_stream;
        if let Some(w) = s.recv_waker.take() {
            w.wake();
        }
        if end_stream {
            inner.after_change(key);
        }
    }

    /// Server side: HEADERS on a stream id at or below the highest the
    /// client opened, and no longer tracked.
    fn headers_on_closed(&mut self, id: u32) {
        let mut inner = lock(&self.shared);
        match inner.recent.get(id) {
            // torii reset it; the client may not have known yet.
            Some(ClosedBy::Us) => {}
            Some(ClosedBy::PeerReset) => inner.reset_untracked(id, Reason::STREAM_CLOSED),
            Some(ClosedBy::Ended) => {
                drop(inner);
                self.connection_error(
                    Reason::STREAM_CLOSED,
                    format!("HEADERS on stream {id} after it had ended"),
                );
            }
            None => {
                drop(inner);
                let last = self.last_peer_stream;
                self.connection_error(
                    Reason::PROTOCOL_ERROR,
                    format!("HEADERS opening stream {id}, lower than stream {last} it had opened before (stream ids must rise)"),
                );
            }
        }
    }

    /// Server side: a HEADERS block that opens a stream (or arrives on one
    /// that has closed and been forgotten).
    fn request_head(&mut self, id: u32, end_stream: bool, block: &[u8]) {
        let mut request = RequestHead::default();
        let Some(info) = self.decode(block, |f| request.field(f)) else {
            return;
        };
        if id <= self.last_peer_stream {
            return self.headers_on_closed(id);
        }
        if std::mem::take(&mut self.self_dependent) && !id.is_multiple_of(2) {
            self.last_peer_stream = id;
            let mut inner = lock(&self.shared);
            inner.reset_untracked(id, Reason::PROTOCOL_ERROR);
            inner.recent.record(id, ClosedBy::Us);
            return;
        }
        if id.is_multiple_of(2) {
            return self.connection_error(
                Reason::PROTOCOL_ERROR,
                format!("the client opened stream {id} (even)"),
            );
        }
        self.last_peer_stream = id;
        if self.state != State::Open {
            // Draining: streams after the GOAWAY are not processed.
            return;
        }
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        if inner.active >= self.config.max_concurrent_streams {
            frame::put_rst_stream(inner.wbuf(), id, Reason::REFUSED_STREAM);
            inner.recent.record(id, ClosedBy::Us);
            return;
        }
        if info.over_limit {
            // 431, as HTTP/1.1 would answer; the connection goes on.
            tracing::debug!(
                stream = id,
                size = info.list_size,
                "request header list over the limit; answering 431"
            );
            let start = frame::reserve_head(inner.wbuf());
            let encoder = inner.encoder.get(Encoder::new);
            encoder.begin_block(&mut inner.wbuf);
            encoder.encode_pseudo(super::hpack::Name::Status, b"431", &mut inner.wbuf);
            frame::finish_headers(&mut inner.wbuf, start, id, true, inner.peer_max_frame);
            if !end_stream {
                frame::put_rst_stream(&mut inner.wbuf, id, Reason::NO_ERROR);
                inner.recent.record(id, ClosedBy::Us);
            }
            return;
        }
        let (parts, content_length) = match request.finish() {
            Ok(r) => r,
            Err(why) => {
                tracing::debug!(
                    stream = id,
                    "malformed request: {why}; resetting the stream"
                );
                frame::put_rst_stream(inner.wbuf(), id, Reason::PROTOCOL_ERROR);
                inner.recent.record(id, ClosedBy::Us);
                drop(guard);
                if !self.resets.take() {
                    self.connection_error(
                        Reason::ENHANCE_YOUR_CALM,
                        "too many malformed requests".into(),
                    );
                }
                return;
            }
        };
        if end_stream && matches!(content_length, Some(n) if n != 0) {
            inner.reset_untracked(id, Reason::PROTOCOL_ERROR);
            inner.recent.record(id, ClosedBy::Us);
            return;
        }
        let mut stream = Stream::new(id, inner.our_stream_window, inner.peer_initial_window);
        stream.recv_eos = end_stream;
        stream.head_ended = end_stream;
        stream.recv_expect = content_length;
        let key = inner.streams.insert(stream);
        inner.ids.insert(id, key);
        inner.active += 1;
        let body = RecvBody::new(StreamRef::new(&self.shared, inner, key));
        let stream = StreamRef::new(&self.shared, inner, key);
        self.opened.push_back(Opened {
            request: Request::from_parts(parts, body),
            stream,
        });
    }

    /// Writes what is queued. Ready(Err) if the socket failed.
    pub fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.out_pos >= self.out.len() {
                self.out.clear();
                self.out_pos = 0;
                let mut inner = lock(&self.shared);
                inner.write_heads();
                inner.flush_blocked();
                if inner.wbuf.is_empty() {
                    if inner.active == 0 {
                        // Idle connections hold no buffers.
                        inner.wbuf = Vec::new();
                        self.out = Vec::new();
                    }
                    break;
                }
                // Capped below glibc's 128 KiB mmap threshold.
                let keep = inner.wbuf_hint - inner.wbuf_hint / 4;
                inner.wbuf_hint = inner.wbuf.len().max(keep).min(WRITE_HIGH + 16 * 1024);
                std::mem::swap(&mut inner.wbuf, &mut self.out);
                if self.read_paused {
                    self.read_paused = false;
                    cx.waker().wake_by_ref();
                }
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.out_pos += n;
                    self.flushed = false;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.flushed {
            return Poll::Ready(Ok(()));
        }
        let flushed = std::task::ready!(Pin::new(&mut self.io).poll_flush(cx));
        self.flushed = flushed.is_ok();
        Poll::Ready(flushed)
    }

    /// Ready once the connection is over, everything queued was written
    /// and flushed, and the stream was shut down (TLS close_notify). A
    /// peer that never reads does not hold it longer than `LINGER`: see
    /// [`poll_timer`](Self::poll_timer).
    pub fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_finished() {
            return Poll::Pending;
        }
        if self.state != State::Closing {
            self.state = State::Closing;
            self.timer.as_mut().reset(Instant::now() + LINGER);
        }
        Pin::new(&mut self.io).poll_shutdown(cx).map(|_| ())
    }

    /// The handshake deadline and keepalive PINGs. True when the
    /// connection must end now (a closing connection had its time to
    /// write its last frames).
    pub fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            match (self.state, &self.ping) {
                (State::Preface(_) | State::Settings, _) => {
                    let t = self.config.handshake_timeout;
                    self.close(
                        format!("no HTTP/2 connection preface within {t:?}"),
                        Error::Closed,
                    );
                    return true;
                }
                (State::Closing, _) => return true,
                (_, Ping::Idle)
                    if !self.config.keepalive_while_idle && lock(&self.shared).active == 0 =>
                {
                    // Nothing open: nothing to keep alive. Looked at again
                    // an interval later.
                    self.timer
                        .as_mut()
                        .reset(Instant::now() + self.config.keepalive_interval);
                }
                (_, Ping::Idle) => {
                    let payload = rand::random::<[u8; 8]>();
                    frame::put_ping(lock(&self.shared).wbuf(), false, payload);
                    self.ping = Ping::Sent(payload);
                    self.timer
                        .as_mut()
                        .reset(Instant::now() + self.config.keepalive_timeout);
                }
                (_, Ping::Sent(_)) => {
                    let t = self.config.keepalive_timeout;
                    self.close(format!("no answer to a PING within {t:?}"), Error::Closed);
                    return true;
                }
            }
        }
        false
    }
}

impl<IO> Drop for Connection<IO> {
    fn drop(&mut self) {
        lock(&self.shared).fail_all(Error::Closed);
    }
}

#[cfg(test)]
mod tests;

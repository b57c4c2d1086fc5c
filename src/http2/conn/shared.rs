//! What the connection's task and the stream handles share, behind one
//! mutex: the streams, the windows, the HPACK encoder and the bytes
//! waiting to be written; and the writing of DATA and trailers as the
//! windows allow (RFC 9113 §5.2, §6.9).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Waker};

use slab::Slab;

use super::defences::{MAX_LINGERING, WRITE_HIGH};
use super::stream::Stream;
use crate::http2::fields;
use crate::http2::frame;
use crate::http2::hpack::Encoder;
use crate::http2::{Error, Reason};

/// Recently closed streams remembered per connection, to tell a frame
/// torii must ignore (it reset the stream; the peer's frames may still be
/// in flight, RFC 9113 §5.1) from one the peer must not send (it had ended
/// the stream itself).
pub(super) const RECENT_CLOSED: usize = 8;

/// Stream ids are their own hash.
#[derive(Default)]
pub(super) struct IdHasher(u64);

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

pub(super) type IdMap = HashMap<u32, usize, BuildHasherDefault<IdHasher>>;

/// Gives an empty write buffer (an idle connection holds none) the room
/// recent writes took, at least 2 KiB: a burst like those then fills it
/// without growing it step by step, each step copying all written so far
/// (callgrind, unary 1 KiB: 2,300 instructions per request of such copies).
pub(super) fn ready(wbuf: &mut Vec<u8>, hint: usize) {
    if wbuf.capacity() == 0 {
        wbuf.reserve(hint.max(2048));
    }
}

/// What the connection and its stream handles share.
pub(in crate::http2) struct Inner {
    pub(super) streams: Slab<Stream>,
    pub(super) ids: IdMap,
    /// Frames waiting to be written.
    pub(super) wbuf: Vec<u8>,
    /// The room an empty `wbuf` is given: the last write's size, or three
    /// quarters of the hint before when that was larger (bursts vary).
    pub(super) wbuf_hint: usize,
    /// The peer's connection-level window for what torii sends.
    pub(super) send_window: i64,
    /// What the peer may still send on the connection.
    pub(super) recv_window: i64,
    pub(super) recv_released: u32,
    pub(super) peer_initial_window: u32,
    pub(super) peer_max_frame: usize,
    pub(super) our_stream_window: u32,
    pub(super) our_connection_window: u32,
    pub(super) encoder: OnDemand<Encoder>,
    /// Streams with DATA waiting for window or for room in `wbuf`.
    pub(super) blocked: VecDeque<usize>,
    pub(super) conn_waker: Option<Waker>,
    /// The connection's task is polling (and will write afterwards).
    pub(super) inline_poll: bool,
    /// The connection is over; every stream operation fails with this.
    pub(super) error: Option<Error>,
    /// Open streams (for the concurrency limit and for ending a drain).
    pub(super) active: u32,
    pub(super) role: Role,
    /// Client side: the next stream id, the server's stream limit, tasks
    /// waiting for room under it, and whether the server sent GOAWAY.
    pub(super) next_stream_id: u32,
    pub(super) peer_max_concurrent: u32,
    /// The same limit, readable without the lock (a pool choosing among
    /// connections).
    pub(super) peer_max_seen: std::sync::Arc<std::sync::atomic::AtomicU32>,
    pub(super) open_waiters: Vec<Waker>,
    /// Client side: streams (key, id) whose head is waiting to be encoded.
    pub(super) heads: VecDeque<(usize, u32)>,
    pub(super) goaway_received: bool,
    /// Client side: every client handle is gone.
    pub(super) client_gone: bool,
    /// Lingering streams (see `Stream::lingering`).
    pub(super) lingering: u16,
    /// GOAWAY sent: streams are not kept lingering.
    pub(super) draining: bool,
    /// Streams the peer made torii reset (broke a rule on them) since the
    /// connection last counted them against its reset budget.
    pub(super) peer_resets: u32,
    pub(super) recent: RecentClosed,
}

/// How a stream that is gone from `Inner::streams` ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum ClosedBy {
    /// torii reset it: the peer may not know yet, its frames are ignored.
    Us,
    /// The peer reset it.
    PeerReset,
    /// Both sides ended it (END_STREAM).
    Ended,
}

/// The last few streams that closed: a fixed ring, no allocation.
#[derive(Default)]
pub(super) struct RecentClosed {
    ids: [u32; RECENT_CLOSED],
    how: [Option<ClosedBy>; RECENT_CLOSED],
    next: u8,
}

impl RecentClosed {
    pub(super) fn record(&mut self, id: u32, how: ClosedBy) {
        let i = usize::from(self.next) % RECENT_CLOSED;
        self.ids[i] = id;
        self.how[i] = Some(how);
        self.next = ((i + 1) % RECENT_CLOSED) as u8;
    }

    pub(super) fn get(&self, id: u32) -> Option<ClosedBy> {
        (0..RECENT_CLOSED).find_map(|i| self.how[i].filter(|_| self.ids[i] == id))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Role {
    Server,
    Client,
}

/// An HPACK encoder or decoder, allocated when the connection's first
/// header block needs it: ~120 bytes each that an idle connection (a
/// sidecar holds thousands) would otherwise carry from its first byte.
pub(super) struct OnDemand<T>(Option<Box<T>>);

impl<T> Default for OnDemand<T> {
    fn default() -> Self {
        OnDemand(None)
    }
}

impl<T> OnDemand<T> {
    pub(super) fn get(&mut self, make: impl FnOnce() -> T) -> &mut T {
        self.0.get_or_insert_with(|| Box::new(make()))
    }
}

/// Keeps the waker of the latest poll in `slot`.
pub(super) fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

pub(super) fn lock(shared: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    pub(super) fn wake_conn(&self) {
        if !self.inline_poll {
            if let Some(w) = &self.conn_waker {
                w.wake_by_ref();
            }
        }
    }

    pub(super) fn wbuf(&mut self) -> &mut Vec<u8> {
        ready(&mut self.wbuf, self.wbuf_hint);
        &mut self.wbuf
    }

    /// Gives `n` received bytes back to a stream's window (WINDOW_UPDATE
    /// once half of it is back, unless the peer is done sending).
    pub(super) fn release_stream(&mut self, key: usize, n: usize) {
        let half = self.our_stream_window / 2;
        let s = &mut self.streams[key];
        if s.state.recv_closed() || n == 0 {
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
    pub(super) fn release_connection(&mut self, n: usize) {
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
    pub(super) fn reset_stream(&mut self, key: usize, reason: Reason) {
        if self.role == Role::Server && !self.streams[key].state.is_closed() {
            self.peer_resets += 1;
        }
        self.reset_with(key, reason, Error::LocalReset(reason));
    }

    /// A stream error on a stream torii keeps no state for (closed, or
    /// refused before it opened), because the peer broke a rule on it:
    /// counted like `reset_stream`.
    pub(super) fn reset_untracked(&mut self, id: u32, reason: Reason) {
        frame::put_rst_stream(self.wbuf(), id, reason);
        if self.role == Role::Server {
            self.peer_resets += 1;
        }
        self.wake_conn();
    }

    /// Resets a stream because torii's side gave up on it (the exchange was
    /// cancelled, or the body it sent broke off).
    pub(super) fn cancel_stream(&mut self, key: usize, reason: Reason) {
        self.reset_with(key, reason, Error::Cancelled(reason));
    }

    pub(super) fn reset_with(&mut self, key: usize, reason: Reason, error: Error) {
        let s = &mut self.streams[key];
        if s.state.is_closed() {
            return;
        }
        let id = s.id;
        s.state.reset(error);
        s.send_pending.clear();
        s.send_trailers = None;
        s.state.end_send();
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
    pub(super) fn after_change(&mut self, key: usize) {
        let s = &mut self.streams[key];
        if s.orphan && !s.lingering && s.state.send_ended() && !s.state.is_closed() {
            // Answered in full while the request is still arriving: read
            // the rest of it (bounded) rather than reset at once.
            if self.draining || self.lingering >= MAX_LINGERING {
                return self.cancel_stream(key, Reason::NO_ERROR);
            }
            s.lingering = true;
            self.lingering += 1;
        }
        let s = &mut self.streams[key];
        if s.counted && s.state.is_closed() {
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
            let how = match s.state.reset_error() {
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
    pub(super) fn flush_stream(&mut self, key: usize) {
        let max_frame = self.peer_max_frame;
        let Some(s) = self.streams.get_mut(key) else {
            return;
        };
        if s.state.reset_error().is_some() || !s.send_head_done {
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
                s.state.end_send();
            }
        }
        if s.send_pending.is_empty() {
            if let Some(trailers) = s.send_trailers.take() {
                let start = frame::reserve_head(&mut self.wbuf);
                fields::encode_trailers(self.encoder.get(Encoder::new), &trailers, &mut self.wbuf);
                crate::http2::maps::give(trailers);
                frame::finish_headers(&mut self.wbuf, start, id, true, max_frame);
                s.state.end_send();
                wrote = true;
            } else if s.send_eos && !s.state.send_ended() {
                // The body ended after its last DATA went out.
                ready(&mut self.wbuf, self.wbuf_hint);
                frame::put_data(&mut self.wbuf, id, &[], true);
                s.state.end_send();
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

    /// Gives blocked streams another go (a window opened, or the write
    /// buffer drained).
    pub(super) fn flush_blocked(&mut self) {
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
    pub(super) fn fail_all(&mut self, error: Error) {
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

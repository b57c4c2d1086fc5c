//! One stream: what it received, what it is sending, and where it is in
//! its life ([`State`], RFC 9113 §5.1).
//!
//! # The states
//!
//! ```text
//!                          idle
//!                            |
//!                   HEADERS, either way
//!                            |
//!                            v
//!   peer's END_STREAM   +---------+   torii's END_STREAM
//!        +--------------|  open   |---------------+
//!        |              +---------+               |
//!        v                   |                    v
//!  +-------------+           |             +-------------+
//!  | half-closed |           |             | half-closed |
//!  |  (remote)   |      RST_STREAM,        |   (local)   |
//!  +-------------+      either way         +-------------+
//!        |                   |                    |
//!  torii's END_STREAM,       |          peer's END_STREAM,
//!  or RST_STREAM             |          or RST_STREAM
//!        |                   v                    |
//!        +-------------> +--------+ <-------------+
//!                        | closed |
//!                        +--------+
//! ```
//!
//! The two `reserved` states of the RFC's figure never occur: torii
//! disables push (SETTINGS_ENABLE_PUSH 0) and PUSH_PROMISE is a connection
//! error.
//!
//! | RFC 9113 §5.1 | here |
//! |---|---|
//! | idle | not in `Inner::streams`; `Connection::is_idle` tells an idle id (even, or above the highest the peer opened, or not yet given out by torii) from a closed one |
//! | open | [`State::Open`] |
//! | half-closed (local) | [`State::HalfClosedLocal`]: torii's END_STREAM is in the write buffer |
//! | half-closed (remote) | [`State::HalfClosedRemote`]: the peer's END_STREAM arrived |
//! | closed | [`State::Closed`] (both sides ended) or [`State::Reset`] (RST_STREAM either way, or the connection's end); the stream stays in `Inner::streams` while a handle holds it, then `RecentClosed` remembers how it closed for the frames still in flight |
//!
//! Finer steps inside a state are kept beside it on [`Stream`]: whether
//! torii's head is out (`send_head_done`), the peer's head in (client:
//! `head_received`), END_STREAM only queued behind data (`send_eos`), and
//! on the server a stream whose handles are gone but whose answer is
//! still leaving or whose request is still arriving (`orphan`,
//! `lingering`). A client stream whose head waits for the connection's
//! task (`pending_head`) is still idle on the wire, but already counts as
//! open here (half-closed (local) if the head carries END_STREAM).

use std::collections::VecDeque;
use std::task::Waker;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::defences::LINGER_BYTES;
use crate::http2::{Error, Reason};

/// Where a stream is in RFC 9113 §5.1's lifecycle (see the module doc for
/// the diagram).
#[derive(Debug)]
pub(super) enum State {
    /// Both sides may send.
    Open,
    /// torii sent END_STREAM (or queued its head with it); the peer may
    /// still send.
    HalfClosedLocal,
    /// The peer sent END_STREAM; torii may still send.
    HalfClosedRemote,
    /// Both sides sent END_STREAM.
    Closed,
    /// Closed by RST_STREAM, sent or received, or by the end of the
    /// connection: `error` is what the stream's handles see. Whether each
    /// side had ended before is kept: a body the peer ended still reads
    /// to its end.
    Reset {
        error: Error,
        recv_ended: bool,
        send_ended: bool,
    },
}

impl State {
    /// The state of a stream whose sides have (or have not) ended.
    #[inline]
    fn of(recv_ended: bool, send_ended: bool) -> State {
        match (recv_ended, send_ended) {
            (false, false) => State::Open,
            (false, true) => State::HalfClosedLocal,
            (true, false) => State::HalfClosedRemote,
            (true, true) => State::Closed,
        }
    }

    /// The peer sent END_STREAM.
    #[inline]
    pub(super) fn recv_ended(&self) -> bool {
        match self {
            State::HalfClosedRemote | State::Closed => true,
            State::Reset { recv_ended, .. } => *recv_ended,
            State::Open | State::HalfClosedLocal => false,
        }
    }

    /// torii sent END_STREAM (or reset the stream).
    #[inline]
    pub(super) fn send_ended(&self) -> bool {
        match self {
            State::HalfClosedLocal | State::Closed => true,
            State::Reset { send_ended, .. } => *send_ended,
            State::Open | State::HalfClosedRemote => false,
        }
    }

    /// Nothing more may arrive on the stream: the peer ended it, or it was
    /// reset.
    #[inline]
    pub(super) fn recv_closed(&self) -> bool {
        !matches!(self, State::Open | State::HalfClosedLocal)
    }

    #[inline]
    pub(super) fn is_closed(&self) -> bool {
        matches!(self, State::Closed | State::Reset { .. })
    }

    /// Why the stream was reset, if it was.
    #[inline]
    pub(super) fn reset_error(&self) -> Option<&Error> {
        match self {
            State::Reset { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether the peer has ended its side: END_STREAM received, or (a
    /// client stream's response head) not yet after all.
    #[inline]
    pub(super) fn set_recv_ended(&mut self, ended: bool) {
        match self {
            State::Reset { recv_ended, .. } => *recv_ended = ended,
            _ => *self = State::of(ended, self.send_ended()),
        }
    }

    /// The peer sent END_STREAM.
    #[inline]
    pub(super) fn end_recv(&mut self) {
        match self {
            State::Open => *self = State::HalfClosedRemote,
            State::HalfClosedLocal => *self = State::Closed,
            State::Reset { recv_ended, .. } => *recv_ended = true,
            State::HalfClosedRemote | State::Closed => {}
        }
    }

    /// torii ended its side: END_STREAM written, or RST_STREAM.
    #[inline]
    pub(super) fn end_send(&mut self) {
        match self {
            State::Reset { send_ended, .. } => *send_ended = true,
            _ => *self = State::of(self.recv_ended(), true),
        }
    }

    /// RST_STREAM, either way, or the end of the connection: closed with
    /// `error`.
    pub(super) fn reset(&mut self, error: Error) {
        *self = State::Reset {
            error,
            recv_ended: self.recv_ended(),
            send_ended: self.send_ended(),
        };
    }
}

/// A stream's body chunks waiting to be sent, in order. Nearly always
/// one at a time (a unary message, or a streamed one the window lets
/// through): the first is held inline, and only a second one allocates.
#[derive(Default)]
pub(super) struct Chunks {
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
}

impl Chunks {
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    #[inline]
    pub(super) fn front_mut(&mut self) -> Option<&mut Bytes> {
        self.first.as_mut()
    }

    #[inline]
    pub(super) fn push_back(&mut self, chunk: Bytes) {
        if self.first.is_none() {
            self.first = Some(chunk);
        } else {
            self.rest.push_back(chunk);
        }
    }

    #[inline]
    pub(super) fn pop_front(&mut self) -> Option<Bytes> {
        let front = self.first.take();
        self.first = self.rest.pop_front();
        front
    }

    #[inline]
    pub(super) fn clear(&mut self) {
        self.first = None;
        self.rest.clear();
    }
}

pub(super) struct Stream {
    pub(super) id: u32,
    /// Live handles (body, responder); at 0 the stream is forgotten.
    pub(super) handles: u8,
    /// Counted in `Inner::active` (open or half-closed).
    pub(super) counted: bool,
    // Receiving.
    pub(super) recv_buf: BytesMut,
    /// Data was handed to the application before: `recv_buf` is split
    /// from then on (its spare room is reused), instead of handed over
    /// whole.
    pub(super) recv_split: bool,
    pub(super) recv_trailers: Option<HeaderMap>,
    /// The head itself ended the stream (END_STREAM on HEADERS): the
    /// body is known empty from the start.
    pub(super) head_ended: bool,
    /// What the peer may still send on this stream.
    pub(super) recv_window: i64,
    /// Taken by the application, not yet given back with WINDOW_UPDATE.
    pub(super) recv_released: u32,
    /// What is left of the body the content-length announced.
    pub(super) recv_expect: Option<u64>,
    pub(super) recv_waker: Option<Waker>,
    // Sending.
    pub(super) send_window: i64,
    pub(super) send_pending: Chunks,
    /// END_STREAM goes with the last pending byte (or trailers).
    pub(super) send_eos: bool,
    pub(super) send_trailers: Option<HeaderMap>,
    pub(super) send_head_done: bool,
    pub(super) send_waker: Option<Waker>,
    /// In `Inner::blocked` (queued once, however often it is flushed).
    pub(super) blocked: bool,
    /// Where the stream is in its life (RFC 9113 §5.1).
    pub(super) state: State,
    /// Client side: the response head, once it arrived (taken by the
    /// response future).
    pub(super) response: Option<http::response::Parts>,
    pub(super) head_received: bool,
    /// Client side: the request head, until the connection's task encodes
    /// it. A stream reset before then never reaches the wire at all (as a
    /// client that cancels at once would otherwise make torii look like a
    /// rapid-reset attacker to the upstream).
    pub(super) pending_head: Option<Box<http::request::Parts>>,
    /// Client side: the request head once written, kept until the response
    /// head arrives: a stream the upstream refuses unprocessed (RFC 9113
    /// §8.7) hands it back to be sent again.
    pub(super) sent_head: Option<Box<http::request::Parts>>,
    /// Client side: `sent_head` is kept past the response head, for as
    /// long as the stream has handles (a retry policy may send the
    /// request again after reading the response's status).
    pub(super) keep_head: bool,
    /// Client side: a HEAD request (its response has no body, whatever
    /// its content-length says).
    pub(super) head_request: bool,
    /// Server side: every handle is gone but the stream goes on: its
    /// answer was handed over whole and is still leaving (the peer's
    /// window), or the request is still arriving (see `LINGER_BYTES`).
    pub(super) orphan: bool,
    /// An orphan whose answer is out, reading (and dropping) the rest of
    /// its request; counted in `Inner::lingering`.
    pub(super) lingering: bool,
    /// What a lingering stream may still read.
    pub(super) linger_left: u32,
}

impl Stream {
    pub(super) fn new(id: u32, recv_window: u32, send_window: u32) -> Stream {
        Stream {
            id,
            handles: 0,
            counted: true,
            recv_buf: BytesMut::new(),
            recv_split: false,
            recv_trailers: None,
            head_ended: false,
            recv_window: recv_window.into(),
            recv_released: 0,
            recv_expect: None,
            recv_waker: None,
            send_window: send_window.into(),
            send_pending: Chunks::default(),
            send_eos: false,
            send_trailers: None,
            send_head_done: false,
            send_waker: None,
            blocked: false,
            state: State::Open,
            response: None,
            head_received: false,
            pending_head: None,
            sent_head: None,
            keep_head: false,
            head_request: false,
            orphan: false,
            lingering: false,
            linger_left: LINGER_BYTES,
        }
    }

    /// Client side: the stream failed and the upstream certainly did not
    /// process it — refused (REFUSED_STREAM), above a GOAWAY's last stream
    /// id, or never written at all (RFC 9113 §8.7) — so it may be sent
    /// again, whatever its method.
    pub(super) fn unprocessed(&self, connection_error: bool) -> bool {
        if self.head_received {
            return false;
        }
        match self.state.reset_error() {
            Some(Error::Reset(Reason::REFUSED_STREAM)) => true,
            // Set only by a received GOAWAY, on streams above its last id.
            Some(Error::GoAway { remote: true, .. }) => true,
            Some(_) => false,
            None => connection_error && self.pending_head.is_some(),
        }
    }

    pub(super) fn wake(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
        if let Some(w) = self.send_waker.take() {
            w.wake();
        }
    }
}

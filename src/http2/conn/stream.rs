//! One stream: what it received, what it is sending, and where it is in
//! its life.

use std::collections::VecDeque;
use std::task::Waker;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::super::{Error, Reason};
use super::defences::LINGER_BYTES;

/// A stream's body chunks waiting to be sent, in order. Nearly always
/// one at a time (a unary message, or a streamed one the window lets
/// through): the first is held inline, and only a second one allocates.
#[derive(Default)]
pub(super) struct Chunks {
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
}

impl Chunks {
    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(super) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub(super) fn front_mut(&mut self) -> Option<&mut Bytes> {
        self.first.as_mut()
    }

    pub(super) fn push_back(&mut self, chunk: Bytes) {
        if self.first.is_none() {
            self.first = Some(chunk);
        } else {
            self.rest.push_back(chunk);
        }
    }

    pub(super) fn pop_front(&mut self) -> Option<Bytes> {
        let front = self.first.take();
        self.first = self.rest.pop_front();
        front
    }

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
    pub(super) recv_eos: bool,
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
    /// END_STREAM written (or the stream reset).
    pub(super) send_done: bool,
    pub(super) send_head_done: bool,
    pub(super) send_waker: Option<Waker>,
    /// In `Inner::blocked` (queued once, however often it is flushed).
    pub(super) blocked: bool,
    pub(super) reset: Option<Error>,
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

    pub(super) fn is_closed(&self) -> bool {
        self.reset.is_some() || (self.recv_eos && self.send_done)
    }

    /// Client side: the stream failed and the upstream certainly did not
    /// process it — refused (REFUSED_STREAM), above a GOAWAY's last stream
    /// id, or never written at all (RFC 9113 §8.7) — so it may be sent
    /// again, whatever its method.
    pub(super) fn unprocessed(&self, connection_error: bool) -> bool {
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

    pub(super) fn wake(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
        if let Some(w) = self.send_waker.take() {
            w.wake();
        }
    }
}

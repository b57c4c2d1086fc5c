//! The handles on a stream that the rest of torii holds: [`RecvBody`],
//! [`SendBody`], and the [`StreamRef`] under them (a stream lives while a
//! handle does).

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;

use super::shared::{lock, ready, register, Inner, Role};
use super::stream::Stream;
use crate::http2::frame;
use crate::http2::hpack::Encoder;
use crate::http2::{Error, Reason};

/// A handle on one stream; the stream lives while a handle does.
pub(in crate::http2) struct StreamRef {
    shared: Arc<Mutex<Inner>>,
    pub(super) key: usize,
}

impl StreamRef {
    /// Client side: the request head the stream still holds (not yet
    /// written, or kept after it was), taken.
    pub(in crate::http2) fn take_request_head(&self) -> Option<Box<http::request::Parts>> {
        let mut inner = self.lock();
        let s = &mut inner.streams[self.key];
        s.pending_head.take().or_else(|| s.sent_head.take())
    }
}

impl StreamRef {
    pub(super) fn new(shared: &Arc<Mutex<Inner>>, inner: &mut Inner, key: usize) -> StreamRef {
        inner.streams[key].handles += 1;
        StreamRef {
            shared: shared.clone(),
            key,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared)
    }

    /// Why the stream cannot go on, if it cannot.
    pub(super) fn error_of(inner: &Inner, s: &Stream) -> Option<Error> {
        s.state.reset_error().cloned().or_else(|| {
            if s.state.is_closed() {
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
        if s.handles == 0 && !s.state.is_closed() {
            if failed {
                s.state.reset(Error::Closed);
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
                let reason = if s.state.send_ended() {
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

/// The next frame of a [`RecvBody`], looked at and left in place.
pub enum Peek<'a> {
    Data,
    Trailers(&'a HeaderMap),
    /// The body ended without trailers.
    End,
    /// The stream failed.
    Error,
}

impl RecvBody {
    pub(in crate::http2) fn new(stream: StreamRef) -> RecvBody {
        RecvBody { stream }
    }

    /// Client side, on a stream opened keeping its request head
    /// ([`crate::http2::client::Client::send_request_keeping_head`]): that
    /// head, once.
    pub fn take_request_head(&mut self) -> Option<Box<http::request::Parts>> {
        self.stream.take_request_head()
    }

    /// Client side: lets go of a kept request head now (nothing will send
    /// it again), rather than when the stream ends.
    pub fn release_request_head(&mut self) {
        if let Some(head) = self.take_request_head() {
            crate::http2::maps::give(head.headers);
        }
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
        s.state.recv_ended()
            && s.recv_buf.is_empty()
            && s.recv_trailers.is_none()
            && (s.head_ended || s.recv_split)
    }

    /// What the next frame is, without taking it: data, the trailers
    /// (lent to `look`), the end, or an error. Pending (and `cx` woken)
    /// until one of them has arrived.
    pub fn poll_peek<R>(
        &mut self,
        cx: &mut Context<'_>,
        look: impl FnOnce(Peek<'_>) -> R,
    ) -> Poll<R> {
        self.peek(Some(cx), look)
    }

    /// [`poll_peek`](Self::poll_peek) without waiting: None while nothing
    /// has arrived.
    pub fn peek_now<R>(&self, look: impl FnOnce(Peek<'_>) -> R) -> Option<R> {
        match self.peek(None, look) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }

    fn peek<R>(&self, cx: Option<&mut Context<'_>>, look: impl FnOnce(Peek<'_>) -> R) -> Poll<R> {
        let mut guard = self.stream.lock();
        let inner = &mut *guard;
        let key = self.stream.key;
        let s = &inner.streams[key];
        if !s.recv_buf.is_empty() {
            return Poll::Ready(look(Peek::Data));
        }
        if let Some(t) = &s.recv_trailers {
            return Poll::Ready(look(Peek::Trailers(t)));
        }
        if s.state.recv_ended() {
            return Poll::Ready(look(Peek::End));
        }
        if StreamRef::error_of(inner, s).is_some() {
            return Poll::Ready(look(Peek::Error));
        }
        if let Some(cx) = cx {
            register(&mut inner.streams[key].recv_waker, cx);
        }
        Poll::Pending
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
        if s.state.recv_ended() {
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
    pub(in crate::http2) fn new(stream: StreamRef) -> SendBody {
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
        if s.state.send_ended() || s.send_eos {
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

pub(in crate::http2) fn poll_reset(stream: &StreamRef, cx: &mut Context<'_>) -> Poll<Error> {
    let mut inner = stream.lock();
    let key = stream.key;
    if let Some(e) = StreamRef::error_of(&inner, &inner.streams[key]) {
        return Poll::Ready(e);
    }
    register(&mut inner.streams[key].send_waker, cx);
    Poll::Pending
}

pub(in crate::http2) fn send_reset(stream: &StreamRef, reason: Reason) {
    let mut inner = stream.lock();
    if inner.error.is_none() {
        inner.cancel_stream(stream.key, reason);
    }
}

/// Sends a response (or request) head on a stream.
pub(in crate::http2) fn send_head(
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
        s.state.end_send();
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

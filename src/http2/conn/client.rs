//! The client side of a connection (torii opening streams to an upstream):
//! opening streams under the server's limit, writing their heads in id
//! order, response heads, and telling which failed streams the upstream
//! never processed (RFC 9113 §8.7).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};

use super::fault::Fault;
use super::handles::StreamRef;
use super::shared::{lock, ready, register, Inner};
use super::stream::Stream;
use super::{Connection, MAX_STREAM_ID};
use crate::http2::fields::{self, ResponseHead};
use crate::http2::frame;
use crate::http2::hpack::Encoder;
use crate::http2::{Error, Reason};

/// Client side: every client handle is gone; the connection ends when its
/// streams have.
pub(in crate::http2) fn client_gone(shared: &Mutex<Inner>) {
    let mut inner = lock(shared);
    inner.client_gone = true;
    inner.inline_poll = false;
    inner.wake_conn();
}

pub(in crate::http2) fn client_is_closed(shared: &Mutex<Inner>) -> bool {
    let inner = lock(shared);
    inner.error.is_some() || inner.goaway_received || inner.next_stream_id > MAX_STREAM_ID
}

pub(in crate::http2) fn client_poll_ready(
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
pub(in crate::http2) fn open_stream(
    shared: &Arc<Mutex<Inner>>,
    head: http::request::Parts,
    end_stream: bool,
    keep_head: bool,
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
    if end_stream {
        stream.state.end_send();
    }
    stream.head_request = head.method == http::Method::HEAD;
    stream.pending_head = Some(Box::new(head));
    stream.keep_head = keep_head;
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

/// Client side: the server's stream limit as last announced, shared.
pub(in crate::http2) fn peer_max_streams(
    shared: &Mutex<Inner>,
) -> Arc<std::sync::atomic::AtomicU32> {
    lock(shared).peer_max_seen.clone()
}

/// Client side: the response head, once it has arrived.
pub(in crate::http2) fn poll_response(
    stream: &StreamRef,
    cx: &mut Context<'_>,
) -> Poll<Result<http::response::Parts, Error>> {
    let mut inner = stream.lock();
    let key = stream.key;
    if let Some(head) = inner.streams[key].response.take() {
        return Poll::Ready(Ok(head));
    }
    let s = &inner.streams[key];
    let error = s
        .state
        .reset_error()
        .cloned()
        .or_else(|| inner.error.clone());
    if let Some(e) = error {
        return Poll::Ready(Err(e));
    }
    register(&mut inner.streams[key].recv_waker, cx);
    Poll::Pending
}

/// Client side, after the response future failed: the request head, when
/// the upstream certainly did not process the stream (see
/// [`Stream::unprocessed`]).
pub(in crate::http2) fn take_unprocessed(stream: &StreamRef) -> Option<Box<http::request::Parts>> {
    let mut guard = stream.lock();
    let inner = &mut *guard;
    let connection_error = inner.error.is_some();
    let s = &mut inner.streams[stream.key];
    if !s.unprocessed(connection_error) {
        return None;
    }
    s.pending_head.take().or_else(|| s.sent_head.take())
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Connection<IO> {
    /// Client side: the response head of one of torii's streams.
    pub(super) fn response_head(
        &mut self,
        id: u32,
        end_stream: bool,
        block: &[u8],
    ) -> Result<(), Fault> {
        let mut head = ResponseHead::default();
        let info = self.decode(block, |f| head.field(f))?;
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        let Some(&key) = inner.ids.get(&id) else {
            return Ok(());
        };
        if inner.streams[key].state.reset_error().is_some() {
            return Ok(());
        }
        let (parts, content_length) = match head.finish() {
            Ok(h) if !info.over_limit => h,
            Ok(_) => {
                tracing::debug!(size = info.list_size, "response header list over the limit");
                return Err(Fault::Stream(id, Reason::PROTOCOL_ERROR));
            }
            Err(why) => {
                tracing::debug!("malformed response head from the upstream: {why}");
                return Err(Fault::Stream(id, Reason::PROTOCOL_ERROR));
            }
        };
        if parts.status.is_informational() {
            // 100 Continue and friends: the real head follows.
            if end_stream {
                return Err(Fault::Stream(id, Reason::PROTOCOL_ERROR));
            }
            return Ok(());
        }
        let s = &mut inner.streams[key];
        let bodiless = s.head_request
            || parts.status == http::StatusCode::NO_CONTENT
            || parts.status == http::StatusCode::NOT_MODIFIED;
        s.head_received = true;
        s.response = Some(parts);
        if !s.keep_head {
            if let Some(head) = s.sent_head.take() {
                // Kept until now only to send it again (a stream refused
                // unprocessed); done with.
                crate::http2::maps::give(head.headers);
            }
        }
        s.recv_expect = if bodiless { None } else { content_length };
        s.state.set_recv_ended(end_stream);
        s.head_ended = end_stream;
        if let Some(w) = s.recv_waker.take() {
            w.wake();
        }
        if end_stream {
            inner.after_change(key);
        }
        Ok(())
    }
}

impl Inner {
    /// Client side: encodes the heads of new streams (in the order they
    /// were opened, so stream ids rise on the wire), then their bodies.
    pub(super) fn write_heads(&mut self) {
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
            let end_stream = s.state.send_ended();
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
}

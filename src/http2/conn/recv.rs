//! Frames in: bytes read become whole frames, dispatched by type; DATA
//! (§6.1), HEADERS and CONTINUATION (§6.2, §6.10) and the header blocks
//! they carry — requests opening streams, trailers (§8.1) — and frames on
//! streams torii no longer tracks (§5.1).

use http::Request;
use tokio::io::{AsyncRead, AsyncWrite};

use super::defences::{EMPTY_DATA_BUDGET, MAX_BLOCK, MAX_CONTINUATIONS};
use super::fault::Fault;
use super::handles::{RecvBody, StreamRef};
use super::shared::{lock, ClosedBy, Inner, Role};
use super::stream::Stream;
use super::{Connection, Continuation, Opened, State};
use crate::http2::fields::{RequestHead, Trailers};
use crate::http2::frame::{self, flag, kind, Head};
use crate::http2::hpack::{BlockInfo, Decoder, Encoder, Field};
use crate::http2::{Error, Reason};

/// Our SETTINGS_HEADER_TABLE_SIZE (the default; never announced).
const DECODER_TABLE_SIZE: usize = 4096;

/// A frame larger than torii accepts (it never raises
/// SETTINGS_MAX_FRAME_SIZE): a connection error (RFC 9113 §4.2).
fn frame_too_large(head: &Head) -> Fault {
    Fault::connection(
        Reason::FRAME_SIZE_ERROR,
        format!(
            "a {}-byte frame (the limit is {})",
            head.len,
            frame::DEFAULT_MAX_FRAME
        ),
    )
}

/// A frame the peer may not send on a stream it reset itself: a stream
/// error STREAM_CLOSED (§5.1), sent without touching the stream. Frames on
/// streams torii reset are ignored (the peer may not have known yet).
fn after_peer_reset(s: &Stream) -> Result<(), Fault> {
    match s.state.reset_error() {
        Some(Error::Reset(_)) => Err(Fault::Closed(s.id)),
        _ => Ok(()),
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Connection<IO> {
    /// Handles newly read bytes: whole frames, and what is left of an
    /// incomplete one.
    pub(super) fn received(&mut self, mut data: &[u8]) {
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
            match self.partial.complete(&mut data) {
                Ok(Some(whole)) => {
                    let head = Head::parse(&whole);
                    self.frame(head, &whole[frame::HEADER_LEN..]);
                }
                Ok(None) => return,
                Err(head) => return self.answer(frame_too_large(&head)),
            }
        }
        while self.state != State::Closing {
            match frame::next(&mut data) {
                Ok(Some((head, payload))) => self.frame(head, payload),
                Ok(None) => break,
                Err(head) => return self.answer(frame_too_large(&head)),
            }
        }
        if self.state != State::Closing && !data.is_empty() {
            self.partial.keep(data);
        }
        // Once per read, not per frame (it takes the lock): a read holds
        // at most 32 KiB of frames.
        if self.role == Role::Server {
            if let Err(fault) = self.count_peer_resets() {
                self.answer(fault);
            }
        }
    }

    /// Handles one whole frame.
    fn frame(&mut self, head: Head, payload: &[u8]) {
        if let Err(fault) = self.dispatch(head, payload) {
            self.answer(fault);
        }
    }

    /// The one place where what a handler found wrong becomes frames:
    /// RST_STREAM for a stream error, GOAWAY (and the end of the
    /// connection) for a connection error.
    #[cold]
    #[inline(never)]
    pub(super) fn answer(&mut self, fault: Fault) {
        match fault {
            Fault::Connection(e) => {
                let (reason, what) = *e;
                self.connection_error(reason, what)
            }
            Fault::Stream(id, reason) => {
                let mut inner = lock(&self.shared);
                if let Some(&key) = inner.ids.get(&id) {
                    inner.reset_stream(key, reason);
                }
            }
            Fault::Untracked(id, reason) => lock(&self.shared).reset_untracked(id, reason),
            Fault::Closed(id) => {
                let mut inner = lock(&self.shared);
                frame::put_rst_stream(inner.wbuf(), id, Reason::STREAM_CLOSED);
                inner.wake_conn();
            }
            Fault::Refused(id, reason) => {
                let mut inner = lock(&self.shared);
                inner.reset_untracked(id, reason);
                inner.recent.record(id, ClosedBy::Us);
            }
            Fault::Malformed(id) => {
                {
                    let mut inner = lock(&self.shared);
                    frame::put_rst_stream(inner.wbuf(), id, Reason::PROTOCOL_ERROR);
                    inner.recent.record(id, ClosedBy::Us);
                }
                if !self.resets.take() {
                    self.connection_error(
                        Reason::ENHANCE_YOUR_CALM,
                        "too many malformed requests".into(),
                    );
                }
            }
        }
    }

    /// Hands a frame to the handler of its type, once it is allowed at
    /// all here (SETTINGS first, nothing inside a header block).
    fn dispatch(&mut self, head: Head, payload: &[u8]) -> Result<(), Fault> {
        if self.state == State::Settings && head.kind != kind::SETTINGS {
            return Err(Fault::connection(
                Reason::PROTOCOL_ERROR,
                "the first frame was not SETTINGS".into(),
            ));
        }
        if let Some(c) = &self.continuation {
            if head.kind != kind::CONTINUATION || head.stream != c.stream {
                return Err(Fault::connection(
                    Reason::PROTOCOL_ERROR,
                    "a header block was interrupted by another frame".into(),
                ));
            }
        }
        match head.kind {
            kind::DATA => self.on_data(head, payload),
            kind::HEADERS => self.on_headers(head, payload),
            kind::PRIORITY => self.on_priority(head, payload),
            kind::RST_STREAM => self.on_rst_stream(head, payload),
            kind::SETTINGS => self.on_settings(head, payload),
            kind::PUSH_PROMISE => Err(Fault::connection(
                Reason::PROTOCOL_ERROR,
                "PUSH_PROMISE (push is disabled)".into(),
            )),
            kind::PING => self.on_ping(head, payload),
            kind::GOAWAY => self.on_goaway(head, payload),
            kind::WINDOW_UPDATE => self.on_window_update(head, payload),
            kind::CONTINUATION => self.on_continuation(head, payload),
            _ => Ok(()), // Unknown frame types are ignored (RFC 9113 §4.1).
        }
    }

    /// DATA or HEADERS on a stream torii no longer tracks: idle (never
    /// opened: a connection error), reset by torii (the peer's frames may
    /// still be in flight: ignored, RFC 9113 §5.1), or closed (STREAM_CLOSED:
    /// a connection error once the peer had ended it, else a stream error).
    fn frame_on_closed(&self, inner: &Inner, id: u32, what: &str) -> Result<(), Fault> {
        if self.is_idle(id, inner) {
            return Err(Fault::connection(
                Reason::PROTOCOL_ERROR,
                format!("{what} on stream {id}, which was never opened (idle)"),
            ));
        }
        match inner.recent.get(id) {
            Some(ClosedBy::Us) => Ok(()),
            Some(ClosedBy::Ended) => Err(Fault::connection(
                Reason::STREAM_CLOSED,
                format!("{what} on stream {id} after it had ended"),
            )),
            Some(ClosedBy::PeerReset) | None => Err(Fault::Closed(id)),
        }
    }

    /// A stream nobody has opened yet.
    pub(super) fn is_idle(&self, id: u32, inner: &Inner) -> bool {
        match self.role {
            Role::Server => id.is_multiple_of(2) || id > self.last_peer_stream,
            Role::Client => id.is_multiple_of(2) || id >= inner.next_stream_id,
        }
    }

    fn on_data(&mut self, head: Head, payload: &[u8]) -> Result<(), Fault> {
        let data = frame::data(&head, payload)?;
        let eos = head.has(flag::END_STREAM);
        if data.is_empty() && !eos {
            self.empty_data_budget = self.empty_data_budget.saturating_sub(1);
            if self.empty_data_budget == 0 {
                return Err(Fault::connection(
                    Reason::ENHANCE_YOUR_CALM,
                    "too many empty DATA frames".into(),
                ));
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
            return Err(Fault::connection(
                Reason::FLOW_CONTROL_ERROR,
                "the peer sent more than the connection window allowed".into(),
            ));
        }
        let Some(&key) = inner.ids.get(&head.stream) else {
            inner.release_connection(len);
            return self.frame_on_closed(inner, head.stream, "DATA");
        };
        let id = head.stream;
        let s = &mut inner.streams[key];
        if s.state.recv_closed() {
            inner.release_connection(len);
            let s = &inner.streams[key];
            if !s.state.is_closed() {
                // Half-closed (remote): RFC 9113 §5.1.
                return Err(Fault::Stream(id, Reason::STREAM_CLOSED));
            }
            return after_peer_reset(s);
        }
        s.recv_window -= len as i64;
        if s.recv_window < 0 {
            inner.release_connection(len);
            return Err(Fault::Stream(id, Reason::FLOW_CONTROL_ERROR));
        }
        if let Some(expect) = &mut s.recv_expect {
            match expect.checked_sub(data.len() as u64) {
                Some(left) if !eos || left == 0 => *expect = left,
                _ => {
                    inner.release_connection(len);
                    return Err(Fault::Stream(id, Reason::PROTOCOL_ERROR));
                }
            }
        }
        if s.orphan {
            // Nobody reads this request any more: dropped, and only the
            // connection's window is given back (the stream's bounds how
            // much more the peer sends).
            if eos {
                s.state.end_recv();
            }
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
                inner.cancel_stream(key, Reason::NO_ERROR);
            } else {
                inner.after_change(key);
            }
            return Ok(());
        }
        if s.recv_buf.is_empty() && !s.recv_split {
            // A stream's first data, a unary body in one frame most often:
            // a slice of the connection's chunk (see `chunk`).
            s.recv_buf = self.data_chunk.copy(data);
        } else {
            s.recv_buf.extend_from_slice(data);
        }
        if eos {
            s.state.end_recv();
        }
        if let Some(w) = s.recv_waker.take() {
            w.wake();
        }
        // Padding is not passed on: it goes back at once.
        inner.release_stream(key, len - data.len());
        inner.release_connection(len - data.len());
        if eos {
            inner.after_change(key);
        }
        Ok(())
    }

    fn on_headers(&mut self, head: Head, payload: &[u8]) -> Result<(), Fault> {
        let headers = frame::headers(&head, payload)?;
        // RFC 9113 §5.3.1: a stream error, once the block is decoded (HPACK
        // must stay in step).
        self.self_dependent = headers.depends_on == Some(head.stream);
        let block = headers.block;
        let end_stream = head.has(flag::END_STREAM);
        if head.has(flag::END_HEADERS) {
            return self.header_block(head.stream, end_stream, block);
        }
        self.continuation = Some(Box::new(Continuation {
            stream: head.stream,
            end_stream,
            block: block.to_vec(),
            frames: 0,
        }));
        Ok(())
    }

    // Not on a request's path: kept out of the per-frame dispatch.
    #[inline(never)]
    fn on_continuation(&mut self, head: Head, payload: &[u8]) -> Result<(), Fault> {
        let Some(c) = &mut self.continuation else {
            return Err(Fault::connection(
                Reason::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS".into(),
            ));
        };
        c.frames += 1;
        if c.block.len() + payload.len() > MAX_BLOCK || c.frames > MAX_CONTINUATIONS {
            return Err(Fault::connection(
                Reason::ENHANCE_YOUR_CALM,
                format!(
                    "a header block of more than {} KiB or {MAX_CONTINUATIONS} CONTINUATION frames",
                    MAX_BLOCK / 1024
                ),
            ));
        }
        c.block.extend_from_slice(payload);
        if head.has(flag::END_HEADERS) {
            let c = self.continuation.take().expect("checked above");
            return self.header_block(c.stream, c.end_stream, &c.block);
        }
        Ok(())
    }

    /// A complete header block on `id`: a new request, a response head,
    /// or trailers.
    fn header_block(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), Fault> {
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
                self.decode(block, |_| {})?;
                let inner = lock(&self.shared);
                if self.is_idle(id, &inner) {
                    return Err(Fault::connection(
                        Reason::PROTOCOL_ERROR,
                        format!("HEADERS on stream {id}, which torii never opened"),
                    ));
                }
                self.frame_on_closed(&inner, id, "HEADERS")
            }
        }
    }

    /// Decodes a header block (up to our header list limit); a block HPACK
    /// cannot decode is a connection error (COMPRESSION_ERROR).
    pub(super) fn decode(
        &mut self,
        block: &[u8],
        emit: impl FnMut(Field),
    ) -> Result<BlockInfo, Fault> {
        let limit = self.config.max_header_list_size as usize;
        self.decoder
            .get(|| Decoder::new(DECODER_TABLE_SIZE))
            .decode(block, limit, emit)
            .map_err(|e| Fault::connection(Reason::COMPRESSION_ERROR, e.to_string()))
    }

    /// Trailers: the last header block of a stream.
    fn trailers(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), Fault> {
        let self_dependent = std::mem::take(&mut self.self_dependent);
        let mut trailers = Trailers::default();
        let info = self.decode(block, |f| trailers.field(f))?;
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        let Some(&key) = inner.ids.get(&id) else {
            return Ok(());
        };
        let s = &mut inner.streams[key];
        if s.state.recv_closed() {
            if !s.state.is_closed() {
                return Err(Fault::Stream(id, Reason::STREAM_CLOSED));
            }
            return after_peer_reset(s);
        }
        let trailers = match trailers.finish() {
            Ok(t) if end_stream && !info.over_limit && !self_dependent => t,
            _ => return Err(Fault::Stream(id, Reason::PROTOCOL_ERROR)),
        };
        if matches!(s.recv_expect, Some(n) if n != 0) {
            return Err(Fault::Stream(id, Reason::PROTOCOL_ERROR));
        }
        s.recv_trailers = Some(trailers);
        s.state.end_recv();
        if let Some(w) = s.recv_waker.take() {
            w.wake();
        }
        inner.after_change(key);
        Ok(())
    }

    /// Server side: HEADERS on a stream id at or below the highest the
    /// client opened, and no longer tracked.
    fn headers_on_closed(&self, id: u32) -> Result<(), Fault> {
        let closed_by = lock(&self.shared).recent.get(id);
        match closed_by {
            // torii reset it; the client may not have known yet.
            Some(ClosedBy::Us) => Ok(()),
            Some(ClosedBy::PeerReset) => Err(Fault::Closed(id)),
            Some(ClosedBy::Ended) => Err(Fault::connection(
                Reason::STREAM_CLOSED,
                format!("HEADERS on stream {id} after it had ended"),
            )),
            None => {
                let last = self.last_peer_stream;
                Err(Fault::connection(
                    Reason::PROTOCOL_ERROR,
                    format!("HEADERS opening stream {id}, lower than stream {last} it had opened before (stream ids must rise)"),
                ))
            }
        }
    }

    /// Server side: a HEADERS block that opens a stream (or arrives on one
    /// that has closed and been forgotten).
    fn request_head(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), Fault> {
        let mut request = RequestHead::default();
        let info = self.decode(block, |f| request.field(f))?;
        if id <= self.last_peer_stream {
            return self.headers_on_closed(id);
        }
        if std::mem::take(&mut self.self_dependent) && !id.is_multiple_of(2) {
            self.last_peer_stream = id;
            return Err(Fault::Refused(id, Reason::PROTOCOL_ERROR));
        }
        if id.is_multiple_of(2) {
            return Err(Fault::connection(
                Reason::PROTOCOL_ERROR,
                format!("the client opened stream {id} (even)"),
            ));
        }
        self.last_peer_stream = id;
        if self.state != State::Open {
            // Draining: streams after the GOAWAY are not processed.
            return Ok(());
        }
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        if inner.active >= self.config.max_concurrent_streams {
            frame::put_rst_stream(inner.wbuf(), id, Reason::REFUSED_STREAM);
            inner.recent.record(id, ClosedBy::Us);
            return Ok(());
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
            encoder.encode_pseudo(crate::http2::hpack::Name::Status, b"431", &mut inner.wbuf);
            frame::finish_headers(&mut inner.wbuf, start, id, true, inner.peer_max_frame);
            if !end_stream {
                frame::put_rst_stream(&mut inner.wbuf, id, Reason::NO_ERROR);
                inner.recent.record(id, ClosedBy::Us);
            }
            return Ok(());
        }
        let (parts, content_length) = match request.finish() {
            Ok(r) => r,
            Err(why) => {
                tracing::debug!(
                    stream = id,
                    "malformed request: {why}; resetting the stream"
                );
                return Err(Fault::Malformed(id));
            }
        };
        if end_stream && matches!(content_length, Some(n) if n != 0) {
            return Err(Fault::Refused(id, Reason::PROTOCOL_ERROR));
        }
        let mut stream = Stream::new(id, inner.our_stream_window, inner.peer_initial_window);
        if end_stream {
            stream.state.end_recv();
        }
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
        Ok(())
    }
}

//! What torii's HTTP/2 server (client side) and HTTP/2 client (upstream
//! side) share: a received body that can stop a pipe when dropped, and a
//! pipe that sends a body into a stream no faster than the peer's windows
//! allow.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use super::Body;
use crate::error::BoxError;
use crate::http2::{Reason, RecvBody, SendBody};

/// A body arriving on an HTTP/2 stream.
pub struct H2Received {
    recv: RecvBody,
    /// Dropping it stops a request body's pipe to the upstream, if one runs.
    _cancel: Option<oneshot::Sender<()>>,
    /// A response to a request sent for a retry policy: what was sent of
    /// the request's body, to send the request again (its head is kept by
    /// the stream).
    kept: Kept,
}

enum Kept {
    Nothing,
    /// A body sent whole as one chunk (a unary call's), or empty: kept
    /// without a box.
    One(Bytes),
    Body(Box<KeptBody>),
}

/// The body of a request sent for a retry policy, as the upstream
/// transport keeps it.
pub enum KeptBody {
    /// The body was whole when sent: all of it.
    Whole(Recorded),
    /// Still streaming in: its pipe's task records it, and hands the
    /// record and the rest of the body back when the stream ends.
    Streaming(oneshot::Receiver<(Recorded, Body)>),
}

impl H2Received {
    pub fn new(recv: RecvBody, cancel: Option<oneshot::Sender<()>>) -> Self {
        H2Received {
            recv,
            _cancel: cancel,
            kept: Kept::Nothing,
        }
    }

    /// A response body whose request is kept to be sent again.
    pub fn keeping(recv: RecvBody, cancel: Option<oneshot::Sender<()>>, kept: KeptBody) -> Self {
        let kept = match kept {
            KeptBody::Whole(record) => match record.into_one() {
                Ok(chunk) => Kept::One(chunk),
                Err(record) => Kept::Body(Box::new(KeptBody::Whole(record))),
            },
            streaming => Kept::Body(Box::new(streaming)),
        };
        H2Received {
            recv,
            _cancel: cancel,
            kept,
        }
    }

    /// What the next frame is, without taking it ([`RecvBody::poll_peek`]).
    pub fn poll_peek<R>(
        &mut self,
        cx: &mut Context<'_>,
        look: impl FnOnce(crate::http2::Peek<'_>) -> R,
    ) -> Poll<R> {
        self.recv.poll_peek(cx, look)
    }

    /// [`poll_peek`](Self::poll_peek) without waiting.
    pub fn peek_now<R>(&self, look: impl FnOnce(crate::http2::Peek<'_>) -> R) -> Option<R> {
        self.recv.peek_now(look)
    }

    /// Whether the request could be taken back whole. A body still
    /// streaming in when the answer came is not known until its pipe ends
    /// ([`take_request`](Self::take_request) tells).
    pub fn can_take_request(&self) -> bool {
        match &self.kept {
            Kept::One(_) => true,
            Kept::Body(body) => match &**body {
                KeptBody::Whole(record) => record.is_whole(),
                KeptBody::Streaming(_) => true,
            },
            Kept::Nothing => false,
        }
    }

    /// The retry policy is done with the request: nothing will send it
    /// again, so nothing more of it is kept.
    pub fn release_request(&mut self) {
        if !matches!(
            std::mem::replace(&mut self.kept, Kept::Nothing),
            Kept::Nothing
        ) {
            self.recv.release_request_head();
        }
    }

    /// The request, to send again: its head and its body (what was sent,
    /// then the rest). Ends the exchange (a body still being sent is
    /// cancelled). None when the body cannot be sent whole again (more
    /// than [`RECORD_LIMIT`] had gone out, or it broke off).
    pub async fn take_request(mut self) -> Option<http::Request<Body>> {
        let kept = std::mem::replace(&mut self.kept, Kept::Nothing);
        let head = self.recv.take_request_head()?;
        let kept = match kept {
            Kept::Nothing => return None,
            Kept::One(chunk) => {
                let body = if chunk.is_empty() {
                    super::empty()
                } else {
                    super::full(chunk)
                };
                return Some(http::Request::from_parts(*head, body));
            }
            Kept::Body(body) => *body,
        };
        let body = match kept {
            KeptBody::Whole(record) => record.into_body(None),
            KeptBody::Streaming(rx) => {
                // Dropping the exchange cancels the pipe, which then hands
                // back its record and the rest of the body.
                drop(self);
                match rx.await {
                    Ok((record, rest)) => record.into_body(Some(rest)),
                    Err(_) => None,
                }
            }
        }?;
        Some(http::Request::from_parts(*head, body))
    }

    pub fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.recv
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(BoxError::from)))
    }
}

/// Sends a body into an HTTP/2 stream as it arrives, one frame at a time:
/// the next frame is taken from the body only when everything before it
/// is within the peer's windows, so backpressure reaches the sender.
pub struct Pipe {
    body: Body,
    send: SendBody,
    /// Resolves when the exchange is over (its response body dropped).
    cancelled: Option<oneshot::Receiver<()>>,
    /// Sent to the peer when the body breaks off.
    on_error: Reason,
    /// Who receives the stream, for logs ("upstream", "client").
    peer: &'static str,
}

impl Pipe {
    pub fn new(body: Body, send: SendBody, on_error: Reason, peer: &'static str) -> Self {
        Pipe {
            body,
            send,
            cancelled: None,
            on_error,
            peer,
        }
    }

    /// Stops the pipe (and resets the stream with CANCEL) when the returned
    /// sender is dropped.
    pub fn cancel_on_drop(&mut self) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        self.cancelled = Some(rx);
        tx
    }

    /// Ready when the body has been sent, or can no longer be.
    pub fn poll_pipe(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_inner(cx, None)
    }

    /// [`poll_pipe`](Self::poll_pipe), keeping (refcounted) in `record`
    /// what it takes from the body, to send it again.
    pub fn poll_pipe_recording(&mut self, cx: &mut Context<'_>, record: &mut Recorded) -> Poll<()> {
        self.poll_inner(cx, Some(record))
    }

    /// The body, with what the pipe has not taken from it yet.
    pub fn take_body(&mut self) -> Body {
        std::mem::replace(&mut self.body, super::empty())
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>, mut record: Option<&mut Recorded>) -> Poll<()> {
        loop {
            if let Some(rx) = &mut self.cancelled {
                if Pin::new(rx).poll(cx).is_ready() {
                    self.send.send_reset(Reason::CANCEL);
                    return Poll::Ready(());
                }
            }
            if let Poll::Ready(e) = self.send.poll_reset(cx) {
                tracing::debug!(peer = self.peer, error = %e, "a body could not be sent");
                return Poll::Ready(());
            }
            if ready!(self.send.poll_ready(cx)).is_err() {
                return Poll::Ready(());
            }
            let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    if let Some(r) = record {
                        r.ended = true;
                    }
                    let _ = self.send.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Some(Err(e)) => {
                    if let Some(r) = record {
                        r.give_up();
                    }
                    tracing::debug!(peer = self.peer, error = %e, "a body broke off; resetting the stream");
                    self.send.send_reset(self.on_error);
                    return Poll::Ready(());
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => {
                    let eos = self.body.is_end_stream();
                    if let Some(r) = record.as_deref_mut() {
                        r.push(&data, eos);
                    }
                    if self.send.send_data(data, eos).is_err() || eos {
                        return Poll::Ready(());
                    }
                }
                Err(frame) => {
                    match frame.into_trailers() {
                        Ok(trailers) => {
                            if let Some(r) = record {
                                r.trailers = Some(Box::new(trailers.clone()));
                                r.ended = true;
                            }
                            let _ = self.send.send_trailers(trailers);
                        }
                        Err(_) => {
                            if let Some(r) = record {
                                r.give_up();
                            }
                        }
                    }
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// The most of a request body kept to send it again.
pub const RECORD_LIMIT: usize = 64 * 1024;

/// What a pipe took from a request body (its chunks refcounted, not
/// copied), kept so that a stream the upstream refused unprocessed can be
/// sent again: this, then what is left of the body. Given up past
/// [`RECORD_LIMIT`] bytes, or when the body broke off.
#[derive(Default)]
pub struct Recorded {
    first: Option<Bytes>,
    more: Vec<Bytes>,
    trailers: Option<Box<HeaderMap>>,
    size: usize,
    /// The body ended: all of it is here.
    ended: bool,
    /// Nothing can be sent again.
    given_up: bool,
}

impl Recorded {
    /// The record of a body that is empty (the request head ended the
    /// stream).
    pub fn empty() -> Self {
        Recorded {
            ended: true,
            ..Recorded::default()
        }
    }

    pub fn is_given_up(&self) -> bool {
        self.given_up
    }

    /// A whole body of at most one chunk (no trailers): that chunk (empty
    /// for an empty body).
    fn into_one(self) -> Result<Bytes, Recorded> {
        if self.is_whole() && self.more.is_empty() && self.trailers.is_none() {
            return Ok(self.first.unwrap_or_default());
        }
        Err(self)
    }

    /// All of the body is here: it can be sent again on its own.
    pub fn is_whole(&self) -> bool {
        self.ended && !self.given_up
    }

    /// Drops what is kept; nothing can be sent again.
    pub fn give_up(&mut self) {
        *self = Recorded {
            given_up: true,
            ..Recorded::default()
        };
    }

    fn push(&mut self, data: &Bytes, eos: bool) {
        if self.given_up {
            return;
        }
        self.size += data.len();
        if self.size > RECORD_LIMIT {
            return self.give_up();
        }
        self.ended = eos;
        if data.is_empty() {
            return;
        }
        if self.first.is_none() {
            self.first = Some(data.clone());
        } else {
            self.more.push(data.clone());
        }
    }

    /// The body to send again: what was recorded, then `rest` (what the
    /// pipe had not taken yet) unless the body had ended.
    pub fn into_body(self, rest: Option<Body>) -> Option<Body> {
        if self.given_up || (!self.ended && rest.is_none()) {
            return None;
        }
        let mut chunks = VecDeque::with_capacity(1 + self.more.len());
        chunks.extend(self.first);
        chunks.extend(self.more);
        Some(BodyExt::boxed_unsync(Replay {
            chunks,
            rest: rest.filter(|_| !self.ended),
            trailers: self.trailers.map(|t| *t),
        }))
    }
}

/// A recorded body sent again, followed by the rest of the original.
struct Replay {
    chunks: VecDeque<Bytes>,
    rest: Option<Body>,
    trailers: Option<HeaderMap>,
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(rest) = &mut self.rest {
            return Pin::new(rest).poll_frame(cx);
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// The body's data, joined, and its trailers.
    async fn whole(body: Body) -> (Bytes, Option<HeaderMap>) {
        let collected = body.collect().await.expect("a whole body");
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn a_recorded_body_is_sent_again_then_the_rest() {
        let mut r = Recorded::default();
        r.push(&Bytes::from_static(b"ab"), false);
        r.push(&Bytes::from_static(b"cd"), false);
        // Not ended: without the rest there is nothing whole to send.
        let rest = super::super::full(Bytes::from_static(b"ef"));
        let (data, trailers) = whole(r.into_body(Some(rest)).expect("replayable")).await;
        assert_eq!(data, Bytes::from_static(b"abcdef"));
        assert!(trailers.is_none());

        let mut r = Recorded::default();
        r.push(&Bytes::from_static(b"ab"), false);
        assert!(r.into_body(None).is_none(), "the rest is needed");

        let mut r = Recorded::default();
        r.push(&Bytes::from_static(b"ab"), true);
        let rest = super::super::full(Bytes::from_static(b"never"));
        let (data, _) = whole(r.into_body(Some(rest)).unwrap()).await;
        assert_eq!(
            data,
            Bytes::from_static(b"ab"),
            "an ended body ignores the rest"
        );

        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        let mut r = Recorded::default();
        r.push(&Bytes::from_static(b"x"), false);
        r.trailers = Some(Box::new(t));
        r.ended = true;
        let (data, trailers) = whole(r.into_body(None).unwrap()).await;
        assert_eq!(data, Bytes::from_static(b"x"));
        assert_eq!(trailers.unwrap()["grpc-status"], "0");

        let (data, _) = whole(Recorded::empty().into_body(None).unwrap()).await;
        assert!(data.is_empty());
    }

    #[test]
    fn a_record_past_its_limit_is_given_up() {
        let mut r = Recorded::default();
        let chunk = Bytes::from(vec![0u8; 16 * 1024]);
        for _ in 0..4 {
            r.push(&chunk, false);
        }
        assert!(!r.is_given_up(), "64 KiB is kept");
        r.push(&Bytes::from_static(b"!"), true);
        assert!(r.is_given_up());
        assert!(r.into_body(None).is_none());
    }
}

//! What torii's HTTP/2 server (client side) and HTTP/2 client (upstream
//! side) share on top of the h2 crate: a received body that gives flow
//! control back as it is read, a pipe that sends a body into a stream no
//! faster than the peer's window allows, and keepalive PINGs.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::{PingPong, Reason, RecvStream, SendStream};
use http_body::{Body as HttpBody, Frame};
use tokio::sync::oneshot;

use super::body::Body;
use crate::error::BoxError;

/// A body arriving on an HTTP/2 stream.
pub struct H2Received {
    recv: RecvStream,
    data_done: bool,
    /// Dropping it stops a request body's pipe to the upstream, if one runs.
    _cancel: Option<oneshot::Sender<()>>,
}

impl H2Received {
    pub fn new(recv: RecvStream, cancel: Option<oneshot::Sender<()>>) -> Self {
        H2Received {
            recv,
            data_done: false,
            _cancel: cancel,
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Passed on: the peer may send as much again.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }
}

/// Sends a body into an HTTP/2 stream as it arrives, one frame at a time
/// and only as fast as the peer's flow-control window allows.
pub struct Pipe {
    body: Body,
    stream: SendStream<Bytes>,
    /// Resolves when the exchange is over (its response body dropped).
    cancelled: Option<oneshot::Receiver<()>>,
    /// The first frame goes without waiting for send capacity: a new
    /// client stream has none until the connection task has sent its
    /// HEADERS, and a unary message is that one frame.
    sent_any: bool,
    /// Sent to the peer when the body breaks off.
    on_error: Reason,
    /// Who receives the stream, for logs ("upstream", "client").
    peer: &'static str,
}

impl Pipe {
    pub fn new(
        body: Body,
        stream: SendStream<Bytes>,
        on_error: Reason,
        peer: &'static str,
    ) -> Self {
        Pipe {
            body,
            stream,
            cancelled: None,
            sent_any: false,
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
        loop {
            if let Some(rx) = &mut self.cancelled {
                if Pin::new(rx).poll(cx).is_ready() {
                    self.stream.send_reset(Reason::CANCEL);
                    return Poll::Ready(());
                }
            }
            // Room for at least a byte before taking the next frame from the
            // body: backpressure reaches its sender through its window.
            // (At most one frame is ever buffered beyond the peer's window.)
            if self.sent_any {
                self.stream.reserve_capacity(1);
            }
            if self.sent_any && self.stream.capacity() == 0 {
                match ready!(self.stream.poll_capacity(cx)) {
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Poll::Ready(()),
                }
            }
            if let Poll::Ready(r) = self.stream.poll_reset(cx) {
                tracing::debug!(peer = self.peer, reason = ?r.ok(), "the peer reset the stream while a body was being sent to it");
                return Poll::Ready(());
            }
            let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    let _ = self.stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Some(Err(e)) => {
                    tracing::debug!(peer = self.peer, error = %e, "a body broke off; resetting the stream");
                    self.stream.send_reset(self.on_error);
                    return Poll::Ready(());
                }
                Some(Ok(frame)) => frame,
            };
            self.sent_any = true;
            match frame.into_data() {
                Ok(data) => {
                    let eos = self.body.is_end_stream();
                    if self.stream.send_data(data, eos).is_err() || eos {
                        return Poll::Ready(());
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = self.stream.send_trailers(trailers);
                    }
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// PINGs the peer every `interval`; resolves (with `timeout`) only when a
/// PING goes unanswered that long. Never resolves without a PingPong, or
/// once the connection has failed (the connection itself reports that).
pub async fn keepalive(
    ping_pong: Option<PingPong>,
    interval: Duration,
    timeout: Duration,
) -> Duration {
    let Some(mut pp) = ping_pong else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, pp.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return timeout,
        }
    }
}

//! What torii's HTTP/2 server (client side) and HTTP/2 client (upstream
//! side) share: a received body that can stop a pipe when dropped, and a
//! pipe that sends a body into a stream no faster than the peer's windows
//! allow.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use tokio::sync::oneshot;

use super::body::Body;
use crate::error::BoxError;
use crate::http2::{Reason, RecvBody, SendBody};

/// A body arriving on an HTTP/2 stream.
pub struct H2Received {
    recv: RecvBody,
    /// Dropping it stops a request body's pipe to the upstream, if one runs.
    _cancel: Option<oneshot::Sender<()>>,
}

impl H2Received {
    pub fn new(recv: RecvBody, cancel: Option<oneshot::Sender<()>>) -> Self {
        H2Received {
            recv,
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
                    let _ = self.send.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Some(Err(e)) => {
                    tracing::debug!(peer = self.peer, error = %e, "a body broke off; resetting the stream");
                    self.send.send_reset(self.on_error);
                    return Poll::Ready(());
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => {
                    let eos = self.body.is_end_stream();
                    if self.send.send_data(data, eos).is_err() || eos {
                        return Poll::Ready(());
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = self.send.send_trailers(trailers);
                    }
                    return Poll::Ready(());
                }
            }
        }
    }
}

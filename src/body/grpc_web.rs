//! gRPC-Web bodies: [`WebRequest`] on the way upstream (base64 decoded,
//! frames checked) and [`WebResponse`] on the way back (trailers as the
//! last frame, base64 for `-text`), with the codec of `grpc::web`.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::Body;
use crate::error::{BoxError, ErrorCode, ProxyError};
pub use crate::grpc::web::{base64_chunk, trailer_frame};
use crate::grpc::web::{Base64Stream, FrameCheck, Invalid};

/// Where a malformed request body leaves its reason: the request body's
/// error reaches the upstream side only as a cancelled stream, and the
/// answer to the client reads the reason here.
pub type InvalidSlot = Arc<OnceLock<ProxyError>>;

/// A gRPC-Web request body on its way upstream: base64 decoded (text
/// mode) and its frames checked.
pub struct WebRequest {
    inner: Body,
    text: Option<Base64Stream>,
    frames: FrameCheck,
    invalid: InvalidSlot,
    done: bool,
}

impl WebRequest {
    pub fn new(inner: Body, text: bool, invalid: InvalidSlot) -> Self {
        WebRequest {
            inner,
            text: text.then(Base64Stream::default),
            frames: FrameCheck::default(),
            invalid,
            done: false,
        }
    }

    fn fail(&mut self, why: Invalid) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.refuse(ProxyError::new(
            ErrorCode::GrpcWebInvalid,
            format!("malformed gRPC-Web request: {}", why.0),
        ))
    }

    fn refuse(&mut self, err: ProxyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        let _ = self.invalid.set(err.clone());
        Poll::Ready(Some(Err(Box::new(err))))
    }
}

impl HttpBody for WebRequest {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    // gRPC-Web requests have no trailers; HTTP/2 clients
                    // could send some: they are dropped.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let data = match &mut this.text {
                        None => data,
                        Some(b64) => {
                            let mut out = BytesMut::with_capacity(data.len() / 4 * 3 + 3);
                            if let Err(why) = b64.push(&data, &mut out) {
                                return this.fail(why);
                            }
                            out.freeze()
                        }
                    };
                    if let Err(why) = this.frames.feed(&data) {
                        return this.fail(why);
                    }
                    if this.frames.messages > 1 {
                        return this.refuse(ProxyError::new(
                            ErrorCode::GrpcWebStreaming,
                            "this gRPC-Web call sent a second request message, so the method is \
                             client or bidi streaming; gRPC-Web carries one request message per \
                             call (a browser sends the whole request body at once), so torii \
                             cancelled it upstream: call this method over native gRPC (HTTP/2), \
                             or make it unary or server streaming",
                        ));
                    }
                    if data.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(None) => {
                    let end = match &this.text {
                        Some(b64) => b64.finish(),
                        None => Ok(()),
                    }
                    .and_then(|()| this.frames.finish());
                    if let Err(why) = end {
                        return this.fail(why);
                    }
                    this.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // The end only once the end checks pass: a body that ends badly
        // must be polled to its error, not closed with its last bytes.
        self.done
            || (self.inner.is_end_stream()
                && self.text.as_ref().is_none_or(|b| b.finish().is_ok())
                && self.frames.finish().is_ok())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.text {
            None => self.inner.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}

/// A gRPC response body on its way back to a gRPC-Web client: messages
/// pass as they come (base64 per chunk in text mode), the trailers become
/// the last frame. A Trailers-Only answer (status in the head, no body;
/// the caller takes it out of the head)
/// gets its status as that frame too: clients read the frame, and a
/// browser shows a cross-origin response's headers only when CORS exposes
/// them.
pub struct WebResponse {
    inner: Body,
    text: bool,
    /// The head's status fields, sent as the trailers frame when the body
    /// ends without trailers.
    head_status: Option<HeaderMap>,
    done: bool,
}

impl WebResponse {
    pub fn new(inner: Body, text: bool, head_status: Option<HeaderMap>) -> Self {
        WebResponse {
            inner,
            text,
            head_status,
            done: false,
        }
    }

    fn data(&self, data: Bytes) -> Frame<Bytes> {
        Frame::data(if self.text { base64_chunk(&data) } else { data })
    }
}

impl HttpBody for WebResponse {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            return match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => Poll::Ready(Some(Ok(this.data(data)))),
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => {
                            this.done = true;
                            this.head_status = None;
                            let frame = this.data(trailer_frame(&trailers));
                            Poll::Ready(Some(Ok(frame)))
                        }
                        Err(_) => continue,
                    },
                },
                Poll::Ready(None) => {
                    this.done = true;
                    match this.head_status.take() {
                        Some(status) => Poll::Ready(Some(Ok(this.data(trailer_frame(&status))))),
                        None => Poll::Ready(None),
                    }
                }
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.head_status.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

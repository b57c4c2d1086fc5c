//! The body types torii hands around: [`Body`] for what it sends (both
//! directions), [`Received`] for what arrives (from a client or an
//! upstream, over HTTP/1.1 or HTTP/2).

pub mod counting;
pub mod grpc_web;
pub mod h2;
pub mod replay;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};

use crate::error::BoxError;
use h2::H2Received;

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// An empty received body (what is left where a body was taken out).
pub fn nothing() -> Received {
    Received::Buffered(Full::new(Bytes::new()))
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body as it arrives: from hyper (HTTP/1.1) or from an HTTP/2 stream.
pub enum Received {
    H1(hyper::body::Incoming),
    H2(H2Received),
    /// Made by torii from what it read whole (a JSON-transcoded request's
    /// gRPC message).
    Buffered(Full<Bytes>),
    /// An upstream's body whose first frame torii read ahead (a retry
    /// policy holds the response until it knows the attempt's outcome).
    Held(Box<Held>),
}

/// The frame read ahead, then the rest of the body.
pub struct Held {
    pub first: Option<Result<Frame<Bytes>, BoxError>>,
    pub rest: Received,
}

impl Received {
    pub fn boxed(self) -> Body {
        BodyExt::boxed_unsync(self)
    }
}

impl HttpBody for Received {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Received::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            Received::H2(b) => b.poll_frame(cx),
            Received::Buffered(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
            Received::Held(h) => match h.first.take() {
                Some(first) => Poll::Ready(Some(first)),
                None => Pin::new(&mut h.rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Received::H1(b) => b.is_end_stream(),
            Received::H2(b) => b.is_end_stream(),
            Received::Buffered(b) => b.is_end_stream(),
            Received::Held(h) => h.first.is_none() && h.rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Received::H1(b) => b.size_hint(),
            Received::H2(b) if b.is_end_stream() => SizeHint::with_exact(0),
            Received::H2(_) => SizeHint::default(),
            Received::Buffered(b) => b.size_hint(),
            Received::Held(_) => SizeHint::default(),
        }
    }
}

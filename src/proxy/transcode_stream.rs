//! A transcoded server stream's body: gRPC frames from the upstream are
//! decoded and printed as they arrive, each message its own chunk (so it
//! leaves at once), framed as a JSON array, NDJSON or server-sent events;
//! the gRPC status at the end closes the framing, with a last error
//! element when it is not OK, so the body parses whatever happens.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame};

use crate::body::Body;
use crate::error::BoxError;
use crate::grpc;
use crate::transcode::response::{message, status_json, Framing, Piece};
use crate::transcode::Transcoder;

/// The next whole gRPC message in `buf`, if one is there.
pub(super) fn grpc_frames(buf: &mut BytesMut) -> Result<Option<Bytes>, String> {
    let Some(end) = whole_frame(buf)? else {
        return Ok(None);
    };
    buf.advance(5);
    Ok(Some(buf.split_to(end - 5).freeze()))
}

/// Where the gRPC message at the head of `buf` ends (its 5-byte header
/// included), if all of it is there.
pub(super) fn whole_frame(buf: &[u8]) -> Result<Option<usize>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] & 1 == 1 {
        return Err("the upstream sent a compressed message, though torii asked for none".into());
    }
    let end = 5 + u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    Ok((buf.len() >= end).then_some(end))
}

pub(super) struct JsonStream {
    inner: Body,
    transcoder: Arc<Transcoder>,
    binding: usize,
    framing: Framing,
    buf: BytesMut,
    any: bool,
    done: bool,
}

impl JsonStream {
    pub fn new(inner: Body, transcoder: Arc<Transcoder>, binding: usize, framing: Framing) -> Self {
        JsonStream {
            inner,
            transcoder,
            binding,
            framing,
            buf: BytesMut::new(),
            any: false,
            done: false,
        }
    }

    fn raw(&self) -> bool {
        crate::transcode::is_http_body(&self.transcoder.bindings[self.binding].method.output())
    }

    /// The closing bytes: the framing's end, with the status if it failed.
    fn end(&mut self, status: Option<(i32, String)>) -> Bytes {
        self.done = true;
        if self.raw() {
            return Bytes::new();
        }
        let error = status
            .filter(|(code, _)| *code != 0)
            .map(|(code, msg)| status_json(code, &msg, None, None));
        Bytes::from(self.framing.end(self.any, error.as_deref()))
    }

    fn item(&mut self, msg: &[u8]) -> Result<Bytes, (i32, String)> {
        let b = &self.transcoder.bindings[self.binding];
        match message(b, msg, self.transcoder.print) {
            Ok(Piece::Json(j)) => {
                let out = self.framing.item(&j, !self.any);
                self.any = true;
                Ok(Bytes::from(out))
            }
            Ok(Piece::Raw { data, .. }) => Ok(data),
            Err(e) => Err((13, e)),
        }
    }
}

fn trailer_status(t: &HeaderMap) -> (i32, String) {
    let code = t
        .get(&grpc::GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    match code {
        Some(code) => {
            let msg = t
                .get(&grpc::GRPC_MESSAGE)
                .map(|v| grpc::status::decode_message(v.as_bytes()))
                .unwrap_or_default();
            (code, msg)
        }
        None => (
            2,
            "the upstream ended the stream without a grpc-status".into(),
        ),
    }
}

impl HttpBody for JsonStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match grpc_frames(&mut this.buf) {
                Ok(Some(msg)) => {
                    let out = match this.item(&msg) {
                        Ok(b) => b,
                        Err(status) => this.end(Some(status)),
                    };
                    if out.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Ok(Frame::data(this.end(Some((13, e))))))),
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => this.buf.extend_from_slice(&d),
                    Err(f) => {
                        let status = f
                            .trailers_ref()
                            .map(trailer_status)
                            .unwrap_or((2, String::new()));
                        let out = this.end(Some(status));
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    let out = this.end(Some((14, format!("the upstream stream failed: {e}"))));
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Ready(None) => {
                    let out = this.end(Some(trailer_status(&HeaderMap::new())));
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }
}

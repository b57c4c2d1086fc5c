//! The response body torii streams back to the client. It forwards the
//! upstream's frames as they come and turns what can go wrong after the
//! response headers into something the client understands: for gRPC an
//! upstream reset or an expired `grpc-timeout` becomes trailers with a
//! non-OK `grpc-status` (never a stream that ends OK).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

use super::outcome::Outcome;
use super::respond;
use crate::body::Received;
use crate::error::{BoxError, ErrorCode, ProxyError};
use crate::grpc::status::Code;
use crate::upstream::ExchangeGuard;

pub struct ResponseBody {
    inner: Option<Received>,
    grpc: bool,
    deadline: Option<(Pin<Box<Sleep>>, ProxyError)>,
    guard: Option<ExchangeGuard>,
    outcome: Outcome,
    cluster: Arc<str>,
}

impl ResponseBody {
    pub fn new(
        inner: Received,
        grpc: bool,
        deadline: Option<(Pin<Box<Sleep>>, ProxyError)>,
        guard: ExchangeGuard,
        outcome: Outcome,
        cluster: Arc<str>,
    ) -> Self {
        ResponseBody {
            inner: Some(inner),
            grpc,
            deadline,
            guard: Some(guard),
            outcome,
            cluster,
        }
    }

    fn fail(&mut self, mut err: ProxyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // A malformed gRPC-Web body reaches here as a cancelled stream:
        // the reason is the body's.
        let web = self.outcome.browser.as_deref().and_then(|b| b.web.as_ref());
        if let Some(invalid) = web.and_then(|w| w.invalid.get()) {
            err = invalid.clone();
        }
        // Dropping the upstream body resets the upstream stream at once.
        self.inner = None;
        self.deadline = None;
        if err.code != ErrorCode::ClientCancelled {
            self.outcome
                .metrics
                .upstream_error(&self.cluster, err.code.as_str());
        }
        if let Some(g) = self.guard.take() {
            if err.code == ErrorCode::UpstreamReset {
                g.cluster.report(&g.ep, false, err.code.as_str());
                g.cluster.log_failure(g.ep.addr, &err);
            }
        }
        self.outcome.error = Some(err.code);
        if self.outcome.log.is_some() {
            self.outcome.message = Some(err.message.clone());
        }
        if self.grpc {
            let code = err.code.grpc_code();
            self.outcome.grpc_status = Some(code.as_i32());
            self.outcome.record();
            Poll::Ready(Some(Ok(Frame::trailers(respond::error_trailers(&err)))))
        } else {
            self.outcome.record();
            Poll::Ready(Some(Err(Box::new(err))))
        }
    }
}

fn grpc_status_of(h: &HeaderMap) -> Option<i32> {
    h.get(&crate::grpc::GRPC_STATUS)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some((sleep, _)) = &mut this.deadline {
            if sleep.as_mut().poll(cx).is_ready() {
                let (_, err) = this.deadline.take().expect("checked above");
                return this.fail(err);
            }
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.outcome.bytes_out += d.len() as u64;
                }
                if let Some(t) = frame.trailers_ref() {
                    if let Some(code) = grpc_status_of(t) {
                        this.outcome.grpc_status = Some(code);
                        if let Some(g) = &this.guard {
                            g.cluster.report(
                                &g.ep,
                                code != 14,
                                "the upstream answered UNAVAILABLE",
                            );
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let endpoint = this.guard.as_ref().map(|g| g.ep.addr);
                if let (Some(crate::http2::Error::Cancelled(_)), Some(addr)) =
                    (e.downcast_ref::<crate::http2::Error>(), endpoint)
                {
                    // torii cancelled the upstream stream because the
                    // client's side broke off: not the upstream's fault.
                    return this.fail(crate::upstream::client_cancelled(addr, &this.cluster));
                }
                let h2 = e.downcast_ref::<crate::http2::Error>();
                let what = match crate::upstream::connect::h2_reason(e.as_ref()) {
                    Some(r) if matches!(h2, Some(crate::http2::Error::LocalReset(_))) => {
                        format!("broke HTTP/2 rules on the stream, so torii reset it ({r})")
                    }
                    Some(r)
                        if matches!(
                            h2,
                            Some(crate::http2::Error::GoAway { remote: false, .. })
                        ) =>
                    {
                        format!("sent what is not valid HTTP/2, so torii closed the connection (GOAWAY {r})")
                    }
                    Some(r) => format!("reset the stream ({r})"),
                    None => format!("broke off: {e}"),
                };
                let endpoint = this
                    .guard
                    .as_ref()
                    .map(|g| g.ep.addr.to_string())
                    .unwrap_or_default();
                let err = ProxyError::new(
                    ErrorCode::UpstreamReset,
                    format!(
                        "upstream {endpoint} (cluster {}) {what} in the middle of the response",
                        this.cluster
                    ),
                );
                this.fail(err)
            }
            Poll::Ready(None) => {
                this.inner = None;
                this.deadline = None;
                if let Some(mut g) = this.guard.take() {
                    g.complete();
                }
                this.outcome.record();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // An upstream body that has ended is the end, deadline or not: the
        // deadline can only add trailers to a response still under way. (A
        // gRPC Trailers-Only answer must leave as one HEADERS frame with
        // END_STREAM: sent as HEADERS and then an empty DATA frame ending
        // the stream, C-core clients report "Stream removed" instead of the
        // status.)
        match &self.inner {
            None => true,
            Some(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            None => SizeHint::with_exact(0),
            // A deadline may still add trailers; never promise an exact size then.
            Some(b) if self.deadline.is_none() => b.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.inner.as_ref().is_some_and(|b| b.is_end_stream()) {
            // An empty body hyper never needed to poll: the exchange is complete.
            if let Some(mut g) = self.guard.take() {
                g.complete();
            }
            return;
        }
        if self.inner.is_some() && self.grpc && self.outcome.grpc_status.is_none() {
            // The client went away before the response ended.
            self.outcome.grpc_status = Some(Code::Cancelled.as_i32());
        }
    }
}

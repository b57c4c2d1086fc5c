//! torii's HTTP/2 client connection to an upstream, on the h2 crate.
//!
//! hyper's HTTP/2 client spends two tasks and a channel on every request
//! (the request is handed to the connection task through a channel, the
//! request body is piped by one spawned task and the response awaited by
//! another). A proxy needs none of that: the request's own task opens the
//! stream, sends the body when it is already there — a unary gRPC request's
//! is, by the time its handler runs — and waits for the response head. Only
//! a body still streaming in gets a task of its own to pipe it.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::coalesce;
use crate::error::BoxError;
use crate::http::body::Body;

/// Settings of an upstream HTTP/2 connection.
pub struct Settings {
    pub stream_window: u32,
    pub connection_window: u32,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

/// A handle on one upstream HTTP/2 connection; clones share it.
#[derive(Clone)]
pub struct H2Client {
    send: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

/// Performs the HTTP/2 handshake on `io` and starts the task that drives
/// the connection (reads, writes through [`coalesce`], keepalive PINGs).
pub async fn handshake<T>(
    io: T,
    settings: &Settings,
    addr: SocketAddr,
) -> Result<H2Client, h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (io, flusher) = coalesce::split(io);
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    tokio::spawn(flusher.run(drive(
        conn,
        closed.clone(),
        addr,
        settings.keepalive_interval,
        settings.keepalive_timeout,
    )));
    Ok(H2Client { send, closed })
}

/// Runs the connection until it ends or stops answering PINGs.
async fn drive<T>(
    mut conn: Connection<coalesce::Coalesced<T>, Bytes>,
    closed: Arc<AtomicBool>,
    addr: SocketAddr,
    interval: Duration,
    timeout: Duration,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut ping_pong = conn.ping_pong();
    let keepalive = async {
        let Some(pp) = ping_pong.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(interval).await;
            match tokio::time::timeout(timeout, pp.ping(h2::Ping::opaque())).await {
                Ok(Ok(_)) => {}
                // The connection failed; `conn` reports how.
                Ok(Err(_)) => return std::future::pending().await,
                Err(_) => return timeout,
            }
        }
    };
    tokio::select! {
        biased;
        r = &mut conn => {
            if let Err(e) = r {
                tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
            }
        }
        t = keepalive => {
            tracing::warn!(%addr, "upstream HTTP/2 connection closed: no answer to a PING within {t:?}");
        }
    }
    closed.store(true, Ordering::Relaxed);
}

impl H2Client {
    /// True once the connection has ended (or failed).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Waits until the connection may open one more stream. An error means
    /// the connection is gone (closed, failed, or the upstream sent GOAWAY):
    /// nothing was sent, so the request may go elsewhere.
    pub async fn ready(&mut self) -> Result<(), h2::Error> {
        let r = poll_fn(|cx| self.send.poll_ready(cx)).await;
        if r.is_err() {
            self.closed.store(true, Ordering::Relaxed);
        }
        r
    }

    /// Sends `req` (call [`ready`](Self::ready) first) and waits for the
    /// response head. The body is sent from here if it is already
    /// complete; otherwise a task pipes it, and stops when the response
    /// body is dropped.
    pub async fn send(&mut self, req: Request<Body>) -> Result<Response<UpstreamBody>, h2::Error> {
        let (parts, body) = req.into_parts();
        let eos = body.is_end_stream();
        let (response, stream) = self
            .send
            .send_request(Request::from_parts(parts, ()), eos)?;
        let mut cancel = None;
        if !eos {
            let mut pipe = Pipe {
                body,
                stream,
                cancelled: None,
                sent_any: false,
            };
            // Most request bodies are complete already: no task for those.
            if poll_fn(|cx| Poll::Ready(pipe.poll_pipe(cx)))
                .await
                .is_pending()
            {
                let (tx, rx) = oneshot::channel();
                pipe.cancelled = Some(rx);
                cancel = Some(tx);
                tokio::spawn(poll_fn(move |cx| pipe.poll_pipe(cx)));
            }
        }
        let response = response.await?;
        Ok(response.map(|recv| {
            UpstreamBody::H2(H2Body {
                recv,
                data_done: false,
                _cancel: cancel,
            })
        }))
    }
}

/// Sends a request body to the upstream stream as it arrives, one frame at
/// a time and only as fast as the upstream's flow-control window allows.
struct Pipe {
    body: Body,
    stream: SendStream<Bytes>,
    /// Resolves when the exchange is over (its response body dropped).
    cancelled: Option<oneshot::Receiver<()>>,
    /// The first frame goes without waiting for send capacity: a new stream
    /// has none until the connection task has sent its HEADERS, and a
    /// unary request's whole body is that one frame.
    sent_any: bool,
}

impl Pipe {
    fn poll_pipe(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some(rx) = &mut self.cancelled {
                if Pin::new(rx).poll(cx).is_ready() {
                    self.stream.send_reset(Reason::CANCEL);
                    return Poll::Ready(());
                }
            }
            // Room for at least a byte before taking the next frame from the
            // client: backpressure reaches the client through its window.
            // (At most one frame is ever buffered beyond the upstream's window.)
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
                tracing::debug!(reason = ?r.ok(), "upstream reset the stream while the request body was being sent");
                return Poll::Ready(());
            }
            let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    let _ = self.stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "the request body broke off; resetting the upstream stream");
                    self.stream.send_reset(Reason::CANCEL);
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

/// A response body from an upstream: HTTP/1.1 (hyper) or HTTP/2 (h2).
pub enum UpstreamBody {
    H1(hyper::body::Incoming),
    H2(H2Body),
}

pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    /// Dropping it stops the request body's pipe, if one runs.
    _cancel: Option<oneshot::Sender<()>>,
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            UpstreamBody::H2(b) => b.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(b) => b.is_end_stream(),
            UpstreamBody::H2(b) => b.recv.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::H2(b) if b.recv.is_end_stream() => SizeHint::with_exact(0),
            UpstreamBody::H2(_) => SizeHint::default(),
        }
    }
}

impl H2Body {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Passed on: the upstream may send as much again.
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

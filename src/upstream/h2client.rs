//! torii's HTTP/2 client connection to an upstream, on the h2 crate.
//!
//! hyper's HTTP/2 client spends two tasks and a channel on every request
//! (the request is handed to the connection task through a channel, the
//! request body is piped by one spawned task and the response awaited by
//! another). A proxy needs none of that: the request's own task opens the
//! stream, sends the body when it is already there — a unary gRPC request's
//! is, by the time its handler runs — and waits for the response head. Only
//! a body still streaming in gets a task of its own to pipe it.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use h2::Reason;
use http::{Request, Response};
use http_body::Body as HttpBody;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::coalesce;
use crate::http::body::{Body, Received};
use crate::http::h2::{keepalive, H2Received, Pipe};

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
    let keepalive = keepalive(conn.ping_pong(), interval, timeout);
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
    pub async fn send(&mut self, req: Request<Body>) -> Result<Response<Received>, h2::Error> {
        let (parts, body) = req.into_parts();
        let eos = body.is_end_stream();
        let (response, stream) = self
            .send
            .send_request(Request::from_parts(parts, ()), eos)?;
        let mut cancel = None;
        if !eos {
            let mut pipe = Pipe::new(body, stream, Reason::CANCEL, "upstream");
            // Most request bodies are complete already: no task for those.
            if poll_fn(|cx| Poll::Ready(pipe.poll_pipe(cx)))
                .await
                .is_pending()
            {
                cancel = Some(pipe.cancel_on_drop());
                tokio::spawn(poll_fn(move |cx| pipe.poll_pipe(cx)));
            }
        }
        let response = response.await?;
        Ok(response.map(|recv| Received::H2(H2Received::new(recv, cancel))))
    }
}

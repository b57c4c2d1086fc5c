//! The client side of a connection: torii opening streams to an upstream.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{request, Response};
use tokio::io::{AsyncRead, AsyncWrite};

pub use super::conn::Config;
use super::conn::{self, Connection, Inner, StreamRef};
use super::{Error, RecvBody, SendBody};

/// Opens streams on one connection; clones share it. When every clone is
/// gone and the last stream has ended, the connection closes.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Mutex<Inner>>,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS.
    peer_max: Arc<std::sync::atomic::AtomicU32>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        conn::client_gone(&self.shared);
    }
}

/// Starts a client connection on `io`: returns the handle that opens
/// streams and the connection, to be driven by a task of its own
/// ([`ClientConnection::drive`]).
pub fn handshake<IO>(io: IO, config: Config) -> (Client, ClientConnection<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = Connection::client(io, config);
    let client = Client {
        handle: Arc::new(Handle {
            shared: conn.shared().clone(),
            peer_max: conn::peer_max_streams(conn.shared()),
        }),
    };
    (client, ClientConnection { conn })
}

/// The connection behind a [`Client`].
pub struct ClientConnection<IO> {
    conn: Connection<IO>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> ClientConnection<IO> {
    /// Drives the connection until it ends; returns why it ended, unless
    /// it simply closed when no longer needed.
    pub async fn drive(self) -> Option<String> {
        drive(self.conn).await
    }
}

async fn drive<IO>(mut conn: Connection<IO>) -> Option<String>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    poll_fn(|cx| {
        conn.begin_poll(cx, false);
        while conn.poll_read(cx) {}
        conn.end_poll();
        if conn.poll_timer(cx) {
            return Poll::Ready(());
        }
        if let Poll::Ready(Err(e)) = conn.poll_write(cx) {
            conn.failed_write(e);
            return Poll::Ready(());
        }
        if conn.poll_done(cx).is_ready() {
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
    conn.end_reason().map(str::to_string)
}

impl Client {
    /// True once the connection has ended, failed, or the upstream sent
    /// GOAWAY: no new stream can be opened on it.
    pub fn is_closed(&self) -> bool {
        conn::client_is_closed(&self.handle.shared)
    }

    /// The upstream's limit on concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS;
    /// unlimited until its SETTINGS arrive).
    pub fn peer_max_streams(&self) -> u32 {
        self.handle
            .peer_max
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ready when a stream may be opened (under the upstream's limit); an
    /// error when the connection can take no more.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        conn::client_poll_ready(&self.handle.shared, cx)
    }

    /// Opens a stream with `head`. The response arrives through the
    /// future; the body (unless `end_stream`) goes through the
    /// [`SendBody`]. When the connection can open no stream, the error
    /// comes with the head, unsent.
    #[allow(clippy::result_large_err)] // the error path hands the head back
    pub fn send_request(
        &self,
        head: request::Parts,
        end_stream: bool,
    ) -> Result<(ResponseFuture, Option<SendBody>), (Error, request::Parts)> {
        self.open(head, end_stream, false)
    }

    /// [`send_request`](Self::send_request), the stream keeping the
    /// request head after the response head arrives: a retry policy takes
    /// it back ([`ResponseFuture::take_head`], [`RecvBody::take_request_head`])
    /// to send the request again, without having copied it.
    #[allow(clippy::result_large_err)] // the error path hands the head back
    pub fn send_request_keeping_head(
        &self,
        head: request::Parts,
        end_stream: bool,
    ) -> Result<(ResponseFuture, Option<SendBody>), (Error, request::Parts)> {
        self.open(head, end_stream, true)
    }

    #[allow(clippy::result_large_err)]
    fn open(
        &self,
        head: request::Parts,
        end_stream: bool,
        keep_head: bool,
    ) -> Result<(ResponseFuture, Option<SendBody>), (Error, request::Parts)> {
        let (response, send) = conn::open_stream(&self.handle.shared, head, end_stream, keep_head)?;
        Ok((
            ResponseFuture {
                stream: Some(response),
            },
            send.map(SendBody::new),
        ))
    }
}

/// The response head of a stream torii opened.
pub struct ResponseFuture {
    stream: Option<StreamRef>,
}

impl ResponseFuture {
    /// After the future failed: the request head, when the upstream
    /// certainly did not process the stream — it refused it
    /// (REFUSED_STREAM), it was above the last stream id of the upstream's
    /// GOAWAY, or the connection ended before it was written (RFC 9113
    /// §8.7). Such a request may be sent again, whatever its method.
    pub fn take_unprocessed(&mut self) -> Option<Box<request::Parts>> {
        conn::take_unprocessed(self.stream.as_ref()?)
    }

    /// After the future failed, on a stream opened with
    /// [`Client::send_request_keeping_head`]: the request head, whether or
    /// not the upstream processed the stream.
    pub fn take_head(&mut self) -> Option<Box<request::Parts>> {
        self.stream.as_ref()?.take_request_head()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<RecvBody>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let stream = self
            .stream
            .as_ref()
            .expect("ResponseFuture polled after it completed");
        let head = std::task::ready!(conn::poll_response(stream, cx))?;
        let stream = self.stream.take().expect("checked above");
        Poll::Ready(Ok(Response::from_parts(head, RecvBody::new(stream))))
    }
}

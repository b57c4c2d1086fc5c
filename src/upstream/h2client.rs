//! torii's HTTP/2 client connection to an upstream, on torii's own
//! HTTP/2 implementation ([`crate::http2`]).
//!
//! The request's own task opens the stream and encodes its head straight
//! into the connection's write buffer, sends the body when it is already
//! there — a unary gRPC request's is, by the time its handler runs — and
//! waits for the response head. Only a body still streaming in gets a task
//! of its own to pipe it. One task per connection reads and writes.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body as HttpBody;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::http::body::{Body, Received};
use crate::http::h2::{H2Received, Pipe};
use crate::http2::client::{self, Client, Config};
use crate::http2::{Error, Reason};

/// Settings of an upstream HTTP/2 connection.
pub struct Settings {
    pub stream_window: u32,
    pub connection_window: u32,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

/// The largest response header list taken from an upstream.
const MAX_RESPONSE_HEADERS: u32 = 256 * 1024;

/// A handle on one upstream HTTP/2 connection; clones share it.
#[derive(Clone)]
pub struct H2Client {
    client: Client,
}

/// Starts the HTTP/2 connection on `io` (torii's preface and SETTINGS are
/// queued at once; requests may follow) and the task that drives it.
pub async fn handshake<T>(io: T, settings: &Settings, addr: SocketAddr) -> Result<H2Client, Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = Config {
        max_concurrent_streams: 0,
        max_header_list_size: MAX_RESPONSE_HEADERS,
        stream_window: settings.stream_window,
        connection_window: settings.connection_window,
        keepalive_interval: settings.keepalive_interval,
        keepalive_timeout: settings.keepalive_timeout,
        // The upstream's SETTINGS must arrive within a keepalive timeout.
        handshake_timeout: settings.keepalive_timeout,
    };
    let (client, conn) = client::handshake(io, config);
    tokio::spawn(async move {
        if let Some(why) = conn.drive().await {
            tracing::debug!(%addr, "upstream HTTP/2 connection ended: {why}");
        }
    });
    Ok(H2Client { client })
}

impl H2Client {
    /// True once the connection has ended (or failed, or the upstream sent
    /// GOAWAY).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Waits until the connection may open one more stream. An error means
    /// the connection is gone (closed, failed, or the upstream sent GOAWAY):
    /// nothing was sent, so the request may go elsewhere.
    pub async fn ready(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.client.poll_ready(cx)).await
    }

    /// Sends `req` (call [`ready`](Self::ready) first) and waits for the
    /// response head. The body is sent from here if it is already
    /// complete; otherwise a task pipes it, and stops when the response
    /// body is dropped.
    pub async fn send(&mut self, req: Request<Body>) -> Result<Response<Received>, Error> {
        let (parts, body) = req.into_parts();
        let eos = body.is_end_stream();
        let (response, send) = self.client.send_request(parts, eos)?;
        let mut cancel = None;
        if let Some(send) = send {
            let mut pipe = Pipe::new(body, send, Reason::CANCEL, "upstream");
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

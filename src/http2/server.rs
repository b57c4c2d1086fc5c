//! The server side of a connection: streams the client opens arrive as
//! requests with a [`Respond`] handle to answer each.

use http::{response, Request};
use tokio::io::{AsyncRead, AsyncWrite};

pub use super::conn::Config;
use super::conn::{self, Connection, StreamRef};
use super::{fields, Error, RecvBody, SendBody};
use std::task::{Context, Poll};

/// A client connection being served. Drive it with `poll_read`,
/// `poll_write` and `poll_timer` (see [`Connection`]); take new streams
/// with [`accept`](Server::accept).
pub struct Server<IO> {
    conn: Connection<IO>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Server<IO> {
    /// Starts serving `io`; torii's SETTINGS are queued at once, the
    /// client's preface is expected within `config.handshake_timeout`.
    pub fn new(io: IO, config: Config) -> Self {
        Server {
            conn: Connection::server(io, config),
        }
    }

    pub fn accept(&mut self) -> Option<(Request<RecvBody>, Respond)> {
        let opened = self.conn.accept()?;
        Some((
            opened.request,
            Respond {
                stream: opened.stream,
            },
        ))
    }

    pub fn begin_poll(&mut self, cx: &Context<'_>, inline: bool) {
        self.conn.begin_poll(cx, inline)
    }

    pub fn end_poll(&mut self) {
        self.conn.end_poll()
    }

    /// Reads and handles frames; true if anything arrived.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        self.conn.poll_read(cx)
    }

    pub fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.conn.poll_write(cx)
    }

    /// Handshake deadline and keepalive; true when the connection must end.
    pub fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        self.conn.poll_timer(cx)
    }

    pub fn graceful_shutdown(&mut self) {
        self.conn.graceful_shutdown()
    }

    /// Ready once the connection is over and closed (see
    /// `Connection::poll_done`).
    pub fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.conn.poll_done(cx)
    }

    /// Why the connection ended, in words, once it has.
    pub fn end_reason(&self) -> Option<&str> {
        self.conn.end_reason()
    }
}

/// Answers one request.
pub struct Respond {
    stream: StreamRef,
}

impl Respond {
    /// Ready once the client resets the stream (or the connection ends).
    pub fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Error> {
        conn::poll_reset(&self.stream, cx)
    }

    /// Sends the response head; the body follows through the [`SendBody`].
    pub fn send_response(
        self,
        head: &response::Parts,
        end_stream: bool,
    ) -> Result<SendBody, Error> {
        conn::send_head(
            &self.stream,
            |enc, dst| fields::encode_response(enc, head, dst),
            end_stream,
        )?;
        Ok(SendBody::new(self.stream))
    }

    pub fn send_reset(self, reason: super::Reason) {
        conn::send_reset(&self.stream, reason)
    }
}

//! Serving HTTP on an accepted (and possibly TLS-terminated) connection:
//! HTTP/1.1 and h2c on one port by looking at the preface, or the protocol
//! ALPN chose. HTTP/1.1 is served by hyper, HTTP/2 by [`super::h2server`].

pub mod coalesce;
pub mod h2;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::Either;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::body::Received;
use super::proxy::{ConnInfo, Pipeline};
use crate::drain;
use crate::http2::frame::PREFACE as H2_PREFACE;
use crate::net::prefixed::Prefixed;

/// Which protocol to serve on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// Look at the preface: `PRI * HTTP/2.0` means h2, anything else HTTP/1.1.
    Auto,
    Http1,
    Http2,
}

#[derive(Clone)]
pub struct HttpServers {
    h1: http1::Builder,
    /// Bounds the wait for a request head (HTTP/1.1) or the connection
    /// preface (HTTP/2).
    header_read_timeout: Duration,
}

impl HttpServers {
    pub fn new(header_read_timeout: Duration) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(h2::MAX_HEADER_LIST_SIZE as usize * 2);
        HttpServers {
            h1,
            header_read_timeout,
        }
    }

    /// Serves HTTP on `io` in `mode` until the client closes it or the
    /// listener drains. Not an `async fn`, so that the
    /// connection's future is just the HTTP/2 server's (holding `io` once)
    /// — the common case, and the one sidecars hold thousands of; sniffing
    /// and HTTP/1.1 are boxed.
    pub fn serve<'a, I>(
        &'a self,
        io: I,
        mode: Serve,
        rt: Arc<arc_swap::ArcSwap<Pipeline>>,
        conn: Arc<ConnInfo>,
        drain: drain::Watch,
    ) -> impl Future<Output = ()> + Send + 'a
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match mode {
            Serve::Http2 => Either::Left(self.serve_h2(io, rt, conn, drain)),
            mode => Either::Right(Box::pin(self.serve_other(io, mode, rt, conn, drain))),
        }
    }

    /// HTTP/2 on `io`, as a future that owns all it needs (to be spawned).
    pub fn serve_h2<I>(
        &self,
        io: I,
        rt: Arc<arc_swap::ArcSwap<Pipeline>>,
        conn: Arc<ConnInfo>,
        drain: drain::Watch,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        h2::serve(io, rt, conn, drain, self.header_read_timeout)
    }

    async fn serve_other<I>(
        &self,
        io: I,
        mode: Serve,
        rt: Arc<arc_swap::ArcSwap<Pipeline>>,
        conn: Arc<ConnInfo>,
        drain: drain::Watch,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (h2, io) = match mode {
            Serve::Auto => match self.sniff(io, &conn).await {
                Some(found) => found,
                None => return,
            },
            _ => (false, Prefixed::new(BytesMut::new(), io)),
        };
        if h2 {
            h2::serve(io, rt, conn, drain, self.header_read_timeout).await
        } else {
            self.serve_h1(io, rt, conn, drain).await
        }
    }

    /// Reads until the bytes either are the HTTP/2 preface or cannot be;
    /// hands back the connection with what was read. None: the client
    /// closed it or went quiet first.
    async fn sniff<I: AsyncRead + Unpin>(
        &self,
        mut io: I,
        conn: &ConnInfo,
    ) -> Option<(bool, Prefixed<I>)> {
        let mut buf = BytesMut::with_capacity(H2_PREFACE.len());
        let read = async {
            while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
                if io.read_buf(&mut buf).await? == 0 {
                    return Ok(false);
                }
            }
            Ok::<_, std::io::Error>(true)
        };
        match tokio::time::timeout(self.header_read_timeout, read).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return None,
            Ok(Err(e)) => {
                tracing::debug!(client = %conn.peer, error = %e, "client connection failed before its first request");
                return None;
            }
            Err(_) => {
                tracing::debug!(client = %conn.peer, "no request within {}; closing", crate::config::duration::display(self.header_read_timeout));
                return None;
            }
        }
        Some((buf.starts_with(H2_PREFACE), Prefixed::new(buf, io)))
    }

    async fn serve_h1<I>(
        &self,
        io: I,
        rt: Arc<arc_swap::ArcSwap<Pipeline>>,
        conn: Arc<ConnInfo>,
        mut drain: drain::Watch,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            // The listener's current routes: a reload applies to the next
            // request, even on a connection opened before it.
            let handling = rt.load_full().handle(req.map(Received::H1), conn.clone());
            async move { Ok::<_, Infallible>(handling.await) }
        });
        let (io, flusher) = coalesce::split(io);
        let connection = self.h1.serve_connection(TokioIo::new(io), svc);
        let result = flusher
            .run(async move {
                tokio::pin!(connection);
                tokio::select! {
                    r = connection.as_mut() => r,
                    _ = drain.signaled() => {
                        // `connection: close` on the response in flight (or
                        // close now if idle).
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                }
            })
            .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "client connection ended with an error");
        }
    }
}
